"""The ``robustagg`` command.

    robustagg simulate [options]     run an FL experiment (default: digits, trojan backdoor, 9 rules)
    robustagg reproduce PAPER        a seed paper's headline experiment, ours beside the paper's numbers
    robustagg grid [options]         every rule x every attack x every partition, tables and heatmaps
    robustagg info                   what the installed native core holds
    robustagg rules | attacks        the names accepted by --rules / --attack
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
from typing import Any, Dict, List, Optional

__all__ = ["main"]


class _Progress:
    """A one-line progress bar on stderr (tqdm's when installed); silent when disabled."""

    def __init__(self, rules: List[str], rounds: int, enabled: bool):
        self.total = len(rules) * rounds
        self.done = 0
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=self.total, unit="round", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def __call__(self, label, done, rounds, metrics):
        if not self.enabled:
            return
        self.done += 1
        asr = metrics.get("attack_success")
        status = f"{label} {done}/{rounds} acc {metrics['accuracy']:.3f}" + (
            "" if asr is None else f" attack {asr:.3f}")
        if self.bar is not None:
            self.bar.set_description_str(label)
            self.bar.set_postfix_str(status.split(" ", 1)[1])
            self.bar.update(1)
            return
        if self.tty:
            width = 30
            fill = int(width * self.done / self.total)
            sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {100 * self.done // self.total:3d}% "
                             f"{status:<60}")
            sys.stderr.flush()
        elif done == rounds:
            sys.stderr.write(f"{status}\n")

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.tty:
            sys.stderr.write("\n")


def _split_top_level(text: str) -> List[str]:
    """Splits ``"a,b(x=1, y=2),c"`` at the commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [s.strip() for s in out if s.strip()]


def _key_value(text: str):
    from .sim.simulator import _literal
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; got {text!r}")
    k, v = text.split("=", 1)
    return k.strip().replace("-", "_"), _literal(v.strip())


def _load_config(path: str) -> Dict[str, Any]:
    if not os.path.exists(path):
        raise ValueError(f"--config: no such file {path!r}")
    if path.endswith(".toml"):
        try:
            import tomllib
        except ImportError:             # Python < 3.11
            try:
                import tomli as tomllib
            except ImportError:
                raise ValueError("--config: TOML needs Python >= 3.11 or `pip install tomli`; "
                                 "a JSON config works everywhere") from None
    try:
        if path.endswith(".toml"):
            with open(path, "rb") as f:
                cfg = tomllib.load(f)
        else:
            with open(path) as f:
                cfg = json.load(f)
    except Exception as e:      # a parse error of either format, reported as a message
        raise ValueError(f"--config: cannot parse {path!r}: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"--config: {path!r} must hold a table/object of options")
    return {k.replace("-", "_"): v for k, v in cfg.items()}


def _simulate_parser(sub):
    p = sub.add_parser("simulate", help="run a federated-learning experiment comparing rules under an attack",
                       description="Run FL with every rule in --rules on the same clients, data and attack; "
                                   "print a results table and write results.json/.csv (and a plot) "
                                   "to the output folder.")
    S = argparse.SUPPRESS       # unset options fall back to --config, then to SimConfig's defaults
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file with any of the options below")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=S, help="digits (default) | fashion_mnist | synthetic")
    g.add_argument("--data-path", default=S, help="folder of the Fashion-MNIST idx files "
                   "(default /usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist)")
    g.add_argument("--partition", default=S, help="iid (default) | dirichlet | shards")
    g.add_argument("--alpha", type=float, default=S, help="Dirichlet concentration (default 0.5)")
    g.add_argument("--classes-per-client", type=int, default=S, help="shards partition (default 2)")
    g = p.add_argument_group("federation")
    g.add_argument("--clients", type=int, default=S, help="K, number of clients (default 20)")
    g.add_argument("--fraction", type=float, default=S, help="C, fraction sampled per round (default 1.0)")
    g.add_argument("--rounds", type=int, default=S, help="default 30")
    g.add_argument("--server-lr", type=float, default=S, help="η in w <- w + η g (default 1.0)")
    g = p.add_argument_group("local training")
    g.add_argument("--model", default=S, help="logreg | mlp (default) | cnn")
    g.add_argument("--hidden", type=int, default=S, help="hidden width of mlp (64) / cnn (128)")
    g.add_argument("--local-epochs", type=int, default=S, help="E (default 2)")
    g.add_argument("--batch-size", type=int, default=S, help="B (default 16)")
    g.add_argument("--lr", type=float, default=S, help="client learning rate (default 0.1)")
    g.add_argument("--momentum", type=float, default=S, help="clients' SGD momentum, attackers' too (default 0)")
    g.add_argument("--attacker-epochs", type=int, default=S, help="attackers' E (default 5)")
    g.add_argument("--attacker-lr", type=float, default=S, help="attackers' lr (default: --lr)")
    g.add_argument("--local-training", default=S, help="batched (default: vmap over clients) | sequential "
                   "(a loop; faster for the cnn on CPU)")
    g = p.add_argument_group("attack")
    g.add_argument("--attack", default=S, help="trojan (default) | dba | model_replacement | constrain_scale | "
                   "label_flip | sign_flip | gaussian | alie | andmask_adaptive | none")
    g.add_argument("--attackers", type=int, default=S, help="malicious clients among K (default 4)")
    g.add_argument("--assumed-attackers", type=int, default=S, metavar="N",
                   help="attackers per round that f-aware rules (krum, trimmed_mean, rlr, invariant, ...) are told "
                   "(default: the true expected count, an oracle as in the papers)")
    g.add_argument("--attacker-pick", default=S, help="random (default) | base_holders (attackers drawn among the "
                   "clients holding the attack's base class, as Fu et al. pick their label flippers)")
    g.add_argument("--attack-param", action="append", type=_key_value, default=S, metavar="KEY=VALUE",
                   help="an attack parameter, repeatable (e.g. --attack-param gamma=10)")
    g = p.add_argument_group("run")
    g.add_argument("--rules", default=S, help="comma-separated rules, each 'name' or 'name(param=value, ...)' "
                   "(default: fedavg,median,trimmed_mean,krum,foolsgold,rlr,residual,rflbat,invariant)")
    g.add_argument("--device", default=S, help="cpu (default) | cuda | cuda:i")
    g.add_argument("--seed", type=int, default=S, help="fixes data split, attackers, init, sampling (default 0)")
    g.add_argument("--seeds", default=S, metavar="S1,S2,...",
                   help="run the comparison once per seed and report mean ± std per rule (e.g. 0,1,2)")
    p.add_argument("--out", help="output folder (default runs/simulate-<date>-<time>)")
    p.add_argument("--no-plot", action="store_true", help="do not write results.png")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the no-attack FedAvg run that gives attack success its reference")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


_NOT_CONFIG = ("config", "out", "no_plot", "no_baseline", "quiet", "command", "attack_param")


def _config_from_args(args) -> "SimConfig":
    """The SimConfig of --config and the flags (flags win), with every option
    checked (:meth:`SimConfig.validate`) and none given that would do nothing."""
    from .sim.simulator import SimConfig

    values: Dict[str, Any] = {}
    from_config: Dict[str, Any] = {}
    if getattr(args, "config", None):
        from_config = _load_config(args.config)
        values.update(from_config)
    explicit = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    values.update(explicit)
    if hasattr(args, "attack_param"):
        values["attack_params"] = {**values.get("attack_params", {}), **dict(args.attack_param)}
    if isinstance(values.get("rules"), str):
        values["rules"] = _split_top_level(values["rules"])
    given = set(values)
    if "seed" in given and "seeds" in given:
        raise ValueError(f"{_option('seed', explicit)} and {_option('seeds', explicit)} together: --seeds runs "
                         f"the comparison once per seed; give one of them")
    for key in ("out", "no_plot", "quiet", "no_baseline", "seeds"):
        values.pop(key, None)
    if getattr(args, "no_baseline", False):
        values["baseline"] = False
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    cfg = SimConfig(**values)
    cfg.validate()
    for key, why in cfg.unused_options().items():
        if key in given:
            raise ValueError(f"{_option(key, explicit)} has no effect here: {why}")
    return cfg


def _option(key: str, explicit: Dict[str, Any]) -> str:
    """How the user gave option ``key``: its flag, or its key in --config."""
    return "--" + key.replace("_", "-") if key in explicit else f"{key!r} (in --config)"


def _seeds_from_args(args) -> Optional[List[int]]:
    """--seeds (or "seeds" in --config) as a list of ints, or None."""
    from .sim.simulator import MAX_SEED

    raw = getattr(args, "seeds", None)
    if raw is None and getattr(args, "config", None):
        raw = _load_config(args.config).get("seeds")
    if raw is None:
        return None
    items = raw if isinstance(raw, list) else [x for x in str(raw).replace(" ", "").split(",") if x]
    try:
        if any(isinstance(x, (bool, float)) for x in items):
            raise TypeError
        seeds = [int(x) for x in items]
    except (TypeError, ValueError):
        raise ValueError(f"--seeds must be comma-separated integers, e.g. 0,1,2; got {raw!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must list distinct integers; got {raw!r}")
    if not all(0 <= x <= MAX_SEED for x in seeds):
        raise ValueError(f"--seeds must be integers in [0, {MAX_SEED}]; got {raw!r}")
    return seeds


def _out_folder(args, kind: str) -> str:
    if args.out is not None and not args.out.strip():
        raise ValueError("--out must name a folder; got an empty string")
    return args.out or _default_out(kind)


def _default_out(kind: str = "simulate") -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join("runs", f"{kind}-{stamp}")
    out, i = base, 1
    while os.path.exists(out):
        out, i = f"{base}-{i}", i + 1
    return out


def _writable_folder(out: str) -> None:
    """Creates ``out`` and checks that a file can be written there, before any training."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".robustagg-write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"--out {out!r} cannot be written: {e.strerror or e}") from None


