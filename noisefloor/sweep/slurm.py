"""What Slurm itself says about a sweep's jobs, and cancelling them.

A sweep submitted to Slurm lists its jobs in `SWEEP/logs/jobs.json` (run id ->
Slurm job id), so that a later `noisefloor sweep`, `status` or `sweep --cancel`,
from another shell after the submitting one exited (`--detach`), finds them.

States come from `squeue --states=all`, which also reports jobs that ended in
the last MinJobAge seconds (5 minutes by default): COMPLETED, TIMEOUT,
CANCELLED. `sacct` is asked only for the jobs squeue no longer knows, and only
when the cluster keeps accounting, so a cluster without accounting prints no
errors. (submitit's own watcher calls sacct on every poll; noisefloor never
asks it.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from noisefloor import atomic
from noisefloor.errors import UserError

# states in which a job still holds (or waits for) its run
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                    "RESIZING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED", "PREEMPTED"})
TIME_LIMIT_STATES = frozenset({"TIMEOUT", "DEADLINE"})
JOBS_FILE = "jobs.json"


def jobs_folder(sweep: str | Path) -> Path:
    """Where a sweep's submitit files, job logs and jobs.json live."""
    return Path(sweep) / "logs"


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # Slurm's: PENDING, RUNNING, COMPLETED, TIMEOUT, CANCELLED, FAILED, ...; "" when Slurm forgot the job
    reason: str = ""  # squeue's reason: Resources, Priority, TimeLimit, ... ("None" dropped)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def describe(self) -> str:
        if not self.state:
            return f"{self.job_id} (no longer known to Slurm)"
        return f"{self.job_id} {self.state}" + (f" ({self.reason})" if self.reason else "")


def _slurm(command: list[str]) -> str | None:
    """stdout of a Slurm command, or None when it fails (no controller, unknown job id)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@lru_cache(maxsize=None)
def accounting_enabled() -> bool:
    """Whether this cluster stores job accounting, i.e. whether sacct can answer at all."""
    config = _slurm(["scontrol", "show", "config"]) or ""
    match = re.search(r"^AccountingStorageType\s*=\s*(\S+)", config, re.MULTILINE)
    return bool(match) and match.group(1) != "accounting_storage/none"


def query_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """State of each job id (array elements as "123_4"), by squeue, then sacct where accounting exists."""
    wanted = sorted(set(job_ids))
    if not wanted:
        return {}
    arrays = sorted({job_id.split("_")[0] for job_id in wanted})
    found: dict[str, JobState] = {}
    # -r: one line per array element, pending ones included
    lines = _slurm(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r", "-j", ",".join(arrays)]) or ""
    for line in lines.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        found[job_id] = JobState(job_id, state, "" if reason == "None" else reason)
    forgotten = [job_id for job_id in wanted if job_id not in found]
    if forgotten and accounting_enabled():
        lines = _slurm(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j",
                        ",".join(sorted({job_id.split("_")[0] for job_id in forgotten}))]) or ""
        for line in lines.splitlines():
            job_id, _, state = line.partition("|")
            if job_id in forgotten:  # "CANCELLED by 0" -> CANCELLED
                found[job_id] = JobState(job_id, state.split()[0] if state else "")
    return {job_id: found.get(job_id, JobState(job_id, "")) for job_id in wanted}


def time_left_seconds(job_id: str) -> int | None:
    """Seconds before Slurm's time limit kills the job; None when unknown or unlimited."""
    text = (_slurm(["squeue", "-h", "-j", job_id, "-o", "%L"]) or "").strip()
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if not match:
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def rename_job(job_id: str, name: str) -> None:
    """Give a running array element its own name (an array is submitted under one name); best effort."""
    _slurm(["scontrol", "update", f"JobId={job_id}", f"JobName={name}"])


class SweepJobs:
    """A sweep's run id -> Slurm job id map (jobs.json in the sweep's jobs folder)."""

    def __init__(self, folder: Path):
        self.file = folder / JOBS_FILE

    def load(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.file.read_text())["runs"])
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            return {}

    def add(self, jobs: dict[str, str]) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.file, {"runs": {**self.load(), **jobs}})

    def states(self) -> dict[str, JobState]:
        """run id -> the state of its newest job (no Slurm call when the sweep never used Slurm)."""
        jobs = self.load()
        states = query_states(jobs.values())
        return {run_id: states[job_id] for run_id, job_id in jobs.items()}

    def cancel(self) -> dict[str, JobState]:
        """scancel every job of this sweep still queued or running; run id -> the job cancelled."""
        live = {run_id: state for run_id, state in self.states().items() if state.active}
        if live:
            subprocess.run(["scancel", *sorted({s.job_id for s in live.values()})], check=False, timeout=60)
        return live


def task_count() -> int:
    """How many tasks srun started for this job step (1 outside Slurm, and in a batch script itself)."""
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", 1))


def task_rank() -> int:
    """This task's rank among the step's tasks (SLURM_PROCID; 0 outside Slurm)."""
    return int(os.environ.get("SLURM_PROCID", 0))


def rendezvous_port(job_id: int) -> int:
    """A port for rank 0's rendezvous, fixed by the job id: two DDP jobs sharing a node meet on different ports,
    and a requeued job (same id) on the same one. 15000-29999 lies below Linux's ephemeral range."""
    return 15000 + job_id % 15000


def torch_rendezvous_env() -> dict[str, str]:
    """torch.distributed's env:// variables for this Slurm task, one rank per task: what torchrun sets on one
    machine, here from Slurm's (RANK = SLURM_PROCID, WORLD_SIZE = the step's task count, LOCAL_RANK =
    SLURM_LOCALID). Rank 0 runs on the first node of the step (srun's block distribution): MASTER_ADDR."""
    env = os.environ
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
    hosts = (_slurm(["scontrol", "show", "hostnames", nodes]) or "").split() if nodes else []
    if not hosts:
        raise RuntimeError(f"cannot name rank 0's node: `scontrol show hostnames {nodes!r}` listed none")
    return {"RANK": str(task_rank()), "WORLD_SIZE": str(task_count()), "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "MASTER_ADDR": hosts[0], "MASTER_PORT": str(rendezvous_port(int(env["SLURM_JOB_ID"])))}


# sbatch options noisefloor sets itself: each has its own flag, or is how noisefloor finds its jobs again
OWN_OPTIONS = {"time": "--time", "partition": "--partition", "gpus-per-node": "--gpus-per-run",
               "cpus-per-task": "the config's train.threads",
               "ntasks-per-node": "the config's train.world_size (one task per rank)", "ntasks": None,
               "nodes": "--nodes-per-run", "array": None, "job-name": None, "output": None,
               "error": None, "signal": None, "open-mode": None, "wrap": None}


def sbatch_args(pairs: list[str]) -> dict[str, str]:
    """`--slurm-arg KEY=VALUE` pairs as sbatch parameters (account, qos, constraint, ...)."""
    args: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not sep or not key or not value.strip():
            raise UserError(f"--slurm-arg {pair!r}: expected KEY=VALUE, an sbatch option, e.g. --slurm-arg account=myproject")
        if key in OWN_OPTIONS:
            instead = OWN_OPTIONS[key]
            raise UserError(f"--slurm-arg {key}: noisefloor sets sbatch --{key} itself"
                            + (f"; use {instead}" if instead else "; drop it"))
        args[key] = value.strip()
    return args
