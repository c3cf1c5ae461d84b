"""The server loop: configuration, one federated run per rule, metrics and output files.

Every rule of a comparison sees the same experiment: the same data split,
attackers, initial model, clients sampled per round and mini-batch order (each
rule's run re-seeds its generators from ``seed``), so differences between the
rules come from the rules alone.
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import json
import math
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import aggregators, attacks
from ..utils import stepped
from . import data as data_mod
from .models import MODELS, build_model
from .partition import PARTITIONS, partition
from .metrics import accuracy, class_accuracy, detection_rates, flagged_clients
from .train import LocalSpec, flat_params, predict, train_batched, train_sequential

__all__ = ["SimConfig", "MAX_SEED", "DEFAULT_RULES", "parse_rule", "run", "run_seeds", "summarize_seeds", "write_outputs",
           "format_table"]

#: FedAvg and the defenses compared by ``robustagg simulate`` with no arguments
#: (each rule declares its place: ``default_rank``).
DEFAULT_RULES = tuple(aggregators.default_rules())


@dataclasses.dataclass
class SimConfig:
    """One experiment. Defaults: the CLI's default run (digits, trojan backdoor).

    Data: ``dataset`` (digits | fashion_mnist | synthetic), ``data_path`` (the
    Fashion-MNIST folder), ``partition`` (iid | dirichlet | shards), ``alpha``
    (Dirichlet concentration), ``classes_per_client`` (shards).
    Federation: ``clients`` K, ``fraction`` C (round(C·K) clients, at least 1, sampled
    per round), ``rounds``, ``server_lr`` η (``w <- w + η g``).
    Local training: ``model`` (logreg | mlp | cnn), ``hidden``, ``local_epochs``
    E, ``batch_size`` B, ``lr``, ``momentum`` (SGD momentum, 0 = plain SGD); attackers may differ (``attacker_epochs``, default 5 as
    attackers train longer in the papers, ``None`` = E; ``attacker_lr``, ``None`` = lr).
    Attack: ``attack`` (a name of :mod:`robustagg.attacks`), ``attack_params``,
    ``attackers`` (how many of the K clients are malicious, chosen at random).
    ``local_training``: ``"batched"`` (one ``vmap`` step for all clients, the
    default) or ``"sequential"`` (a loop over clients: same result; faster for
    the CNN on CPU, where vmap's grouped convolutions are slow, see
    ``bench/results/local_training_cpu.md``).
    Rules: ``rules``, names or ``"name(param=value, ...)"``; rules taking the
    number of attackers (krum, multikrum, bulyan: f; trimmed_mean: trim; rlr:
    threshold = f + 1; invariant: tau = alpha = f/n) get it from the expected
    number of attackers per round unless given. A rule may set its own server
    learning rate, ``"sign(server_lr=0.001)"`` (sign aggregation steps ±1 per coordinate).
    ``assumed_attackers``: the number of attackers per round that f-aware rules
    are told; ``None`` (default) tells them the true expected count, as the
    papers do (an oracle no deployment has: results.json and the table say so).
    ``attacker_pick``: ``"random"`` (default: any ``attackers`` of the K
    clients) or ``"base_holders"`` (at random among the clients whose data
    holds the attack's base class, as Fu et al. choose their label flippers).
    ``baseline``: for a targeted attack, also run FedAvg with the attackers
    behaving honestly, so that attack success has its no-attack reference (the
    share of triggered base-class images read as the target anyway).
    """

    dataset: str = "digits"
    data_path: Optional[str] = None
    partition: str = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    clients: int = 20
    fraction: float = 1.0
    rounds: int = 30
    server_lr: float = 1.0
    model: str = "mlp"
    hidden: Optional[int] = None
    local_epochs: int = 2
    batch_size: int = 16
    lr: float = 0.1
    momentum: float = 0.0
    attacker_epochs: Optional[int] = 5
    attacker_lr: Optional[float] = None
    attack: str = "trojan"
    attack_params: Dict[str, Any] = dataclasses.field(default_factory=dict)
    attackers: int = 4
    rules: Sequence[str] = DEFAULT_RULES
    device: str = "cpu"
    seed: int = 0
    local_training: str = "batched"
    baseline: bool = True
    assumed_attackers: Optional[int] = None
    attacker_pick: str = "random"

    def validate(self, check_data: bool = True) -> None:
        """Checks every option (types first, then bounds), builds the attack
        and every rule and tries them, and (``check_data``) that the dataset's
        files are there: all that can be known before any data is read or any
        file written. Raises ``ValueError`` naming the option."""
        def need(cond, msg):
            if not cond:
                raise ValueError(msg)

        self._check_types()
        need(self.dataset.replace("-", "_") in data_mod.DATASETS + ("fmnist",),
             f"dataset must be one of {', '.join(data_mod.DATASETS)}; got {self.dataset!r}")
        need(self.partition in PARTITIONS, f"partition must be one of {', '.join(PARTITIONS)}; got {self.partition!r}")
        need(self.model in MODELS, f"model must be one of {', '.join(MODELS)}; got {self.model!r}")
        for name in ("clients", "rounds", "local_epochs", "batch_size", "classes_per_client"):
            v = getattr(self, name)
            need(v >= 1, f"{name} must be a positive integer; got {v!r}")
        need(0 <= self.attackers < self.clients,
             f"attackers must be an integer in [0, clients={self.clients}); got {self.attackers!r}")
        need(0 <= self.seed <= MAX_SEED, f"seed must be an integer in [0, {MAX_SEED}]; got {self.seed!r}")
        need(0 < self.fraction <= 1, f"fraction must be in (0, 1]; got {self.fraction!r}")
        for name in ("alpha", "server_lr", "lr"):
            v = getattr(self, name)
            need(v > 0 and math.isfinite(v), f"{name} must be > 0; got {v!r}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1); got {self.momentum!r}")
        need(self.attacker_epochs is None or self.attacker_epochs >= 1,
             f"attacker_epochs must be a positive integer; got {self.attacker_epochs!r}")
        need(self.attacker_lr is None or (self.attacker_lr > 0 and math.isfinite(self.attacker_lr)),
             f"attacker_lr must be > 0; got {self.attacker_lr!r}")
        need(self.hidden is None or self.hidden >= 1, f"hidden must be a positive integer; got {self.hidden!r}")
        num_classes, _ = data_mod.SHAPES[self.dataset_key]
        need(self.partition != "shards" or self.classes_per_client <= num_classes,
             f"classes_per_client must be at most the {num_classes} classes of {self.dataset_key}; "
             f"got {self.classes_per_client}")
        need(self.attack in attacks.available(),
             f"attack must be one of {', '.join(attacks.available())}; got {self.attack!r}")
        need(len(self.rules) > 0, "rules must name at least one rule")
        labels = [parse_rule(r)[2] for r in self.rules]
        need(len(set(labels)) == len(labels), f"rules must not repeat; got {labels}")
        need(self.attacker_pick in ("random", "base_holders"),
             f"attacker_pick must be 'random' or 'base_holders'; got {self.attacker_pick!r}")
        need(self.local_training in ("batched", "sequential"),
             f"local_training must be 'batched' or 'sequential'; got {self.local_training!r}")
        need(self.device == "cpu" or self.device.startswith("cuda"), f"device must be cpu or cuda[:i]; got {self.device!r}")
        if self.device.startswith("cuda"):
            need(torch.cuda.is_available(), f"device {self.device!r} asked for, but torch sees no CUDA device")
        need(self.assumed_attackers is None or 0 <= self.assumed_attackers < self.per_round,
             f"assumed_attackers must be an integer in [0, clients per round={self.per_round}); "
             f"got {self.assumed_attackers!r}")
        attack = self.build_attack()
        need(self.attacker_pick == "random" or self.attackers == 0 or attack.base_class is not None,
             f"attacker_pick 'base_holders' needs an attack with a base class; {self.attack!r} "
             f"(attack_params {self.attack_params}) has none")
        if check_data:
            try:
                data_mod.check_available(self.dataset_key, self.data_path)
            except FileNotFoundError as e:
                raise ValueError(str(e)) from None
        self.check_rules()

    def _check_types(self) -> None:
        """Each option's type, as the CLI's flags check theirs (a config file
        gives any JSON/TOML value): ``True`` is no number here."""
        for name, kind in _FIELD_TYPES.items():
            v = getattr(self, name)
            if v is None and kind.endswith("?"):
                continue
            base = kind.rstrip("?")
            ok = {"str": isinstance(v, str),
                  "int": isinstance(v, int) and not isinstance(v, bool),
                  "real": isinstance(v, (int, float)) and not isinstance(v, bool),
                  "bool": isinstance(v, bool),
                  "dict": isinstance(v, dict),
                  "rules": isinstance(v, (list, tuple)) and all(isinstance(r, (str, dict)) for r in v)}[base]
            if not ok:
                words = {"str": "a string", "int": "an integer", "real": "a number", "bool": "true or false",
                         "dict": "a table of parameters", "rules": "a list of rule names (or one comma-separated "
                         "string)"}[base]
                raise ValueError(f"{name} must be {words}{' or null' if kind.endswith('?') else ''}; "
                                 f"got {type(v).__name__} {v!r}")

    @property
    def dataset_key(self) -> str:
        key = self.dataset.replace("-", "_").lower()
        return "fashion_mnist" if key == "fmnist" else key

    def attack_params_resolved(self) -> Dict[str, Any]:
        """``attack_params`` with the dataset's defaults (Fashion-MNIST trojans: sandal -> sneaker)."""
        params = dict(self.attack_params)
        if self.dataset_key == "fashion_mnist" and issubclass(attacks.attack_class(self.attack), attacks.TrojanBackdoor):
            params.setdefault("base_class", 5)      # sandal -> sneaker, as in the RLR paper
            params.setdefault("target_class", 7)
        return params

    def build_attack(self, dataset=None):
        """The attack with its parameters checked against the dataset (``dataset``,
        or its classes and image shape when not loaded yet: :data:`data.SHAPES`)."""
        if dataset is None:
            num_classes, image_shape = data_mod.SHAPES[self.dataset_key]
            dataset = _DatasetShape(num_classes, image_shape)
        try:
            attack = attacks.get(self.attack, **self.attack_params_resolved())
            attack.setup(dataset)
        except ValueError as e:
            if str(e).startswith("bad parameters for attack"):
                raise
            raise ValueError(f"attack {self.attack!r} (attack_params {self.attack_params}): {e}") from None
        return attack

    def unused_options(self) -> Dict[str, str]:
        """Options that have no effect in this configuration, and why."""
        out = {}
        if self.partition != "dirichlet":
            out["alpha"] = f"it is the Dirichlet concentration (partition dirichlet); partition is {self.partition}"
        if self.partition != "shards":
            out["classes_per_client"] = f"it applies to partition shards; partition is {self.partition}"
        if self.dataset_key != "fashion_mnist":
            out["data_path"] = f"it is the Fashion-MNIST folder; dataset is {self.dataset}"
        if self.model == "logreg":
            out["hidden"] = "model logreg has no hidden layer"
        return out

    @property
    def per_round(self) -> int:
        return max(1, min(self.clients, int(round(self.fraction * self.clients))))

    @property
    def expected_attackers(self) -> int:
        """Attackers in a round on average (at least 1 when there are any)."""
        f = int(round(self.attackers * self.per_round / self.clients))
        return 1 if self.attackers and f == 0 else f

    @property
    def told_attackers(self) -> int:
        """What f-aware rules are told: ``assumed_attackers``, else the true expected count."""
        return self.expected_attackers if self.assumed_attackers is None else self.assumed_attackers

    @property
    def attackers_source(self) -> str:
        return ("true count (oracle, as in the papers)" if self.assumed_attackers is None
                else "assumed (--assumed-attackers)")

    def check_rules(self) -> None:
        """Builds every rule and calls it once on random updates of this run's
        shape (n clients of a round), so that a bound the run breaks (Krum's
        n > 2f + 2 with too few clients, say) is reported before any training."""
        n, f = self.per_round, self.told_attackers
        u = torch.randn(n, 16, generator=torch.Generator().manual_seed(0))
        for spec in self.rules:
            rule, label, _ = build_rule(spec, n, f)
            try:
                rule(u, weights=torch.ones(n, dtype=torch.float64), client_ids=list(range(n)))
            except ValueError as e:
                raise ValueError(f"rule {label!r} cannot run on {n} clients per round "
                                 f"(told f = {f} attackers): {e}") from None

    def to_dict(self) -> Dict[str, Any]:
        """The options as used: those without effect here (:meth:`unused_options`) are left out."""
        d = dataclasses.asdict(self)
        d["rules"] = list(self.rules)
        for name in self.unused_options():
            d.pop(name, None)
        return d


#: The most a seed may be (2^32 - 1, numpy's legacy bound): the runs derive generators from seed + small offsets.
MAX_SEED = 2 ** 32 - 1

#: Each option's type ("?": None allowed).
_FIELD_TYPES = {
    "dataset": "str", "data_path": "str?", "partition": "str", "alpha": "real", "classes_per_client": "int",
    "clients": "int", "fraction": "real", "rounds": "int", "server_lr": "real", "model": "str", "hidden": "int?",
    "local_epochs": "int", "batch_size": "int", "lr": "real", "momentum": "real", "attacker_epochs": "int?",
    "attacker_lr": "real?", "attack": "str", "attack_params": "dict", "attackers": "int", "rules": "rules",
    "device": "str", "seed": "int", "local_training": "str", "baseline": "bool", "assumed_attackers": "int?",
    "attacker_pick": "str",
}


@dataclasses.dataclass(frozen=True)
class _DatasetShape:
    """What an attack's ``setup`` checks its parameters against, before the data is loaded."""

    num_classes: int
    image_shape: tuple


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_rule(spec) -> tuple:
    """``"trimmed_mean(trim=2)"`` or ``{"name": "trimmed_mean", "trim": 2}`` → (name, params, label)."""
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"a rule given as a table needs a 'name'; got {spec!r}")
        label = name + ("(" + ", ".join(f"{k}={v!r}" for k, v in spec.items()) + ")" if spec else "")
        return name, spec, label
    if not isinstance(spec, str):
        raise ValueError(f"a rule must be a name or 'name(param=value, ...)'; got {spec!r}")
    m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*", spec)
    if not m:
        raise ValueError(f"cannot parse rule {spec!r}; write 'name' or 'name(param=value, ...)'")
    name, body = m.group(1), m.group(2)
    params = {}
    if body and body.strip():
        for item in body.split(","):
            if "=" not in item:
                raise ValueError(f"rule {spec!r}: parameter {item.strip()!r} is not 'param=value'")
            k, v = item.split("=", 1)
            params[k.strip()] = _literal(v.strip())
    return name, params, spec.strip()


