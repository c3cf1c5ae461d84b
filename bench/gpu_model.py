"""The GPU cost model: what each CUDA kernel of this build should take on an
H100 SXM, by count, against the targets of the GPU-algorithms issue.

    python bench/gpu_model.py --out bench/results/gpu_model_h100.md

Per row (one kernel at one shape, float32 updates):
- registers and static shared memory of the kernel on sm_90, from ptxas's
  report of this very build (robustagg/_cuda_resources.txt), and the block it
  is launched with, from the emulated launchers' launch log (the same
  launchers as on the GPU);
- resident threads per SM: the least of the register file, the 2048-thread
  and 32-block limits and shared memory (warp register allocation in units
  of 256);
- the kernel's declared cost per coordinate (DECLARED below, one entry per
  kernel, written from its source): DRAM bytes, independent global loads a
  thread has in flight, and operations per pipe (fp32, fp64, integer/select,
  shared-memory words);
- time = max(memory, issue): memory = bytes / (bandwidth x min(1, bytes in
  flight per SM / the bytes Little's law needs per SM)); issue = operations /
  (SMs x lanes of the pipe x clock), slowed by min(1, resident warps x ILP /
  16) when too few warps hide the pipes' latency, where ILP (declared, at
  most 4) is how many independent instructions a thread has ready at a
  time: a layer of a sorting network is many independent comparators, so a
  warp issues back to back where a dependent chain would wait.

The constants are stated (HOPPER) and the declarations are the model's
inputs: when a kernel changes, its entry changes with it, and the registers
and blocks are re-read from the build. The result is an estimate, replaced
by bench/gpu_table.py's measurement whenever a GPU runs bench/gpu_check.sh.
"""
import argparse
import dataclasses
import datetime
import math
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, os.path.dirname(__file__))
from robustagg import _C, _cuda_resources, ops  # noqa: E402

# H100 SXM5 (sm_90). Bandwidth and SMs as the issue states them; lanes per SM
# and clock from NVIDIA's H100 whitepaper; the loaded DRAM latency is an
# assumption (stated, the largest single uncertainty of the memory rows).
HOPPER = dict(bandwidth=3.35e12, sms=132, clock=1.755e9, latency=800e-9, registers=65536, threads=2048,
              blocks=32, shared=227 * 1024, lanes={"fp32": 128, "fp64": 64, "int": 64, "shared": 32})
WARPS_TO_HIDE_LATENCY = 16  # 4 schedulers x ~4 cycles of dependent-issue latency


