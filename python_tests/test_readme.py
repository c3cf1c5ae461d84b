"""README.md's Python blocks are examples the suite runs, so they cannot drift
from the code; the names a block leaves to the reader (their model, their
training) are given here, per section, as the smallest stand-ins."""
import os
import re

import pytest
import torch

import robustagg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _blocks():
    """(section heading, code) of every ```python block of the README."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    out, heading = [], None
    for m in re.finditer(r"^(#+ [^\n]*)$|^```python\n(.*?)^```$", text, flags=re.M | re.S):
        if m.group(1):
            heading = m.group(1).lstrip("# ").strip()
        else:
            out.append((heading, m.group(2)))
    return out


def _training_loop_context():
    model = torch.nn.Linear(4, 3)
    client_data = {i: torch.randn(5 + i, 4) for i in range(12)}
    gen = torch.Generator().manual_seed(0)

    def train_locally(state, data):
        return {k: v + 0.01 * data.mean() + 0.001 * torch.randn(v.shape, generator=gen) for k, v in state.items()}

    def sample_clients(rnd):
        return sorted(torch.randperm(12, generator=gen)[:8].tolist())

    logged = []
    return {"global_model": model, "client_data": client_data, "train_locally": train_locally,
            "sample_clients": sample_clients, "log": lambda *a: logged.append(a), "rounds": 3}, logged


def _check_training_loop(ns, logged):
    assert len(logged) == 3
    for excluded, client_weights, info in logged:
        assert excluded.shape == client_weights.shape == (8,) and "flipped_fraction" in info


def _check_flower(ns, logged):
    from flwr.serverapp import ServerApp
    assert isinstance(ns["app"], ServerApp) and callable(ns["main"])


def _check_distributed(ns, logged):
    import torch.distributed as dist
    updates = torch.randn(7, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        update, (lo, hi) = ns["robust_round"](updates)
    finally:
        dist.destroy_process_group()
    assert (lo, hi) == (0, 10)
    torch.testing.assert_close(update, robustagg.aggregators.get("krum")(updates).update)


# What each section's block needs from the reader, and what its result must be.
CONTEXTS = {
    "Aggregation rules": (lambda: ({}, None), lambda ns, _: ns["result"].update.shape == (10,)),
    "In your own training loop": (_training_loop_context, _check_training_loop),
    "In Flower": (lambda: ({}, None), _check_flower),
    "Across GPUs and nodes (torch.distributed)": (lambda: ({}, None), _check_distributed),
}


def test_every_readme_python_block_has_a_context_here():
    assert sorted(h for h, _ in _blocks()) == sorted(CONTEXTS)


@pytest.mark.parametrize("heading, code", _blocks(), ids=[h for h, _ in _blocks()])
def test_readme_python_block_runs(heading, code):
    if heading == "In Flower":
        pytest.importorskip("flwr")
    make, check = CONTEXTS[heading]
    ns, logged = make()
    ns = {"__name__": "readme_example", **ns}
    exec(compile(code, f"README.md ({heading})", "exec"), ns)
    assert check(ns, logged) is not False


def test_aggregate_all_example_runs_every_op(capsys, monkeypatch):
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("aggregate_all", os.path.join(ROOT, "examples", "aggregate_all.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(sys, "argv", ["aggregate_all.py", "--dim", "500"])
    mod.main()
    out = capsys.readouterr().out
    ops = [n for n in robustagg.ops.__all__ if n not in ("set_num_threads", "get_num_threads", "run_device_math")]
    assert len(ops) == 15
    missing = [n for n in ops if not re.search(rf"(^|[ +]){n}\b", out, flags=re.M)]
    assert missing == []
