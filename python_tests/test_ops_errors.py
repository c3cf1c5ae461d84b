"""Bad input gets a clear ValueError/TypeError naming the argument and the bound."""
import os

import pytest
import torch

from robustagg import ops

U = torch.randn(5, 8)

ALL_OPS = [
    ("sign_vote", ()), ("robust_lr_mean", (2,)), ("trimmed_mean", (1,)), ("median", ()),
    ("masked_trimmed_mean", (0.5, 1)), ("repeated_median_line", ()), ("residual_reweight", ()),
    ("pairwise_sq_distances", ()), ("cosine_similarity", ()), ("pairwise_stats", ()), ("residual_client_sums", ()),
    ("residual_apply", (torch.ones(5, dtype=torch.float64),)), ("robust_lr_mean_counted", (2,)),
    ("sq_distances_to", ()), ("closest_to_median_mean", (1,)),
]


@pytest.mark.parametrize("name,args", ALL_OPS)
@pytest.mark.parametrize("bad,exc,words", [
    (torch.randn(8), ValueError, "shape [K, d]"),
    (torch.randn(2, 3, 4), ValueError, "shape [K, d]"),
    (torch.randn(0, 4), ValueError, "K >= 1"),
    (torch.randn(4, 0), ValueError, "d >= 1"),
    (torch.ones(4, 3, dtype=torch.int64), TypeError, "float32, float64"),
    (torch.ones(4, 3, dtype=torch.bool), TypeError, "float32, float64"),
    ([[1.0, 2.0]], TypeError, "torch.Tensor"),
])
def test_malformed_updates_raise_naming_updates(name, args, bad, exc, words):
    if name in ("trimmed_mean", "masked_trimmed_mean", "closest_to_median_mean") and isinstance(bad, torch.Tensor) and bad.dim() == 2 and bad.shape[0] == 0:
        args = args[:-1] + (0,)
    with pytest.raises(exc) as info:
        getattr(ops, name)(bad, *args)
    assert "updates" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("name", ["sign_vote", "robust_lr_mean"])
@pytest.mark.parametrize("weights,exc,words", [
    (torch.ones(4), ValueError, "shape [K] = [5]"),
    (torch.ones(5, 1), ValueError, "shape [K] = [5]"),
    (torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0]), ValueError, "non-negative"),
    (torch.zeros(5), ValueError, "not be all zero"),
    (torch.tensor([1.0, float("nan"), 1.0, 1.0, 1.0]), ValueError, "finite"),
    ([1.0] * 5, TypeError, "torch.Tensor"),
])
def test_bad_weights_raise_naming_weights(name, weights, exc, words):
    args = (U, 2, weights) if name == "robust_lr_mean" else (U, weights)
    with pytest.raises(exc) as info:
        getattr(ops, name)(*args)
    assert "weights" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("trim", [-1, 3, 5, 100])
def test_trim_out_of_range_states_the_bound(trim):
    with pytest.raises(ValueError, match=r"2\*trim < K = 5; got trim=" + str(trim)):
        ops.trimmed_mean(U, trim)
    with pytest.raises(ValueError, match="trim"):
        ops.masked_trimmed_mean(U, 0.5, trim)
    with pytest.raises(ValueError, match=r"closest_to_median_mean: .*2\*trim < K = 5; got trim=" + str(trim)):
        ops.closest_to_median_mean(U, trim)


def test_trim_must_be_an_int():
    with pytest.raises(TypeError, match="trim must be an int"):
        ops.trimmed_mean(U, 1.5)


@pytest.mark.parametrize("tau", [-0.1, 1.01, float("nan"), float("inf")])
def test_tau_outside_unit_interval_is_rejected(tau):
    with pytest.raises(ValueError, match=r"tau must be in \[0.0, 1.0\]"):
        ops.masked_trimmed_mean(U, tau, 1)


@pytest.mark.parametrize("threshold", [-1, float("nan"), float("inf")])
def test_negative_or_non_finite_threshold_is_rejected(threshold):
    with pytest.raises(ValueError, match="threshold must be in"):
        ops.robust_lr_mean(U, threshold)


@pytest.mark.parametrize("kwargs,words", [
    ({"lam": 0.0}, "lam must be in (0.0"), ({"lam": -1.0}, "lam must be in (0.0"),
    ({"delta": -0.1}, "delta must be in [0.0, 1.0]"), ({"delta": 1.5}, "delta must be in [0.0, 1.0]"),
    ({"power": 0.0}, "power must be in (0.0"), ({"intercept": "ols"}, "'siegel' or 'median'"),
])
def test_residual_reweight_parameters_are_checked(kwargs, words):
    with pytest.raises(ValueError) as info:
        ops.residual_reweight(U, **kwargs)
    assert words in str(info.value)


