"""Run a plan into a sweep folder: validate everything, skip what is done, resume what was cut off."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from noisefloor import atomic
from noisefloor.errors import UserError
from noisefloor.sweep.executors import LocalExecutor, SlurmExecutor
from noisefloor.sweep.spec import Plan
from noisefloor.sweep.store import RunRecord, SweepStore


@dataclass
class SweepOptions:
    executor: str = "local"
    jobs: int | None = None
    retry_failed: bool = False
    partition: str | None = None
    gpus_per_run: int = 0
    time_minutes: int = 60
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
    """Tokenise each corpus once for the whole sweep, and fail on bad data before any run starts."""
    from noisefloor.train.data import prepare_data

    seen = set()
    for run in plan.runs:
        m, t = run.config.model, run.config.train
        key = (t.data, m.vocab_size, m.context_length, t.eval_windows)
        if key not in seen:
            seen.add(key)
            prepare_data(run.config)


def default_jobs(plan: Plan) -> tuple[int, list[str] | None]:
    """One run per GPU on a GPU machine; otherwise as many runs as the cores allow at the configs' thread count."""
    import torch

    wants_gpu = any(r.config.train.device in ("auto", "cuda") for r in plan.runs)
    if wants_gpu and torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = [g.strip() for g in visible.split(",")] if visible else [str(i) for i in range(torch.cuda.device_count())]
        return len(gpus), gpus
    threads = max(r.config.train.threads for r in plan.runs)
    return max(1, (os.cpu_count() or 1) // threads), None


def run_sweep(plan: Plan, out: str | Path, options: SweepOptions,
              observer: Callable[[dict[str, Any]], None] = lambda e: None,
              tick: Callable[[], None] = lambda: None) -> SweepSummary:
    if options.executor not in ("local", "slurm"):
        raise UserError(f"unknown executor {options.executor!r} (local or slurm)")
    if options.executor == "slurm" and options.cluster is None and shutil.which("sbatch") is None:
        raise UserError("--executor slurm: no Slurm on this machine (sbatch is not on PATH)")
    store = SweepStore(atomic.out_folder(out))
    merged = store.merge_plan(plan)  # conflicts are refused before anything is written
    _validate_data(merged)
    store.path.mkdir(parents=True, exist_ok=True)
    store.save_plan(merged)
    records = store.write_results(merged)

    todo, running = [], []
    for record in records:
        if record.status == "running":
            running.append(record.planned.run_id)
        elif record.status == "missing" or (record.status == "failed" and options.retry_failed):
            if record.status == "failed":  # retried from its last checkpoint
                (store.run_dir(record.planned) / "result.json").unlink(missing_ok=True)
            todo.append(record.planned)

    attach: dict[str, str] = {}  # slurm: an unfinished run whose job is still queued or running is waited for, not resubmitted
    if options.executor == "slurm":
        from noisefloor.sweep import slurm

        slurm_jobs = slurm.SweepJobs(slurm.jobs_folder(store.path)).states()
        attach = {r.planned.run_id: slurm_jobs[r.planned.run_id].job_id for r in records
                  if r.status in ("running", "missing") and r.planned.run_id in slurm_jobs and slurm_jobs[r.planned.run_id].active}
        todo += [r.planned for r in records if r.status == "running" and r.planned.run_id in attach]
        running = [run_id for run_id in running if run_id not in attach]

    observer({"event": "plan", "plan": merged, "records": records, "todo": [r.run_id for r in todo]})
    if todo:
        tasks = [(r.run_id, str(store.run_dir(r)), r.config.to_dict()) for r in todo]
        threads = max(r.config.train.threads for r in todo)
        if options.executor == "slurm":
            executor = SlurmExecutor(slurm.jobs_folder(store.path), options.partition, options.gpus_per_run,
                                     options.time_minutes, threads, options.jobs or len(tasks), options.cluster,
                                     merged.name, options.slurm_args, options.detach, attach)
        else:
            jobs, gpus = default_jobs(merged)
            if options.jobs:
                jobs = options.jobs
                gpus = [gpus[i % len(gpus)] for i in range(jobs)] if gpus else None
            executor = LocalExecutor(jobs, threads, gpus)

        position = {record.planned.run_id: i for i, record in enumerate(records)}

        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "finished":  # re-read (and re-hash) only the run that finished
                i = position[event["run"]]
                records[i] = store.record(records[i].planned)
                store.write_csv(records)
            observer(event)

        executor.run(tasks, on_event, tick)
    records = store.write_results(merged)
    summary = SweepSummary(store.path, records, [r.run_id for r in todo], running)
    observer({"event": "done", "summary": summary})
    return summary
