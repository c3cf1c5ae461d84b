"""pytest-benchmark: each native op against its reference, result checked first.

    pytest bench/test_bench_ops.py --benchmark-group-by=param:shape

Not part of the test suite (python_tests/); the printed table of ratios comes
from bench/table.py.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from robustagg import ops, reference  # noqa: E402
from _timing import check_close  # noqa: E402

SHAPES = {"10x1e6": (10, 1_000_000), "100x1e6": (100, 1_000_000)}
OPS = {
    "sign_vote": lambda K: ((), {}),
    "robust_lr_mean": lambda K: ((4,), {}),
    "trimmed_mean": lambda K: ((max(1, K // 10),), {}),
    "median": lambda K: ((), {}),
    "masked_trimmed_mean": lambda K: ((0.5, max(1, K // 10)), {}),
    "closest_to_median_mean": lambda K: ((max(1, K // 10),), {}),
    "residual_reweight": lambda K: ((), {}),
    "pairwise_sq_distances": lambda K: ((), {}),
    "cosine_similarity": lambda K: ((), {}),
}
# References too slow to time at full size run on a slice of the coordinates.
SLICE = {"residual_reweight": 100_000, "pairwise_sq_distances": 100_000}

_cache = {}


def _updates(shape):
    if shape not in _cache:
        _cache.clear()
        _cache[shape] = torch.randn(*SHAPES[shape], generator=torch.Generator().manual_seed(0))
    return _cache[shape]


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_op(benchmark, shape, op, impl):
    u = _updates(shape)
    K = u.shape[0]
    args, kwargs = OPS[op](K)
    if impl == "reference" and op in SLICE:
        u = u[:, :SLICE[op]].contiguous()
        benchmark.extra_info["coordinates"] = SLICE[op]
    fn = getattr(ops if impl == "native" else reference, op)
    if impl == "native":  # check against the reference before timing (on a slice where it is slow)
        check_u = u[:, :2000].contiguous() if op in SLICE else u
        check_close(fn(check_u, *args, **kwargs), getattr(reference, op)(check_u, *args, **kwargs), op)
    benchmark.extra_info["bytes"] = u.numel() * u.element_size()
    benchmark.pedantic(fn, args=(u, *args), kwargs=kwargs, rounds=3 if impl == "reference" else 5, warmup_rounds=0 if impl == "reference" else 1)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_mean_bandwidth_baseline(benchmark, shape):
    u = _updates(shape)
    benchmark.pedantic(lambda: u.mean(0), rounds=10, warmup_rounds=1)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_cdist(benchmark, shape):
    u = _updates(shape)
    benchmark.pedantic(lambda: torch.cdist(u, u), rounds=3, warmup_rounds=1)
