"""Why a defense lets a backdoor through: each rule's own decisions, round by
round, on the grid's experiments (digits, 20 clients, 4 trojan attackers, the
defaults of `robustagg simulate`), and a check that our rule still matches its
reference code on the very updates of one round.

    python bench/defense_probe.py --partitions iid,dirichlet,shards --seeds 0 --out bench/results/defense_probe.md

Per rule and partition it records, averaged over the rounds:

* on the *trigger coordinates* (the first-layer weights of the trigger's
  pixels, where the backdoor is written): the share of them on which the
  aggregate moves the way the attackers push (sign of the aggregate equals the
  sign of the attackers' mean update, among coordinates the attackers move),
  and the same on all coordinates;
* rlr: the share of coordinates whose learning rate is flipped, on the trigger
  coordinates and overall; invariant: the share masked (set to 0), on both;
  coordinate-wise rules (median, trimmed mean, invariant): the share of
  trigger coordinates where an attacker's value is *kept* (not trimmed: inside
  the order statistics the rule averages);
* residual and foolsgold: the attackers' mean client weight against the honest
  clients' (×K, so 1 is an equal share); rflbat and krum-like rules: the share
  of attackers and of honest clients kept;
* the final attack success.

Then, for one round (``--check-round``), it saves the round's updates and runs
the reference code on them: the RLR and FoolsGold ports of the authors' code
(bench/peers.py), the authors' released residual code (the port in
python_tests/test_residual_released.py, against ``Residual(variant="released")``),
and plain numpy for the coordinate-wise rules (median, trimmed mean, the
invariant aggregator's AND-mask + trimmed mean). RFLBAT has no released code
to compare with; its decisions are reported instead.
"""
import argparse
import dataclasses
import datetime
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python_tests"))
import robustagg  # noqa: E402
import robustagg.aggregators as A  # noqa: E402
from robustagg.sim import simulator  # noqa: E402
from robustagg.sim.simulator import SimConfig, _Experiment, _run_rule  # noqa: E402
from _timing import publish  # noqa: E402

RULES = ["fedavg", "median", "trimmed_mean", "invariant", "rlr", "residual", "foolsgold", "rflbat"]


class Recorder:
    """Wraps a rule: calls it, and records its decisions on the round's updates."""

    def __init__(self, rule, name, exp, trigger_idx, check_round, saved):
        self.rule, self.name, self.exp = rule, name, exp
        self.trigger_idx = trigger_idx
        self.check_round, self.saved = check_round, saved
        self.rounds = []
        self.round = 0
        self.history = {}

    def __getattr__(self, item):
        return getattr(self.rule, item)

    def __call__(self, u, weights=None, client_ids=None):
        res = self.rule(u, weights=weights, client_ids=client_ids)
        att = torch.tensor([c in self.exp.attacker_ids for c in client_ids])
        rec = {}
        if att.any() and (~att).any():
            uu = u.double()
            push = uu[att].mean(0)
            agg = res.update.double()
            for key, idx in (("trigger", self.trigger_idx), ("all", torch.arange(u.shape[1]))):
                moved = push[idx] != 0
                rec[f"with_attackers_{key}"] = float((torch.sign(agg[idx][moved]) == torch.sign(push[idx][moved]))
                                                     .double().mean()) if moved.any() else math.nan
            info = res.info
            n = u.shape[0]
            if self.name == "rlr":
                votes = torch.sign(uu).sum(0).abs()
                flipped = votes < self.rule.threshold
                rec["flipped_trigger"] = float(flipped[self.trigger_idx].double().mean())
                rec["flipped_all"] = float(info["flipped_fraction"])
            if self.name in ("median", "trimmed_mean", "invariant"):
                trim = (n - 1) // 2 if self.name == "median" else info["trim"]
                col = uu[:, self.trigger_idx]
                rank = col.argsort(dim=0, stable=True).argsort(dim=0, stable=True)
                kept = (rank >= trim) & (rank < n - trim)
                rec["attacker_kept_trigger"] = float(kept[att].any(0).double().mean())
                if self.name == "invariant":
                    mask = torch.sign(uu).sum(0).abs() / n >= self.rule.tau
                    rec["masked_trigger"] = float((~mask[self.trigger_idx]).double().mean())
                    rec["masked_all"] = float(info["masked_fraction"])
            if self.name in ("residual", "foolsgold"):
                cw = res.client_weights.double() * n
                rec["attacker_weight"] = float(cw[att].mean())
                rec["honest_weight"] = float(cw[~att].mean())
            if self.name == "rflbat":
                kept = ~res.excluded
                rec["attackers_kept"] = float(kept[att].double().mean())
                rec["honest_kept"] = float(kept[~att].double().mean())
                rec["clusters"] = float(info["n_clusters"])
                rec["one_cluster_rounds"] = float(info["n_clusters"] == 1)
                # the median-cosine score (lowest is kept) of the clusters where honest clients, resp. attackers,
                # are the majority: which one RFLBAT's "backdoors are alike" premise picks
                out1 = set(info["outliers_stage1"])
                alive = [i for i, c in enumerate(client_ids) if c not in out1]
                labels = np.asarray(info["labels"])
                for who, pick in (("honest", ~att), ("attacker", att)):
                    best = [sc for c, sc in info["cluster_scores"].items()
                            if math.isfinite(sc) and (labels == int(c)).any()
                            and pick[[alive[i] for i in np.flatnonzero(labels == int(c))]].double().mean() > 0.5]
                    if best and info["n_clusters"] > 1:
                        rec[f"{who}_cluster_cosine"] = float(np.mean(best))
        for cid, row in zip(client_ids, u):
            self.history[cid] = self.history.get(cid, 0) + row.double()
        if self.round == self.check_round:
            self.saved[self.name] = {"updates": u.detach().clone(), "weights": weights.clone(),
                                     "ids": list(client_ids), "update": res.update.detach().clone(),
                                     "client_weights": res.client_weights.detach().clone(),
                                     "history": torch.stack([self.history[c] for c in client_ids])}
        self.rounds.append(rec)
        self.round += 1
        return res