def _rule_defaults(name: str, n: int, f: int, given: Dict[str, Any]) -> Dict[str, Any]:
    """The f-aware parameters the rule declares (``told_attackers``), for what the user did not give."""
    return {k: v for k, v in aggregators.rule_class(name).told_attackers(n, f, given).items() if k not in given}


def build_rule(spec, n: int, f: int):
    name, params, label = parse_rule(spec)
    if name not in aggregators.available():
        raise ValueError(f"unknown rule {name!r}; available: {', '.join(aggregators.available())}")
    full = {**_rule_defaults(name, n, f, params), **params}
    rule_params = {k: v for k, v in full.items() if k != "server_lr"}
    server_lr = full.get("server_lr")
    if server_lr is not None and not (isinstance(server_lr, (int, float)) and server_lr > 0):
        raise ValueError(f"rule {label!r}: server_lr must be > 0; got {server_lr!r}")
    try:
        return aggregators.get(name, **rule_params), label, full
    except TypeError as e:
        raise ValueError(f"bad parameters for rule {label!r}: {e}") from None


def _pad(parts: List[torch.Tensor], x: torch.Tensor, y: torch.Tensor):
    nmax = max(int(p.numel()) for p in parts)
    X = torch.zeros(len(parts), nmax, *x.shape[1:], dtype=x.dtype)
    Y = torch.zeros(len(parts), nmax, dtype=torch.long)
    for k, p in enumerate(parts):
        X[k, :p.numel()] = x[p]
        Y[k, :p.numel()] = y[p]
    return X, Y


