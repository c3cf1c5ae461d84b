"""Pure-PyTorch references of every op in :mod:`robustagg.ops`.

These are the oracles of the tests and the baselines of the benchmarks: what a
careful user would write with vectorised torch calls (``torch.sort``, chunked
broadcasting), with the same semantics as the native kernels (NaN sorted last,
midpoint medians, sgn(0) = 0, float64 arithmetic where the kernels use it).
Shapes and arguments are validated by :mod:`robustagg.ops`; these functions
assume valid input.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

__all__ = [
    "sign_vote",
    "robust_lr_mean",
    "trimmed_mean",
    "median",
    "masked_trimmed_mean",
    "closest_to_median_mean",
    "repeated_median_line",
    "residual_reweight",
    "residual_client_sums",
    "sq_distances_to",
    "residual_apply",
    "pairwise_sq_distances",
    "cosine_similarity",
    "gram",
]

# Elements of the largest temporary a reference builds per chunk ([K, K, chunk]).
_CHUNK_ELEMENTS = 1 << 23


def _value_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _values(updates: torch.Tensor) -> torch.Tensor:
    """float32 (float16/bfloat16/float32 input) or float64 copy-free view of the values."""
    return updates.detach().to(_value_dtype(updates.dtype))


def _sgn(u: torch.Tensor) -> torch.Tensor:
    """+1 / -1 / 0, with 0 for zeros of either sign and for NaN."""
    return (u > 0).to(torch.int32) - (u < 0).to(torch.int32)


def _chunk(K: int, d: int, per_column: int) -> int:
    return max(1, min(d, _CHUNK_ELEMENTS // max(1, per_column)))


def _midpoint_median(sorted_values: torch.Tensor, dim: int) -> torch.Tensor:
    """Median of already sorted values along ``dim``: midpoint of the middle two for even n."""
    n = sorted_values.shape[dim]
    b = sorted_values.select(dim, n // 2)
    if n % 2 == 1:
        return b
    a, b = sorted_values.select(dim, (n - 1) // 2).double(), b.double()
    return torch.where(a == b, a, 0.5 * a + 0.5 * b)   # equal denormals: halving would round them


def scaled_weights(weights: torch.Tensor):
    """``(w * 2**-e, e)``: float64 weights scaled by the power of two that
    brings the largest into [0.5, 1) (exact). Sums of scaled weights cannot
    overflow (1e308 weights) and tiny ones keep their precision; the ops use
    weights only this way: a weighted mean is unchanged, a weighted vote is
    ``2**e`` times the scaled one (see :func:`unscaled`: it overflows only where
    its value does)."""
    import math
    w = weights.detach().to(torch.float64)
    top = float(w.max()) if w.numel() else 0.0
    if not (top > 0 and math.isfinite(top)):
        return w, 0
    e = math.frexp(top)[1]
    return _times_pow2(w, -e), e


def _times_pow2(t: torch.Tensor, e: int) -> torch.Tensor:
    """``t * 2**e`` in float64, in two exact steps (2**1024 itself is not a float64)."""
    import math
    half = e // 2
    return t.to(torch.float64) * math.ldexp(1.0, half) * math.ldexp(1.0, e - half)


def unscaled(votes: torch.Tensor, e: int) -> torch.Tensor:
    """A vote of scaled weights back at the weights' scale, in the vote's dtype."""
    return votes if e == 0 else _times_pow2(votes, e).to(votes.dtype)


def sign_vote(updates: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    s = _sgn(_values(updates))
    if weights is None:
        return s.sum(0, dtype=torch.int32)
    w, e = scaled_weights(weights)
    return unscaled((w[:, None] * s.double()).sum(0), e).to(_value_dtype(updates.dtype))


def robust_lr_mean(updates: torch.Tensor, threshold: float,
                   weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    u = _values(updates)
    u64 = u.double()
    if weights is None:
        mean = u64.mean(0)
    else:
        w, _ = scaled_weights(weights)
        mean = (w[:, None] * u64).sum(0) / w.sum()
    votes = _sgn(u).sum(0).abs().double()
    out = torch.where(votes >= threshold, mean, -mean)
    return out.to(_value_dtype(updates.dtype)).to(updates.dtype)


def trimmed_mean(updates: torch.Tensor, trim: int) -> torch.Tensor:
    K = updates.shape[0]
    s = torch.sort(_values(updates), dim=0).values
    kept = s[trim:K - trim].double()
    return (kept.sum(0) / (K - 2 * trim)).to(_value_dtype(updates.dtype)).to(updates.dtype)


def median(updates: torch.Tensor) -> torch.Tensor:
    s = torch.sort(_values(updates), dim=0).values
    return _midpoint_median(s, 0).to(_value_dtype(updates.dtype)).to(updates.dtype)


def masked_trimmed_mean(updates: torch.Tensor, tau: float, trim: int) -> torch.Tensor:
    K = updates.shape[0]
    tm = trimmed_mean(updates, trim)
    consistency = _sgn(_values(updates)).sum(0).abs().double() / K
    return torch.where(consistency >= tau, tm, torch.zeros_like(tm))


def closest_to_median_mean(updates: torch.Tensor, trim: int) -> torch.Tensor:
    """Bulyan's coordinate step: the mean of the ``K - 2 trim`` values nearest
    the median; in sorted order a window ``s[j : j + keep]`` with ``j`` the
    number of ``p < 2 trim`` where ``m - s[p] > s[p + keep] - m`` (a tie keeps
    the lower value). NaN sorts last."""
    K = updates.shape[0]
    keep = K - 2 * trim
    s = torch.sort(_values(updates), dim=0).values.double()
    m = _midpoint_median(s, 0).double()
    first = ((m - s[:K - keep]) > (s[keep:] - m)).sum(0)
    rows = first[None, :] + torch.arange(keep, device=s.device)[:, None]
    out = torch.gather(s, 0, rows).sum(0) / keep
    return out.to(_value_dtype(updates.dtype)).to(updates.dtype)


def _repeated_median_chunk(y: torch.Tensor, intercept: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Siegel line of sorted float64 columns y [K, c] on ranks 0..K-1."""
    K, c = y.shape
    if K == 1:
        return torch.zeros_like(y[0]), y[0].clone()
    x = torch.arange(K, dtype=torch.float64, device=y.device)
    # Index of the K-1 partners j != i of each i.
    partners = torch.arange(K, device=y.device).expand(K, K)
    partners = partners[~torch.eye(K, dtype=torch.bool, device=y.device)].view(K, K - 1)
    xi, xj = x[:, None], x[partners]                           # [K, 1], [K, K-1]
    yi, yj = y[:, None, :], y[partners]                         # [K, 1, c], [K, K-1, c]
    dx = (xj - xi)[:, :, None]
    slopes = (yj - yi) / dx                                     # eq. (1)
    slope = _midpoint_median(torch.sort(_midpoint_median(torch.sort(slopes, 1).values, 1), 0).values, 0)
    if intercept == "median":
        icpt = _midpoint_median(y, 0) - slope * (0.5 * (K - 1))
    else:
        pts = (xj[:, :, None] * yi - xi[:, :, None] * yj) / dx  # eq. (2)
        icpt = _midpoint_median(torch.sort(_midpoint_median(torch.sort(pts, 1).values, 1), 0).values, 0)
    return slope, icpt


