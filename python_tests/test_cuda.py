"""The CUDA kernels on a GPU (``pytest -m cuda``; skipped without one).

Every op on CUDA tensors against the CPU native result and the reference,
and bitwise against the same launchers run on the CPU under the emulation
(``ops.run_device_math``, tested everywhere in test_device_math.py); a
non-default stream, CUDA graph capture, torch.compile, and every rule on CUDA
tensors. bench/gpu_check.sh runs these first on a machine with a GPU.
"""
import itertools

import pytest
import torch

import robustagg
import robustagg.aggregators as A
from robustagg import ops, reference
from common import HAS_CUDA, assert_close, make_updates

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")]

KS = [1, 2, 3, 5, 10, 31, 32, 33, 100, 257]
DS = [1, 7, 1000, 65537]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
OPS = ["sign_vote", "robust_lr_mean", "robust_lr_mean_counted", "trimmed_mean", "median", "masked_trimmed_mean",
       "closest_to_median_mean",
       "repeated_median_line", "residual_reweight", "pairwise_sq_distances", "cosine_similarity", "pairwise_stats",
       "sq_distances_to"]
QUADRATIC = {"repeated_median_line", "residual_reweight", "pairwise_sq_distances", "cosine_similarity",
             "pairwise_stats"}
# Bitwise equal to the CPU kernels by contract (pairwise sums are blocked differently).
BITWISE_CPU = set(OPS) - {"pairwise_sq_distances", "cosine_similarity", "pairwise_stats"}


