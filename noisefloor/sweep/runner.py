"""Run a plan into a sweep folder: validate everything, skip what is done, resume what was cut off."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from noisefloor import atomic
from noisefloor.errors import UserError
from noisefloor.rundir import RunDir
from noisefloor.sweep import slurm
from noisefloor.sweep.executors import LocalExecutor, SlurmExecutor
from noisefloor.sweep.spec import CommandRun, Plan, cpu_jobs
from noisefloor.sweep.store import RunRecord, SweepStore


@dataclass
class SweepOptions:
    executor: str = "local"
    jobs: int | None = None
    retry_failed: bool = False
    partition: str | None = None
    gpus_per_run: int = 0  # slurm: spread evenly over the run's nodes
    nodes_per_run: int = 1  # slurm: nodes a DDP run spreads its ranks over (one task per rank)
    time_minutes: float = 60  # Slurm's limit per run; a user's command is stopped after it locally too
    cluster: str | None = None  # submitit cluster: None = auto (slurm when available), "local" for tests
    slurm_args: dict[str, str] = field(default_factory=dict)  # extra sbatch parameters (--slurm-arg)
    detach: bool = False  # slurm: return once the jobs are submitted


@dataclass
class SweepSummary:
    path: Path
    records: list[RunRecord]
    trained: list[str] = field(default_factory=list)
    skipped_running: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.records if r.status == status)

    @property
    def ok(self) -> bool:
        return all(r.status == "done" for r in self.records)


def _validate_data(plan: Plan) -> None:
    """Tokenise each corpus once for the whole sweep, and fail on bad data or a config too big for this
    machine before any run starts. A sweep of user commands only never imports torch here."""
    runs = _trainer_runs(plan.runs)
    if not runs:
        return
    # torch: a sweep of user commands only never imports it
    from noisefloor.train.data import prepare_data
    from noisefloor.train.trainer import require_memory, uses_cuda

    seen = set()
    for run in runs:
        if not uses_cuda(run.config):  # a CUDA run is checked by the worker that trains it (see require_memory)
            require_memory(run.config)
        m, t = run.config.model, run.config.train
        key = (t.data, m.vocab_size, m.context_length, t.eval_windows)
        if key not in seen:
            seen.add(key)
            prepare_data(run.config)


def _check_nodes(plan: Plan, options: SweepOptions) -> None:
    """A DDP run's ranks, and its GPUs, spread evenly over its nodes."""
    nodes = options.nodes_per_run
    worlds = {run.run_id: run.config.train.world_size for run in _trainer_runs(plan.runs)}
    for run_id, world in worlds.items():
        if world > 1 and world % nodes:
            raise UserError(f"--nodes-per-run {nodes}: run {run_id} has train.world_size = {world} ranks, which "
                            f"do not spread evenly over {nodes} nodes; choose a divisor of {world}")
    if nodes > 1 and options.gpus_per_run % nodes and max(worlds.values(), default=1) > 1:
        raise UserError(f"--gpus-per-run {options.gpus_per_run} does not spread evenly over --nodes-per-run {nodes}; "
                        f"give the run's GPUs on all its nodes, a multiple of {nodes}")


def _trainer_runs(runs):
    return [r for r in runs if not isinstance(r.config, CommandRun)]


def _threads(runs) -> int | None:
    """Threads per run of noisefloor's trainer; None when only user commands run (their program decides)."""
    return max((r.config.train.threads for r in _trainer_runs(runs)), default=None)


def default_jobs(plan: Plan) -> tuple[int, list[str] | None]:
    """One run per GPU on a GPU machine; otherwise as many runs as the cores allow at the configs' thread count.
    A user's command runs one at a time: it may use every core or the GPU itself."""
    if not _trainer_runs(plan.runs):
        return 1, None
    import torch  # only to count GPUs, once the plan holds runs of noisefloor's trainer

    wants_gpu = any(r.config.train.device in ("auto", "cuda") for r in _trainer_runs(plan.runs))
    if wants_gpu and torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = [g.strip() for g in visible.split(",")] if visible else [str(i) for i in range(torch.cuda.device_count())]
        return len(gpus), gpus
    return cpu_jobs(plan), None


