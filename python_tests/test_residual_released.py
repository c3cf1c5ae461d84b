"""Residual(variant="released") against a port of the authors' released code
(Fu et al., FedAvg/averaging.py: repeated_median + reweight_algorithm_restricted
+ IRLS_aggregation_split_restricted), batched over coordinates in float64."""
import pytest
import torch

import robustagg.aggregators as A
from common import make_updates


def _median_opt(x):
    x = x.sort()[0]
    n = x.shape[-1]
    return x[..., (n - 1) // 2] if n % 2 else (x[..., n // 2 - 1] + x[..., n // 2]) / 2.0


def _released_port(u, lam=2.0, thresh=0.1):
    y = u.t().double()                                   # [d, K]: models are columns there
    d, K = y.shape
    ys = y.sort()[0]
    yyj = ys.repeat(1, 1, K).reshape(d, K, K)
    yyi = yyj.transpose(-1, -2)
    xx = torch.arange(K, dtype=torch.float64)
    xxj = xx.repeat(d, K, 1)
    xxi = xxj.transpose(-1, -2)                          # their + eps vanishes in their float32
    diag = torch.diag(torch.full((K,), float("inf"), dtype=torch.float64)).repeat(d, 1, 1)
    slopes = ((yyi - yyj) / (xxi - xxj + diag) + diag).sort()[0]
    slopes = _median_opt(_median_opt(slopes[:, :, :-1]))
    intercepts = _median_opt(ys) - slopes * (K - 1) / 2.0
    X_pure = y.sort(stable=True)[1].sort()[1].double().unsqueeze(2)
    X = torch.cat((torch.ones(d, K, 1, dtype=torch.float64), X_pure), dim=-1)
    H = X @ torch.inverse(X.transpose(1, 2) @ X) @ X.transpose(1, 2)
    processed_H = torch.sqrt(1 - torch.diagonal(H, dim1=1, dim2=2))
    Kb = lam * (2.0 / K) ** 0.5
    line_y = intercepts[:, None] + slopes[:, None] * X_pure[..., 0]
    residual = y - line_y
    M = _median_opt(residual.abs().sort()[0][..., 1:])
    tau = 1.4826 * (1 + 5 / (K - 1)) * M + 1e-7
    e = residual / tau[:, None]
    reweight = processed_H / e * torch.clamp(e / processed_H, -Kb, Kb)
    reweight[reweight != reweight] = 1
    regulized = reweight * reweight.std(dim=1)[:, None]
    restricted = y * (reweight >= thresh) + line_y * (reweight < thresh)
    W = regulized.sum(0)
    W = (W / W.max()) ** 2
    weights = W / W.sum()
    return weights, (restricted * weights[None, :]).sum(1)


@pytest.mark.parametrize("K,d,seed", [(5, 200, 0), (10, 300, 1), (21, 150, 2)])
@pytest.mark.parametrize("delta", [0.1, 0.3])
def test_released_variant_reproduces_the_authors_code(K, d, seed, delta):
    u = make_updates(K, d, torch.float64, "normal", seed=seed)
    u[0] = u[0] * 8.0 + 3.0                              # one far client: clipped confidences, replacements
    u[1, : d // 2] += 5.0
    want_w, want_agg = _released_port(u, 2.0, delta)
    got = A.Residual(variant="released", delta=delta)(u)
    torch.testing.assert_close(got.client_weights, want_w, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got.update, want_agg, rtol=1e-9, atol=1e-12)
    paper = A.Residual(delta=delta)(u)                   # and the paper's version is a different rule
    assert not torch.allclose(paper.client_weights, got.client_weights)


def test_released_variant_is_validated_and_sharding_ready():
    with pytest.raises(ValueError, match="variant must be 'paper' or 'released'"):
        A.Residual(variant="authors")
    from robustagg import reference
    u = make_updates(9, 400, torch.float64, "normal", seed=4)
    W = reference.released_residual_client_sums(u[:, :150]) + reference.released_residual_client_sums(u[:, 150:])
    torch.testing.assert_close(W, reference.released_residual_client_sums(u), rtol=1e-12, atol=1e-12)
