"""Sharded (4 forced host devices) and unsharded evaluation give identical results.

The device count is fixed when JAX starts, so the sharded run happens in a subprocess
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from redy_jax.study import setup, run_policy
    s = setup("lenet5", limit=120, calib_images=100)
    out = {"devices": jax.device_count()}
    for p in ("static", "redy"):
        r = run_policy(s, p, batch_size=40, progress=False)
        out[p] = {k: r[k] for k in ("accuracy", "energy_pj_per_image",
                                    "adc_conversions_per_image", "mean_streamed_bits")}
        out[p]["layers"] = {k: v["counts_per_image"] for k, v in r["layers"].items()}
    from redy_jax.simulate import evaluate, data_sharding
    from redy_jax.policy import Static
    logits, _ = evaluate(s.model, s.variables, s.test_images[:8], s.spec, Static(),
                         calibration=s.calibration)
    out["logits"] = np.asarray(logits).tolist()
    out["sharded"] = data_sharding() is not None and len(logits.sharding.device_set) > 1
    json.dump(out, sys.stdout)
""")


def _run(devices: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                       text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_sharded_and_unsharded_evaluation_are_identical():
    one, four = _run(1), _run(4)
    assert one["devices"] == 1 and four["devices"] == 4
    assert four["sharded"] and not one["sharded"]
    assert one["logits"] == four["logits"]
    for p in ("static", "redy"):
        assert one[p] == four[p], p