def _pad_rows(xs: List[torch.Tensor], ys: List[torch.Tensor], X: torch.Tensor, Y: torch.Tensor):
    """[a, nmax, ...] padded stacks of the attackers' own training sets (like _pad)."""
    nmax = max([int(t.shape[0]) for t in ys] + [1])
    Xp = torch.zeros(len(xs), nmax, *X.shape[2:], dtype=X.dtype)
    Yp = torch.zeros(len(ys), nmax, dtype=Y.dtype)
    for k, (x, y) in enumerate(zip(xs, ys)):
        Xp[k, :x.shape[0]] = x
        Yp[k, :y.shape[0]] = y
    return Xp, Yp


class _Experiment:
    """Everything shared by the rules' runs: data, split, attackers, initial model."""

    def __init__(self, cfg: SimConfig):
        cfg.validate()
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        ds = data_mod.load(cfg.dataset, path=cfg.data_path, seed=cfg.seed)
        self.dataset = ds
        self.attack = cfg.build_attack(ds)
        self.attack.begin(cfg.rounds)

        # The adversary's pool (attacks that bring their own images): base-class
        # training samples set aside before the split, so no honest client holds them.
        n_train = int(ds.y_train.numel())
        per_attacker = self.attack.pool_size(n_train, cfg.clients, ds.num_classes) if cfg.attackers else 0
        kept = torch.arange(n_train)
        pool = torch.zeros(0, dtype=torch.long)
        if per_attacker:
            base_idx = self.attack.is_base(ds.y_train).nonzero().flatten()
            want = per_attacker * cfg.attackers
            if want > base_idx.numel() // 2:
                raise ValueError(f"attack pool of {per_attacker} base-class images per attacker x {cfg.attackers} "
                                 f"attackers needs more than half of the {base_idx.numel()} base-class training "
                                 f"images; lower pool_size")
            pick = torch.from_numpy(np.random.default_rng(cfg.seed + 11).permutation(base_idx.numel())[:want])
            pool = base_idx[pick].sort().values
            keep_mask = torch.ones(n_train, dtype=torch.bool)
            keep_mask[pool] = False
            kept = keep_mask.nonzero().flatten()
        rng = np.random.default_rng(cfg.seed)
        parts = partition(cfg.partition, ds.y_train[kept], cfg.clients, rng, alpha=cfg.alpha,
                          classes_per_client=cfg.classes_per_client)
        self.parts = [kept[p] for p in parts]
        self.counts = torch.tensor([p.numel() for p in self.parts])
        if cfg.attacker_pick == "random":
            self.attacker_ids = sorted(rng.choice(cfg.clients, size=cfg.attackers, replace=False).tolist())
        else:       # "base_holders": among the clients holding the attack's base class (Fu et al.'s label flippers)
            holders = [c for c, p in enumerate(self.parts) if bool((ds.y_train[p] == self.attack.base_class).any())]
            if len(holders) < cfg.attackers:
                raise ValueError(f"attacker_pick 'base_holders': only {len(holders)} of the {cfg.clients} clients "
                                 f"hold the base class, fewer than the {cfg.attackers} attackers")
            self.attacker_ids = sorted(int(c) for c in rng.choice(holders, size=cfg.attackers, replace=False))

        X, Y = _pad(self.parts, ds.x_train, ds.y_train)
        gen = torch.Generator().manual_seed(cfg.seed + 7)
        att_x, att_y = [], []
        self.poisoned_counts = []
        for rank, cid in enumerate(self.attacker_ids):
            idx = self.parts[cid]
            x, y = ds.x_train[idx], ds.y_train[idx]
            share = pool[rank * per_attacker:(rank + 1) * per_attacker]
            xp, yp = self.attack.poison(x, y, rank, len(self.attacker_ids), gen,
                                        pool=(ds.x_train[share], ds.y_train[share]))
            n_own = min(x.shape[0], xp.shape[0])
            changed = (yp[:n_own] != y[:n_own]) | (xp[:n_own] != x[:n_own]).flatten(1).any(1)
            self.poisoned_counts.append(int(changed.sum()) + int(xp.shape[0] - n_own))
            att_x.append(xp)
            att_y.append(yp)
        self.pool_per_attacker = per_attacker
        self.attacker_counts = torch.tensor([int(t.shape[0]) for t in att_y], dtype=torch.long)
        Xp, Yp = _pad_rows(att_x, att_y, X, Y)
        self.warnings = []
        if self.attack.uses_poisoned_data and (self.attack.base_class is not None
                                               or isinstance(self.attack, attacks.TrojanBackdoor)):
            few = [cid for cid, c in zip(self.attacker_ids, self.poisoned_counts) if c < attacks.HANDFUL]
            if few:
                self.warnings.append(
                    f"attackers {few} have fewer than {attacks.HANDFUL} poisoned samples "
                    f"({[c for cid, c in zip(self.attacker_ids, self.poisoned_counts) if cid in few]}): their "
                    f"backdoor barely trains (data='own' poisons only base-class images they hold; "
                    f"data='pool' brings its own)")
        dev = self.device
        self.X, self.Y, self.Xp, self.Yp = X.to(dev), Y.to(dev), Xp.to(dev), Yp.to(dev)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model = build_model(cfg.model, ds.image_shape, ds.num_classes, cfg.hidden).to(dev)
        self.init_params = {k: v.detach().clone() for k, v in self.model.named_parameters()}
        self.num_params = sum(v.numel() for v in self.init_params.values())

        self.x_test, self.y_test = ds.x_test.to(dev), ds.y_test.to(dev)
        succ = self.attack.success_set(ds)
        self.success_set = None if succ is None else (succ[0].to(dev), succ[1].to(dev))
        self.base_class = self.attack.base_class

        self.honest_spec = LocalSpec(cfg.local_epochs, float(cfg.lr), cfg.batch_size, momentum=float(cfg.momentum))
        self.attacker_spec = self.attack.local_spec(LocalSpec(
            cfg.attacker_epochs or cfg.local_epochs, float(cfg.attacker_lr or cfg.lr), cfg.batch_size,
            momentum=float(cfg.momentum)))
        self.expected_f = cfg.expected_attackers
        self.told_f = cfg.told_attackers

    def evaluate(self, params) -> Dict[str, Optional[float]]:
        pred = predict(self.model, params, self.x_test)
        out = {"accuracy": accuracy(pred, self.y_test),
               "base_accuracy": class_accuracy(pred, self.y_test, self.base_class),
               "attack_success": None}
        if self.success_set is not None:
            out["attack_success"] = accuracy(predict(self.model, params, self.success_set[0]), self.success_set[1])
        return out


