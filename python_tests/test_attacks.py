"""Attacks: poisoned samples carry the trigger and the target label; crafted updates have the asked scale."""
import math

import pytest
import torch

from robustagg import attacks
from robustagg.attacks import CraftContext, Trigger
from robustagg.sim import data


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


def _ctx(malicious, benign=None, n=10, lr=1.0, seed=0):
    d = malicious.shape[1]
    return CraftContext(round=0, malicious=malicious, benign=torch.zeros(0, d) if benign is None else benign,
                        global_params=torch.zeros(d), num_aggregated=n, server_lr=lr,
                        generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- triggers

def test_trigger_masks_by_hand():
    plus = Trigger("plus", size=3, position=(0, 0)).mask(5, 5).int().tolist()
    assert plus == [[0, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    square = Trigger("square", size=2, position=(3, 2)).mask(5, 5)
    assert square.nonzero().tolist() == [[3, 2], [3, 3], [4, 2], [4, 3]]
    assert Trigger("pixel", position=(4, 4)).mask(5, 5).nonzero().tolist() == [[4, 4]]


def test_trigger_defaults_follow_the_rlr_paper_on_28x28():
    m = Trigger().mask(28, 28)                 # 5x5 plus near the top-left corner
    assert int(m.sum()) == 9 and bool(m[3, 1:6].all()) and bool(m[1:6, 3].all())


def test_trigger_that_does_not_fit_is_rejected():
    with pytest.raises(ValueError, match="does not fit a 8x8 image"):
        Trigger("square", size=4, position=(6, 0)).mask(8, 8)
    with pytest.raises(ValueError, match="pattern must be one of"):
        Trigger("star")


def test_trigger_split_is_a_disjoint_cover():
    t = Trigger("plus", size=5, position=(0, 0))
    parts = t.split(8, 8, 4)
    assert len(parts) == 4
    assert torch.equal(torch.stack(parts).sum(0).bool(), t.mask(8, 8))
    assert int(torch.stack(parts).sum(0).max()) == 1


# ---------------------------------------------------------------- data poisoning

def _poison(attack, ds, rank=0, num_attackers=1, n=400):
    attack.setup(ds)
    x, y = ds.x_train[:n], ds.y_train[:n]
    xp, yp = attack.poison(x, y, rank, num_attackers, torch.Generator().manual_seed(0))
    return x, y, xp, yp


@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_trojan_poisons_fraction_p_of_base_class_with_trigger_and_target(digits, fraction):
    atk = attacks.TrojanBackdoor(base_class=1, target_class=7, poison_fraction=fraction, data="own")
    x, y, xp, yp = _poison(atk, digits)
    changed = (yp != y)
    assert int(changed.sum()) == round(fraction * int((y == 1).sum()))
    assert bool((y[changed] == 1).all()) and bool((yp[changed] == 7).all())
    mask = atk.trigger.mask(8, 8)
    assert bool((xp[changed][:, :, mask] == 1.0).all())                   # trigger stamped
    assert torch.equal(xp[~changed], x[~changed])                        # everything else untouched
    assert torch.equal(xp[changed][:, :, ~mask], x[changed][:, :, ~mask])


def test_trojan_pool_mode_adds_stamped_relabelled_pool_images_to_clean_own_data(digits):
    atk = attacks.TrojanBackdoor(base_class=1, target_class=7)            # data="pool" is the default
    atk.setup(digits)
    assert atk.pool_size(1000, 20, 10) == attacks.HANDFUL                  # P of an i.i.d. share, at least a handful
    assert attacks.TrojanBackdoor(poison_fraction=1.0).pool_size(20000, 10, 10) == 200
    assert attacks.TrojanBackdoor(pool_size=12).pool_size(1000, 20, 10) == 12
    assert attacks.TrojanBackdoor(data="own").pool_size(1000, 20, 10) == 0
    x, y = digits.x_train[:50], digits.y_train[:50]
    pool_idx = (digits.y_train == 1).nonzero().flatten()[-6:]
    px, py = digits.x_train[pool_idx], digits.y_train[pool_idx]
    xp, yp = atk.poison(x, y, 0, 1, torch.Generator().manual_seed(0), pool=(px, py))
    assert torch.equal(xp[:50], x) and torch.equal(yp[:50], y)            # own data stays clean
    assert xp.shape[0] == 56 and bool((yp[50:] == 7).all())
    assert bool((xp[50:][:, :, atk.trigger.mask(8, 8)] == 1.0).all())
    with pytest.raises(ValueError, match="data must be one of pool, own"):
        attacks.TrojanBackdoor(data="borrowed")


def test_trojan_success_set_is_triggered_base_class_relabelled(digits):
    atk = attacks.TrojanBackdoor(base_class=3, target_class=8)
    atk.setup(digits)
    xs, ys = atk.success_set(digits)
    assert xs.shape[0] == int((digits.y_test == 3).sum()) and bool((ys == 8).all())
    assert bool((xs[:, :, atk.trigger.mask(8, 8)] == 1.0).all())


def test_dba_attackers_carry_disjoint_parts_of_the_global_trigger(digits):
    atk = attacks.DistributedBackdoor(poison_fraction=1.0, size=5, position=(0, 0), data="own")
    atk.setup(digits)
    seen = []
    for rank in range(3):
        x, y = digits.x_train[:400], digits.y_train[:400]
        xp, yp = atk.poison(x, y, rank, 3, torch.Generator().manual_seed(0))
        changed = yp != y
        stamped = (xp[changed] == 1.0).all(0)[0] & (x[changed] != 1.0).any(0)[0]
        local = atk._local_mask(8, 8, rank, 3)
        assert bool(stamped[local].all()) and not bool(stamped[~local].any())
        seen.append(local)
    assert torch.equal(torch.stack(seen).sum(0).bool(), atk.trigger.mask(8, 8))


def test_dba_schedule_and_scale_factor():
    m = torch.randn(3, 40)
    plain = attacks.DistributedBackdoor()
    plain.begin(10)
    assert all(plain.active(r) for r in range(10)) and torch.equal(plain.craft(_ctx(m)), m)
    atk = attacks.DistributedBackdoor(gamma=100, rounds=[2, -1])
    atk.begin(10)
    assert [r for r in range(10) if atk.active(r)] == [2, 9]
    assert torch.equal(atk.craft(_ctx(m)), m * 100.0)       # each attacker's own factor, not shared
    assert atk.params()["gamma"] == 100.0 and atk.params()["rounds"] == [2, 9]
    for bad in (0, -1.0, float("inf"), float("nan"), "10", True):
        with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
            attacks.DistributedBackdoor(gamma=bad)
    with pytest.raises(ValueError, match="round indices"):
        attacks.DistributedBackdoor(rounds=["last"])
    with pytest.raises(ValueError, match="parts must be a positive integer"):
        attacks.DistributedBackdoor(parts=True)


def test_every_class_backdoor_stamps_all_images_and_is_measured_on_the_whole_test_set(digits):
    atk = attacks.TrojanBackdoor(base_class=None, target_class=2, poison_fraction=0.5, data="own")
    atk.setup(digits)
    x, y = digits.x_train[:200], digits.y_train[:200]
    xp, yp = atk.poison(x, y, 0, 1, torch.Generator().manual_seed(0))
    changed = (xp != x).flatten(1).any(1) | (yp != y)
    assert int(changed.sum()) == 100 and bool((yp[changed] == 2).all())
    assert len(set(y[changed].tolist())) > 5                      # images of many classes, not one
    xs, ys = atk.success_set(digits)
    assert xs.shape[0] == digits.y_test.numel() and bool((ys == 2).all())   # target-class images included
    strict = attacks.TrojanBackdoor(base_class=None, target_class=2, exclude_target=True)
    strict.setup(digits)
    assert strict.success_set(digits)[0].shape[0] == int((digits.y_test != 2).sum())
    with pytest.raises(ValueError, match="exclude_target applies to base_class=None"):
        attacks.TrojanBackdoor(base_class=3, exclude_target=True)
    # pool mode: P of a client's whole i.i.d. share (not of one class's share)
    assert atk.pool_size(1000, 10, 10) == 0
    assert attacks.TrojanBackdoor(base_class=None, data="pool").pool_size(1000, 10, 10) == 50
    assert attacks.TrojanBackdoor(base_class=1, data="pool").pool_size(1000, 10, 10) == 5


def test_label_flip_all_and_source_target(digits):
    x, y, xp, yp = _poison(attacks.LabelFlip(), digits)
    assert torch.equal(yp, 9 - y) and torch.equal(xp, x)
    x, y, xp, yp = _poison(attacks.LabelFlip(source=2, target=5), digits)
    assert torch.equal(yp[y == 2], torch.full_like(yp[y == 2], 5)) and torch.equal(yp[y != 2], y[y != 2])
    with pytest.raises(ValueError, match="both source and target"):
        attacks.LabelFlip(source=2)


def test_bad_classes_are_rejected_at_setup(digits):
    with pytest.raises(ValueError, match=r"base_class must be a class index in \[0, 10\)"):
        attacks.TrojanBackdoor(base_class=12).setup(digits)
    with pytest.raises(ValueError, match="must differ"):
        attacks.TrojanBackdoor(base_class=7, target_class=7).setup(digits)
    with pytest.raises(ValueError, match="poison_fraction"):
        attacks.TrojanBackdoor(poison_fraction=0)


# ---------------------------------------------------------------- crafted updates

def test_model_replacement_shares_n_over_eta_among_the_rounds_attackers_and_takes_gamma_when_given():
    m = torch.randn(2, 50)
    # n / eta = 40, shared by the 2 attackers of the round: the sum of their updates replaces the model once
    assert torch.allclose(attacks.ModelReplacement().craft(_ctx(m, n=20, lr=0.5)), m * 20)
    assert torch.allclose(attacks.ModelReplacement().craft(_ctx(m[:1], n=20, lr=0.5)), m[:1] * 40)
    assert torch.allclose(attacks.ModelReplacement(gamma=3.0).craft(_ctx(m)), m * 3)


def test_model_replacement_is_single_shot_in_the_last_round_by_default():
    atk = attacks.ModelReplacement()
    atk.begin(30)
    assert [r for r in range(30) if atk.active(r)] == [29]
    atk = attacks.ModelReplacement(rounds=5)
    atk.begin(10)
    assert [r for r in range(10) if atk.active(r)] == [5]
    every = attacks.ModelReplacement(rounds=None)
    every.begin(3)
    assert all(every.active(r) for r in range(3))
    with pytest.raises(ValueError, match="round indices"):
        attacks.ModelReplacement(rounds=[1.5])


@pytest.mark.parametrize("split", [False, True])
def test_constrain_and_scale_stays_under_the_bound(split):
    m = torch.randn(3, 100) * 0.01                   # norms ~0.1
    atk = attacks.ConstrainAndScale(gamma=100.0, bound=2.0, split=split)
    out = atk.craft(_ctx(m))
    assert torch.allclose(out.norm(dim=1), torch.full((3,), 2.0))          # boosted up to S exactly
    cos = torch.nn.functional.cosine_similarity(out, m, dim=1)
    assert bool((cos > 0.9999).all())                                      # direction kept
    small = attacks.ConstrainAndScale(gamma=2.0, bound=50.0, split=split).craft(_ctx(m))
    assert torch.allclose(small, m * (2.0 / 3 if split else 2.0))           # below S: plain γ (or γ/a)


def test_constrain_and_scale_trains_with_the_anomaly_loss():
    from robustagg.sim.train import LocalSpec
    spec = attacks.ConstrainAndScale(alpha=0.6, anomaly="cosine").local_spec(LocalSpec(2, 0.1, 8))
    assert (spec.alpha, spec.anomaly, spec.epochs) == (0.6, "cosine", 2)


def test_sign_flip_and_gaussian():
    m = torch.randn(2, 1000)
    assert torch.equal(attacks.SignFlip(scale=2.0).craft(_ctx(m)), -2.0 * m)
    g = attacks.GaussianAttack(sigma=3.0).craft(_ctx(m))
    assert g.shape == m.shape and abs(float(g.std()) - 3.0) < 0.15
    assert torch.equal(g, attacks.GaussianAttack(sigma=3.0).craft(_ctx(m)))      # seeded


def test_alie_z_matches_the_paper_formula_and_sends_mu_minus_z_sigma():
    # n = 20, f = 4: s = floor(20/2 + 1) - 4 = 7; z = Phi^-1((20 - 7) / 20) = Phi^-1(0.65)
    atk = attacks.ALIE()
    assert atk.z_for(20, 4) == pytest.approx(0.38532, abs=1e-4)
    benign = torch.randn(16, 30, dtype=torch.float64)
    mal = torch.randn(4, 30, dtype=torch.float64)
    out = attacks.ALIE(omniscient=True).craft(_ctx(mal, benign, n=20))
    expect = benign.mean(0) - atk.z_for(20, 4) * benign.std(0)
    assert torch.allclose(out, expect.expand(4, -1))
    own = attacks.ALIE(z=1.0).craft(_ctx(mal, benign, n=20))
    assert torch.allclose(own[0], mal.mean(0) - mal.std(0))


def test_andmask_adaptive_keeps_the_norm_inside_the_mask():
    benign = torch.tensor([[1.0, 1.0, -1.0, 0.5], [1.0, -1.0, -1.0, 0.5], [1.0, 1.0, 1.0, 0.5]])
    mal = torch.tensor([[3.0, 4.0, 0.0, 0.0]])
    # |sum sgn| / 4 over the 4 updates: [1, 0.5, 0.25, 0.75]; tau = 0.6 keeps coordinates 0 and 3
    out = attacks.AndMaskAdaptive(tau=0.6).craft(_ctx(mal, benign, n=4))
    assert out[0, 1] == 0 and out[0, 2] == 0 and out[0, 3] == 0
    assert float(out.norm()) == pytest.approx(5.0)          # all of the norm on coordinate 0
    assert float(out[0, 0]) == pytest.approx(5.0)


def test_registry_names_every_attack_and_rejects_unknown():
    assert set(attacks.available()) >= {"trojan", "dba", "model_replacement", "constrain_scale", "label_flip",
                                        "sign_flip", "gaussian", "alie", "andmask_adaptive", "none"}
    with pytest.raises(ValueError, match="unknown attack 'poison'"):
        attacks.get("poison")
    with pytest.raises(ValueError, match="bad parameters for attack 'trojan'"):
        attacks.get("trojan", strength=3)
