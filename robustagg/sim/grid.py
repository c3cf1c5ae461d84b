"""``robustagg grid``: every rule against every attack on every partition.

One *cell* is one rule's run under one attack on one partition with one seed.
For each (attack, partition, seed) the simulator builds one experiment (data
split, attackers, initial model, sampled clients and batch order) and runs
every rule on it, as ``robustagg simulate`` does; the no-attack column runs
every rule with no attacker at all (the same split and initial model, f-aware
rules told the same f as under attack), so that the accuracy an attack costs
a rule is measured against that rule's own clean run.

Finished cells go to ``grid.csv`` as they finish; a re-run with the same
``--out`` reads it and runs only the missing cells (a different configuration
in the same folder is refused). From the CSV come ``grid.md`` (tables of mean
± sample std over the seeds) and the heatmaps ``attack_success.png`` and
``accuracy_drop.png``.

A defense *holds* against a targeted attack on a partition when its mean attack
success is at most :data:`HOLD_SUCCESS` above the no-attack level (FedAvg while
the attackers train honestly, same experiment), and against an untargeted
(Byzantine) attack when it loses at most :data:`HOLD_DROP` of accuracy against
its own no-attack run.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import aggregators, attacks
from .simulator import SimConfig, _Experiment, _run_rule, parse_rule

__all__ = ["GridSpec", "NO_ATTACK", "BASELINE", "PARTITIONS", "HOLD_SUCCESS", "HOLD_DROP", "grid_rules",
           "grid_attacks", "is_targeted", "run_grid", "read_cells", "summarize", "grid_markdown", "plot_heatmaps"]

#: The column of clean runs (no attacker), each rule's reference for the accuracy an attack costs it.
NO_ATTACK = "none"
#: The row of FedAvg with the attackers training honestly: the no-attack level of attack success.
BASELINE = "no attack (fedavg)"
PARTITIONS = ("iid", "dirichlet", "shards")
#: holds against a targeted attack: mean attack success at most this above the no-attack level.
HOLD_SUCCESS = 0.10
#: holds against an untargeted attack: mean accuracy lost against its own clean run at most this.
HOLD_DROP = 0.05

#: sign aggregation steps ±1 per coordinate: it runs with the RLR paper's server learning rate (as in
#: ``robustagg reproduce rlr``), not the simulator's 1.0 meant for averages of deltas.
_RULE_SPECS = {"sign": "sign(server_lr=0.001)"}

_FIELDS = ("partition", "attack", "seed", "rule", "accuracy", "attack_success", "base_accuracy",
           "true_positive_rate", "false_positive_rate", "seconds")


def grid_rules() -> List[str]:
    """Every rule of :func:`robustagg.aggregators.available`, as the grid runs it."""
    return [_RULE_SPECS.get(name, name) for name in aggregators.available()]


def is_targeted(attack: str) -> bool:
    """Whether the attack has a success metric (backdoors, label flipping)."""
    return attacks.attack_class(attack).success_set is not attacks.Attack.success_set


def grid_attacks() -> List[str]:
    """Every attack of :func:`robustagg.attacks.available` but ``none``: the targeted ones first."""
    names = [a for a in attacks.available() if a != "none"]
    return [a for a in names if is_targeted(a)] + [a for a in names if not is_targeted(a)]


@dataclasses.dataclass
class GridSpec:
    """The grid: ``rules`` × ``attacks`` (plus the no-attack column) ×
    ``partitions`` × ``seeds``, every experiment the :class:`SimConfig` of
    ``base`` (defaults: ``robustagg simulate``'s) with its attack, partition
    and seed."""

    rules: Sequence[str] = dataclasses.field(default_factory=grid_rules)
    attacks: Sequence[str] = dataclasses.field(default_factory=grid_attacks)
    partitions: Sequence[str] = PARTITIONS
    seeds: Sequence[int] = (0, 1, 2)
    base: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.rules, self.attacks = list(self.rules), list(self.attacks)
        self.partitions, self.seeds = list(self.partitions), list(self.seeds)

    def validate(self) -> None:
        def need(cond, msg):
            if not cond:
                raise ValueError(msg)
        need(self.rules, "rules must name at least one rule")
        need(self.partitions, "partitions must name at least one partition")
        need(self.seeds and len(set(self.seeds)) == len(self.seeds), f"seeds must be distinct; got {self.seeds}")
        labels = [parse_rule(r)[2] for r in self.rules]
        need(len(set(labels)) == len(labels), f"rules must not repeat; got {labels}")
        need(len(set(self.attacks)) == len(self.attacks), f"attacks must not repeat; got {self.attacks}")
        need(NO_ATTACK not in self.attacks, f"the no-attack column is always run; do not list {NO_ATTACK!r}")
        known = {f.name for f in dataclasses.fields(SimConfig)}
        for key in self.base:
            need(key in known, f"unknown simulate option {key!r}; known: {', '.join(sorted(known))}")
        for key in ("attack", "partition", "seed", "rules", "baseline", "assumed_attackers"):
            need(key not in self.base, f"{key!r} is set by the grid, not by the base configuration")
        for attack in [NO_ATTACK] + self.attacks:
            for part in self.partitions:
                self.sim_config(attack, part, self.seeds[0]).validate()

    def sim_config(self, attack: str, partition: str, seed: int, rules: Optional[Sequence[str]] = None) -> SimConfig:
        """The experiment of one (attack, partition, seed). The no-attack column
        has no attacker, and f-aware rules are told the f they are told under attack."""
        cfg = SimConfig(**{**self.base, "partition": partition, "seed": seed, "attack": attack,
                           "rules": list(rules or self.rules)})
        if attack == NO_ATTACK:
            cfg = dataclasses.replace(cfg, attackers=0, assumed_attackers=cfg.told_attackers, baseline=False)
        else:
            cfg.baseline = is_targeted(attack)
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        """What must match for a re-run to reuse the cells in a folder (the seeds may grow)."""
        base = {k: v for k, v in dataclasses.asdict(SimConfig(**self.base)).items()
                if k not in ("partition", "seed", "attack", "rules", "baseline", "assumed_attackers", "device")}
        return {"base": base, "rules": self.rules, "attacks": self.attacks, "partitions": self.partitions}


def _cell_key(row: Dict[str, Any]) -> Tuple[str, str, int, str]:
    return row["partition"], row["attack"], int(row["seed"]), row["rule"]


def read_cells(path: str) -> List[Dict[str, Any]]:
    """The cells of a ``grid.csv``, numbers parsed (empty: None)."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            cell = {"partition": row["partition"], "attack": row["attack"], "seed": int(row["seed"]),
                    "rule": row["rule"]}
            for k in _FIELDS[4:]:
                cell[k] = None if row.get(k, "") == "" else float(row[k])
            out.append(cell)
    return out


