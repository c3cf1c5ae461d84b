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
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout first
import robustagg.aggregators as A  # noqa: E402
from robustagg import ops  # noqa: E402
from _timing import median_time, publish  # noqa: E402

def _bulyan_f(K):
    return params("bulyan", K)["f"]


def _dominant(K):
    """(what dominates each rule, the op call that does it): the rule's time is compared with this op's."""
    f = max(1, K // 10)
    return {
        "fedavg": ("robust_lr_mean (theta 0)", lambda u: ops.robust_lr_mean(u, 0.0)),
        "rlr": ("robust_lr_mean", lambda u: ops.robust_lr_mean(u, float(f + 1))),
        "sign": ("sign_vote", lambda u: ops.sign_vote(u)),
        "median": ("median", lambda u: ops.median(u)),
        "trimmed_mean": ("trimmed_mean", lambda u: ops.trimmed_mean(u, int(0.1 * K))),
        "repeated_median": ("repeated_median_line", lambda u: ops.repeated_median_line(u)),
        "residual": ("residual_reweight", lambda u: ops.residual_reweight(u)),
        "krum": ("pairwise_stats (distances)", lambda u: ops.pairwise_stats(u, gram=False)),
        "multikrum": ("pairwise_stats (distances)", lambda u: ops.pairwise_stats(u, gram=False)),
        "bulyan": ("pairwise_stats (distances) + closest_to_median_mean of the selected", lambda u: (
            ops.pairwise_stats(u, gram=False), ops.closest_to_median_mean(u[:K - 2 * _bulyan_f(K)], _bulyan_f(K)))),
        "foolsgold": ("pairwise_stats (Gram)", lambda u: ops.pairwise_stats(u, sqdist=False)),
        "rflbat": ("pairwise_stats (Gram); then PCA + KMeans", lambda u: ops.pairwise_stats(u, sqdist=False)),
        "invariant": ("masked_trimmed_mean", lambda u: ops.masked_trimmed_mean(u, 0.1, int(0.1 * K) + 1)),
        "geomed": ("sq_distances_to + robust_lr_mean per Weiszfeld step", lambda u: ops.sq_distances_to(u)),
        "clip": ("sq_distances_to + robust_lr_mean", lambda u: ops.sq_distances_to(u)),
        "noise": ("robust_lr_mean (theta 0) + randn", lambda u: ops.robust_lr_mean(u, 0.0)),
        "centered_clip": ("median + sq_distances_to", lambda u: ops.median(u)),
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
    lines = ["| rule | K | d | seconds | dominated by | op seconds | rule / op | honest kept | attackers kept |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for shape in args.shapes.split(","):
        K, d = (int(v) for v in shape.split("x"))
        g = torch.Generator().manual_seed(0)
        u = torch.randn(K, d, generator=g)
        n_att = max(1, K // 10)
        u[:n_att] *= 10.0
        dominant = _dominant(K)
        for name in args.rules.split(","):
            rule = A.get(name, **params(name, K))
            rule(u[:, :1000].contiguous())  # warm-up (threads, imports)
            rule.reset()
            t0 = time.perf_counter()
            res = rule(u)
            dt = median_time(lambda: rule(u), 3, first=time.perf_counter() - t0)
            label, op = dominant.get(name, ("", None))
            t_op = None
            if op is not None:
                op(u[:, :1000].contiguous())
                t1 = time.perf_counter()
                op(u)
                t_op = median_time(lambda: op(u), 3, first=time.perf_counter() - t1)
            kept_h = kept_a = ""
            if type(rule).selects_clients:     # the fractions of honest clients and attackers it kept
                kept = (~res.excluded) & (res.client_weights > 0.1 / K)
                kept_h = f"{100 * float(kept[n_att:].double().mean()):.0f}%"
                kept_a = f"{100 * float(kept[:n_att].double().mean()):.0f}%"
            ratio = f"{dt / t_op:.1f}" if t_op else ""
            op_s = f"{t_op:.3f}" if t_op else ""
            lines.append(f"| {name} | {K} | {d:.0e} | {dt:.3f} | {label} | {op_s} | {ratio} | {kept_h} | {kept_a} |")
            print(lines[-1], flush=True)
    text = ("# Aggregation rules end to end (CPU)\n\n"
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; the median of three calls on the full input "
            "after a first call from a fresh instance (the first call alone where it takes over 5 s; stateful rules go "
            "on as in consecutive rounds; noisy, shared machine). "
            "Updates: N(0, 1), the first 10% scaled by 10 (diffuse attackers). *rule / op*: the rule's time over "
            "the op that dominates it (the rest: the finiteness check, a mean, host-side decisions). *kept*: "
            "for rules that select clients, the share of honest clients and of attackers left with a weight "
            "above 0.1 / K. Produced by `python bench/rules.py --out bench/results/rules_cpu.md`.\n\n"
            + "\n".join(lines) + "\n")
    publish(text, args.out)


if __name__ == "__main__":
    main()
