"""Where runs execute: a local pool of worker processes, or Slurm through submitit.

Both call `execute_run` on a run directory, so a run is the same files and
the same bits whichever executor trained it; a user's command (sweep/command.py)
goes through the same path.

Local workers are long-lived spawned processes: torch is imported once per
worker, not once per run. They die with the runner (PR_SET_PDEATHSIG), so a
killed runner leaves no orphan training into the sweep folder; an
interrupted run resumes from its last checkpoint on the next invocation.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

from noisefloor.config import RunConfig
from noisefloor.processes import die_with_parent
from noisefloor.rundir import RunDir, RunLocked
from noisefloor.sweep import slurm
from noisefloor.sweep.command import execute_command
from noisefloor.sweep.spec import CommandRun

# (run id, run directory, resolved config: it crosses into the worker process as itself)
Task = tuple[str, str, RunConfig | CommandRun]
# called as on_event({"event": "started"|"finished", "run": id, "result": {...}})
Observer = Callable[[dict[str, Any]], None]


def execute_run(run_dir: str, config: RunConfig | CommandRun, time_limit_s: float | None = None,
                rank_of_slurm_task: bool = False) -> dict[str, Any] | None:
    """Train, resume or return one run (or run a user's command, stopped after `time_limit_s`).
    A run's own failure becomes a `failed` result.json, not an exception.

    `rank_of_slurm_task`: this process is one task of a Slurm job that has a task per rank of this DDP run
    (no torchrun). Rank 0 answers for the run; the other ranks return None and raise their own failures (into
    their task's log): rank 0 then fails on the broken connection and records the run as failed."""
    run = RunDir(Path(run_dir))
    rank = slurm.task_rank() if rank_of_slurm_task else 0
    try:
        if isinstance(config, CommandRun):
            return execute_command(run_dir, config, time_limit_s)
        from noisefloor.train import trainer  # torch: a sweep of user commands never imports it

        if rank_of_slurm_task:
            from noisefloor.train import distributed  # torch, as trainer

            os.environ.update(slurm.torch_rendezvous_env())
            return trainer.train_as_rank(config, run.path, distributed.ranks_from_env())
        if run.config.exists():
            return trainer.resume(run.path)
        return trainer.train(config, run.path)
    except KeyboardInterrupt:
        raise
    except RunLocked as exc:  # another process trains it: its result is that process's to write
        return {"status": "running", "error": str(exc)}
    except Exception as exc:  # recorded, and the sweep goes on
        if rank > 0:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return failed_result(run_dir, f"{type(exc).__name__}: {message}", traceback=traceback.format_exc())


def failed_result(run_dir: str, message: str, **details: Any) -> dict[str, Any]:
    result = {"status": "failed", "error": message, **details}
    run = RunDir(Path(run_dir))
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_result(result)
    except OSError as exc:  # disk full or read-only: the runner still hears of the failure; the run stays resumable
        result["error"] = f"{message} (and {exc.filename}: {exc.strerror}, so no result.json was written)"
    return result


# ---------------------------------------------------------------- local pool


def _worker_main(connection, env: dict[str, str], time_limit_s: float | None) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides how an interrupt ends
    os.environ.update(env)
    while True:
        task = connection.recv()
        if task is None:
            return
        run_id, run_dir, config = task
        connection.send((run_id, execute_run(run_dir, config, time_limit_s)))


@dataclass
class _Worker:
    process: Any
    connection: Any
    env: dict[str, str]
    task: Task | None = None


def _world_size(config: RunConfig | CommandRun) -> int:
    return config.train.world_size if isinstance(config, RunConfig) else 1  # a user's command is one process to us


class LocalExecutor:
    """`jobs` worker processes; with `gpus`, one worker per GPU (CUDA_VISIBLE_DEVICES).

    A run with world_size > 1 is trained by torchrun, after the pool's runs.
    `threads` None leaves the thread count to the runs (a user's command); a
    user's command is stopped after `time_limit_s`.
    """

    def __init__(self, jobs: int, threads: int | None, gpus: list[str] | None = None, time_limit_s: float | None = None):
        self.jobs = len(gpus) if gpus else jobs
        self.time_limit_s = time_limit_s
        thread_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
        self.envs = [{**thread_env, **({"CUDA_VISIBLE_DEVICES": gpus[i]} if gpus else {})} for i in range(self.jobs)]

    def _start(self, env: dict[str, str]) -> _Worker:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=_worker_main, args=(child, env, self.time_limit_s), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent, env)

    def run(self, tasks: list[Task], observer: Observer, tick: Callable[[], None] = lambda: None) -> None:
        """Single-process runs in the pool; DDP runs after them, one at a time, each with every GPU (torchrun)."""
        single = [task for task in tasks if _world_size(task[2]) == 1]
        if single:
            self._run_pool(single, observer, tick)
        for run_id, run_dir, config in (task for task in tasks if _world_size(task[2]) > 1):
            observer({"event": "started", "run": run_id})
            observer({"event": "finished", "run": run_id, "result": execute_run(run_dir, config)})

    def _run_pool(self, tasks: list[Task], observer: Observer, tick: Callable[[], None]) -> None:
        pending = deque(tasks)
        workers = [self._start(env) for env in self.envs[: max(1, min(self.jobs, len(tasks)))]]
        try:
            while pending or any(w.task for w in workers):
                for worker in workers:
                    if worker.task is None and pending:
                        worker.task = pending.popleft()
                        worker.connection.send(worker.task)
                        observer({"event": "started", "run": worker.task[0]})
                busy = [w for w in workers if w.task]
                ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout=0.5)
                for index, worker in enumerate(workers):
                    if worker.task is None:
                        continue
                    message = None
                    if worker.connection in ready:
                        try:
                            message = worker.connection.recv()
                        except EOFError:  # the worker died: wait for its exit code below
                            worker.process.join(5)
                    if message is not None:
                        worker.task = None
                        observer({"event": "finished", "run": message[0], "result": message[1]})
                    elif not worker.process.is_alive():
                        run_id, run_dir, _ = worker.task
                        code = worker.process.exitcode
                        reason = f"signal {-code}" if code and code < 0 else f"exit code {code}"
                        result = failed_result(run_dir, f"worker process died ({reason}; killed or out of memory?)")
                        observer({"event": "finished", "run": run_id, "result": result})
                        workers[index] = self._start(worker.env)
                tick()
        finally:
            for worker in workers:
                if worker.process.is_alive():
                    if worker.task is None:
                        try:
                            worker.connection.send(None)
                        except (BrokenPipeError, OSError):
                            pass
                    else:
                        worker.process.kill()  # its run keeps its last checkpoint
            deadline = time.time() + 10
            for worker in workers:
                worker.process.join(max(0.0, deadline - time.time()))
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()