def _cell(partition, attack, seed, rule, out) -> Dict[str, Any]:
    return {"partition": partition, "attack": attack, "seed": seed, "rule": rule,
            "accuracy": out["final_accuracy"], "attack_success": out["final_attack_success"],
            "base_accuracy": out.get("final_base_accuracy"),
            "true_positive_rate": out.get("mean_true_positive_rate"),
            "false_positive_rate": out.get("mean_false_positive_rate"), "seconds": out["seconds"]}


def _plan(spec: GridSpec, done: set) -> List[Tuple[int, str, str, List[str], bool]]:
    """Per (seed, partition, attack), seed-major so that a stopped grid leaves whole seeds: the rules
    still to run and whether its no-attack baseline is."""
    plan = []
    labels = [parse_rule(r)[2] for r in spec.rules]
    for seed in spec.seeds:
        for part in spec.partitions:
            for attack in [NO_ATTACK] + spec.attacks:
                missing = [r for r, lab in zip(spec.rules, labels) if (part, attack, seed, lab) not in done]
                baseline = (attack != NO_ATTACK and is_targeted(attack)
                            and (part, attack, seed, BASELINE) not in done)
                if missing or baseline:
                    plan.append((seed, part, attack, missing, baseline))
    return plan


def run_grid(spec: GridSpec, out_dir: str, progress: bool = True,
             on_cell: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Runs the cells of ``spec`` not yet in ``out_dir/grid.csv``, appending
    each as it finishes. Returns ``{"cells": [...], "ran": n, "seconds": s}``
    (every cell of the folder's CSV that belongs to ``spec``)."""
    spec.validate()
    os.makedirs(out_dir, exist_ok=True)
    config_path = os.path.join(out_dir, "grid_config.json")
    csv_path = os.path.join(out_dir, "grid.csv")
    want = json.loads(json.dumps(spec.to_dict()))
    if os.path.exists(config_path) and os.path.exists(csv_path):
        with open(config_path) as f:
            have = json.load(f)
        if have != want:
            changed = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise ValueError(f"{out_dir!r} holds the cells of another grid (differs in {', '.join(changed)}); "
                             f"give another --out")
    with open(config_path, "w") as f:
        json.dump(want, f, indent=1)
    cells = read_cells(csv_path)
    done = {_cell_key(c) for c in cells}
    plan = _plan(spec, done)
    total = sum(len(m) + b for _, _, _, m, b in plan)
    bar = None
    if progress and total:
        try:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="run", dynamic_ncols=True)
        except ImportError:
            bar = None
    new_file = not os.path.exists(csv_path)
    start = time.perf_counter()
    ran = 0
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_FIELDS)
        if new_file:
            writer.writeheader()

        def record(cell):
            nonlocal ran
            writer.writerow({k: ("" if cell[k] is None else cell[k]) for k in _FIELDS})
            f.flush()
            cells.append(cell)
            ran += 1
            if bar is not None:
                bar.set_postfix_str(f"seed {cell['seed']} {cell['partition']} {cell['attack']} {cell['rule']}")
                bar.update(1)
            if on_cell is not None:
                on_cell(cell)

        try:
            for seed, part, attack, missing, baseline in plan:
                exp = _Experiment(spec.sim_config(attack, part, seed, rules=missing or spec.rules[:1]))
                if baseline:
                    _, out = _run_rule(exp, "fedavg", None, attack_on=False)
                    record(_cell(part, attack, seed, BASELINE, out))
                for rule in missing:
                    label, out = _run_rule(exp, rule, None)
                    record(_cell(part, attack, seed, label, out))
        finally:
            if bar is not None:
                bar.close()
    keep = ({parse_rule(r)[2] for r in spec.rules} | {BASELINE}, set([NO_ATTACK] + spec.attacks),
            set(spec.partitions), set(spec.seeds))
    mine = [c for c in cells if c["rule"] in keep[0] and c["attack"] in keep[1] and c["partition"] in keep[2]
            and c["seed"] in keep[3]]
    return {"cells": mine, "ran": ran, "seconds": time.perf_counter() - start}


