"""Every native op against its pure-PyTorch reference over shapes, dtypes and input flavours."""
import itertools

import pytest
import torch

from robustagg import ops, reference
from common import DEVICES, FLOAT_DTYPES, HALF_DTYPES, KINDS, assert_close, assert_pairwise_stats_contract, make_updates

KS = [1, 2, 3, 4, 5, 10, 33, 100]
DS = [1, 7, 1000, 65537]


def _args(name, K):
    trim = (K - 1) // 2 if K > 2 else 0
    return {
        "sign_vote": (),
        "robust_lr_mean": (min(K, 4),),
        "trimmed_mean": (trim,),
        "median": (),
        "masked_trimmed_mean": (0.4, max(0, trim - 1)),
        "closest_to_median_mean": (max(0, trim // 2),),
        "repeated_median_line": (),
        "residual_reweight": (),
        "pairwise_sq_distances": (),
        "cosine_similarity": (),
    }[name]


CHEAP_OPS = ["sign_vote", "robust_lr_mean", "trimmed_mean", "median", "masked_trimmed_mean", "closest_to_median_mean"]
QUADRATIC_OPS = ["repeated_median_line", "residual_reweight"]  # O(K^2) per coordinate
PAIRWISE_OPS = ["pairwise_sq_distances", "cosine_similarity"]  # O(K^2 d) reference


def _grid(names, max_elems_k2):
    for name, K, d, dtype, kind in itertools.product(names, KS, DS, FLOAT_DTYPES, KINDS):
        if K * K * d > max_elems_k2:
            continue
        if d == 65537 and kind != "normal":
            continue
        yield pytest.param(name, K, d, dtype, kind, id=f"{name}-K{K}-d{d}-{str(dtype)[6:]}-{kind}")


@pytest.mark.parametrize("name,K,d,dtype,kind", list(_grid(CHEAP_OPS, 10**9)))
def test_order_and_sign_ops_match_reference(name, K, d, dtype, kind):
    u = make_updates(K, d, dtype, kind, seed=K * 1000 + d)
    got = getattr(ops, name)(u, *_args(name, K))
    want = getattr(reference, name)(u, *_args(name, K))
    assert got.dtype == want.dtype and got.shape == want.shape
    assert_close(got, want, dtype, name)


@pytest.mark.parametrize("name,K,d,dtype,kind", list(_grid(QUADRATIC_OPS, 10**8)))
def test_repeated_median_ops_match_reference(name, K, d, dtype, kind):
    u = make_updates(K, d, dtype, kind, seed=K * 1000 + d)
    got = getattr(ops, name)(u)
    want = getattr(reference, name)(u)
    assert_close(got, want, dtype, name)


@pytest.mark.parametrize("name,K,d,dtype,kind", list(_grid(PAIRWISE_OPS, 10**9)))
def test_pairwise_ops_match_reference(name, K, d, dtype, kind):
    u = make_updates(K, d, dtype, kind, seed=K * 1000 + d)
    got = getattr(ops, name)(u)
    want = getattr(reference, name)(u)
    assert_close(got, want, dtype, name)


@pytest.mark.parametrize("intercept", ["siegel", "median"])
@pytest.mark.parametrize("K", [3, 6, 17])
def test_residual_reweight_options_match_reference(intercept, K):
    u = make_updates(K, 500, torch.float64, "normal", seed=K)
    u[0] *= 50.0  # one scaled client: exercises the clamp and the extreme-value correction
    for lam, delta, power in [(2.0, 0.1, 1.0), (1.0, 0.01, 2.0), (5.0, 0.5, 0.5)]:
        got = ops.residual_reweight(u, lam, delta, power, intercept)
        want = reference.residual_reweight(u, lam, delta, power, intercept)
        assert_close(got, want, torch.float64, f"lam={lam} delta={delta} power={power}")
    assert_close(ops.repeated_median_line(u, intercept), reference.repeated_median_line(u, intercept),
                 torch.float64, intercept)


@pytest.mark.parametrize("weighted", [False, True])
def test_weighted_sign_ops_match_reference(weighted):
    u = make_updates(10, 3000, torch.float32, "ties", seed=3)
    w = torch.arange(1, 11, dtype=torch.float32) if weighted else None
    assert_close(ops.sign_vote(u, w), reference.sign_vote(u, w), torch.float32)
    assert_close(ops.robust_lr_mean(u, 4, w), reference.robust_lr_mean(u, 4, w), torch.float32)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("name", CHEAP_OPS + QUADRATIC_OPS + PAIRWISE_OPS)
def test_half_inputs_are_computed_in_float32(name, dtype):
    u = make_updates(7, 300, dtype, "normal", seed=11)
    got = getattr(ops, name)(u, *_args(name, 7))
    want = getattr(reference, name)(u, *_args(name, 7))
    assert_close(got, want, dtype, name)


@pytest.mark.parametrize("name", CHEAP_OPS)
def test_large_k_uses_selection_path_and_matches_reference(name):
    u = make_updates(700, 40, torch.float32, "normal", seed=5)  # K above the network limit
    assert_close(getattr(ops, name)(u, *_args(name, 700)), getattr(reference, name)(u, *_args(name, 700)),
                 torch.float32, name)


def test_non_contiguous_input_is_accepted():
    base = make_updates(20, 64, torch.float64, "normal", seed=2)
    u = base[:, ::2]
    assert not u.is_contiguous()
    assert_close(ops.trimmed_mean(u, 3), reference.trimmed_mean(u, 3), torch.float64)
    assert_close(ops.pairwise_sq_distances(u.T.contiguous().T), reference.pairwise_sq_distances(u), torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_results_stay_on_the_input_device(device):
    u = make_updates(5, 10, torch.float32, "normal", device=device)
    assert ops.median(u).device.type == device
    assert ops.cosine_similarity(u).device.type == device


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + HALF_DTYPES)
@pytest.mark.parametrize("K,d", [(1, 5), (3, 257), (12, 999), (33, 4100), (70, 300)])
def test_pairwise_stats_gives_float64_distances_and_gram_within_the_contract(K, d, dtype):
    u = make_updates(K, d, dtype, "normal", seed=K + d)
    u[0] *= 30.0
    if K > 2:
        u[2] = u[1]                                        # identical rows: 0 distance, equal Gram entries
    dist, gram = ops.pairwise_stats(u)
    assert_pairwise_stats_contract((dist, gram), u, str(dtype))
    if K > 2:
        assert dist[1, 2] == 0 and gram[1, 1] == gram[2, 2] == gram[1, 2]
    only_d, none_g = ops.pairwise_stats(u, gram=False)     # one output: the same numbers, the other empty
    none_d, only_g = ops.pairwise_stats(u, sqdist=False)
    assert_close((only_d, only_g), (dist, gram), torch.float64)
    assert none_g.shape == none_d.shape == (0, 0)


@pytest.mark.parametrize("scale", [1e20, 1e30, 3e38])
def test_pairwise_stats_redoes_overflowing_float_blocks_in_float64(scale):
    # Float squares overflow beyond ~1.8e19: the op notices and sums in float64.
    u = make_updates(5, 300, torch.float64, "normal", seed=1)
    u = (u / u.abs().max() * scale).float()
    dist, gram = ops.pairwise_stats(u)
    assert torch.isfinite(dist).all() and torch.isfinite(gram).all()
    x = u.double()
    assert_close((dist, gram), (reference.pairwise_sq_distances(x), reference.gram(x)), torch.float64)


def test_pairwise_stats_needs_one_output():
    with pytest.raises(ValueError, match="sqdist, gram or both"):
        ops.pairwise_stats(torch.ones(2, 3), sqdist=False, gram=False)
    with pytest.raises(TypeError, match="gram must be a bool"):
        ops.pairwise_stats(torch.ones(2, 3), gram=1)


@pytest.mark.parametrize("K", [1, 2, 3, 7, 33])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_residual_in_two_parts_is_bitwise_the_whole_and_matches_reference(K, dtype):
    u = make_updates(K, 900, dtype, "normal", seed=K)
    u[0] *= 40.0
    W = ops.residual_client_sums(u, 2.0, 0.1)
    assert W.dtype == torch.float64 and W.shape == (K,)
    assert_close(W, reference.residual_client_sums(u, 2.0, 0.1), torch.float64, "client sums")
    for power in (1.0, 2.0):
        got = ops.residual_apply(u, W, 2.0, 0.1, power)
        whole = ops.residual_reweight(u, 2.0, 0.1, power)
        for g, w in zip(got, whole):
            assert torch.equal(g, w)
        assert_close(got, reference.residual_apply(u, W, 2.0, 0.1, power), dtype, "apply")


def test_residual_of_coordinate_shards_matches_the_whole():
    # What robustagg.distributed does: each shard's client sums are added, then
    # every shard applies the common client weights to its own coordinates.
    u = make_updates(9, 2000, torch.float64, "normal", seed=4)
    u[1] *= 30.0
    shards = [u[:, :700].contiguous(), u[:, 700:].contiguous()]
    W = sum(ops.residual_client_sums(s) for s in shards)
    parts = [ops.residual_apply(s, W) for s in shards]
    cw, agg = ops.residual_reweight(u)
    torch.testing.assert_close(parts[0][0], cw, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.cat([p[1] for p in parts]), agg, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + HALF_DTYPES)
@pytest.mark.parametrize("K,d", [(1, 5), (4, 1000), (11, 5000), (40, 9999)])
@pytest.mark.parametrize("threshold", [0.0, 2.0, 5.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_robust_lr_mean_counted_is_the_mean_and_the_exact_flip_count(K, d, dtype, threshold, weighted):
    u = make_updates(K, d, dtype, "ties", seed=K + d)      # many zero votes and ties at the threshold
    w = torch.rand(K, dtype=torch.float64) + 0.5 if weighted else None
    mean, count = ops.robust_lr_mean_counted(u, threshold, w)
    assert torch.equal(mean, ops.robust_lr_mean(u, threshold, w))
    assert count.dtype == torch.int64 and count.dim() == 0
    assert int(count) == int((reference.sign_vote(u).abs().double() < threshold).sum())
    dm_mean, dm_count = ops.run_device_math("robust_lr_mean_counted", u, threshold, w)
    assert torch.equal(dm_mean, mean) and int(dm_count) == int(count)
