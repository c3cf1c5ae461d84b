"""Inputs a new user tries that once slipped through: each gets a clear error
naming the argument, or a documented result that these tests pin down."""
import pytest
import torch

import robustagg.aggregators as A
from robustagg import ops, reference
from common import make_updates


# ------------------------------------------------------------------ rule arguments


@pytest.mark.parametrize("name", ["fedavg", "median", "krum"])
def test_weights_that_are_not_numbers_are_named(name):
    u = make_updates(6, 10)
    with pytest.raises(TypeError, match="weights must be"):
        A.get(name)(u, weights=["a"] * 6)
    with pytest.raises(TypeError, match="weights must be real"):
        A.get(name)(u, weights=torch.ones(6, dtype=torch.complex64))


def test_unhashable_client_ids_are_named():
    with pytest.raises(TypeError, match="client_ids must be hashable.*list"):
        A.FedAvg()(make_updates(3, 4), client_ids=[[0], [1], [2]])


@pytest.mark.parametrize("name", A.available())
@pytest.mark.parametrize("client_ids", [5, "abcdef", torch.arange(6).reshape(2, 3)])
def test_client_ids_that_are_not_a_sequence_are_named(name, client_ids):
    with pytest.raises(TypeError, match=r"client_ids must be a sequence of one hashable id per client \(K=6\)"):
        A.get(name)(make_updates(6, 4), client_ids=client_ids)


def test_meta_tensors_are_rejected_with_a_message():
    with pytest.raises(ValueError, match="meta device"):
        A.Median()(torch.empty(4, 5, device="meta"))


@pytest.mark.parametrize("name,params,match", [
    ("noise", {"seed": "x"}, "GaussianNoise: seed must be an int"),
    ("noise", {"seed": -1}, "GaussianNoise: seed must be an int"),
    ("rflbat", {"seed": "a"}, "RFLBAT: seed must be an int"),
    ("rflbat", {"seed": None}, "RFLBAT: seed must be an int"),
    ("rlr", {"base": "bogus"}, "rlr: base: unknown aggregator 'bogus'"),
    ("clip", {"base": "bogus"}, "clip: base: unknown aggregator 'bogus'"),
])
def test_bad_constructor_arguments_fail_at_construction_naming_rule_and_argument(name, params, match):
    with pytest.raises(ValueError, match=match):
        A.get(name, **params)


def test_rlr_threshold_above_the_number_of_clients_is_an_error_naming_both():
    u = make_updates(10, 20)
    with pytest.raises(ValueError, match="threshold=11, K=10"):
        A.RobustLR(threshold=11)(u)
    with pytest.raises(ValueError, match="threshold=11, K=10"):
        A.RobustLR(base=A.Median(), threshold=11)(u)
    # theta = K is still a vote: unanimous coordinates keep their sign
    u[:, :5] = u[:, :5].abs()
    got, mean = A.RobustLR(threshold=10)(u).update, A.FedAvg()(u).update
    assert torch.equal(got[:5], mean[:5]) and torch.equal(got[5:], -mean[5:])


def test_huge_and_tiny_sample_counts_weigh_as_their_ratios():
    u = make_updates(7, 50, torch.float64)
    ratio = torch.tensor([1.0, 2, 3, 4, 5, 6, 7], dtype=torch.float64)
    for name in ("fedavg", "geomed", "multikrum", "clip", "centered_clip"):
        want = A.get(name)(u, weights=ratio)
        for scale in (1e300, 1e-300):
            got = A.get(name)(u, weights=ratio * scale)
            assert torch.isfinite(got.update).all(), (name, scale)
            torch.testing.assert_close(got.update, want.update, rtol=1e-9, atol=1e-12, msg=f"{name} x{scale}")