def _run_rule(exp: _Experiment, spec, progress: Optional[Callable], attack_on: bool = True) -> Dict[str, Any]:
    cfg = exp.cfg
    n = cfg.per_round
    rule, label, rule_params = build_rule(spec, n, exp.told_f)
    g_sample = torch.Generator().manual_seed(cfg.seed + 1)
    g_train = torch.Generator().manual_seed(cfg.seed + 2)
    g_attack = torch.Generator().manual_seed(cfg.seed + 3)
    params = {k: v.clone() for k, v in exp.init_params.items()}
    attacker_rank = {cid: r for r, cid in enumerate(exp.attacker_ids)}
    selecting = rule.selects_clients
    server_lr = float(rule_params.get("server_lr", cfg.server_lr))
    train_clients = train_batched if cfg.local_training == "batched" else train_sequential

    hist = {k: [] for k in ("accuracy", "base_accuracy", "attack_success", "attackers_sampled",
                            "true_positive_rate", "false_positive_rate", "aggregation_seconds")}
    start = time.perf_counter()
    for rnd in range(cfg.rounds):
        sampled = torch.randperm(cfg.clients, generator=g_sample)[:n].sort().values
        active = attack_on and exp.attack.active(rnd)
        is_att = torch.tensor([int(c) in attacker_rank for c in sampled.tolist()], dtype=torch.bool)
        mal_pos = is_att.nonzero().flatten() if active else torch.zeros(0, dtype=torch.long)
        hon_pos = (~is_att).nonzero().flatten() if active else torch.arange(n)

        d = exp.num_params
        deltas = torch.empty(n, d, device=exp.device)
        if hon_pos.numel():
            rows = sampled[hon_pos]
            deltas[hon_pos.to(exp.device)] = train_clients(exp.model, params, exp.X, exp.Y, rows,
                                                           exp.counts[rows], exp.honest_spec, g_train)
        if mal_pos.numel():
            rows = sampled[mal_pos]
            counts = exp.counts[rows]
            if exp.attack.uses_poisoned_data:
                ranks = torch.tensor([attacker_rank[int(c)] for c in rows.tolist()])
                mal = train_clients(exp.model, params, exp.Xp, exp.Yp, ranks, exp.attacker_counts[ranks],
                                    exp.attacker_spec, g_train)
            else:
                mal = train_clients(exp.model, params, exp.X, exp.Y, rows, counts, exp.attacker_spec, g_train)
            ctx = attacks.CraftContext(round=rnd, malicious=mal, benign=deltas[hon_pos.to(exp.device)],
                                       global_params=flat_params(params, batched=False), num_aggregated=n,
                                       server_lr=server_lr, generator=g_attack)
            deltas[mal_pos.to(exp.device)] = exp.attack.craft(ctx).to(deltas.dtype)

        t0 = time.perf_counter()
        result = rule(deltas, weights=exp.counts[sampled].to(torch.float64), client_ids=sampled.tolist())
        hist["aggregation_seconds"].append(time.perf_counter() - t0)

        update = result.update.to(exp.device)
        offset = 0
        for k, v in params.items():
            params[k] = stepped(v, update[offset:offset + v.numel()], server_lr)
            offset += v.numel()

        m = exp.evaluate(params)
        for k in ("accuracy", "base_accuracy", "attack_success"):
            hist[k].append(m[k])
        hist["attackers_sampled"].append(int(mal_pos.numel()))
        tpr = fpr = None
        if selecting:
            is_att = torch.zeros(n, dtype=torch.bool)
            is_att[mal_pos] = True
            tpr, fpr = detection_rates(flagged_clients(result.excluded, result.client_weights), is_att)
        hist["true_positive_rate"].append(tpr)
        hist["false_positive_rate"].append(fpr)
        if progress is not None:
            progress(label, rnd + 1, cfg.rounds, m)
    seconds = time.perf_counter() - start

    def last(xs):
        return xs[-1] if xs else None

    told = _rule_defaults(rule.name, n, exp.told_f, parse_rule(spec)[1])
    out = {
        "rule": rule.name,
        "params": {k: v for k, v in rule_params.items()},
        # the f-aware parameters the rule took from the number of attackers it was told (not given by the user)
        "from_attackers_told": {k: v for k, v in told.items() if rule_params.get(k) == v},
        **hist,
        "final_accuracy": last(hist["accuracy"]),
        "final_base_accuracy": last(hist["base_accuracy"]),
        "final_attack_success": last(hist["attack_success"]),
        "seconds": seconds,
        "aggregation_seconds_total": float(sum(hist["aggregation_seconds"])),
    }
    if selecting:
        tp = [t for t in hist["true_positive_rate"] if t is not None]
        fp = [t for t in hist["false_positive_rate"] if t is not None]
        out["mean_true_positive_rate"] = float(np.mean(tp)) if tp else None
        out["mean_false_positive_rate"] = float(np.mean(fp)) if fp else None
    return label, out


