"""A few rounds of Flower with a robustagg rule, in one process (no network, no Ray).

The server side is Flower's own: ``RobustStrategy`` (Message API) configures
each round with Flower Messages and aggregates the replies. The "clients" are
plain functions here that train a logistic regression on their share of
scikit-learn's digits (2 of 10 send a scaled, poisoned update), so this runs
anywhere flwr is installed: ``pip install "robustagg[flower]"``.

For a real deployment, use the same strategy in a ServerApp::

    from flwr.serverapp import ServerApp
    app = ServerApp()

    @app.main()
    def main(grid, context):
        strategy = RobustStrategy(aggregators.get("trimmed_mean", trim=2), fraction_train=1.0)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=10)

and run it with ``flwr run`` (Flower's simulation engine needs ``flwr[simulation]``).
"""
import numpy as np
import torch

try:
    from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
except ImportError:
    raise SystemExit("this example needs Flower: pip install 'robustagg[flower]'")

from robustagg import aggregators
from robustagg.integrations.flower import RobustStrategy
from robustagg.sim import data, partition

CLIENTS, ATTACKERS, ROUNDS = 10, 2, 5


def local_train(arrays, x, y, attacker):
    w, b = (torch.from_numpy(a).clone().requires_grad_(True) for a in arrays)
    opt = torch.optim.SGD([w, b], lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(x @ w.T + b, y).backward()
        opt.step()
    new = [w.detach().numpy(), b.detach().numpy()]
    if attacker:                                   # model replacement-style boost of a wrong direction
        new = [g + 20.0 * (g - n) for g, n in zip(arrays, new)]
    return new


def main():
    ds = data.load_digits()
    x, y = ds.x_train.flatten(1), ds.y_train
    parts = partition.iid(y, CLIENTS, np.random.default_rng(0))
    arrays = ArrayRecord([np.zeros((10, 64), np.float32), np.zeros(10, np.float32)])
    strategy = RobustStrategy(aggregators.get("trimmed_mean", trim=ATTACKERS), fraction_train=1.0)
    for rnd in range(1, ROUNDS + 1):
        strategy.current_arrays = arrays              # what configure_train records in a real run
        replies = []
        for k, idx in enumerate(parts):
            new = local_train(arrays.to_numpy_ndarrays(), x[idx], y[idx], attacker=k < ATTACKERS)
            md = Metadata(run_id=1, message_id="", src_node_id=k + 1, dst_node_id=0, reply_to_message_id="",
                          group_id=str(rnd), created_at=0.0, ttl=3600.0, message_type="train")
            content = RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": len(idx)})})
            replies.append(Message(content=content, metadata=md))
        arrays, metrics = strategy.aggregate_train(rnd, replies)
        w, b = (torch.from_numpy(a) for a in arrays.to_numpy_ndarrays())
        acc = float(((ds.x_test.flatten(1) @ w.T + b).argmax(1) == ds.y_test).float().mean())
        print(f"round {rnd}: test accuracy {acc:.3f}, excluded {metrics['robustagg-num-excluded']}")


if __name__ == "__main__":
    main()