def _simulate(args) -> int:
    from . import attacks
    from .sim.simulator import format_table, parse_rule, run, run_seeds, write_outputs

    cfg = _config_from_args(args)           # every option checked: nothing is created before
    seeds = _seeds_from_args(args)
    out = _out_folder(args, "simulate")
    _writable_folder(out)
    labels = [parse_rule(r)[2] for r in cfg.rules]
    targeted = attacks.attack_class(cfg.attack).success_set is not attacks.Attack.success_set
    baseline = cfg.baseline and targeted and cfg.attackers > 0
    print(f"robustagg simulate: {cfg.dataset}, {cfg.clients} clients ({cfg.per_round} per round), "
          f"{cfg.rounds} rounds, attack {cfg.attack} by {cfg.attackers} clients, {len(labels)} rules"
          f"{' + a no-attack baseline' if baseline else ''}, device {cfg.device}, "
          + (f"seeds {','.join(map(str, seeds))}" if seeds else f"seed {cfg.seed}"), flush=True)
    progress = _Progress((labels + (["no attack"] if baseline else [])) * (len(seeds) if seeds else 1), cfg.rounds,
                         enabled=not args.quiet)
    files: List[str] = []

    def save(results):  # after every rule: a long comparison leaves its results as it goes
        files[:] = write_outputs(results, out, plot=not args.no_plot)

    try:
        if seeds:
            results = run_seeds(cfg, seeds, progress=progress, on_seed_done=save)
        else:
            results = run(cfg, progress=progress, on_rule_done=save)
    finally:
        progress.close()
    print(format_table(results))
    for run_ in results.get("runs", [results]):
        for warning in run_["experiment"].get("warnings", []):
            print(f"warning (seed {run_['config']['seed']}): {warning}", file=sys.stderr)
    if targeted:
        print("attack success: the share of base-class test images that, with the trigger stamped on, "
              "the final model classifies as the target class"
              + ("; the no-attack row is its level when no client attacks." if baseline else "."))
    print(f"results written to {out}/ ({', '.join(os.path.basename(f) for f in files)})")
    return 0


