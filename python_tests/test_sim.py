"""The simulator's parts: datasets, partitions, batched local training, metrics."""
import gzip
import struct

import numpy as np
import pytest
import torch

from robustagg.sim import data, metrics, models, partition, train


# ---------------------------------------------------------------- datasets

def test_digits_is_split_stratified_into_unit_range_images():
    ds = data.load_digits()
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.num_classes == 10
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 1797
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0
    test_counts = torch.bincount(ds.y_test, minlength=10)
    assert int(test_counts.min()) >= 40 and int(test_counts.max()) <= 50   # ~25% of each class's ~180


def test_synthetic_is_reproducible_and_learnable_by_a_linear_model():
    a, b = data.synthetic(seed=3), data.synthetic(seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    # nearest class-template classifier recovers most labels: the task carries signal
    means = torch.stack([a.x_train[a.y_train == c].mean(0) for c in range(10)]).flatten(1)
    pred = torch.cdist(a.x_test.flatten(1), means).argmin(1)
    assert float((pred == a.y_test).float().mean()) > 0.9
    assert float(a.x_train[:, :, :2, :].abs().max()) == 0.0       # empty border, as in digit images


def _write_idx(path, array):
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reader_parses_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 28, 28))
    labels = np.array([0, 1, 2, 3, 4, 9])
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", imgs)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    ds = data.load_fashion_mnist(str(tmp_path))
    assert ds.x_train.shape == (6, 1, 28, 28)
    assert torch.allclose(ds.x_train[2, 0], torch.from_numpy(imgs[2] / 255.0).float())
    assert ds.y_test.tolist() == labels.tolist()


def test_fashion_mnist_missing_folder_says_which_package_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load_fashion_mnist(str(tmp_path))