def run(cfg: SimConfig, progress: Optional[Callable] = None,
        on_rule_done: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Runs the experiment once per rule and returns the results dictionary
    (the content of ``results.json``).

    ``progress(rule_label, rounds_done, rounds, metrics)`` is called after every
    round, ``on_rule_done(results_so_far)`` after every rule (the CLI writes
    its files there, so a long comparison leaves results as it goes). Every
    rule is built and tried on random updates before the first round
    (:meth:`SimConfig.check_rules`).
    """
    exp = _Experiment(cfg)
    results = {
        "config": {**cfg.to_dict(), "attack_resolved": {"name": exp.attack.name, **exp.attack.params()}},
        "experiment": {
            "dataset": exp.dataset.name, "train_samples": int(exp.dataset.y_train.numel()),
            "test_samples": int(exp.dataset.y_test.numel()), "image_shape": list(exp.dataset.image_shape),
            "num_params": exp.num_params, "clients_per_round": cfg.per_round,
            "attacker_ids": exp.attacker_ids, "poisoned_samples": exp.poisoned_counts,
            "attack_pool_per_attacker": exp.pool_per_attacker, "warnings": exp.warnings,
            "expected_attackers_per_round": exp.expected_f,
            "attackers_told_to_rules": exp.told_f, "attackers_told_source": cfg.attackers_source,
            "client_sizes": exp.counts.tolist(),
            "torch": torch.__version__, "device": str(exp.device),
        },
        "rules": {},
    }
    if cfg.baseline and exp.success_set is not None and cfg.attackers > 0:
        _, out = _run_rule(exp, "fedavg", progress and (lambda label, *a: progress("no attack", *a)),
                           attack_on=False)
        results["baseline"] = {"rule": "fedavg", "attack": "none (the attackers train honestly)",
                               "final_accuracy": out["final_accuracy"],
                               "final_attack_success": out["final_attack_success"],
                               "final_base_accuracy": out["final_base_accuracy"],
                               "attack_success": out["attack_success"], "accuracy": out["accuracy"],
                               "seconds": out["seconds"]}
    for spec in cfg.rules:
        label, out = _run_rule(exp, spec, progress)
        results["rules"][label] = out
        if on_rule_done is not None:
            on_rule_done(results)
    return results


_SUMMARY_KEYS = ("final_accuracy", "final_attack_success", "final_base_accuracy", "mean_true_positive_rate",
                 "mean_false_positive_rate", "seconds")
_CURVES = ("accuracy", "attack_success")


def _stats(values: List[Optional[float]]) -> Optional[Dict[str, Any]]:
    """mean, sample std (0 for one value) and the values; None if any is missing."""
    if not values or any(v is None for v in values):
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "values": [float(v) for v in values]}


def _summarize(entries: List[Dict[str, Any]]) -> Dict[str, Any]:
    out = {k: _stats([e.get(k) for e in entries]) for k in _SUMMARY_KEYS if any(k in e for e in entries)}
    for curve in _CURVES:
        rows = [e.get(curve) for e in entries]
        if rows and all(r is not None and all(v is not None for v in r) for r in rows):
            arr = np.asarray(rows, dtype=np.float64)
            out[curve + "_mean"] = arr.mean(0).tolist()
            out[curve + "_std"] = (arr.std(0, ddof=1) if len(rows) > 1 else np.zeros(arr.shape[1])).tolist()
    return out


def summarize_seeds(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The results of one comparison over several seeds: every seed's results
    (``runs``) and, per rule, the mean and sample standard deviation over the
    seeds of the final metrics and of the per-round curves (``summary``)."""
    seeds = [r["config"]["seed"] for r in runs]
    summary = {"rules": {label: _summarize([r["rules"][label] for r in runs]) for label in runs[0]["rules"]}}
    if all("baseline" in r for r in runs):
        summary["baseline"] = _summarize([r["baseline"] for r in runs])
    return {"config": {**runs[0]["config"], "seed": None, "seeds": seeds}, "seeds": seeds,
            "experiment": runs[0]["experiment"], "summary": summary, "runs": runs}


def run_seeds(cfg: SimConfig, seeds: Sequence[int], progress: Optional[Callable] = None,
              on_seed_done: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Runs the same comparison once per seed (each seed draws its own split,
    attackers, initial model and sampling) and summarises it (:func:`summarize_seeds`)."""
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat; got {seeds}")
    runs = []
    for seed in seeds:
        runs.append(run(dataclasses.replace(cfg, seed=seed), progress))
        if on_seed_done is not None:
            on_seed_done(summarize_seeds(runs))
    return summarize_seeds(runs)


def _fmt(v, pct=True):
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.2f}"


def _fmt_stat(st, pct=True) -> str:
    if st is None:
        return "-"
    if pct:
        return f"{100 * st['mean']:.1f} ± {100 * st['std']:.1f}%"
    return f"{st['mean']:.1f}"


def _format_summary(results: Dict[str, Any]) -> str:
    summary = results["summary"]
    rows = [("rule", "accuracy", "attack success", "attackers flagged", "honest flagged", "seconds")]
    for label, r in summary["rules"].items():
        rows.append((label, _fmt_stat(r.get("final_accuracy")), _fmt_stat(r.get("final_attack_success")),
                     _fmt_stat(r.get("mean_true_positive_rate")), _fmt_stat(r.get("mean_false_positive_rate")),
                     _fmt_stat(r.get("seconds"), pct=False)))
    base = summary.get("baseline")
    if base is not None:
        rows.append(("no attack (fedavg)", _fmt_stat(base.get("final_accuracy")),
                     _fmt_stat(base.get("final_attack_success")), "-", "-", _fmt_stat(base.get("seconds"), pct=False)))
    return _grid(rows, base is not None)


def _grid(rows, last_is_baseline: bool) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        if last_is_baseline and j == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(results: Dict[str, Any]) -> str:
    """The results table the CLI prints: rule, final accuracy, attack success,
    detection, seconds; mean ± sample std over the seeds of a multi-seed run."""
    exp = results["experiment"]
    header = (f"f-aware rules told f = {exp['attackers_told_to_rules']} attackers per round: "
              f"{exp['attackers_told_source']}\n") if "attackers_told_to_rules" in exp else ""
    if "summary" in results:
        seeds = ", ".join(str(x) for x in results["seeds"])
        return header + f"mean ± std over seeds {seeds}\n" + _format_summary(results)
    rows = [("rule", "accuracy", "attack success", "attackers flagged", "honest flagged", "seconds")]
    for label, r in results["rules"].items():
        rows.append((label, _fmt(r["final_accuracy"]), _fmt(r["final_attack_success"]),
                     _fmt(r.get("mean_true_positive_rate")), _fmt(r.get("mean_false_positive_rate")),
                     f"{r['seconds']:.1f}"))
    base = results.get("baseline")
    if base is not None:
        rows.append(("no attack (fedavg)", _fmt(base["final_accuracy"]), _fmt(base["final_attack_success"]),
                     "-", "-", f"{base['seconds']:.1f}"))
    return header + _grid(rows, base is not None)


_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray")
_DASHES = ("-", "--", "-.", (0, (1, 1)), (0, (5, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "v", "D", "x", "P", "*", "<", ">")


def _line_style(i: int) -> Dict[str, Any]:
    """Rule i's line: its own colour, dash pattern and marker (every 5th point),
    so that curves lying on top of each other stay apart in print too."""
    return dict(color=_COLORS[i % len(_COLORS)], linestyle=_DASHES[i % len(_DASHES)],
                marker=_MARKERS[i % len(_MARKERS)], markevery=(i % 5, 5), markersize=4, linewidth=1.3)


def plot_title(results: Dict[str, Any]) -> str:
    """The experiment in one line: dataset, partition, model, federation, attack, rounds, seed(s)."""
    c, e = results["config"], results["experiment"]
    seeds = results.get("seeds")
    part = c["partition"] + (f" α={c['alpha']}" if "alpha" in c else "") + (
        f" {c['classes_per_client']} classes/client" if "classes_per_client" in c else "")
    return (f"{e['dataset']} ({part}), {c['model']}, {c['clients']} clients ({e['clients_per_round']} per round), "
            f"attack {c['attack']} by {c['attackers']}, {c['rounds']} rounds, "
            + (f"seeds {','.join(map(str, seeds))}" if seeds else f"seed {c['seed']}"))


def write_outputs(results: Dict[str, Any], out_dir: str, plot: bool = True) -> List[str]:
    """Writes ``results.json``, ``results.csv`` (one row per rule and round; a
    multi-seed run adds a ``seed`` column and a ``summary.csv`` of mean ± std
    per rule) and ``results.png`` (curves; mean with a ±std band over seeds).
    Returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, allow_nan=False)
    written.append(path)

    multi = "summary" in results
    runs = results["runs"] if multi else [results]
    path = os.path.join(out_dir, "results.csv")
    cols = ["accuracy", "base_accuracy", "attack_success", "attackers_sampled", "true_positive_rate",
            "false_positive_rate", "aggregation_seconds"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rule"] + (["seed"] if multi else []) + ["round"] + cols)
        for run_ in runs:
            for label, r in run_["rules"].items():
                for i in range(len(r["accuracy"])):
                    w.writerow([label] + ([run_["config"]["seed"]] if multi else []) + [i + 1]
                               + ["" if r[c][i] is None else r[c][i] for c in cols])
    written.append(path)
    if multi:
        path = os.path.join(out_dir, "summary.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            keys = list(_SUMMARY_KEYS)
            w.writerow(["rule"] + [f"{k}_{m}" for k in keys for m in ("mean", "std")])
            entries = dict(results["summary"]["rules"])
            if "baseline" in results["summary"]:
                entries["no attack (fedavg)"] = results["summary"]["baseline"]
            for label, e in entries.items():
                w.writerow([label] + [("" if e.get(k) is None else e[k][m]) for k in keys for m in ("mean", "std")])
        written.append(path)

    if plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return written
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        if multi:
            curves = dict(results["summary"]["rules"])
            base = results["summary"].get("baseline")
        else:
            curves = {label: {"accuracy_mean": r["accuracy"], "attack_success_mean": r["attack_success"]}
                      for label, r in results["rules"].items()}
            base = results.get("baseline")
            if base is not None:
                base = {"accuracy_mean": base["accuracy"], "attack_success_mean": base["attack_success"]}
        if base is not None:
            curves["no attack (fedavg)"] = base
        for i, (label, c) in enumerate(curves.items()):
            style = dict(color="k", linestyle=":") if label == "no attack (fedavg)" else _line_style(i)
            for ax, key in zip(axes, _CURVES):
                mean = c.get(key + "_mean")
                if mean is None or all(v is None for v in mean):
                    continue
                mean = np.asarray([np.nan if v is None else v for v in mean], dtype=np.float64)
                x = np.arange(1, len(mean) + 1)
                line, = ax.plot(x, mean, label=label, **style)
                std = c.get(key + "_std")
                if std is not None:
                    ax.fill_between(x, mean - np.asarray(std), mean + np.asarray(std), color=line.get_color(),
                                    alpha=0.15, linewidth=0)
        from matplotlib.ticker import MaxNLocator
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        over = f" (mean ± std over {len(runs)} seeds)" if multi else ""
        axes[0].set(title="main-task accuracy" + over, xlabel="round", ylabel="test accuracy", ylim=(0, 1))
        axes[1].set(title="attack success" + over, xlabel="round",
                    ylabel="triggered base-class images read as target", ylim=(0, 1))
        axes[0].legend(fontsize=7)
        fig.suptitle(plot_title(results), fontsize=9)
        fig.tight_layout()
        path = os.path.join(out_dir, "results.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
