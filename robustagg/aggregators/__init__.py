"""Robust aggregation rules behind one API.

Every rule is a small callable object::

    rule = robustagg.aggregators.get("trimmed_mean", beta=0.1)   # or TrimmedMean(beta=0.1)
    result = rule(updates, weights=sample_counts, client_ids=ids)
    global_delta = result.update            # [d]
    result.client_weights, result.excluded, result.info

``updates`` are client deltas (w_k - w_global), ``[K, d]`` or a list of tensors.
Clients with NaN/Inf are excluded before any rule runs.
"""
from .base import (AggregationResult, Aggregator, as_updates, available, default_rules, get, register,
                   rule_class)
from .stats import ShardedStatistics, Statistics
from .distance import RFLBAT, Bulyan, FoolsGold, Krum, MultiKrum
from .mean import CenteredClip, FedAvg, GaussianNoise, GeometricMedian, NormClip
from .order import Median, RepeatedMedian, Residual, TrimmedMean
from .sign import Invariant, RobustLR, SignSGD

__all__ = [
    "AggregationResult", "Aggregator", "as_updates", "available", "get", "register", "rule_class",
    "default_rules", "Statistics", "ShardedStatistics",
    "FedAvg", "RobustLR", "SignSGD", "Median", "TrimmedMean", "RepeatedMedian", "Residual",
    "Krum", "MultiKrum", "Bulyan", "FoolsGold", "RFLBAT", "Invariant", "GeometricMedian",
    "NormClip", "GaussianNoise", "CenteredClip",
]
