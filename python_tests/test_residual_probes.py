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


def _adversarial(rng, K, kind):
    k = np.arange(K, dtype=np.float64)
    scale = 10.0 ** rng.uniform(-300, 118)
    if kind == "collinear":      # every pair value about the same: probes cannot split some brackets
        y = rng.standard_normal() * scale + rng.standard_normal() * scale * k
        y = y + rng.integers(-2, 3, K) * np.spacing(np.abs(y))
    elif kind == "last bits":    # values a few ulps apart
        y = rng.standard_normal() * scale * (1 + rng.integers(-8, 9, K) * 2.0 ** -52)
    elif kind == "mixed":        # magnitudes from 1e-320 to 1e120 in one column
        y = rng.choice([-1.0, 1.0], K) * 10.0 ** rng.uniform(-320, 120, K)
    elif kind == "denormal":
        y = rng.integers(-2 ** 20, 2 ** 20, K).astype(np.float64) * 2.0 ** -1074
    else:                        # equal values, zeros of both signs
        y = rng.choice(np.array([0.0, -0.0, 1.0, -1.0, 5e-324, 3.5]), K)
    return np.clip(y, -1e120, 1e120)


@pytest.mark.parametrize("kind", ["collinear", "last bits", "mixed", "denormal", "ties"])
def test_probes_on_adversarial_columns(kind):
    # found by a fuzzer: thresholds of -inf, or ones already probed, wasted
    # probes (never the value); every threshold is now finite and new
    rng = np.random.default_rng(len(kind))
    for _ in range(12):
        K = int(rng.integers(3, 131))
        y = _adversarial(rng, K, kind)
        _check(y)
        for slope in (True, False):
            ts = rp.probe_search(np.sort(y), slope)["thresholds"]
            assert all(np.isfinite(ts)) and len(set(ts)) == len(ts), ts