def repeated_median_line(updates: torch.Tensor, intercept: str = "siegel") -> Tuple[torch.Tensor, torch.Tensor]:
    u = updates.detach().double()
    K, d = u.shape
    slope = torch.empty(d, dtype=torch.float64, device=u.device)
    icpt = torch.empty_like(slope)
    step = _chunk(K, d, 2 * K * K)
    for c0 in range(0, d, step):
        y = torch.sort(u[:, c0:c0 + step], dim=0).values
        slope[c0:c0 + step], icpt[c0:c0 + step] = _repeated_median_chunk(y, intercept)
    bad = ~torch.isfinite(u).all(0)
    slope[bad] = math.nan
    icpt[bad] = math.nan
    out = _value_dtype(updates.dtype)
    return slope.to(out).to(updates.dtype), icpt.to(out).to(updates.dtype)


def _residual_chunks(u: torch.Tensor, lam: float, delta: float, intercept: str, released: bool = False):
    """Steps 1-6 of Algorithm 1 over column chunks of ``u`` (float64, K >= 3).

    Yields ``(cols, finite, perm, y_corr, contrib)`` per chunk: the client of each
    rank, the corrected values in rank order (eq. 9) and each rank's share of the
    client sums W (eq. 10), zero in non-finite columns.

    ``released``: the authors' released code instead of the paper (Fu et al.,
    ``reweight_algorithm_restricted``): the residual scale is the median of the
    K - 1 largest |r|, plus 1e-7; sigma and W use the confidences before the
    delta cut; a value is replaced by the line where its confidence is below
    delta (the paper: at or below). The caller passes intercept="median".
    """
    K, d = u.shape
    x = torch.arange(K, dtype=torch.float64, device=u.device)
    xbar = 0.5 * (K - 1)
    sxx = K * (K * K - 1.0) / 12.0
    s = torch.sqrt(1.0 - (1.0 / K + (x - xbar) ** 2 / sxx))[:, None]  # sqrt(1 - h) per rank
    Z = lam * math.sqrt(2.0 / K)
    tau_scale = 1.4826 * (1.0 + 5.0 / (K - 1))
    finite_all = torch.isfinite(u).all(0)
    step = _chunk(K, d, 2 * K * K)
    for c0 in range(0, d, step):
        cols = slice(c0, c0 + step)
        finite = finite_all[cols]
        block = torch.where(finite, u[:, cols], torch.zeros_like(u[:, cols]))
        y, perm = torch.sort(block, dim=0, stable=True)  # rank -> client, ties by client index
        b1, b0 = _repeated_median_chunk(y, intercept)
        line = b0 + b1 * x[:, None]
        r = y - line
        if released:
            tau = tau_scale * _midpoint_median(torch.sort(r.abs(), 0).values[1:], 0) + 1e-7
        else:
            tau = tau_scale * _midpoint_median(torch.sort(r.abs(), 0).values, 0)
        az = ((r / tau) / s).abs()
        w = torch.where(az <= Z, torch.ones_like(r), Z / az)
        w = torch.where(r == 0, torch.ones_like(w), w)
        if released:
            y_corr = torch.where(w < delta, line, y)
        else:
            w = torch.where(w <= delta, torch.zeros_like(w), w)       # eq. (8)
            y_corr = torch.where(w == 0, line, y)                      # eq. (9)
        sigma = w.std(0, unbiased=True)
        contrib = torch.where(finite, w * sigma, torch.zeros_like(w))
        yield cols, finite, perm, y_corr, contrib


