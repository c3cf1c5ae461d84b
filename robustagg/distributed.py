"""Sharded aggregation over ``torch.distributed``; see :mod:`robustagg.integrations.distributed`."""
from .integrations.distributed import aggregate, reshard, shard_bounds

__all__ = ["aggregate", "reshard", "shard_bounds"]
