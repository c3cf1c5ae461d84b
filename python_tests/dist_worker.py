"""Run in each of the processes spawned by test_distributed.py (gloo, CPU)."""
import json
import traceback

import torch
import torch.distributed as dist

import robustagg.aggregators as A
from robustagg import distributed as rd

K, D = 12, 1001                       # D odd: the shards differ in size

# Every registered rule (a new one is tested sharded without being listed),
# with parameters that make it act on these updates, plus a few variants.
PARAMS = {
    "trimmed_mean": {"trim": 2}, "rlr": {"threshold": 4}, "invariant": {"tau": 0.2, "alpha": 0.2},
    "krum": {"f": 2}, "multikrum": {"f": 2}, "bulyan": {"f": 2}, "clip": {"max_norm": 5.0},
    "centered_clip": {"tau": 3.0}, "noise": {"sigma": 0.01, "seed": 5},
}
RULES = [(name, PARAMS.get(name, {})) for name in A.available()] + [
    ("residual", {"power": 2.0, "intercept": "median"}), ("clip", {"max_norm": 5.0, "base": "median"}),
    ("rlr", {"threshold": 4, "base": "trimmed_mean"}), ("residual", {"variant": "released"}),
]


def make_updates(seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(K, D, generator=g)
    u[:3] = u[:3] * 0.2 + 4.0         # three similar attackers far from the rest
    return u


def label(name, params):
    return name + "".join(f",{k}={v}" for k, v in params.items())


def _full(res_update, group=None):
    parts = [torch.empty(0)] * dist.get_world_size()
    dist.all_gather_object(parts, res_update)
    return torch.cat(parts)


def check_rules(rank, world):
    out = {}
    weights = torch.arange(1, K + 1, dtype=torch.float64)
    for name, params in RULES:
        key = label(name, params)
        try:
            single, sharded = A.get(name, **params), A.get(name, **params)
            lo, hi = rd.shard_bounds(D, world, rank)
            for rnd in range(2):                      # two rounds: stateful rules (FoolsGold, centered clip)
                u = make_updates(seed=rnd)
                want = single(u, weights=weights, client_ids=list(range(100, 100 + K)))
                got = rd.aggregate(sharded, u[:, lo:hi], weights=weights, client_ids=list(range(100, 100 + K)))
                if name == "noise":
                    # Each rank draws its own slice of the noise (seed + rank), around the sharded base.
                    base = rd.aggregate(A.get("fedavg"), u[:, lo:hi], weights=weights)
                    if rnd == 0:
                        gen = torch.Generator().manual_seed(params["seed"] + rank)
                    noise = torch.randn(hi - lo, generator=gen)
                    torch.testing.assert_close(got.update, base.update + params["sigma"] * noise)
                    want = A.get("fedavg")(u, weights=weights)
                    want.update = _full(got.update)
                full = _full(got.update)
                assert torch.equal(got.excluded, want.excluded), f"excluded {got.excluded} vs {want.excluded}"
                torch.testing.assert_close(got.client_weights, want.client_weights, rtol=1e-5, atol=1e-7)
                torch.testing.assert_close(full, want.update, rtol=1e-4, atol=1e-5)
            out[key] = "ok"
        except Exception:
            out[key] = traceback.format_exc()
    return out


def check_nonfinite(rank, world):
    u = make_updates()
    u[5, 7] = float("nan")            # lives on rank 0's shard only
    lo, hi = rd.shard_bounds(D, world, rank)
    got = rd.aggregate("median", u[:, lo:hi])
    assert bool(got.excluded[5]) and got.info["nonfinite"] == [5], got.info
    want = A.get("median")(u)
    torch.testing.assert_close(_full(got.update), want.update)
    return "ok"


def check_reshard(rank, world):
    u = make_updates()
    mine = u[:5] if rank == 0 else u[5:]          # uneven: 5 and 7 clients
    shard = rd.reshard(mine)
    lo, hi = rd.shard_bounds(D, world, rank)
    assert torch.equal(shard, u[:, lo:hi]), "reshard gave the wrong coordinates"
    empty = rd.reshard(u if rank == 0 else u[:0])  # one rank holds every client
    assert torch.equal(empty, u[:, lo:hi])
    return "ok"


def check_k_mismatch(rank, world):
    u = make_updates()
    try:
        rd.aggregate("median", u[: (K if rank == 0 else K - 1), :10])
    except ValueError as e:
        return "ok" if "ranks disagree" in str(e) else str(e)
    return "no error"


def worker(rank, world, init_file, out_path):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    report = {"rules": check_rules(rank, world)}
    for name, fn in (("nonfinite", check_nonfinite), ("reshard", check_reshard), ("k_mismatch", check_k_mismatch)):
        try:
            report[name] = fn(rank, world)
        except Exception:
            report[name] = traceback.format_exc()
    with open(f"{out_path}.{rank}", "w") as f:
        json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()
