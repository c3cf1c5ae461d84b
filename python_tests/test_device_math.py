"""The CUDA launchers and kernels, run on the host (``ops.run_device_math``).

``_C.device_math`` is csrc/cuda/*.cu compiled by the host compiler under the
CUDA emulation (csrc/emulate): the real launchers, grids, shared-memory tiles,
barriers and shuffles, driven by ``ops.py``'s own CUDA glue (workspace,
chunks, weight checks, the float pairwise redo). These tests push the parity
grid through it against ``robustagg.reference``, and bitwise against the CPU
kernels where the contract says bitwise, every call under two schedules of
each block's threads (reversed and a seeded shuffle: a race shows as a
difference); grid-stride loops with a grid capped at two blocks; and the glue
reads nothing back while a graph is captured (one read-back for a weighted
call otherwise). What only a GPU proves is run by bench/gpu_check.sh.
"""
import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from robustagg import _C, ops, reference
from common import assert_close, assert_pairwise_stats_contract, make_updates

KS = [1, 2, 3, 4, 5, 10, 31, 32, 33, 100, 257]
DS = [1, 7, 1000, 65537]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
KINDS = ["normal", "ties", "signed_zeros", "non_finite"]

ORDER_OPS = ["sign_vote", "robust_lr_mean", "trimmed_mean", "median", "masked_trimmed_mean",
             "closest_to_median_mean"]
RESIDUAL_OPS = ["repeated_median_line", "residual_reweight"]
PAIRWISE_OPS = ["pairwise_sq_distances", "cosine_similarity", "pairwise_stats"]


