"""The ``redy`` command line: ``redy spec``, ``evaluate``, ``compare``, ``tune``.

Commands import the library inside their bodies, so ``--help`` and option errors come
back in a fraction of a second instead of after loading JAX.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import typing
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="ReRAM crossbar accelerator simulator with ReDy dynamic precision.")


@app.callback()
def _group():
    """ReRAM crossbar accelerator simulator with ReDy dynamic precision."""


def _overrides(items: list[str] | None) -> dict:
    """Parses ``--set field=value`` pairs into typed spec overrides."""
    import dataclasses

    from redy_jax.hw import HardwareSpec

    types = {f.name: f.type for f in dataclasses.fields(HardwareSpec)}
    out = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects field=value, got {item!r}")
        k, v = item.split("=", 1)
        if k not in types or k == "components":
            raise typer.BadParameter(f"--set: unknown HardwareSpec field {k!r}")
        t = str(types[k])
        if t == "bool":
            out[k] = v.lower() in ("1", "true", "yes", "on")
        elif t == "int":
            out[k] = int(v)
        elif t == "float":
            out[k] = float(v)
        else:
            out[k] = v
    return out


@app.command()
def spec(
    preset: Annotated[str, typer.Option(help="hardware preset (isaac, isaac_16bit)")] = "isaac",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: "
                                                   "--set adc_bits=6")] = None,
    as_json: JsonOpt = False,
):
    """Print a hardware spec and its derived figures (power, area, GOPS/W)."""
    from redy_jax.hw import derived_figures, get_preset

    try:
        s = get_preset(preset, **_overrides(set_))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    fig = derived_figures(s)
    if as_json:
        typer.echo(json.dumps({"spec": s.to_dict(), **fig}, indent=2))
        return
    d = s.to_dict()
    d.pop("components")
    width = max(map(len, list(d) + list(fig)))
    typer.echo(f"HardwareSpec '{s.name}'")
    for k, v in d.items():
        typer.echo(f"  {k:<{width}}  {v}")
    typer.echo("Derived figures")
    for k, v in fig.items():
        typer.echo(f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


def _fmt_table(rows: list[list], headers: list[str]) -> str:
    cols = list(zip(*([headers] + [[str(c) for c in r] for r in rows]), strict=True))
    widths = [max(len(c) for c in col) for col in cols]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _print_result(res: dict) -> None:
    typer.echo(f"{res['model']} on {res['images']} {res['dataset']} test images, policy "
               f"{res['policy']}" + (f" ({res['granularity']})" if res.get("granularity") else "")
               + f", preset {res['preset']}")
    typer.echo(f"  accuracy              {res['accuracy']:.4f}")
    if res["policy"] == "float":
        return
    typer.echo(f"  energy / image        {res['chip_energy_pj_per_image'] / 1e6:.3f} uJ whole chip"
               f", {res['energy_pj_per_image'] / 1e6:.3f} uJ crossbar core")
    typer.echo(f"  ADC conversions/image {res['adc_conversions_per_image']:.4g}")
    typer.echo(f"  mean streamed bits    {res['mean_streamed_bits']:.3f}")
    typer.echo(f"  latency / image       {res['latency_us_per_image']:.1f} us")
    typer.echo("  breakdown (uJ/image)  " + ", ".join(
        f"{k} {v / 1e6:.3f}" for k, v in res["breakdown_pj"].items() if v))
    rows = [[p, d["kind"], d["crossbars"], f"{d['mean_streamed_bits']:.2f}",
             f"{d['counts_per_image']['adc_conversions']:.4g}",
             f"{d['chip_energy_pj_per_image'] / 1e6:.4f}"] for p, d in res["layers"].items()]
    typer.echo(_fmt_table(rows, ["layer", "kind", "xbars", "bits", "ADC conv", "chip uJ"]))


ModelOpt = Annotated[str, typer.Option("--model", help="zoo model: lenet5, resnet20, vgg8, "
                                       "mobilenetv2")]
CkptOpt = Annotated[str | None, typer.Option(help="checkpoint .msgpack (default: shipped)")]
LimitOpt = Annotated[int | None, typer.Option(help="evaluate the first N test images")]
CalibOpt = Annotated[int, typer.Option(help="training images used for calibration")]
GranOpt = Annotated[str, typer.Option(help="ReDy/LZS group: window | channel")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The options every evaluating command shares (one definition each)."""

    model: ModelOpt = "resnet20"
    checkpoint: CkptOpt = None
    dataset: Annotated[str, typer.Option(help="dataset (fashion_mnist, cifar10, digits)")] = \
        "fashion_mnist"
    limit: LimitOpt = None
    batch_size: Annotated[int, typer.Option(help="images per jitted batch")] = 250
    preset: Annotated[str, typer.Option(help="hardware preset")] = "isaac"
    set_: Annotated[list[str] | None, typer.Option("--set", help="spec override: "
                                                   "--set adc_bits=6")] = None
    mode: Annotated[str, typer.Option(help="auto | exact | faithful")] = "auto"
    granularity: GranOpt = "window"
    thresholds: Annotated[str | None, typer.Option(help="ReDy thresholds JSON file")] = None
    tuned: Annotated[bool, typer.Option(help="use the shipped tuned thresholds")] = False
    calib_images: CalibOpt = 1000
    as_json: JsonOpt = False


