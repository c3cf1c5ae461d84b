"""``robustagg grid``: the cells it runs, resuming a folder, the summary arithmetic and the files it writes."""
import csv
import os

import pytest

from robustagg import cli
from robustagg.sim import grid

# Small enough for CI: 2 rules x 1 attack (+ the no-attack column) x 2 partitions x 1 seed, 2 rounds of digits.
SMALL = dict(rules=["fedavg", "median"], attacks=["trojan"], partitions=["iid", "shards"], seeds=[0],
             base={"rounds": 2})


def _rows(path):
    with open(os.path.join(path, "grid.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small_grid(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("grid"))
    code = cli.main(["grid", "--rules", "fedavg,median", "--attacks", "trojan", "--partitions", "iid,shards",
                     "--seeds", "0", "--set", "rounds=2", "--threads", "1", "--quiet", "--out", out])
    assert code == 0
    return out


def test_every_cell_runs_once_with_its_no_attack_references(small_grid):
    rows = _rows(small_grid)
    keys = [(r["partition"], r["attack"], r["seed"], r["rule"]) for r in rows]
    assert len(keys) == len(set(keys))
    # per partition: 2 rules with no attacker, 2 rules under the trojan, and the trojan's FedAvg-honest baseline
    assert sorted(keys) == sorted((p, a, "0", r) for p in ("iid", "shards")
                                  for a, r in [("none", "fedavg"), ("none", "median"), ("trojan", "fedavg"),
                                               ("trojan", "median"), ("trojan", grid.BASELINE)])
    for r in rows:
        assert 0.0 <= float(r["accuracy"]) <= 1.0
        assert (r["attack_success"] == "") == (r["attack"] == "none")


def test_the_tables_and_heatmaps_are_written(small_grid):
    for name in ("grid.md", "attack_success.png", "accuracy_drop.png", "grid_config.json"):
        path = os.path.join(small_grid, name)
        assert os.path.getsize(path) > 0, name
    with open(os.path.join(small_grid, "attack_success.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(small_grid, "grid.md")) as f:
        text = f.read()
    assert "## iid" in text and "## shards" in text and "| median |" in text


def test_a_rerun_skips_the_finished_cells_and_runs_a_missing_one(small_grid):
    spec = grid.GridSpec(**SMALL)
    again = grid.run_grid(spec, small_grid, progress=False)
    assert again["ran"] == 0 and len(again["cells"]) == 10
    rows = _rows(small_grid)
    dropped = [r for r in rows if r["partition"] == "shards" and r["attack"] == "trojan" and r["rule"] == "median"]
    kept = [r for r in rows if r not in dropped]
    with open(os.path.join(small_grid, "grid.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(kept)
    cells = []
    third = grid.run_grid(spec, small_grid, progress=False, on_cell=cells.append)
    assert third["ran"] == 1
    assert [(c["partition"], c["attack"], c["rule"]) for c in cells] == [("shards", "trojan", "median")]
    # the same experiment: the cell run again equals the one dropped
    assert cells[0]["accuracy"] == pytest.approx(float(dropped[0]["accuracy"]), abs=1e-12)


def test_another_grid_in_the_same_folder_is_refused(small_grid):
    spec = grid.GridSpec(**{**SMALL, "base": {"rounds": 3}})
    with pytest.raises(ValueError, match="another grid"):
        grid.run_grid(spec, small_grid, progress=False)


def test_summary_arithmetic_by_hand():
    def cell(part, attack, seed, rule, acc, asr=None):
        return {"partition": part, "attack": attack, "seed": seed, "rule": rule, "accuracy": acc,
                "attack_success": asr}
    cells = [cell("iid", "none", 0, "median", 0.90), cell("iid", "none", 1, "median", 0.80),
             cell("iid", "trojan", 0, "median", 0.85, 0.30), cell("iid", "trojan", 1, "median", 0.70, 0.10),
             cell("iid", "trojan", 0, grid.BASELINE, 0.9, 0.02), cell("iid", "trojan", 1, grid.BASELINE, 0.9, 0.06),
             cell("iid", "sign_flip", 0, "median", 0.88), cell("iid", "sign_flip", 1, "median", 0.60)]
    s = grid.summarize(cells)
    m = s[("iid", "trojan", "median")]
    assert m["accuracy_drop"]["mean"] == pytest.approx((0.05 + 0.10) / 2)
    assert m["attack_success"]["mean"] == pytest.approx(0.20)
    assert m["attack_success"]["std"] == pytest.approx(0.1414213562, rel=1e-6)
    assert m["no_attack_success"]["mean"] == pytest.approx(0.04)
    assert grid.holds(m, "trojan") is False            # 0.20 - 0.04 = 0.16 > 0.10
    b = s[("iid", "sign_flip", "median")]
    assert b["accuracy_drop"]["mean"] == pytest.approx((0.02 + 0.20) / 2)
    assert grid.holds(b, "sign_flip") is False         # 11 points lost > 5
    assert s[("iid", "none", "median")]["accuracy_drop"] is None


def test_the_default_grid_is_every_rule_and_every_attack():
    spec = grid.GridSpec()
    from robustagg import aggregators, attacks
    assert [r.split("(")[0] for r in spec.rules] == aggregators.available()
    assert sorted(spec.attacks) == sorted(a for a in attacks.available() if a != "none")
    assert spec.partitions == ["iid", "dirichlet", "shards"]
    cfg = spec.sim_config("none", "iid", 0)
    assert cfg.attackers == 0 and cfg.told_attackers == spec.sim_config("trojan", "iid", 0).told_attackers


@pytest.mark.parametrize("argv,message", [
    (["--set", "bogus=1"], "unknown simulate option 'bogus'"),
    (["--set", "rounds=x"], "rounds must be an integer"),
    (["--set", "seed=3"], "'seed' is set by the grid"),
    (["--rules", "fedavg,fedavg"], "rules must not repeat"),
    (["--seeds", "-1"], "--seeds must be integers"),
])
def test_bad_options_exit_2_naming_them_before_any_folder_is_made(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert cli.main(["grid", "--quiet", "--out", str(out)] + argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
