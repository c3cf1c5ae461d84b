"""The Flower strategies, driven directly with Flower's own record/message objects (no network, no Ray)."""
import json

import numpy as np
import pytest
import torch

flwr = pytest.importorskip("flwr")

from robustagg import aggregators  # noqa: E402
from robustagg.integrations import flower as rf  # noqa: E402

K, ATTACKERS = 8, 2


def _model_arrays(rng):
    return [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32),
            np.array([7], dtype=np.int64)]          # an integer buffer: not aggregated


def _client_arrays(global_arrays, rng, attacker):
    out = []
    for a in global_arrays:
        if a.dtype.kind != "f":
            out.append(a.copy())
        elif attacker:
            out.append(a + 50.0)                     # a scaled, far-away update
        else:
            out.append(a + 0.01 * rng.standard_normal(a.shape).astype(np.float32))
    return out


def _expected(rule, global_arrays, clients, counts, ids, lr):
    deltas = torch.stack([torch.cat([torch.from_numpy(c[i].astype(np.float64) - global_arrays[i].astype(np.float64)).flatten()
                                     for i in (0, 1)]) for c in clients]).float()
    res = rule(deltas, weights=torch.tensor(counts, dtype=torch.float64), client_ids=ids)
    return res


needs_message_api = pytest.mark.skipif(getattr(rf, "_MessageFedAvg", None) is None,
                                       reason="this Flower has no Message API")
needs_legacy_api = pytest.mark.skipif(not hasattr(rf, "LegacyRobustStrategy"), reason="this Flower has no legacy API")


def _replies(clients, counts, node_ids):
    from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict
    out = []
    for arrays, n, node in zip(clients, counts, node_ids):
        md = Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0, reply_to_message_id="",
                      group_id="1", created_at=0.0, ttl=3600.0, message_type="train")
        content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": n, "loss": 0.5})})
        out.append(Message(content=content, metadata=md))
    return out


@needs_message_api
@pytest.mark.parametrize("rule_name, lr", [("median", 1.0), ("krum", 0.5), ("trimmed_mean", 1.0)])
def test_message_api_strategy_applies_the_rule_to_the_deltas(rule_name, lr):
    from flwr.app import ArrayRecord
    rng = np.random.default_rng(0)
    g = _model_arrays(rng)
    clients = [_client_arrays(g, rng, attacker=k < ATTACKERS) for k in range(K)]
    counts = [10 + k for k in range(K)]
    nodes = [1000 + k for k in range(K)]
    rule = aggregators.get(rule_name, **({"f": 2} if rule_name == "krum" else {"trim": 2} if rule_name == "trimmed_mean" else {}))
    strategy = rf.RobustStrategy(rule, server_lr=lr)
    assert isinstance(strategy, flwr.serverapp.strategy.FedAvg)
    strategy.current_arrays = ArrayRecord(g)

    arrays, metrics = strategy.aggregate_train(1, _replies(clients, counts, nodes))

    new = arrays.to_numpy_ndarrays()
    expect = _expected(rule, g, clients, counts, nodes, lr)
    flat = np.concatenate([(new[i].astype(np.float64) - g[i].astype(np.float64)).ravel() for i in (0, 1)])
    np.testing.assert_allclose(flat, lr * expect.update.double().numpy(), rtol=1e-5, atol=1e-6)
    assert new[2].tolist() == [7] and new[0].dtype == np.float32
    assert np.abs(flat).max() < 1.0                             # the +50 attackers did not get through
    assert metrics["robustagg-excluded"] == [int(x) for x in expect.excluded.tolist()]
    assert len(metrics["robustagg-client-weights"]) == K and metrics["loss"] == pytest.approx(0.5)
    assert strategy.last_client_ids == nodes


@needs_message_api
def test_message_api_strategy_reports_excluded_clients_and_drops_nan():
    from flwr.app import ArrayRecord
    rng = np.random.default_rng(1)
    g = _model_arrays(rng)
    clients = [_client_arrays(g, rng, attacker=False) for _ in range(5)]
    clients[3][0][0, 0] = np.nan
    strategy = rf.RobustStrategy("fedavg")
    strategy.current_arrays = ArrayRecord(g)
    arrays, metrics = strategy.aggregate_train(1, _replies(clients, [10] * 5, [1, 2, 3, 4, 5]))
    assert metrics["robustagg-excluded"] == [0, 0, 0, 1, 0] and metrics["robustagg-num-nonfinite"] == 1
    assert all(np.isfinite(a).all() for a in arrays.to_numpy_ndarrays())


@needs_message_api
def test_message_api_configure_train_records_the_global_model(monkeypatch):
    from flwr.app import ArrayRecord, ConfigRecord
    try:        # what Flower's runtime sets before a ServerApp runs
        from flwr.supercore.task_identity import TaskIdentity
        for attr in ("_run_id", "_node_id", "_task_id"):
            monkeypatch.setattr(TaskIdentity, attr, 1, raising=False)
    except ImportError:
        pass

    class Grid:                                   # the two calls FedAvg.configure_train makes
        def get_node_ids(self):
            return [11, 12, 13]

    g = _model_arrays(np.random.default_rng(2))
    strategy = rf.RobustStrategy("median", min_train_nodes=3, min_available_nodes=3)
    msgs = list(strategy.configure_train(1, ArrayRecord(g), ConfigRecord({"lr": 0.1}), Grid()))
    assert len(msgs) == 3 and strategy.current_arrays is not None


@needs_message_api
def test_message_api_strategy_without_a_global_model_says_so():
    rng = np.random.default_rng(3)
    g = _model_arrays(rng)
    strategy = rf.RobustStrategy("median")
    with pytest.raises(RuntimeError, match="global model"):
        strategy.aggregate_train(1, _replies([g, g], [1, 1], [1, 2]))


@needs_legacy_api
def test_legacy_strategy_aggregate_fit_with_flower_fitres():
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    class Proxy:                                   # aggregate_fit only reads .cid
        def __init__(self, cid):
            self.cid = cid

    rng = np.random.default_rng(4)
    g = _model_arrays(rng)
    clients = [_client_arrays(g, rng, attacker=k < ATTACKERS) for k in range(K)]
    strategy = rf.LegacyRobustStrategy(aggregators.get("multikrum", f=2), server_lr=1.0,
                                       initial_parameters=ndarrays_to_parameters(g))
    results = [(Proxy(f"c{k}"), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(c), 10, {}))
               for k, c in enumerate(clients)]
    params, metrics = strategy.aggregate_fit(1, results, [])
    new = flwr.common.parameters_to_ndarrays(params)
    assert np.abs(new[0] - g[0]).max() < 1.0
    assert metrics["robustagg_num_excluded"] >= ATTACKERS
    assert {"c0", "c1"} <= set(metrics["robustagg_excluded_ids"].split(","))
    assert set(json.loads(metrics["robustagg_client_weights"])) == {f"c{k}" for k in range(K)}


def test_strategy_rejects_bad_arguments():
    cls = rf.RobustStrategy
    with pytest.raises(ValueError, match="server_lr must be a finite number > 0"):
        cls("median", server_lr=0)
    with pytest.raises(ValueError, match="unknown aggregator 'avg'"):
        cls("avg")
    with pytest.raises(TypeError, match="rule must be a robustagg rule"):
        cls(3)