def with_run_options(fn):
    """Gives a command the :class:`RunOptions` parameters, passed to it as ``opts``."""
    fields = dataclasses.fields(RunOptions)
    hints = {**typing.get_type_hints(RunOptions, include_extras=True),
             **typing.get_type_hints(fn, include_extras=True)}
    own = [p.replace(annotation=hints[p.name])
           for p in inspect.signature(fn).parameters.values() if p.name != "opts"]
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                annotation=hints[f.name]) for f in fields]

    @functools.wraps(fn)
    def command(**kw):
        opts = RunOptions(**{f.name: kw.pop(f.name) for f in fields})
        return fn(opts=opts, **kw)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}  # for get_type_hints
    del command.__wrapped__  # typer must read the new signature, not fn's
    return command


def _setup(o: RunOptions):
    from redy_jax.checkpoint import CheckpointError
    from redy_jax.study import setup

    try:
        return setup(o.model, checkpoint=o.checkpoint, dataset=o.dataset, limit=o.limit,
                     preset=o.preset, spec_overrides=_overrides(o.set_),
                     calib_images=o.calib_images)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e


def _run(s, o: RunOptions, policy: str) -> dict:
    from redy_jax.study import load_thresholds, run_policy

    thr = load_thresholds(s, o.thresholds, o.tuned) if policy == "redy" else None
    return run_policy(s, policy, batch_size=o.batch_size, mode=o.mode,
                      granularity=o.granularity, thresholds=thr, progress=not o.as_json)


@app.command()
@with_run_options
def evaluate(
    policy: Annotated[str, typer.Option(help="float | static | lzs | redy")] = "static",
    *, opts: RunOptions,
):
    """Accuracy and energy of a (shipped) checkpoint under one precision policy."""
    from redy_jax.study import POLICY_NAMES

    if policy not in POLICY_NAMES:
        raise typer.BadParameter(f"--policy must be one of {POLICY_NAMES}, got {policy!r}")
    s = _setup(opts)
    res = _run(s, opts, policy)
    res["calibration"] = s.calibration.to_dict()
    if opts.as_json:
        typer.echo(json.dumps(res, indent=2))
    else:
        _print_result(res)


@app.command()
@with_run_options
def compare(
    policies: Annotated[str, typer.Option(help="comma-separated policies")] = "static,redy",
    *, opts: RunOptions,
):
    """Several policies on the same checkpoint, images and calibration, with savings."""
    from redy_jax.study import POLICY_NAMES

    names = [p.strip() for p in policies.split(",") if p.strip()]
    for p in names:
        if p not in POLICY_NAMES:
            raise typer.BadParameter(f"--policies: {p!r} is not one of {POLICY_NAMES}")
    s = _setup(opts)
    results = [_run(s, opts, p) for p in names]
    base = next((r for r in results if r["policy"] == "static"), None)
    for r in results:
        if base is not None and r["policy"] != "float":
            r["saving_vs_static"] = 1 - (r["chip_energy_pj_per_image"]
                                         / base["chip_energy_pj_per_image"])
            r["core_saving_vs_static"] = 1 - (r["energy_pj_per_image"]
                                              / base["energy_pj_per_image"])
            r["accuracy_delta_vs_static"] = r["accuracy"] - base["accuracy"]
    if opts.as_json:
        typer.echo(json.dumps({"model": opts.model, "results": results}, indent=2))
        return
    typer.echo(f"{opts.model} on {results[0]['images']} {opts.dataset} test images, preset "
               f"{opts.preset}, mode {opts.mode}")
    rows = []
    for r in results:
        e = r.get("chip_energy_pj_per_image")
        core = r.get("energy_pj_per_image")
        rows.append([r["policy"] + (f"/{r['granularity']}" if r.get("granularity") else ""),
                     f"{r['accuracy']:.4f}", "-" if e is None else f"{e / 1e6:.3f}",
                     f"{r['saving_vs_static']:.1%}" if "saving_vs_static" in r else "-",
                     "-" if core is None else f"{core / 1e6:.3f}",
                     f"{r['core_saving_vs_static']:.1%}" if "core_saving_vs_static" in r
                     else "-",
                     "-" if e is None else f"{r['adc_conversions_per_image']:.4g}",
                     "-" if e is None else f"{r['mean_streamed_bits']:.2f}"])
    typer.echo(_fmt_table(rows, ["policy", "accuracy", "chip uJ/img", "saving", "core uJ/img",
                                 "core saving", "ADC conv/img", "bits"]))


