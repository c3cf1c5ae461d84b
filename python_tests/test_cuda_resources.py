"""The resource gate of the CUDA kernels, without a GPU.

ptxas's report of this very build (robustagg/_cuda_resources.txt, kept by
setup.py when nvcc built the kernels) against the design rules of
docs/design.md: no stack frame and no spills in any kernel (a stack frame
means a register array indexed at run time or ptxas spilling), static shared
memory within the 48 KB every arch gives without an opt-in, and every kernel
launched by the emulated launchers (so every compiled kernel has run), with a
block whose registers fit the 64K-register file (else the launch fails on the
GPU with "too many resources requested"). Skipped in builds without CUDA.
"""
import pathlib
import re

import pytest
import torch

from robustagg import _C, _cuda_resources, ops
from common import make_updates

REPORT = _cuda_resources.load() if getattr(_C, "with_cuda", False) else None
pytestmark = pytest.mark.skipif(REPORT is None, reason="no CUDA kernels in this build (nvcc not found or ROBUSTAGG_CUDA=0)")

STATIC_SHARED_LIMIT = 48 * 1024
REGISTER_FILE = 65536  # 32-bit registers per block (sm_80, sm_90)
CUDA_SOURCES = pathlib.Path(__file__).resolve().parents[1] / "csrc" / "cuda"


def _row(r):
    return f"{r.arch} {r.kernel}: {r.registers} registers, {r.stack} B stack, " \
           f"{r.spill_stores}/{r.spill_loads} B spilled, {r.shared} B shared"


def test_the_report_covers_every_source_and_arch():
    assert {r.source for r in REPORT} == {p.stem for p in CUDA_SOURCES.glob("*.cu")}
    archs = {a for a in str(_C.cuda_archs).split(",") if a.startswith("sm_")}
    assert {r.arch for r in REPORT} == archs


def test_no_kernel_has_a_stack_frame_or_spills():
    bad = [_row(r) for r in REPORT if r.stack or r.spill_stores or r.spill_loads]
    assert not bad, "kernels with a stack frame or spills:\n" + "\n".join(bad)


def test_static_shared_memory_fits_without_an_opt_in():
    bad = [_row(r) for r in REPORT if r.shared > STATIC_SHARED_LIMIT]
    assert not bad, "\n".join(bad)


