"""Attacker behaviours for the simulator (:mod:`robustagg.sim`).

Every attack is a small documented class with its paper's parameters, also
reachable by name: ``robustagg.attacks.get("model_replacement", gamma=10)``.
"""
from .base import Attack, CraftContext, NoAttack, attack_class, available, get, register
from .backdoor import (HANDFUL, ConstrainAndScale, DistributedBackdoor, LabelFlip, ModelReplacement, Trigger,
                       TrojanBackdoor)
from .byzantine import ALIE, AndMaskAdaptive, GaussianAttack, SignFlip

__all__ = ["HANDFUL", "Attack", "CraftContext", "NoAttack", "attack_class", "available", "get", "register", "Trigger", "TrojanBackdoor",
           "DistributedBackdoor", "LabelFlip", "ModelReplacement", "ConstrainAndScale", "SignFlip",
           "GaussianAttack", "ALIE", "AndMaskAdaptive"]
