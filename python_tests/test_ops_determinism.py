"""Bitwise determinism across thread counts and runs; opcheck and torch.compile; fork."""
import hashlib

import pytest
import torch

from robustagg import ops
from common import make_updates

CASES = [
    ("sign_vote", ()), ("robust_lr_mean", (3,)), ("trimmed_mean", (4,)), ("median", ()),
    ("masked_trimmed_mean", (0.3, 2)), ("repeated_median_line", ()), ("residual_reweight", ()),
    ("pairwise_sq_distances", ()), ("cosine_similarity", ()), ("residual_client_sums", ()),
    ("pairwise_stats", ()), ("robust_lr_mean_counted", (3,)), ("sq_distances_to", ()),
    ("closest_to_median_mean", (2,)),
]


@pytest.fixture
def restore_threads():
    yield
    ops.set_num_threads(None)


@pytest.mark.parametrize("name,args", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_results_are_bitwise_identical_for_1_2_and_3_threads(name, args, dtype, restore_threads):
    d = 20_000 if name.startswith(("repeated_median", "residual")) else 200_003
    u = make_updates(17, d, dtype, "normal", seed=1)
    results = []
    for threads in (1, 2, 3, 2):
        ops.set_num_threads(threads)
        out = getattr(ops, name)(u, *args)
        results.append(out if isinstance(out, tuple) else (out,))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a.view(torch.uint8) if a.is_floating_point() else a,
                               b.view(torch.uint8) if b.is_floating_point() else b)


OPCHECK_CASES = [
    ("sign_vote", lambda u: (u,)), ("sign_vote", lambda u: (u, torch.rand(u.shape[0], dtype=u.dtype) + 0.1)),
    ("robust_lr_mean", lambda u: (u, 2.0)), ("robust_lr_mean", lambda u: (u, 2.0, torch.ones(u.shape[0], dtype=u.dtype))),
    ("trimmed_mean", lambda u: (u, 1)), ("median", lambda u: (u,)),
    ("masked_trimmed_mean", lambda u: (u, 0.5, 1)), ("closest_to_median_mean", lambda u: (u, 1)),
    ("repeated_median_line", lambda u: (u, "siegel")),
    ("repeated_median_line", lambda u: (u, "median")), ("residual_reweight", lambda u: (u, 2.0, 0.1, 1.0, "siegel")),
    ("pairwise_sq_distances", lambda u: (u,)), ("cosine_similarity", lambda u: (u,)),
    ("pairwise_stats", lambda u: (u,)), ("pairwise_stats", lambda u: (u, False, True)),
    ("residual_client_sums", lambda u: (u, 2.0, 0.1, "siegel")),
    ("robust_lr_mean_counted", lambda u: (u, 2.0)), ("sq_distances_to", lambda u: (u,)),
    ("sq_distances_to", lambda u: (u, u[1].clone())),
    ("residual_apply", lambda u: (u, torch.rand(u.shape[0], dtype=torch.float64), 2.0, 0.1, 1.0, "siegel")),
]


@pytest.mark.parametrize("name,make_args", OPCHECK_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(name, make_args, dtype):
    u = make_updates(6, 33, dtype, "normal", seed=2)
    torch.library.opcheck(getattr(torch.ops.robustagg, name).default, make_args(u))


def test_ops_work_inside_torch_compile_fullgraph():
    def f(u):
        a = ops.trimmed_mean(u, 1) + ops.median(u) + ops.robust_lr_mean(u, 2.0)
        w, agg = ops.residual_reweight(u)
        return a + agg + ops.masked_trimmed_mean(u, 0.5, 1), ops.pairwise_sq_distances(u) + ops.cosine_similarity(u), w, ops.sign_vote(u)

    u = make_updates(5, 40, torch.float32, "normal", seed=3)
    compiled = torch.compile(f, fullgraph=True, backend="eager")
    for got, want in zip(compiled(u), f(u)):
        assert torch.equal(got, want)


def test_ops_accept_inputs_that_require_grad_and_return_results_that_do_not():
    u = make_updates(5, 40, torch.float32, "normal", seed=3).requires_grad_()
    w = torch.ones(5, requires_grad=True)
    outs = [ops.median(u), ops.sign_vote(u, w), *ops.residual_reweight(u), ops.pairwise_stats(u)[0]]
    assert outs[0].shape == (40,)
    assert not any(o.requires_grad for o in outs)
    with pytest.raises(RuntimeError, match="does not require grad"):
        outs[0].sum().backward()


_FORK_INPUT = make_updates(9, 300_000, torch.float32, "normal", seed=5)


def _median_in_child(queue):
    # Only robustagg's kernel runs in the child: torch's own OpenMP pool is not
    # fork-safe (its parallel ops hang in a child forked after they ran).
    queue.put(hashlib.sha256(ops.median(_FORK_INPUT).numpy().tobytes()).hexdigest())


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_kernels_run_in_a_forked_child_after_the_pool_started(restore_threads):
    import multiprocessing
    ops.set_num_threads(2)
    want = hashlib.sha256(ops.median(_FORK_INPUT).numpy().tobytes()).hexdigest()  # the pool has started
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_median_in_child, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("the child hung: the thread pool did not survive fork")
    assert child.exitcode == 0 and queue.get(timeout=5) == want