def probe(cfg: SimConfig, rules, check_round):
    exp = _Experiment(cfg)
    h, w = exp.dataset.image_shape[-2:]
    pixels = exp.attack.trigger.mask(h, w).flatten().nonzero().flatten()
    first = next(iter(exp.init_params))         # fc1.weight (mlp) or fc.weight (logreg): [out, H*W], flattened first
    assert exp.init_params[first].shape[1] == h * w, "the probe reads the first layer of the mlp or logreg"
    hidden = exp.init_params[first].shape[0]
    trigger_idx = (torch.arange(hidden)[:, None] * (h * w) + pixels[None, :]).flatten()   # first[:, pixels]
    saved, out = {}, {}
    original = simulator.build_rule
    for spec in rules:
        box = {}

        def build(spec_, n, f, _box=box):
            rule, label, full = original(spec_, n, f)
            _box["rec"] = Recorder(rule, label.split("(")[0], exp, trigger_idx, check_round, saved)
            return _box["rec"], label, full

        simulator.build_rule = build
        try:
            _, res = _run_rule(exp, spec, None)
        finally:
            simulator.build_rule = original
        rows = box["rec"].rounds
        keys = sorted({k for r in rows for k in r})
        out[spec] = {"attack_success": res["final_attack_success"], "accuracy": res["final_accuracy"],
                     **{k: float(np.nanmean([r[k] for r in rows if k in r])) for k in keys}}
    return out, saved


def invariant_numpy(u, tau, trim):
    x = np.sort(u, axis=0)
    tm = x[trim:u.shape[0] - trim].mean(0)
    mask = np.abs(np.sign(u).sum(0)) / u.shape[0] >= tau
    return np.where(mask, tm, 0.0)


