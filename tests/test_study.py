"""The study folder: the design card's four commands as written, `noisefloor init`, --dry-run, defaults."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import REPO, run_cli

# micro-sized through the study file, so the commands below are exactly the design card's
# (one job: each worker process costs seconds of torch imports, more than a micro run)
MICRO_STUDY = '[study]\nconfig = "micro"\nset = ["train.steps=10"]\ninterventions = ["grad-clip"]\njobs = 1\n'


def test_the_four_commands_as_written_end_with_verdicts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "noisefloor.toml").write_text(MICRO_STUDY)

    code, stdout, err = run_cli(capsys, "sweep", "--init-seeds", "42,22,67")
    assert code == 0 and "trained now: 6" in stdout and "next: noisefloor classify results.csv" in stdout
    code, stdout, _ = run_cli(capsys, "reseed", "--train-seeds", "23,67")
    assert code == 0 and "trained now: 2" in stdout  # added to the same study; nothing retrained

    with open("results.csv", newline="") as handle:
        rows = {(r["intervention"], r["init_seed"], r["train_seed"]): r for r in csv.DictReader(handle)}
    assert set(rows) == {("baseline", s, "") for s in ("42", "22", "67")} | {("grad-clip", s, "") for s in ("42", "22", "67")} \
        | {("baseline", "42", t) for t in ("23", "67")}
    a, b = rows["baseline", "42", ""]["run"], rows["grad-clip", "42", ""]["run"]
    code, stdout, _ = run_cli(capsys, "verify-identical", f"runs/{a}/model.safetensors", f"runs/{b}/model.safetensors")
    identical = rows["baseline", "42", ""]["final_digest"] == rows["grad-clip", "42", ""]["final_digest"]
    assert (code, "IDENTICAL" in stdout) == ((0, True) if identical else (1, False))

    code, stdout, _ = run_cli(capsys, "status", "--json")  # the current folder is the study
    assert code == 0 and [r["status"] for r in json.loads(stdout)["runs"]] == ["done"] * 8
    code, stdout, _ = run_cli(capsys, "sweep", ".", "--dry-run")  # a sweep folder given by name plans too
    assert code == 0 and "nothing to train" in stdout

    code, stdout, _ = run_cli(capsys, "classify", "results.csv")
    assert code == 0 and "Interventions: decision" in stdout
    verdict_line = next(line for line in stdout.splitlines() if line.strip().startswith("grad-clip"))
    assert "noise" in verdict_line or "signal" in verdict_line
    code, stdout, _ = run_cli(capsys, "classify", "results.csv", "--json")
    (verdict,) = json.loads(stdout)["interventions"]
    assert verdict["floor"] == "train@init_seed=42" and verdict["n_runs"] == 3  # same init: the training-loop floor


def test_without_a_study_file_the_default_is_tiny_cpu_said_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(capsys, "sweep", "--init-seeds", "42,22,67", "--dry-run")
    assert code == 0 and "built-in tiny-cpu preset" in err and "noisefloor init" in err and len(err.splitlines()) == 1
    assert stdout.count("missing") == 3 and "3 to run" in stdout and "estimated" in stdout
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing
    code, stdout, _ = run_cli(capsys, "reseed", "--train-seeds", "23,67", "--dry-run")
    assert code == 0 and "init 42  train 23" in stdout and "init 42  train 67" in stdout  # the config's init seed


def test_init_writes_a_study_file_that_sweep_and_reseed_read(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run_cli(capsys, "init", "--config", "micro")
    assert code == 0 and (tmp_path / "noisefloor.toml").is_file()
    code, _, err = run_cli(capsys, "init")
    assert code == 2 and "exists already" in err
    code, stdout, err = run_cli(capsys, "sweep", "--dry-run")
    assert code == 0 and err == "" and stdout.count("missing") == 3  # the file's init seeds 42, 22, 67
    text = (tmp_path / "noisefloor.toml").read_text()
    text = text.replace("set = []", 'set = ["train.init_seed=7"]').replace("interventions = []", 'interventions = ["wd-0.05"]')
    text = text.replace('# "wd-0.05" = ', '"wd-0.05" = ')
    (tmp_path / "noisefloor.toml").write_text(text)
    code, stdout, _ = run_cli(capsys, "sweep", "--dry-run")
    assert code == 0 and stdout.count("wd-0.05_") == 3 and "6 runs planned" in stdout
    code, stdout, _ = run_cli(capsys, "reseed", "--dry-run")
    assert code == 0 and "init 7  train 23" in stdout and "wd-0.05" not in stdout and "2 runs planned" in stdout


@pytest.mark.parametrize("kind,study,message", [
    ("sweep", "", "type noisefloor sweep --init-seeds 42,22,67"),
    ("reseed", "", "type noisefloor reseed --train-seeds 23,67"),
    ("sweep", "[study]\ninit_seed = [1]\n", "unknown key 'init_seed'"),
    ("sweep", "[study]\ninit_seeds = [1, 1]\n", "lists a seed twice"),
    ("sweep", "[study]\ninit_seeds = 3\n", "init_seeds must be a non-empty list of seeds"),
    ("sweep", '[study]\nconfig = "micro"\ncommand = "x {init_seed} {run_dir}"\n', "not both"),
    ("sweep", '[study]\nconfig = "nope"\ninit_seeds = [1]\n', "config file not found"),
    ("sweep", '[study]\ninit_seeds = [1]\ninterventions = ["x"]\n[interventions]\nx = {"train.learning_rat" = 1}\n',
     "unknown key [train] learning_rat"),
    ("sweep", "[stud]\n", "unknown table [stud]"),
])
def test_study_mistakes_are_one_line_saying_what_to_type(tmp_path, monkeypatch, capsys, kind, study, message):
    monkeypatch.chdir(tmp_path)
    if study:
        (tmp_path / "noisefloor.toml").write_text(study)
    code, _, err = run_cli(capsys, kind, "--quiet")
    assert code == 2 and message in err and err.strip().splitlines()[-1].startswith(f"noisefloor {kind}: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["noisefloor.toml"] if study else [])


def test_the_study_file_states_the_margin_and_the_command_line_overrides_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results.csv").write_text((REPO / "tests" / "data" / "study.csv").read_text())
    (tmp_path / "noisefloor.toml").write_text("[study]\nmargin = 0.5\n")
    analyses = {}
    for argv in (("results.csv",), ("results.csv", "--margin", "0.002"), (".",)):  # ".": the study folder by name
        code, stdout, _ = run_cli(capsys, "classify", *argv, "--json")
        assert code == 0
        analyses[argv] = json.loads(stdout)
        assert all(v["margin"] == analyses[argv]["margin"] for v in analyses[argv]["interventions"])
    assert [a["margin"] for a in analyses.values()] == [0.5, 0.002, 0.5]
    # a margin of 0.5 nats holds every effect of this file: each undecided one had an interval inside it
    assert all(v["decision"] in ("noise", "signal") for v in analyses[("results.csv",)]["interventions"])


@pytest.mark.parametrize("value", ["-0.01", '"0.01"', "nan"])
def test_a_bad_margin_in_the_study_file_is_one_line(tmp_path, monkeypatch, capsys, value):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results.csv").write_text((REPO / "tests" / "data" / "study.csv").read_text())
    (tmp_path / "noisefloor.toml").write_text(f"[study]\nmargin = {value}\n")
    for argv in (("classify", "results.csv"), ("sweep", "--init-seeds", "1,2", "--dry-run")):
        code, stdout, err = run_cli(capsys, *argv)
        assert code == 2 and stdout == "" and len(err.splitlines()) == 1
        assert "noisefloor.toml [study]: margin must be a positive number of nats/token, e.g. margin = 0.01" in err
    code, _, _ = run_cli(capsys, "classify", "results.csv", "--margin", "0.01")  # the command line's wins: not read
    assert code == 0
