"""Aggregation rules: hand examples, defining behaviours, permutation, poison-proofing, state."""
import math

import pytest
import torch

import robustagg.aggregators as A
from robustagg import utils
from common import DEVICES

ALL = A.available()


def params(name, n=20):
    """Hyper-parameters valid for n clients of which 3 attack."""
    return {"krum": {"f": 3}, "multikrum": {"f": 3}, "bulyan": {"f": 3}, "trimmed_mean": {"trim": 4},
            "invariant": {"alpha": 0.2, "tau": 0.1}, "centered_clip": {"tau": 1.0, "init": "median"},
            "noise": {"seed": 0}}.get(name, {})


def honest_and_attackers(n_honest=17, n_att=3, d=200, seed=0, scale=-20.0):
    g = torch.Generator().manual_seed(seed)
    honest = 1.0 + 0.1 * torch.randn(n_honest, d, generator=g)
    return torch.cat([honest, torch.full((n_att, d), scale)]), torch.ones(d)


# ----------------------------------------------------------------- hand examples


def test_fedavg_weights_by_sample_counts():
    r = A.FedAvg()(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), weights=[1, 3])
    assert r.update.tolist() == [2.5, 3.5] and r.client_weights.tolist() == [0.25, 0.75]
    assert not r.excluded.any() and r.info["nonfinite"] == []


def test_rlr_negates_exactly_the_low_vote_coordinates():
    u = torch.tensor([[1.0, 1.0, -2.0], [1.0, -1.0, -2.0], [1.0, 3.0, -2.0], [1.0, 1.0, 1.0]])
    # votes 4, 2, -2 -> with theta 3 coordinates 1 and 2 flip
    r = A.RobustLR(threshold=3)(u)
    assert r.update.tolist() == [1.0, -1.0, 1.25]
    assert r.info["flipped_fraction"] == pytest.approx(2 / 3)
    # with another base: median then the same flips
    r = A.RobustLR(base=A.Median(), threshold=3)(u)
    assert r.update.tolist() == [1.0, -1.0, 2.0]


def test_sign_rule_is_the_majority_sign():
    u = torch.tensor([[1.0, -1.0, 0.0], [2.0, -3.0, 1.0], [-5.0, 1.0, -1.0]])
    assert A.SignSGD()(u).update.tolist() == [1.0, -1.0, 0.0]


def test_median_and_trimmed_mean_by_hand():
    u = torch.tensor([[1.0], [2.0], [3.0], [100.0], [-100.0]])
    assert A.Median()(u).update.tolist() == [2.0]
    assert A.TrimmedMean(trim=1)(u).update.tolist() == [2.0]
    assert A.TrimmedMean(beta=0.2)(u).update.tolist() == [2.0]  # floor(0.2 * 5) = 1
    assert A.TrimmedMean(beta=0.1)(u).update.tolist() == [pytest.approx(6 / 5)]  # trims nothing: the mean


def test_repeated_median_evaluates_the_line_at_the_middle_rank():
    u = torch.tensor([[0.0], [2.0], [1.0], [30.0]], dtype=torch.float64)  # line y = x: at rank 1.5 -> 1.5
    assert A.RepeatedMedian()(u).update.tolist() == [1.5]


def test_invariant_and_mask_zeroes_inconsistent_dimensions():
    u = torch.tensor([[1.0, 1.0], [2.0, -1.0], [3.0, 1.0], [4.0, -1.0], [5.0, 1.0]])
    r = A.Invariant(tau=0.5, alpha=0.2)(u)  # trim ceil(1.0) = 1; consistency 1 and 1/5
    assert r.update.tolist() == [3.0, 0.0] and r.info["masked_fraction"] == 0.5 and r.info["trim"] == 1


def test_krum_picks_the_most_central_honest_update():
    u = torch.tensor([[0.0], [0.1], [0.2], [0.15], [50.0]])
    r = A.Krum(f=1)(u)
    # scores with n - f - 2 = 2 neighbours: 0.0 -> .01+.0225, 0.1 -> .0025+.01, 0.2 -> .0025+.01, 0.15 -> .0025+.0025
    assert r.update.tolist() == [pytest.approx(0.15)] and r.info["selected"] == [3]
    assert r.excluded.tolist() == [True, True, True, False, True]


