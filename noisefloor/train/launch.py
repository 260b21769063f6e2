"""The torchrun launcher of a data-parallel (DDP) run: the parent side, which starts the ranks
(`python -m torch.distributed.run ... -m noisefloor.train.rank RUN_DIR`) and follows their progress.
What each rank does is in rank.py and distributed.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from noisefloor.errors import UserError
from noisefloor.processes import die_with_parent
from noisefloor.rundir import RunDir


def launch(run_dir: Path, config, progress: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """Train or resume `run_dir` with torchrun; report progress from its metrics; return its result.json."""
    run = RunDir(run_dir)
    t = config.train
    env = {**os.environ, "OMP_NUM_THREADS": str(t.threads), "MKL_NUM_THREADS": str(t.threads)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={t.world_size}",
               "-m", "noisefloor.train.rank", str(run.path)]
    log = run.ranks_log
    with open(log, "w") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=die_with_parent)
        try:
            _follow(process, run, t.steps, progress or (lambda event: None))
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)  # every rank: the run resumes from its last checkpoint
            process.wait()
            raise
    if process.returncode != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        user = [line for line in lines if "noisefloor: error:" in line]
        if user:
            raise UserError(user[-1].split("noisefloor: error:", 1)[1].strip())
        raise RuntimeError(f"torchrun exited with {process.returncode}; see {log}: {lines[-1] if lines else ''}")
    result = run.read_result()
    if result is None:
        raise RuntimeError(f"the ranks exited without writing {run.result}; see {log}")
    return result


def _follow(process: subprocess.Popen, run: RunDir, steps: int, progress) -> None:
    progress({"event": "start", "step": 0, "steps": steps, "run": str(run.path)})
    seen = 0
    while process.poll() is None:
        time.sleep(0.5)
        line = run.last_training_line()
        if line and line["step"] != seen:
            seen = line["step"]
            progress({"event": "step", "steps": steps, **line})
