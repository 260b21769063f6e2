"""A user's own training program as a run (`noisefloor sweep --command`).

The program is started through `/bin/sh -c` with `{init_seed}`,
`{train_seed}` (`none` when the training loop is not re-seeded) and
`{run_dir}` filled in, and reports through files in its run directory:

    result.json        required: {"test_loss": <finite number>, ...}; val_loss, tokens_per_s and
                       any other keys are kept
    init.safetensors   optional: the step-0 weights -> init_digest and same_init, as for noisefloor's runs
    model.safetensors  optional: the final weights -> final_digest
    metrics.jsonl      optional: {"step": N, "loss": x} lines feed the live view and `status`

noisefloor adds `output.log` (the program's stdout and stderr), `config.json`
(the command), `manifest.json` (the digests of init.safetensors), and rewrites
`result.json` with its status, digests and timing. A program that exits
non-zero, runs past the time limit or writes no finite test_loss is a
`failed` run whose error gives the reason and its last lines of output.

Torch-free: a command sweep never imports torch in the runner or its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from noisefloor import atomic
from noisefloor.checkpoints import digest_file, open_safetensors
from noisefloor.errors import UserError
from noisefloor.processes import die_with_parent
from noisefloor.rundir import RunDir, exclusive
from noisefloor.sweep.spec import CommandRun

OUTPUT_LOG = "output.log"
TAIL_LINES = 20  # kept in result.json
ERROR_TAIL_LINES = 3  # appended to the error column
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL
# The shell around the user's command: when the worker dies (a killed runner), the kernel sends it
# SIGTERM and it passes that on to everything the command started (its own process group), so no
# orphan keeps writing into the run directory. The command stands on its own lines (a trailing
# comment in it comments out nothing of ours).
GUARD = """trap 'trap - TERM; kill -TERM 0' TERM
{{
{command}
}} &
wait $!
"""


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return list(deque(text.splitlines(), maxlen=lines))


def constant_tensors(path: Path) -> list[str]:
    """Names of the tensors whose elements all hold one value (no random draw: a bias initialised to zeros)."""
    found = []
    with open_safetensors(path) as st:
        for name, info in st.tensors.items():
            size = max(1, info.nbytes // max(1, info.numel))
            if info.numel:
                raw = np.frombuffer(st.tensor_bytes(name), dtype=np.uint8).reshape(-1, size)
                if (raw == raw[0]).all():
                    found.append(name)
    return found


def _finish(run: RunDir, spec: CommandRun, outcome: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Digest the weights the program left, and merge noisefloor's fields into its result.json."""
    result = {**outcome, "seconds": seconds, "init_digest": None, "final_digest": None}
    if run.init_weights.exists():
        init = digest_file(run.init_weights)
        result["init_digest"] = init.hexdigest()
        atomic.write_json(run.manifest, {
            "init_seed": spec.init_seed, "train_seed": spec.train_seed, "init_digest": init.hexdigest(),
            "init_tensors": init.tensor_digests, "init_constant": constant_tensors(run.init_weights),
        })
    if run.final_weights.exists():
        result["final_digest"] = digest_file(run.final_weights).hexdigest()
    return result


def execute_command(run_dir: str, spec: CommandRun, time_limit_s: float | None) -> dict[str, Any]:
    """Run the user's command for one planned run; always returns (and writes) a result with a status."""
    run = RunDir(Path(run_dir).resolve())
    run.path.mkdir(parents=True, exist_ok=True)
    with exclusive(run):
        finished = run.read_result() if run.result.exists() else None
        if finished is not None and finished.get("status") == "done":
            return finished
        run.write_config(spec.to_dict())
        for stale in (run.result, run.manifest):  # a rerun reports afresh
            stale.unlink(missing_ok=True)
        log = run.path / OUTPUT_LOG
        began = time.monotonic()
        with open(log, "wb") as output:
            process = subprocess.Popen(["/bin/sh", "-c", GUARD.format(command=spec.command(str(run.path)))],
                                       stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True, preexec_fn=lambda: die_with_parent(signal.SIGTERM))
            error = None
            try:
                code = process.wait(timeout=time_limit_s)
            except subprocess.TimeoutExpired:
                _stop(process)
                code = None
                error = f"ran past the time limit ({time_limit_s / 60:g} min, --time) and was stopped"
        seconds = time.monotonic() - began
        if error is None and code != 0:
            error = f"exited with code {code}" if code > 0 else f"killed by signal {-code}"
        reported = None
        if error is None:
            reported, error = run.read_reported_result()
        tail = _tail(log, TAIL_LINES)
        try:
            if error is None:
                outcome = {**reported, "status": "done", "error": None}
                result = _finish(run, spec, outcome, seconds)
            else:
                last = " | ".join(line.strip() for line in tail[-ERROR_TAIL_LINES:] if line.strip())
                message = f"command {error}" + (f"; last output: {last}" if last else "")
                result = {"status": "failed", "error": message[:2000], "test_loss": None, "seconds": seconds,
                          "init_digest": None, "final_digest": None}
        except UserError as exc:  # a corrupt safetensors file the program wrote
            result = {"status": "failed", "error": f"command's weights: {exc}", "test_loss": None, "seconds": seconds,
                      "init_digest": None, "final_digest": None}
        result.update(command=spec.command(str(run.path)), output_log=str(log), output_tail=tail)
        run.write_result(result)
        return result


def _stop(process: subprocess.Popen) -> None:
    """Stop the program and everything it started (its own session)."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
