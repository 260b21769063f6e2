"""Sweeps on a real one-node Slurm cluster (started by the `slurm_cluster` fixture): job arrays give the local
executor's bits, status asks Slurm, a killed job resumes bit-identically, a time limit fails the run and
--retry-failed resumes it, --cancel stops the jobs and keeps finished runs.

The long time-limit sweep is submitted (--detach) by the first test and judged by the last ones, so its
minute overlaps the other tests.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from slurm_cluster import slurm_cluster  # noqa: F401 (the fixture)

MICRO = str(REPO / "training" / "micro.toml")
SLURM = ("--executor", "slurm", "--partition", "debug")

pytestmark = pytest.mark.usefixtures("slurm_cluster")


@pytest.fixture(scope="module", autouse=True)
def fast_polling():
    """Ask Slurm every second, not every 10 s, so the tests wait for jobs, not for the poll."""
    from noisefloor.sweep.executors import SlurmExecutor

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SlurmExecutor, "poll_seconds", 1.0)
        yield


def status(capsys, sweep: Path) -> dict[str, dict]:
    code, out, _ = run_cli(capsys, "status", sweep, "--json")
    assert code == 0
    return {row["run"]: row for row in json.loads(out)["runs"]}


def wait_for(condition, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"waited {seconds} s for {what}")


def squeue(*fields: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "|".join(fields)], capture_output=True,
                         text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


def steps_done(run_dir: Path) -> int:
    from noisefloor.report.live import last_training_line

    return (last_training_line(run_dir / "metrics.jsonl") or {}).get("step", 0)


# ---------------------------------------------------------------- a run too long for its --time, in the background


@pytest.fixture(scope="module")
def long_sweep(tmp_path_factory):
    """A spec with a 20-step baseline and a 100000-step run under --time 1, submitted with --detach."""
    folder = tmp_path_factory.mktemp("slurm-limit")
    spec = folder / "limit.toml"
    spec.write_text(f"""[sweep]
name = "limit"
config = "{MICRO}"

[interventions.long]
"train.steps" = 100000

[[experiments]]
name = "both"
interventions = ["baseline", "long"]
init_seeds = [42]
""")
    return spec, folder / "sweep"


def test_detach_submits_and_returns_and_status_asks_slurm(long_sweep, capsys, caplog):
    spec, sweep = long_sweep
    began = time.time()
    code, out, err = run_cli(capsys, "sweep", spec, "--out", sweep, *SLURM, "--time", "1", "--detach", "--quiet")
    assert code == 0, err
    assert time.time() - began < 20 and "submitted to Slurm: 2 runs" in out
    rows = status(capsys, sweep)
    assert len(rows) == 2 and all(r["slurm_state"] in ("PENDING", "RUNNING", "COMPLETED") for r in rows.values())
    jobs = {r["slurm_job"] for r in rows.values()}
    assert len(jobs) == 2 and len({j.split("_")[0] for j in jobs}) == 1, "one job array, one element per run"
    # a running element carries the sweep and its run id in its job name
    long_run = next(run for run in rows if run.startswith("long_"))
    names = wait_for(lambda: [n for i, n in squeue("%i", "%j") if i == rows[long_run]["slurm_job"]
                              and n.endswith(long_run)], 30, "the running job's name")
    assert names == [f"noisefloor:limit:{long_run}"]
    assert "Bypassing sacct" not in caplog.text + err
