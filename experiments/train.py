"""Trains a zoo model on Fashion-MNIST (float) and writes a checkpoint + record.

    python experiments/train.py --model resnet20 --epochs 6 --seed 0

Trains on the ``train`` split (training-file images 0-54,999), reports the
held-out ``validation`` split (55,000-59,999) after every epoch and the test split
once, at the end; the record names all three ranges.

SGD with Nesterov momentum, one-cycle cosine learning rate, weight decay,
random-shift + horizontal-flip augmentation. Kernel gradients use
``redy_jax.training.fast_conv`` (same values, faster on XLA:CPU).
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from redy_jax import checkpoint, data
from redy_jax.models import create_model
from redy_jax.training import fast_conv


def augment(rng: np.random.Generator, x: np.ndarray, pad: int = 2) -> np.ndarray:
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    out = np.empty_like(x)
    for i in range(n):  # cheap numpy gather on uint8, host side
        out[i] = xp[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def _without_out(argv: list[str]) -> list[str]:
    """The command line minus ``--out PATH`` (where a file is written is not how it was made)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            out.append(a)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="checkpoint path (default: shipped location)")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint (fine-tuning) instead of random weights")
    args = p.parse_args(argv)

    train = data.load("fashion_mnist", "train", limit=args.limit)
    val = data.load("fashion_mnist", "validation")
    test = data.load("fashion_mnist", "test")
    mean, std = jnp.asarray(train.mean), jnp.asarray(train.std)
    model = create_model(args.model, num_classes=10,
                         conv=functools.partial(nn.Conv, conv_general_dilated=fast_conv))
    rng = jax.random.PRNGKey(args.seed)
    variables = model.init(rng, jnp.zeros((1, 28, 28, 1)), train=False)
    prior = None
    if args.init:
        variables, prior = checkpoint.load(args.init, variables)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    steps_per_epoch = len(train.labels) // args.batch_size
    total = steps_per_epoch * args.epochs
    sched = optax.cosine_onecycle_schedule(total, args.lr, pct_start=0.15)
    decay_mask = jax.tree_util.tree_map(lambda a: a.ndim > 1, params)
    tx = optax.chain(optax.add_decayed_weights(args.weight_decay, decay_mask),
                     optax.sgd(sched, momentum=0.9, nesterov=True))
    opt_state = tx.init(params)

    def prep(x):
        return (x.astype(jnp.float32) / 255.0 - mean) / std

    @jax.jit
    def step(params, batch_stats, opt_state, x, y):
        def loss_fn(p):
            out, upd = model.apply({"params": p, "batch_stats": batch_stats}, prep(x),
                                   train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
            return loss, (upd.get("batch_stats", {}), out)
        (loss, (bs, out)), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        acc = jnp.mean(jnp.argmax(out, -1) == y)
        return optax.apply_updates(params, updates), bs, opt_state, loss, acc

    @jax.jit
    def predict(params, batch_stats, x):
        return jnp.argmax(model.apply({"params": params, "batch_stats": batch_stats},
                                      prep(x), train=False), -1)

    def evaluate(params, batch_stats, ds):
        correct = 0
        for i in range(0, len(ds.labels), 500):
            correct += int(np.sum(np.asarray(predict(params, batch_stats, ds.images[i:i + 500]))
                                  == ds.labels[i:i + 500]))
        return correct / len(ds.labels)

    np_rng = np.random.default_rng(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        perm = np_rng.permutation(len(train.labels))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}",
                   file=sys.stdout, mininterval=10)
        for s in bar:
            idx = perm[s * args.batch_size:(s + 1) * args.batch_size]
            x = augment(np_rng, train.images[idx])
            params, batch_stats, opt_state, loss, acc = step(
                params, batch_stats, opt_state, x, train.labels[idx])
            if s % 50 == 0:
                bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{float(acc):.3f}")
        val_acc = evaluate(params, batch_stats, val)
        print(f"epoch {epoch + 1}: validation accuracy {val_acc:.4f} ({time.time() - t0:.0f} s)",
              flush=True)
    train_seconds = round(time.time() - t0, 1)
    acc = evaluate(params, batch_stats, test)  # the test split, once

    out = args.out or checkpoint.shipped(args.model)
    record = {
        "model": args.model,
        "dataset": "fashion_mnist",
        "command": "python experiments/train.py " + " ".join(
            shlex.quote(a) for a in _without_out(argv if argv is not None else sys.argv[1:])),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "weight_decay": args.weight_decay, "seed": args.seed,
        "splits": data.split_ranges("fashion_mnist", limit=args.limit),
        "float_validation_accuracy": val_acc, "validation_images": int(len(val.labels)),
        "float_test_accuracy": acc, "test_images": int(len(test.labels)),
        "train_seconds": train_seconds,
        **({"fine_tuned_from": {k: prior[k] for k in ("command", "epochs", "seed",
                                                       "float_test_accuracy", "sha256")
                                if k in prior}} if prior else {}),
        "jax": jax.__version__,
    }
    path = checkpoint.save(out, {"params": params, "batch_stats": batch_stats}, record)
    print(f"saved {path} (float validation accuracy {val_acc:.4f}, test {acc:.4f})")


if __name__ == "__main__":
    main()
