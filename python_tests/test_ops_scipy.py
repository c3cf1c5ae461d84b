"""Independent checks against scipy."""
import numpy as np
import pytest
import torch

scipy_stats = pytest.importorskip("scipy.stats")
scipy_distance = pytest.importorskip("scipy.spatial.distance")

from robustagg import ops
from common import make_updates


@pytest.mark.parametrize("K", [3, 4, 7, 10, 33])
@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_repeated_median_line_agrees_with_scipy_siegelslopes(K, kind):
    u = make_updates(K, 40, torch.float64, kind, seed=K)
    slope, intercept = ops.repeated_median_line(u)
    x = np.arange(K, dtype=np.float64)
    for j in range(u.shape[1]):
        y = np.sort(u[:, j].numpy())
        res = scipy_stats.siegelslopes(y, x, method="separate")
        assert slope[j].item() == pytest.approx(res.slope, rel=1e-12, abs=1e-12)
        assert intercept[j].item() == pytest.approx(res.intercept, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K,d", [(2, 1), (5, 7), (20, 1000), (50, 20000)])
def test_distances_agree_with_float64_cdist(K, d, dtype):
    u = make_updates(K, d, dtype, "normal", seed=d)
    want = scipy_distance.cdist(u.double().numpy(), u.double().numpy(), "sqeuclidean")
    got = ops.pairwise_sq_distances(u).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    want_cos = 1.0 - scipy_distance.cdist(u.double().numpy(), u.double().numpy(), "cosine")
    np.testing.assert_allclose(ops.cosine_similarity(u).double().numpy(), want_cos, rtol=1e-6, atol=1e-7)


def test_near_identical_rows_keep_relative_accuracy():
    # |a|^2 + |b|^2 - 2ab in float32 would lose every digit here
    base = torch.randn(1, 100_000, dtype=torch.float64) * 100
    u = torch.cat([base, base + 1e-4 * torch.randn(1, 100_000, dtype=torch.float64)]).to(torch.float32)
    want = scipy_distance.cdist(u.double().numpy(), u.double().numpy(), "sqeuclidean")
    np.testing.assert_allclose(ops.pairwise_sq_distances(u).double().numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_identical_rows_give_exact_zero_and_one(dtype):
    row = make_updates(1, 12345, dtype, "normal", seed=9)
    u = torch.cat([row, make_updates(1, 12345, dtype, "normal", seed=10), row, row * 3])
    dist = ops.pairwise_sq_distances(u)
    cos = ops.cosine_similarity(u)
    assert dist[0, 2].item() == 0.0 and dist[2, 0].item() == 0.0
    assert torch.all(torch.diagonal(dist) == 0)
    assert cos[0, 2].item() == 1.0 and torch.all(torch.diagonal(cos) == 1.0)
