"""Data-parallel runs (DDP through torchrun, gloo on the CPU): repeatable, and resumable after a hard kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from noisefloor import config as config_module
from noisefloor.train import trainer
from test_train import same_bytes, tensors

WORLD = ["--config", str(REPO / "training" / "micro.toml"), "--set", "train.world_size=2", "--set", "train.steps=16",
         "--set", "train.checkpoint_interval=4"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "a"
    config = config_module.load(REPO / "training" / "micro.toml",
                                ["train.world_size=2", "train.steps=16", "train.checkpoint_interval=4"])
    return out, trainer.train(config, out), config


def test_a_two_rank_run_is_written_once_by_rank_0(ddp_run):
    out, result, _ = ddp_run
    assert result["status"] == "done"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["distributed"]["backend"] == "gloo"
    # rank 0 alone writes: one metrics line per step
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == list(range(1, 17))
    assert result["tokens_seen"] == 16 * 2 * 4 * 32


def test_two_ranks_read_twice_the_windows_of_one(ddp_run, tmp_path):
    _, result, config = ddp_run
    single = trainer.train(config.replace(train={"world_size": 1}), tmp_path / "single")
    assert single["init_digest"] == result["init_digest"]  # same initial weights
    assert single["final_digest"] != result["final_digest"]  # a global batch twice as large
    assert single["tokens_seen"] * 2 == result["tokens_seen"]


def _steps_done(run: Path) -> int:
    try:
        return (run / "metrics.jsonl").read_text().count('"loss"')
    except FileNotFoundError:
        return 0


def test_hard_kill_of_a_ddp_run_then_resume_is_bit_identical(ddp_run, tmp_path):
    reference, _, _ = ddp_run
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "noisefloor", "train", "--quiet", *WORLD, "--out", str(run)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _steps_done(run) < 9 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the CLI dies; torchrun and the ranks die with it (PR_SET_PDEATHSIG)
    proc.wait()
    assert not (run / "result.json").exists()
    time.sleep(1.0)
    leftovers = subprocess.run(["pgrep", "-f", f"noisefloor.train.rank {run}"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "a rank outlived the killed run"

    resumed = subprocess.run([sys.executable, "-m", "noisefloor", "train", "--quiet", "--resume", str(run)],
                             env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert same_bytes(tensors(run / "model.safetensors"), tensors(reference / "model.safetensors"))
    losses = lambda r: [json.loads(line)["loss"] for line in (r / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses(run) == losses(reference)


def test_a_sweep_trains_ddp_runs_through_torchrun_and_repeats_them_bit_for_bit(ddp_run, tmp_path):
    import csv

    from noisefloor.sweep import spec
    from noisefloor.sweep.runner import SweepOptions, run_sweep

    _, result, _ = ddp_run
    plan = spec.from_flags(str(REPO / "training" / "micro.toml"),
                           ["train.world_size=2", "train.steps=16", "train.checkpoint_interval=4"], [], [42], None, "ddp")
    summary = run_sweep(plan, tmp_path / "sweep", SweepOptions(jobs=1))
    with open(tmp_path / "sweep" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert summary.ok and rows[0]["final_digest"] == result["final_digest"]
