"""robustagg's rules side by side with the implementations users would otherwise call.

    pip install ".[bench]"        # byzfl and flwr (optional peers)
    python bench/peers.py [--shapes 10x1000000,100x1000000] [--repeats 3] [--out bench/results/peers_cpu.md]

Peers: ByzFL's aggregators (``byzfl.aggregators``, on torch tensors), Flower's
``flwr.server.strategy.aggregate`` functions (on numpy arrays, as a Flower
strategy calls them), and faithful ports of the released code of the papers
where no package has the rule (RLR: Ozdayi et al.'s ``agg_avg`` + robust
learning rate; FoolsGold: Fung et al.'s ``foolsgold`` on numpy histories).

Before anything is timed, every pair is run on the same small input and its
results compared: "equal" (within float32 rounding), or the convention
difference that makes them differ, stated. Times are medians of ``--repeats``
calls, each peer right after robustagg in the same run (the machine is
shared and noisy: read the ratios, not the seconds).

ByzFL's package ``__init__`` imports torchvision (for its benchmark module);
where torchvision is absent or broken, the aggregators are loaded without it
(they need only torch, numpy and scipy).
"""
import argparse
import importlib
import importlib.util
import os
import sys
import time
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout first
import robustagg.aggregators as A  # noqa: E402
from _timing import median_time, publish  # noqa: E402


def load_byzfl():
    """byzfl.aggregators, or None when byzfl is not installed."""
    spec = importlib.util.find_spec("byzfl")
    if spec is None:
        return None
    try:
        return importlib.import_module("byzfl.aggregators")
    except Exception:  # its __init__ needs torchvision: load the aggregators alone
        for name in [m for m in sys.modules if m == "byzfl" or m.startswith("byzfl.")]:
            del sys.modules[name]
        pkg = types.ModuleType("byzfl")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["byzfl"] = pkg
        return importlib.import_module("byzfl.aggregators")


def load_flower():
    try:
        return importlib.import_module("flwr.server.strategy.aggregate")
    except Exception:
        return None


# --------------------------------------------------------------------- the papers' released code (ports)


def rlr_authors(u: torch.Tensor, sizes: torch.Tensor, threshold: float) -> torch.Tensor:
    """Ozdayi et al.'s code: sum of signs, lr = where(|sum| < theta, -1, 1), then the
    sample-size-weighted average of the updates, times lr."""
    sm_of_signs = torch.abs(torch.sum(torch.sign(u), dim=0))
    lr = torch.where(sm_of_signs < threshold, -1.0, 1.0)
    avg = (u * sizes[:, None].to(u.dtype)).sum(0) / sizes.sum().to(u.dtype)
    return lr * avg


def foolsgold_authors(grads: np.ndarray) -> np.ndarray:
    """Fung et al.'s ``foolsgold(grads)`` on the [n, d] history matrix: the
    per-client learning rates (sklearn's cosine_similarity, pardoning, logit)."""
    from sklearn.metrics.pairwise import cosine_similarity
    n = grads.shape[0]
    cs = cosine_similarity(grads) - np.eye(n)
    maxcs = np.max(cs, axis=1)
    for i in range(n):
        for j in range(n):
            if i != j and maxcs[i] < maxcs[j]:
                cs[i][j] = cs[i][j] * maxcs[i] / maxcs[j]
    wv = 1 - np.max(cs, axis=1)
    wv[wv > 1] = 1
    wv[wv < 0] = 0
    wv = wv / np.max(wv)
    wv[wv == 1] = .99
    with np.errstate(divide="ignore"):
        wv = np.log(wv / (1 - wv)) + 0.5
    wv[np.isinf(wv) & (wv > 0)] = 1
    wv[wv < 0] = 0
    return np.clip(wv, 0, 1)


def foolsgold_authors_update(u: torch.Tensor) -> torch.Tensor:
    # One round from empty histories: the history matrix is this round's updates.
    wv = foolsgold_authors(u.double().numpy())
    return (torch.from_numpy(wv).to(u.dtype)[:, None] * u).sum(0) / u.shape[0]


# --------------------------------------------------------------------- the pairs


def flower_results(u: np.ndarray, sizes):
    return [([row], int(n)) for row, n in zip(u, sizes)]