_PAPERS = ("rlr", "residual", "rflbat", "invariant", "backdoor")     # robustagg.sim.reproduce.PAPERS, kept light


def _reproduce_parser(sub):
    p = sub.add_parser("reproduce", help="run a seed paper's headline experiment; print ours beside the paper's",
                       description="Run a seed paper's headline experiment with the simulator and print, for every "
                                   "number of the paper's table, ours (mean ± std over the seeds) beside it. "
                                   "Writes reproduce.json, reproduce.md and each setting's results to --out.")
    p.add_argument("paper", choices=_PAPERS, help="rlr (Ozdayi et al.), residual (Fu et al.), rflbat (Wang et al.), "
                   "invariant (the invariant aggregator), backdoor (Bagdasaryan et al.)")
    p.add_argument("--scale", choices=("cpu", "paper"), default="cpu",
                   help="cpu (default): minutes on a small CPU, scaled down as printed; paper: the paper's "
                   "federation, rounds and training (meant for a GPU: --device cuda)")
    p.add_argument("--seeds", default="0,1,2", metavar="S1,S2,...", help="default 0,1,2")
    p.add_argument("--rounds", type=int, default=None, help="override the scale's rounds (a quick look)")
    p.add_argument("--group", choices=("headline", "noniid"), default=None,
                   help="only the paper's headline table (headline) or its experiments off i.i.d. data (noniid); "
                   "default: every setting")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:i")
    p.add_argument("--out", help="output folder (default runs/reproduce-<paper>-<scale>-<date>-<time>)")
    p.add_argument("--no-plot", action="store_true", help="do not write each setting's results.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _reproduce(args, argv) -> int:
    from .sim import reproduce as rep
    from .sim.simulator import parse_rule, write_outputs

    seeds = _seeds_from_args(args)
    if args.rounds is not None and args.rounds < 1:
        raise ValueError(f"--rounds must be a positive integer; got {args.rounds}")
    paper = rep.PAPERS[args.paper]
    settings = rep.settings_of(args.paper, args.group)
    configs = [s.sim_config(args.scale, args.device, args.rounds) for s in settings]
    for cfg in configs:                 # device, data, attack and rules: checked before anything is created
        cfg.validate()
    out = _out_folder(args, f"reproduce-{args.paper}-{args.scale}")
    _writable_folder(out)
    labels = [parse_rule(r)[2] for c in configs for r in c.rules] + ["no attack"] * sum(c.baseline for c in configs)
    override = rep.rounds_override(args.paper, args.scale, args.rounds, args.group)
    print(f"robustagg reproduce {args.paper}: {paper.notes(args.group)[0]}\n  scale {args.scale}, seeds "
          f"{','.join(map(str, seeds))}, {len(settings)} setting(s), device {args.device}"
          + (f"\n  {rep.override_text(override)}" if override else ""), flush=True)
    if args.scale == "paper" and not args.device.startswith("cuda"):
        models = sorted({c.model for c in configs})
        print(f"warning: --scale paper on {args.device}: the paper's federation and training "
              f"({', '.join(models)}, {max(c.clients for c in configs)} clients, up to "
              f"{max(c.rounds for c in configs)} rounds) take minutes per round on a CPU; it is meant for "
              f"--device cuda", file=sys.stderr, flush=True)
    progress = _Progress(labels * len(seeds), max(c.rounds for c in configs), enabled=not args.quiet)
    command = "robustagg " + " ".join(argv)

    def save(entry, so_far):
        slug = f"{len(so_far['settings'])}_" + "".join(c if c.isalnum() else "_" for c in entry["title"].lower())[:50]
        write_outputs(entry["results"], os.path.join(out, slug), plot=not args.no_plot)
        light = {**so_far, "command": command,
                 "settings": [{k: v for k, v in s.items() if k != "results"} for s in so_far["settings"]]}
        with open(os.path.join(out, "reproduce.json"), "w") as f:
            json.dump(light, f, indent=1)
        with open(os.path.join(out, "reproduce.md"), "w") as f:
            f.write(rep.reproduction_markdown(so_far, command) + "\n")

    try:
        result = rep.reproduce(args.paper, scale=args.scale, seeds=seeds, device=args.device, rounds=args.rounds,
                               progress=progress, on_setting_done=save, group=args.group)
    finally:
        progress.close()
    print(rep.format_reproduction(result))
    print(f"results written to {out}/ (reproduce.md, reproduce.json, one folder per setting)")
    return 0


def _grid_parser(sub):
    p = sub.add_parser("grid", help="every rule against every attack on every partition: tables and heatmaps",
                       description="Run every rule against every attack (and with no attack) on the iid, "
                                   "dirichlet and shards partitions, over several seeds, with the simulator's "
                                   "defaults (digits). Finished cells are appended to OUT/grid.csv; a re-run "
                                   "with the same --out runs only the missing ones. Writes grid.md and the "
                                   "heatmaps attack_success.png and accuracy_drop.png.")
    p.add_argument("--seeds", default="0,1,2", metavar="S1,S2,...", help="default 0,1,2")
    p.add_argument("--rules", default=None, help="comma-separated rules (default: every rule of `robustagg rules`; "
                   "sign with the RLR paper's server lr 0.001)")
    p.add_argument("--attacks", default=None, help="comma-separated attacks (default: every attack of "
                   "`robustagg attacks` but none; the no-attack column is always run)")
    p.add_argument("--partitions", default="iid,dirichlet,shards", help="default iid,dirichlet,shards")
    p.add_argument("--set", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="a simulate option for every cell, repeatable (e.g. --set rounds=20 --set dataset=fmnist)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", help="output folder (default runs/grid-<dataset>); re-running resumes it")
    p.add_argument("--no-plot", action="store_true", help="do not write the heatmaps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _grid(args, argv) -> int:
    from .sim import grid as grid_mod

    seeds = _seeds_from_args(args)
    base = dict(args.set)
    if "rules" in base or "seeds" in base:
        raise ValueError("--set rules/seeds: use --rules and --seeds")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive integer; got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)
    kw = {}
    if args.rules is not None:
        kw["rules"] = _split_top_level(args.rules)
    if args.attacks is not None:
        kw["attacks"] = _split_top_level(args.attacks)
    spec = grid_mod.GridSpec(partitions=_split_top_level(args.partitions), seeds=seeds, base=base, **kw)
    spec.validate()
    out = args.out or os.path.join("runs", f"grid-{spec.sim_config('none', spec.partitions[0], seeds[0]).dataset}")
    if args.out is not None and not args.out.strip():
        raise ValueError("--out must name a folder; got an empty string")
    _writable_folder(out)
    import torch
    print(f"robustagg grid: {len(spec.rules)} rules x {len(spec.attacks)} attacks (+ no attack) x "
          f"{len(spec.partitions)} partitions x {len(seeds)} seeds; {grid_mod.describe(spec)}; "
          f"{torch.get_num_threads()} thread(s); cells in {out}/grid.csv", flush=True)
    result = grid_mod.run_grid(spec, out, progress=not args.quiet)
    command = "robustagg " + " ".join(argv)
    cell_minutes = sum(c["seconds"] or 0.0 for c in result["cells"]) / 60
    note = (f"{grid_mod.describe(spec)}. {torch.get_num_threads()} torch thread(s); the {len(result['cells'])} "
            f"cells' runs add up to {cell_minutes:.1f} min; this call ran {result['ran']} of them in "
            f"{result['seconds'] / 60:.1f} min (wall clock, with data loading and setup).")
    with open(os.path.join(out, "grid.md"), "w") as f:
        f.write("# Every rule against every attack on every partition\n\n"
                + grid_mod.grid_markdown(spec, result["cells"], command, note) + "\n")
    files = ["grid.csv", "grid.md"]
    if not args.no_plot:
        files += [os.path.basename(p) for p in grid_mod.plot_heatmaps(spec, result["cells"], out,
                                                                      title=grid_mod.describe(spec))]
    print(f"ran {result['ran']} cells in {result['seconds']:.0f} s; results written to {out}/ ({', '.join(files)})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="robustagg", description="Robust aggregation for federated learning.")
    parser.add_argument("--version", action="version", version=f"robustagg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sim = _simulate_parser(sub)
    _reproduce_parser(sub)
    _grid_parser(sub)
    sub.add_parser("info", help="what the installed native core holds")
    sub.add_parser("rules", help="the aggregation rules (names for --rules)")
    sub.add_parser("attacks", help="the attacks (names for --attack)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "reproduce":
            return _reproduce(args, argv)
        if args.command == "grid":
            return _grid(args, argv)
        if args.command == "info":
            import robustagg
            print(json.dumps(robustagg.native_info(), indent=2))
            return 0
        if args.command == "rules":
            from . import aggregators
            print("\n".join(aggregators.available()))
            return 0
        if args.command == "attacks":
            from . import attacks
            print("\n".join(attacks.available()))
            return 0
        parser.print_help()
        return 2
    except (ValueError, FileNotFoundError) as e:
        prog = f"robustagg {args.command}" if args.command else "robustagg"
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