def checks(saved, cfg):
    """Ours against the reference code on one round's updates: the largest |difference| relative to the
    largest |value|."""
    from peers import foolsgold_authors, rlr_authors
    from test_residual_released import _released_port
    out = []

    def rel(a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))

    n, f = cfg.per_round, cfg.told_attackers
    for name, s in saved.items():
        u = s["updates"].double()
        un = u.numpy()
        rule, _, full = simulator.build_rule(name, n, f)
        ours = rule(u, weights=s["weights"], client_ids=s["ids"])
        if name == "rlr":
            ref = rlr_authors(u, s["weights"], rule.threshold).numpy()
            out.append((name, "Ozdayi et al.'s code (bench/peers.py port)", rel(ours.update, ref)))
        elif name == "median":
            out.append((name, "numpy.median", rel(ours.update, np.median(un, axis=0))))
        elif name == "trimmed_mean":
            trim = ours.info["trim"]
            ref = np.sort(un, axis=0)[trim:n - trim].mean(0)
            out.append((name, f"numpy sort, drop {trim} per tail, mean", rel(ours.update, ref)))
        elif name == "invariant":
            ref = invariant_numpy(un, rule.tau, ours.info["trim"])
            out.append((name, f"numpy AND-mask (τ = {rule.tau}) + trimmed mean ({ours.info['trim']} per tail)",
                        rel(ours.update, ref)))
        elif name == "residual":
            released = A.Residual(variant="released", delta=rule.delta)(u)
            w_ref, agg_ref = _released_port(u, rule.lam, rule.delta)
            out.append((name, "variant='released' vs the authors' released code (port)",
                        max(rel(released.update, agg_ref), rel(released.client_weights, w_ref))))
        elif name == "foolsgold":
            wv = foolsgold_authors(s["history"].numpy())
            ref = (wv[:, None] * un).sum(0) / n
            # ours keeps its own history from round 0 of its run: the same sums the recorder kept
            out.append((name, "Fung et al.'s foolsgold() on the clients' summed histories", rel(s["update"], ref)))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--partitions", default="iid,dirichlet,shards")
    p.add_argument("--seeds", default="0")
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--attack", default="trojan")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a SimConfig option")
    p.add_argument("--check-round", type=int, default=10)
    p.add_argument("--setting", metavar="PAPER:GROUP:INDEX",
                   help="probe a `robustagg reproduce` setting (its cpu-scale config) instead of the digits defaults; "
                   "--partitions and --set still apply")
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(1)
    from robustagg.sim.simulator import _literal
    base = {k: _literal(v) for k, v in (s.split("=", 1) for s in args.set)}
    rules = args.rules.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    what = f"the setting {args.setting} of `robustagg reproduce`" if args.setting else f"{args.attack} on digits"
    lines = [f"# What the rules decide: {what}", "",
             f"`python bench/defense_probe.py --partitions {args.partitions} --seeds {args.seeds} --rules {args.rules} "
             + (f"--setting {args.setting}" if args.setting else f"--attack {args.attack}")
             + "".join(f" --set {s}" for s in args.set) + "`; robustagg "
             f"{robustagg.__version__}, {datetime.date.today().isoformat()}, 1 thread. Means over the rounds "
             "(and the seeds); shares in %. *Trigger coordinates*: the first-layer weights of the trigger's "
             "pixels. *with attackers*: share of the coordinates the attackers move on which the aggregate moves "
             "their way.", ""]
    checks_out = []
    for part in args.partitions.split(","):
        per_seed = []
        for seed in seeds:
            if args.setting:
                from robustagg.sim import reproduce as rep
                key, group, index = args.setting.split(":")
                fields = dataclasses.asdict(rep.settings_of(key, group)[int(index)].sim_config("cpu"))
                cfg = SimConfig(**{**fields, **base, "partition": part, "seed": seed, "rules": rules,
                                   "baseline": False})
            else:
                cfg = SimConfig(**{**base, "partition": part, "seed": seed, "attack": args.attack, "rules": rules,
                                   "baseline": False})
            res, saved = probe(cfg, rules, args.check_round)
            per_seed.append(res)
            if seed == seeds[0]:
                checks_out += [(part, *c) for c in checks(saved, cfg)]
            print(part, seed, {r: round(v["attack_success"], 3) for r, v in res.items()}, flush=True)
        cols = ["attack_success", "with_attackers_trigger", "with_attackers_all", "flipped_trigger", "flipped_all",
                "masked_trigger", "masked_all", "attacker_kept_trigger", "attacker_weight", "honest_weight",
                "attackers_kept", "honest_kept", "clusters", "one_cluster_rounds", "honest_cluster_cosine",
                "attacker_cluster_cosine"]
        lines += [f"## {part}", "", "| rule | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
                  "|---|" + "---:|" * len(cols)]
        for r in rules:
            cells = []
            for c in cols:
                vals = [s[r].get(c) for s in per_seed if s[r].get(c) is not None]
                if not vals or all(isinstance(v, float) and math.isnan(v) for v in vals):
                    cells.append("")
                    continue
                v = float(np.nanmean(vals))
                cells.append(f"{v:.2f}" if c.endswith(("weight", "cosine")) or c == "clusters" else f"{100 * v:.0f}")
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"## Ours against the reference code, on the updates of round {args.check_round} (seed {seeds[0]})",
              "", "| partition | rule | reference | max abs difference / max abs value |", "|---|---|---|---:|"]
    lines += [f"| {p_} | {r} | {ref} | {d:.1e} |" for p_, r, ref, d in checks_out]
    publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
