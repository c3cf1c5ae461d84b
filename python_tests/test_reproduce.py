"""``robustagg reproduce``: the papers' cells name rows that run, the verdict
arithmetic by hand, and a short end-to-end run of the command."""
import json
import math
import os

import pytest
import torch

from robustagg import cli
from robustagg.sim import reproduce as rep
from robustagg.sim import data
from robustagg.sim.data import fashion_mnist_available
from robustagg.sim.simulator import parse_rule


def test_the_command_knows_every_paper():
    assert set(cli._PAPERS) == set(rep.PAPERS) == {"rlr", "residual", "rflbat", "invariant", "backdoor"}


@pytest.mark.parametrize("key", sorted(rep.PAPERS))
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_every_cell_names_a_row_of_its_setting_and_every_config_validates(key, scale):
    paper = rep.PAPERS[key]
    assert paper.cpu_changes and paper.substitutions
    for setting in paper.settings:
        cfg = setting.sim_config(scale)
        cfg.validate(check_data=False)                   # options and every rule, on the run's shape
        labels = {parse_rule(r)[2] for r in cfg.rules}
        assert setting.cells
        for cell in setting.cells:
            assert cell.row in labels or cell.row == rep.NO_ATTACK, (key, cell)
            assert cell.metric in rep.METRICS and 0.0 <= cell.paper <= 1.0 and cell.where
        if any(c.row == rep.NO_ATTACK or c.metric == "accuracy_drop" for c in setting.cells):
            assert cfg.baseline
    if scale == "paper":
        assert all(s.sim_config("paper").rounds >= s.sim_config("cpu").rounds for s in paper.settings)


def _fake(values_by_rule, baseline):
    """run_seeds-shaped results: per seed, final metrics of each rule and of the baseline."""
    runs = []
    for i in range(len(baseline)):
        runs.append({"rules": {r: {"final_accuracy": v[i][0], "final_attack_success": v[i][1]}
                               for r, v in values_by_rule.items()},
                     "baseline": {"final_accuracy": baseline[i][0], "final_attack_success": baseline[i][1]}})
    return {"runs": runs}


def test_rows_and_verdicts_by_hand():
    setting = rep.Setting(
        title="t", config=dict(rules=["fedavg", "median"]), cpu={}, paper={},
        cells=(rep.Cell("fedavg", "attack_success", 1.0, "T1"), rep.Cell("median", "attack_success", 0.0, "T1"),
               rep.Cell("fedavg", "accuracy_drop", 0.0, "A.4"), rep.Cell(rep.NO_ATTACK, "accuracy", 0.9, "T1")))
    results = _fake({"fedavg": [(0.80, 0.9), (0.84, 1.0)], "median": [(0.9, 0.5), (0.9, 0.5)]},
                    baseline=[(0.90, 0.0), (0.90, 0.1)])
    rows = {(r["row"], r["metric"]): r for r in rep._rows(setting, results)}
    fed = rows[("fedavg", "attack_success")]
    # mean .95, sample std .0707: |Δ| = .05 <= max(2 std, .05)
    assert fed["ours_mean"] == pytest.approx(0.95) and fed["ours_std"] == pytest.approx(math.sqrt(0.005))
    assert fed["delta"] == pytest.approx(-0.05) and fed["verdict"] == "agrees"
    med = rows[("median", "attack_success")]
    assert med["ours_std"] == 0.0 and med["delta"] == pytest.approx(0.5) and med["verdict"] == "differs"
    drop = rows[("fedavg", "accuracy_drop")]                 # baseline minus rule, seed by seed: .10, .06
    assert drop["ours_values"] == pytest.approx([0.10, 0.06]) and drop["verdict"] == "differs"
    assert rows[("median", "accuracy_drop")]["verdict"] is None      # no paper number: ours only
    assert rows[(rep.NO_ATTACK, "accuracy")]["verdict"] == "agrees"
    assert (rep.NO_ATTACK, "accuracy_drop") not in rows
    assert rows[("median", "accuracy")]["paper"] is None


def test_verdicts_by_hand():
    assert rep.verdict(0.04, 0.0, 3) == "agrees"                 # within 5 points
    assert rep.verdict(0.065, 0.06, 3) == "agrees"               # 2 SE = .069 covers it and is <= 10 points
    assert rep.verdict(0.08, 0.06, 3) == "differs"               # .08 > max(.069, .05)
    assert rep.verdict(0.30, 0.53, 3) == "inconclusive"          # 2 SE = .61 covers it, but is wider than 10 points
    assert rep.verdict(0.03, 0.53, 3) == "agrees"                # within 5 points whatever the noise
    assert rep.verdict(-0.9, 0.01, 3) == "differs"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="paper must be one of"):
        rep.reproduce("krum")
    with pytest.raises(ValueError, match="scale must be"):
        rep.reproduce("rlr", scale="gpu")
    assert cli.main(["reproduce", "backdoor", "--rounds", "0", "--quiet"]) == 2


