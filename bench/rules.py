"""Times every aggregation rule end to end on CPU and prints a table.

    python bench/rules.py [--shapes 20x1000000,100x1000000] [--out bench/results/rules_cpu.md]

Updates: honest N(0, 1) plus 10% scaled attackers. The "dominated by" column
names the op (or step) that takes most of the rule's time.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import robustagg.aggregators as A  # noqa: E402
from _timing import publish  # noqa: E402

DOMINANT = {
    "fedavg": "weighted mean (robust_lr_mean, theta=0)", "rlr": "robust_lr_mean + sign_vote",
    "sign": "sign_vote", "median": "median", "trimmed_mean": "trimmed_mean",
    "repeated_median": "repeated_median_line", "residual": "residual_reweight",
    "krum": "pairwise_stats", "multikrum": "pairwise_stats", "bulyan": "top-k around the median (torch), then pairwise_stats",
    "foolsgold": "history update + pairwise_stats", "rflbat": "pairwise_stats + gap-statistic KMeans",
    "invariant": "masked_trimmed_mean + sign_vote", "geomed": "Weiszfeld iterations (row norms + weighted means)",
    "clip": "row norms + rescale copy", "noise": "randn + weighted mean", "centered_clip": "median + row norms",
}


def params(name, K):
    f = max(1, K // 10)
    return {"krum": {"f": f}, "multikrum": {"f": f}, "bulyan": {"f": min(f, (K - 3) // 4)},
            "trimmed_mean": {"beta": 0.1}, "invariant": {"alpha": 0.1, "tau": 0.1}}.get(name, {})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="20x1000000,100x1000000")
    p.add_argument("--rules", default=",".join(A.available()))
    p.add_argument("--out")
    args = p.parse_args()
    lines = ["| rule | K | d | seconds | dominated by |", "|---|---:|---:|---:|---|"]
    for shape in args.shapes.split(","):
        K, d = (int(v) for v in shape.split("x"))
        g = torch.Generator().manual_seed(0)
        u = torch.randn(K, d, generator=g)
        u[: K // 10] *= 10.0
        for name in args.rules.split(","):
            rule = A.get(name, **params(name, K))
            rule(u[:, :1000].contiguous())  # warm-up (threads, imports)
            rule.reset()
            t0 = time.perf_counter()
            rule(u)
            dt = time.perf_counter() - t0
            lines.append(f"| {name} | {K} | {d:.0e} | {dt:.3f} | {DOMINANT.get(name, '')} |")
            print(lines[-1], flush=True)
    text = ("# Aggregation rules end to end (CPU)\n\n"
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, one call each (noisy, shared machine).\n\n"
            + "\n".join(lines) + "\n")
    publish(text, args.out)


if __name__ == "__main__":
    main()
