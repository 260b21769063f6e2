"""A run directory's files, and the lock that keeps two processes from training it at once.

Torch-free: `diverge`, `status` and the sweep store read run directories
without importing torch. The layout is documented in train/trainer.py.
"""

from __future__ import annotations

import fcntl
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from noisefloor.config import RunConfig, from_dict
from noisefloor.errors import UserError


RESULT_STATUSES = ("done", "diverged", "failed")
RESULT_NUMBERS = ("test_loss", "val_loss", "seconds", "tokens_per_s")
RESULT_TEXTS = ("error", "init_digest", "final_digest")
DONE_FIELDS = ("test_loss",)  # what every finished run reports, a --command program's included
TRAINER_DONE_FIELDS = (*RESULT_NUMBERS, "final_digest")  # what noisefloor's own trainer always writes


@dataclass(frozen=True)
class RunDir:
    path: Path

    config = property(lambda self: self.path / "config.json")
    manifest = property(lambda self: self.path / "manifest.json")
    init_weights = property(lambda self: self.path / "init.safetensors")
    final_weights = property(lambda self: self.path / "model.safetensors")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    digests = property(lambda self: self.path / "digests.jsonl")
    result = property(lambda self: self.path / "result.json")
    lock = property(lambda self: self.path / ".lock")

    def read_json(self, path: Path) -> dict[str, Any]:
        """A run file holding one JSON object; anything else is one line naming the file and the fault."""
        try:
            value = json.loads(read_run_text(path))
        except FileNotFoundError:
            raise UserError(f"{path} not found: {self.path} is not a noisefloor run directory") from None
        except (ValueError, RecursionError) as exc:  # bad JSON, huge integers, deep nesting
            problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]
            raise UserError(f"{path} is corrupt ({problem}); delete the run directory and train again") from None
        if not isinstance(value, dict):
            raise UserError(f"{path} is corrupt (a JSON {type(value).__name__}, not an object); "
                            "delete the run directory and train again")
        return value

    def read_config(self) -> RunConfig:
        return from_dict(self.read_json(self.config), source=str(self.config))

    def read_result(self, done_fields: tuple[str, ...] = DONE_FIELDS) -> dict[str, Any] | None:
        """result.json (None while the run has not ended), with the fields status, results.csv and the CLI read
        type-checked: a damaged one is one line naming it, never a crash further on."""
        if not self.result.exists():
            return None
        result = self.read_json(self.result)
        wrong = [key for key in RESULT_NUMBERS if result.get(key) is not None
                 and (isinstance(result[key], bool) or not isinstance(result[key], (int, float)))]
        wrong += [key for key in RESULT_TEXTS if result.get(key) is not None and not isinstance(result[key], str)]
        if result.get("status") not in RESULT_STATUSES:
            wrong.append("status")
        elif result["status"] == "done":
            wrong += [key for key in done_fields if result.get(key) is None]
        if wrong:
            raise UserError(f"{self.result} is corrupt ({', '.join(dict.fromkeys(wrong))} missing or of the wrong type); "
                            "delete it to train the run again from its last checkpoint")
        return result


MAX_RUN_FILE_BYTES = 1 << 30  # digests.jsonl of a 100,000-step run with digests every 10 steps is ~130 MB


def read_run_text(path: Path) -> str:
    """The UTF-8 text of a file in a run or sweep folder. A FIFO or device (which could block or never end),
    an oversized file or one that is not UTF-8 is one line naming it; a missing file stays FileNotFoundError."""
    import stat

    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path} is not a regular file; a run folder holds only files noisefloor wrote")
    if info.st_size > MAX_RUN_FILE_BYTES:
        raise UserError(f"{path} is {info.st_size:,} bytes, more than any run file noisefloor writes "
                        f"({MAX_RUN_FILE_BYTES:,}); it is not the file noisefloor wrote")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is corrupt (not UTF-8 at byte {exc.start}); delete the run directory and train again") from None


class RunLocked(UserError):
    """Another process holds the run directory's lock."""


# `is_locked` probes by taking the lock for an instant; a trainer starting during a probe
# (the sweep runner and `status` probe every run) waits this long before it gives up.
PROBE_PATIENCE_S = 1.0


def _try_lock(handle) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def exclusive(run_dir: RunDir) -> Iterator[None]:
    """Hold the run directory's lock so two processes never train it at once."""
    handle = open(run_dir.lock, "a+")
    try:
        deadline = time.monotonic() + PROBE_PATIENCE_S
        while not _try_lock(handle):
            if time.monotonic() > deadline:
                raise RunLocked(f"{run_dir.path} is being trained by another process")
            time.sleep(0.01)
        yield
    finally:
        handle.close()


def is_locked(path: Path) -> bool:
    """True while some process trains this run directory."""
    lock = RunDir(Path(path)).lock
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        return not _try_lock(handle)
