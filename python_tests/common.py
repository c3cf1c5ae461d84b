"""Shared test helpers: dtypes, devices, the CUDA marker and input generators."""
import pytest
import torch

FLOAT_DTYPES = [torch.float32, torch.float64]
HALF_DTYPES = [torch.float16, torch.bfloat16]
HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

KINDS = ["normal", "ties", "equal_columns", "signed_zeros"]


def make_updates(K, d, dtype=torch.float32, kind="normal", seed=0, device="cpu"):
    """[K, d] client updates of a given flavour, reproducible from `seed`.

    normal: N(0, 1). ties: integers in [-2, 2] (many exact ties and zeros).
    equal_columns: every client equal in each column. signed_zeros: a mix of
    +0.0, -0.0 and a few +-1 values.
    """
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        u = torch.randn(K, d, generator=g, dtype=torch.float64)
    elif kind == "ties":
        u = torch.randint(-2, 3, (K, d), generator=g).to(torch.float64)
    elif kind == "equal_columns":
        u = torch.randn(1, d, generator=g, dtype=torch.float64).expand(K, d).clone()
    elif kind == "signed_zeros":
        choice = torch.randint(0, 4, (K, d), generator=g)
        u = torch.zeros(K, d, dtype=torch.float64)
        u[choice == 1] = -0.0
        u[choice == 2] = 1.0
        u[choice == 3] = -1.0
    else:
        raise ValueError(kind)
    return u.to(dtype).to(device)


def assert_close(actual, expected, dtype, msg=""):
    if isinstance(actual, tuple):
        for a, e in zip(actual, expected):
            assert_close(a, e, dtype, msg)
        return
    tol = {torch.float64: (1e-9, 1e-12), torch.float32: (1e-5, 1e-6),
           torch.float16: (2e-3, 1e-3), torch.bfloat16: (2e-2, 1e-2)}[dtype]
    if actual.dtype == torch.int32:
        assert torch.equal(actual, expected), msg
        return
    torch.testing.assert_close(actual, expected, rtol=tol[0], atol=tol[1], equal_nan=True,
                               msg=lambda m: f"{msg}: {m}")


def assert_pairwise_stats_contract(got, u, msg=""):
    """``ops.pairwise_stats``' accuracy contract against a float64 computation:
    float64 input ~1e-12 relative; float32/16/bf16 input (float blocks)
    distances within 1e-6 relative and Gram entries within 1e-6 |u_i| |u_j|."""
    from robustagg import reference
    dist, gram = got
    x = u.double()
    want_d, want_g = reference.pairwise_sq_distances(x), reference.gram(x)
    if u.dtype == torch.float64:
        assert_close((dist, gram), (want_d, want_g), torch.float64, msg)
        return
    assert dist.dtype == gram.dtype == torch.float64, msg
    norms = torch.diagonal(want_g).sqrt()
    assert ((dist - want_d).abs() <= 1e-6 * want_d).all(), f"{msg}: distances beyond 1e-6 relative"
    assert ((gram - want_g).abs() <= 1e-6 * norms[:, None] * norms[None, :]).all(), f"{msg}: Gram beyond 1e-6 |a||b|"