def batcher_comparators(n: int, median_only: bool = False) -> int:
    """Comparators of math/order.h's network on n rows (for_each_batcher, and
    make_fixed_net's pruning to the median positions)."""
    N = 1
    while N < n:
        N <<= 1
    net = []
    p = 1
    while p < N:
        k = p
        while k >= 1:
            j = k % p
            while j + k < N:
                for i in range(min(k, N - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        net.append((i + j, i + j + k))
                j += 2 * k
            k >>= 1
        p <<= 1
    if not median_only:
        return len(net)
    needed = {(n - 1) // 2, n // 2}
    kept = 0
    for a, b in reversed(net):
        if a in needed or b in needed:
            needed |= {a, b}
            kept += 1
    return kept


def batcher_candidates(n: int) -> int:
    """Inner-loop iterations of the run-time network (each pays its index math,
    whether or not it emits a comparator)."""
    N = 1
    while N < n:
        N <<= 1
    count, p = 0, 1
    while p < N:
        k = p
        while k >= 1:
            j = k % p
            while j + k < N:
                count += min(k, N - j - k)
                j += 2 * k
            k >>= 1
        p <<= 1
    return count


@dataclasses.dataclass
class Cost:
    """One coordinate's cost on one thread (or, for tiled kernels, per column
    of d over the whole K x K tile set)."""
    dram_bytes: float
    loads_in_flight: float      # independent global loads of `load_bytes` a thread has outstanding
    ops: Dict[str, float]       # pipe -> operations per coordinate
    load_bytes: int = 4
    ilp: float = 1.0            # independent instructions a thread has ready (capped at MAX_ILP)
    note: str = ""
    # Kernels whose phases differ in ILP: (ilp, {pipe: ops}) per group, which
    # then replace ops/ilp in the issue time (ops is still their sum).
    ilp_groups: Optional[List[Tuple[float, Dict[str, float]]]] = None


F64_DIV = 12         # fp64 instructions of an IEEE double division (reciprocal + Newton + fix-up)
CMP_SELECT = 2       # compare_exchange on sm_90: a min and a max instruction (math/order.h)
LOOP_STEP = 8        # a candidate of the run-time network: index adds, xor, two compares, branch
MARKSTEIN = 4        # math::div_rcp: a product, two fused multiply-adds, a compare (the reciprocal from a table)
MAX_ILP = 4          # ~4 cycles of dependent-issue latency: 4 independent instructions hide it within a warp


def register_rows(K: int) -> int:
    """Rows of the register network that serves K (math::register_rows_for):
    the next power of two up to 16, then the next multiple of 8 up to 64 and
    of 16 beyond."""
    n = 1
    while n < K and n < 16:
        n <<= 1
    step = 8 if K <= 64 else 16
    return n if n >= K else -(-K // step) * step


def _stream(K, weighted):
    return Cost(dram_bytes=4 * K + 4, loads_in_flight=4 * min(K, 4),
                ops={"int": 4 * K, "fp64": (2 * K if weighted else 0)},
                note="4 coordinates per thread a block apart, rows unrolled by 4: 16 independent 4-byte loads "
                     "in one basic block (PTX)" + ("; the weight sum once per block" if weighted else ""))


def _order_registers(K, trim):
    # order_column_registers + order_finish<kRows, ..., kWindow = false>: per
    # value a NaN test, a select, the bound and the sign vote (4); the network;
    # per row of the unrolled finish a select and the window's two compares
    # and predicate (4 int) and a conversion and add (2 fp64), rows past K
    # included. A layer of the network is >= rows / 4 independent comparators.
    rows = register_rows(K)
    c = batcher_comparators(rows)
    return Cost(dram_bytes=4 * K + 4, loads_in_flight=K,
                ops={"int": CMP_SELECT * c + 4 * K + 4 * rows, "fp64": 2 * rows},
                ilp=min(MAX_ILP, max(1, rows // 4)),
                note=f"the network of {rows} rows (Batcher's on {1 << (rows - 1).bit_length()} without the "
                     f"comparators past row {rows}): {c} comparators x {CMP_SELECT} (min, max); the finish "
                     f"unrolled over the {rows} rows")


def _order_registers_window(K, trim):
    # order_finish<kRows, ..., kWindow = true> for Closest (Bulyan): as
    # _order_registers, plus the median's two picks (2 per row), the barrel
    # shifter (a copy, then one select per row per bit of the window) and
    # per row the window's test (two fp64 differences, two conversions, a
    # compare) and its count.
    base = _order_registers(K, trim)
    rows = register_rows(K)
    stages = rows.bit_length()
    return Cost(dram_bytes=base.dram_bytes, loads_in_flight=base.loads_in_flight,
                ops={"int": base.ops["int"] + rows * (2 + 1 + stages + 2), "fp64": base.ops["fp64"] + 5 * rows},
                ilp=base.ilp, note=base.note + f", and the window's barrel shifter ({stages} stages of {rows} selects)")


def _order_shared(K, trim):
    c, cand = batcher_comparators(K), batcher_candidates(K)
    return Cost(dram_bytes=4 * K + 4, loads_in_flight=4,
                ops={"shared": 4 * c + K + 2 * (K - 2 * trim), "int": cand * LOOP_STEP + CMP_SELECT * c,
                     "fp64": 2 * (K - 2 * trim)},
                note=f"the column in a shared tile: {c} comparators x (2 shared loads + 2 stores); {cand} candidates "
                     f"of the run-time network x {LOOP_STEP} integer operations (no division)")


def select_visits(values, r: int, value: bool = False):
    """Values visited by math::select_rank (quickselect with Tukey's ninther
    from 9 values up) to find rank r (with value=True: and the value found),
    a port for counting, as batcher_comparators is of the networks."""
    a = list(values)

    def med3(p0, p1, p2):
        if p1 < p0:
            p0, p1 = p1, p0
        if p2 < p1:
            p1 = max(p2, p0)
        return p1

    lo_b, hi_b, visits = 0, len(a) - 1, 0
    while lo_b < hi_b:
        m = hi_b - lo_b
        mid, e = lo_b + m // 2, m // 8
        pivot = (med3(med3(a[lo_b], a[lo_b + e], a[lo_b + 2 * e]), med3(a[mid - e], a[mid], a[mid + e]),
                      med3(a[hi_b - 2 * e], a[hi_b - e], a[hi_b])) if e > 0 else med3(a[lo_b], a[mid], a[hi_b]))
        lt = i = lo_b
        gt = hi_b
        while i <= gt:
            v = a[i]
            visits += 1
            if v < pivot:
                a[i], a[lt] = a[lt], v
                lt += 1
                i += 1
            elif pivot < v:
                a[i], a[gt] = a[gt], v
                gt -= 1
            else:
                i += 1
        if r < lt:
            hi_b = lt - 1
        elif r > gt:
            lo_b = gt + 1
        else:
            break
    return (visits, a[r]) if value else visits


def residual_selections(K: int, columns: int = 40, seed: int = 0) -> Dict[str, float]:
    """Quickselect visits per value on the residual kernel's arrays, from
    Gaussian columns: the rows' float keys (mean, and the slowest of a warp's
    32 rows, which the warp waits for), and arrays of K values (one lane: the
    residual scale; the slowest of 8: the outer bounds)."""
    g = torch.Generator().manual_seed(seed)
    rows, flat = [], []
    x = torch.arange(K, dtype=torch.float64)
    for _ in range(columns):
        y = torch.sort(torch.randn(K, generator=g, dtype=torch.float64)).values
        for i in range(0, K, max(1, K // 10)):
            j = torch.tensor([jj for jj in range(K) if jj != i])
            a, b = torch.minimum(j, torch.tensor(i)), torch.maximum(j, torch.tensor(i))
            rows.append(((y[b] - y[a]) / (b - a)).float().tolist())
            rows.append(((x[b] * y[a] - x[a] * y[b]) / (b - a)).float().tolist())
        flat.append(torch.randn(K, generator=g, dtype=torch.float64).abs().tolist())
    n = K - 1
    row_visits = torch.tensor([select_visits(r, n // 2) for r in rows], dtype=torch.float64) / n
    flat_visits = torch.tensor([select_visits(f, K // 2) for f in flat], dtype=torch.float64) / K

    def slowest(v, lanes):
        pick = torch.randint(len(v), (500, lanes), generator=g)
        return v[pick].max(dim=1).values.mean().item()

    return dict(row=row_visits.mean().item(), row_warp=slowest(row_visits, 32), flat=flat_visits.mean().item(),
                flat_8=slowest(flat_visits, 8))


EXACT_ROWS_K100 = 4  # rows computed in double per coordinate at K = 100 (mean, Gaussian columns; ~12 quantised)


def residual_network_rows(K: int) -> int:
    """Network rows for a row's K - 1 keys (plan::residual_register_rows): 16,
    32, 64, 100 or 112, 0 past 112 (the shared column and quickselect)."""
    n = K - 1
    return next((r for r in (16, 32, 64, 100, 112) if n <= r), 0)


WARP_SORT_SLOTS = 128  # repeated_median.cu's warp_sort: 4 keys per lane of a warp
SIGMA_BATCH = 3        # repeated_median.cu's ConfBatch<kN>::kSize with the register networks
PASS2_BATCH = 4        # repeated_median.cu's kPass2Batch: coordinates whose in-order sums the lanes take at once


def warp_sort_stages(slots: int = WARP_SORT_SLOTS, per_lane: int = 4) -> Tuple[int, int]:
    """Stages of the warp's bitonic sort (Batcher's, on `slots` positions, key q
    of lane l at position per_lane * l + q): (across lanes, within a lane)."""
    across = within = 0
    k = 2
    while k <= slots:
        j = k // 2
        while j >= 1:
            if j >= per_lane:
                across += 1
            else:
                within += 1
            j //= 2
        k *= 2
    return across, within


def add_warp_sort(add, what: str, sorts: float, bits: int = 64) -> None:
    """A lane's work in `sorts` warp sorts of 64-bit keys: a stage across lanes
    is, per key, two 32-bit shuffles (charged as shared-memory words: 32 lanes
    a clock), a 64-bit compare (2), the keep-min test and two selects (4
    independent keys: ILP 4); a stage within the lane, per pair of its keys,
    both orders' compares (4), the choice and four selects (2 pairs: ILP 2).
    Keys of 32 bits: one shuffle, one compare and one select a key, and per
    pair two compares, the choice and two selects."""
    across, within = warp_sort_stages()
    words = bits // 32
    add(what, sorts * across, ilp=4, shared=4 * words, int=4 * (1 + 2 * words))
    add("", sorts * within, ilp=2, int=2 * (1 + 4 * words))


def _residual(K, _):
    # pass1_kernel<kN> + pass2_kernel (csrc/cuda/repeated_median.cu): one warp
    # (a block of 32) per 128 coordinates, in order. Counted in warp slots: a
    # phase costs its busiest lane's work times 32, so the phases on a few
    # lanes (sigma's sums, a lane per coordinate of a batch of 3, pass 2's of
    # 4; up to K = 128 the selections among the few candidates and exact
    # values; past it also the rank by counting, the outer bounds on 4 or 8,
    # the exact rows on 8 or 16, the outer ranks on 2 and the residual scale
    # on 1) are charged for the whole warp, and the rows' selections for the
    # slowest of the warp's 32 rows.
    # Each phase states its ILP: the keys (independent pair values), the
    # network's layers (independent comparators) and the warp sorts' stages
    # (4 keys a lane) issue back to back; the other phases are dependent
    # chains (loads, counts, quickselect, shuffle scans) and are charged at
    # ILP 1.
    W, n, rows = 32, K - 1, 2 * K
    kN = residual_network_rows(K)
    v = residual_selections(K)
    ops = {"fp64": 0.0, "int": 0.0, "shared": 0.0}
    groups: Dict[float, Dict[str, float]] = {}
    phases: Dict[str, float] = {}

    def add(what, lane_iterations, ilp=1, **per):  # what = "": more of the phase before
        for p, x in per.items():
            ops[p] += W * lane_iterations * x
            g = groups.setdefault(ilp, {})
            g[p] = g.get(p, 0.0) + W * lane_iterations * x
        what = what or list(phases)[-1]
        phases[what] = phases.get(what, 0.0) + W * lane_iterations * sum(per.values())

    it = lambda m: -(-m // W)  # noqa: E731  (a lane's share of m items)
    interval = dict(fp64=12 if n % 2 else 26, shared=2)  # key_low and key_high of the middle key(s)
    # both passes: the column loaded (a value and its flags), the flags ORed
    # by a butterfly of 5 shuffles, the column loaded again (from the cache)
    # and written to the tile, and ranked: up to 128 values of float updates
    # the warp sorts (value, client) keys, 4 per lane (the key, then the
    # value and client written to their rank); beyond, or for float64
    # updates, each lane counts the values before its own
    sorted_rank = K <= WARP_SORT_SLOTS
    add("load and rank (both passes)", 2 * it(K), fp64=2, int=3)
    add("", 2 * 5, int=1, shared=1)
    add("", 2 * it(K), fp64=1, int=2, shared=1)  # the reload, its conversion to double and the store
    if sorted_rank:
        add("", 2 * 4, fp64=1, int=5, shared=3)
        add_warp_sort(add, "", 2)
    else:
        add("", 2 * it(K) * K, fp64=2, int=3, shared=1)
    # a key: the numerator (1 fp64 for a slope, 5 for an intercept), the
    # product, the conversion and the zero test; the index math, the
    # reciprocal's address, the denormal select; a broadcast load and a
    # per-lane reciprocal (2 words); in the thread's column, also the store
    if kN:
        net = batcher_comparators(kN, median_only=True)
        add("float keys (registers)", it(rows) * n, ilp=MAX_ILP, fp64=6, int=7, shared=3)
        add("", it(rows) * (kN - n), ilp=MAX_ILP, int=2)  # the pads: a select, the uniform branch
        if kN <= 64:  # the network pruned to the middle rows: a min and a max per comparator
            add("their selection (network)", it(rows) * net, ilp=min(MAX_ILP, kN // 4), int=CMP_SELECT)
        else:  # two halves sorted by full networks; the first stored and read back, min / max per pair
            h = kN // 2
            add("their selection (two sorted halves)", it(rows) * 2 * batcher_comparators(h),
                ilp=min(MAX_ILP, h // 4), int=CMP_SELECT)
            add("", it(rows) * h, ilp=2, shared=2, int=4)
    else:
        add("float keys", it(rows) * n, ilp=MAX_ILP, fp64=6, int=6, shared=4)
        # a visit: a load, two plain compares (keys are never NaN), the branch
        # and indices, half a swap (a load, two stores)
        add("their selection (quickselect)", it(rows) * v["row_warp"] * n, int=5, shared=2.5)
    kinds = rows // K
    if sorted_rank:  # the warp sorts the keys (one middle key a row) or each end of the intervals
        sorts = kinds * (1 if n % 2 else 2)
        per_key = dict(int=4, shared=1) if n % 2 else {p: x + (2 if p == "int" else 0) for p, x in interval.items()}
        bits = 32 if n % 2 else 64  # the keys' 32-bit order keys, or the ends' 64-bit ones
        add(f"outer bounds (warp sorts: {sorts})", sorts * 4, **per_key)
        add_warp_sort(add, "", sorts, bits)
        add("", sorts * 2, int=3, shared=bits // 32)  # the two ranks to every lane
        add("", kinds * 2, fp64=12)           # key_low and key_high of each rank (one lane)
    elif n % 2:  # one middle key a row: 2 lanes a statistic select the keys' outer ranks as floats
        add("outer bounds (4 lanes)", v["flat_8"] * K, int=5, shared=2.5)
        add("", K, shared=2)
        add("", 2, fp64=12)
    else:      # 4 lanes a statistic select the interval ends, in double
        add("outer bounds (8 lanes)", 1, **{p: K * x for p, x in interval.items()})
        add("", v["flat_8"] * K, fp64=4, int=3, shared=5)
    add("rows to refine", it(rows), fp64=interval["fp64"] + 4, int=4, shared=2)
    # each exact value compared with the bounds of the row's middle keys; the
    # few inside them (about 2) kept and selected
    exact_lanes = 8 if kN else 16
    if sorted_rank:  # per row the warp computes its values (4 a lane) and places those within the bounds (a
        # prefix sum of shuffles); then up to 8 lanes select their rows' medians among the few (about 2)
        add("exact rows (the warp a row)", EXACT_ROWS_K100 * 4, fp64=11, int=9, shared=3.2)
        add("", EXACT_ROWS_K100 * 7, int=2, shared=1)
        add("", -(-EXACT_ROWS_K100 // exact_lanes) * 3, fp64=2, int=6, shared=4)
    else:
        add(f"exact rows ({exact_lanes} lanes a round)", -(-EXACT_ROWS_K100 // exact_lanes) * n, fp64=11, int=5,
            shared=3.2)
    if sorted_rank:  # per statistic the warp lists the candidates (a lane's 4 rows, a prefix sum and a
        # reduction of shuffles); one lane a statistic then selects among the few (about 2 a rank)
        add("outer ranks (warp lists)", kinds * 4, fp64=interval["fp64"] + 4, int=6, shared=3)
        add("", kinds * 11, int=2, shared=1)
        add("", 2 * 2 * 2, fp64=2, int=3, shared=2)
    else:
        add("outer ranks (2 lanes, one pass)", K, fp64=interval["fp64"] + 4, int=4, shared=4)
    # per lane's ranks: the residual, the leverage (a division and a square
    # root), the confidence (two divisions), the client's rank kept, and W's
    # update (the batch's, a thread per client)
    add("residuals, confidences, W", it(K), fp64=4 * F64_DIV + 14, int=5, shared=7)
    if sorted_rank:  # the warp sorts the residuals' magnitudes (the residual scale)
        add("scale (warp sort) and sigma (a lane per coordinate)", 4, fp64=1, int=4, shared=1)
        add_warp_sort(add, "", 1)
        add("", 2, int=3, shared=2)
        add("", 1, fp64=4)
    else:
        add("scale and sigma (1 lane)", v["flat"] * K, fp64=4, int=3, shared=5)
    # sigma's two in-order sums: lane b of a batch of SIGMA_BATCH coordinates
    # (1 past the register networks) takes the b-th's (W's updates, a thread
    # per client, are charged with the confidences above)
    batch = SIGMA_BATCH if kN else 1
    add("", 2 * K / batch, fp64=2, int=1, shared=2)
    # pass 2: per lane, 1 / tau (a division) and the scale's test; per lane's
    # ranks the confidence again, its two quotients by the reciprocals
    # (math::div_rcp; the rank's sqrt(1 - h) and its reciprocal loaded, set
    # once per block) and Z / |z| (a division), and the term; then after
    # every PASS2_BATCH coordinates lane b adds the K terms of the batch's
    # b-th in rank order (a load and an add each)
    add("pass 2", 1, fp64=F64_DIV + 2, int=2)
    add("", it(K), fp64=2 * MARKSTEIN + F64_DIV + 14, int=4, shared=8)
    add("", K / PASS2_BATCH, fp64=1, int=2, shared=1)
    by_phase = "; ".join(f"{what} {slots:,.0f}" for what, slots in phases.items())
    how = (f"held in registers ({kN} rows, padded with -inf and +inf) and selected by Batcher's network pruned to "
           f"the middle rows ({batcher_comparators(kN, median_only=True)} comparators)" if 0 < kN <= 64 else
           f"held in registers ({kN} rows, padded with -inf and +inf) as two halves of {kN // 2} sorted by "
           f"Batcher's network ({2 * batcher_comparators(kN // 2)} comparators), the first stored in the thread's "
           f"column of the tile, the middle rows the max and min of their pairwise min and max" if kN else
           f"selected in each thread's column of the shared tile (quickselect with the ninther: {v['row']:.2f} values "
           f"visited per key on average, {v['row_warp']:.2f} in the slowest of a warp's 32 rows)")
    return Cost(dram_bytes=2 * 4 * K + 4 + 2 * 3 * 8 + 8 * K / 128, loads_in_flight=K / 32, ops=ops,
                ilp_groups=sorted(groups.items()),
                note=f"the column ranked {'by a warp sort of (value, client) keys' if sorted_rank else 'by counting'}; "
                     f"{rows * n:,} float keys ({rows} rows of {n}: the ranked column's pair values, the product "
                     f"num x 1/dx rounded to float) {how}, the outer bounds from the rows' intervals (K even: the "
                     f"keys' outer ranks{', warp sorts' if sorted_rank else ''}), about {EXACT_ROWS_K100} rows again "
                     f"in double (only their values within the bounds of the middle keys selected"
                     f"{', the warp a row' if sorted_rank else ''}); warp slots by phase (ILP: keys, network and "
                     f"warp sorts' stages {MAX_ILP}, the rest 1): {by_phase}")


def _pairwise(K, _):
    # partials_kernel (csrc/cuda/pairwise.cu): a block per upper-triangular
    # pair of 32-row tiles; warp w holds columns 2w, 2w + 1 (and + 16) of the J
    # tile and all 32 rows of the I tile, 2 x 2 pairs a thread. A warp whose
    # columns all lie past K skips the sums (it still stages and waits), so
    # the pair sums issued per column are those of the warps with a column
    # below K.
    tiles = -(-K // 32)
    tile_pairs = tiles * (tiles + 1) // 2
    computed = 0
    for ti in range(tiles):
        for tj in range(ti, tiles):
            busy_warps = min(8, -(-(K - 32 * tj) // 2))
            computed += busy_warps * 32 * 4
    return Cost(dram_bytes=4 * K, loads_in_flight=4, ilp=4,
                ops={"fp32": 2 * computed, "shared": computed, "fp64": computed / 16},
                note=f"{tile_pairs} tile pairs, {computed} pair sums per column issued by the warps with a "
                     f"column below K ({K * (K - 1) // 2 / computed:.0%} useful; all 32 x 32 per tile pair would be "
                     f"{tile_pairs * 1024}); a sub and a fused multiply-add (math::madd); one shared word per pair "
                     f"(2 x 2 pairs per thread)")


@dataclasses.dataclass
class Row:
    what: str
    op: str
    args: tuple
    K: int
    d: int
    kernel: str
    cost: Callable[[int, int], Cost]
    target: str
    target_s: Optional[float] = None        # a time target, seconds
    target_bw: Optional[float] = None       # a fraction of copy bandwidth


ROWS: List[Row] = [
    Row("sign vote", "sign_vote", (), 10, 10**8, "sign_vote_kernel<float>", lambda K, t: _stream(K, False),
        ">= 85% of copy bandwidth", target_bw=0.85),
    Row("RLR mean, weighted", "robust_lr_mean", (3, "w"), 10, 10**8, "robust_lr_mean_kernel<float>",
        lambda K, t: _stream(K, True), ">= 85% of copy bandwidth", target_bw=0.85),
    Row("trimmed mean K = 16", "trimmed_mean", (3,), 16, 10**8, "order_registers_kernel<16, false, float>",
        _order_registers, ">= 50% of copy bandwidth", target_bw=0.5),
    Row("trimmed mean K = 20", "trimmed_mean", (4,), 20, 10**8, "order_registers_kernel<24, false, float>",
        _order_registers, ">= 50% of copy bandwidth", target_bw=0.5),
    Row("trimmed mean K = 32", "trimmed_mean", (7,), 32, 10**8, "order_registers_kernel<32, false, float>",
        _order_registers, ">= 50% of copy bandwidth", target_bw=0.5),
    Row("trimmed mean K = 64", "trimmed_mean", (15,), 64, 10**8, "order_registers_kernel<64, false, float>",
        _order_registers, ">= 50% of copy bandwidth (registers up to K = 64)", target_bw=0.5),
    Row("Bulyan's window K = 64", "closest_to_median_mean", (15,), 64, 10**8,
        "order_registers_kernel<64, true, float>", _order_registers_window,
        "reported, no target (the issue sets them for trimmed mean / median)"),
    Row("trimmed mean K = 100", "trimmed_mean", (10,), 100, 10**7, "order_registers_kernel<112, false, float>",
        _order_registers, "10x faster than torch.sort (10-30 ms): <= 3 ms", target_s=3e-3),
    Row("trimmed mean K = 200", "trimmed_mean", (20,), 200, 10**7, "order_shared_kernel<256, float>",
        _order_shared, "no global scratch up to K = 256; reported, no time target", target_s=None),
    Row("residual reweighting K = 100", "residual_reweight", (), 100, 10**6, "pass1_kernel<100>",
        _residual, "1/100 of the CPU kernel: <= 90 ms (the issue's figure, from 9 s on 2 threads of an "
        "AVX-512 machine; 1/100 of a 16-thread host's ~1 s, 10 ms, is not met: docs/design.md)", target_s=90e-3),
    Row("exact distances K = 100", "pairwise_sq_distances", (), 100, 10**7, "partials_kernel<float, true>",
        _pairwise, "within 2x of cdist (10-15 ms): <= 20 ms", target_s=20e-3),
]


def launched_blocks() -> Dict[str, int]:
    """Threads per block of every kernel, from the emulated launchers (small d,
    the same K as each row)."""
    _C.device_math._launches(True)
    for row in ROWS:
        u = torch.randn(row.K, 1000)
        args = tuple(torch.arange(1, row.K + 1, dtype=torch.float32) if a == "w" else a for a in row.args)
        ops.run_device_math(row.op, u, *args)
    return {name: v[1] for name, v in _C.device_math._launches(True).items()}


def resident_threads(registers: int, threads: int, shared: int, hw=HOPPER) -> int:
    # A warp's registers come from one of the SM's 4 sub-partitions (16K each):
    # at 217 registers a sub-partition holds 2 warps, so 8 per SM, not the 9
    # that 64K / (217 x 32) would give (ptxas caps 10 one-warp blocks at 168).
    warps = -(-threads // 32)
    per_warp = -(-max(registers, 1) * 32 // 256) * 256
    warps_by_registers = 4 * (hw["registers"] // 4 // per_warp)
    blocks = min(warps_by_registers // warps, hw["threads"] // threads, hw["blocks"])
    if shared:
        blocks = min(blocks, hw["shared"] // (shared + 1024))
    return blocks * threads


def estimate(row: Row, report, blocks: Dict[str, int], hw=HOPPER) -> Dict[str, object]:
    res = [r for r in report if r.arch == "sm_90" and r.kernel == row.kernel]
    if not res:
        raise SystemExit(f"{row.kernel}: not in ptxas's report of this build (no CUDA build?)")
    r = res[0]
    threads = blocks[row.kernel]
    resident = resident_threads(r.registers, threads, r.shared, hw)
    trim = row.args[0] if row.args and isinstance(row.args[0], int) else 0
    cost = row.cost(row.K, trim)
    need_per_sm = hw["bandwidth"] * hw["latency"] / hw["sms"]
    in_flight = resident * cost.loads_in_flight * cost.load_bytes
    t_mem = cost.dram_bytes * row.d / (hw["bandwidth"] * min(1.0, in_flight / need_per_sm))
    def issue(ops, ilp):
        hide = min(1.0, resident / 32 * min(ilp, MAX_ILP) / WARPS_TO_HIDE_LATENCY)
        return sum(n * row.d / (hw["sms"] * hw["lanes"][pipe] * hw["clock"]) for pipe, n in ops.items()) / hide

    t_issue = (sum(issue(ops, ilp) for ilp, ops in cost.ilp_groups) if cost.ilp_groups
               else issue(cost.ops, cost.ilp))
    t = max(t_mem, t_issue)
    copy = (4 * row.K * row.d + 4 * row.d) / hw["bandwidth"]
    if row.target_bw is not None or row.target_s is None and row.d >= 10**8:
        meets = None if row.target_bw is None else copy / t >= row.target_bw
        got = f"{copy / t:.0%} of copy"
    else:
        meets = None if row.target_s is None else t <= row.target_s
        got = f"{t * 1e3:.2f} ms"
    return dict(row=row, registers=r.registers, stack=r.stack, threads=threads, resident=resident, cost=cost,
                in_flight=in_flight, need=need_per_sm, t_mem=t_mem, t_issue=t_issue, t=t, got=got, meets=meets)


def markdown(results) -> str:
    hw = HOPPER
    lines = [
        "# GPU cost model: H100 SXM estimate of this build's kernels (float32)",
        "",
        f"Generated {datetime.date.today()} by `python bench/gpu_model.py` from ptxas's sm_90 report of the build "
        "and the launch log of the emulated launchers. Constants: "
        f"{hw['bandwidth'] / 1e12:.2f} TB/s, {hw['sms']} SMs, {hw['clock'] / 1e9:.3f} GHz, lanes per SM "
        f"{hw['lanes']}, loaded DRAM latency {hw['latency'] * 1e9:.0f} ns (assumed: Little's law then needs "
        f"{results[0]['need'] / 1024:.0f} KB in flight per SM). An estimate, not a measurement: no GPU has run "
        "these kernels; bench/gpu_check.sh replaces it.",
        "",
        "| kernel | K | d | regs | block | threads/SM | DRAM B/coord | in flight KB/SM | memory ms | issue ms "
        "| estimate | target | meets |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for e in results:
        row = e["row"]
        lines.append(f"| {row.what} (`{row.kernel}`) | {row.K} | {row.d:.0e} | {e['registers']} | {e['threads']} "
                     f"| {e['resident']} | {e['cost'].dram_bytes:,.0f} | {e['in_flight'] / 1024:.0f} "
                     f"| {e['t_mem'] * 1e3:.2f} | {e['t_issue'] * 1e3:.2f} | {e['got']} | {row.target} "
                     f"| {'-' if e['meets'] is None else 'yes' if e['meets'] else '**no**'} |")
    lines += ["", "What each row counts (DECLARED in bench/gpu_model.py):", ""]
    for e in results:
        ops_txt = ", ".join(f"{n:,.0f} {p}" for p, n in e["cost"].ops.items() if n)
        lines.append(f"- {e['row'].what}: {e['cost'].note}; per coordinate {ops_txt}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the markdown table here (default: print it)")
    ap.add_argument("--latency-ns", type=float, default=HOPPER["latency"] * 1e9,
                    help="loaded DRAM latency assumed (default %(default)s): sets the bytes in flight an SM needs")
    args = ap.parse_args(argv)
    HOPPER["latency"] = args.latency_ns * 1e-9
    report = _cuda_resources.load()
    if report is None:
        print("gpu_model: this build has no ptxas report (built without nvcc)", file=sys.stderr)
        return 2
    blocks = launched_blocks()
    text = markdown([estimate(row, report, blocks) for row in ROWS])
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
