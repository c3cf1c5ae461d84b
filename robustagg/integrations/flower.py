"""Flower strategies that aggregate with any robustagg rule.

``RobustStrategy(rule, server_lr=1.0, **fedavg_kwargs)`` subclasses Flower's
``FedAvg`` of the Message API (``flwr.serverapp.strategy``, Flower >= 1.20) and
``LegacyRobustStrategy`` the ``flwr.server.strategy.FedAvg`` of the older
``aggregate_fit`` API; where only the legacy API exists, ``RobustStrategy`` is
the legacy one. Both:

1. keep the global parameters the strategy last sent (``configure_train`` /
   ``configure_fit``, or ``initial_parameters``);
2. turn each client's returned parameters into a delta ``w_k - w_global``
   (floating-point arrays; other arrays keep the global value);
3. aggregate the deltas with the rule (sample counts as weights, the node id /
   client id as ``client_ids``, so FoolsGold's history follows a client);
4. return ``w_global + server_lr * update`` and report, in the round's metrics,
   how many clients the rule excluded and the per-client decisions
   (``robustagg-excluded`` / ``robustagg-client-weights`` as lists in reply
   order in the Message API; ``robustagg_excluded_ids`` / JSON strings in the
   legacy API, whose metrics must be scalars). ``strategy.last_result`` holds
   the full :class:`~robustagg.aggregators.AggregationResult` and
   ``strategy.last_client_ids`` the ids in its row order.

Install with ``pip install "robustagg[flower]"``.
"""
from __future__ import annotations

import json
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import aggregators
from ..utils import stepped

try:
    import flwr  # noqa: F401
except ImportError as e:        # pragma: no cover - exercised only without flwr
    raise ImportError("robustagg.integrations.flower needs Flower: pip install 'robustagg[flower]'") from e

try:
    from flwr.serverapp.strategy import FedAvg as _MessageFedAvg
    from flwr.app import Array, ArrayRecord, MetricRecord
except ImportError:             # Flower before the Message API
    _MessageFedAvg = None

try:
    from flwr.server.strategy import FedAvg as _LegacyFedAvg
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
except ImportError:             # a Flower that dropped the legacy API
    _LegacyFedAvg = None

__all__ = ["RobustStrategy", "LegacyRobustStrategy", "robust_update"]


def _as_rule(rule) -> aggregators.Aggregator:
    if isinstance(rule, str):
        return aggregators.get(rule)
    if isinstance(rule, aggregators.Aggregator):
        return rule
    raise TypeError(f"rule must be a robustagg rule or its name; got {type(rule).__name__}")


def _check_server_lr(server_lr) -> float:
    if not isinstance(server_lr, (int, float)) or not (server_lr > 0) or not np.isfinite(server_lr):
        raise ValueError(f"server_lr must be a finite number > 0; got {server_lr!r}")
    return float(server_lr)


def robust_update(rule: aggregators.Aggregator, global_arrays: Sequence[np.ndarray],
                  client_arrays: Sequence[Sequence[np.ndarray]], num_examples: Sequence[int],
                  client_ids: Sequence[Any], server_lr: float) -> Tuple[List[np.ndarray], Any]:
    """The framework-free core of both strategies: new global arrays and the rule's result."""
    float_idx = [i for i, a in enumerate(global_arrays) if np.issubdtype(np.asarray(a).dtype, np.floating)]
    if not float_idx:
        raise ValueError("the global parameters hold no floating-point arrays to aggregate")
    rows = []
    for c, arrays in enumerate(client_arrays):
        if len(arrays) != len(global_arrays):
            raise ValueError(f"client {client_ids[c]!r} returned {len(arrays)} arrays; the global model has "
                             f"{len(global_arrays)}")
        parts = []
        for i in float_idx:
            g, a = np.asarray(global_arrays[i]), np.asarray(arrays[i])
            if a.shape != g.shape:
                raise ValueError(f"client {client_ids[c]!r}: array {i} has shape {a.shape}; the global model's "
                                 f"is {g.shape}")
            parts.append(torch.from_numpy(a.astype(np.float64, copy=False).reshape(-1) - g.astype(np.float64).reshape(-1)))
        rows.append(torch.cat(parts))
    # float32 holds every delta of a float32 model exactly enough; float64 models stay float64
    dtype = torch.float64 if any(np.asarray(global_arrays[i]).dtype == np.float64 for i in float_idx) else torch.float32
    deltas = torch.stack(rows).to(dtype)
    weights = torch.tensor([float(n) for n in num_examples], dtype=torch.float64)
    if not bool((weights > 0).any()):
        weights = None          # every client reported 0 examples: weigh them equally
    result = rule(deltas, weights=weights, client_ids=list(client_ids))
    update = result.update.double().numpy()
    new, offset = [np.array(a, copy=True) for a in global_arrays], 0
    for i in float_idx:
        g = np.asarray(global_arrays[i])
        new[i] = stepped(torch.from_numpy(np.ascontiguousarray(g)), torch.from_numpy(update[offset:offset + g.size]),
                         server_lr).numpy()
        offset += g.size
    return new, result