def _residual_client_weights(W: torch.Tensor, power: float) -> torch.Tensor:
    """eq. (11) with a power; uniform when every W is 0 (or the sum overflows)."""
    Wp = W ** power
    total = Wp.sum()
    if total > 0 and torch.isfinite(total):
        return Wp / total
    return torch.full_like(W, 1.0 / W.numel())


def residual_reweight(updates: torch.Tensor, lam: float = 2.0, delta: float = 0.1,
                      power: float = 1.0, intercept: str = "siegel") -> Tuple[torch.Tensor, torch.Tensor]:
    u = updates.detach().double()
    K, d = u.shape
    out_dtype = _value_dtype(updates.dtype)
    if K < 3:
        cw = torch.full((K,), 1.0 / K, dtype=torch.float64, device=u.device)
        return cw.to(out_dtype), u.mean(0).to(out_dtype).to(updates.dtype)

    W = torch.zeros(K, dtype=torch.float64, device=u.device)
    corrected = u.clone()  # K x d is fine for a reference
    for cols, finite, perm, y_corr, contrib in _residual_chunks(u, lam, delta, intercept):
        W.index_add_(0, perm.flatten(), contrib.flatten())            # eq. (10)
        unsorted = torch.empty_like(y_corr).scatter_(0, perm, y_corr)
        corrected[:, cols] = torch.where(finite, unsorted, u[:, cols])

    cw = _residual_client_weights(W, power)
    agg = (cw[:, None] * corrected).sum(0)
    return cw.to(out_dtype), agg.to(out_dtype).to(updates.dtype)


def _client_sums(updates, lam, delta, intercept, released=False) -> torch.Tensor:
    u = updates.detach().double()
    W = torch.zeros(u.shape[0], dtype=torch.float64, device=u.device)
    if u.shape[0] < 3:
        return W
    for _, _, perm, _, contrib in _residual_chunks(u, lam, delta, intercept, released):
        W.index_add_(0, perm.flatten(), contrib.flatten())
    return W


def _apply(updates, cw_of, lam, delta, intercept, released=False):
    """``(client_weights, aggregate)`` over these coordinates, the weights from ``cw_of()``."""
    u = updates.detach().double()
    K = u.shape[0]
    out_dtype = _value_dtype(updates.dtype)
    if K < 3:
        cw = torch.full((K,), 1.0 / K, dtype=torch.float64, device=u.device)
        return cw.to(out_dtype), u.mean(0).to(out_dtype).to(updates.dtype)
    cw = cw_of()
    agg = torch.empty(u.shape[1], dtype=torch.float64, device=u.device)
    for cols, finite, perm, y_corr, _ in _residual_chunks(u, lam, delta, intercept, released):
        w_rank = cw[perm]                                              # each rank's client weight
        agg[cols] = torch.where(finite, (w_rank * y_corr).sum(0), (cw[:, None] * u[:, cols]).sum(0))
    return cw.to(out_dtype), agg.to(out_dtype).to(updates.dtype)


