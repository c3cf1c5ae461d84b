"""RFLBAT (Wang et al.) as the share of attackers grows.

Paper: RFLBAT (PCA to 2-D, outlier removal, KMeans with the gap statistic, cluster
choice by cosine similarity) keeps backdoor success near 0 with a growing number
of attackers ("DNA" experiments, 100 clients per round), including settings
where attackers are not a small minority, where Krum/FoolsGold-style defenses
and FedAvg fail.

Here: digits over 30 clients, a trojan backdoor (1 -> 7, every base-class sample
poisoned) by 3, 9 and 12 clients (10%, 30%, 40%); FedAvg, Multi-Krum, FoolsGold
and RFLBAT. Prints a table per setting, RFLBAT's attackers-flagged rate and a
verdict line.

    python examples/rflbat_many_attackers.py [--rounds 20]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _paper import asr, parser, run_setting, verdict  # noqa: E402


def main():
    args = parser(__doc__.splitlines()[0], rounds=20).parse_args()
    summary = []
    for attackers in (3, 9, 12):
        res = run_setting(f"trojan by {attackers} of 30 clients", args, dataset="digits", clients=30,
                          attackers=attackers, attack="trojan", attack_params={"poison_fraction": 1.0, "data": "own"},
                          rules=["fedavg", "multikrum", "foolsgold", "rflbat"])
        summary.append((attackers, asr(res, "fedavg"), asr(res, "rflbat"),
                        res["rules"]["rflbat"]["mean_true_positive_rate"]))
    print("\nattackers  FedAvg attack success  RFLBAT attack success  RFLBAT attackers flagged")
    for a, f, r, t in summary:
        print(f"{a:9d}  {f:21.1%}  {r:20.1%}  {t:24.1%}")
    verdict("RFLBAT keeps backdoor success near 0 as the share of attackers grows",
            all(r <= 0.1 for _, _, r, _ in summary),
            "; ".join(f"{a} attackers: RFLBAT {r:.1%} vs FedAvg {f:.1%}" for a, f, r, _ in summary))


if __name__ == "__main__":
    main()