@app.command()
def tune(
    model: ModelOpt = "resnet20",
    checkpoint: CkptOpt = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="energy weight")] = None,
    sweep_: Annotated[str | None, typer.Option("--sweep", help="comma-separated lambdas: "
                                                  "tune each and plot the Pareto front")] = None,
    steps: Annotated[int, typer.Option(help="optimisation steps per lambda")] = 60,
    batch_size: Annotated[int, typer.Option(help="tuning batch (images)")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate (octaves)")] = 0.1,
    temperature: Annotated[float, typer.Option(help="relaxation temperature (octaves)")] = 0.5,
    tune_images: Annotated[int, typer.Option(help="training images used for tuning")] = 2048,
    granularity: GranOpt = "window",
    init: Annotated[str | None, typer.Option(help="initial thresholds file (default: "
                                                "calibrated)")] = None,
    limit: LimitOpt = None,
    out: Annotated[str, typer.Option(help="output directory (resumable)")] = "runs/tune",
    calib_images: CalibOpt = 1000,
    seed: Annotated[int, typer.Option(help="batch order seed")] = 0,
):
    """Tune ReDy thresholds with optax (train split), evaluate on the test split."""
    from redy_jax.study import default_thresholds_path
    from redy_jax.thresholds import read_thresholds
    from redy_jax.tune import TuneConfig, evaluate_thresholds, sweep, tune_setup

    if (lam is None) == (sweep_ is None):
        raise typer.BadParameter("give exactly one of --lambda L or --sweep L1,L2,...")
    s = _setup(RunOptions(model=model, checkpoint=checkpoint, limit=limit,
                          calib_images=calib_images))
    if init is None:
        path = default_thresholds_path(model, granularity)
        if not path.exists():
            typer.echo(f"error: no calibrated thresholds at {path}; run "
                       f"experiments/run_all.py or pass --init FILE", err=True)
            raise typer.Exit(2)
        init = str(path)
    start = read_thresholds(init)
    cfg = TuneConfig(lam=lam or 0.0, steps=steps, batch_size=batch_size, lr=lr,
                     temperature=temperature, seed=seed)
    if sweep_ is not None:
        lambdas = [float(v) for v in sweep_.split(",") if v.strip()]
        res = sweep(s, start, lambdas, cfg, out, images=tune_images)
        rows = [["static", "-", f"{res['static']['accuracy']:.4f}", "1.000", "-"],
                ["calibrated", "-", f"{res['calibrated']['accuracy']:.4f}",
                 f"{1 - res['calibrated']['saving']:.3f}", f"{res['calibrated']['saving']:.1%}"]]
        rows += [["tuned", f"{p['lambda']:g}", f"{p['accuracy']:.4f}",
                  f"{p['energy_ratio']:.3f}", f"{p['saving']:.1%}"] for p in res["points"]]
        typer.echo(_fmt_table(rows, ["thresholds", "lambda", "accuracy", "energy", "saving"]))
        typer.echo(f"Pareto front: {out}/pareto.json, pareto.csv, pareto.png")
        return
    r = tune_setup(s, start, cfg, images=tune_images, out_dir=out)
    ev = evaluate_thresholds(s, r)
    typer.echo(f"tuned thresholds: {out}/thresholds.json")
    typer.echo(f"test accuracy {ev['accuracy']:.4f}, whole-chip energy "
               f"{ev['chip_energy_pj_per_image'] / 1e6:.3f} uJ/image, mean streamed bits "
               f"{ev['mean_streamed_bits']:.2f}")


if __name__ == "__main__":  # pragma: no cover
    app()
