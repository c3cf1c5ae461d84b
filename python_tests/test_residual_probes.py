"""bench/residual_probes.py, the threshold-probe prototype behind
docs/design.md's count: its repeated medians are the reference's, bitwise,
on every kind of column it counts and on the edges (ties, a constant
column, huge and tiny magnitudes), and every float decision it takes is
checked against the exact pair values (Probe asserts it)."""
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import residual_probes as rp  # noqa: E402
from robustagg import reference  # noqa: E402


def _check(y):
    slope, icpt = reference.repeated_median_line(torch.tensor(y, dtype=torch.float64)[:, None])
    for is_slope, want in ((True, slope.item()), (False, icpt.item())):
        got = rp.probe_search(np.sort(y), is_slope)["value"]
        assert got == want, (is_slope, got, want)


@pytest.mark.parametrize("K", [3, 4, 5, 7, 16, 33, 64, 100, 101])
@pytest.mark.parametrize("kind", sorted(rp.KINDS))
def test_probes_give_the_reference_repeated_medians(K, kind):
    rng = np.random.default_rng(K * 7919 + len(kind))
    for _ in range(4):
        _check(rp.KINDS[kind](rng, K))


@pytest.mark.parametrize("y", [
    np.zeros(9), np.full(10, 3.5), np.array([0.0] * 6 + [1.0] * 5), np.arange(12.0) ** 2,
    np.random.default_rng(1).standard_normal(20) * 1e200, np.random.default_rng(2).standard_normal(21) * 1e-300,
    np.concatenate([np.zeros(30), -np.ones(3), np.full(4, 1e-320)]),
])
def test_probes_on_the_edges(y):
    _check(y)


def test_the_count_is_charged():
    run = rp.probe_search(np.sort(np.random.default_rng(0).standard_normal(100)), True)
    assert run["probes"] >= 1 and run["active"][0] == 100  # the first probe counts every row
    assert rp.lane_ops(run, 100) > 100 * 99 * rp.PAIR["int"]  # the first probe: every row against every partner
