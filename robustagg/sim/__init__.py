"""A small, real federated-learning simulator: datasets, partitions, models,
batched local training, the server loop and the metrics."""
