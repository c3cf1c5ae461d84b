"""bench/gpu_model.py, the GPU cost model: its comparator counts against
Batcher's published sizes and against the networks the kernels run, and
every row estimated from this build's ptxas report (skipped without one)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import gpu_model  # noqa: E402
from robustagg import _C, _cuda_resources  # noqa: E402


def test_batcher_counts_are_the_networks_sizes():
    # Knuth 5.3.4: odd-even merge sort on 2^t inputs has (t^2 - t + 4) 2^(t-2) - 1 comparators.
    for t in range(1, 6):
        assert gpu_model.batcher_comparators(2 ** t) == (t * t - t + 4) * 2 ** (t - 2) - 1
    assert gpu_model.batcher_comparators(32) == 191  # math/order.h: "Batcher on 32 inputs has 191"
    assert gpu_model.batcher_comparators(32, median_only=True) < 191
    assert gpu_model.batcher_comparators(1) == 0
    # a network on n rows is the 2^t network restricted to rows < n
    assert gpu_model.batcher_comparators(100) < gpu_model.batcher_comparators(128) <= gpu_model.batcher_candidates(128)


def test_resident_threads_by_registers_threads_and_shared():
    assert gpu_model.resident_threads(32, 256, 0) == 2048
    assert gpu_model.resident_threads(48, 256, 0) == 1280   # 65536 / (8 warps x 1536)
    assert gpu_model.resident_threads(162, 256, 0) == 256
    assert gpu_model.resident_threads(32, 256, 100 * 1024) == 512
    # one-warp blocks: a warp's registers come from one sub-partition (16K): 3 of 168, 2 of 217
    assert gpu_model.resident_threads(168, 32, 0) == 12 * 32
    assert gpu_model.resident_threads(217, 32, 0) == 8 * 32


@pytest.mark.skipif(not getattr(_C, "with_cuda", False) or _cuda_resources.load() is None,
                    reason="no ptxas report in this build")
def test_every_row_is_estimated_from_this_build(tmp_path):
    out = tmp_path / "model.md"
    assert gpu_model.main(["--out", str(out)]) == 0
    text = out.read_text()
    for row in gpu_model.ROWS:
        assert f"`{row.kernel}`" in text


def test_register_rows_are_the_launched_networks():
    # gpu_model.register_rows mirrors math::register_rows_for: the model must
    # count the network the launcher runs, for every K on registers.
    import torch
    from robustagg import ops
    for K in range(1, 129):
        _C.device_math._launches(True)
        ops.run_device_math("trimmed_mean", torch.randn(K, 3), 0)
        (name,) = _C.device_math._launches(True)
        assert name == f"order_registers_kernel<{gpu_model.register_rows(K)}, false, float>", (K, name)


def test_select_visits_is_a_quickselect_and_the_ninther_shortens_the_slowest_row():
    # The port behind the residual row's visit counts selects the right value
    # (ties, sorted and reversed input included) and visits at least every value once.
    import random
    rng = random.Random(5)
    for n in (1, 2, 8, 9, 10, 33, 99, 100):
        for values in ([rng.gauss(0, 1) for _ in range(n)], [rng.randint(0, 3) for _ in range(n)],
                       list(range(n)), list(range(n, 0, -1))):
            for r in {0, (n - 1) // 2, n // 2, n - 1}:
                visits, got = gpu_model.select_visits(values, r, value=True)
                assert got == sorted(values)[r] and visits >= (n if n > 1 else 0), (n, r)
    v = gpu_model.residual_selections(100, columns=10)
    assert 1.0 < v["row"] < v["row_warp"] < 3.5 and v["flat"] < v["flat_8"]