def test_reproduce_backdoor_end_to_end(tmp_path, capsys):
    out = tmp_path / "rep"
    code = cli.main(["reproduce", "backdoor", "--rounds", "2", "--seeds", "0,1", "--out", str(out), "--quiet",
                     "--no-plot"])
    assert code == 0
    text = capsys.readouterr().out
    assert "single-shot model replacement" in text and "cells agree with the paper" in text
    # --rounds 2 is not the paper's schedule: said in the header and the table, verdicts marked
    assert "NOT the paper's run: --rounds 2 replaces this scale's 30 rounds" in text
    assert "* not the paper's schedule (2 rounds)" in text
    assert any(v + "*" in text for v in ("agrees", "differs", "inconclusive"))
    saved = json.loads((out / "reproduce.json").read_text())
    assert saved["command"].startswith("robustagg reproduce backdoor") and saved["seeds"] == [0, 1]
    rows = [r for s in saved["settings"] for r in s["rows"]]
    assert {r["metric"] for r in rows} == {"attack_success", "accuracy_drop"}
    for r in rows:
        assert len(r["ours_values"]) == 2 and r["ours_mean"] is not None
    md = (out / "reproduce.md").read_text()
    assert "| row | metric | paper |" in md and "App. A.5" in md and "NOT the paper's run" in md
    assert saved["rounds_override"] == {"rounds": 2, "scale_rounds": [30]}
    assert len([d for d in os.listdir(out) if (out / d).is_dir()]) == 2


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST not installed (dataset-fashion-mnist)")
def test_reproduce_rlr_runs_on_fashion_mnist():
    result = rep.reproduce("rlr", seeds=(0,), rounds=1)
    rows = result["settings"][0]["rows"]
    assert len([r for r in rows if r["verdict"]]) == 18
    text = rep.format_reproduction(result)
    assert "Table 1 (top)" in text and "rlr(threshold=4)" in text


def test_rounds_equal_to_the_scale_s_are_no_override():
    assert rep.rounds_override("backdoor", "cpu", 30) is None and rep.rounds_override("backdoor", "cpu", None) is None
    assert rep.rounds_override("backdoor", "paper", 30) == {"rounds": 30, "scale_rounds": [100]}


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "-1"], "--seeds must be integers in [0, 4294967295]"),
    (["--out="], "--out must name a folder"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "torch sees no CUDA device")]))
def test_reproduce_checks_its_options_before_creating_the_output_folder(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    extra = [] if argv == ["--out="] else ["--out", str(tmp_path / "rep")]
    assert cli.main(["reproduce", "backdoor", "--quiet", *argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_paper_scale_on_the_cpu_warns_before_running(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(rep, "reproduce", interrupted)
    monkeypatch.setattr(data, "check_available", lambda *a: None)   # the paper scale reads Fashion-MNIST
    code = cli.main(["reproduce", "backdoor", "--scale", "paper", "--device", "cpu", "--quiet",
                     "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert code == 130 and "warning: --scale paper on cpu" in err and "minutes per round" in err


def test_groups_split_each_paper_s_settings():
    for key in rep.PAPERS:
        head = rep.settings_of(key, "headline")
        assert head and all(s.group == "headline" for s in head)
    for key in ("rlr", "residual", "rflbat", "invariant"):
        head, non = rep.settings_of(key, "headline"), rep.settings_of(key, "noniid")
        assert non and all(s.group == "noniid" for s in non)
        assert rep.settings_of(key) == head + non
        title, cpu_changes, substitutions = rep.PAPERS[key].notes("noniid")
        assert title != rep.PAPERS[key].title and cpu_changes and substitutions
    with pytest.raises(ValueError, match="no setting in group"):
        rep.settings_of("backdoor", "noniid")
    with pytest.raises(ValueError, match="group must be one of"):
        rep.settings_of("rlr", "bogus")


def test_the_fedemnist_stand_in_says_what_it_is():
    (setting,) = rep.settings_of("rlr", "noniid")
    cfg = setting.sim_config("cpu")
    assert cfg.dataset == "fashion_mnist" and cfg.partition == "dirichlet"
    assert "NOT FedEMNIST" in rep.PAPERS["rlr"].notes("noniid")[2]


def test_rounds_override_is_judged_within_the_group():
    assert rep.rounds_override("rlr", "cpu", 60, "noniid") is None
    assert rep.rounds_override("rlr", "cpu", 40, "headline") is None
    assert rep.rounds_override("rlr", "cpu", 40, "noniid") == {"rounds": 40, "scale_rounds": [60]}


def test_shown_metrics_get_rows_without_a_paper_number():
    setting = rep.Setting(title="t", config=dict(rules=["fedavg"]), cpu={}, paper={}, show=("attack_success",),
                          cells=(rep.Cell("fedavg", "accuracy", 0.9, "T4"),))
    results = _fake({"fedavg": [(0.8, 0.5), (0.9, 0.3)]}, baseline=[(0.9, 0.0), (0.9, 0.0)])
    rows = {(r["row"], r["metric"]): r for r in rep._rows(setting, results)}
    shown = rows[("fedavg", "attack_success")]
    assert shown["ours_mean"] == pytest.approx(0.4) and shown["paper"] is None and shown["verdict"] is None
    assert rows[("fedavg", "accuracy")]["verdict"] is not None