def _stat(values: List[float]) -> Optional[Dict[str, float]]:
    if not values or any(v is None for v in values):
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": int(arr.size)}


def summarize(cells: List[Dict[str, Any]]) -> Dict[Tuple[str, str, str], Dict[str, Any]]:
    """Per (partition, attack, rule): mean ± std over seeds of accuracy, attack
    success and the accuracy drop (the rule's clean run minus its attacked run,
    per seed; only seeds that have both), and for targeted attacks the
    no-attack level of attack success (the baseline row of the same experiments)."""
    by = {_cell_key(c): c for c in cells}
    groups: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["partition"], c["attack"], c["rule"]), []).append(c)
    out = {}
    for (part, attack, rule), cs in groups.items():
        drops = []
        for c in cs:
            clean = by.get((part, NO_ATTACK, c["seed"], rule))
            if clean is not None and attack != NO_ATTACK:
                drops.append(clean["accuracy"] - c["accuracy"])
        base = [by[(part, attack, c["seed"], BASELINE)]["attack_success"] for c in cs
                if (part, attack, c["seed"], BASELINE) in by]
        out[(part, attack, rule)] = {
            "seeds": sorted(c["seed"] for c in cs),
            "accuracy": _stat([c["accuracy"] for c in cs]),
            "attack_success": _stat([c["attack_success"] for c in cs]) if cs[0]["attack_success"] is not None
            else None,
            "accuracy_drop": _stat(drops) if drops else None,
            "no_attack_success": _stat(base) if base and rule != BASELINE else None,
        }
    return out


