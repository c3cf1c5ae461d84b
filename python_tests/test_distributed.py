"""Sharded aggregation over torch.distributed: 2 gloo processes on CPU give the single-process result."""
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import dist_worker

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    out = str(tmp / "report")
    mp.spawn(dist_worker.worker, args=(2, str(tmp / "init"), out), nprocs=2, join=True)
    reps = []
    for r in range(2):
        with open(f"{out}.{r}") as f:
            reps.append(json.load(f))
    return reps


@pytest.mark.parametrize("key", [dist_worker.label(n, p) for n, p in dist_worker.RULES])
def test_sharded_rule_equals_single_process(reports, key):
    for rank, rep in enumerate(reports):
        assert rep["rules"][key] == "ok", f"rank {rank}: {rep['rules'][key]}"


@pytest.mark.parametrize("check", ["nonfinite", "reshard", "k_mismatch"])
def test_sharded_checks(reports, check):
    for rank, rep in enumerate(reports):
        assert rep[check] == "ok", f"rank {rank}: {rep[check]}"


def test_aggregate_without_a_process_group_says_so():
    from robustagg import distributed as rd
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        rd.aggregate("median", torch.randn(4, 10))


def test_shard_bounds_cover_d_evenly():
    from robustagg.distributed import shard_bounds
    bounds = [shard_bounds(10, 3, r) for r in range(3)]
    assert bounds == [(0, 4), (4, 7), (7, 10)]
    assert [shard_bounds(2, 4, r) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