if _MessageFedAvg is not None:

    class RobustStrategy(_MessageFedAvg):
        """Flower's FedAvg (Message API) with the average replaced by a robustagg rule.

        Args:
            rule: a rule object or name (``"trimmed_mean"``; ``aggregators.get`` for parameters).
            server_lr: η in ``w <- w + η * update``.
            **fedavg_kwargs: passed to ``flwr.serverapp.strategy.FedAvg``
                (``fraction_train``, ``min_train_nodes``, ``weighted_by_key``, ...).

        Example:
            >>> strategy = RobustStrategy(aggregators.get("rlr", threshold=4), fraction_train=1.0)
            >>> strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=3)
        """

        def __init__(self, rule, server_lr: float = 1.0, **fedavg_kwargs):
            super().__init__(**fedavg_kwargs)
            self.rule = _as_rule(rule)
            self.server_lr = _check_server_lr(server_lr)
            self.current_arrays: Optional[ArrayRecord] = None
            self.last_result = None
            self.last_client_ids: List[int] = []

        def configure_train(self, server_round, arrays, config, grid):
            self.current_arrays = arrays
            return super().configure_train(server_round, arrays, config, grid)

        def _client_arrays(self, content) -> ArrayRecord:
            if self.arrayrecord_key in content.array_records:
                return content.array_records[self.arrayrecord_key]
            records = list(content.array_records.values())
            if len(records) != 1:
                raise ValueError(f"a reply must hold the ArrayRecord {self.arrayrecord_key!r}")
            return records[0]

        def _num_examples(self, content) -> float:
            for rec in content.metric_records.values():
                if self.weighted_by_key in rec:
                    return float(rec[self.weighted_by_key])
            raise ValueError(f"a reply has no metric {self.weighted_by_key!r} (weighted_by_key)")

        def aggregate_train(self, server_round, replies):
            valid, _ = self._check_and_log_replies(replies, is_train=True)
            if not valid:
                return None, None
            if self.current_arrays is None:
                raise RuntimeError("RobustStrategy needs the global model the clients started from: call it "
                                   "through start()/configure_train, or set strategy.current_arrays")
            keys = list(self.current_arrays.keys())
            global_nd = self.current_arrays.to_numpy_ndarrays()
            contents = [m.content for m in valid]
            ids = [int(m.metadata.src_node_id) for m in valid]
            client_nd = [self._client_arrays(c).to_numpy_ndarrays() for c in contents]
            counts = [self._num_examples(c) for c in contents]
            new, result = robust_update(self.rule, global_nd, client_nd, counts, ids, self.server_lr)
            self.last_result, self.last_client_ids = result, ids
            arrays = ArrayRecord()
            for k, a in zip(keys, new):
                arrays[k] = Array(np.ascontiguousarray(a))
            self.current_arrays = arrays
            metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
            metrics = MetricRecord(dict(metrics) if metrics is not None else {})
            metrics["robustagg-excluded"] = [int(x) for x in result.excluded.tolist()]
            metrics["robustagg-client-weights"] = [float(x) for x in result.client_weights.tolist()]
            metrics["robustagg-num-excluded"] = int(result.excluded.sum())
            metrics["robustagg-num-nonfinite"] = len(result.info.get("nonfinite", []))
            return arrays, metrics


if _LegacyFedAvg is not None:

    class LegacyRobustStrategy(_LegacyFedAvg):
        """Flower's legacy ``FedAvg`` (``aggregate_fit``) with a robustagg rule.

        Same arguments as :class:`RobustStrategy`; ``**fedavg_kwargs`` go to
        ``flwr.server.strategy.FedAvg`` (``fraction_fit``, ``initial_parameters``, ...).
        """

        def __init__(self, rule, server_lr: float = 1.0, **fedavg_kwargs):
            super().__init__(**fedavg_kwargs)
            self.rule = _as_rule(rule)
            self.server_lr = _check_server_lr(server_lr)
            self.current_parameters = fedavg_kwargs.get("initial_parameters")
            self.last_result = None
            self.last_client_ids: List[str] = []

        def configure_fit(self, server_round, parameters, client_manager):
            self.current_parameters = parameters
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            if not results:
                return None, {}
            if failures and not self.accept_failures:
                return None, {}
            if self.current_parameters is None:
                raise RuntimeError("LegacyRobustStrategy needs the global model the clients started from: "
                                   "pass initial_parameters or call configure_fit first")
            global_nd = parameters_to_ndarrays(self.current_parameters)
            ids = [str(proxy.cid) for proxy, _ in results]
            client_nd = [parameters_to_ndarrays(res.parameters) for _, res in results]
            counts = [res.num_examples for _, res in results]
            new, result = robust_update(self.rule, global_nd, client_nd, counts, ids, self.server_lr)
            self.last_result, self.last_client_ids = result, ids
            params = ndarrays_to_parameters(new)
            self.current_parameters = params
            metrics = {}
            if self.fit_metrics_aggregation_fn:
                metrics = dict(self.fit_metrics_aggregation_fn([(res.num_examples, res.metrics) for _, res in results]))
            excluded = result.excluded.tolist()
            metrics["robustagg_num_excluded"] = int(sum(excluded))
            metrics["robustagg_excluded_ids"] = ",".join(c for c, e in zip(ids, excluded) if e)
            metrics["robustagg_client_weights"] = json.dumps(dict(zip(ids, result.client_weights.tolist())))
            return params, metrics

    if _MessageFedAvg is None:
        RobustStrategy = LegacyRobustStrategy