def test_geomed_of_collinear_points_is_the_middle_one():
    u = torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)
    r = A.GeometricMedian(tol=1e-12, max_iter=1000)(u)
    assert r.update.item() == pytest.approx(1.0, abs=1e-4)


def test_norm_clip_bounds_every_clients_norm():
    u = torch.tensor([[3.0, 4.0], [0.3, 0.4], [-30.0, 40.0]])
    r = A.NormClip(base=A.FedAvg(), max_norm=1.0)(u)
    clipped = torch.tensor([[0.6, 0.8], [0.3, 0.4], [-0.6, 0.8]])
    torch.testing.assert_close(r.update, clipped.mean(0))
    assert r.info["clipped"] == [True, False, True]


def test_gaussian_noise_is_seeded_and_scaled():
    u = torch.zeros(4, 10000)
    a = A.GaussianNoise(sigma=0.5, seed=1)(u).update
    b = A.GaussianNoise(sigma=0.5, seed=1)(u).update
    assert torch.equal(a, b) and a.std().item() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("base", [None, "clip", "median"])
def test_gaussian_noise_excludes_a_nan_client_and_draws_noise_once(base):
    # The mean-based bases take one pass over all clients first; a NaN client
    # fails it, is excluded, and the noise stream must be as if it never came.
    g = torch.Generator().manual_seed(0)
    u = torch.randn(6, 50, generator=g)
    bad = u.clone()
    bad[2, 7] = float("nan")
    make = lambda: A.GaussianNoise(base=None if base is None else A.get(base), sigma=0.1, seed=3)
    r1, r2 = make(), make()
    a, b = r1(bad), r2(torch.cat([u[:2], u[3:]]))
    assert a.info["nonfinite"] == [2] and a.excluded.tolist() == [False, False, True, False, False, False]
    assert torch.equal(a.update, b.update) and torch.isfinite(a.update).all()
    assert torch.equal(r1(u).update, r2(u).update)  # the next round draws the same noise on both


def test_centered_clip_moves_at_most_tau_per_client():
    u = torch.tensor([[0.0, 0.0], [0.0, 0.0], [100.0, 0.0]])
    r = A.CenteredClip(tau=1.0, iterations=1, init="median")(u)
    # from v = 0: the outlier contributes (1/3) * 1 in its direction
    torch.testing.assert_close(r.update, torch.tensor([1.0 / 3.0, 0.0]))


# ----------------------------------------------------------- defining behaviours


def test_krum_family_and_bulyan_ignore_colluders_far_away():
    u, truth = honest_and_attackers()
    for rule in (A.Krum(f=3), A.MultiKrum(f=3), A.Bulyan(f=3)):
        r = rule(u)
        assert (r.update - truth).abs().mean() < 0.1, type(rule).__name__
        assert r.excluded[17:].all(), type(rule).__name__


