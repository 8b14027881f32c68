"""Derives and ships the default (hand-calibrated) ReDy thresholds of a model.

    python experiments/calibrate_thresholds.py --model resnet20 [--granularity window]
        [--target-loss 0.003] [--images 2000]

Static scales come from train[0:1000]; thresholds from train[1000:1000+images]: the
largest global aggressiveness whose accuracy stays within ``target_loss`` of static
8-bit on those images (``redy_jax.thresholds.calibrate_thresholds``). Writes
``checkpoints/<model>_fashion_mnist.redy_<granularity>.json`` atomically, with the
search trace as provenance. Never touches the test split.
"""

from __future__ import annotations

import argparse

from redy_jax.study import calibrate_setup_thresholds, default_thresholds_path, setup
from redy_jax.thresholds import write_thresholds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--granularity", nargs="+", default=["window", "channel"])
    p.add_argument("--target-loss", type=float, default=0.003)
    p.add_argument("--images", type=int, default=2000)
    args = p.parse_args(argv)
    s = setup(args.model, limit=1)  # the test split is not used here
    for g in args.granularity:
        out = default_thresholds_path(args.model, g)
        r = calibrate_setup_thresholds(s, granularity=g, target_loss=args.target_loss,
                                       images=args.images, progress=True)
        write_thresholds(out, r["layers"], r["config"], r["provenance"])
        c = r["provenance"]["chosen"] or {}
        print(f"{args.model} {g}: log2 c = {c.get('log2_c')}, calibration accuracy "
              f"{c.get('accuracy')} (static {r['provenance']['static_accuracy']}), "
              f"saving {c.get('saving')} -> {out}")

if __name__ == "__main__":
    main()
