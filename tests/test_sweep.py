"""Seed sweeps: plans, results.csv, same_init, kill-and-rerun equivalence, executors, spec errors."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from noisefloor.sweep import spec
from noisefloor.sweep.runner import SweepOptions, run_sweep
from noisefloor.sweep.store import RESULT_COLUMNS

MICRO = str(REPO / "training" / "micro.toml")
# columns that must be bit-for-bit the same however the sweep was run (timings differ by nature)
REPRODUCIBLE = ["run", "intervention", "init_seed", "train_seed", "test_loss", "val_loss", "same_init",
                "init_digest", "final_digest", "status"]


def read_rows(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def reproducible(rows: list[dict[str, str]]) -> list[tuple]:
    return sorted(tuple(row[c] for c in REPRODUCIBLE) for row in rows)


@pytest.fixture(scope="module")
def micro_sweep(tmp_path_factory):
    """3 init seeds x 2 train seeds x (baseline, grad-clip, qkv-bias) under per-parameter init."""
    out = tmp_path_factory.mktemp("sweeps") / "micro"
    plan = spec.from_flags(MICRO, [], ["grad-clip", "qkv-bias"], [42, 22, 67], [23, 67], "micro")
    summary = run_sweep(plan, out, SweepOptions(jobs=2))
    return out, summary


def test_micro_sweep_has_one_row_per_run(micro_sweep):
    out, summary = micro_sweep
    rows = read_rows(out)
    assert list(rows[0]) == RESULT_COLUMNS
    assert len(rows) == 18 and summary.ok
    cells = {(r["intervention"], r["init_seed"], r["train_seed"]) for r in rows}
    assert cells == {(i, s, t) for i in ("baseline", "grad-clip", "qkv-bias") for s in ("42", "22", "67") for t in ("23", "67")}
    assert all(r["status"] == "done" and float(r["test_loss"]) > 0 and r["final_digest"].startswith("sha256:") for r in rows)
    assert len({r["run"] for r in rows}) == 18
    assert all((out / "runs" / r["run"] / "model.safetensors").is_file() for r in rows)


def test_same_init_under_per_parameter_init(micro_sweep):
    out, _ = micro_sweep
    rows = read_rows(out)
    assert {r["same_init"] for r in rows if r["intervention"] == "grad-clip"} == {"true"}
    baseline = {r["init_seed"]: r["init_digest"] for r in rows if r["intervention"] == "baseline"}
    assert all(r["init_digest"] == baseline[r["init_seed"]] for r in rows if r["intervention"] == "grad-clip")
    # pytorch-default init draws the new QKV biases at random: a new random draw, so not the baseline's init
    assert {r["same_init"] for r in rows if r["intervention"] == "qkv-bias"} == {"false"}


def test_same_init_means_no_new_random_draw():
    from noisefloor.sweep.store import RunRecord, same_init

    base = RunRecord(None, "done", None, {"a": "d1", "b": "d2", "head": "d3"})
    assert same_init(RunRecord(None, "done", None, {"a": "d1", "b": "d2", "head": "d3"}), base) is True
    assert same_init(RunRecord(None, "done", None, {"a": "d1", "b": "dX", "head": "d3"}), base) is False
    # tied head: a tensor fewer, no new draw
    assert same_init(RunRecord(None, "done", None, {"a": "d1", "b": "d2"}), base) is True
    # a new bias: zeros (gpt2 init) keep the init, random values (pytorch-default) do not
    zeros = RunRecord(None, "done", None, {"a": "d1", "b": "d2", "head": "d3", "bias": "d4"}, frozenset({"bias"}))
    drawn = RunRecord(None, "done", None, {"a": "d1", "b": "d2", "head": "d3", "bias": "d4"})
    assert same_init(zeros, base) is True and same_init(drawn, base) is False
    assert same_init(drawn, None) is None


def test_qkv_bias_under_sequential_init_changes_the_init_and_reseed_adds_to_the_folder(tmp_path, capsys):
    common = ["--config", MICRO, "--set", "model.init_scheme=sequential", "--set", "train.steps=3", "--out", tmp_path / "seq", "--quiet"]
    code, _, _ = run_cli(capsys, "sweep", "--init-seeds", "42", "--interventions", "qkv-bias,grad-clip", *common)
    assert code == 0
    same = {r["intervention"]: r["same_init"] for r in read_rows(tmp_path / "seq")}
    assert same == {"baseline": "true", "qkv-bias": "false", "grad-clip": "true"}

    # a reseed into the folder of the earlier sweep adds its runs to the same plan
    code, stdout, _ = run_cli(capsys, "reseed", "--init-seed", "42", "--train-seeds", "23", *common)
    assert code == 0 and "trained now: 1" in stdout
    rows = read_rows(tmp_path / "seq")
    assert len(rows) == 4 and sorted(r["train_seed"] for r in rows if r["intervention"] == "baseline") == ["", "23"]


def test_rerun_skips_finished_runs(micro_sweep, capsys):
    out, _ = micro_sweep
    before = (out / "results.csv").read_text()
    code, stdout, _ = run_cli(capsys, "sweep", "--config", MICRO, "--init-seeds", "42,22,67", "--train-seeds", "23,67",
                              "--interventions", "grad-clip,qkv-bias", "--out", out, "--quiet")
    assert code == 0 and "trained now: 0" in stdout
    assert (out / "results.csv").read_text() == before


def test_a_second_base_config_in_the_same_folder_is_refused(micro_sweep, capsys):
    out, _ = micro_sweep
    code, _, err = run_cli(capsys, "sweep", "--config", MICRO, "--set", "train.steps=5", "--init-seeds", "42",
                           "--train-seeds", "23", "--out", out, "--quiet")
    assert code == 2 and "with another config" in err


# ---------------------------------------------------------------- kill and rerun


def _sweep_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "noisefloor", "sweep", "--config", MICRO, "--set", "train.steps=30",
            "--init-seeds", "42", "--train-seeds", "5", "--interventions", "no-dropout,wd-0.01", "--jobs", "2",
            "--quiet", "--out", str(out)]


def _wait_until_mid_run(out: Path, proc: subprocess.Popen, done_runs: int) -> None:
    """Until `done_runs` runs are done and another one is half-way."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        runs = list((out / "runs").glob("*")) if (out / "runs").is_dir() else []
        finished = [r for r in runs if (r / "result.json").exists()]
        partial = [r for r in runs if not (r / "result.json").exists() and (r / "metrics.jsonl").exists()
                   and (r / "metrics.jsonl").read_text().count('"loss"') >= 12]
        if len(finished) >= done_runs and partial:
            return
        time.sleep(0.01)
    raise AssertionError("the sweep never reached the middle of a run")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "sweep"
    subprocess.run(_sweep_cmd(out), check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    return read_rows(out)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killing_the_runner_mid_run_then_rerunning_gives_identical_results(tmp_path, uninterrupted, sig):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "sweep"
    proc = subprocess.Popen(_sweep_cmd(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_until_mid_run(out, proc, done_runs=1)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
    rows = read_rows(out)  # never half-written: it parses, and it lists every planned run
    assert len(rows) == len(uninterrupted)
    assert any(r["status"] != "done" for r in rows)
    time.sleep(0.2)  # the killed runner's workers die with it
    again = subprocess.run(_sweep_cmd(out), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert reproducible(read_rows(out)) == reproducible(uninterrupted)


# ---------------------------------------------------------------- failures and executors


def _write_spec(path: Path, body: str) -> Path:
    path.write_text(f'[sweep]\nname = "t"\nconfig = "{MICRO}"\nset = ["train.steps=3"]\n{body}')
    return path


def test_failed_and_diverged_runs_are_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    spec_file = _write_spec(tmp_path / "s.toml", """
[interventions.explode]
"train.learning_rate" = 1e30
[interventions.needs-gpu]
"train.device" = "cuda"
[[experiments]]
interventions = ["baseline", "explode", "needs-gpu"]
init_seeds = [1]
""")
    has_cuda = __import__("torch").cuda.is_available()  # then needs-gpu trains, and nothing is left to retry
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "sweep", spec_file, "--out", out, "--quiet")
    status = {r["intervention"]: (r["status"], r["error"]) for r in read_rows(out)}
    assert code == 1
    assert status["baseline"][0] == "done"
    assert status["explode"][0] == "diverged" and "non-finite" in status["explode"][1]
    if has_cuda:
        assert status["needs-gpu"][0] == "done"
    else:
        assert status["needs-gpu"][0] == "failed" and "no CUDA device" in status["needs-gpu"][1]
        assert "needs-gpu" in stdout and "failed" in stdout

    code, stdout, _ = run_cli(capsys, "sweep", spec_file, "--out", out, "--quiet")
    assert code == 1 and "trained now: 0" in stdout
    code, stdout, _ = run_cli(capsys, "sweep", spec_file, "--out", out, "--quiet", "--retry-failed")
    assert code == 1 and f"trained now: {0 if has_cuda else 1}" in stdout


def test_slurm_path_through_submitit_gives_the_same_bits(tmp_path, micro_sweep):
    plan = spec.from_flags(MICRO, [], [], [42], [23], "slurm")
    summary = run_sweep(plan, tmp_path / "slurm", SweepOptions(executor="slurm", cluster="local", time_minutes=5))
    assert summary.ok
    rows = {(r["intervention"], r["init_seed"], r["train_seed"]): r["final_digest"] for r in read_rows(tmp_path / "slurm")}
    reference = {(r["intervention"], r["init_seed"], r["train_seed"]): r["final_digest"] for r in read_rows(micro_sweep[0])}
    assert rows and all(reference[key] == digest for key, digest in rows.items())
    assert any((tmp_path / "slurm" / "logs").rglob("*.pkl")), "the job went through submitit's pickled submission"


def test_slurm_without_slurm_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = run_cli(capsys, "sweep", "--config", MICRO, "--init-seeds", "1", "--out", tmp_path / "o",
                           "--executor", "slurm", "--quiet")
    assert code == 2 and "no Slurm" in err and not (tmp_path / "o").exists()


# ---------------------------------------------------------------- spec files


def test_shipped_specs_plan_the_documented_studies():
    noise = spec.from_file(REPO / "seedsweeps" / "noise-floor.toml")
    cells = {(r.intervention, r.init_seed, r.train_seed) for r in noise.runs}
    assert cells == {("baseline", s, None) for s in (42, 22, 67)} | {("baseline", 42, t) for t in (23, 67)} \
        | {("baseline", s, 23) for s in (42, 22, 67)}
    single = spec.from_file(REPO / "seedsweeps" / "interventions.toml")
    assert {r.intervention for r in single.runs} == {"baseline", "grad-clip", "no-dropout", "qkv-bias", "wd-0.01",
                                                    "lr-schedule", "weight-tying"}
    combined = spec.from_file(REPO / "seedsweeps" / "combinations.toml")
    assert "no-dropout+lr-schedule" in {r.intervention for r in combined.runs}
    both = next(r for r in combined.runs if r.intervention == "no-dropout+lr-schedule")
    assert both.config.model.drop_rate == 0.0 and both.config.train.schedule_learning_rate


@pytest.mark.parametrize("body,message", [
    ('[[experiments]]\ninterventions = ["grad-clipp"]\ninit_seeds = [1]\n', "unknown intervention 'grad-clipp'"),
    ('[interventions.x]\n"train.learning_rat" = 0.1\n[[experiments]]\ninterventions = ["x"]\ninit_seeds = [1]\n',
     "unknown key [train] learning_rat"),
    ('[[experiments]]\nname = "a"\ninit_seeds = [1]\n[[experiments]]\nname = "a"\ninit_seeds = [2]\n', "two experiments are named 'a'"),
    ('[[experiments]]\ninit_seeds = []\n', "init_seeds must be a non-empty list"),
    ('[[experiments]]\ninit_seeds = [1]\ntrain_seeds = []\n', "train_seeds must be a non-empty list"),
    ('[[experiments]]\ninterventions = ["grad-clip", "grad-clip"]\ninit_seeds = [1]\n', "interventions listed twice"),
    ('[[experiments]]\ninit_seeds = [1, 1]\n', "lists a seed twice"),
    ('[[experiments]]\ninterventions = ["fp32"]\ninit_seeds = [1]\n', "'fp32' changes nothing"),
    ('[[experiments]]\ninit_seed = [1]\n', "unknown key 'init_seed'"),
    ('', "no [[experiments]]"),
])
def test_spec_errors_are_one_line_and_start_nothing(tmp_path, capsys, body, message):
    spec_file = _write_spec(tmp_path / "bad.toml", body)
    code, _, err = run_cli(capsys, "sweep", spec_file, "--out", tmp_path / "out", "--quiet")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_status_lists_every_run(micro_sweep, capsys):
    out, _ = micro_sweep
    code, stdout, _ = run_cli(capsys, "status", out, "--json")
    import json

    runs = json.loads(stdout)["runs"]
    assert code == 0 and len(runs) == 18 and {r["status"] for r in runs} == {"done"}
    code, _, err = run_cli(capsys, "status", out / "runs")
    assert code == 2 and "not a sweep folder" in err


def test_one_process_trains_a_run_and_status_probes_never_refuse_it(tmp_path):
    import threading

    from noisefloor.errors import UserError
    from noisefloor.rundir import RunDir, exclusive, is_locked

    run = RunDir(tmp_path)
    with exclusive(run):
        assert is_locked(tmp_path)
        with pytest.raises(UserError, match="being trained by another process"):
            with exclusive(run):
                pass
    assert not is_locked(tmp_path)

    probing = threading.Event()
    probing.set()

    def probe():  # what the sweep runner and `noisefloor status` do while runs start
        while probing.is_set():
            is_locked(tmp_path)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for _ in range(300):
            with exclusive(run):
                pass
    finally:
        probing.clear()
        prober.join()


def test_a_spec_names_its_base_config_by_path_or_by_preset(tmp_path, capsys):
    from noisefloor import config as config_module

    deep = tmp_path / "specs" / "deep"
    deep.mkdir(parents=True)
    spec_file = deep / "s.toml"
    spec_file.write_text('[sweep]\nname = "t"\nconfig = "micro"\nset = ["train.steps=3"]\n[[experiments]]\ninit_seeds = [1]\n')
    plan = spec.from_file(spec_file)
    assert [r.config for r in plan.runs] == [config_module.load("micro", ["train.steps=3", "train.init_seed=1"])]
    spec_file.write_text('[sweep]\nname = "t"\nconfig = 5\n[[experiments]]\ninit_seeds = [1]\n')
    code, _, err = run_cli(capsys, "sweep", spec_file, "--out", tmp_path / "out", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'config'" in err and not (tmp_path / "out").exists()