@pytest.mark.parametrize("sums,exc,words", [
    (torch.ones(4, dtype=torch.float64), ValueError, "client_sums must have shape [K] = [5]"),
    (torch.ones(5, dtype=torch.int64), TypeError, "client_sums must be a floating tensor"),
    ([1.0] * 5, TypeError, "client_sums must be a torch.Tensor"),
])
def test_residual_apply_checks_client_sums(sums, exc, words):
    with pytest.raises(exc) as info:
        ops.residual_apply(U, sums)
    assert words in str(info.value)


def test_repeated_median_line_rejects_unknown_intercept():
    with pytest.raises(ValueError, match="intercept must be 'siegel' or 'median'; got 'mean'"):
        ops.repeated_median_line(U, intercept="mean")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_weights_on_another_device_are_rejected():
    with pytest.raises(ValueError, match="same device"):
        ops.sign_vote(U, torch.ones(5, device="cuda"))


@pytest.mark.parametrize("name,args", ALL_OPS)
@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -float("inf"), 3e38])
def test_non_finite_and_huge_values_never_crash(name, args, poison):
    u = torch.randn(7, 300)
    u[2, ::3] = poison
    if name == "residual_apply":
        args = (torch.ones(7, dtype=torch.float64),)
    out = getattr(ops, name)(u, *args)
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        if o.dim() == 0:      # robust_lr_mean_counted's count of flipped coordinates
            assert o.dtype == torch.int64 and 0 <= int(o) <= 300
        else:
            assert o.shape[-1] in (300, 7)


def test_set_num_threads_validates():
    with pytest.raises(ValueError, match="positive int"):
        ops.set_num_threads(0)


def test_set_num_threads_is_bounded_by_4_per_cpu(monkeypatch):
    bound = 4 * (os.cpu_count() or 1)
    assert ops.MAX_THREADS == bound
    with pytest.raises(ValueError, match=f"n must be at most {bound} \\(4 per CPU"):
        ops.set_num_threads(30000)
    try:
        ops.set_num_threads(bound)
        assert ops.get_num_threads() == bound
    finally:
        ops.set_num_threads(None)
    # torch's own count is capped alike (the pool would keep that many threads for good)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 30000)
    assert ops.get_num_threads() == bound


def test_huge_python_ints_name_the_argument_and_its_bound():
    u = torch.randn(10, 5)
    with pytest.raises(ValueError, match=r"trim must satisfy 0 <= trim and 2\*trim < K = 10; got trim=2361183241434822606848"):
        ops.trimmed_mean(u, 2 ** 71)
    with pytest.raises(ValueError, match=r"trim must satisfy .* got trim=-1180591620717411303424"):
        ops.closest_to_median_mean(u, -2 ** 70)
    with pytest.raises(ValueError, match="robust_lr_mean: threshold must be a finite real number"):
        ops.robust_lr_mean(u, 10 ** 400)


def test_run_device_math_of_an_unknown_op_lists_the_ops():
    with pytest.raises(ValueError, match="unknown op 'nope'; the ops are closest_to_median_mean, .*trimmed_mean"):
        ops.run_device_math("nope", torch.randn(3, 4))


def test_sq_distances_to_names_a_bad_point():
    u = torch.randn(4, 6)
    with pytest.raises(ValueError, match=r"point must have shape \[d\] = \[6\]"):
        ops.sq_distances_to(u, torch.zeros(5))
    with pytest.raises(TypeError, match="point must have the dtype of updates"):
        ops.sq_distances_to(u, torch.zeros(6, dtype=torch.float64))
    with pytest.raises(TypeError, match="point must be a torch.Tensor of shape"):
        ops.sq_distances_to(u, [0.0] * 6)


def test_a_source_tree_without_the_native_module_says_so_and_what_to_do(tmp_path):
    # Python run in a checkout root imports that tree: there, without a build, _C is missing.
    import shutil
    import subprocess
    import sys

    import robustagg
    shutil.copytree(os.path.dirname(robustagg.__file__), tmp_path / "robustagg",
                    ignore=shutil.ignore_patterns("_C*", "__pycache__"))
    code = ("import robustagg, torch\n"
            "print(robustagg.native_info()['error'])\n"
            "try:\n    robustagg.ops.median(torch.ones(3, 2))\nexcept RuntimeError as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and "circular import" not in out.stdout
    for line in lines:
        assert f"robustagg._C is not built in {tmp_path / 'robustagg'}" in line and "pip install -e ." in line