def test_bulyan_averages_the_beta_values_nearest_the_median_of_the_selected():
    # Step 2 written out per coordinate: the beta selected values nearest the median, a tie in
    # distance going to the lower value; integer-valued updates make ties frequent.
    g = torch.Generator().manual_seed(3)
    u = torch.randint(-4, 5, (15, 60), generator=g).double()
    f = 3
    r = A.Bulyan(f=f)(u)
    sel = u[torch.tensor(r.info["selected"])]
    beta = r.info["beta"]
    assert sel.shape[0] == 15 - 2 * f and beta == 15 - 4 * f
    for j in range(u.shape[1]):
        col = sorted(sel[:, j].tolist())
        K = len(col)
        m = col[K // 2] if K % 2 else 0.5 * (col[K // 2 - 1] + col[K // 2])
        nearest = sorted(col, key=lambda x: (abs(x - m), x))[:beta]
        assert r.update[j].item() == pytest.approx(sum(nearest) / beta, abs=1e-12), j


def test_foolsgold_silences_identical_sybils_and_keeps_diverse_honest_clients():
    g = torch.Generator().manual_seed(0)
    honest = torch.randn(8, 500, generator=g)  # diverse directions
    sybil = torch.randn(1, 500, generator=g).expand(4, 500)
    r = A.FoolsGold()(torch.cat([honest, sybil]))
    lr = torch.tensor(r.info["learning_rates"])
    assert lr[8:].max() < 0.05 and lr[:8].min() > 0.5
    assert r.excluded[8:].all() and not r.excluded[:8].any()


def test_foolsgold_keeps_history_by_client_id_across_rounds():
    g = torch.Generator().manual_seed(1)
    fg = A.FoolsGold()
    sybil_dir = torch.randn(300, generator=g)
    ids_round = [[0, 1, 2, 10, 11], [1, 3, 4, 10, 12], [0, 2, 3, 11, 12], [0, 1, 2, 3, 4, 10, 11, 12]]
    sums = {}
    for ids in ids_round:
        rows = [sybil_dir + 0.01 * torch.randn(300, generator=g) if i >= 10 else torch.randn(300, generator=g)
                for i in ids]
        for i, row in zip(ids, rows):
            sums[i] = sums.get(i, 0) + row
        r = fg(torch.stack(rows), client_ids=ids)
        if len(ids) == 5:
            lr = dict(zip(ids, r.info["learning_rates"]))
    assert lr[11] < 0.05 and lr[12] < 0.05 and min(lr[0], lr[2], lr[3]) > 0.5
    assert set(fg._rows) == set(sums)
    for i, total in sums.items():                 # each history is the sum of that client's updates
        torch.testing.assert_close(fg._H[fg._rows[i]], total)
    fg.reset()
    assert fg._rows == {} and fg._H is None


def test_rflbat_excludes_a_cluster_of_scaled_updates():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(1000, generator=g)
    honest = base + 0.5 * torch.randn(16, 1000, generator=g)
    backdoor = torch.randn(1000, generator=g)
    attackers = 5.0 * (backdoor + 0.05 * torch.randn(4, 1000, generator=g))
    r = A.RFLBAT()(torch.cat([honest, attackers]))
    assert r.excluded[16:].all()
    assert (~r.excluded[:16]).sum() >= 8


def test_residual_reweighting_down_weights_a_client_scaling_by_100():
    g = torch.Generator().manual_seed(3)
    u = 0.1 * torch.randn(10, 2000, generator=g)
    u[7] *= 100.0
    r = A.Residual()(u)
    assert r.client_weights[7] < 0.2 * r.client_weights[torch.arange(10) != 7].min()
    assert (r.update - u[torch.arange(10) != 7].mean(0)).abs().mean() < 0.05


# ------------------------------------------------- permutation, poison, degenerate


@pytest.mark.parametrize("name", ALL)
def test_permuting_clients_permutes_decisions_and_keeps_the_update(name):
    u, _ = honest_and_attackers(seed=4)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(5))
    a = A.get(name, **params(name))(u)
    b = A.get(name, **params(name))(u[perm])     # seeded noise: the same draw
    torch.testing.assert_close(b.update, a.update, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.client_weights, a.client_weights[perm], rtol=1e-5, atol=1e-7)
    assert torch.equal(b.excluded, a.excluded[perm])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -float("inf"), 1e38])
def test_a_poisoned_client_never_makes_the_update_non_finite(name, poison):
    u, _ = honest_and_attackers(seed=6)
    u[3, ::7] = poison
    r = A.get(name, **params(name))(u)
    assert torch.isfinite(r.update).all()
    if not math.isfinite(poison):
        assert bool(r.excluded[3]) and r.info["nonfinite"] == [3] and r.client_weights[3] == 0


@pytest.mark.parametrize("name", ALL)
def test_all_clients_poisoned_gives_a_zero_update(name):
    u = torch.full((5, 4), float("nan"))
    r = A.get(name)(u) if name not in ("krum", "multikrum", "bulyan") else A.get(name, f=0)(u)
    assert r.update.tolist() == [0.0] * 4 and r.excluded.all()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", ["one_client", "identical", "zeros"])
