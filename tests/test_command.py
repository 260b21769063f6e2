"""`noisefloor sweep --command`: a user's own training program swept like noisefloor's runs."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "train.py"


def rows_of(folder: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(folder / "results.csv", newline="") as handle:
        return {(r["intervention"], r["init_seed"], r["train_seed"]): r for r in csv.DictReader(handle)}


def test_the_example_script_is_swept_repeated_bit_for_bit_and_classified(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the script imports noisefloor.seeding
    command = (f"{shlex.quote(sys.executable)} {shlex.quote(str(EXAMPLE))} "
               "--init-seed {init_seed} --train-seed {train_seed} --out {run_dir}")
    code, stdout, _ = run_cli(capsys, "sweep", "--command", command, "--init-seeds", "42", "--train-seeds", "23,67",
                              "--jobs", "2", "--quiet")
    assert code == 0 and "trained now: 2" in stdout
    # a second command in the same study adds an intervention (named arguments); the baseline is not rerun.
    # It passes the script's default dropout explicitly: another command, the same training, in another process
    code, stdout, _ = run_cli(capsys, "sweep", "--command", command, "--init-seeds", "42", "--train-seeds", "23",
                              "--intervention", "explicit-dropout=--dropout 0.2", "--quiet")
    assert code == 0 and "trained now: 1" in stdout
    rows = rows_of(tmp_path)
    a, b, repeat = rows["baseline", "42", "23"], rows["baseline", "42", "67"], rows["explicit-dropout", "42", "23"]
    assert all(r["status"] == "done" and float(r["test_loss"]) > 0 for r in (a, b, repeat))
    assert a["init_digest"] == b["init_digest"] == repeat["init_digest"]  # the train seed leaves the init alone
    assert a["final_digest"] != b["final_digest"]                          # ... and changes the training loop
    assert repeat["final_digest"] == a["final_digest"] and repeat["test_loss"] == a["test_loss"]  # bit-identical repeat
    assert a["same_init"] == b["same_init"] == repeat["same_init"] == "true"
    code, stdout, _ = run_cli(capsys, "verify-identical", f"runs/{a['run']}/model.safetensors",
                              f"runs/{repeat['run']}/model.safetensors")
    assert code == 0 and "IDENTICAL" in stdout

    code, stdout, _ = run_cli(capsys, "classify", "results.csv", "--json")
    (verdict,) = json.loads(stdout)["interventions"]
    assert code == 0 and verdict["same_init"] is True and verdict["floor"] == "train@init_seed=42"
    assert verdict["verdict"] == "noise" and verdict["delta_matched"] == 0.0
    code, stdout, _ = run_cli(capsys, "status", ".", "--json")
    assert code == 0 and {r["status"] for r in json.loads(stdout)["runs"]} == {"done"}


FAKE = """\
run_dir=$1; seed=$2; mode=$3
case "$mode" in
  fail) echo "loading data"; echo "ValueError: no such file: data.bin" >&2; exit 3;;
  hang) echo "waiting for a lock"; sleep 60;;
  silent) echo "done training"; echo '{"val_loss": 1.5}' > "$run_dir/result.json";;
  *) echo "{\\"test_loss\\": 4.$seed, \\"val_loss\\": 4.5}" > "$run_dir/result.json";;