def _args(name, K):
    trim = (K - 1) // 2 if K > 2 else 0
    return {
        "sign_vote": (), "robust_lr_mean": (min(K, 4),), "trimmed_mean": (trim,), "median": (),
        "masked_trimmed_mean": (0.4, max(0, trim - 1)), "closest_to_median_mean": (max(0, trim // 2),),
        "repeated_median_line": (), "residual_reweight": (),
        "pairwise_sq_distances": (), "cosine_similarity": (), "pairwise_stats": (),
    }[name]


def _updates(K, d, dtype, kind, seed):
    if kind != "non_finite":
        return make_updates(K, d, dtype, kind, seed=seed)
    # Columns 0..4: one NaN; +inf; -inf; +inf and -inf; all NaN (then normal columns).
    u = make_updates(K, d, torch.float64, "normal", seed=seed)
    nan, inf = float("nan"), float("inf")
    patterns = [[(0, nan)], [(K - 1, inf)], [(K // 2, -inf)], [(0, inf), (K - 1, -inf)], [(k, nan) for k in range(K)]]
    for col, pattern in enumerate(patterns[:d]):
        for k, v in pattern:
            u[k, col] = v
    return u.to(dtype)


def _bitwise(got, want, msg):
    """Equal values, NaN where NaN (+0.0 and -0.0 count as equal: the sign of a
    zero result is unspecified, kernel contracts)."""
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, msg
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{msg}: {m}")


SCHEDULES = [(1, 0), (2, 20261205)]  # reversed; a seeded shuffle (csrc/emulate/emulation_control.h)


def _identical(a, b):
    """Bit for bit, signs of zeros and NaN payloads included."""
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    ints = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
            torch.bfloat16: torch.int16}
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape
        and torch.equal(x.view(ints.get(x.dtype, x.dtype)), y.view(ints.get(y.dtype, y.dtype))) for x, y in zip(a, b))


def _device(name, u, *args):
    """``run_device_math`` under each schedule of SCHEDULES: the results must be
    identical (else a thread reads another's write within one phase: a
    missing barrier), and are returned."""
    results = []
    for mode, seed in SCHEDULES:
        old = _C.device_math._set_schedule(mode, seed)
        try:
            results.append(ops.run_device_math(name, u, *args))
        finally:
            _C.device_math._set_schedule(*old)
    assert _identical(results[0], results[1]), f"{name}: the thread schedules disagree (a race)"
    return results[0]


def _grid(names, budget, kinds=KINDS):
    for name, K, d, dtype, kind in itertools.product(names, KS, DS, DTYPES, kinds):
        work = K * K * d if name in RESIDUAL_OPS + PAIRWISE_OPS else K * d
        if work > budget:
            continue
        if d == 65537 and (kind != "normal" or dtype != torch.float32):
            continue
        if dtype in (torch.float16, torch.bfloat16) and kind not in ("normal", "non_finite"):
            continue
        yield pytest.param(name, K, d, dtype, kind, id=f"{name}-K{K}-d{d}-{str(dtype)[6:]}-{kind}")


@pytest.mark.parametrize("name,K,d,dtype,kind", list(_grid(ORDER_OPS, 3 * 10**6)))
def test_sign_and_order_device_math_is_bitwise_the_cpu_kernel_and_matches_reference(name, K, d, dtype, kind):
    u = _updates(K, d, dtype, kind, seed=K * 1000 + d)
    got = _device(name, u, *_args(name, K))
    _bitwise(got, getattr(ops, name)(u, *_args(name, K)), f"{name} vs CPU kernel")
    assert_close(got, getattr(reference, name)(u, *_args(name, K)), dtype, f"{name} vs reference")


# Every register network (math::register_rows_for: 16, 24, ..., 64, 80, ..., 128
# rows) at its smallest and largest K, Closest's window kernels up to 64 rows
# and the shared tile past them, and the 256-row shared tile of 4-byte values.
ORDER_NETWORK_KS = [16, 17, 24, 25, 40, 41, 57, 64, 65, 80, 81, 96, 97, 112, 113, 128, 129, 256]


@pytest.mark.parametrize("K", ORDER_NETWORK_KS)
@pytest.mark.parametrize("dtype,kind", [(torch.float32, "normal"), (torch.float32, "non_finite"),
                                        (torch.float32, "ties"), (torch.bfloat16, "normal"),
                                        (torch.float64, "normal")])
def test_every_order_network_size_is_bitwise_the_cpu_kernel(K, dtype, kind):
    u = _updates(K, 37, dtype, kind, seed=K)
    for name in ORDER_OPS[2:]:
        got = _device(name, u, *_args(name, K))
        _bitwise(got, getattr(ops, name)(u, *_args(name, K)), f"{name} K={K} vs CPU kernel")
        assert_close(got, getattr(reference, name)(u, *_args(name, K)), dtype, f"{name} K={K} vs reference")


def test_order_kernels_chosen_by_k():
    """The launch each K gets: registers up to 128 4-byte values (Closest's window
    up to 64), then the 128- and 256-row shared tiles, then global scratch."""
    def launched(K, name, dtype=torch.float32):
        _C.device_math._launches(True)
        ops.run_device_math(name, make_updates(K, 5, dtype, "normal", seed=1), *_args(name, K))
        return sorted(_C.device_math._launches(True))
    assert launched(100, "trimmed_mean") == ["order_registers_kernel<112, false, float>"]
    assert launched(20, "median", torch.bfloat16) == ["order_registers_kernel<24, false, BFloat16>"]
    assert launched(64, "closest_to_median_mean") == ["order_registers_kernel<64, true, float>"]
    assert launched(65, "closest_to_median_mean") == ["order_shared_kernel<128, float>"]
    assert launched(129, "trimmed_mean") == ["order_shared_kernel<256, float>"]
    assert launched(129, "trimmed_mean", torch.float64) == ["order_buffer_kernel<double>"]
    assert launched(17, "trimmed_mean", torch.float64) == ["order_shared_kernel<128, double>"]
    assert launched(257, "trimmed_mean") == ["order_buffer_kernel<float>"]


@pytest.mark.parametrize("name,K,d,dtype,kind", list(_grid(RESIDUAL_OPS, 3 * 10**7)))
def test_repeated_median_device_math_is_bitwise_the_cpu_kernel_and_matches_reference(name, K, d, dtype, kind):
    u = _updates(K, d, dtype, kind, seed=K * 1000 + d)
    got = _device(name, u)
    _bitwise(got, getattr(ops, name)(u), f"{name} vs CPU kernel")
    assert_close(got, getattr(reference, name)(u), dtype, f"{name} vs reference")


@pytest.mark.parametrize("name,K,d,dtype,kind", list(_grid(PAIRWISE_OPS, 10**8)))
def test_pairwise_device_math_matches_reference_within_the_contract(name, K, d, dtype, kind):
    u = _updates(K, d, dtype, kind, seed=K * 1000 + d)
    got = _device(name, u)
    if name == "pairwise_stats":
        if kind == "non_finite":  # redone in float64 (see ops.pairwise_stats): the reference's values
            x = u.double()
            assert_close(got, (reference.pairwise_sq_distances(x), reference.gram(x)), torch.float64, name)
        else:
            assert_pairwise_stats_contract(got, u, name)
        return
    # Rows with NaN/Inf: the documented definition (distances of a direct
    # float64 computation with a zero diagonal; NaN cosines), as the reference has it.
    want = getattr(reference, name)(u)
    assert got.dtype == want.dtype
    if dtype in (torch.float16, torch.bfloat16):  # computed from the same float32 values as the reference
        assert_close(got, want, torch.float32, name)
    else:
        assert_close(got, want, dtype, name)
    if kind == "normal" and dtype == torch.float32 and name == "pairwise_sq_distances":
        exact = reference.pairwise_sq_distances(u.double()).float()
        assert ((got - exact).abs() <= 1e-6 * exact.abs()).all(), "the 1e-6 relative contract"


def test_identical_rows_give_exact_zero_distance_and_unit_cosine():
    row = make_updates(1, 5000, torch.float32, "normal", seed=3)
    u = torch.cat([row, row, 2 * row])
    dist = _device("pairwise_sq_distances", u)
    cos = _device("cosine_similarity", u)
    assert dist[0, 1] == 0 and dist[1, 0] == 0 and cos[0, 1] == 1 and cos[0, 0] == 1


@pytest.mark.parametrize("intercept", ["siegel", "median"])
@pytest.mark.parametrize("lam,delta,power", [(2.0, 0.1, 1.0), (1.0, 0.01, 2.0), (5.0, 0.5, 0.5)])
def test_residual_options_device_math_is_bitwise_the_cpu_kernel(intercept, lam, delta, power):
    u = make_updates(17, 700, torch.float64, "normal", seed=17)
    u[0] *= 50.0  # one scaled client: exercises the clamp and the extreme-value correction
    got = _device("residual_reweight", u, lam, delta, power, intercept)
    _bitwise(got, ops.residual_reweight(u, lam, delta, power, intercept), "residual options")
    _bitwise(_device("repeated_median_line", u, intercept), ops.repeated_median_line(u, intercept),
             "line")


@pytest.mark.parametrize("weighted", [False, True])
def test_weighted_sign_ops_device_math_is_bitwise_the_cpu_kernel(weighted):
    u = make_updates(10, 3000, torch.float32, "ties", seed=3)
    w = torch.arange(1, 11, dtype=torch.float32) if weighted else None
    _bitwise(_device("sign_vote", u, w), ops.sign_vote(u, w), "sign_vote")
    _bitwise(_device("robust_lr_mean", u, 4, w), ops.robust_lr_mean(u, 4, w), "robust_lr_mean")


@pytest.mark.parametrize("name,K", [(n, K) for n in ORDER_OPS[2:] for K in (129, 200)]
                         + [(n, K) for n in RESIDUAL_OPS for K in (33, 40)])
def test_chunked_launches_give_the_results_of_one_chunk(name, K):
    # A tiny scratch budget walks d in many chunks (the path of large d on a GPU;
    # order statistics use a global scratch only beyond the 128 shared rows).
    u = make_updates(K, 1000, torch.float32, "normal", seed=K)
    whole = _device(name, u, *_args(name, K))
    old = _C._set_scratch_bytes(4096)
    try:
        chunked = _device(name, u, *_args(name, K))
    finally:
        _C._set_scratch_bytes(old)
    _bitwise(chunked, whole, f"{name} chunked")


def test_run_device_math_checks_arguments_like_the_op():
    u = torch.randn(5, 8)
    with pytest.raises(ValueError, match=r"2\*trim < K = 5"):
        ops.run_device_math("trimmed_mean", u, 3)
    with pytest.raises(TypeError, match="updates must be a torch.Tensor"):
        ops.run_device_math("median", [[1.0]])


@pytest.mark.parametrize("K", [2, 3, 10, 33])
@pytest.mark.parametrize("kind", ["normal", "non_finite"])
def test_residual_parts_device_math_is_bitwise_the_cpu_kernel(K, kind):
    u = _updates(K, 1000, torch.float32, kind, seed=K)
    W = _device("residual_client_sums", u)
    _bitwise(W, ops.residual_client_sums(u), "client sums")
    _bitwise(_device("residual_apply", u, W, 2.0, 0.1, 2.0), ops.residual_apply(u, W, 2.0, 0.1, 2.0),
             "apply")


def _keyed_path_updates(K, d, flavour, seed):
    """Columns that stress the float-key selection of repeated medians (the
    CPU kernel's above K = 64, the CUDA kernels' at every K): pair values
    tied as floats but distinct as doubles, exact ties, values near zero and
    past the keys' range."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(K, d, generator=g, dtype=torch.float64)
    if flavour == "collinear":      # equally spaced points: every slope within 1e-9 of 1
        u = torch.arange(K, dtype=torch.float64)[:, None] + 1e-9 * noise
        u = u[torch.randperm(K, generator=g)]
    elif flavour == "grid":         # a coarse grid, half the entries nudged by 1e-12
        u = torch.randint(-2, 3, (K, d), generator=g).to(torch.float64)
        u = u + 1e-12 * noise * (torch.rand(K, d, generator=g) < 0.5)
    elif flavour == "float_ties":   # values one float ulp apart: slopes tie in float, not in double
        u = 1.0 + torch.randint(0, 4, (K, d), generator=g).to(torch.float64) * 2.0**-23 + 2.0**-40 * noise
    elif flavour == "tiny":         # pair values around the float denormals and below
        u = noise * 1e-40
    elif flavour == "huge":         # values past 2^400: the double path for those tiles
        u = noise.clone()
        u[:, ::3] *= 2.0**450
    elif flavour == "mixed":        # a column scale per coordinate, from 1e-30 to 1e30
        u = noise * torch.logspace(-30, 30, d, dtype=torch.float64)
    else:
        raise ValueError(flavour)
    return u


@pytest.mark.parametrize("K", [2, 3, 4, 17, 18, 33, 34, 35, 64, 65, 66, 100, 101, 102, 112, 113, 114, 161, 257])
@pytest.mark.parametrize("flavour", ["collinear", "grid", "float_ties", "tiny", "huge", "mixed"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_float_key_selection_is_bitwise_the_double_selection(K, flavour, dtype):
    # The CPU kernel selects on float keys above K = 64 (in double below), the emulated
    # launchers on float keys for every K (and every row in double for values past
    # 2^400), each refining the rows that decide: the results must be the same bits.
    u = _keyed_path_updates(K, 96, flavour, seed=K).to(dtype)
    if dtype == torch.float32 and flavour == "huge":
        u = u.clamp(-3e38, 3e38)  # float32 overflowed to inf: keep the largest finite values
    for intercept in ("siegel", "median"):
        _bitwise(ops.repeated_median_line(u, intercept), _device("repeated_median_line", u, intercept),
                 f"line {intercept}")
    _bitwise(ops.residual_reweight(u), _device("residual_reweight", u), "residual_reweight")


def test_residual_kernels_chosen_by_k():
    """The fit's kernels by K: a row's K - 1 keys in registers under a network of
    16, 32, 64, 100 or 112 rows (plan::residual_register_rows), past 112 in the
    thread's column of the workspace tile (quickselect); pass 2 by dtype."""
    def launched(K, name="residual_reweight", dtype=torch.float32):
        _C.device_math._launches(True)
        ops.run_device_math(name, make_updates(K, 5, dtype, "normal", seed=1))
        return sorted(k for k in _C.device_math._launches(True) if "pass1" in k or "line" in k)
    assert launched(3) == ["pass1_kernel<16>"]
    assert launched(17) == ["pass1_kernel<16>"]
    assert launched(18, dtype=torch.bfloat16) == ["pass1_kernel<32>"]
    assert launched(33) == ["pass1_kernel<32>"]
    assert launched(34, dtype=torch.float64) == ["pass1_kernel<64>"]
    assert launched(65) == ["pass1_kernel<64>"]
    assert launched(66) == ["pass1_kernel<100>"]
    assert launched(101, dtype=torch.float64) == ["pass1_kernel<100>"]
    assert launched(102) == ["pass1_kernel<112>"]
    assert launched(113, dtype=torch.float16) == ["pass1_kernel<112>"]
    assert launched(114) == ["pass1_kernel<0>"]
    assert launched(100, "repeated_median_line") == ["line_kernel<100>"]
    assert launched(105, "repeated_median_line") == ["line_kernel<112>"]


def test_a_column_past_the_keys_range_takes_every_row_in_double():
    # Values of magnitude 2^400 and more: intercept numerators overflow to inf - inf
    # = NaN, so a row's keys can select a middle key of 0 (NaN compares equal to
    # everything) while its exact median is 1.26e307. The device must not trust
    # such keys, not even a row whose interval is a point (found in review). The CPU
    # kernel's networks did not keep the NaN-last order on such rows either: its
    # tiles past 2^400 select each lane in that order.
    col = [-1.0, 0.3 * 2.0**1023, 3 * 2.0**1020, 0.6 * 2.0**1023, 0.7 * 2.0**1023, 7.5 * 2.0**1020]
    u = torch.tensor(col, dtype=torch.float64)[:, None].repeat(1, 3)
    u[:, 1] *= -1.0
    u[:, 2] = u[torch.tensor([3, 0, 5, 1, 4, 2]), 2]
    for intercept in ("siegel", "median"):
        got = _device("repeated_median_line", u, intercept)
        _bitwise(got, ops.repeated_median_line(u, intercept), f"line {intercept}")
        assert_close(got, reference.repeated_median_line(u, intercept), torch.float64, f"line {intercept}")
    _bitwise(_device("residual_reweight", u), ops.residual_reweight(u), "residual_reweight")


GRID_STRIDE_CASES = [("sign_vote", ()), ("robust_lr_mean", (3,)), ("trimmed_mean", (2,)), ("median", ()),
                     ("closest_to_median_mean", (1,)), ("repeated_median_line", ()), ("residual_reweight", ()),
                     ("sq_distances_to", None), ("pairwise_stats", ()), ("cosine_similarity", ()),
                     ("pairwise_sq_distances", ())]


@pytest.mark.parametrize("K", [5, 40])
@pytest.mark.parametrize("name,args", GRID_STRIDE_CASES, ids=[c[0] for c in GRID_STRIDE_CASES])
def test_grid_stride_loops_cover_every_entry_with_a_capped_grid(name, args, K):
    # launch.cuh's blocks_for caps grids (2^20 blocks on a GPU); every capped
    # kernel loops grid-stride. With the cap at 2 blocks each thread takes
    # several coordinates (or several of the K x K entries): same results.
    u = make_updates(K, 1000, torch.float32, "normal", seed=K)
    args = (u[1].clone(),) if args is None else args
    whole = _device(name, u, *args)
    old = _C.device_math._set_max_blocks(2)
    try:
        capped = _device(name, u, *args)
    finally:
        _C.device_math._set_max_blocks(old)
    assert _identical(capped, whole), f"{name}: a capped grid misses entries"


class _SyncingOps(TorchDispatchMode):
    """Records every op that reads a tensor's value on the host (a host
    synchronisation on a GPU, an error inside CUDA graph capture)."""
    SYNCING = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default,
               torch.ops.aten.item.default}

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.SYNCING:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def _read_backs(monkeypatch, call):
    counted = []
    real = ops._read_back
    monkeypatch.setattr(ops, "_read_back", lambda t: counted.append("ops._read_back") or real(t))
    with _SyncingOps() as mode:
        result = call()
    return result, mode.seen + counted


def _glue_cases():
    K, d = 6, 300
    u = make_updates(K, d, torch.float32, "normal", seed=1)
    w = torch.arange(1, K + 1, dtype=torch.float32)
    tiny = u * 1e-24      # float blocks underflow: the device redoes them in double
    huge = u.double() * 2.0 ** 600  # float64 cosines: rows scaled on the device
    W = ops.residual_client_sums(u)
    return [("sign_vote", u, ()), ("sign_vote", u, (w,)), ("robust_lr_mean", u, (2, w)),
            ("robust_lr_mean_counted", u, (2, w)), ("trimmed_mean", u, (1,)), ("median", u, ()),
            ("masked_trimmed_mean", u, (0.5, 1)), ("closest_to_median_mean", u, (1,)),
            ("repeated_median_line", u, ()), ("residual_reweight", u, ()), ("residual_client_sums", u, ()),
            ("residual_apply", u, (W,)), ("sq_distances_to", u, (u[0].clone(),)), ("pairwise_stats", u, ()),
            ("pairwise_stats", tiny, ()), ("pairwise_sq_distances", tiny, ()), ("cosine_similarity", u, ()),
            ("cosine_similarity", huge, ()), ("pairwise_stats", huge, ())]


@pytest.mark.parametrize("case", range(len(_glue_cases())))
def test_the_cuda_glue_reads_nothing_back_while_a_graph_is_captured(monkeypatch, case):
    name, u, args = _glue_cases()[case]
    with ops._emulated_graph_capture():
        got, seen = _read_backs(monkeypatch, lambda: ops.run_device_math(name, u, *args))
    assert seen == [], f"{name}: reads back {seen} (fails inside CUDA graph capture)"
    want = getattr(ops, name)(u, *args)
    if name == "pairwise_stats" and u.dtype != torch.float64 and torch.isfinite(got[0]).all():
        # float blocks: Gram entries are bounded relative to |u_i| |u_j|, not to themselves
        assert_pairwise_stats_contract(got, u, name)
    elif name in PAIRWISE_OPS:  # within the contract (the redo gives double sums)
        got, want = (got if isinstance(got, tuple) else (got,)), (want if isinstance(want, tuple) else (want,))
        for g, x in zip(got, want):
            torch.testing.assert_close(g, x, rtol=1e-6, atol=0, equal_nan=True)  # 2^1200 overflows
    else:
        _bitwise(got, want, name)


@pytest.mark.parametrize("case", range(len(_glue_cases())))
def test_a_device_call_reads_back_once_if_weighted_and_never_otherwise(monkeypatch, case):
    name, u, args = _glue_cases()[case]
    _, seen = _read_backs(monkeypatch, lambda: ops.run_device_math(name, u, *args))
    weighted = name in ("sign_vote", "robust_lr_mean", "robust_lr_mean_counted") and isinstance(args[-1:] and args[-1],
                                                                                            torch.Tensor)
    assert seen == (["ops._read_back"] if weighted else []), f"{name}: reads back {seen}"
