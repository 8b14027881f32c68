"""The ``redy`` command line: ``redy spec``, ``evaluate``, ``compare``, ``tune``.

Every option is checked before the slow set-up (a typo costs a second, not a model
load), and errors are one line on stderr with exit status 2. ``--json`` prints nothing
but one JSON object on stdout (strict JSON: no NaN/Infinity). Commands import the
library inside their bodies, so ``--help`` and option errors come back quickly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import math
import sys
import typing
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="ReRAM crossbar accelerator simulator with ReDy dynamic precision.")


@app.callback()
def _group():
    """ReRAM crossbar accelerator simulator with ReDy dynamic precision."""


def _fail(msg: str) -> typing.NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _json(obj) -> str:
    """Strict JSON: non-finite numbers become null."""
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        return o
    return json.dumps(clean(obj), indent=2, allow_nan=False)


def _overrides(items: list[str] | None) -> dict:
    """Parses ``--set field=value`` pairs into typed spec overrides."""
    from redy_jax.hw import HardwareSpec

    types = {f.name: f.type for f in dataclasses.fields(HardwareSpec)}
    out = {}
    for item in items or []:
        if "=" not in item:
            _fail(f"--set expects field=value, got {item!r}")
        k, v = item.split("=", 1)
        if k not in types or k == "components":
            _fail(f"--set: unknown HardwareSpec field {k!r}")
        t = str(types[k])
        try:
            if t == "bool":
                low = v.strip().lower()
                if low not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError("expected true/false, yes/no, on/off or 1/0")
                out[k] = low in ("1", "true", "yes", "on")
            elif t == "int":
                out[k] = int(v)
            elif t == "float":
                out[k] = float(v)
            else:
                out[k] = v
        except ValueError as e:
            _fail(f"--set {k}={v!r}: not a {t} ({e})")
    return out


def _spec(preset: str, set_: list[str] | None):
    from redy_jax.hw import get_preset

    try:
        return get_preset(preset, **_overrides(set_))
    except (ValueError, TypeError) as e:
        _fail(str(e))


JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]


@app.command()
def spec(
    preset: Annotated[str, typer.Option(help="hardware preset (isaac, isaac_16bit)")] = "isaac",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: "
                                                   "--set adc_bits=6")] = None,
    as_json: JsonOpt = False,
):
    """Print a hardware spec and its derived figures (power, area, GOPS/W)."""
    from redy_jax.hw import derived_figures

    s = _spec(preset, set_)
    fig = derived_figures(s)
    if as_json:
        typer.echo(_json({"spec": s.to_dict(), **fig}))
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
    dist = res.get("per_image", {}).get("chip_energy_pj")
    if dist:
        typer.echo(f"  chip energy per image p5 / p50 / p95: {dist['p5'] / 1e6:.3f} / "
                   f"{dist['p50'] / 1e6:.3f} / {dist['p95'] / 1e6:.3f} uJ")
    typer.echo("  breakdown (uJ/image)  " + ", ".join(
        f"{k} {v / 1e6:.3f}" for k, v in res["breakdown_pj"].items() if v))
    rows = [[p, d["kind"], d["crossbars"], f"{d['mean_streamed_bits']:.2f}",
             f"{d['counts_per_image']['adc_conversions']:.4g}",
             f"{d['chip_energy_pj_per_image'] / 1e6:.4f}"] for p, d in res["layers"].items()]
    typer.echo(_fmt_table(rows, ["layer", "kind", "xbars", "bits", "ADC conv", "chip uJ"]))


ModelOpt = Annotated[str, typer.Option("--model", help="zoo model (lenet5, resnet20, vgg8, "
                                       "mobilenetv2) or your own: package.module:factory")]
CkptOpt = Annotated[str | None, typer.Option(help="checkpoint .msgpack (default: shipped)")]
DataOpt = Annotated[str | None, typer.Option(
    "--data", help="your own data: an .npz file with images, labels (the test split) and "
                   "optionally train_images/train_labels, val_images/val_labels; or a "
                   "folder of images in class subfolders (resized, cropped, normalised)")]
LimitOpt = Annotated[int | None, typer.Option(help="evaluate the first N test images")]
CalibOpt = Annotated[int, typer.Option(help="training images used for calibration")]
GranOpt = Annotated[str, typer.Option(help="ReDy/LZS group: window | channel")]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The options every evaluating command shares (one definition each)."""

    model: ModelOpt = "resnet20"
    onnx: Annotated[str | None, typer.Option(
        "--onnx", help="an ONNX model file (PyTorch / Keras export) instead of --model; "
                       "docs/onnx.md")] = None
    checkpoint: CkptOpt = None
    dataset: Annotated[str, typer.Option(help="dataset (fashion_mnist, cifar10, digits)")] = \
        "fashion_mnist"
    data: DataOpt = None
    limit: LimitOpt = None
    resize: Annotated[int, typer.Option(help="image folder / imagenet2012: short side "
                                             "resized to this [px]")] = 256
    crop: Annotated[int, typer.Option(help="image folder / imagenet2012: centre crop [px]")] = 224
    mean: Annotated[str, typer.Option(help="image folder / imagenet2012: per-channel mean "
                                           "(in [0, 1] pixel units)")] = "0.485,0.456,0.406"
    std: Annotated[str, typer.Option(help="image folder / imagenet2012: per-channel std")] = \
        "0.229,0.224,0.225"
    batch_size: Annotated[int, typer.Option(help="images per jitted batch")] = 250
    preset: Annotated[str, typer.Option(help="hardware preset")] = "isaac"
    set_: Annotated[list[str] | None, typer.Option("--set", help="spec override: "
                                                   "--set adc_bits=6")] = None
    mode: Annotated[str, typer.Option(help="auto | exact | faithful | bit_plane")] = "auto"
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


