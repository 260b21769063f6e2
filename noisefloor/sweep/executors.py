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
import os
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from noisefloor import atomic
from noisefloor.processes import die_with_parent
from noisefloor.rundir import RunDir

# (run id, run directory, resolved config as a dict)
Task = tuple[str, str, dict[str, Any]]
# called as on_event({"event": "started"|"finished", "run": id, "result": {...}})
Observer = Callable[[dict[str, Any]], None]


def execute_run(run_dir: str, config: dict[str, Any], time_limit_s: float | None = None) -> dict[str, Any]:
    """Train, resume or return one run (or run a user's command, stopped after `time_limit_s`).
    A run's own failure becomes a `failed` result.json, not an exception."""
    from noisefloor.rundir import RunLocked

    run = RunDir(Path(run_dir))
    try:
        if "command" in config:  # a user's program: no torch in this process
            from noisefloor.sweep.command import execute_command

            return execute_command(run_dir, config, time_limit_s)
        from noisefloor.config import from_dict
        from noisefloor.train import trainer

        if run.config.exists():
            return trainer.resume(run.path)
        return trainer.train(from_dict(config, "sweep.json"), run.path)
    except KeyboardInterrupt:
        raise
    except RunLocked as exc:  # another process trains it: its result is that process's to write
        return {"status": "running", "error": str(exc)}
    except Exception as exc:  # recorded, and the sweep goes on
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return failed_result(run_dir, f"{type(exc).__name__}: {message}", traceback=traceback.format_exc())


def failed_result(run_dir: str, message: str, **details: Any) -> dict[str, Any]:
    result = {"status": "failed", "error": message, **details}
    run = RunDir(Path(run_dir))
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        atomic.write_json(run.result, result)
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


def _world_size(config: dict[str, Any]) -> int:
    return config["train"]["world_size"] if "train" in config else 1  # a user's command is one process to us


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
        import multiprocessing

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
        from multiprocessing.connection import wait

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


class SlurmExecutor:
    """Job arrays through submitit. `cluster="local"` runs the same submission path on this machine."""

    def __init__(self, folder: Path, partition: str | None, gpus_per_run: int, time_minutes: float, threads: int | None,
                 max_parallel: int, cluster: str | None = None):
        self.folder = folder
        self.partition = partition
        self.gpus_per_run = gpus_per_run
        self.time_minutes = time_minutes
        self.threads = threads
        self.max_parallel = max_parallel
        self.cluster = cluster

    def run(self, tasks: list[Task], observer: Observer, tick: Callable[[], None] = lambda: None) -> None:
        import submitit

        executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        parameters: dict[str, Any] = {"timeout_min": math.ceil(self.time_minutes), "cpus_per_task": self.threads or 1,
                                      "name": "noisefloor", "slurm_array_parallelism": self.max_parallel}
        if self.gpus_per_run:
            parameters["gpus_per_node"] = self.gpus_per_run
        if self.partition:
            parameters["slurm_partition"] = self.partition
        executor.update_parameters(**parameters)
        # a user's command stops a little before Slurm's limit, so its failure carries its own output
        limit = [max(1.0, self.time_minutes * 60 - 30)] * len(tasks)
        jobs = executor.map_array(execute_run, [t[1] for t in tasks], [t[2] for t in tasks], limit)
        waiting = dict(zip(jobs, tasks))
        for task in tasks:
            observer({"event": "started", "run": task[0]})
        while waiting:
            for job in [j for j in waiting if j.done()]:
                run_id, run_dir, _ = waiting.pop(job)
                try:
                    result = job.result()
                except Exception as exc:  # the job itself failed (time limit, node failure, preemption)
                    result = failed_result(run_dir, f"slurm job {job.job_id} failed: {(str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]}")
                observer({"event": "finished", "run": run_id, "result": result})
            tick()
            if waiting:
                time.sleep(1.0)