def _args(name, K):
    trim = (K - 1) // 2 if K > 2 else 0
    return {"robust_lr_mean": (min(K, 4),), "robust_lr_mean_counted": (min(K, 4),), "trimmed_mean": (trim,), "masked_trimmed_mean": (0.4, max(0, trim - 1)),
            "closest_to_median_mean": (max(0, trim // 2),)}.get(name, ())


def _same(got, want, msg):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, msg
        torch.testing.assert_close(g.cpu(), w.cpu(), rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{msg}: {m}")


def _grid():
    for name, K, d, dtype in itertools.product(OPS, KS, DS, DTYPES):
        if (K * K * d if name in QUADRATIC else K * d) > 3 * 10**7:
            continue
        if d == 65537 and (dtype != torch.float32 or K > 33):  # the emulation is the slow side
            continue
        yield pytest.param(name, K, d, dtype, id=f"{name}-K{K}-d{d}-{str(dtype)[6:]}")


def test_cuda_kernels_are_registered():
    info = robustagg.native_info()
    assert "cuda" in info["backends"], "this build has no CUDA kernels (was nvcc found at build time?)"
    assert all(v["cuda"] == "native" for v in info["ops"].values())


@pytest.mark.parametrize("name,K,d,dtype", list(_grid()))
def test_cuda_op_is_bitwise_the_device_math_and_matches_cpu_and_reference(name, K, d, dtype):
    u = make_updates(K, d, dtype, "normal", seed=K * 1000 + d)
    u[0, 0] = float("nan") if d > 3 else u[0, 0]  # a non-finite column where there is room
    args = _args(name, K)
    got = getattr(ops, name)(u.cuda(), *args)
    outs = got if isinstance(got, tuple) else (got,)
    assert all(o.device.type == "cuda" for o in outs)
    _same(got, ops.run_device_math(name, u, *args), f"{name} vs host-run device math")
    cpu = getattr(ops, name)(u, *args)
    if name in BITWISE_CPU:
        _same(got, cpu, f"{name} vs CPU kernel")
    if name == "pairwise_stats":
        return
    ref_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) and name in QUADRATIC else dtype
    assert_close(tuple(o.cpu() for o in outs) if len(outs) > 1 else outs[0].cpu(),
                 getattr(reference, name)(u, *args), ref_dtype, f"{name} vs reference")


@pytest.mark.parametrize("weighted", [False, True])
def test_cuda_weighted_sign_ops(weighted):
    u = make_updates(10, 3000, torch.float32, "ties", seed=3)
    w = torch.arange(1, 11, dtype=torch.float32) if weighted else None
    wc = None if w is None else w.cuda()
    _same(ops.sign_vote(u.cuda(), wc), ops.sign_vote(u, w), "sign_vote")
    _same(ops.robust_lr_mean(u.cuda(), 4, wc), ops.robust_lr_mean(u, 4, w), "robust_lr_mean")


@pytest.mark.parametrize("K", [2, 3, 33])
def test_cuda_residual_parts(K):
    u = make_updates(K, 5000, torch.float32, "normal", seed=K)
    W = ops.residual_client_sums(u.cuda())
    _same(W, ops.run_device_math("residual_client_sums", u), "client sums")
    _same(ops.residual_apply(u.cuda(), W), ops.run_device_math("residual_apply", u, W.cpu()), "apply")


def test_cuda_ops_run_on_a_non_default_stream():
    u = make_updates(33, 5000, torch.float32, "normal", seed=1).cuda()
    want = [ops.trimmed_mean(u, 3), ops.residual_reweight(u)[1], ops.pairwise_sq_distances(u)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = [ops.trimmed_mean(u, 3), ops.residual_reweight(u)[1], ops.pairwise_sq_distances(u)]
    torch.cuda.current_stream().wait_stream(side)
    for g, w in zip(got, want):
        _same(g, w, "side stream")


def test_cuda_ops_can_be_captured_in_a_graph():
    u = make_updates(20, 4000, torch.float32, "normal", seed=2).cuda()
    w = torch.rand(20, device="cuda") + 0.5
    calls = [lambda: ops.sign_vote(u, w), lambda: ops.robust_lr_mean(u, 4), lambda: ops.median(u),
             lambda: ops.trimmed_mean(u, 2), lambda: ops.masked_trimmed_mean(u, 0.3, 2),
             lambda: ops.residual_reweight(u)[1], lambda: ops.pairwise_stats(u)[0],
             lambda: ops.cosine_similarity(u)]
    want = [c() for c in calls]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up on the capture stream (allocator pools)
        for c in calls:
            c()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = [c() for c in calls]
    graph.replay()
    torch.cuda.synchronize()
    for g, wnt in zip(outs, want):
        _same(g, wnt, "graph replay")


def test_cuda_ops_under_torch_compile():
    u = make_updates(12, 1000, torch.float32, "normal", seed=4).cuda()
    f = torch.compile(lambda x: (ops.median(x), ops.pairwise_sq_distances(x), ops.residual_reweight(x)[1]),
                      backend="eager")
    for g, w in zip(f(u), (ops.median(u), ops.pairwise_sq_distances(u), ops.residual_reweight(u)[1])):
        _same(g, w, "compiled")


def test_cuda_ops_follow_the_tensors_device_index():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    u = make_updates(7, 500, torch.float32, "normal", seed=5)
    got = ops.trimmed_mean(u.to("cuda:1"), 2)
    assert got.device == torch.device("cuda:1")
    _same(got, ops.trimmed_mean(u, 2), "cuda:1")


PARAMS = {"krum": {"f": 2}, "multikrum": {"f": 2}, "bulyan": {"f": 2}, "trimmed_mean": {"trim": 2},
          "rlr": {"threshold": 4}, "noise": {"seed": 0}}


@pytest.mark.parametrize("name", A.available())
def test_every_rule_runs_on_cuda_tensors_with_the_cpu_result(name):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(12, 300, generator=g)
    u[:2] += 5.0
    want = A.get(name, **PARAMS.get(name, {}))(u)
    got = A.get(name, **PARAMS.get(name, {}))(u.cuda())
    assert got.update.device.type == "cuda"
    if name == "noise":  # seeded noise is drawn on the input's device: same law, other numbers
        assert got.update.shape == want.update.shape
        return
    torch.testing.assert_close(got.update.cpu(), want.update, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.client_weights.cpu(), want.client_weights, rtol=1e-5, atol=1e-6)
