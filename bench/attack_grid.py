"""Do the backdoors land? FedAvg's final attack success for each backdoor
attack on each partition of digits, with no flag but partition, attack and
seed (the defaults of `robustagg simulate`), over several seeds, beside the
no-attack level. Also the RLR paper's own-data trojan, for contrast.

    python bench/attack_grid.py --out bench/results/attack_grid_digits.md
"""
import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import robustagg  # noqa: E402
from robustagg.sim.simulator import SimConfig, run_seeds  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _timing import publish  # noqa: E402

ATTACKS = [("trojan", {}), ("dba", {}), ("model_replacement", {}), ("constrain_scale", {}),
           ("trojan", {"data": "own"})]
PARTITIONS = ["iid", "dirichlet", "shards"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out")
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    header = ("| attack | " + " | ".join(PARTITIONS) + " |\n|---|" + "---:|" * len(PARTITIONS))
    rows = []
    for attack, params in ATTACKS:
        cells = []
        for part in PARTITIONS:
            res = run_seeds(SimConfig(partition=part, attack=attack, attack_params=params, rules=["fedavg"]), seeds)
            fed = res["summary"]["rules"]["fedavg"]["final_attack_success"]
            base = res["summary"]["baseline"]["final_attack_success"]
            poisoned = min(min(r["experiment"]["poisoned_samples"]) for r in res["runs"])
            cells.append(f"{100 * fed['mean']:.0f} ± {100 * fed['std']:.0f}% "
                         f"(no attack {100 * base['mean']:.0f}%; min poisoned/attacker {poisoned})")
            print(attack, params, part, cells[-1], flush=True)
        label = attack + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    text = ("# Backdoor attacks on every partition (digits, FedAvg)\n\n"
            f"`python bench/attack_grid.py --seeds {args.seeds}`; robustagg {robustagg.__version__}, "
            f"{datetime.date.today().isoformat()}. Defaults of `robustagg simulate` (20 clients, 4 attackers, "
            "30 rounds, MLP); cells: FedAvg's final attack success, mean ± std over seeds "
            f"{args.seeds}; in brackets the no-attack level (FedAvg with the attackers training honestly) and "
            "the fewest poisoned samples any attacker had.\n\n" + header + "\n" + "\n".join(rows) + "\n")
    publish(text, args.out)


if __name__ == "__main__":
    main()
