"""Peak memory of the simulator's largest passes on ImageNet-shaped inputs.

    python benchmarks/memory.py [--case resnet50_faithful|resnet18_redy_window]
                                [--batch N] [--size 224] [--out FILE]

Random weights and inputs (shapes are what matter); one case per process, since the
peak RSS is the process's.

* ``resnet50_faithful`` (default batch 8): a pass with every read through the bit-plane
  model (``mode="bit_plane"``: ``faithful`` would sum exactly what the isaac spec proves
  cannot clip), which processes vectors in chunks (``FAITHFUL_BUDGET_BYTES``); its
  logits must equal the exact path's (the isaac ADC cannot clip, so both must agree
  bit for bit).
* ``resnet18_redy_window`` (default batch 64): an exact pass with window-granularity
  ReDy on every conv (thresholds 2^i / 8 codes), whose lowering runs in chunks of
  images or output rows (``WINDOW_CHUNK_BYTES``).

Both must stay within 8 GB of peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from redy_jax.cache import provenance
from redy_jax.files import atomic_write_json
from redy_jax.hw import isaac
from redy_jax.models import ResNet18, ResNet50
from redy_jax.policy import PolicyMap, ReDy, Static, thresholds_from_scale
from redy_jax.simulate import calibrate, evaluate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--case", choices=("resnet50_faithful", "resnet18_redy_window"),
                   default="resnet50_faithful")
    p.add_argument("--batch", type=int, default=None, help="default: 8 / 64 by case")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    faithful = args.case == "resnet50_faithful"
    batch = args.batch or (8 if faithful else 64)
    model = ResNet50() if faithful else ResNet18()
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, args.size, args.size, 3))
    v = model.init(jax.random.PRNGKey(1), x[:1])
    spec = isaac()
    cal = calibrate(model, v, x[:8], spec, method="minmax")
    out = {"case": args.case, "model": "resnet50" if faithful else "resnet18",
           "batch": batch, "size": args.size}
    if faithful:
        t0 = time.time()
        le, _ = evaluate(model, v, x, spec, PolicyMap(default=Static()), calibration=cal,
                         mode="exact")
        t_exact = time.time() - t0
        t0 = time.time()
        lf, rf = evaluate(model, v, x, spec, PolicyMap(default=Static()), calibration=cal,
                          mode="bit_plane")  # every read modelled (faithful would prune)
        out |= {"bit_plane_equals_exact": bool(np.array_equal(np.asarray(le), np.asarray(lf))),
                "adc_saturations": rf.per_image("adc_saturations"),
                "exact_s": round(t_exact, 1), "bit_plane_s": round(time.time() - t0, 1)}
    else:
        redy = PolicyMap(default=ReDy(thresholds=jnp.asarray(thresholds_from_scale(8.0))),
                         dense_default=Static())
        t0 = time.time()
        _, rr = evaluate(model, v, x, spec, redy, calibration=cal, mode="exact")
        out |= {"exact_s": round(time.time() - t0, 1),
                "mean_streamed_bits": round(rr.mean_streamed_bits(), 3)}
    out |= {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "date": time.strftime("%Y-%m-%d"), "provenance": provenance()}
    out["within_8gb"] = out["peak_rss_mb"] <= 8192
    print(json.dumps(out, indent=2))
    if args.out:
        atomic_write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