def _positive(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or value < 1:
        _fail(f"{name} must be an integer >= 1, got {value!r}")


def _check_options(o: RunOptions, policies: list[str], option: str = "--policy") -> dict:
    """Every option checked before any set-up; returns what the checks loaded."""
    from redy_jax.policy import GRANULARITIES
    from redy_jax.study import POLICY_NAMES
    from redy_jax.xbar import MODES

    if o.mode not in MODES:
        _fail(f"--mode must be one of {list(MODES)}, got {o.mode!r}")
    if o.granularity not in GRANULARITIES:
        _fail(f"--granularity must be one of {list(GRANULARITIES)}, got "
                                 f"{o.granularity!r}")
    _positive("--batch-size", o.batch_size)
    _positive("--calib-images", o.calib_images)
    _positive("--limit", o.limit, allow_none=True)
    if not policies:
        _fail(f"{option} names no policy; choose from {list(POLICY_NAMES)}")
    for p in policies:
        if p not in POLICY_NAMES:
            _fail(f"{option}: {p!r} is not one of {list(POLICY_NAMES)}")
    loaded = {"spec": _spec(o.preset, o.set_)}
    if o.thresholds and o.tuned:
        _fail("give --thresholds FILE or --tuned, not both")
    if o.thresholds:
        from redy_jax.thresholds import read_thresholds

        try:
            loaded["thresholds"] = read_thresholds(o.thresholds)
        except (OSError, ValueError) as e:
            _fail(f"--thresholds: {e}")
    _check_data(o)
    if o.onnx is not None and not (Path(o.onnx).is_file() and o.onnx.endswith(".onnx")):
        _fail(f"--onnx {o.onnx}: not an existing .onnx file")
    if o.onnx is None and ":" in o.model and o.checkpoint is None:
        _fail(f"--model {o.model} (your own) needs --checkpoint FILE")
    if o.checkpoint is not None and not Path(o.checkpoint).exists():
        _fail(f"--checkpoint {o.checkpoint} does not exist")
    return loaded


def _preprocess(o: RunOptions) -> dict:
    _positive("--resize", o.resize)
    _positive("--crop", o.crop)
    if o.crop > o.resize:
        _fail(f"--crop ({o.crop}) must be <= --resize ({o.resize})")
    out = {"resize": o.resize, "crop": o.crop}
    for name in ("mean", "std"):
        try:
            vals = tuple(float(v) for v in getattr(o, name).split(","))
        except ValueError:
            _fail(f"--{name} must be comma-separated numbers, got {getattr(o, name)!r}")
        if not all(math.isfinite(v) for v in vals) or (name == "std" and min(vals) <= 0):
            _fail(f"--{name} must be finite{' and > 0' if name == 'std' else ''}, got {vals}")
        out[name] = vals
    return out


def _check_data(o: RunOptions) -> None:
    from redy_jax.data import DATASETS

    _preprocess(o)
    if o.data is not None:
        if Path(o.data).is_dir():
            return
        if not Path(o.data).is_file():
            _fail(f"--data {o.data} does not exist")
        if not o.data.endswith(".npz"):
            _fail(f"--data must be an .npz file or an image folder, got {o.data}")
        return
    if o.dataset not in DATASETS:
        _fail(f"--dataset must be one of {list(DATASETS)}, got {o.dataset!r}")
    if o.dataset in ("cifar10", "imagenet2012"):
        from redy_jax.data.loaders import DEFAULT_DATA_DIR

        if not (DEFAULT_DATA_DIR / o.dataset).exists():
            _fail(
                f"--dataset {o.dataset} is not prepared in {DEFAULT_DATA_DIR} (nothing is "
                "downloaded at run time): prepare it there with TFDS (`tfds build "
                f"{o.dataset} --data_dir {DEFAULT_DATA_DIR}`) or set REDY_DATA_DIR")


def _setup(o: RunOptions):
    from redy_jax.checkpoint import CheckpointError
    from redy_jax.study import setup

    try:
        # TFDS prints while it prepares a dataset: keep stdout for results (--json).
        with contextlib.redirect_stdout(sys.stderr):
            return setup(o.onnx or o.model, checkpoint=o.checkpoint,
                         dataset=o.data or o.dataset, preprocess=_preprocess(o),
                         limit=o.limit, preset=o.preset, spec_overrides=_overrides(o.set_),
                         calib_images=o.calib_images)
    except (CheckpointError, FileNotFoundError, ValueError, TypeError) as e:
        _fail(str(e))


def _run(s, o: RunOptions, policy: str, thresholds) -> dict:
    from redy_jax.study import load_thresholds, run_policy

    try:
        thr = thresholds if thresholds is not None else (
            load_thresholds(s, None, o.tuned) if policy == "redy" else None)
        with contextlib.redirect_stdout(sys.stderr):
            return run_policy(s, policy, batch_size=o.batch_size, mode=o.mode,
                              granularity=o.granularity, thresholds=thr,
                              progress=not o.as_json, distribution=True)
    except (FileNotFoundError, ValueError, FloatingPointError) as e:
        _fail(str(e))


@app.command()
@with_run_options
def evaluate(
    policy: Annotated[str, typer.Option(help="float | static | lzs | redy")] = "static",
    *, opts: RunOptions,
):
    """Accuracy and energy of a checkpoint under one precision policy."""
    loaded = _check_options(opts, [policy])
    s = _setup(opts)
    res = _run(s, opts, policy, loaded.get("thresholds") if policy == "redy" else None)
    res["calibration"] = s.calibration.to_dict()
    if opts.as_json:
        typer.echo(_json(res))
    else:
        _print_result(res)


@app.command()
@with_run_options
def compare(
    policies: Annotated[str, typer.Option(help="comma-separated policies")] = "static,redy",
    *, opts: RunOptions,
):
    """Several policies on the same checkpoint, images and calibration, with savings."""
    names = [p.strip() for p in policies.split(",") if p.strip()]
    loaded = _check_options(opts, names, "--policies")
    s = _setup(opts)
    results = [_run(s, opts, p, loaded.get("thresholds") if p == "redy" else None)
               for p in names]
    base = next((r for r in results if r["policy"] == "static"), None)
    for r in results:
        if base is not None and r["policy"] != "float":
            r["saving_vs_static"] = 1 - (r["chip_energy_pj_per_image"]
                                         / base["chip_energy_pj_per_image"])
            r["core_saving_vs_static"] = 1 - (r["energy_pj_per_image"]
                                              / base["energy_pj_per_image"])
            r["accuracy_delta_vs_static"] = r["accuracy"] - base["accuracy"]
    if opts.as_json:
        typer.echo(_json({"model": opts.model, "results": results}))
        return
    typer.echo(f"{opts.model} on {results[0]['images']} {opts.data or opts.dataset} test "
               f"images, preset {opts.preset}, mode {opts.mode}")
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


def _finite(name: str, v: float, lo: float = 0.0, strict: bool = True) -> None:
    ok = v is not None and math.isfinite(v) and (v > lo if strict else v >= lo)
    if not ok:
        _fail(f"{name} must be a finite number {'>' if strict else '>='} "
                                 f"{lo:g}, got {v!r}")


@app.command()
@with_run_options
def tune(
    lam: Annotated[float | None, typer.Option("--lambda", help="energy weight")] = None,
    sweep_: Annotated[str | None, typer.Option("--sweep", help="comma-separated lambdas: "
                                                  "tune each and plot the Pareto front")] = None,
    steps: Annotated[int, typer.Option(help="optimisation steps per lambda")] = 60,
    tune_batch: Annotated[int, typer.Option(help="tuning batch (images)")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate (octaves)")] = 0.1,
    temperature: Annotated[float, typer.Option(help="relaxation temperature (octaves)")] = 0.5,
    tune_images: Annotated[int, typer.Option(help="training images used for tuning")] = 2048,
    init: Annotated[str | None, typer.Option(help="initial thresholds file (default: "
                                                "shipped calibrated)")] = None,
    out: Annotated[str, typer.Option(help="output directory (resumable)")] = "runs/tune",
    seed: Annotated[int, typer.Option(help="batch order seed")] = 0,
    *, opts: RunOptions,
):
    """Tune ReDy thresholds with optax (training images), evaluate on the test split."""
    if (lam is None) == (sweep_ is None):
        _fail("give exactly one of --lambda L or --sweep L1,L2,...")
    lambdas = [lam] if sweep_ is None else []
    if sweep_ is not None:
        try:
            lambdas = [float(v) for v in sweep_.split(",") if v.strip()]
        except ValueError as e:
            _fail(f"--sweep: {e}")
        if not lambdas:
            _fail("--sweep names no lambda")
    for v in lambdas:
        _finite("--lambda", v, 0.0, strict=False)
    _positive("--steps", steps)
    _positive("--tune-batch", tune_batch)
    _positive("--tune-images", tune_images)
    if tune_images < tune_batch:
        _fail(f"--tune-images ({tune_images}) must be >= --tune-batch "
                                 f"({tune_batch}): tuning needs at least one batch")
    _finite("--lr", lr)
    _finite("--temperature", temperature)
    loaded = _check_options(opts, ["redy"], "tune")
    from redy_jax.study import default_thresholds_path
    from redy_jax.thresholds import read_thresholds
    from redy_jax.tune import TuneConfig, evaluate_thresholds, sweep, tune_setup

    if init is None and "thresholds" in loaded:
        start = loaded["thresholds"]
    else:
        path = init or default_thresholds_path(opts.model, opts.granularity)
        try:
            start = read_thresholds(path)
        except (OSError, ValueError) as e:
            _fail(f"{e}; pass --init FILE (calibrated thresholds, e.g. from "
                  "experiments/run_all.py)")
    s = _setup(opts)
    cfg = TuneConfig(lam=lambdas[0], steps=steps, batch_size=tune_batch, lr=lr,
                     temperature=temperature, seed=seed)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if sweep_ is not None:
                res = sweep(s, start, lambdas, cfg, out, images=tune_images)
            else:
                r = tune_setup(s, start, cfg, images=tune_images, out_dir=out)
                ev = evaluate_thresholds(s, r)
    except (ValueError, FloatingPointError) as e:
        _fail(str(e))
    if sweep_ is not None:
        rows = [["static", "-", f"{res['static']['accuracy']:.4f}", "1.000", "-"],
                ["calibrated", "-", f"{res['calibrated']['accuracy']:.4f}",
                 f"{1 - res['calibrated']['saving']:.3f}", f"{res['calibrated']['saving']:.1%}"]]
        rows += [["tuned", f"{p['lambda']:g}", f"{p['accuracy']:.4f}",
                  f"{p['energy_ratio']:.3f}", f"{p['saving']:.1%}"] for p in res["points"]]
        if opts.as_json:
            typer.echo(_json(res))
            return
        typer.echo(_fmt_table(rows, ["thresholds", "lambda", "accuracy", "energy", "saving"]))
        typer.echo(f"Pareto front: {out}/pareto.json, pareto.csv, pareto.png")
        return
    if opts.as_json:
        typer.echo(_json({"thresholds": f"{out}/thresholds.json", **ev}))
        return
    typer.echo(f"tuned thresholds: {out}/thresholds.json")
    typer.echo(f"test accuracy {ev['accuracy']:.4f}, whole-chip energy "
               f"{ev['chip_energy_pj_per_image'] / 1e6:.3f} uJ/image, mean streamed bits "
               f"{ev['mean_streamed_bits']:.2f}")


if __name__ == "__main__":  # pragma: no cover
    app()
