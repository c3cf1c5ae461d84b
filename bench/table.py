"""Prints (and writes, with --out) the CPU table: each native op against its
pure-PyTorch reference in the same run, results checked before timing.

    python bench/table.py --out bench/results/cpu.md

Effective bandwidth = bytes of `updates` read once / native time. The
bandwidth baseline is a plain streaming read of the same tensor,
`updates.sum()` (what this machine can read; `updates.mean(0)` is listed
beside it, at about half that speed, and is not the limit).
"""
import argparse
import datetime
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout first
import robustagg  # noqa: E402
from robustagg import ops, reference  # noqa: E402
from _timing import check_close, median_seconds, publish, table_row  # noqa: E402

SHAPES = [(10, 1_000_000), (100, 1_000_000)]
RESIDUAL_REF_SLICE = 100_000  # the residual reference is timed on this many coordinates and scaled


def cases(K):
    trim = max(1, K // 10)
    return [
        ("sign_vote", lambda u: ops.sign_vote(u), lambda u: reference.sign_vote(u)),
        ("robust_lr_mean", lambda u: ops.robust_lr_mean(u, 4), lambda u: reference.robust_lr_mean(u, 4)),
        ("trimmed_mean", lambda u: ops.trimmed_mean(u, trim), lambda u: reference.trimmed_mean(u, trim)),
        ("median", lambda u: ops.median(u), lambda u: reference.median(u)),
        ("masked_trimmed_mean", lambda u: ops.masked_trimmed_mean(u, 0.5, trim),
         lambda u: reference.masked_trimmed_mean(u, 0.5, trim)),
        ("closest_to_median_mean", lambda u: ops.closest_to_median_mean(u, trim),
         lambda u: reference.closest_to_median_mean(u, trim)),
        ("residual_reweight", lambda u: ops.residual_reweight(u), lambda u: reference.residual_reweight(u)),
        ("pairwise_sq_distances", lambda u: ops.pairwise_sq_distances(u), lambda u: reference.pairwise_sq_distances(u)),
        ("cosine_similarity", lambda u: ops.cosine_similarity(u), lambda u: reference.cosine_similarity(u)),
        ("pairwise_stats (fast float blocks)", lambda u: ops.pairwise_stats(u),
         lambda u: (reference.pairwise_sq_distances(u.double()), reference.gram(u.double()))),
        ("sq_distances_to", lambda u: ops.sq_distances_to(u, u[0]), lambda u: reference.sq_distances_to(u, u[0])),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="write the markdown table here")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--shapes", default=None, help="e.g. 10x1000000,100x1000000")
    p.add_argument("--ops", default=None, help="only these ops (comma-separated), e.g. residual_reweight")
    args = p.parse_args()
    only = set(args.ops.split(",")) if args.ops else None
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]

    rows = []
    torch.manual_seed(0)
    for K, d in shapes:
        u = torch.randn(K, d)
        nbytes = u.numel() * u.element_size()
        t_read = median_seconds(lambda: u.sum(), repeats=args.repeats)
        bw_mean = nbytes / t_read / 1e9
        rows.append(("updates.sum() (streaming read: the bandwidth baseline)", K, d, None, t_read, None, bw_mean,
                     1.0, ""))
        t_mean = median_seconds(lambda: u.mean(0), repeats=args.repeats)
        rows.append(("updates.mean(0)", K, d, None, t_mean, None, nbytes / t_mean / 1e9,
                     nbytes / t_mean / 1e9 / bw_mean, ""))
        for name, native, ref in cases(K):
            if only is not None and name not in only:
                continue
            note = ""
            if name == "residual_reweight":
                sl = u[:, :RESIDUAL_REF_SLICE].contiguous()
                check_close(native(sl), ref(sl), name)
                t_ref = median_seconds(lambda: ref(sl), repeats=1, warmup=0) * (d / RESIDUAL_REF_SLICE)
                note = f"reference timed on d={RESIDUAL_REF_SLICE} and scaled x{d // RESIDUAL_REF_SLICE}"
                t_nat = median_seconds(lambda: native(u), repeats=max(1, args.repeats // 2), warmup=0)
            elif name.startswith("pairwise_stats"):
                sl = u[:, :100_000].contiguous()
                _check_pairwise_stats(native(sl), sl)
                t_ref = median_seconds(lambda: ref(u), repeats=1, warmup=0)
                t_nat = median_seconds(lambda: native(u), repeats=args.repeats)
                note = "float32 blocks: distances < 1e-6 relative, Gram < 1e-6 |a||b| (checked on d=1e5)"
            else:
                check_close(native(u), ref(u), name)
                t_ref = median_seconds(lambda: ref(u), repeats=max(1, args.repeats // 2), warmup=0)
                t_nat = median_seconds(lambda: native(u), repeats=args.repeats)
            bw = nbytes / t_nat / 1e9
            rows.append((name, K, d, t_ref, t_nat, t_ref / t_nat, bw, bw / bw_mean, note))
            if name == "pairwise_sq_distances":
                t_cdist = median_seconds(lambda: torch.cdist(u, u) ** 2, repeats=args.repeats)
                rows.append(("  vs torch.cdist(u, u)**2 (float32)", K, d, t_cdist, t_nat, t_cdist / t_nat, bw,
                             bw / bw_mean, "cdist uses the Gram trick in float32 (inexact)"))
            print(_fmt(rows[-1]), flush=True)

    header = ("| op | K | d | reference ms | native ms | speed-up | native GB/s | of streaming read | note |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---|")
    lines = [header] + [_fmt(r) for r in rows]
    meta = (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
            f"threads: {ops.get_num_threads()}; torch {torch.__version__}; robustagg {robustagg.__version__} "
            f"({robustagg.native_info()['compiler']}); {datetime.date.today().isoformat()}. "
            f"float32, medians of {args.repeats} runs (references: fewer). Shared, noisy machine.")
    text = "# CPU benchmark: native ops vs pure-PyTorch references\n\n" + meta + "\n\n" + "\n".join(lines) + "\n"
    publish(text, args.out)


def _check_pairwise_stats(got, u):
    """The accuracy contract of the float blocks (ops.pairwise_stats) against float64."""
    x = u.double()
    dist, gram = reference.pairwise_sq_distances(x), reference.gram(x)
    norms = torch.diagonal(gram).sqrt()
    if not (((got[0] - dist).abs() <= 1e-6 * dist).all() and
            ((got[1] - gram).abs() <= 1e-6 * norms[:, None] * norms[None, :]).all()):
        raise AssertionError("pairwise_stats: outside its accuracy contract")


def _fmt(r):
    return table_row(r)


if __name__ == "__main__":
    main()