# ---------------------------------------------------------------- slurm


STOP_BEFORE_LIMIT_S = 5  # the run stops this long before Slurm's time limit: time to record why


class TimeLimitReached(BaseException):
    """Slurm's warning signal before the time limit: not an Exception, so no run code swallows it."""


def slurm_job(run_dir: str, config: RunConfig | CommandRun, job_name: str, time_minutes: float,
              signal_delay_s: int) -> dict[str, Any] | None:
    """The function a Slurm array element runs: `execute_run`, named after its run, ended cleanly at the time limit.
    A DDP run's element has one task per rank, each running this function (see `execute_run`).

    Slurm warns the job `signal_delay_s` before its time limit (sbatch --signal), or up to a minute earlier
    (its event resolution). The run trains on until a few seconds before the limit, then stops at the next
    Python instruction, keeps its checkpoints and is recorded `failed` with "time limit" in its error, so
    `--retry-failed` resumes it. The same signal far from the limit is a preemption
    (PreemptParameters=send_user_signal): submitit's handler requeues the job, which resumes the run.
    """
    rank_of_task = _world_size(config) > 1 and slurm.task_count() > 1
    rank = slurm.task_rank() if rank_of_task else 0
    job_id = "_".join(filter(None, (os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID"))))
    job_id = job_id or os.environ.get("SLURM_JOB_ID", "")
    if job_id and rank == 0:
        slurm.rename_job(job_id, job_name)
    warning = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
    submitit_handler = signal.getsignal(warning)

    def stop(signum, frame):
        raise TimeLimitReached

    def on_warning(signum, frame):
        left = slurm.time_left_seconds(job_id)
        if left is not None and left > signal_delay_s + 60 and callable(submitit_handler):
            submitit_handler(signum, frame)
        elif left is not None and left > STOP_BEFORE_LIMIT_S:
            signal.signal(signal.SIGALRM, stop)
            signal.setitimer(signal.ITIMER_REAL, left - STOP_BEFORE_LIMIT_S)
        else:
            raise TimeLimitReached

    signal.signal(warning, on_warning)
    try:
        # a user's command is stopped a little before Slurm's limit, so its failure carries its own output
        return execute_run(run_dir, config, max(1.0, time_minutes * 60 - signal_delay_s), rank_of_task)
    except TimeLimitReached:
        if rank > 0:  # rank 0 records why the run stopped
            return None
        finished = RunDir(Path(run_dir)).read_result()
        if finished is not None:  # the stop came after the run wrote its result: that result stands
            return finished
        return time_limit_result(run_dir, job_id, time_minutes)
    finally:  # a stop while the finished job exits must not kill it (Slurm would call the job FAILED)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(warning, signal.SIG_IGN)


def time_limit_result(run_dir: str, job_id: str, time_minutes: float) -> dict[str, Any]:
    return failed_result(run_dir, f"slurm job {job_id} reached its time limit (--time {time_minutes:g}); "
                                  "--retry-failed resumes it from its last checkpoint, or raise --time")


def signal_delay_seconds(time_minutes: float) -> int:
    """How long before the time limit Slurm warns the job: submitit's 90 s, at most half of a short limit."""
    return int(min(90, time_minutes * 30))


class SlurmExecutor:
    """Job arrays through submitit; runs whose jobs are still queued or running are waited for, not resubmitted.

    `cluster="local"` runs the same submission path on this machine (submitit's local executor).
    `detach`: return once submitted; a later `noisefloor sweep` or `status` collects the results.
    Slurm is polled every `poll_seconds` (one squeue for all jobs); a job's result file is looked for every 0.5 s.
    """

    poll_seconds = 10.0

    def __init__(self, folder: Path, partition: str | None, gpus_per_run: int, time_minutes: float, threads: int | None,
                 max_parallel: int, cluster: str | None = None, sweep_name: str = "sweep",
                 slurm_args: dict[str, str] | None = None, detach: bool = False, attach: dict[str, str] | None = None,
                 nodes_per_run: int = 1):
        self.folder = folder
        self.partition = partition
        self.gpus_per_run = gpus_per_run
        self.time_minutes = time_minutes
        self.threads = threads
        self.max_parallel = max_parallel
        self.cluster = cluster
        self.sweep_name = Path(sweep_name).name  # a flag sweep is named after its --out path
        self.slurm_args = slurm_args or {}
        self.detach = detach
        self.attach = attach or {}  # run id -> its job still queued or running: waited for, not resubmitted
        self.nodes_per_run = nodes_per_run  # a DDP run's; its ranks (world_size a multiple) spread evenly

    def _parameters(self, tasks_per_run: int) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            "timeout_min": math.ceil(self.time_minutes), "cpus_per_task": self.threads or 1, "name": f"noisefloor:{self.sweep_name}",
            "slurm_array_parallelism": self.max_parallel,
            "slurm_signal_delay_s": signal_delay_seconds(self.time_minutes),
        }
        nodes = self.nodes_per_run if tasks_per_run > 1 else 1
        if tasks_per_run > 1:  # one task per rank of a DDP run, as Slurm users run DDP (srun, not torchrun)
            parameters["nodes"] = nodes
            parameters["tasks_per_node"] = tasks_per_run // nodes
        if self.gpus_per_run:
            parameters["gpus_per_node"] = self.gpus_per_run // nodes
        if self.partition:
            parameters["slurm_partition"] = self.partition
        if self.slurm_args:
            parameters["slurm_additional_parameters"] = dict(self.slurm_args)
        return parameters

    def _submit(self, tasks: list[Task]) -> dict[str, Any]:
        import submitit  # only for a Slurm sweep: local sweeps and the other commands never load it

        # one job array per task count: a DDP run's element has a task per rank (submitit's local mode: torchrun)
        by_tasks: dict[int, list[Task]] = {}
        for task in tasks:
            by_tasks.setdefault(_world_size(task[2]) if self.cluster != "local" else 1, []).append(task)
        delay = signal_delay_seconds(self.time_minutes)
        submitted: dict[str, Any] = {}
        for tasks_per_run, group in sorted(by_tasks.items()):
            executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
            executor.update_parameters(**self._parameters(tasks_per_run))
            jobs = executor.map_array(slurm_job, [t[1] for t in group], [t[2] for t in group],
                                      [f"noisefloor:{self.sweep_name}:{t[0]}" for t in group],
                                      [self.time_minutes] * len(group), [delay] * len(group))
            slurm.SweepJobs(self.folder).add({t[0]: job.job_id for t, job in zip(group, jobs)})
            submitted.update({t[0]: job for t, job in zip(group, jobs)})
        return submitted

    def run(self, tasks: list[Task], observer: Observer, tick: Callable[[], None] = lambda: None) -> None:
        import submitit  # only for a Slurm sweep: local sweeps and the other commands never load it

        on_slurm = self.cluster != "local"
        jobs = {t[0]: submitit.SlurmJob(self.folder / "%j", self.attach[t[0]]) for t in tasks if t[0] in self.attach}
        submit = [t for t in tasks if t[0] not in self.attach]
        jobs.update(self._submit(submit) if submit else {})
        states = slurm.query_states(job.job_id for job in jobs.values()) if on_slurm else {}
        run_dirs = {t[0]: t[1] for t in tasks}
        shown: dict[str, str] = {}  # run id -> the Slurm state last shown
        for run_id, job in jobs.items():
            self._show(observer, run_id, states.get(job.job_id, slurm.JobState(job.job_id, "PENDING")), shown)
        if self.detach:
            return
        next_poll = time.time() + self.poll_seconds
        while jobs:
            answered = {run_id for run_id, job in jobs.items() if job.paths.result_pickle.exists()}
            ended: dict[str, slurm.JobState] = {}
            if time.time() >= next_poll:
                next_poll = time.time() + self.poll_seconds
                if on_slurm:
                    states = slurm.query_states(job.job_id for job in jobs.values())
                    for run_id, job in jobs.items():
                        self._show(observer, run_id, states[job.job_id], shown)
                    ended = {run_id: states[job.job_id] for run_id, job in jobs.items()
                             if not states[job.job_id].active and run_id not in answered}
                else:
                    answered |= {run_id for run_id, job in jobs.items() if job.done()}
            for run_id in answered | ended.keys():
                job = jobs.pop(run_id)
                if run_id in answered:
                    result = self._result(job, run_dirs[run_id])
                else:
                    result = self._ended_without_result(job, ended[run_id], run_dirs[run_id])
                if shown.get(run_id) != "RUNNING":
                    observer({"event": "started", "run": run_id})
                observer({"event": "finished", "run": run_id, "result": result})
            tick()
            if jobs:
                time.sleep(0.5)

    @staticmethod
    def _show(observer: Observer, run_id: str, state: Any, shown: dict[str, str]) -> None:
        """Tell the observer a job's Slurm state when it changes; RUNNING is the run's start."""
        if shown.get(run_id) == state.state:
            return
        shown[run_id] = state.state
        observer({"event": "slurm", "run": run_id, "job": state.job_id, "state": state.describe()})
        if state.state == "RUNNING":
            observer({"event": "started", "run": run_id})

    @staticmethod
    def _result(job: Any, run_dir: str) -> dict[str, Any]:
        try:
            return job.task(0).result()  # rank 0's answer (a DDP run's job has a task per rank)
        except Exception as exc:  # the job itself failed outside the run (submitit, a broken environment)
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            return failed_result(run_dir, f"slurm job {job.job_id} failed: {lines[-1][:300]}")

    def _ended_without_result(self, job: Any, state: Any, run_dir: str) -> dict[str, Any]:
        """A job Slurm ended before the run could answer: a time limit fails the run; anything else
        (cancelled, killed, preempted, node failure) leaves it to resume from its last checkpoint next time."""
        stored = RunDir(Path(run_dir)).read_result()
        if stored is not None:
            return stored
        log = job.paths.stderr.read_text(errors="replace") if job.paths.stderr.exists() else ""
        if state.state in slurm.TIME_LIMIT_STATES or "DUE TO TIME LIMIT" in log:
            return time_limit_result(run_dir, job.job_id, self.time_minutes)
        return {"status": "interrupted", "error": f"slurm job {state.describe()}: the run keeps its checkpoints; "
                                                  "run the sweep again to resume it"}