def run_sweep(plan: Plan, out: str | Path, options: SweepOptions,
              observer: Callable[[dict[str, Any]], None] = lambda e: None,
              tick: Callable[[], None] = lambda: None) -> SweepSummary:
    if options.executor not in ("local", "slurm"):
        raise UserError(f"unknown executor {options.executor!r} (local or slurm)")
    if options.executor == "slurm" and options.cluster is None and shutil.which("sbatch") is None:
        raise UserError("--executor slurm: no Slurm on this machine (sbatch is not on PATH)")
    store = SweepStore(atomic.out_folder(out))
    merged = store.merge_plan(plan)  # conflicts are refused before anything is written
    if options.executor == "slurm":
        _check_nodes(merged, options)
    _validate_data(merged)
    with _stopped_write_named(store):
        return _run_plan(store, merged, options, observer, tick)


@contextmanager
def _stopped_write_named(store: SweepStore) -> Iterator[None]:
    """A failed write of the runner's own files (disk full, read-only) is one line saying what is kept."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        raise UserError(f"{exc.filename or store.path}: {exc.strerror}; the sweep stopped, every finished run is kept "
                        f"under {store.runs_dir} (an interrupted one resumes from its last checkpoint); "
                        "once fixed, run the same command again to continue") from None


def _run_plan(store: SweepStore, merged: Plan, options: SweepOptions, observer: Callable[[dict[str, Any]], None],
              tick: Callable[[], None]) -> SweepSummary:
    store.path.mkdir(parents=True, exist_ok=True)
    store.save_plan(merged)
    records = store.write_results(merged)

    todo, running = [], []
    for record in records:
        if record.status == "running":
            running.append(record.planned.run_id)
        elif record.status == "missing" or (record.status == "failed" and options.retry_failed):
            if record.status == "failed":  # retried from its last checkpoint
                RunDir(store.run_dir(record.planned)).result.unlink(missing_ok=True)
            todo.append(record.planned)

    attach: dict[str, str] = {}  # slurm: an unfinished run whose job is still queued or running is waited for, not resubmitted
    if options.executor == "slurm":
        slurm_jobs = slurm.SweepJobs(slurm.jobs_folder(store.path)).states()
        attach = {r.planned.run_id: slurm_jobs[r.planned.run_id].job_id for r in records
                  if r.status in ("running", "missing") and r.planned.run_id in slurm_jobs and slurm_jobs[r.planned.run_id].active}
        todo += [r.planned for r in records if r.status == "running" and r.planned.run_id in attach]
        running = [run_id for run_id in running if run_id not in attach]

    observer({"event": "plan", "plan": merged, "records": records, "todo": [r.run_id for r in todo]})
    if todo:
        tasks = [(r.run_id, str(store.run_dir(r)), r.config) for r in todo]
        threads = _threads(todo)
        if options.executor == "slurm":
            executor = SlurmExecutor(slurm.jobs_folder(store.path), options.partition, options.gpus_per_run,
                                     options.time_minutes, threads, options.jobs or len(tasks), options.cluster,
                                     merged.name, options.slurm_args, options.detach, attach, options.nodes_per_run)
        else:
            jobs, gpus = default_jobs(merged)
            if options.jobs:
                jobs = options.jobs
                gpus = [gpus[i % len(gpus)] for i in range(jobs)] if gpus else None
            executor = LocalExecutor(jobs, threads, gpus, options.time_minutes * 60)

        position = {record.planned.run_id: i for i, record in enumerate(records)}

        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "finished":  # re-read (and re-hash) only the run that finished
                i = position[event["run"]]
                records[i] = store.record(records[i].planned)
                store.write_csv(records)
            observer(event)

        executor.run(tasks, on_event, tick)
    # a done run was verified (its weights hashed) when the sweep started or when it finished: only the others can
    # have changed since (a run another process was training, one whose worker died)
    records = [r if r.status == "done" else store.record(r.planned) for r in records]
    store.write_csv(records)
    summary = SweepSummary(store.path, records, [r.run_id for r in todo], running)
    observer({"event": "done", "summary": summary})
    return summary