def holds(entry: Dict[str, Any], attack: str) -> Optional[bool]:
    """Whether the defense holds (module docstring); None when the cell lacks what it takes."""
    if is_targeted(attack):
        s, b = entry.get("attack_success"), entry.get("no_attack_success")
        return None if s is None or b is None else s["mean"] - b["mean"] <= HOLD_SUCCESS
    d = entry.get("accuracy_drop")
    return None if d is None else d["mean"] <= HOLD_DROP


def _pct(st: Optional[Dict[str, float]], std: bool = True) -> str:
    if st is None:
        return "-"
    return f"{100 * st['mean']:.0f} ± {100 * st['std']:.0f}" if std else f"{100 * st['mean']:.0f}"


def _md_table(header: List[str], rows: List[List[str]]) -> List[str]:
    return (["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def grid_markdown(spec: GridSpec, cells: List[Dict[str, Any]], command: str, note: str = "") -> str:
    """The grid as markdown: per partition, attack success and accuracy drop
    (mean ± std over seeds, in %), the clean accuracy of every rule, and which
    defense holds where."""
    summ = summarize(cells)
    labels = [parse_rule(r)[2] for r in spec.rules]
    targeted = [a for a in spec.attacks if is_targeted(a)]
    untargeted = [a for a in spec.attacks if not is_targeted(a)]
    seeds = sorted({c["seed"] for c in cells})
    lines = [f"`{command}`", "", note, "",
             f"Cells: mean ± sample std over seeds {', '.join(map(str, seeds))}, in %. A defense *holds* against a "
             f"targeted attack when its attack success is at most {100 * HOLD_SUCCESS:.0f} points above the no-attack "
             f"level (FedAvg with the attackers training honestly, same experiments), and against an untargeted "
             f"attack when it loses at most {100 * HOLD_DROP:.0f} points of accuracy against its own clean run "
             f"(no attacker, same split and initial model). Cells where it fails are in **bold**.", ""]

    def cell_text(part, attack, rule, key):
        e = summ.get((part, attack, rule))
        if e is None:
            return "-"
        text = _pct(e[key])
        return f"**{text}**" if holds(e, attack) is False and rule != "fedavg" else text

    lines += ["## Which defense holds where", "",
              f"Per partition: targeted attacks held (of {len(targeted)}) / untargeted attacks held "
              f"(of {len(untargeted)}); the clean accuracy (no attacker) beside it.", ""]
    rows = []
    for rule in labels:
        row = [rule]
        for part in spec.partitions:
            t = [holds(summ[(part, a, rule)], a) for a in targeted if (part, a, rule) in summ]
            u = [holds(summ[(part, a, rule)], a) for a in untargeted if (part, a, rule) in summ]
            clean = summ.get((part, NO_ATTACK, rule))
            row.append(f"{sum(x is True for x in t)} / {sum(x is True for x in u)} "
                       f"(clean {_pct(clean['accuracy'], std=False) if clean else '-'}%)")
        rows.append(row)
    lines += _md_table(["rule"] + list(spec.partitions), rows) + [""]
    for part in spec.partitions:
        lines += [f"## {part}", "", "Attack success (the no-attack level in the last row):", ""]
        rows = [[rule] + [cell_text(part, a, rule, "attack_success") for a in targeted] for rule in labels]
        rows.append([BASELINE] + [_pct(summ[(part, a, BASELINE)]["attack_success"])
                                  if (part, a, BASELINE) in summ else "-" for a in targeted])
        lines += _md_table(["rule"] + targeted, rows) + [""]
        lines += ["Accuracy lost to the attack (the rule's clean accuracy minus its accuracy under attack; "
                  "negative: higher under attack):", ""]
        rows = []
        for rule in labels:
            row = [rule, _pct(summ[(part, NO_ATTACK, rule)]["accuracy"]) if (part, NO_ATTACK, rule) in summ else "-"]
            for a in spec.attacks:
                e = summ.get((part, a, rule))
                text = "-" if e is None else _pct(e["accuracy_drop"])
                if e is not None and not is_targeted(a) and holds(e, a) is False and rule != "fedavg":
                    text = f"**{text}**"
                row.append(text)
            rows.append(row)
        lines += _md_table(["rule", "clean accuracy"] + spec.attacks, rows) + [""]
    return "\n".join(lines)


def plot_heatmaps(spec: GridSpec, cells: List[Dict[str, Any]], out_dir: str, title: str = "") -> List[str]:
    """``attack_success.png`` (targeted attacks) and ``accuracy_drop.png`` (every
    attack): rules × attacks, one panel per partition, mean over seeds as the
    colour and ``mean ± std`` written in each cell. Returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = summarize(cells)
    labels = [parse_rule(r)[2] for r in spec.rules]
    written = []
    seeds = sorted({c["seed"] for c in cells})
    panels = {"attack_success": ([a for a in spec.attacks if is_targeted(a)], "attack success", "viridis", (0, 100)),
              "accuracy_drop": (spec.attacks, "accuracy lost to the attack (points)", "magma_r", (0, 60))}
    for key, (cols, what, cmap, (vmin, vmax)) in panels.items():
        if not cols:
            continue
        rows = labels + ([BASELINE] if key == "attack_success" else [])
        fig, axes = plt.subplots(1, len(spec.partitions), figsize=(0.75 * len(cols) * len(spec.partitions) + 3,
                                                                   0.34 * len(rows) + 2.2), squeeze=False)
        for ax, part in zip(axes[0], spec.partitions):
            grid = np.full((len(rows), len(cols)), np.nan)
            for i, rule in enumerate(rows):
                for j, a in enumerate(cols):
                    e = summ.get((part, a, rule))
                    st = None if e is None else e[key]
                    if st is None:
                        continue
                    grid[i, j] = 100 * st["mean"]
                    txt = f"{100 * st['mean']:.0f}" + (f"\n±{100 * st['std']:.0f}" if st["n"] > 1 else "")
                    shade = (grid[i, j] - vmin) / (vmax - vmin)
                    dark = shade < 0.5 if cmap == "viridis" else shade > 0.5
                    ax.text(j, i, txt, ha="center", va="center", fontsize=5.5, color="white" if dark else "black")
            im = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
            ax.set_xticks(range(len(cols)), cols, rotation=40, ha="right", fontsize=7)
            ax.set_yticks(range(len(rows)), rows if ax is axes[0][0] else [""] * len(rows), fontsize=7)
            ax.set_title(part, fontsize=9)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=what if key == "accuracy_drop" else f"{what} (%)")
        fig.suptitle(f"{what}: mean ± std over seeds {','.join(map(str, seeds))}" + (f"\n{title}" if title else ""),
                     fontsize=9)
        path = os.path.join(out_dir, f"{key}.png")
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def describe(spec: GridSpec) -> str:
    """One line: the experiment every cell shares."""
    c = spec.sim_config(spec.attacks[0] if spec.attacks else NO_ATTACK, spec.partitions[0], spec.seeds[0])
    return (f"{c.dataset}, {c.model}, {c.clients} clients ({c.per_round} per round), {c.attackers} attackers, "
            f"{c.rounds} rounds, local epochs {c.local_epochs} (attackers {c.attacker_epochs}), "
            f"Dirichlet α = {c.alpha}, shards of {c.classes_per_client} classes")
