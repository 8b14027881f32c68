"""Simulator speed against plain Flax float inference, measured in the same run.

    python benchmarks/run.py [--quick] [--json] [--out FILE]

For the shipped ResNet-20 on Fashion-MNIST test images and for one ImageNet-shaped
ResNet-18 batch (random weights and inputs: shapes are what matter here) it times
float inference and the simulated pass for each policy (static, leading-zero skip,
ReDy with window groups and, on ResNet-20, with channel groups, both from the shipped
calibrated thresholds) in exact-ADC mode and, on a spec whose ADC can clip (flipped
encoding off), in ``faithful`` mode (the bit-plane model for the reads the data cannot
prove exact, with the ADC saturations per image it found) and in
``bit_plane`` mode (every read through the model: the model's own cost), reporting
ratios to the float time, plus the process's peak RSS. Each time is the best of
``--repeats`` rounds (faithful and bit-plane: half as many) after a warm-up
(compilation excluded), the simulated passes
interleaved with the float pass so that every ratio compares runs made under the same
machine load. ``--quick`` (< 3 min here, most of it XLA compilation) keeps
ResNet-20: 250 images, faithful static and ReDy on the first 100.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import jax
import jax.numpy as jnp
import psutil
from timing import best_times

from redy_jax.cache import provenance
from redy_jax.energy import Report
from redy_jax.files import atomic_write_json
from redy_jax.hw import isaac
from redy_jax.models import ResNet18, load_checkpoint
from redy_jax.policy import Float, LeadingZeroSkip, PolicyMap, ReDy, Static, thresholds_from_scale
from redy_jax.simulate import calibrate, simulate_fn
from redy_jax.thresholds import read_thresholds, redy_policy_map
from redy_jax.xbar.chunks import CHUNK_BYTES, WINDOW_CHUNK_BYTES, l2_cache_bytes
from redy_jax.xbar.exact import BF16_PRODUCTS


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else platform.processor())."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench(model, variables, x, cal, policies: dict, repeats: int,
          faithful_images: int | None = None, faithful_policies=None):
    """Times float inference and each policy's simulated pass on images ``x``. The exact
    passes are interleaved with the float pass over ``repeats`` rounds; the (slower)
    faithful ones (``faithful_policies``, all if None) run on the first
    ``faithful_images`` images (all if None),
    interleaved with a float pass on the same images over ``repeats // 2`` rounds (at
    least one). A float pass precedes every simulated one; each ratio divides by the
    best float time on the same images in the same block."""
    exact_spec = isaac()
    # Same crossbar, but without flipped encoding the 8-bit ADC can clip: the faithful
    # bit-plane path must run (the exact fast path is not allowed).
    faithful_spec = isaac(flipped_encoding=False)
    run_f, _ = simulate_fn(model, exact_spec, cal, "auto")
    run_e, _ = simulate_fn(model, exact_spec, cal, "exact")
    run_p, traces = simulate_fn(model, faithful_spec, cal, "faithful")
    run_b, _ = simulate_fn(model, faithful_spec, cal, "bit_plane")
    float_of = lambda xs: (lambda: run_f(variables, PolicyMap(default=Float()), xs)[0])
    call = lambda run, pol, xs: (lambda: run(variables, pol, xs))

    def timed(run, xs, names, rounds):
        """Best times of float and each policy's pass on ``xs``, a float pass before
        every policy in every round: each ratio compares runs made under the same load
        even when one simulated pass takes tens of seconds."""
        fns = {}
        for i, name in enumerate(names):
            fns |= {f"float#{i}": float_of(xs), name: call(run, policies[name], xs)}
        t = best_times(fns, rounds)
        return min(t.pop(f"float#{i}") for i in range(len(names))), t

    float_s, exact_s = timed(run_e, x, list(policies), repeats)
    out = {"float_s": float_s, "exact_s": exact_s}
    xb = x[:faithful_images]
    names = [k for k in policies if k in (faithful_policies or policies)]
    float_s, faithful_s = timed(run_p, xb, names, max(1, repeats // 2))
    float_b, bit_plane_s = timed(run_b, xb, names, max(1, repeats // 2))
    out |= {"faithful_images": int(xb.shape[0]), "faithful_float_s": float_s,
            "faithful_s": faithful_s, "bit_plane_float_s": float_b,
            "bit_plane_s": bit_plane_s}
    out["exact_vs_float"] = {k: v / out["float_s"] for k, v in out["exact_s"].items()}
    out["faithful_vs_float"] = {k: v / float_s for k, v in faithful_s.items()}
    out["bit_plane_vs_float"] = {k: v / float_b for k, v in bit_plane_s.items()}
    # What the faithful spec does on these images: ADC saturations per image (the
    # bit-plane model's, equal in both modes).
    report = lambda records, pol: Report.from_records(
        records, traces.layers(xb.shape[1:], pol), faithful_spec, int(xb.shape[0]))
    out["faithful_saturations_per_image"] = {
        k: report(run_p(variables, policies[k], xb)[1], policies[k]).per_image("adc_saturations")
        for k in names}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="ResNet-20 only, faithful static/ReDy on 100 images (< 3 min)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    p.add_argument("--images", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None,
                   help="interleaved rounds (default 5: fewer let this VM's 10-30%% "
                        "noise through)")
    args = p.parse_args(argv)
    n = args.images or (250 if args.quick else 1000)
    repeats = args.repeats or 5
    faithful_images = 100 if args.quick else None  # --quick: < 3 min in all

    from redy_jax import data

    model, variables, _ = load_checkpoint("resnet20")
    test = data.load("fashion_mnist", "test", limit=n)
    x = jnp.asarray(data.normalize(test.images, test.mean, test.std))
    train = data.load("fashion_mnist", "train", limit=200 if args.quick else 500)
    cal = calibrate(model, variables, data.normalize(train.images, train.mean, train.std),
                    isaac())
    policies = {"static": PolicyMap(default=Static()),
                "lzs": PolicyMap(default=LeadingZeroSkip())}
    try:
        from redy_jax.study import default_thresholds_path

        policies["redy"] = redy_policy_map(read_thresholds(
            default_thresholds_path("resnet20", "window")))
        policies["redy_channel"] = redy_policy_map(read_thresholds(
            default_thresholds_path("resnet20", "channel")))
    except FileNotFoundError:
        pass
    # --quick: faithful static and ReDy only (LZS runs static's bit-plane path with
    # fewer planes) on 100 images, and no ResNet-18: compilation dominates the quick run
    # (~15-35 s per faithful program on this machine).
    r20 = bench(model, variables, x, cal, policies, repeats, faithful_images,
                ("static", "redy") if args.quick else None)
    result = {"resnet20_fashion_mnist": {"images": n, **r20}}
    if not args.quick:
        m18 = ResNet18()
        x18 = jax.random.normal(jax.random.PRNGKey(0), (1, 224, 224, 3))
        v18 = m18.init(jax.random.PRNGKey(1), x18)
        cal18 = calibrate(m18, v18, x18, isaac(), method="minmax")
        # Random weights have no calibrated thresholds: every conv layer gets ReDy
        # thresholds 2^i / 8 codes (what calibration picks on the trained models).
        redy18 = PolicyMap(default=ReDy(thresholds=jnp.asarray(thresholds_from_scale(8.0))),
                           dense_default=Static())
        result["resnet18_224x224_batch1"] = bench(
            m18, v18, x18, cal18, {"static": PolicyMap(default=Static()),
                                   "lzs": PolicyMap(default=LeadingZeroSkip()),
                                   "redy": redy18}, repeats)
    result |= {
        "float_s": r20["float_s"],
        "exact_vs_float": r20["exact_vs_float"],
        "faithful_vs_float": r20["faithful_vs_float"],
        "bit_plane_vs_float": r20["bit_plane_vs_float"],
        # ru_maxrss is the process's peak resident set size, in KiB on Linux.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, "
                   f"{jax.device_count()} {jax.devices()[0].platform} device(s)",
        "cpu_model": cpu_model(), "l2_cache_bytes": l2_cache_bytes(),
        "chunk_bytes": dict(CHUNK_BYTES), "window_chunk_bytes": dict(WINDOW_CHUNK_BYTES),
        "bf16_products": dict(BF16_PRODUCTS),
        "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"), "quick": args.quick,
        "repeats": repeats, "provenance": provenance(),
    }
    if args.out:
        atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        mib = lambda d: ", ".join(f"{k} {v / 2**20:g} MiB" if v else f"{k} whole batch"
                                  for k, v in d.items())
        print(f"{result['cpu_model']}, {result['machine']}; L2 "
              f"{result['l2_cache_bytes'] // 1024} KiB; chunks: {mib(result['chunk_bytes'])}"
              f" (window ReDy: {mib(result['window_chunk_bytes'])}); bfloat16 products: "
              f"{', '.join(k for k, v in result['bf16_products'].items() if v) or 'none'}")
        print(f"ResNet-20, {n} images (faithful: {r20['faithful_images']}): float "
              f"{r20['float_s']:.3f} s")
        for k in r20["exact_s"]:
            print(f"  {k:12s} exact {r20['exact_vs_float'][k]:6.2f}x   faithful "
                  f"{r20['faithful_vs_float'].get(k, float('nan')):6.2f}x   bit-plane "
                  f"{r20['bit_plane_vs_float'].get(k, float('nan')):6.2f}x")
        r18 = result.get("resnet18_224x224_batch1")
        if r18:
            print(f"ResNet-18 224x224: float {r18['float_s']:.3f} s; " + ", ".join(
                f"{k} exact {v:.2f}x faithful {r18['faithful_vs_float'][k]:.2f}x "
                f"bit-plane {r18['bit_plane_vs_float'][k]:.2f}x"
                for k, v in r18["exact_vs_float"].items()))
        print(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    return result


if __name__ == "__main__":
    main()
