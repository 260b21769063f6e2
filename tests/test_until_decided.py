"""`noisefloor sweep --until-decided --max-seeds N`: round planning (pure), its error control, and end to end."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from conftest import run_cli
from noisefloor.config import MAX_SEED
from noisefloor.stats import sequential
from noisefloor.report import words
from noisefloor.sweep import rounds

ALPHA = 0.05


def test_seeds_come_from_the_study_list_never_at_random():
    assert rounds.seed_sequence([42, 22, 67], 6) == [42, 22, 67, 68, 69, 70]
    assert rounds.seed_sequence([42, 22, 67], 2) == [42, 22, 67]  # never fewer than the study's own
    assert rounds.seed_sequence([MAX_SEED - 1, 1], 5) == [MAX_SEED - 1, 1, MAX_SEED, 0, 2]  # past the largest seed: from 0


def _standing(name, n, e, equivalent=False):
    return rounds.Standing(name, frozenset(range(n)), e, equivalent)


def test_stop_on_signal_any_round_on_noise_only_at_the_maximum():
    m = 2  # two interventions: each needs e >= 2 / alpha = 40
    judge = lambda standing, margin=0.01: rounds.judge(standing, ALPHA, m, 6, margin)  # noqa: E731
    assert judge(_standing("a", 3, 41.0)).state == rounds.SIGNAL  # before the maximum: e-values are anytime-valid
    assert judge(_standing("a", 3, 39.0)).state == rounds.OPEN  # 1 / alpha = 20 is not enough with two interventions
    assert judge(_standing("a", 3, None, equivalent=True)).state == rounds.OPEN  # equivalence is not looked at early
    assert judge(_standing("a", 6, 3.0, equivalent=True)).state == rounds.NOISE
    undecided = judge(_standing("a", 6, 3.0), margin=None)
    assert undecided.state == rounds.UNDECIDED and "no margin given" in words.outcome_reason(undecided)
    assert rounds.judge(_standing("a", 3, 21.0), ALPHA, 1, 6, None).state == rounds.SIGNAL  # one intervention: 1 / alpha


def test_a_round_adds_one_shared_seed_to_the_baseline_and_each_open_intervention_only():
    sequence = rounds.seed_sequence([42, 22, 67], 6)
    seeds = {"baseline": {42, 22, 67}, "a": {42, 22, 67}, "b": {42, 22, 67}, "c": {42, 22, 67}}
    outcomes = [rounds.judge(_standing(name, 3, e), ALPHA, 3, 6, None) for name, e in (("a", 1.0), ("b", 99.0), ("c", None))]
    assert rounds.next_rounds(sequence, outcomes, seeds, "baseline") == [rounds.Round(68, ("baseline", "a", "c"))]
    # an intervention that lags (a failed run, a larger --max-seeds later) catches up on the baseline's seeds first
    seeds = {"baseline": {42, 22, 67, 68, 69}, "a": {42, 22, 67, 68, 69}, "c": {42, 22, 67}}
    outcomes = [rounds.judge(_standing(name, len(seeds[name]), 1.0), ALPHA, 2, 6, None) for name in ("a", "c")]
    assert rounds.next_rounds(sequence, outcomes, seeds, "baseline") == [
        rounds.Round(70, ("baseline", "a")), rounds.Round(68, ("c",))]
    stopped = [rounds.judge(_standing("a", 6, 1.0), ALPHA, 1, 6, None)]
    assert rounds.next_rounds(sequence, stopped, {"baseline": set(sequence), "a": set(sequence)}, "baseline") == []


def test_family_wise_error_under_the_rounds_stays_below_alpha():
    """Three null interventions paired with one baseline (their differences share its noise), a round after every
    seed from 3 to 15, each stopped at its first e >= m / alpha: P(any false signal) <= alpha. The per-intervention
    bar 1 / alpha would not hold the family-wise rate, which is why the bar grows with m."""
    rng = np.random.default_rng(11)
    studies, m, n_max = 6_000, 3, 15
    baseline = rng.standard_normal((studies, 1, n_max))
    differences = rng.standard_normal((studies, m, n_max)) - baseline  # intervention - baseline at the same init seed
    t, n = sequential.running_t(differences)
    look = n >= 3
    log_e = sequential.log_bayes_factor(t[..., look], n[look], n[look] - 1)
    any_false = (log_e >= math.log(rounds.threshold(ALPHA, m))).any(axis=(1, 2)).mean()
    per_intervention_bar = (log_e >= math.log(1 / ALPHA)).any(axis=(1, 2)).mean()
    assert any_false <= ALPHA and per_intervention_bar > any_false


STUDY = '[study]\nconfig = "micro"\nset = ["train.steps=5"]\ninterventions = ["grad-clip"]\njobs = 1\nmargin = 0.5\n'


def test_until_decided_adds_a_paired_seed_stops_at_the_maximum_and_reuses_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "noisefloor.toml").write_text(STUDY)
    argv = ("sweep", "--init-seeds", "1,2", "--until-decided", "--max-seeds", "3", "--quiet")
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == 0 and "in this order: 1, 2, 3" in stdout and "within ±0.5" in stdout  # the study file's margin
    assert "round 1: init seed 3 for baseline, grad-clip (same init seed: paired)" in stdout
    assert "Until decided" in stdout and "Interventions: decision" in stdout
    with open("results.csv", newline="") as handle:
        assert sorted((r["intervention"], r["init_seed"]) for r in csv.DictReader(handle)) == [
            (arm, seed) for arm in ("baseline", "grad-clip") for seed in ("1", "2", "3")]
    record = json.loads((tmp_path / "until-decided.json").read_text())
    assert record["rounds"] == [{"round": 1, "init_seed": 3, "arms": ["baseline", "grad-clip"]}]
    (outcome,) = record["interventions"]
    # grad-clip at 5 micro steps: either its e-value reached 20, or at the maximum its interval decides
    assert outcome["seeds"] == 3 and outcome["state"] in ("signal", "noise", "undecided")
    verdict = record["classify"]["interventions"][0]
    assert outcome["e_value"] == pytest.approx(verdict["e_value"])
    if outcome["state"] != "signal":
        assert (outcome["state"] == "noise") == (verdict["margin_for_noise"] < 0.5)

    code, stdout, _ = run_cli(capsys, *argv)  # the same command again: the same seeds, every run reused
    assert code == 0 and "trained now: 0" in stdout and "round 1:" not in stdout


@pytest.mark.parametrize("argv,message", [
    (("--until-decided", "--max-seeds", "1"), "--max-seeds 1 is below the study's 2 init seeds (1, 2); give --max-seeds 2"),
    (("--until-decided",), "add --max-seeds N"),
    (("--max-seeds", "4"), "--max-seeds goes with --until-decided"),
    (("--margin", "0.01"), "--margin goes with --until-decided"),
    (("--until-decided", "--max-seeds", "4", "--interventions", "baseline"), "needs an intervention to decide"),
])
def test_until_decided_mistakes_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "noisefloor.toml").write_text(STUDY)
    code, stdout, err = run_cli(capsys, "sweep", "--init-seeds", "1,2", *argv)
    assert code == 2 and message in err and len(err.splitlines()) == 1 and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noisefloor.toml"]  # nothing planned or trained


def test_until_decided_refuses_a_spec_file(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('[sweep]\nconfig = "micro"\n[[experiments]]\ninit_seeds = [1, 2]\n')
    code, _, err = run_cli(capsys, "sweep", str(spec), "--until-decided", "--max-seeds", "4")
    assert code == 2 and "grows a study's init seeds" in err and len(err.splitlines()) == 1


def test_the_round_logic_and_its_runner_import_no_torch():
    import subprocess
    import sys

    code = "import sys, noisefloor.sweep.rounds, noisefloor.sweep.until_decided; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_a_new_round_clones_the_arm_at_the_new_init_seed_for_both_kinds_of_run(micro_config):
    """noisefloor's trainer (train.init_seed set, train seed kept) and a user's command ({init_seed} filled in)."""
    from noisefloor.sweep.spec import CommandRun, PlannedRun
    from noisefloor.sweep.until_decided import _at_seed

    trainer = PlannedRun("baseline", 42, 23, micro_config.replace(train={"init_seed": 42, "train_seed": 23}))
    clone = _at_seed(trainer, 68)
    assert (clone.init_seed, clone.train_seed, clone.config.train.init_seed, clone.config.train.train_seed) == (68, 23, 68, 23)
    assert clone.config.replace(train={"init_seed": 42}) == trainer.config  # nothing else changed
    command = PlannedRun("qkv-bias", 42, None, CommandRun("python t.py --seed {init_seed} --out {run_dir}", "--qkv-bias", 42, None))
    clone = _at_seed(command, 68)
    assert clone.config.command("d") == "python t.py --seed 68 --out d --qkv-bias" and clone.run_id != command.run_id


def test_decision_flags_without_until_decided_are_refused_not_ignored(tmp_path, capsys):
    for flag in (("--alpha", "0.01"), ("--margin", "0.02"), ("--max-seeds", "5")):
        code, _, err = run_cli(capsys, "sweep", "--init-seeds", "42,22", "--out", tmp_path / "s", *flag)
        assert code == 2 and f"{flag[0]} goes with --until-decided" in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()