def pairs(K: int, byzfl, flower):
    """(rule label, robustagg rule, peer label, peer(u_torch, u_numpy, sizes) -> tensor, convention or None)."""
    f = max(1, K // 10)
    trim = f
    out = []
    add = lambda *row: out.append(row)  # noqa: E731
    uniform = None
    if byzfl is not None:
        B = byzfl
        add("fedavg", A.FedAvg(), "ByzFL Average", lambda u, x, s: B.Average()(u), None)
        add("median", A.Median(), "ByzFL Median", lambda u, x, s: B.Median()(u),
            "torch.median: lower middle value for even K (robustagg: midpoint)" if K % 2 == 0 else None)
        add("trimmed_mean", A.TrimmedMean(trim=trim), "ByzFL TrMean", lambda u, x, s: B.TrMean(f=trim)(u), None)
        add("krum", A.Krum(f=f - 1), "ByzFL Krum", lambda u, x, s: B.Krum(f=f)(u), None)
        add("multikrum", A.MultiKrum(f=f - 1, m=K - f), "ByzFL MultiKrum", lambda u, x, s: B.MultiKrum(f=f)(u), None)
        add("clip", A.NormClip(max_norm=500.0), "ByzFL Clipping + Average",
            lambda u, x, s: B.Average()(B.Clipping(c=500.0)(u)), None)
        add("geomed", A.GeometricMedian(), "ByzFL GeometricMedian",
            lambda u, x, s: B.GeometricMedian(nu=0.1, T=3)(u),
            "ByzFL runs T = 3 Weiszfeld steps from 0 (not to convergence); robustagg iterates to tol 1e-5")
        add("centered_clip", A.CenteredClip(tau=100.0, iterations=1), "ByzFL CenteredClipping",
            lambda u, x, s: B.CenteredClipping(tau=100.0, L=1)(u),
            "ByzFL starts from 0 in its first call; robustagg from the coordinate-wise median")
    if flower is not None:
        F = flower
        add("fedavg", A.FedAvg(), "Flower aggregate", lambda u, x, s: torch.from_numpy(
            F.aggregate(flower_results(x, s))[0]), None)
        add("median", A.Median(), "Flower aggregate_median", lambda u, x, s: torch.from_numpy(
            F.aggregate_median(flower_results(x, s))[0]), None)
        add("trimmed_mean", A.TrimmedMean(beta=0.1), "Flower aggregate_trimmed_avg", lambda u, x, s: torch.from_numpy(
            F.aggregate_trimmed_avg(flower_results(x, s), 0.1)[0]), None)
        add("krum", A.Krum(f=f), "Flower aggregate_krum", lambda u, x, s: torch.from_numpy(
            F.aggregate_krum(flower_results(x, s), f, 0)[0]), None)
        add("multikrum", A.MultiKrum(f=f, m=K - f), "Flower aggregate_krum (to_keep)",
            lambda u, x, s: torch.from_numpy(F.aggregate_krum(flower_results(x, s), f, K - f)[0]),
            "Flower averages the kept clients by sample count; robustagg too (same weights here)")
        if K >= 4 * f + 3:
            add("bulyan", A.Bulyan(f=f), "Flower aggregate_bulyan (Krum)", lambda u, x, s: torch.from_numpy(
                F.aggregate_bulyan(flower_results(x, s), f, F.aggregate_krum, to_keep=0)[0]),
                "Flower's selection re-scores with n - f - 2 neighbours of the remaining set; robustagg keeps "
                "at least f neighbours near the end (see Bulyan's docstring)")
    add("rlr", A.RobustLR(threshold=4), "RLR authors' code (port)",
        lambda u, x, s: rlr_authors(u, s, 4.0), None)
    add("foolsgold", A.FoolsGold(), "FoolsGold authors' code (port)",
        lambda u, x, s: foolsgold_authors_update(u), None)
    return out, uniform


def make_updates(K: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(K, d, generator=g)
    u[: max(1, K // 10)] = u[: max(1, K // 10)] * 0.1 + 3.0     # 10% alike attackers, far away
    return u


def check(ours, peer, u, x, sizes, convention):
    """'equal', the stated convention, or MISMATCH with the largest difference."""
    if isinstance(ours, A.Aggregator) and ours.stateful:
        ours.reset()
    a = ours(u, weights=sizes).update.double()
    b = peer(u, x, sizes).double()
    if torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        return "equal"
    if convention:
        return f"differs by convention: {convention}"
    return f"MISMATCH (max |diff| {float((a - b).abs().max()):.3g})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="10x1000000,100x1000000")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rules", help="only these rules (comma-separated), e.g. for a quick look")
    p.add_argument("--out")
    args = p.parse_args()
    byzfl, flower = load_byzfl(), load_flower()
    lines = ["| rule | K | d | robustagg s | peer | peer s | peer s / robustagg s | results |",
             "|---|---:|---:|---:|---|---:|---:|---|"]
    for shape in args.shapes.split(","):
        K, d = (int(v) for v in shape.split("x"))
        u = make_updates(K, d)
        x = u.numpy()
        sizes = torch.full((K,), 100.0, dtype=torch.float64)   # equal sample counts: every peer's weighting agrees
        small = make_updates(K, 2000, seed=1)
        rows, _ = pairs(K, byzfl, flower)
        for label, ours, peer_label, peer, convention in rows:
            if args.rules and label not in args.rules.split(","):
                continue
            verdict = check(ours, peer, small, small.numpy(), sizes, convention)

            def run_ours():
                if ours.stateful:
                    ours.reset()
                return ours(u, weights=sizes)
            t_ours = median_time(run_ours, args.repeats)
            t_peer = median_time(lambda: peer(u, x, sizes), args.repeats)
            lines.append(f"| {label} | {K} | {d:.0e} | {t_ours:.4f} | {peer_label} | {t_peer:.4f} | "
                         f"{t_peer / t_ours:.1f} | {verdict} |")
            print(lines[-1], flush=True)
    versions = [f"torch {torch.__version__}", f"numpy {np.__version__}"]
    for mod in ("byzfl", "flwr"):
        try:
            from importlib.metadata import version
            versions.append(f"{mod} {version(mod)}")
        except Exception:
            versions.append(f"{mod}: not installed")
    text = ("# robustagg beside its peers (CPU)\n\n"
            f"{', '.join(versions)}; {torch.get_num_threads()} threads; float32 updates, equal sample counts; "
            f"median of {args.repeats} calls after a warm-up (one call where that takes over 5 s). Produced by `python bench/peers.py"
            f"{' --out ' + args.out if args.out else ''}`.\n\n"
            "Every pair is first run on the same K x 2000 input: *equal* means within 1e-4 relative; "
            "otherwise the convention that separates them is stated. ByzFL's `Krum(f)` / `MultiKrum(f)` "
            "score with n - f - 1 neighbours, robustagg's with n - f - 2: ByzFL's f is compared with "
            "robustagg's f - 1 (the same neighbours, the same choice).\n\n"
            + "\n".join(lines) + "\n")
    publish(text, args.out)


if __name__ == "__main__":
    main()