def _run_every_kernel():
    """Ops chosen so that every kernel of every .cu file launches at least once:
    every dtype; K = 1..64 (each register network), 100 and 110 (the
    residual kernels' networks of 100 and 112 rows) and 130 (past them);
    K < 3 (the residual plain mean); weighted and counted sign ops; float
    blocks and double blocks of the pairwise kernels."""
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for K in (1, 2, 3, 5, 9, 17, 33, 50, 100, 110, 130):
            u = make_updates(K, 300, dtype, "normal", seed=K)
            w = torch.arange(1, K + 1, dtype=dtype)
            trim = (K - 1) // 2
            ops.run_device_math("sign_vote", u)
            ops.run_device_math("sign_vote", u, w)
            ops.run_device_math("robust_lr_mean", u, 1, w)
            ops.run_device_math("trimmed_mean", u, trim)
            ops.run_device_math("repeated_median_line", u)
            ops.run_device_math("residual_reweight", u)
            ops.run_device_math("sq_distances_to", u, u[0])
            ops.run_device_math("pairwise_stats", u)
            ops.run_device_math("cosine_similarity", u)
            ops.run_device_math("pairwise_sq_distances", u)
        # Order statistics: every register network (1, 2, 4, 8, 16, 24, ..., 64, 80, ..., 128 rows),
        # Closest's window kernels, both shared tiles (128 and 256 rows) and the global scratch.
        for K in (1, 2, 3, 5, 9, 17, 25, 33, 41, 49, 57, 65, 81, 97, 113, 200, 257):
            u = make_updates(K, 40, dtype, "normal", seed=K)
            ops.run_device_math("trimmed_mean", u, (K - 1) // 2)
            ops.run_device_math("closest_to_median_mean", u, (K - 1) // 2)


def test_every_kernel_runs_emulated_with_a_block_that_fits_its_registers():
    _C.device_math._launches(True)
    _run_every_kernel()
    launched = _C.device_math._launches(True)
    missing = sorted({r.kernel for r in REPORT} - set(launched))
    assert not missing, f"kernels no emulated launch ran: {missing}"
    bad = []
    for r in REPORT:
        _, threads, dynamic = launched[r.kernel]
        warps = -(-threads // 32)
        per_warp = -(-r.registers * 32 // 256) * 256  # allocated per warp in units of 256
        if warps * per_warp > REGISTER_FILE:
            bad.append(f"{_row(r)}: a block of {threads} threads needs {warps * per_warp} registers")
        if r.shared + dynamic > STATIC_SHARED_LIMIT:
            bad.append(f"{_row(r)}: + {dynamic} B dynamic shared memory")
    assert not bad, "\n".join(bad)


def test_launch_bounds_match_the_blocks_launched():
    # The emulation cannot read __launch_bounds__: each bounded kernel must be
    # launched with exactly its bound's block (launch<kernel<...>>(grid, dim3(BOUND), ...)).
    for path in CUDA_SOURCES.glob("*.cu"):
        text = path.read_text()
        for bound, kernel in re.findall(r"__launch_bounds__\(([^)]*)\)\s*(\w+)\s*\(", text):
            blocks = re.findall(rf"launch<{kernel}\b[^(]*\(\s*[^,]+,\s*dim3\(([^)]*)\)", text)
            assert blocks, f"{path.name}: {kernel} is never launched"
            threads = bound.split(",")[0]  # the second argument is a minimum of blocks per SM, not a shape
            assert all(b.strip() == threads.strip() for b in blocks), \
                f"{path.name}: {kernel} bounded by {bound} but launched with {blocks}"


# The register budget each kernel is designed to (registers per thread, the
# worst instantiation on any arch), and with it the occupancy the design
# assumes: resident threads per SM = min(2048, 65536 / budget). A kernel that
# grows past its budget loses occupancy the cost model counts on; a new kernel
# states its budget here. Streaming kernels (one pass over K x d) keep >= 1024
# threads per SM, each with 16 loads in flight (4 coordinates x 4 rows: 64 KB
# per SM for float32); the register networks and the residual passes trade
# occupancy for K values in registers.
REGISTER_BUDGET = {
    "sign_vote_kernel": 40, "weighted_sign_vote_kernel": 40, "robust_lr_mean_kernel": 64,
    "plain_mean_kernel": 40, "segment_kernel": 40, "rows_kernel": 32, "reduce_blocks_kernel": 32,
    "finish_kernel": 32, "cosine_kernel": 40, "client_weights_kernel": 40,
    "order_buffer_kernel": 64, "order_shared_kernel": 64, "order_registers_kernel": 128,
    # Up to 168 registers, 3 blocks of 128 per SM: 112 or 128 floats in registers, and Closest's
    # window (a second copy of the rows) at 24 rows (sm_80), 56 and 64.
    "order_registers_kernel<112,": 168, "order_registers_kernel<128,": 168,
    "order_registers_kernel<24, true,": 168, "order_registers_kernel<56, true,": 168,
    "order_registers_kernel<64, true,": 168,
    # Residual passes: blocks of 32 threads (one warp). Up to 168 registers a sub-partition of the SM
    # (16K registers) holds 3 of them, 12 per SM (169 would give 8); the key networks' tiles (14 KB
    # at 112 rows, with pass 1's batch of confidences 17 KB) allow 12. The 112-row keys are sorted
    # in two halves of 56 to stay within it. Pass 2 (no keys): 128, 4 blocks a sub-partition, 16
    # per SM (its 11.5 KB tile allows 16).
    "pass1_kernel": 168, "pass2_kernel": 128, "line_kernel": 168,
    # pairwise tiles, the exact double path: one block of 256 per SM (up to 255 registers);
    # the float blocks: two blocks of 256 per SM (__launch_bounds__(256, 2))
    "partials_kernel": 200,
    "partials_kernel<float, true>": 128, "partials_kernel<Half, true>": 128, "partials_kernel<BFloat16, true>": 128,
}


def test_every_kernel_stays_within_its_register_budget():
    bad = []
    for r in REPORT:
        keys = [key for key in REGISTER_BUDGET if r.kernel.split("<")[0] == key or r.kernel.startswith(key)]
        assert keys, f"{r.kernel}: no register budget stated (REGISTER_BUDGET)"
        budget = REGISTER_BUDGET[max(keys, key=len)]  # the most specific entry
        if r.registers > budget:
            bad.append(f"{_row(r)}: budget {budget} ({min(2048, REGISTER_FILE // budget)} threads per SM); "
                       f"now {min(2048, REGISTER_FILE // r.registers)}")
    assert not bad, "\n".join(bad)
