"""The CPU kernels' copies side by side: every op timed on each instruction-set
copy of this build (baseline x86-64, AVX2, AVX-512; robustagg/cpu_isa.h), and
optionally on another build of robustagg (e.g. a ROBUSTAGG_MARCH=native one,
installed with `pip install --target DIR`), in alternating rounds of separate
processes so that the machine's noise falls on all of them alike.

    python bench/cpu_isa.py                         # this build's copies
    python bench/cpu_isa.py --other /tmp/native     # ... and another build
    python bench/cpu_isa.py --out bench/results/cpu_isa.md

Medians of --repeats calls per op and round, then the median over --rounds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = [  # name, K, d, dtype, call
    ("sign_vote", 10, 10**6, "float32", "ops.sign_vote(u)"),
    ("robust_lr_mean", 10, 10**6, "float32", "ops.robust_lr_mean(u, threshold=4)"),
    ("median", 10, 10**6, "float32", "ops.median(u)"),
    ("trimmed_mean", 32, 3 * 10**5, "float32", "ops.trimmed_mean(u, 8)"),
    ("trimmed_mean", 100, 10**5, "float32", "ops.trimmed_mean(u, 25)"),
    ("closest_to_median_mean", 20, 3 * 10**5, "float64", "ops.closest_to_median_mean(u, 4)"),
    ("masked_trimmed_mean", 20, 3 * 10**5, "float32", "ops.masked_trimmed_mean(u, 0.5, 4)"),
    ("residual_reweight", 20, 2 * 10**4, "float32", "ops.residual_reweight(u)"),
    ("residual_reweight", 100, 2 * 10**3, "float32", "ops.residual_reweight(u)"),
    ("repeated_median_line", 40, 10**4, "float64", "ops.repeated_median_line(u)"),
    ("pairwise_sq_distances", 100, 10**5, "float32", "ops.pairwise_sq_distances(u)"),
    ("pairwise_stats", 50, 10**5, "float64", "ops.pairwise_stats(u)"),
    ("cosine_similarity", 100, 10**5, "float32", "ops.cosine_similarity(u)"),
    ("sq_distances_to", 50, 10**6, "float32", "ops.sq_distances_to(u)"),
]

WORKER = r"""
import json, sys
import torch
import robustagg
from robustagg import ops
isa, repeats, cases = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
sys.path.insert(0, sys.argv[4])
from _timing import median_seconds
if isa != "-":
    ops._C._set_cpu_isa(isa)
out = {"isa": robustagg.native_info().get("cpu_isa", "-march=native"), "file": robustagg.__file__, "times": []}
for name, K, d, dtype, call in cases:
    u = torch.randn(K, d, generator=torch.Generator().manual_seed(0), dtype=getattr(torch, dtype))
    f = eval("lambda u: " + call)
    out["times"].append(median_seconds(lambda: f(u), repeats=repeats, warmup=1))
print(json.dumps(out))
"""


def run(pythonpath, isa, repeats):
    env = dict(os.environ)
    env.pop("ROBUSTAGG_CPU_ISA", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", WORKER, isa, str(repeats), json.dumps(CASES),
                          os.path.dirname(os.path.abspath(__file__))], env=env,
                         capture_output=True, text=True, cwd="/")
    if out.returncode != 0:
        sys.exit(f"worker failed ({pythonpath or 'this build'}, {isa}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--other", help="PYTHONPATH of another robustagg build to time beside this one")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", help="write the markdown table here")
    p.add_argument("--only", help="comma-separated op names (default: every op)")
    args = p.parse_args()
    if args.only:
        CASES[:] = [c for c in CASES if c[0] in args.only.split(",")]
    import robustagg
    from robustagg import ops
    isas = [n for n, (built, ok) in ops._C.cpu_isas().items() if built and ok]
    columns = [(None, isa) for isa in isas] + ([(args.other, "-")] if args.other else [])
    results = {c: [] for c in columns}
    labels = {}
    for _ in range(args.rounds):
        for c in columns:
            r = run(*c, args.repeats)
            labels[c] = r["isa"] if c[0] is None else f"other build ({r['isa']})"
            results[c].append(r["times"])
    med = {c: [statistics.median(r[i] for r in results[c]) for i in range(len(CASES))] for c in columns}
    base = columns[len(isas) - 1]  # the best copy of this build
    head = "| op | K | d | dtype | " + " | ".join(f"{labels[c]} ms" for c in columns) + " | " + \
        " | ".join(f"{labels[c]} / {labels[base]}" for c in columns if c != base) + " |"
    lines = [head, "|" + "---|" * 4 + "---:|" * (2 * len(columns) - 1)]
    for i, (name, K, d, dtype, _) in enumerate(CASES):
        cells = [f"{med[c][i] * 1e3:.2f}" for c in columns]
        ratios = [f"{med[c][i] / med[base][i]:.2f}" for c in columns if c != base]
        lines.append(f"| {name} | {K} | {d:.0e} | {dtype} | " + " | ".join(cells + ratios) + " |")
    meta = (f"robustagg {robustagg.__version__}, {ops.get_num_threads()} threads, {os.cpu_count()} CPUs; "
            f"median of {args.repeats} calls, then of {args.rounds} alternating rounds (one process per "
            f"column and round). Ratios above 1: slower than this build's {labels[base]} copy.")
    text = "\n".join(lines) + "\n\n" + meta + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# The CPU kernels' instruction-set copies side by side\n\nGenerated {time.strftime('%Y-%m-%d')} "
                    f"by `python bench/cpu_isa.py{' --other ...' if args.other else ''}`.\n\n" + text)


if __name__ == "__main__":
    main()
