"""Shared by the paper-reproduction examples: run configs, print tables and a verdict."""
import argparse
import os
import sys

from robustagg.sim.simulator import SimConfig, format_table, run, write_outputs


def parser(description, rounds):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for results.json/.csv of every setting")
    return ap


def run_setting(title, args, **config):
    print(f"\n== {title}", flush=True)
    cfg = SimConfig(rounds=args.rounds, device=args.device, seed=args.seed, **config)
    res = run(cfg)
    print(format_table(res), flush=True)
    if args.out:
        slug = "".join(c if c.isalnum() else "_" for c in title.lower()).strip("_")
        write_outputs(res, os.path.join(args.out, slug), plot=False)
    return res


def asr(res, rule):
    v = res["rules"][rule]["final_attack_success"]
    return float("nan") if v is None else v


def verdict(claim, holds, detail):
    """The last line of every example: whether the paper's claim holds on this run."""
    print(f"\nverdict: {claim}: {'HOLDS' if holds else 'DOES NOT HOLD'} here ({detail})")
    return holds


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)