@pytest.mark.skipif(not data.fashion_mnist_available(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package_has_its_published_sizes():
    ds = data.load_fashion_mnist()
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10


def test_unknown_dataset_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="dataset must be one of digits"):
        data.load("cifar")


# ---------------------------------------------------------------- partitions

LABELS = torch.arange(1000) % 10


def _check_disjoint_cover(parts, n):
    allidx = torch.cat(parts)
    assert allidx.numel() == torch.unique(allidx).numel()
    return allidx.numel()


def test_iid_parts_are_disjoint_equal_and_cover_everything():
    parts = partition.iid(LABELS, 7, np.random.default_rng(0))
    assert _check_disjoint_cover(parts, 1000) == 1000
    sizes = [p.numel() for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_parts_are_class_balanced():
    parts = partition.iid(LABELS, 4, np.random.default_rng(1))
    for p in parts:
        counts = torch.bincount(LABELS[p], minlength=10).double()
        assert float(counts.min()) > 0.6 * float(counts.mean())


def _classes_per_client(parts, threshold=0.05):
    out = []
    for p in parts:
        share = torch.bincount(LABELS[p], minlength=10).double() / p.numel()
        out.append(int((share > threshold).sum()))
    return np.mean(out)


def test_dirichlet_skew_grows_as_alpha_shrinks():
    skewed = partition.dirichlet(LABELS, 10, np.random.default_rng(0), alpha=0.05)
    mild = partition.dirichlet(LABELS, 10, np.random.default_rng(0), alpha=100.0)
    assert _check_disjoint_cover(skewed, 1000) == 1000 and _check_disjoint_cover(mild, 1000) == 1000
    assert _classes_per_client(skewed) < 4 < 9 < _classes_per_client(mild)
    assert min(p.numel() for p in skewed) >= 2


def test_dirichlet_is_reproducible_from_the_generator():
    a = partition.dirichlet(LABELS, 5, np.random.default_rng(42), alpha=0.3)
    b = partition.dirichlet(LABELS, 5, np.random.default_rng(42), alpha=0.3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("k", [1, 2, 5])
def test_shards_give_each_client_at_most_k_classes_and_equal_sizes(k):
    parts = partition.shards(LABELS, 10, np.random.default_rng(0), classes_per_client=k)
    assert {p.numel() for p in parts} == {(1000 // (10 * k)) * k}
    _check_disjoint_cover(parts, 1000)
    for p in parts:
        assert torch.unique(LABELS[p]).numel() <= k


def test_shards_that_straddle_a_class_boundary_give_at_most_2k_classes():
    parts = partition.shards(LABELS, 10, np.random.default_rng(0), classes_per_client=3)   # 33-sample shards
    assert max(torch.unique(LABELS[p]).numel() for p in parts) <= 6


@pytest.mark.parametrize("call, match", [
    (lambda: partition.iid(LABELS, 0, np.random.default_rng(0)), "clients must be a positive integer"),
    (lambda: partition.iid(LABELS, 1001, np.random.default_rng(0)), "clients must be <= the number"),
    (lambda: partition.dirichlet(LABELS, 5, np.random.default_rng(0), alpha=0), "alpha must be > 0"),
    (lambda: partition.shards(LABELS, 600, np.random.default_rng(0), 2), "shards exceed"),
    (lambda: partition.partition("pathological", LABELS, 5, np.random.default_rng(0)), "partition must be one of"),
])
def test_partition_bad_arguments_raise_naming_the_bound(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- local training

def _setup(model_name, size=8, n=6, nmax=40, seed=0):
    ds = data.synthetic(num_train=n * nmax, size=size, seed=seed)
    torch.manual_seed(seed)
    model = models.build_model(model_name, ds.image_shape, 10, hidden=16)
    gp = {k: v.detach().clone() for k, v in model.named_parameters()}
    X = ds.x_train.view(n, nmax, *ds.image_shape)
    Y = ds.y_train.view(n, nmax)
    counts = torch.tensor([40, 7, 23, 16, 1, 33])[:n]
    return model, gp, X, Y, counts


def test_batch_schedule_visits_every_sample_once_per_epoch():
    counts = torch.tensor([5, 12, 1, 0])
    idx, mask = train.batch_schedule(counts, epochs=3, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (4, 9, 4) and mask.shape == (4, 9, 4)
    for k, c in enumerate(counts.tolist()):
        for e in range(3):
            seen = idx[k, 3 * e:3 * e + 3][mask[k, 3 * e:3 * e + 3].bool()]
            assert sorted(seen.tolist()) == list(range(c))
        # batches are full except the epoch's last one, as with drop_last=False
        per_step = mask[k, :3].sum(1).tolist()
        assert per_step == [min(4, max(c - 4 * s, 0)) for s in range(3)]


@pytest.mark.parametrize("model_name", ["logreg", "mlp", "cnn"])
@pytest.mark.parametrize("spec", [
    train.LocalSpec(epochs=2, lr=0.1, batch_size=8),
    train.LocalSpec(epochs=1, lr=0.05, batch_size=5, alpha=0.6, anomaly="l2", project_norm=0.05),
    train.LocalSpec(epochs=1, lr=0.2, batch_size=16, alpha=0.5, anomaly="cosine"),
    train.LocalSpec(epochs=2, lr=0.05, batch_size=4, momentum=0.9),
], ids=["plain", "l2-projected", "cosine", "momentum"])
def test_batched_training_equals_one_client_at_a_time(model_name, spec):
    model, gp, X, Y, counts = _setup(model_name)
    rows = torch.arange(6)
    batched = train.train_batched(model, gp, X, Y, rows, counts, spec, torch.Generator().manual_seed(5))
    seq = train.train_sequential(model, gp, X, Y, rows, counts, spec, torch.Generator().manual_seed(5))
    assert batched.shape == (6, sum(v.numel() for v in gp.values()))
    assert float(batched.abs().max()) > 1e-4                      # training moved the models
    torch.testing.assert_close(batched, seq, rtol=1e-5, atol=1e-6)


def test_momentum_is_torch_sgds_and_is_validated():
    model, gp, X, Y, counts = _setup("logreg")
    plain = train.train_batched(model, gp, X, Y, torch.arange(6), counts, train.LocalSpec(2, 0.05, 4),
                                torch.Generator().manual_seed(1))
    heavy = train.train_batched(model, gp, X, Y, torch.arange(6), counts, train.LocalSpec(2, 0.05, 4, momentum=0.9),
                                torch.Generator().manual_seed(1))
    assert float(heavy.norm()) > 1.5 * float(plain.norm())        # momentum goes further at the same lr
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
            train.LocalSpec(1, 0.1, 4, momentum=bad)
    from robustagg.sim.simulator import SimConfig
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        SimConfig(momentum=1.5).validate()


def test_projected_training_keeps_every_delta_inside_the_ball():
    model, gp, X, Y, counts = _setup("mlp")
    spec = train.LocalSpec(epochs=3, lr=0.5, batch_size=4, project_norm=0.02)
    deltas = train.train_batched(model, gp, X, Y, torch.arange(6), counts, spec, torch.Generator().manual_seed(0))
    assert float(deltas.norm(dim=1).max()) <= 0.02 * (1 + 1e-5)


def test_training_reduces_the_loss_of_each_client():
    model, gp, X, Y, counts = _setup("mlp")
    spec = train.LocalSpec(epochs=5, lr=0.3, batch_size=8)
    deltas = train.train_batched(model, gp, X, Y, torch.arange(6), counts, spec, torch.Generator().manual_seed(0))
    for k in (0, 2, 5):
        before = torch.nn.functional.cross_entropy(
            torch.func.functional_call(model, gp, (X[k, :counts[k]],)), Y[k, :counts[k]])
        off, new = 0, {}
        for name, v in gp.items():
            new[name] = v + deltas[k, off:off + v.numel()].view_as(v)
            off += v.numel()
        after = torch.nn.functional.cross_entropy(
            torch.func.functional_call(model, new, (X[k, :counts[k]],)), Y[k, :counts[k]])
        assert float(after) < 0.8 * float(before)


@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=-1, lr=0.1, batch_size=4), "local epochs"),
    (dict(epochs=1, lr=0.0, batch_size=4), "local lr must be > 0"),
    (dict(epochs=1, lr=0.1, batch_size=0), "batch_size"),
    (dict(epochs=1, lr=0.1, batch_size=4, alpha=1.5), "alpha must be in"),
    (dict(epochs=1, lr=0.1, batch_size=4, anomaly="kl"), "anomaly must be"),
])
def test_local_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train.LocalSpec(**kwargs)


def test_cnn_has_the_rlr_papers_size_on_28x28():
    m = models.build_model("cnn", (1, 28, 28), 10)
    n = sum(p.numel() for p in m.parameters())
    assert 1_190_000 < n < 1_210_000         # "about 1.2M parameters"


# ---------------------------------------------------------------- metrics

def test_accuracy_and_class_accuracy_by_hand():
    pred = torch.tensor([1, 7, 7, 2, 1, 7])
    y = torch.tensor([1, 1, 7, 2, 1, 3])
    assert metrics.accuracy(pred, y) == pytest.approx(4 / 6)
    assert metrics.class_accuracy(pred, y, 1) == pytest.approx(2 / 3)
    assert metrics.class_accuracy(pred, y, 5) is None
    assert metrics.class_accuracy(pred, y, None) is None
    # attack success: triggered base-class images vs. the target label
    assert metrics.accuracy(torch.tensor([7, 7, 1, 7]), torch.full((4,), 7)) == 0.75
    assert metrics.accuracy(torch.tensor([]), torch.tensor([])) is None


def test_flagged_clients_and_detection_rates_by_hand():
    excluded = torch.tensor([True, False, False, False, False])
    weights = torch.tensor([0.0, 0.3, 0.3, 0.1, 0.3])    # median kept weight 0.3; 0.1 < 0.15 is flagged
    flagged = metrics.flagged_clients(excluded, weights)
    assert flagged.tolist() == [True, False, False, True, False]
    is_att = torch.tensor([True, True, False, False, False])
    tpr, fpr = metrics.detection_rates(flagged, is_att)
    assert tpr == 0.5 and fpr == pytest.approx(1 / 3)
    assert metrics.detection_rates(flagged, torch.zeros(5, dtype=torch.bool)) == (None, 0.4)


# ---------------------------------------------------------------- attacker choice

def test_base_holders_picks_attackers_among_the_clients_holding_the_base_class():
    from robustagg.sim.simulator import SimConfig, _Experiment
    cfg = dict(partition="shards", clients=20, attackers=3, attack="label_flip",
               attack_params={"source": 1, "target": 7}, rules=["fedavg"], seed=0)
    held = {}
    for pick in ("random", "base_holders"):
        exp = _Experiment(SimConfig(**cfg, attacker_pick=pick))
        held[pick] = [int((exp.dataset.y_train[exp.parts[c]] == 1).sum()) for c in exp.attacker_ids]
    assert min(held["base_holders"]) > 0
    assert min(held["random"]) == 0        # seed 0 draws label flippers holding no '1' at random: what the option fixes


def test_base_holders_needs_a_base_class_and_enough_holders():
    from robustagg.sim.simulator import SimConfig, _Experiment
    with pytest.raises(ValueError, match="needs an attack with a base class"):
        SimConfig(attack="sign_flip", attacker_pick="base_holders", rules=["fedavg"]).validate()
    with pytest.raises(ValueError, match="only .* hold the base class"):
        _Experiment(SimConfig(partition="shards", clients=20, attackers=19, attack="label_flip",
                              attack_params={"source": 1, "target": 7}, rules=["fedavg"],
                              attacker_pick="base_holders"))
