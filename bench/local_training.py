"""Batched (vmap) local training against a Python loop over clients.

    python bench/local_training.py [--out bench/results/local_training_cpu.md] [--device cpu]

Both train the same clients on the same mini-batches (``train_batched`` and
``train_sequential`` of ``robustagg.sim.train``); the deltas are checked to agree
before timing. Reports the median seconds of one round's local training.
"""
import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _timing import median_seconds  # noqa: E402

from robustagg.sim import data, models, train  # noqa: E402

CASES = [
    # name, dataset builder, model, clients, samples per client, epochs, batch
    ("digits mlp", lambda: data.load_digits(), "mlp", 20, 67, 2, 16),
    ("digits logreg", lambda: data.load_digits(), "logreg", 100, 13, 2, 16),
    ("synthetic 28x28 cnn", lambda: data.synthetic(num_train=10 * 64, size=28), "cnn", 10, 64, 1, 32),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dev = torch.device(args.device)
    lines = [f"# Local training: vmap-batched vs. a loop over clients ({args.device}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}, {datetime.date.today()})", "",
             "| case | clients | params | loop (s) | batched (s) | speed-up |", "|---|---|---|---|---|---|"]
    for name, make, model_name, n, per, epochs, batch in CASES:
        ds = make()
        x, y = ds.x_train[: n * per], ds.y_train[: n * per]
        if x.shape[0] < n * per:
            reps = -(-n * per // x.shape[0])
            x, y = x.repeat(reps, 1, 1, 1)[: n * per], y.repeat(reps)[: n * per]
        X, Y = x.view(n, per, *ds.image_shape).to(dev), y.view(n, per).to(dev)
        torch.manual_seed(0)
        model = models.build_model(model_name, ds.image_shape, ds.num_classes).to(dev)
        gp = {k: v.detach() for k, v in model.named_parameters()}
        rows, counts = torch.arange(n), torch.full((n,), per)
        spec = train.LocalSpec(epochs, 0.05, batch)

        def batched():
            return train.train_batched(model, gp, X, Y, rows, counts, spec, torch.Generator().manual_seed(0))

        def loop():
            return train.train_sequential(model, gp, X, Y, rows, counts, spec, torch.Generator().manual_seed(0))

        torch.testing.assert_close(batched(), loop(), rtol=1e-4, atol=1e-5)
        t_b = median_seconds(batched, repeats=args.repeats)
        t_l = median_seconds(loop, repeats=args.repeats)
        nparams = sum(v.numel() for v in gp.values())
        line = f"| {name} | {n} | {nparams} | {t_l:.3f} | {t_b:.3f} | {t_l / t_b:.1f}x |"
        print(line, flush=True)
        lines.append(line)
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
