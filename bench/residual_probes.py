"""The repeated medians by threshold probes instead of a network per row: an
exact prototype and its count, behind docs/design.md's "threshold probes"
(counted, not built).

    python bench/residual_probes.py [--K 100] [--columns 100]

Per sorted column (ranks x = 0..K-1) and statistic (slopes, eq. 1;
intercepts, eq. 2) it finds the outer median of the rows' medians without
selecting any row's K - 1 pair values, from counts at thresholds t:

- A slope is below t exactly when z_j = y_j - t j is below z_i (i < j), an
  intercept when w_i = (y_i - t) / i is below w_j (0 < i < j). Each point's
  z (or w) is rounded outward to a float interval wide enough for every
  rounding on the way (the margins below), so a pair whose intervals do not
  meet is decided by one float compare each way, and the few whose
  intervals meet are computed exactly, as the reference computes them, and
  compared with t. The intercepts' pairs with the point of rank 0 are y_0
  within two ulps (j y_0 / j): y_0's interval is compared with t itself.
  Every decision is checked against the exact values.
- A row's counts of values below t and at most t say whether its median
  (the midpoint of its two middle values) is below t, above it, equal to it
  or undecided. Each of the outer median's two ranks keeps a bracket
  (lo, hi) and the rows known below lo or above hi; only the other rows (the
  candidates) are counted at the next probe.
- The first threshold is the repeated median of 16 ranks spread evenly
  among themselves (240 exact values); later ones come from each row's
  counts interpolated between probes, aimed a few rows off the estimated
  rank so that one probe closes one end of the bracket. A probe that leaves more than 60% of the
  candidates is followed by one at a candidate row's exact median (a "pivot
  row"), which lands on the mass points of tie-heavy columns (sparse or
  quantised updates). A rank is resolved at a probe where its order lies
  among the rows equal to t; otherwise it stops at 6 or fewer candidate rows,
  whose medians are computed exactly.

The result is compared bitwise with the all-double selection for every
column (a zero's sign aside, as the kernels' bounds do not see it). The
count charges the warp's issue slots as bench/gpu_model.py does (idle lanes
charged): per pair decision two float compares and two count adds (int
pipe), with the partner's two bounds broadcast to a lane's rows or, where
few rows are counted, held by the lanes that take the partners (a row's
counts then added by two warp reductions); per uncertain pair an exact
value (a tie of equal values a compare); per probe the points' bounds, the
rows' classification and the next threshold (a warp sort of the
candidates' estimates); per exact row today's cost of the kernel's exact
rows (the warp a row). It also prints the floor of any such search: one
probe of every row against every partner per statistic.
"""
import argparse
import math

import numpy as np

U = 2.0 ** -53       # double rounding
TINY = 2.0 ** -1000  # absolute slack: underflow and subnormal roundings
W = 32               # lanes of a warp
CAP = 6              # candidate rows computed exactly at the end
SAMPLE = 16          # ranks whose repeated median (among themselves) is the first threshold
# per lane: operations (issue slots of a lane), as bench/gpu_model.py charges them
PAIR = dict(int=4, shared=2)     # two compares, two adds; two broadcast loads (per lane's rows)
UNCERTAIN = 23                   # an exact pair value and its compares (gpu_model's exact value: fp64 11, int 9, ...)
POINT = 14                       # a point's z or w, its margin, two directed conversions to float
CLASSIFY = 12                    # a row's status from its counts, the warp's counts of each status
ESTIMATE = 10                    # a row's interpolated median (a division, the probes' lookup)
REDUCE = 2                       # a warp's sum of a count (one reduction instruction, its latency)
TIE = 4                          # an uncertain pair of equal values (or two zeros): a compare, a count
EXACT_ROW = 4 * (11 + 9 + 3.2) + 7 * 3 + 3 * (2 + 6 + 4)  # gpu_model's exact rows, per row and lane