esac
"""


@pytest.fixture
def fake_program(tmp_path) -> str:
    script = tmp_path / "fake.sh"
    script.write_text(FAKE)
    return f"sh {shlex.quote(str(script))} {{run_dir}} {{init_seed}}"


def test_a_failing_hanging_or_silent_command_is_a_failed_row_and_the_sweep_goes_on(tmp_path, capsys, fake_program):
    out = tmp_path / "study"
    code, stdout, _ = run_cli(capsys, "sweep", "--command", fake_program, "--init-seeds", "1", "--out", out,
                              "--intervention", "fail=fail", "--intervention", "hang=hang", "--intervention", "silent=silent",
                              "--time", "0.02", "--jobs", "4", "--quiet")
    rows = {key[0]: r for key, r in rows_of(out).items()}
    assert code == 1 and "3 failed" in stdout
    assert rows["baseline"]["status"] == "done" and rows["baseline"]["test_loss"] == "4.1"
    assert rows["baseline"]["init_digest"] == "" and rows["baseline"]["same_init"] == ""  # no weights: nothing to compare
    fail, hang, silent = rows["fail"], rows["hang"], rows["silent"]
    assert fail["status"] == "failed" and "exited with code 3" in fail["error"] and "ValueError: no such file" in fail["error"]
    assert hang["status"] == "failed" and "time limit" in hang["error"] and "waiting for a lock" in hang["error"]
    assert silent["status"] == "failed" and "no finite test_loss" in silent["error"] and "done training" in silent["error"]
    result = json.loads((out / "runs" / fail["run"] / "result.json").read_text())
    assert result["output_tail"][-1] == "ValueError: no such file: data.bin"
    # a rerun leaves finished and failed runs alone
    code, stdout, _ = run_cli(capsys, "sweep", "--command", fake_program, "--init-seeds", "1", "--out", out,
                              "--intervention", "fail=fail", "--intervention", "hang=hang", "--intervention", "silent=silent",
                              "--quiet")
    assert code == 1 and "trained now: 0" in stdout


def test_the_slurm_executor_runs_a_command_through_the_same_path(tmp_path, fake_program):
    from noisefloor.sweep.runner import SweepOptions, run_sweep
    from noisefloor.sweep.spec import from_command

    plan = from_command(fake_program, {}, [7], None, "slurm")
    summary = run_sweep(plan, tmp_path / "slurm", SweepOptions(executor="slurm", cluster="local", time_minutes=1))
    assert summary.ok and rows_of(tmp_path / "slurm")["baseline", "7", ""]["test_loss"] == "4.7"


@pytest.mark.parametrize("argv,message", [
    (["--command", "python t.py --out {run_dir}", "--init-seeds", "1"], "must pass {init_seed}"),
    (["--command", "python t.py {init_seed} {run_dir}", "--init-seeds", "1", "--train-seeds", "2"], "must pass {train_seed}"),
    (["--command", "python t.py {init_seed} {run_dir} {seed}", "--init-seeds", "1"], "unknown placeholder {seed}"),
    (["--command", "t {init_seed} {run_dir}", "--init-seeds", "1", "--intervention", "x"], "write NAME=ARGUMENTS"),
    (["--command", "t {init_seed} {run_dir}", "--init-seeds", "1", "--intervention", "x="], "adds no arguments"),
    (["--command", "t {init_seed} {run_dir}", "--init-seeds", "1", "--interventions", "qkv-bias"], "--intervention 'qkv-bias=--your-flag'"),
    (["--command", "t {init_seed} {run_dir}", "--init-seeds", "1", "--config", "micro"], "drop --config"),
    (["--command", "t {init_seed} {run_dir}"], "--init-seeds 42,22,67"),
    (["--init-seeds", "1", "--intervention", "x=--y"], "is for --command"),
])
def test_command_mistakes_are_one_line_saying_what_to_type(tmp_path, capsys, argv, message):
    code, _, err = run_cli(capsys, "sweep", *argv, "--out", tmp_path / "s", "--quiet")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_seeding_imports_without_torch_and_wants_init_first():
    probe = "import sys, noisefloor.seeding as s; assert 'torch' not in sys.modules\n" \
            "try:\n    s.train(1)\nexcept RuntimeError as e:\n    print(e)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "call seeding.init(init_seed) before" in done.stdout


def test_a_study_file_can_name_the_command_and_its_interventions(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "noisefloor.toml").write_text(
        '[study]\ncommand = "python train.py --init-seed {init_seed} --train-seed {train_seed} --out {run_dir}"\n'
        'init_seeds = [42, 22]\ntrain_seeds = [23, 67]\ninterventions = ["qkv-bias"]\n'
        '[interventions]\nqkv-bias = "--qkv-bias"\n')
    code, stdout, err = run_cli(capsys, "sweep", "--dry-run")
    assert code == 0 and err == "" and "4 runs planned" in stdout and stdout.count("qkv-bias_") == 2
    assert "time unknown until a run finishes" in stdout
    code, stdout, _ = run_cli(capsys, "reseed", "--dry-run")  # the training-loop floor: baseline, init seed 42
    assert code == 0 and "init 42  train 23" in stdout and "init 42  train 67" in stdout and "qkv-bias" not in stdout
    from noisefloor.sweep.study import Request, resolve

    (run,) = [r for r in resolve(Request("sweep")).plan.runs if r.intervention == "qkv-bias" and r.init_seed == 22]
    assert run.config.command("/s/runs/x") == "python train.py --init-seed 22 --train-seed none --out /s/runs/x --qkv-bias"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_killing_the_runner_stops_the_commands_it_started(tmp_path):
    import os
    import signal
    import time

    command = "sleep 60 & echo $! > {run_dir}/sleeper; wait  # {init_seed}"
    runner = subprocess.Popen([sys.executable, "-m", "noisefloor", "sweep", "--command", command, "--init-seeds", "1",
                               "--out", str(tmp_path), "--quiet"], env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(tmp_path.glob("runs/*/sleeper")) or not list(tmp_path.glob("runs/*/sleeper"))[0].read_text().strip():
        assert time.time() < deadline and runner.poll() is None, "the command never started"
        time.sleep(0.05)
    sleeper = int(list(tmp_path.glob("runs/*/sleeper"))[0].read_text())
    assert _alive(sleeper)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    deadline = time.time() + 10
    while _alive(sleeper) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(sleeper), "a command outlived the runner that started it"


@pytest.mark.parametrize("written", ["[" * 100_000, '{"test_loss": ' + "9" * 5000 + "}"], ids=["deep", "huge-int"])
def test_a_result_json_that_breaks_the_parser_is_one_clear_reason(tmp_path, written):
    """A program's result.json nested too deeply or holding a huge integer is a failed run with a reason, not a
    crash of the worker with a generic error."""
    from noisefloor.rundir import RunDir

    run = RunDir(tmp_path)
    run.result.write_text(written)
    reported, problem = run.read_reported_result()
    assert reported is None and problem.startswith("result.json is not valid JSON (")