def test_degenerate_inputs_give_defined_results(name, case):
    if case == "one_client":
        if name in ("krum", "multikrum", "bulyan"):
            pytest.skip("needs n > 2f + 2 even for f = 0")
        u = torch.tensor([[1.0, -2.0, 3.0]])
        expected = u[0]
    else:
        u = torch.ones(8, 3) if case == "identical" else torch.zeros(8, 3)
        expected = u[0]
    kwargs = {"f": 0} if name in ("krum", "multikrum", "bulyan") else ({"seed": 0} if name == "noise" else {})
    if name == "rlr" and case == "one_client":
        # theta = 4 votes of one client: it would flip every coordinate (-mean), so it is an error
        with pytest.raises(ValueError, match="threshold=4, K=1"):
            A.get(name, **kwargs)(u)
        return
    r = A.get(name, **kwargs)(u)
    assert torch.isfinite(r.update).all() and torch.isfinite(r.client_weights).all()
    if name == "noise":        # the base's result plus sigma times the seeded draw
        expected = expected + 1e-3 * torch.randn(3, generator=torch.Generator().manual_seed(0))
    elif name == "sign":       # the majority sign
        expected = torch.sign(u.sum(0)) if case != "one_client" else torch.sign(u[0])
    elif name == "foolsgold":  # identical clients look like sybils: weight 0; one client or zero rows: as given
        expected = torch.zeros(3) if case == "identical" else expected
    elif name == "rlr":        # theta = 4 votes: 8 identical clients have them
        pass
    elif name == "clip":       # clipped to norm 1
        expected = expected / max(1.0, float(expected.norm()))
    torch.testing.assert_close(r.update, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL)
