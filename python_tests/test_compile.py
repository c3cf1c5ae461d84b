"""Rules inside torch.compile and on tensors that require grad (no torch.no_grad needed)."""
import pytest
import torch

import robustagg.aggregators as A

K, D = 12, 300

PARAMS = {"krum": {"f": 2}, "multikrum": {"f": 2}, "bulyan": {"f": 2}, "trimmed_mean": {"trim": 2},
          "rlr": {"threshold": 4}, "noise": {"seed": 0}}


def _updates():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(K, D, generator=g)
    u[:2] += 5.0
    return u


@pytest.mark.parametrize("name", A.available())
def test_rule_runs_under_torch_compile_with_the_eager_result(name):
    u = _updates()
    want = A.get(name, **PARAMS.get(name, {}))(u).update
    rule = A.get(name, **PARAMS.get(name, {}))
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: rule(x).update, backend="eager")
    torch.testing.assert_close(compiled(u), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", A.available())
def test_rule_accepts_updates_that_require_grad(name):
    u = _updates().requires_grad_(True)
    res = A.get(name, **PARAMS.get(name, {}))(u)
    assert not res.update.requires_grad
    assert bool(torch.isfinite(res.update).all())
