"""Per-round metrics: accuracies, attack success and detection rates."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["accuracy", "class_accuracy", "flagged_clients", "detection_rates"]


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> Optional[float]:
    """Share of ``pred == target``; None on an empty set. With ``target`` the
    backdoor's target labels of triggered base-class images this is the attack
    success rate (backdoor accuracy of the RLR paper)."""
    if target.numel() == 0:
        return None
    return float((pred == target).double().mean())


def class_accuracy(pred: torch.Tensor, target: torch.Tensor, cls: Optional[int]) -> Optional[float]:
    """Accuracy on the samples of class ``cls`` (the base-class accuracy); None without such samples."""
    if cls is None:
        return None
    sel = target == cls
    return accuracy(pred[sel], target[sel])


def flagged_clients(excluded: torch.Tensor, client_weights: torch.Tensor) -> torch.Tensor:
    """``[n]`` bool: clients a rule dropped, or weighted below half the median
    weight of the clients it kept (FoolsGold, residual reweighting)."""
    excluded = excluded.cpu().bool()
    cw = client_weights.detach().cpu().double()
    kept = ~excluded
    ref = cw[kept].median() if bool(kept.any()) else torch.tensor(0.0, dtype=torch.float64)
    return excluded | (cw < 0.5 * ref)


def detection_rates(flagged: torch.Tensor, is_attacker: torch.Tensor) -> Tuple[Optional[float], Optional[float]]:
    """(true positive rate over the attackers, false positive rate over the
    honest clients); each None when that group is empty."""
    flagged, is_attacker = flagged.bool().cpu(), is_attacker.bool().cpu()
    tpr = float(flagged[is_attacker].double().mean()) if bool(is_attacker.any()) else None
    fpr = float(flagged[~is_attacker].double().mean()) if bool((~is_attacker).any()) else None
    return tpr, fpr
