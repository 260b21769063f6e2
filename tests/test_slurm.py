"""Sweeps on a real one-node Slurm cluster (started by the `slurm_cluster` fixture): job arrays give the local
executor's bits, status asks Slurm, a killed job resumes bit-identically, a time limit fails the run and
--retry-failed resumes it, --cancel stops the jobs and keeps finished runs, a DDP run trained by one Slurm task
per rank gives the local torchrun run's bits.

The long time-limit sweep is submitted (--detach) by the first test and judged by the last ones, so its
minute overlaps the other tests.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from slurm_cluster import slurm_cluster  # noqa: F401 (the fixture)

MICRO = str(REPO / "training" / "micro.toml")
SLURM = ("--executor", "slurm", "--partition", "debug")

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


def final_digests(sweep: Path) -> dict[str, str]:
    with open(sweep / "results.csv", newline="") as handle:
        return {row["run"]: row["final_digest"] for row in csv.DictReader(handle)}


def steps_done(run_dir: Path) -> int:
    from noisefloor.rundir import RunDir

    return (RunDir(run_dir).last_training_line() or {}).get("step", 0)


# ---------------------------------------------------------------- a run too long for its --time, in the background


@pytest.fixture(scope="module")
def long_sweep(slurm_cluster, tmp_path_factory):  # noqa: F811
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


# ---------------------------------------------------------------- one sweep through a job array


@pytest.fixture(scope="module")
def array_sweep(slurm_cluster, tmp_path_factory):  # noqa: F811
    """init seed 42, train seed 23, baseline and grad-clip: locally, and through sbatch with the live view
    rendered at each Slurm state change."""
    from rich.console import Console

    from noisefloor.report.live import SweepView
    from noisefloor.sweep import spec
    from noisefloor.sweep.runner import SweepOptions, run_sweep

    folder = tmp_path_factory.mktemp("slurm-array")
    plan = spec.from_flags(MICRO, [], ["grad-clip"], [42], [23], "array")
    view, shown = SweepView(folder / "slurm" / "runs", Console(file=io.StringIO())), []

    def observer(event):
        view(event)
        if event["event"] == "slurm":
            console = Console(file=io.StringIO(), width=250)
            console.print(view._render())
            shown.append(console.file.getvalue())

    def on_slurm():
        with view:
            return run_sweep(plan, folder / "slurm", SweepOptions(
                executor="slurm", partition="debug", time_minutes=5, slurm_args={"comment": "noisefloor-test"}),
                observer, view.tick)

    logger = logging.getLogger("submitit")
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    try:  # the local sweep trains while the Slurm jobs start
        with ThreadPoolExecutor(1) as pool:
            slurm_sweep = pool.submit(on_slurm)
            run_sweep(plan, folder / "local", SweepOptions(jobs=1))
            summary = slurm_sweep.result()
    finally:
        logger.removeHandler(handler)
    return folder / "slurm", folder / "local", summary, shown, [r.getMessage() for r in records]


def test_job_array_gives_the_local_executors_bits(array_sweep):
    slurm_sweep, local, summary, shown, warnings = array_sweep
    assert summary.ok
    digests = final_digests(slurm_sweep)
    assert len(digests) == 2 and digests == final_digests(local)
    jobs = json.loads((slurm_sweep / "logs" / "jobs.json").read_text())["runs"]
    assert sorted(jobs) == sorted(digests) and len({j.split("_")[0] for j in jobs.values()}) == 1
    assert not warnings, "no submitit warnings (it is never asked to call sacct)"
    # the live view showed each run's job id with Slurm's state
    assert all(any(f"{job} RUNNING" in text and run in text for text in shown) for run, job in jobs.items())
    # --slurm-arg reached sbatch
    comments = {i: k for i, k in squeue("%i", "%k")}
    assert all(comments[job] == "noisefloor-test" for job in jobs.values())


def test_status_shows_slurm_states_without_sacct(array_sweep, capsys, caplog):
    slurm_sweep = array_sweep[0]
    with caplog.at_level(logging.WARNING):  # the result is in before Slurm marks the job COMPLETED
        rows = wait_for(lambda: (lambda r: r if {x["slurm_state"] for x in r.values()} == {"COMPLETED"} else None)(
            status(capsys, slurm_sweep)), 30, "Slurm to mark the jobs COMPLETED")
        code, table, err = run_cli(capsys, "status", slurm_sweep)
    assert {r["status"] for r in rows.values()} == {"done"}
    assert code == 0 and "COMPLETED" in table and "slurm job" in table
    assert "sacct" not in caplog.text + err


def test_rerun_of_a_finished_slurm_sweep_submits_nothing(array_sweep, capsys):
    slurm_sweep = array_sweep[0]
    before = (slurm_sweep / "logs" / "jobs.json").read_text()
    code, out, _ = run_cli(capsys, "sweep", slurm_sweep, *SLURM, "--quiet")
    assert code == 0 and "trained now: 0" in out and (slurm_sweep / "logs" / "jobs.json").read_text() == before


# ---------------------------------------------------------------- a job killed mid-run


def test_killed_job_resumes_bit_identically_on_rerun(slurm_cluster, tmp_path, capsys):  # noqa: F811
    from noisefloor.config import from_dict
    from noisefloor.train import trainer

    sweep = tmp_path / "killed"
    command = ("sweep", "--config", MICRO, "--set", "train.steps=300", "--init-seeds", "7", "--out", sweep, *SLURM,
               "--time", "5", "--quiet")
    code, _, err = run_cli(capsys, *command, "--detach")
    assert code == 0, err
    (run_id, job), = json.loads((sweep / "logs" / "jobs.json").read_text())["runs"].items()
    run_dir = sweep / "runs" / run_id
    wait_for(lambda: list((run_dir / "checkpoints").glob("step-*")), 60, "the first checkpoint")
    subprocess.run(["scancel", "--signal=KILL", job], check=True)
    wait_for(lambda: status(capsys, sweep)[run_id]["slurm_state"] not in ("RUNNING", "COMPLETING"), 30, "the kill")
    row = status(capsys, sweep)[run_id]
    assert row["status"] == "missing" and 0 < row["step"] < 300, "killed mid-run, no result recorded"
    first_lines = (run_dir / "metrics.jsonl").read_text().splitlines()[:5]

    code, out, err = run_cli(capsys, *command, "--detach")  # resubmitted; the uninterrupted twin trains meanwhile
    assert code == 0 and "submitted to Slurm: 1 runs" in out, out + err
    resubmitted = (sweep / "logs" / "jobs.json").read_text()
    reference = trainer.train(from_dict(json.loads((run_dir / "config.json").read_text()), "config.json"),
                              tmp_path / "uninterrupted")
    code, out, err = run_cli(capsys, "sweep", sweep, "--quiet")  # collects (on Slurm): waits for the job, submits nothing
    assert code == 0 and "1 done" in out, out + err
    assert (sweep / "logs" / "jobs.json").read_text() == resubmitted and json.loads(resubmitted)["runs"][run_id] != job
    # resumed, not retrained: the steps before the checkpoint keep their lines (timings included)
    assert (run_dir / "metrics.jsonl").read_text().splitlines()[:5] == first_lines
    assert json.loads((run_dir / "result.json").read_text())["final_digest"] == reference["final_digest"]


# ---------------------------------------------------------------- the time-limit sweep, submitted by the first test


def test_time_limit_fails_the_run_and_retry_resumes_it(long_sweep, capsys):
    _, sweep = long_sweep
    rows = wait_for(lambda: (lambda r: r if any(x["status"] == "failed" for x in r.values()) else None)(
        status(capsys, sweep)), 120, "the time limit")
    long_run = next(run for run in rows if run.startswith("long_"))
    assert "time limit" in rows[long_run]["error"] and rows[long_run]["step"] > 0
    assert next(r for run, r in rows.items() if run != long_run)["status"] == "done"
    first_job = rows[long_run]["slurm_job"]
    run_dir = sweep / "runs" / long_run
    stopped_at = steps_done(run_dir)
    first_lines = (run_dir / "metrics.jsonl").read_text().splitlines()[:5]

    code, out, err = run_cli(capsys, "sweep", sweep, *SLURM, "--time", "2", "--retry-failed", "--detach", "--quiet")
    assert code == 0, out + err
    rows = status(capsys, sweep)
    assert rows[long_run]["slurm_job"] != first_job and rows[long_run]["status"] != "failed"
    # resumed from its last checkpoint: it trains on past where the limit stopped it, and the steps before keep
    # their lines (timings included: not retrained)
    wait_for(lambda: steps_done(run_dir) > stopped_at, 90, "the resumed run to train on")
    assert (run_dir / "metrics.jsonl").read_text().splitlines()[:5] == first_lines


def test_cancel_stops_the_jobs_and_keeps_finished_runs(long_sweep, capsys):
    _, sweep = long_sweep
    rows = status(capsys, sweep)
    long_run = next(run for run in rows if run.startswith("long_"))
    done_run = next(run for run in rows if run != long_run)
    code, out, _ = run_cli(capsys, "sweep", "--cancel", sweep)
    assert code == 0 and f"{long_run}: cancelled slurm job {rows[long_run]['slurm_job']}" in out
    rows = wait_for(lambda: (lambda r: r if r[long_run]["slurm_state"] == "CANCELLED" else None)(status(capsys, sweep)),
                    30, "the cancellation")
    assert rows[done_run]["status"] == "done" and rows[done_run]["slurm_state"] == "COMPLETED", rows
    assert rows[long_run]["status"] == "missing", "a cancelled run is resumed by the next sweep, not failed"
    code, out, _ = run_cli(capsys, "sweep", "--cancel", sweep)
    assert code == 0 and "cancelled 0 Slurm jobs" in out


def test_slurm_args_that_noisefloor_sets_itself_are_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "sweep", "--config", MICRO, "--init-seeds", "1", "--out", tmp_path / "o",
                           *SLURM, "--slurm-arg", "time=10", "--quiet")
    assert code == 2 and "--slurm-arg time" in err and "use --time" in err and not (tmp_path / "o").exists()
    code, _, err = run_cli(capsys, "sweep", "--config", MICRO, "--init-seeds", "1", "--out", tmp_path / "o",
                           "--detach", "--quiet")
    assert code == 2 and "--detach needs --executor slurm" in err


# ---------------------------------------------------------------- a DDP run: one Slurm task per rank


def test_ddp_run_with_a_slurm_task_per_rank_gives_the_local_torchrun_bits(slurm_cluster, tmp_path):  # noqa: F811
    from noisefloor.sweep import spec
    from noisefloor.sweep.runner import SweepOptions, run_sweep
    from test_train import same_bytes, tensors

    plan = spec.from_flags(MICRO, ["train.world_size=2", "train.steps=8"], [], [42], None, "ddp")
    with ThreadPoolExecutor(1) as pool:  # the local torchrun run trains while the job starts
        on_slurm = pool.submit(run_sweep, plan, tmp_path / "slurm",
                               SweepOptions(executor="slurm", partition="debug", time_minutes=5))
        local = run_sweep(plan, tmp_path / "local", SweepOptions(jobs=1))
        summary = on_slurm.result()
    assert local.ok and summary.ok
    digests = final_digests(tmp_path / "slurm")
    assert digests == final_digests(tmp_path / "local")
    (run_id, job), = json.loads((tmp_path / "slurm" / "logs" / "jobs.json").read_text())["runs"].items()
    run_dir = tmp_path / "slurm" / "runs" / run_id
    assert same_bytes(tensors(run_dir / "model.safetensors"), tensors(tmp_path / "local" / "runs" / run_id / "model.safetensors"))
    # trained by the job's two tasks as ranks 0 and 1 (rendezvous on the job's node), not by torchrun inside one task
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["distributed"]["backend"] == "gloo"
    assert sorted(p.name for p in (tmp_path / "slurm" / "logs" / job).glob("*_log.out")) == [f"{job}_0_log.out", f"{job}_1_log.out"]
    assert not (run_dir / "ranks.log").exists() and (tmp_path / "local" / "runs" / run_id / "ranks.log").exists()


def test_a_ddp_run_asks_slurm_for_one_task_per_rank_spread_over_its_nodes(tmp_path, capsys):
    from noisefloor.errors import UserError
    from noisefloor.sweep import spec
    from noisefloor.sweep.executors import SlurmExecutor
    from noisefloor.sweep.runner import SweepOptions, run_sweep

    executor = SlurmExecutor(tmp_path, "gpu", 16, 60, 4, 10, nodes_per_run=2)
    ddp, single = executor._parameters(16), executor._parameters(1)
    assert (ddp["nodes"], ddp["tasks_per_node"], ddp["gpus_per_node"], ddp["cpus_per_task"]) == (2, 8, 8, 4)
    assert "tasks_per_node" not in single and single["gpus_per_node"] == 16  # a single-process run takes one node
    plan = spec.from_flags(MICRO, ["train.world_size=2"], [], [1], None, "uneven")
    with pytest.raises(UserError, match=r"--nodes-per-run 3: run \S+ has train.world_size = 2 ranks"):
        run_sweep(plan, tmp_path / "o", SweepOptions(executor="slurm", cluster="local", nodes_per_run=3))
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli(capsys, "sweep", "--config", MICRO, "--init-seeds", "1", "--out", tmp_path / "o", *SLURM,
                           "--slurm-arg", "nodes=2", "--quiet")
    assert code == 2 and "use --nodes-per-run" in err
