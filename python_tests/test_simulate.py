"""End to end: the server loop, the results files and the `robustagg` command."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from robustagg import cli
from robustagg.sim.simulator import SimConfig, format_table, parse_rule, run, write_outputs

# Small enough for CI (a few seconds): digits, 20 clients of which 4 attackers
# poison every base-class sample (1 -> 7) and train 5 local epochs.
BACKDOOR = dict(rounds=12, seed=1, attack="trojan", attack_params={"poison_fraction": 1.0})


@pytest.fixture(scope="module")
def backdoor_results():
    return run(SimConfig(rules=["fedavg", "median", "rlr", "krum"], **BACKDOOR))


def test_backdoor_succeeds_under_fedavg(backdoor_results):
    fedavg = backdoor_results["rules"]["fedavg"]
    assert fedavg["final_accuracy"] > 0.8
    assert fedavg["final_attack_success"] > 0.5


@pytest.mark.parametrize("rule", ["median", "krum"])
def test_backdoor_is_stopped_by_a_defense(backdoor_results, rule):
    r = backdoor_results["rules"][rule]
    assert r["final_attack_success"] < 0.15
    assert r["final_accuracy"] > 0.75


def test_krum_reports_the_attackers_it_dropped(backdoor_results):
    r = backdoor_results["rules"]["krum"]
    assert r["mean_true_positive_rate"] == 1.0          # Krum keeps one honest client per round
    assert "mean_true_positive_rate" not in backdoor_results["rules"]["median"]


def test_without_an_attack_the_trigger_does_not_flip_the_prediction():
    res = run(SimConfig(rules=["fedavg"], **{**BACKDOOR, "attack": "trojan", "attackers": 0}))
    assert res["rules"]["fedavg"]["final_attack_success"] < 0.15


def test_results_have_the_documented_shape(backdoor_results):
    assert set(backdoor_results) >= {"config", "rules"}
    assert backdoor_results["config"]["rounds"] == 12
    for r in backdoor_results["rules"].values():
        assert len(r["accuracy"]) == len(r["attack_success"]) == 12
        assert isinstance(r["final_accuracy"], float) and isinstance(r["final_attack_success"], float)
        assert r["seconds"] > 0
    assert len(backdoor_results["experiment"]["attacker_ids"]) == 4
    json.dumps(backdoor_results, allow_nan=False)       # valid JSON, no NaN


def test_same_seed_gives_the_same_run():
    cfg = dict(dataset="synthetic", clients=8, attackers=2, rounds=3, rules=["fedavg", "foolsgold"])
    a, b = run(SimConfig(**cfg)), run(SimConfig(**cfg))
    for rule in a["rules"]:
        assert a["rules"][rule]["accuracy"] == b["rules"][rule]["accuracy"]
        assert a["rules"][rule]["attack_success"] == b["rules"][rule]["attack_success"]
    c = run(SimConfig(**{**cfg, "seed": 1}))
    assert c["rules"]["fedavg"]["accuracy"] != a["rules"]["fedavg"]["accuracy"]


@pytest.mark.parametrize("attack, params", [
    ("dba", {}), ("model_replacement", {"rounds": [1]}), ("constrain_scale", {"bound": 1.0}),
    ("label_flip", {"source": 1, "target": 7}), ("sign_flip", {}), ("gaussian", {}), ("alie", {}),
    ("andmask_adaptive", {}), ("none", {}),
])
def test_every_attack_runs_through_the_loop(attack, params):
    res = run(SimConfig(dataset="synthetic", clients=8, attackers=2, rounds=2, attack=attack, attack_params=params,
                        rules=["fedavg", "invariant"], partition="dirichlet", alpha=1.0))
    r = res["rules"]["fedavg"]
    assert len(r["accuracy"]) == 2 and all(0.0 <= a <= 1.0 for a in r["accuracy"])
    untargeted = attack in ("sign_flip", "gaussian", "alie", "none")
    assert (r["final_attack_success"] is None) == untargeted


def test_model_replacement_single_shot_implants_the_backdoor_in_fedavg():
    res = run(SimConfig(rules=["fedavg", "median"], rounds=8, seed=2, attackers=1, attack="model_replacement",
                        attack_params={"rounds": [7], "poison_fraction": 1.0}, attacker_epochs=20))
    assert res["rules"]["fedavg"]["attack_success"][5] < 0.2           # before the shot
    assert res["rules"]["fedavg"]["final_attack_success"] > 0.8         # replaced in one round
    assert res["rules"]["median"]["final_attack_success"] < 0.2


def test_rule_specs_parse_with_parameters():
    assert parse_rule("trimmed_mean(trim=2)") == ("trimmed_mean", {"trim": 2}, "trimmed_mean(trim=2)")
    assert parse_rule({"name": "rlr", "threshold": 6})[:2] == ("rlr", {"threshold": 6})
    assert parse_rule("clip(base='median', max_norm=0.5)")[1] == {"base": "median", "max_norm": 0.5}
    with pytest.raises(ValueError, match="not 'param=value'"):
        parse_rule("krum(2)")


@pytest.mark.parametrize("kwargs, match", [
    (dict(clients=0), "clients must be a positive integer"),
    (dict(attackers=20), r"attackers must be an integer in \[0, clients=20\)"),
    (dict(fraction=1.5), r"fraction must be in \(0, 1\]"),
    (dict(partition="pathological"), "partition must be one of"),
    (dict(attack="poison"), "attack must be one of"),
    (dict(rules=["fedavg", "fedavg"]), "must not repeat"),
    (dict(device="tpu"), "device must be cpu or cuda"),
])
def test_bad_config_is_rejected_with_the_bound(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimConfig(**kwargs).validate()


def test_unknown_rule_fails_before_any_training():
    with pytest.raises(ValueError, match="unknown rule 'krum2'"):
        run(SimConfig(dataset="synthetic", rounds=1, rules=["fedavg", "krum2"]))


def test_write_outputs_gives_json_and_csv(tmp_path, backdoor_results):
    files = write_outputs(backdoor_results, str(tmp_path / "out"), plot=False)
    names = sorted(os.path.basename(f) for f in files)
    assert names == ["results.csv", "results.json"]
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert rows[0].startswith("rule,round,accuracy") and len(rows) == 1 + 4 * 12


# ---------------------------------------------------------------- the command

SMALL = ["--dataset", "synthetic", "--clients", "6", "--attackers", "1", "--rounds", "2", "--quiet", "--no-plot"]


def test_cli_simulate_runs_and_writes_results(tmp_path):
    import robustagg
    out = tmp_path / "run"
    # The child imports the same robustagg as this process (not a source tree in its cwd).
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(robustagg.__file__))}
    proc = subprocess.run([sys.executable, "-m", "robustagg.cli", "simulate", *SMALL, "--rules",
                           "fedavg,trimmed_mean(trim=1),rlr", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "attack success" in proc.stdout and "trimmed_mean(trim=1)" in proc.stdout
    res = json.loads((out / "results.json").read_text())
    assert list(res["rules"]) == ["fedavg", "trimmed_mean(trim=1)", "rlr"]
    assert res["rules"]["trimmed_mean(trim=1)"]["params"] == {"trim": 1}


@pytest.mark.parametrize("argv, message", [
    (["--clients", "0"], "clients must be a positive integer"),
    (["--rules", "fedavg,nope"], "unknown rule 'nope'"),
    (["--attack", "nope"], "attack must be one of"),
    (["--attack-param", "strength=2"], "bad parameters for attack 'trojan'"),
    (["--config", "/nonexistent.toml"], "no such file"),
    (["--dataset", "fashion_mnist", "--data-path", "/nonexistent"], "dataset-fashion-mnist"),
])
def test_cli_bad_options_exit_nonzero_with_a_message(tmp_path, capsys, argv, message):
    code = cli.main(["simulate", *SMALL, "--out", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_argument_type_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["simulate", "--rounds", "many"])
    assert e.value.code == 2 and "--rounds" in capsys.readouterr().err


def test_cli_config_file_sets_the_experiment_and_flags_override_it(tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('dataset = "synthetic"\nclients = 6\nattackers = 1\nrounds = 3\n'
                   'rules = ["fedavg", "trimmed_mean(trim=1)"]\nattack = "label_flip"\n'
                   '[attack_params]\nsource = 1\ntarget = 2\n')
    out = tmp_path / "run"
    code = cli.main(["simulate", "--config", str(cfg), "--rounds", "2", "--quiet", "--no-plot", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["rounds"] == 2 and res["config"]["attack"] == "label_flip"
    assert res["config"]["attack_params"] == {"source": 1, "target": 2}
    assert list(res["rules"]) == ["fedavg", "trimmed_mean(trim=1)"]


def test_cli_config_with_an_unknown_key_is_rejected(tmp_path, capsys):
    cfg = tmp_path / "exp.json"
    cfg.write_text(json.dumps({"dataset": "synthetic", "epochs": 3}))
    assert cli.main(["simulate", "--config", str(cfg)]) == 2
    assert "unknown option(s) epochs" in capsys.readouterr().err


def test_cli_info_and_lists(capsys):
    assert cli.main(["info"]) == 0 and '"backends"' in capsys.readouterr().out
    assert cli.main(["rules"]) == 0 and "rflbat" in capsys.readouterr().out
    assert cli.main(["attacks"]) == 0 and "constrain_scale" in capsys.readouterr().out


def test_sequential_local_training_gives_the_same_run_as_batched():
    cfg = dict(dataset="synthetic", clients=6, attackers=1, rounds=2, rules=["fedavg"], attack="constrain_scale")
    a = run(SimConfig(**cfg))["rules"]["fedavg"]
    b = run(SimConfig(**cfg, local_training="sequential"))["rules"]["fedavg"]
    assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-2)
    assert a["attack_success"] == pytest.approx(b["attack_success"], abs=5e-2)


def test_cli_config_that_does_not_parse_is_reported(tmp_path, capsys):
    cfg = tmp_path / "exp.json"
    cfg.write_text("{rounds: 3")
    assert cli.main(["simulate", "--config", str(cfg)]) == 2
    assert "--config: cannot parse" in capsys.readouterr().err


# ---------------------------------------------------------------- found by trying it as a new user

def test_fashion_mnist_simulation_runs_end_to_end():
    from robustagg.sim import data
    if not data.fashion_mnist_available():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    res = run(SimConfig(dataset="fashion_mnist", clients=6, attackers=1, rounds=2, model="logreg", local_epochs=1,
                        attacker_epochs=1, batch_size=64, rules=["fedavg", "median"]))
    assert res["experiment"]["train_samples"] == 60000
    assert res["config"]["attack_resolved"]["base_class"] == 5      # sandal -> sneaker, as in the RLR paper
    assert res["rules"]["fedavg"]["final_accuracy"] > 0.5
    assert res["rules"]["median"]["final_attack_success"] is not None


def test_a_beta_given_to_trimmed_mean_replaces_the_default_trim():
    res = run(SimConfig(dataset="synthetic", clients=10, attackers=2, rounds=1, rules=["trimmed_mean(beta=0.1)"]))
    assert res["rules"]["trimmed_mean(beta=0.1)"]["params"] == {"beta": 0.1}


@pytest.mark.parametrize("clients, attackers, rule", [(1, 0, "krum"), (2, 0, "krum"), (2, 1, "bulyan"),
                                                     (10, 1, "rlr(threshold=100)")])
def test_a_rule_bound_the_run_breaks_is_reported_before_any_training(clients, attackers, rule):
    cfg = SimConfig(dataset="synthetic", clients=clients, attackers=attackers, rounds=1, rules=["fedavg", rule])
    with pytest.raises(ValueError, match=re.escape(f"rule '{rule}' cannot run on {clients} clients per round")):
        cfg.validate()


def test_results_are_handed_over_after_every_rule_and_carry_a_no_attack_baseline():
    seen = []
    res = run(SimConfig(dataset="synthetic", clients=6, attackers=1, rounds=2, rules=["fedavg", "median"]),
              on_rule_done=lambda r: seen.append(list(r["rules"])))
    assert seen == [["fedavg"], ["fedavg", "median"]]
    base = res["baseline"]
    assert base["rule"] == "fedavg" and len(base["attack_success"]) == 2 and 0.0 <= base["final_attack_success"] <= 1
    assert "no attack (fedavg)" in format_table(res)
    quiet = run(SimConfig(dataset="synthetic", clients=6, attackers=1, rounds=1, rules=["fedavg"], baseline=False))
    assert "baseline" not in quiet


def test_default_model_replacement_replaces_once_and_keeps_the_main_task():
    res = run(SimConfig(attack="model_replacement", rules=["fedavg"], rounds=10, seed=0))
    r, base = res["rules"]["fedavg"], res["baseline"]
    assert res["config"]["attack_resolved"]["rounds"] == [9]        # single shot, in the last round
    assert r["attack_success"][:9] == base["attack_success"][:9]     # honest until the shot: the no-attack run
    assert r["final_attack_success"] > 0.5 + base["final_attack_success"] and r["final_accuracy"] > 0.6


@pytest.mark.parametrize("partition", ["iid", "dirichlet", "shards"])
def test_backdoors_land_in_fedavg_on_every_partition_with_default_flags(partition):
    # The adversary brings its own images (data="pool"), so no split leaves it without any.
    for attack, floor in [("trojan", 0.5), ("model_replacement", 0.5), ("constrain_scale", 0.5), ("dba", 0.5)]:
        res = run(SimConfig(partition=partition, attack=attack, rules=["fedavg"], seed=7, baseline=False))
        assert min(res["experiment"]["poisoned_samples"]) >= 5 and not res["experiment"]["warnings"]
        assert res["rules"]["fedavg"]["final_attack_success"] >= floor, (partition, attack)


def test_own_data_mode_warns_when_an_attacker_holds_too_few_base_class_images():
    res = run(SimConfig(partition="shards", attack="trojan", attack_params={"data": "own"}, rules=["fedavg"],
                        rounds=1, seed=7, baseline=False))
    counts = res["experiment"]["poisoned_samples"]
    assert min(counts) < 5 and "fewer than 5 poisoned samples" in res["experiment"]["warnings"][0]


def test_cli_checks_the_output_folder_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = cli.main(["simulate", *SMALL, "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be written" in err and "Traceback" not in err


def test_cli_version(capsys):
    from robustagg import __version__
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out


def test_rules_are_told_the_assumed_number_of_attackers_and_results_say_which():
    cfg = dict(dataset="synthetic", clients=10, attackers=2, rounds=1, rules=["krum", "rlr", "trimmed_mean(trim=1)"])
    oracle = run(SimConfig(**cfg))
    assert oracle["experiment"]["attackers_told_to_rules"] == 2
    assert "oracle" in oracle["experiment"]["attackers_told_source"] and "oracle" in format_table(oracle)
    assert oracle["rules"]["krum"]["from_attackers_told"] == {"f": 2}
    wrong = run(SimConfig(**cfg, assumed_attackers=3))
    assert wrong["experiment"]["attackers_told_to_rules"] == 3 and "assumed" in format_table(wrong)
    assert wrong["rules"]["krum"]["params"] == {"f": 3} and wrong["rules"]["rlr"]["params"] == {"threshold": 4}
    assert wrong["rules"]["trimmed_mean(trim=1)"]["from_attackers_told"] == {}   # given by the user
    with pytest.raises(ValueError, match=r"assumed_attackers must be an integer in \[0, clients per round=10\)"):
        SimConfig(**cfg, assumed_attackers=10).validate()


def test_cli_assumed_attackers_flag(tmp_path, capsys):
    code = cli.main(["simulate", *SMALL, "--assumed-attackers", "0", "--rules", "krum", "--out", str(tmp_path / "o")])
    assert code == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["config"]["assumed_attackers"] == 0 and res["rules"]["krum"]["params"] == {"f": 0}


def test_several_seeds_give_mean_and_std_per_rule():
    from robustagg.sim.simulator import run_seeds
    cfg = SimConfig(dataset="synthetic", clients=6, attackers=1, rounds=2, rules=["fedavg", "median"])
    res = run_seeds(cfg, [0, 1, 2])
    assert res["seeds"] == [0, 1, 2] and [r["config"]["seed"] for r in res["runs"]] == [0, 1, 2]
    single = [run(SimConfig(**{**cfg.to_dict(), "seed": s}))["rules"]["median"]["final_accuracy"] for s in (0, 1, 2)]
    st = res["summary"]["rules"]["median"]["final_accuracy"]
    assert st["values"] == pytest.approx(single)
    assert st["mean"] == pytest.approx(sum(single) / 3)
    assert st["std"] == pytest.approx(float(torch.tensor(single, dtype=torch.float64).std()))
    assert len(res["summary"]["rules"]["fedavg"]["attack_success_std"]) == 2
    assert "baseline" in res["summary"] and "mean ± std over seeds 0, 1, 2" in format_table(res)
    with pytest.raises(ValueError, match="must not repeat"):
        run_seeds(cfg, [1, 1])


def test_cli_seeds_writes_the_summary(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["simulate", *SMALL, "--seeds", "0,1", "--rules", "fedavg", "--out", str(out)]) == 0
    assert "±" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == [0, 1] and set(res["summary"]["rules"]) == {"fedavg"}
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("rule,seed,round") and len(rows) == 1 + 2 * 2
    assert (out / "summary.csv").read_text().startswith("rule,final_accuracy_mean")
    assert cli.main(["simulate", *SMALL, "--seeds", "0,x", "--out", str(out)]) == 2


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["simulate", "--help"], []])
def test_the_command_answers_help_and_version_without_importing_torch(argv):
    # The console script's launcher (pyproject [project.scripts]) loads the CLI without
    # the package's __init__ for these: no torch import, no native module.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.argv = ['robustagg'] + sys.argv[1:]; import _robustagg_launch as l\n"
            "try:\n    rc = l.main()\nexcept SystemExit as e:\n    rc = e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)")
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip().splitlines()[-1] in ("NO-TORCH 0", "NO-TORCH 2"), out.stdout + out.stderr
    assert ("usage: robustagg" in out.stdout) or ("robustagg " in out.stdout)


def test_the_help_lists_the_rules_compared_by_default():
    import robustagg.aggregators as A
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "COLUMNS": "1000",         # no line wrapping inside the list
           "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = "import sys; sys.argv = ['robustagg', 'simulate', '--help']; import _robustagg_launch as l; l.main()"
    parser_help = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                                 env=env).stdout
    assert "(default: " + ",".join(A.default_rules()) + ")" in " ".join(parser_help.split())


# ---------------------------------------------------------------- options checked before anything is created


@pytest.mark.parametrize("line, message", [
    ("dataset = 5", "dataset must be a string; got int 5"),
    ("rules = 5", "rules must be a list of rule names"),
    ("device = 0", "device must be a string; got int 0"),
    ('seed = "x"', "seed must be an integer; got str 'x'"),
    ("attackers = true", "attackers must be an integer; got bool True"),
    ("data_path = 5", "data_path must be a string or null; got int 5"),
    ('partition = "dirichlet"\nalpha = true', "alpha must be a number; got bool True"),
    ("server_lr = true", "server_lr must be a number; got bool True"),
])
def test_cli_config_of_the_wrong_type_is_one_line_naming_the_key(tmp_path, capsys, line, message):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(line + "\n")
    out = tmp_path / "run"
    code = cli.main(["simulate", "--config", str(cfg), "--quiet", "--no-plot", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "seed must be an integer in [0, 4294967295]; got -1"),
    (["--seed", "99999999999999999999"], "seed must be an integer in [0, 4294967295]"),
    (["--attack-param", "bogus_key=1"], "bad parameters for attack 'trojan'"),
    (["--attack", "model_replacement", "--attack-param", "gamma=-1"], "gamma must be a finite number > 0"),
    (["--attack-param", "base_class=42"], "base_class must be a class index in [0, 10); got 42"),
    (["--attack-param", "pattern=bogus"], "pattern must be one of plus, square, pixel"),
    (["--attack", "none", "--attack-param", "gamma=2"], "bad parameters for attack 'none'"),
    (["--dataset", "fashion_mnist", "--data-path", "/nonexistent"], "not found in '/nonexistent'"),
    (["--seeds", "0,-1"], "--seeds must be integers in [0, 4294967295]"),
])
def test_cli_bad_options_leave_no_output_folder(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code = cli.main(["simulate", *SMALL, "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--alpha", "0.3"], "--alpha has no effect here: it is the Dirichlet concentration"),
    (["--partition", "shards", "--alpha", "0.3"], "--alpha has no effect here"),
    (["--classes-per-client", "3"], "--classes-per-client has no effect here: it applies to partition shards"),
    (["--data-path", "/tmp"], "--data-path has no effect here: it is the Fashion-MNIST folder"),
    (["--model", "logreg", "--hidden", "8"], "--hidden has no effect here: model logreg has no hidden layer"),
    (["--seed", "1", "--seeds", "0,1"], "--seed and --seeds together"),
    (["--out="], "--out must name a folder"),
    (["--partition", "shards", "--classes-per-client", "20"], "classes_per_client must be at most the 10 classes"),
])
def test_cli_options_that_would_do_nothing_are_rejected(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)              # --out '' would otherwise fall back to runs/ here
    code = cli.main(["simulate", *SMALL, *argv] + ([] if argv == ["--out="] else ["--out", str(tmp_path / "run")]))
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_cli_config_options_that_would_do_nothing_name_the_config_key(tmp_path, capsys):
    cfg = tmp_path / "exp.json"
    cfg.write_text(json.dumps({"dataset": "synthetic", "alpha": 0.3}))
    assert cli.main(["simulate", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert "'alpha' (in --config) has no effect here" in capsys.readouterr().err


def test_results_record_only_the_options_that_were_used():
    iid = SimConfig(dataset="synthetic", clients=6, attackers=1, rounds=1).to_dict()
    assert not {"alpha", "classes_per_client", "data_path"} & set(iid) and iid["hidden"] is None
    dirichlet = SimConfig(dataset="synthetic", partition="dirichlet", alpha=0.3, model="logreg").to_dict()
    assert dirichlet["alpha"] == 0.3 and "classes_per_client" not in dirichlet and "hidden" not in dirichlet


def test_the_plot_names_the_experiment_and_tells_overlapping_lines_apart(tmp_path, monkeypatch):
    import matplotlib.figure
    figures = []
    real_savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *a, **k: (figures.append(self), real_savefig(self, *a, **k)))
    res = run(SimConfig(dataset="synthetic", clients=6, attackers=1, rounds=2, rules=["fedavg", "median", "krum"]))
    write_outputs(res, str(tmp_path), plot=True)
    (fig,) = figures
    title = fig._suptitle.get_text()
    assert "synthetic (iid)" in title and "6 clients" in title and "attack trojan by 1" in title
    assert "2 rounds" in title and "seed 0" in title
    lines = [ln for ln in fig.axes[0].get_lines()]
    styles = {(ln.get_color(), str(ln.get_linestyle()), ln.get_marker()) for ln in lines}
    assert len(lines) == 4 and len(styles) == 4          # 3 rules and the baseline, each its own look
    dashes = [str(ln.get_linestyle()) for ln in lines[:3]]
    assert len(set(dashes)) == 3                         # not colour alone
