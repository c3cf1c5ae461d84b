"""Distance- and similarity-based rules: Krum, Multi-Krum, Bulyan, FoolsGold, RFLBAT.

They all start from the K x K matrices of one native pass over the updates
(``stats.pairwise``: squared distances or the Gram matrix, float64, only
what the rule asks for).
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List

import numpy as np
import torch

from .. import ops
from .base import (AggregationResult, Aggregator, check_positive_int, check_real, check_seed, none_excluded,
                   normalized, register, result_dtype)
from .mean import weighted_mean

__all__ = ["Krum", "MultiKrum", "Bulyan", "FoolsGold", "RFLBAT"]


def krum_scores(sqdist: torch.Tensor, f: int, neighbours: int = None) -> torch.Tensor:
    """score_i = sum of the n - f - 2 smallest squared distances to the others (Blanchard et al. 2017)."""
    n = sqdist.shape[0]
    m = n - f - 2 if neighbours is None else neighbours
    d = sqdist.clone()
    d.fill_diagonal_(float("inf"))
    return torch.topk(d, m, dim=1, largest=False).values.sum(1)


def mean_of_selected(u: torch.Tensor, w, selected) -> tuple:
    """Sample-count-weighted mean of the selected clients (uniform if their counts are all 0).

    Returns ``(update, client_weights [n], excluded [n])`` over all n clients;
    ``update`` is exactly ``sum_k client_weights[k] u_k`` (one native pass with
    zero weights for the others: no copy of the selected rows).
    """
    n = u.shape[0]
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[torch.as_tensor(selected, dtype=torch.long)] = True
    chosen = chosen.to(u.device)
    sel = chosen.nonzero().flatten()
    sw = None if w is None else torch.where(chosen, w, torch.zeros_like(w))
    if sw is None or not bool((sw > 0).any()):
        sw = chosen.to(torch.float64)
    cw = (sw / sw.sum()).to(result_dtype(u))
    if sel.numel() == 1:
        update = u[int(sel[0])].clone()
    else:
        update = weighted_mean(u, sw)
    return update, cw, ~chosen


def _check_krum(owner: str, n: int, f: int) -> None:
    if n <= 2 * f + 2:
        raise ValueError(f"{owner} needs n > 2f + 2; got n={n}, f={f}")


@register("multikrum")
class MultiKrum(Aggregator):
    """Multi-Krum (Blanchard et al. 2017; El Mhamdi et al. 2018).

    Each client's score is the sum of squared distances to its ``n - f - 2``
    nearest other clients; the ``m`` clients with the lowest scores are
    averaged (weighted by sample counts when given). Needs ``n > 2f + 2``.

    Args:
        f: assumed number of Byzantine clients (int >= 0).
        m: clients averaged (default ``n - f``; 1 is Krum).

    ``info``: ``scores`` (per client), ``selected`` (client ids).
    """

    selects_clients = True

    def __init__(self, *, f: int = 1, m=None):
        self.f = f
        self.m = m
        self._validate()

    @classmethod
    def told_attackers(cls, n, f, given):
        return {"f": max(0, min(f, (n - 3) // 2))}

    def _validate(self):
        check_positive_int(type(self).__name__, "f", self.f, minimum=0)
        if self.m is not None:
            check_positive_int(type(self).__name__, "m", self.m)

    def _m(self, n):
        return n - self.f if self.m is None else self.m

    def _aggregate(self, u, w, ids, stats):
        n = u.shape[0]
        _check_krum(type(self).__name__, n, self.f)
        m = self._m(n)
        if m > n:
            raise ValueError(f"{type(self).__name__}: m must be <= n; got m={m}, n={n}")
        sqdist = stats.pairwise(u, gram=False).sqdist
        scores = krum_scores(sqdist, self.f)
        # Stable order: equal scores keep client order, so the choice is reproducible.
        order = torch.sort(scores, stable=True).indices[:m]
        update, cw, excluded = mean_of_selected(u, w, order.sort().values)
        sel = (~excluded).nonzero().flatten()
        return AggregationResult(update, cw, excluded,
                                 {"scores": scores.tolist(), "selected": [ids[i] for i in sel.tolist()]})


@register("krum")
class Krum(MultiKrum):
    """Krum (Blanchard et al. 2017): the single update with the lowest Krum score.

    Args:
        f: assumed number of Byzantine clients; needs ``n > 2f + 2``.

    ``info``: ``scores``, ``selected``.

    Example:
        >>> Krum(f=1)(torch.tensor([[0.], [0.1], [0.2], [0.15], [50.]])).update   # n - f - 2 = 2 neighbours
        tensor([0.1500])
    """

    default_rank = 3

    def __init__(self, *, f: int = 1):
        super().__init__(f=f, m=1)


@register("bulyan")
class Bulyan(Aggregator):
    """Bulyan (El Mhamdi et al. 2018). Needs ``n >= 4f + 3``.

    1. Select ``theta = n - 2f`` clients by repeated Krum: each time, the client
       with the lowest Krum score among those not yet selected (scores over the
       remaining set with ``min(max(r - f - 2, f), r - 1)`` neighbours for r
       remaining: near the end r - f - 2 drops below f, and f colluders could
       then score 0 on each other alone; f neighbours always include an honest one).
    2. Per coordinate, average the ``beta = theta - 2f`` selected values closest to their median
       (:func:`robustagg.ops.closest_to_median_mean`; at equal distance the lower value is kept).

    Args:
        f: assumed number of Byzantine clients.

    ``info``: ``selected`` (client ids), ``beta``.
    """

    selects_clients = True

    def __init__(self, *, f: int = 1):
        self.f = f
        self._validate()

    @classmethod
    def told_attackers(cls, n, f, given):
        return {"f": max(0, min(f, (n - 3) // 4))}

    def _validate(self):
        check_positive_int("Bulyan", "f", self.f, minimum=0)

    def _aggregate(self, u, w, ids, stats):
        n, f = u.shape[0], self.f
        if n < 4 * f + 3:
            raise ValueError(f"Bulyan needs n >= 4f + 3; got n={n}, f={f}")
        theta, beta = n - 2 * f, n - 4 * f
        sqdist = stats.pairwise(u, gram=False).sqdist
        remaining = list(range(n))
        selected: List[int] = []
        for _ in range(theta):
            sub = sqdist[remaining][:, remaining]
            r = len(remaining)
            neighbours = min(max(r - f - 2, f, 1), r - 1)
            scores = krum_scores(sub, f, neighbours=neighbours) if r > 1 else torch.zeros(1, dtype=sub.dtype, device=sub.device)
            best = remaining[int(torch.sort(scores, stable=True).indices[0])]
            selected.append(best)
            remaining.remove(best)
        selected.sort()
        # The beta = theta - 2f values nearest the median, over column blocks of the
        # selected rows: a few MB gathered at a time instead of a [theta, d] copy.
        rows = torch.tensor(selected, device=u.device)
        update = torch.empty(u.shape[1], dtype=u.dtype, device=u.device)
        step = max(1, (1 << 22) // theta)
        for c0 in range(0, u.shape[1], step):
            update[c0:c0 + step] = ops.closest_to_median_mean(u[rows, c0:c0 + step], f)
        chosen = torch.zeros(n, dtype=torch.bool, device=u.device)
        chosen[selected] = True
        cw = torch.zeros(n, dtype=result_dtype(u), device=u.device)
        cw[chosen] = 1.0 / theta
        return AggregationResult(update, cw, ~chosen, {"selected": [ids[i] for i in selected], "beta": beta})


def _cosine_from_gram(gram: torch.Tensor) -> torch.Tensor:
    norms = torch.diagonal(gram)
    denom = torch.sqrt(norms[:, None] * norms[None, :])
    ok = (norms[:, None] > 0) & (norms[None, :] > 0)
    return torch.where(ok, gram / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(gram)).clamp(-1, 1)


#: Cosines this close to 1 count as 1 in FoolsGold (see foolsgold_weights).
COLLINEAR = 1e-6


def foolsgold_weights(cs: torch.Tensor) -> torch.Tensor:
    """FoolsGold's per-client learning rates from the cosine matrix of histories (authors' code).

    cs - I; pardoning; v = clip(1 - max_j cs_ij, 0, 1); v /= max v; v[v == 1] = 0.99;
    v = clip(ln(v / (1 - v)) + 0.5, 0, 1).
    """
    n = cs.shape[0]
    cs = cs.clone().double()
    # Near-collinear is collinear: a cosine within 1e-6 of 1 (the accuracy of a
    # float32 Gram) is 1, so that parallel histories are all treated alike
    # (rounding would otherwise single one out as the "most different").
    cs = torch.where(cs >= 1.0 - COLLINEAR, torch.ones_like(cs), cs)
    cs = cs - torch.eye(n, dtype=torch.float64, device=cs.device)
    maxcs = cs.max(dim=1).values if n > 1 else torch.zeros(1, dtype=torch.float64, device=cs.device)
    # pardoning: for i != j with maxcs_i < maxcs_j, cs_ij *= maxcs_i / maxcs_j
    pardon = (maxcs[:, None] < maxcs[None, :]) & ~torch.eye(n, dtype=torch.bool, device=cs.device)
    ratio = maxcs[:, None] / torch.where(maxcs[None, :] == 0, torch.ones_like(maxcs[None, :]), maxcs[None, :])
    cs = torch.where(pardon, cs * ratio, cs)
    v = (1.0 - cs.max(dim=1).values).clamp(0.0, 1.0) if n > 1 else torch.ones(1, dtype=torch.float64, device=cs.device)
    top = v.max()
    if top <= 0:
        return torch.zeros_like(v)
    v = v / top
    v = torch.where(v == 1.0, torch.full_like(v, 0.99), v)
    with torch.no_grad():
        logit = torch.log(v / (1.0 - v)) + 0.5
    logit = torch.where(torch.isinf(logit) & (logit > 0), torch.ones_like(logit), logit)
    return torch.nan_to_num(logit, nan=0.0, neginf=0.0).clamp(0.0, 1.0)


@register("foolsgold")
class FoolsGold(Aggregator):
    """FoolsGold (Fung, Yoon & Beschastnikh 2018/2020), as released by its authors.

    Keeps the sum of every client's past updates, keyed by client id:
    ``H_k += u_k``. Each round, over the participating clients, it takes the
    cosine similarities of their histories, pardons honest clients (scales
    ``cs_ij`` by ``max cs_i / max cs_j`` where ``max cs_i < max cs_j``), sets
    ``v_k = 1 - max_j cs_kj`` clipped to [0, 1], normalises by the max,
    applies the logit ``ln(v / (1 - v)) + 0.5`` clipped to [0, 1], and returns
    ``update = sum_k v_k u_k / K``. Sybils sending the same update get ``v ~ 0``.

    Stateful: pass ``client_ids`` so that histories follow clients across
    rounds with partial participation (default ids are positions 0..K-1).
    ``reset()`` clears the histories.

    ``info``: ``learning_rates`` (v per client), ``max_similarity`` (per client, before pardoning).
    """

    stateful = True
    selects_clients = True
    default_rank = 4

    def __init__(self):
        self._validate()
        self.reset()

    def reset(self):
        self._rows: Dict = {}           # client id -> its row of self._H
        self._H = None                  # [clients seen, d]: the summed updates

    def _histories(self, u, ids) -> torch.Tensor:
        """Adds this round's updates to the clients' histories (in place) and
        returns the histories of ``ids`` in order: the history matrix itself
        (no copy) when every known client takes part in its stored order."""
        if self._H is not None and (self._H.shape[1] != u.shape[1] or self._H.device != u.device
                                    or self._H.dtype != u.dtype):
            self.reset()                # a new model: histories start again
        new = [cid for cid in ids if cid not in self._rows]
        if new:
            start = 0 if self._H is None else self._H.shape[0]
            self._rows.update({cid: start + i for i, cid in enumerate(new)})
            grow = u.new_zeros(len(new), u.shape[1])
            self._H = grow if self._H is None else torch.cat([self._H, grow])
        rows = [self._rows[cid] for cid in ids]
        if rows == list(range(self._H.shape[0])):
            self._H.add_(u)
            return self._H
        idx = torch.tensor(rows, device=u.device)
        self._H.index_add_(0, idx, u)
        return self._H.index_select(0, idx)

    def _aggregate(self, u, w, ids, stats):
        n = u.shape[0]
        H = self._histories(u, ids)
        gram = stats.pairwise(H, sqdist=False).gram
        cs = _cosine_from_gram(gram)
        v = foolsgold_weights(cs)
        if float(v.sum()) > 0:
            update = weighted_mean(u, v) * (float(v.sum()) / n)
        else:
            update = torch.zeros(u.shape[1], dtype=u.dtype, device=u.device)
        maxcs = (cs - torch.eye(n, dtype=cs.dtype, device=cs.device)).max(1).values if n > 1 else torch.zeros(1)
        return AggregationResult(update, (v / n).to(result_dtype(u)).to(u.device), (v == 0).to(u.device),
                                 {"learning_rates": v.tolist(), "max_similarity": maxcs.tolist()})


def _sum_distances(points: np.ndarray) -> np.ndarray:
    diff = points[:, None, :] - points[None, :, :]
    return np.sqrt((diff ** 2).sum(-1)).sum(1)


def _outliers(points: np.ndarray, eps: float) -> np.ndarray:
    """RFLBAT lines 15-24: Gamma_i = sum_j ||p_i - p_j||, excluded where Gamma_i / median(Gamma) > eps."""
    if len(points) < 2:
        return np.zeros(len(points), dtype=bool)
    gamma = _sum_distances(points)
    med = float(np.median(gamma))
    if med <= 0:
        return np.zeros(len(points), dtype=bool)
    return gamma / med > eps


def _kmeans(points, k, seed, n_init):
    from sklearn.cluster import KMeans
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on duplicate points is expected here
        return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(points)


def gap_statistic_k(points: np.ndarray, max_k: int, references: int, seed: int, n_init: int = 3) -> int:
    """Number of clusters by the gap statistic (Tibshirani, Walther & Hastie 2001).

    Smallest k with Gap(k) >= Gap(k+1) - s_{k+1}, where Gap(k) = E*[log W*_k] - log W_k
    over ``references`` uniform samples in the points' bounding box (the points
    are PCA coordinates, so the box is aligned with the principal axes).
    """
    n = len(points)
    distinct = len(np.unique(np.round(points, 12), axis=0))
    max_k = max(1, min(max_k, distinct))
    if max_k == 1:
        return 1
    rng = np.random.default_rng(seed)
    lo, hi = points.min(0), points.max(0)
    refs = [rng.uniform(lo, hi, size=points.shape) for _ in range(references)]
    tiny = 1e-300
    gaps, sks = [], []
    for k in range(1, max_k + 1):
        wk = _kmeans(points, k, seed, n_init).inertia_
        ref_logs = np.array([math.log(max(_kmeans(r, k, seed, 1).inertia_, tiny)) for r in refs])
        gaps.append(ref_logs.mean() - math.log(max(wk, tiny)))
        sks.append(ref_logs.std() * math.sqrt(1.0 + 1.0 / references))
    for k in range(1, max_k):
        if gaps[k - 1] >= gaps[k] - sks[k]:
            return k
    return max_k


@register("rflbat")
class RFLBAT(Aggregator):
    """RFLBAT (Wang et al. 2022, Algorithm 1): PCA + KMeans + cosine selection.

    1. PCA of the updates to 2-D, from the K x K centred Gram matrix (no d-dimensional SVD).
    2. Exclude clients whose summed 2-D distance to the others, divided by the
       median of those sums, exceeds ``eps1``.
    3. KMeans on the rest, the number of clusters by the gap statistic (at most ``max_clusters``).
    4. In each cluster, each client's mean cosine similarity (of the original
       updates) to its cluster mates; the cluster's score is the median of
       those; select the cluster with the minimum score (backdoors are alike).
       A singleton cluster has no score and is selected only if every cluster is a singleton
       (then all survivors of step 2 are kept).
    5. Repeat step 2 inside the selected cluster with ``eps2``.
    6. FedAvg (sample counts) of the survivors.

    Args:
        eps1: first outlier threshold (paper: 10).
        eps2: second outlier threshold (paper: 4).
        max_clusters: upper bound of the gap statistic's search (10).
        gap_references: reference data sets of the gap statistic (B).
        seed: seeds KMeans and the references.

    ``info``: ``pca`` (2-D points), ``outliers_stage1``, ``labels`` (-1 for stage-1
    outliers), ``n_clusters``, ``cluster_scores``, ``selected_cluster``,
    ``outliers_stage2``, ``selected`` (client ids).
    """

    selects_clients = True
    default_rank = 7

    def __init__(self, *, eps1: float = 10.0, eps2: float = 4.0, max_clusters: int = 10,
                 gap_references: int = 10, seed: int = 0):
        self.eps1 = eps1
        self.eps2 = eps2
        self.max_clusters = max_clusters
        self.gap_references = gap_references
        self.seed = seed
        self._validate()

    def _validate(self):
        check_real("RFLBAT", "eps1", self.eps1, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_real("RFLBAT", "eps2", self.eps2, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_positive_int("RFLBAT", "max_clusters", self.max_clusters)
        check_positive_int("RFLBAT", "gap_references", self.gap_references)
        if self.seed is None:
            raise ValueError("RFLBAT: seed must be an int >= 0 (KMeans and the gap statistic's references); got None")
        check_seed("RFLBAT", self.seed)

    @torch.compiler.disable      # PCA + scikit-learn KMeans on the host: runs eagerly under torch.compile
    def _aggregate(self, u, w, ids, stats):
        n = u.shape[0]
        gram = stats.pairwise(u, sqdist=False).gram.cpu()
        # PCA from the Gram matrix: centre it (H G H) and take the top-2 eigenpairs.
        H = torch.eye(n, dtype=torch.float64) - 1.0 / n
        gc = H @ gram @ H
        evals, evecs = torch.linalg.eigh((gc + gc.T) / 2)
        top = torch.argsort(evals, descending=True)[:2]
        pts = (evecs[:, top] * evals[top].clamp_min(0).sqrt()).numpy()
        if pts.shape[1] < 2:
            pts = np.pad(pts, ((0, 0), (0, 2 - pts.shape[1])))
        cos = _cosine_from_gram(gram).numpy()

        out1 = _outliers(pts, self.eps1)
        alive = np.flatnonzero(~out1)
        labels = np.full(n, -1)
        k = gap_statistic_k(pts[alive], self.max_clusters, self.gap_references, self.seed)
        labels[alive] = _kmeans(pts[alive], k, self.seed, 3).labels_ if k > 1 else 0
        scores = {}
        for c in range(k):
            members = np.flatnonzero(labels == c)
            if len(members) < 2:
                scores[c] = math.inf
                continue
            sims = cos[np.ix_(members, members)]
            mean_to_others = (sims.sum(1) - np.diag(sims)) / (len(members) - 1)
            scores[c] = float(np.median(mean_to_others))
        finite_scores = {c: s for c, s in scores.items() if math.isfinite(s)}
        if finite_scores:
            chosen = min(finite_scores, key=lambda c: (finite_scores[c], c))
            members = np.flatnonzero(labels == chosen)
        else:
            chosen, members = -1, alive
        out2_local = _outliers(pts[members], self.eps2)
        final = members[~out2_local]
        update, cw, excluded = mean_of_selected(u, w, final)
        info = {
            "pca": pts.tolist(),
            "outliers_stage1": [ids[i] for i in np.flatnonzero(out1)],
            "labels": labels.tolist(),
            "n_clusters": k,
            "cluster_scores": scores,
            "selected_cluster": chosen,
            "outliers_stage2": [ids[i] for i in members[out2_local]],
            "selected": [ids[i] for i in final],
        }
        return AggregationResult(update, cw, excluded, info)
