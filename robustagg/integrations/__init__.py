"""Drop-in use of robustagg in other frameworks: :mod:`.flower` (needs ``flwr``)
and :mod:`.distributed` (sharded aggregation over ``torch.distributed``)."""