def test_ops_weights_of_1e308_and_denormals():
    u = make_updates(3, 64, torch.float64)
    for w in ([1e308] * 3, [5e-324, 1e-323, 1.5e-323]):
        w = torch.tensor(w, dtype=torch.float64)
        got = ops.robust_lr_mean(u, 2.0, w)
        want = ops.robust_lr_mean(u, 2.0, w / w.max())
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
        torch.testing.assert_close(reference.robust_lr_mean(u, 2.0, w), want, rtol=1e-12, atol=0)
    # a weighted vote is the weights' sum of signs: +1e308 and -1e308 cancel (not inf - inf = NaN)
    v = ops.sign_vote(torch.tensor([[1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64),
                      torch.tensor([1e308, 1e308], dtype=torch.float64))
    assert v[0] == 0 and v[1] == float("inf")


# ------------------------------------------------------------------ extreme magnitudes


@pytest.mark.parametrize("scale", [1e150, 1e200, 1e-150, 1e-200])
def test_cosine_of_float64_rows_at_extreme_scales(scale):
    u = make_updates(5, 200, torch.float64, seed=2)
    u[3] = u[2] * 3.0                        # parallel rows: cosine 1
    want = ops.cosine_similarity(u)
    for fn in (ops.cosine_similarity, reference.cosine_similarity, lambda x: ops.run_device_math(
            "cosine_similarity", x)):
        got = fn(u * scale)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert abs(float(got[2, 3]) - 1.0) < 1e-12


@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e300, 1e-310])
def test_distance_rules_decide_the_same_at_extreme_scales(scale):
    # 1e-310 is denormal: the power of two that rescales it (2^1030) is no float64
    u = make_updates(11, 300, torch.float64, seed=5)
    u[:2] += 4.0                             # two far clients
    for name, params in (("krum", {"f": 2}), ("multikrum", {"f": 2}), ("bulyan", {"f": 2}), ("foolsgold", {}),
                         ("rflbat", {})):
        want, got = A.get(name, **params)(u), A.get(name, **params)(u * scale)
        assert torch.equal(got.excluded, want.excluded), name
        torch.testing.assert_close(got.client_weights, want.client_weights, rtol=1e-9, atol=1e-12, msg=name)
        torch.testing.assert_close(got.update / scale, want.update, rtol=1e-9, atol=1e-12, msg=name)


def test_geometric_median_of_equal_updates_at_the_float64_limit_is_exact():
    u = torch.full((10, 50), 1.5e308, dtype=torch.float64)
    got = A.GeometricMedian()(u)
    assert torch.equal(got.update, u[0])


@pytest.mark.parametrize("scale", [2.0 ** 1000, 2.0 ** -1030, 1e-200])
def test_geometric_median_is_scale_equivariant_at_extreme_scales(scale):
    # Weiszfeld with nu scaled alike: the same steps, the same result times the scale
    u = make_updates(11, 300, torch.float64, seed=5)
    u[:2] += 4.0
    want = A.GeometricMedian(nu=1e-3)(u)
    got = A.GeometricMedian(nu=1e-3 * scale)(u * scale)
    assert got.info["iterations"] == want.info["iterations"]
    torch.testing.assert_close(got.client_weights, want.client_weights, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got.update / scale, want.update, rtol=1e-9, atol=1e-12)
    assert got.info["objective"] == pytest.approx(want.info["objective"] * scale, rel=1e-9)


# ------------------------------------------------------------------ non-finite rows in the pairwise ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "mixed"])
def test_pairwise_ops_with_non_finite_rows_follow_their_definition(dtype, bad):
    u = make_updates(6, 700, dtype, seed=9)
    if bad == "mixed":
        u[1, 3], u[4, 600] = float("nan"), float("inf")
    else:
        u[1, 3] = float(bad)
        u[4, 100:] = float(bad)
    dist = ops.pairwise_sq_distances(u)
    # distances: a direct float64 computation, with a zero diagonal
    torch.testing.assert_close(dist, reference.pairwise_sq_distances(u), equal_nan=True, rtol=1e-6, atol=1e-6)
    assert (torch.diagonal(dist) == 0).all()
    finite = torch.isfinite(u).all(1)
    assert torch.isfinite(dist[finite][:, finite]).all()
    # cosines: NaN in the row and column of every non-finite client, finite elsewhere
    cos = ops.cosine_similarity(u)
    torch.testing.assert_close(cos, reference.cosine_similarity(u), equal_nan=True, rtol=1e-6, atol=1e-6)
    both = finite[:, None] & finite[None, :]
    assert torch.isnan(cos[~both]).all() and torch.isfinite(cos[both]).all()
    for name in ("pairwise_sq_distances", "cosine_similarity"):
        torch.testing.assert_close(ops.run_device_math(name, u), getattr(ops, name)(u), equal_nan=True,
                                   rtol=1e-6, atol=1e-6)
