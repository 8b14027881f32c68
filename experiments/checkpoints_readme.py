"""Writes checkpoints/README.md from the JSON records beside each checkpoint.

    python experiments/checkpoints_readme.py
"""

from __future__ import annotations

import json

from redy_jax.checkpoint import CHECKPOINT_DIR
from redy_jax.files import atomic_write_bytes

HEADER = """# Shipped checkpoints

Fashion-MNIST models trained in float on this project's CPU machine (2 cores) with
`experiments/train.py` on the **train** split only: images 0-54,999 of the training
file. Images 55,000-59,999 are the **validation** split, held out of training and used
for every choice of the study; the 10,000 test images are evaluated once, at the end of
training and in the study's reported rows. Each `<model>_fashion_mnist.msgpack` (Flax
variables) has a `.json` record beside it with the exact command, epochs, seed, the
split ranges, float validation and test accuracy, and the SHA-256 that
`redy_jax.checkpoint.load` verifies. Training: SGD with Nesterov momentum, one-cycle
cosine learning rate, weight decay 5e-4 on kernels, random-shift (+-2 px) and
horizontal-flip augmentation, batch 128.

`<model>_fashion_mnist.redy_window.json` / `.redy_channel.json` are the calibrated
(default) ReDy thresholds and `.redy_tuned.json` the optax-tuned ones, all chosen on the
validation split by `experiments/run_all.py` (provenance inside).

| model | train split | validation split | float val. acc. | float test acc. | epochs | seed \
| train time | command |
|---|---|---|---|---|---|---|---|---|
"""


def main():
    rows = []
    for rec_path in sorted(CHECKPOINT_DIR.glob("*_fashion_mnist.json")):
        r = json.loads(rec_path.read_text())
        sp = r["splits"]
        rng = lambda d: f"{d['source']}[{d['start']}:{d['stop']}]"
        rows.append(f"| {r['model']} | {rng(sp['train'])} | {rng(sp['validation'])} | "
                    f"{100 * r['float_validation_accuracy']:.2f}% | "
                    f"{100 * r['float_test_accuracy']:.2f}% | {r['epochs']} | "
                    f"{r['seed']} | {r['train_seconds'] / 60:.0f} min | `{r['command']}` |")
    text = HEADER + "\n".join(rows) + "\n"
    atomic_write_bytes(CHECKPOINT_DIR / "README.md", text.encode())
    print(text)


if __name__ == "__main__":
    main()