def test_rules_keep_dtype_and_device(name, device):
    u, _ = honest_and_attackers(seed=7)
    r = A.get(name, **params(name))(u.to(device).double())
    assert r.update.dtype == torch.float64 and r.update.device.type == device
    assert r.client_weights.shape == (20,) and r.excluded.dtype == torch.bool
    # and the same decisions and (up to float32 rounding) the same update as float32 on the CPU
    r32 = A.get(name, **params(name))(u)
    assert torch.equal(r.excluded.cpu(), r32.excluded)
    base64, base32 = r, r32
    if name == "noise":        # noise drawn in float64 and float32 differs: compare the base (FedAvg)
        base64, base32 = A.FedAvg()(u.to(device).double()), A.FedAvg()(u)
    torch.testing.assert_close(base64.update.cpu().float(), base32.update, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------- API and validation


def test_get_builds_wrappers_from_names_and_rejects_unknown_names():
    rule = A.get("rlr", base="median", threshold=2)
    assert isinstance(rule.base, A.Median) and rule.threshold == 2
    with pytest.raises(ValueError, match="unknown aggregator 'mean'"):
        A.get("mean")


@pytest.mark.parametrize("build,words", [
    (lambda: A.Krum(f=2)(torch.randn(5, 3)), "Krum needs n > 2f + 2; got n=5, f=2"),
    (lambda: A.Bulyan(f=2)(torch.randn(10, 3)), "Bulyan needs n >= 4f + 3; got n=10, f=2"),
    (lambda: A.TrimmedMean(trim=2)(torch.randn(4, 3)), "TrimmedMean needs 2*trim < K; got trim=2, K=4"),
    (lambda: A.TrimmedMean(trim=1, beta=0.1), "give trim or beta, not both"),
    (lambda: A.Invariant(alpha=0.5), "alpha must be in [0.0, 0.5)"),
    (lambda: A.RobustLR(threshold=-1), "threshold must be in [0.0"),
    (lambda: A.NormClip(max_norm=0), "max_norm must be in (0.0"),
    (lambda: A.RobustLR(base="median"), "base must be a robustagg aggregator"),
    (lambda: A.FedAvg()(torch.randn(3, 2), weights=[1, 2]), "one entry per client (K=3)"),
    (lambda: A.FedAvg()(torch.randn(3, 2), weights=[1, -2, 1]), "non-negative"),
    (lambda: A.FedAvg()(torch.randn(3, 2), client_ids=[1, 1, 2]), "distinct"),
    (lambda: A.FedAvg()([torch.randn(2), torch.randn(3)]), "one shape"),
])
def test_bad_hyper_parameters_and_inputs_state_the_bound(build, words):
    with pytest.raises(ValueError) as info:
        build()
    assert words in str(info.value)


def test_list_of_tensors_is_accepted():
    parts = [torch.full((2, 2), float(k)) for k in range(3)]
    assert A.FedAvg()(parts).update.tolist() == [1.0] * 4


def test_flatten_and_unflatten_round_trip_a_real_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    g = {k: v.clone() for k, v in model.state_dict().items()}
    clients = []
    for k in range(3):
        st = {kk: (v + (k + 1) if v.is_floating_point() else v) for kk, v in g.items()}
        clients.append(st)
    deltas = utils.flatten_deltas(clients, g)
    n_float = sum(v.numel() for v in g.values() if v.is_floating_point())
    assert deltas.shape == (3, n_float) and torch.allclose(deltas[1], torch.full((n_float,), 2.0))
    upd = A.FedAvg()(deltas).update
    new = utils.apply_update(g, upd, lr=1.0)
    assert torch.allclose(new["0.weight"], g["0.weight"] + 2.0)
    assert torch.equal(new["1.num_batches_tracked"], g["1.num_batches_tracked"])
    model.load_state_dict(new)
    with pytest.raises(ValueError, match="shape"):
        utils.unflatten(upd[:-1], g)


def _weiszfeld_float64(u, iters=20000):
    """High-precision geometric median (plain Weiszfeld in float64 to a fixed point)."""
    x = u.double()
    v = x.median(0).values
    for _ in range(iters):
        b = 1.0 / (x - v).norm(dim=1).clamp_min(1e-300)
        new = (b[:, None] * x).sum(0) / b.sum()
        if torch.equal(new, v):
            break
        v = new
    return v


@pytest.mark.parametrize("outlier", [1e6, 1e30, 1e38])
def test_geometric_median_is_not_stopped_early_by_far_outliers(outlier):
    g = torch.Generator().manual_seed(3)
    u = torch.rand(10, 3, generator=g)
    u[:3] = outlier * (1 + torch.rand(3, 3, generator=g))      # 3 of 10 clients far away
    want = _weiszfeld_float64(u)       # far outliers still pull: each with a unit force
    res = A.GeometricMedian()(u)
    assert res.info["converged"]
    spread = (u[3:] - want.float()).norm(dim=1).median()
    assert (res.update.double() - want).norm() <= 1e-3 * spread, (res.update, want)
    # client_weights are the weights of the last step: they give the update
    torch.testing.assert_close((res.client_weights.double()[:, None] * u.double()).sum(0).float(), res.update,
                               rtol=1e-5, atol=1e-6 * float(spread))


@pytest.mark.parametrize("name", ["fedavg", "krum", "multikrum", "rflbat", "foolsgold", "geomed", "clip"])
def test_client_weights_of_weighted_mean_rules_give_the_update(name):
    u, _ = honest_and_attackers(seed=8)
    u = u.double()
    r = A.get(name, **params(name))(u, weights=torch.arange(1, 21, dtype=torch.float64))
    torch.testing.assert_close((r.client_weights[:, None] * u).sum(0), r.update, rtol=1e-9, atol=1e-12)


def test_foolsgold_treats_near_collinear_histories_as_collinear():
    # cosines of 1 - 1e-16 from rounding must not single one client out
    r = A.FoolsGold()(torch.tensor([[0.1], [0.3], [0.7]], dtype=torch.float64))
    assert r.info["learning_rates"][0] == r.info["learning_rates"][1] == r.info["learning_rates"][2]


@pytest.mark.parametrize("centres,want", [([[0, 0]], 1), ([[0, 0], [10, 0]], 2), ([[0, 0], [10, 0], [0, 10]], 3)])
def test_rflbat_gap_statistic_counts_separated_clusters(centres, want):
    # Tibshirani, Walther & Hastie (2001): reference sets uniform in the (principal-axes) box of the
    # points, Gap(k) = E*[log W*_k] - log W_k, the smallest k with Gap(k) >= Gap(k+1) - s_{k+1}.
    from robustagg.aggregators.distance import gap_statistic_k
    import numpy as np
    rng = np.random.default_rng(0)
    pts = np.concatenate([np.asarray(c, dtype=float) + 0.5 * rng.standard_normal((15, 2)) for c in centres])
    assert gap_statistic_k(pts, max_k=6, references=10, seed=0) == want
