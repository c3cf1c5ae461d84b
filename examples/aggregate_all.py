"""Aggregate one round of simulated client updates with every robustagg op.

90 honest clients send noisy copies of a true update; 10 attackers send the
same scaled, sign-flipped update (a model-replacement-style attack). For each
op the script prints its distance to the true update, whether it was pulled
towards the attack, and its time.

    python examples/aggregate_all.py [--clients 100] [--attackers 10] [--dim 200000]
"""
import argparse
import time

import torch

import robustagg
from robustagg import ops


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--attackers", type=int, default=10)
    p.add_argument("--dim", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not 0 <= args.attackers < args.clients / 2:
        p.error(f"--attackers must be in [0, clients/2); got {args.attackers} of {args.clients}")

    g = torch.Generator().manual_seed(args.seed)
    K, f, d = args.clients, args.attackers, args.dim
    truth = torch.randn(d, generator=g) * 0.01
    honest = truth + 0.01 * torch.randn(K - f, d, generator=g)
    attack = -10.0 * truth  # scaled and flipped
    updates = torch.cat([honest, attack.expand(f, d)])
    trim = f

    def err(x):
        return float((x - truth).norm() / truth.norm())

    rows = []

    def run(name, fn, summarize):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        rows.append((name, summarize(out), dt))

    run("mean (no defense)", lambda: updates.mean(0), lambda x: f"rel. error {err(x):.3f}")
    run("sign_vote", lambda: ops.sign_vote(updates),
        lambda v: f"sign agrees with truth on {float(((v > 0) == (truth > 0)).float().mean()):.1%}")
    run("robust_lr_mean theta=K/4", lambda: ops.robust_lr_mean(updates, K // 4),
        lambda x: f"rel. error {err(x):.3f}")
    run("robust_lr_mean_counted theta=K/4", lambda: ops.robust_lr_mean_counted(updates, K // 4),
        lambda r: f"rel. error {err(r[0]):.3f}, {int(r[1])} of {d} coordinates flipped")
    run(f"trimmed_mean trim={trim}", lambda: ops.trimmed_mean(updates, trim), lambda x: f"rel. error {err(x):.3f}")
    run("median", lambda: ops.median(updates), lambda x: f"rel. error {err(x):.3f}")
    run(f"masked_trimmed_mean tau=0.5 trim={trim}", lambda: ops.masked_trimmed_mean(updates, 0.5, trim),
        lambda x: f"rel. error {err(x):.3f}, kept {float((x != 0).float().mean()):.1%}")
    run(f"closest_to_median_mean trim={trim}", lambda: ops.closest_to_median_mean(updates, trim),
        lambda x: f"rel. error {err(x):.3f}")
    run("repeated_median_line", lambda: ops.repeated_median_line(updates),
        lambda sl: f"median slope {float(sl[0].median()):.2e}")
    run("residual_reweight", lambda: ops.residual_reweight(updates),
        lambda r: f"rel. error {err(r[1]):.3f}, attackers' weight {float(r[0][K - f:].sum()):.2e}")
    run("residual_client_sums + residual_apply",
        lambda: ops.residual_apply(updates, ops.residual_client_sums(updates)),
        lambda r: f"rel. error {err(r[1]):.3f} (two parts, as for coordinate shards)")
    run("sq_distances_to", lambda: ops.sq_distances_to(updates, truth),
        lambda s: f"attacker / honest squared distance to truth {float(s[K - 1] / s[:K - f].mean()):.1f}x")
    run("pairwise_stats", lambda: ops.pairwise_stats(updates),
        lambda r: f"distances and Gram in one pass, Gram[0, 0] = {float(r[1][0, 0]):.3e}")
    run("pairwise_sq_distances", lambda: ops.pairwise_sq_distances(updates),
        lambda D: f"attacker-honest / honest-honest distance {float(D[K - 1, :K - f].mean() / D[0, 1:K - f].mean()):.1f}x")
    run("cosine_similarity", lambda: ops.cosine_similarity(updates),
        lambda C: f"attacker-honest cosine {float(C[K - 1, :K - f].mean()):.2f}")

    info = robustagg.native_info()
    print(f"robustagg {info['version']} ({', '.join(info['backends'])}; {info['num_threads']} threads); "
          f"K={K} clients, {f} attackers, d={d}")
    w = max(len(r[0]) for r in rows)
    summary_width = max(62, max(len(r[1]) for r in rows))
    print(f"{'op':{w}}  {'result':{summary_width}}  {'seconds':>8}")
    for name, summary, dt in rows:
        print(f"{name:{w}}  {summary:{summary_width}}  {dt:8.3f}")


if __name__ == "__main__":
    main()