def residual_client_sums(updates: torch.Tensor, lam: float = 2.0, delta: float = 0.1,
                         intercept: str = "siegel") -> torch.Tensor:
    """The client sums W of eq. (10) over these coordinates only (``[K]``, float64;
    zeros for K < 3). W is additive over coordinates, so the sums of coordinate
    shards add up to the W of the whole update."""
    return _client_sums(updates, lam, delta, intercept)


def residual_apply(updates: torch.Tensor, client_sums: torch.Tensor, lam: float = 2.0, delta: float = 0.1,
                   power: float = 1.0, intercept: str = "siegel") -> Tuple[torch.Tensor, torch.Tensor]:
    """eq. (11) from given client sums, then ``sum_k client_weights_k * y_k(corrected)``
    over these coordinates: ``(client_weights [K], aggregate [d])``."""
    return _apply(updates, lambda: _residual_client_weights(client_sums.detach().to(torch.float64), power),
                  lam, delta, intercept)


def released_residual_client_sums(updates: torch.Tensor, lam: float = 2.0, delta: float = 0.1) -> torch.Tensor:
    """W of the authors' released residual reweighting (see ``_residual_chunks``)
    over these coordinates: ``[K]`` float64, additive over coordinate shards."""
    return _client_sums(updates, lam, delta, "median", released=True)


def released_residual_apply(updates: torch.Tensor, client_sums: torch.Tensor, lam: float = 2.0,
                            delta: float = 0.1) -> Tuple[torch.Tensor, torch.Tensor]:
    """The released code's weights ``W^2 / sum W^2`` and its aggregate of the
    corrected values over these coordinates: ``(client_weights [K], aggregate [d])``."""
    def cw_of():
        W = client_sums.detach().to(torch.float64)
        top = W.max()
        return _residual_client_weights(W / top if top > 0 else W, 2.0)   # the release scales by the max first
    return _apply(updates, cw_of, lam, delta, "median", released=True)


def pairwise_sq_distances(updates: torch.Tensor) -> torch.Tensor:
    u = updates.detach().double()
    K, d = u.shape
    out = torch.zeros(K, K, dtype=torch.float64, device=u.device)
    step = _chunk(K, d, K * K)
    for c0 in range(0, d, step):
        blk = u[:, c0:c0 + step]
        out += ((blk[:, None, :] - blk[None, :, :]) ** 2).sum(-1)
    out.fill_diagonal_(0.0)      # a client is at distance 0 from itself, even a non-finite one
    return out.to(_value_dtype(updates.dtype))


def sq_distances_to(updates: torch.Tensor, point=None) -> torch.Tensor:
    """``sum_n (u[k, n] - point[n])**2`` per client in float64 (squared norms without a point)."""
    u = updates.detach().double()
    K, d = u.shape
    out = torch.zeros(K, dtype=torch.float64, device=u.device)
    step = _chunk(K, d, K)
    for c0 in range(0, d, step):
        blk = u[:, c0:c0 + step]
        if point is not None:
            blk = blk - point.detach().double()[c0:c0 + step]
        out += (blk * blk).sum(1)
    return out


def gram(updates: torch.Tensor) -> torch.Tensor:
    u = updates.detach().double()
    return (u @ u.T).to(_value_dtype(updates.dtype))


def cosine_similarity(updates: torch.Tensor) -> torch.Tensor:
    u = updates.detach().double()
    finite = torch.isfinite(u).all(1)
    u = u * _row_scales(u)[:, None]     # cosine does not depend on a row's scale: no overflow at 1e+-200
    g = u @ u.T
    n = torch.diagonal(g)
    denom = torch.sqrt(n[:, None] * n[None, :])
    cos = torch.where((n[:, None] > 0) & (n[None, :] > 0), g / denom, torch.zeros_like(g)).clamp(-1.0, 1.0)
    cos = torch.where(finite[:, None] & finite[None, :], cos, torch.full_like(cos, float("nan")))
    return cos.to(_value_dtype(updates.dtype))


def _row_scales(u: torch.Tensor) -> torch.Tensor:
    """Per row, the power of two that brings its largest magnitude into [0.5, 1)
    where that magnitude is beyond 2^+-400 (1 elsewhere, and for zero or
    non-finite rows): squares and products of the scaled rows stay in range."""
    m = torch.linalg.vector_norm(u.double(), float("inf"), dim=1)
    _, e = torch.frexp(m)
    far = (m > 0) & torch.isfinite(m) & (e.abs() > 400)
    return torch.where(far, torch.ldexp(torch.ones_like(m), -e), torch.ones_like(m))
