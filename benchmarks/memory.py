"""Peak memory of a faithful (bit-plane) pass of an ImageNet-shaped ResNet-50.

    python benchmarks/memory.py [--batch 8] [--size 224] [--out FILE]

Random weights and inputs (shapes are what matter). The faithful path processes
vectors in chunks (``FAITHFUL_BUDGET_BYTES``); this script checks that its logits
equal the exact path's (the isaac ADC cannot clip, so both must agree bit for bit)
and reports the process's peak RSS, which must stay within 8 GB at batch 8.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import numpy as np

from redy_jax.files import atomic_write_json
from redy_jax.hw import isaac
from redy_jax.models import ResNet50
from redy_jax.policy import PolicyMap, Static
from redy_jax.simulate import calibrate, evaluate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    model = ResNet50()
    x = jax.random.normal(jax.random.PRNGKey(0), (args.batch, args.size, args.size, 3))
    v = model.init(jax.random.PRNGKey(1), x[:1])
    spec = isaac()
    cal = calibrate(model, v, x, spec, method="minmax")
    t0 = time.time()
    le, _ = evaluate(model, v, x, spec, PolicyMap(default=Static()), calibration=cal,
                     mode="exact")
    t_exact = time.time() - t0
    t0 = time.time()
    lf, rf = evaluate(model, v, x, spec, PolicyMap(default=Static()), calibration=cal,
                      mode="faithful")
    t_faithful = time.time() - t0
    out = {"model": "resnet50", "batch": args.batch, "size": args.size,
           "faithful_equals_exact": bool(np.array_equal(np.asarray(le), np.asarray(lf))),
           "adc_saturations": rf.per_image("adc_saturations"),
           "exact_s": round(t_exact, 1), "faithful_s": round(t_faithful, 1),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "date": time.strftime("%Y-%m-%d")}
    out["within_8gb"] = out["peak_rss_mb"] <= 8192
    print(json.dumps(out, indent=2))
    if args.out:
        atomic_write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
