"""Simulator speed against plain Flax float inference, measured in the same run.

    python benchmarks/run.py [--quick] [--json] [--out FILE]

For the shipped ResNet-20 on Fashion-MNIST test images and for one ImageNet-shaped
ResNet-18 batch (random weights and inputs: shapes are what matter here) it times
float inference and the simulated pass for each policy (static, leading-zero skip,
ReDy) in exact-ADC mode and in faithful bit-plane mode (a spec whose ADC can clip:
flipped encoding off, so the bit-plane path runs), reporting ratios to the float
time, plus the process's peak RSS. Each time is the best of ``--repeats`` calls
after a warm-up (compilation excluded).
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
from timing import best_time

from redy_jax.checkpoint import atomic_write_json
from redy_jax.hw import isaac
from redy_jax.models import ResNet18, load_checkpoint
from redy_jax.policy import Float, LeadingZeroSkip, PolicyMap, Static
from redy_jax.policy.redy import redy_policy_map
from redy_jax.simulate import calibrate, simulate_fn


def bench(model, variables, x, cal, policies: dict, repeats: int, faithful: bool = True):
    exact_spec = isaac()
    # Same crossbar, but without flipped encoding the 8-bit ADC can clip: the faithful
    # bit-plane path must run (the exact fast path is not allowed).
    faithful_spec = isaac(flipped_encoding=False)
    run_f, _ = simulate_fn(model, exact_spec, cal, "auto")
    t_float = best_time(lambda: run_f(variables, PolicyMap(default=Float()), x)[0], repeats)
    out = {"float_s": t_float, "exact_s": {}, "faithful_s": {}}
    for name, pol in policies.items():
        run, _ = simulate_fn(model, exact_spec, cal, "exact")
        out["exact_s"][name] = best_time(lambda run=run, pol=pol: run(variables, pol, x),
                                            repeats)
        if faithful:
            run, _ = simulate_fn(model, faithful_spec, cal, "faithful")
            out["faithful_s"][name] = best_time(
                lambda run=run, pol=pol: run(variables, pol, x), max(1, repeats // 2))
    out["exact_vs_float"] = {k: v / t_float for k, v in out["exact_s"].items()}
    out["faithful_vs_float"] = {k: v / t_float for k, v in out["faithful_s"].items()}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small batches (< 3 min)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    p.add_argument("--images", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args(argv)
    n = args.images or (250 if args.quick else 1000)
    repeats = args.repeats or (3 if args.quick else 5)

    from redy_jax import data

    model, variables, _ = load_checkpoint("resnet20")
    test = data.load("fashion_mnist", "test", limit=n)
    x = jnp.asarray(data.normalize(test.images, test.mean, test.std))
    train = data.load("fashion_mnist", "train", limit=500)
    cal = calibrate(model, variables, data.normalize(train.images, train.mean, train.std),
                    isaac())
    policies = {"static": PolicyMap(default=Static()),
                "lzs": PolicyMap(default=LeadingZeroSkip())}
    try:
        from redy_jax.policy.redy import default_thresholds_path, read_thresholds

        policies["redy"] = redy_policy_map(thresholds=read_thresholds(
            default_thresholds_path("resnet20", "window")))
    except FileNotFoundError:
        pass
    r20 = bench(model, variables, x, cal, policies, repeats)

    size = 64 if args.quick else 224
    m18 = ResNet18()
    x18 = jax.random.normal(jax.random.PRNGKey(0), (1, size, size, 3))
    v18 = m18.init(jax.random.PRNGKey(1), x18)
    cal18 = calibrate(m18, v18, x18, isaac(), method="minmax")
    r18 = bench(m18, v18, x18, cal18, {"static": PolicyMap(default=Static()),
                                       "lzs": PolicyMap(default=LeadingZeroSkip())},
                repeats, faithful=True)
    result = {
        "resnet20_fashion_mnist": {"images": n, **r20},
        f"resnet18_{size}x{size}_batch1": r18,
        "float_s": r20["float_s"],
        "exact_vs_float": r20["exact_vs_float"],
        "faithful_vs_float": r20["faithful_vs_float"],
        # ru_maxrss is the process's peak resident set size, in KiB on Linux.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, "
                   f"{jax.device_count()} {jax.devices()[0].platform} device(s)",
        "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"), "quick": args.quick,
    }
    if args.out:
        atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"ResNet-20, {n} images: float {r20['float_s']:.3f} s")
        for k in r20["exact_s"]:
            print(f"  {k:7s} exact {r20['exact_vs_float'][k]:6.2f}x   faithful "
                  f"{r20['faithful_vs_float'].get(k, float('nan')):6.2f}x")
        print(f"ResNet-18 {size}x{size}: float {r18['float_s']:.3f} s; " + ", ".join(
            f"{k} exact {v:.2f}x" for k, v in r18["exact_vs_float"].items()))
        print(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    return result


if __name__ == "__main__":
    main()