def pair_values(y: np.ndarray, slope: bool) -> np.ndarray:
    """[K, K]: the reference's pair values (row i, partner j), eq. (1) or (2)."""
    K = len(y)
    x = np.arange(K, dtype=np.float64)
    yi, yj, xi, xj = y[:, None], y[None, :], x[:, None], x[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (yj - yi) / (xj - xi) if slope else (xj * yi - xi * yj) / (xj - xi)


def midpoint(a: float, b: float) -> float:
    return a if a == b else 0.5 * a + 0.5 * b


def row_medians(P: np.ndarray) -> np.ndarray:
    K = len(P)
    n = K - 1
    rows = np.sort(P[~np.eye(K, dtype=bool)].reshape(K, n), axis=1)
    return np.array([midpoint(r[(n - 1) // 2], r[n // 2]) for r in rows])


def outer_median(meds: np.ndarray) -> float:
    s = np.sort(meds)
    K = len(s)
    return midpoint(s[(K - 1) // 2], s[K // 2])


def _down(x):  # to float, rounded toward -inf
    f = x.astype(np.float32)
    return np.where(f.astype(np.float64) > x, np.nextafter(f, np.float32(-np.inf)), f)


def _up(x):
    f = x.astype(np.float32)
    return np.where(f.astype(np.float64) < x, np.nextafter(f, np.float32(np.inf)), f)


class Probe:
    """Counts of each row's pair values below t and at most t, exact: float
    decisions outside the margins, the uncertain pairs by their exact value
    (those of two equal values, a slope of 0, or of two zeros, an intercept
    of 0, need no arithmetic: counted apart as ties)."""

    def __init__(self, y: np.ndarray, slope: bool):
        self.y, self.slope, self.K = y, slope, len(y)
        self.P = pair_values(y, slope)
        k = np.arange(self.K)
        self.a, self.b = np.minimum(k[:, None], k[None, :]), np.maximum(k[:, None], k[None, :])
        self.off = ~np.eye(self.K, dtype=bool)
        self.uncertain, self.ties = [], []

    def __call__(self, t: float, rows: np.ndarray):
        y, a, b = self.y, self.a[rows], self.b[rows]
        x = np.arange(self.K, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.slope:  # p_ab < t iff z_b < z_a; z's rounding (2u) and p's (2u) within the margin
                v = y - t * x
                m = 8 * U * (np.abs(y) + abs(t) * x) + TINY
            else:           # p_ab < t iff w_a < w_b (a >= 1); w's rounding and p's cancellation
                v = (y - t) / x
                m = 12 * U * (np.abs(y) + abs(t)) / x + TINY
                # the point of rank 0: its pairs' values are y_0 within 2 ulps (j y_0 / j)
                v[0], m[0] = y[0], 4 * U * abs(y[0]) + TINY
            lo, hi = _down(v - m), _up(v + m)
        if self.slope:
            below, above = hi[b] < lo[a], lo[b] > hi[a]
        else:
            below, above = hi[a] < lo[b], lo[a] > hi[b]
            first = a == 0  # against t itself
            below = np.where(first, float(hi[0]) < t, below)
            above = np.where(first, float(lo[0]) > t, above)
        off, P = self.off[rows], self.P[rows]
        unc = off & ~below & ~above
        assert not np.any(below & off & ~(P < t)) and not np.any(above & off & ~(P > t)), "a decision is wrong"
        ya, yb = y[a], y[b]
        tie = unc & ((ya == yb) if self.slope else ((ya == 0) & (yb == 0)))
        assert np.all(P[tie] == 0)
        self.ties.append(int(tie.sum()))
        self.uncertain.append(int((unc & ~tie).sum()))
        sure = (below & off).sum(1)
        return sure + (unc & (P < t)).sum(1), sure + (unc & (P <= t)).sum(1)


def _interpolate(samples, rows, n):
    """Each row's median estimated from its counts at the probes so far."""
    ts = np.array([s[0] for s in samples])
    order = np.argsort(ts)
    ts = ts[order]
    est = np.full(len(rows), np.nan)
    if len(ts) < 2:
        return est
    for q, i in enumerate(rows):
        c = np.array([samples[k][1].get(i, np.nan) for k in order])
        ok = ~np.isnan(c)
        tt, c = ts[ok], c[ok]
        if len(tt) < 2:
            continue
        k = int(np.searchsorted(c, n / 2.0))
        k0, k1 = (0, 1) if k == 0 else (len(tt) - 2, len(tt) - 1) if k == len(tt) else (k - 1, k)
        if c[k1] > c[k0]:
            est[q] = tt[k0] + (n / 2.0 - c[k0]) * (tt[k1] - tt[k0]) / (c[k1] - c[k0])
    return est


def probe_search(y: np.ndarray, slope: bool, cap: int = CAP, max_probes: int = 24, sample: int = SAMPLE):
    """The outer median of row medians (the repeated median) by probes; with
    the work done, for the count."""
    K, n = len(y), len(y) - 1
    pr = Probe(y, slope)
    meds = row_medians(pr.P)  # exact medians: used only for the rows computed exactly
    ranks = sorted({(K - 1) // 2, K // 2})
    lo = {r: -math.inf for r in ranks}
    hi = {r: math.inf for r in ranks}
    low = {r: np.zeros(K, bool) for r in ranks}
    high = {r: np.zeros(K, bool) for r in ranks}
    resolved, samples, active_counts, pivots, probed = {}, [], [], 0, set()
    # the first threshold: the repeated median of `sample` ranks spread evenly, among themselves
    S = np.unique(np.floor((np.arange(min(sample, K)) + 0.5) * K / min(sample, K)).astype(int))
    spread = np.array([midpoint(*np.sort(pr.P[i, S[S != i]])[[(len(S) - 2) // 2, (len(S) - 1) // 2]])
                       for i in S])
    first = len(S) * (len(S) - 1)
    t = float(np.median(spread))
    q1, q3 = np.quantile(spread, [0.25, 0.75])
    step = (q3 - q1) / math.sqrt(len(spread)) if q3 > q1 else abs(t) * 1e-3 + 1e-300

    def candidates(r):
        return ~low[r] & ~high[r]

    def open_ranks():
        return [r for r in ranks if r not in resolved and candidates(r).sum() > cap]

    prev = {r: K for r in ranks}
    while True:
        active = np.zeros(K, bool)
        for r in ranks:
            if r not in resolved and lo[r] < t < hi[r]:
                active |= candidates(r)
        rows = np.nonzero(active)[0]
        active_counts.append(len(rows))
        below, atmost = pr(t, rows)
        probed.add(t)
        samples.append((t, {int(i): 0.5 * (bb + aa) for i, bb, aa in zip(rows, below, atmost)}))
        lt = np.zeros(K, bool)
        gt = np.zeros(K, bool)
        eq = np.zeros(K, bool)
        lt[rows] = below >= n // 2 + 1                         # both middle values below t
        gt[rows] = atmost <= (n - 1) // 2                      # both above
        eq[rows] = (below <= (n - 1) // 2) & (atmost >= n // 2 + 1)  # both equal to t
        for r in ranks:
            if r in resolved or not lo[r] < t < hi[r]:
                continue
            c = candidates(r)
            L, G, E = low[r].sum() + (lt & c).sum(), high[r].sum() + (gt & c).sum(), (eq & c).sum()
            undecided = K - L - G - E
            if L + undecided <= r < L + E:
                resolved[r] = t
            elif L >= r + 1:
                hi[r], high[r] = t, high[r] | (gt & c) | (eq & c)
            elif G >= K - r:
                lo[r], low[r] = t, low[r] | (lt & c) | (eq & c)
        todo = open_ranks()
        if not todo or len(samples) >= max_probes:
            break
        r = max(todo, key=lambda q: candidates(q).sum())
        cand = np.nonzero(candidates(r))[0]
        stalled = len(cand) > 0.6 * prev[r]
        prev = {q: candidates(q).sum() for q in ranks}
        est = _interpolate(samples, cand, n)
        e = np.where(np.isnan(est), t, est)
        if stalled and len(samples) >= 3:  # a mass point? probe at a candidate row's exact median
            below_r = low[r].sum()
            target = np.sort(e)[min(max(r - below_r, 0), len(e) - 1)]
            pivots += 1
            with np.errstate(invalid="ignore"):
                t_new = float(meds[cand[np.argmin(np.abs(e - target))]])
            if lo[r] < t_new < hi[r] and t_new not in probed:
                t = t_new
                continue
        order = np.sort(e)
        at = r - low[r].sum()  # the rank among the candidates
        k = cap // 2 - 1
        below_n = np.sum(order < order[min(max(at, 0), len(order) - 1)])
        above_n = len(order) - 1 - below_n
        t_new = order[max(at - k, 0)] if below_n >= above_n else order[min(at + k, len(order) - 1)]
        if not lo[r] < t_new < hi[r] or t_new in probed:
            if math.isfinite(lo[r]) and math.isfinite(hi[r]):
                t_new = 0.5 * (lo[r] + hi[r])
            else:  # a step out from the finite end (or from t) that lands on a new threshold
                base, sign = (hi[r], -1.0) if math.isfinite(hi[r]) else (lo[r], 1.0) if math.isfinite(lo[r]) \
                    else (t, 1.0)  # no end yet: t split nothing for this rank, try above it
                step = max(step, abs(base) * 2.0 ** -40, 2.0 ** -1000)
                t_new = base + sign * step
                while t_new in probed and math.isfinite(t_new):
                    step *= 2
                    t_new = base + sign * step
                step *= 2
            if t_new in probed or not lo[r] < t_new < hi[r] or not math.isfinite(t_new):
                break  # the probes cannot split the bracket further (rows straddle it): the candidates exactly
        t = float(t_new)
    exact_rows = np.zeros(K, bool)
    values = []
    for r in ranks:
        if r in resolved:
            values.append(resolved[r])
            continue
        c = candidates(r)
        exact_rows |= c
        values.append(np.sort(meds[c])[r - low[r].sum()])
    return dict(value=midpoint(values[0], values[-1]), probes=len(samples), thresholds=[q[0] for q in samples],
                active=active_counts,
                uncertain=pr.uncertain, ties=pr.ties, pivots=pivots, exact_rows=int(exact_rows.sum()), first=first)


def lane_ops(run, K: int) -> float:
    """The count of one statistic's search in slots, a lane's operations
    summed over the warp's 32 lanes as bench/gpu_model.py sums its phases,
    except that a shared-memory word is charged twice (its pipe has half the
    int pipe's lanes; the model's phase sums charge it once), which only
    makes the probes' count the more conservative."""
    n = K - 1
    ops = 0.0
    for active in run["active"]:
        # the cheaper of two layouts: lanes over rows (a lane's rows against every partner, the partner's
        # bounds broadcast), or lanes over partners (each lane's partners' bounds in registers, a row at a
        # time, broadcast; its two counts added across the warp by two reductions, __reduce_add_sync)
        per_lane = -(-active // W)
        over_rows = W * per_lane * n * (PAIR["int"] + 2 * PAIR["shared"] / per_lane)
        over_partners = W * active * (-(-K // W) * PAIR["int"] + 2 * REDUCE + 2 * 2)
        ops += min(over_rows, over_partners)
        ops += W * (-(-K // W)) * POINT + W * (-(-max(active, 1) // W)) * (CLASSIFY + ESTIMATE)
        keys = max(active, 1)  # the next threshold: a warp sort of the candidates' estimates (32-bit keys)
        per_lane = max(1, -(-keys // W))
        slots = W * per_lane
        stages = int(math.log2(slots)) * (int(math.log2(slots)) + 1) // 2
        ops += W * per_lane * stages * 3
    for u, ties in zip(run["uncertain"], run["ties"]):
        ops += W * (-(-u // W)) * UNCERTAIN + W * (-(-ties // W)) * TIE
    ops += W * (-(-run["first"] // W)) * (UNCERTAIN + 3 * 5)  # the first threshold: its exact values, their sorts
    ops += W * (run["pivots"] + run["exact_rows"]) * EXACT_ROW
    return ops


KINDS = {
    "Gaussian": lambda rng, K: rng.standard_normal(K),
    "Cauchy": lambda rng, K: rng.standard_cauchy(K),
    "quantised": lambda rng, K: np.round(3 * rng.standard_normal(K)),
    "sparse": lambda rng, K: np.where(rng.random(K) < 0.7, 0.0, rng.standard_normal(K)),
    "float32": lambda rng, K: rng.standard_normal(K).astype(np.float32).astype(np.float64) * 1e-3,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--K", type=int, default=100)
    ap.add_argument("--columns", type=int, default=100)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    K = args.K
    print(f"K = {K}, {args.columns} columns a kind; per statistic (means): probes, rows counted over the probes, "
          f"uncertain pairs a probe, pivot rows, rows computed exactly, slots")
    total = {}
    for kind, draw in KINDS.items():
        for slope in (True, False):
            runs = []
            for _ in range(args.columns):
                y = np.sort(draw(rng, K))
                run = probe_search(y, slope)
                want = outer_median(row_medians(pair_values(y, slope)))
                assert run["value"] == want, (kind, slope, run["value"], want)
                runs.append(run)
            ops = np.mean([lane_ops(r, K) for r in runs])
            total.setdefault(kind, 0.0)
            total[kind] += ops
            print(f"{kind:10s} {'slopes    ' if slope else 'intercepts'}: "
                  f"{np.mean([r['probes'] for r in runs]):5.2f} probes, "
                  f"{np.mean([sum(r['active']) for r in runs]):6.1f} rows counted, "
                  f"{np.mean([np.mean(r['uncertain']) for r in runs]):6.1f} uncertain, "
                  f"{np.mean([r['pivots'] for r in runs]):4.2f} pivots, "
                  f"{np.mean([r['exact_rows'] for r in runs]):5.2f} exact rows, {ops:9,.0f} slots")
    for kind, ops in total.items():
        print(f"{kind:10s} both statistics: {ops:9,.0f} slots a coordinate")
    floor = 2 * lane_ops(dict(active=[K], uncertain=[0], ties=[0], first=0, pivots=0, exact_rows=0), K)
    print(f"floor: one probe of every row per statistic, {floor:,.0f} slots a coordinate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
