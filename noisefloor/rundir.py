"""The run folder and the sweep (study) folder: their layout, and every read and write of the files in them.

A run folder (noisefloor's trainer; a user's `--command` run: sweep/command.py):

    config.json        the fully resolved config (seeds included); a command run's: its command
    manifest.json      run id, seeds, data seed, corpus, environment fingerprint
    init.safetensors   the step-0 weights
    model.safetensors  the final weights (only when the run finished)
    metrics.jsonl      one line per step {"step", "loss", "lr", "grad_norm", "tokens_per_s"};
                       validation lines {"step", "val_loss"}
    digests.jsonl      parameter digests every `digest_interval` steps {"step", "digest", "tensors"} (for `diverge`)
    result.json        written last: status, losses, digests, speed, memory
    checkpoints/       resumable full state (see train/state.py)
    ranks.log          the ranks' output of a torchrun (DDP) run
    .lock              held while a process trains the run

A sweep folder:

    noisefloor.toml    optional study file (sweep/study.py)
    sweep.json         every planned run: id, intervention, seeds, resolved config (or a user's command)
    results.csv        one row per planned run, rewritten atomically after each run
    runs/<run>/        the run folders
    until-decided.json the rounds and stopping verdicts of `sweep --until-decided`
    logs/              slurm logs (slurm executor)

`noisefloor demo --out DIR` trains into the sweep folder DIR/sweep and writes its report into DIR.

Torch-free: `diverge`, `status` and the sweep store read run folders
without importing torch. What each file holds, for users: docs/run-folder.md.
"""

from __future__ import annotations

import fcntl
import json
import math
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

from noisefloor import atomic
from noisefloor.config import RunConfig, from_dict
from noisefloor.errors import UserError


RESULT_STATUSES = ("done", "diverged", "failed")
RESULT_NUMBERS = ("test_loss", "val_loss", "seconds", "tokens_per_s")
RESULT_TEXTS = ("error", "init_digest", "final_digest")
MODEL_FILE, INIT_FILE = "model.safetensors", "init.safetensors"  # also what `verify-identical` compares of a run
DONE_FIELDS = ("test_loss",)  # what every finished run reports, a --command program's included
TRAINER_DONE_FIELDS = (*RESULT_NUMBERS, "final_digest")  # what noisefloor's own trainer always writes


@dataclass(frozen=True)
class RunDir:
    path: Path

    config = property(lambda self: self.path / "config.json")
    manifest = property(lambda self: self.path / "manifest.json")
    init_weights = property(lambda self: self.path / INIT_FILE)
    final_weights = property(lambda self: self.path / MODEL_FILE)
    metrics = property(lambda self: self.path / "metrics.jsonl")
    digests = property(lambda self: self.path / "digests.jsonl")
    result = property(lambda self: self.path / "result.json")
    ranks_log = property(lambda self: self.path / "ranks.log")
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

    def write_config(self, config: dict[str, Any]) -> None:
        """config.json: a RunConfig's `to_dict()`, or a user's command run's."""
        atomic.write_json(self.config, config)

    def write_result(self, result: dict[str, Any]) -> None:
        atomic.write_json(self.result, result)

    def truncate_to_step(self, last_step: int) -> None:
        """On resume from the checkpoint of `last_step`: keep the metrics and digests lines of steps <= last_step
        (drops a torn last line too), so the resumed run appends exactly what an uninterrupted one wrote."""
        for path in (self.metrics, self.digests):
            if not path.exists():
                continue
            kept = [line for _, line, record in json_lines(path.read_text())
                    if record is not None and record.get("step", math.inf) <= last_step]
            atomic.write_text(path, "".join(f"{line}\n" for line in kept))

    def forget_lines(self) -> None:
        """A run resumed without a checkpoint starts from step 0: its metrics and digests start afresh."""
        for path in (self.metrics, self.digests):
            path.unlink(missing_ok=True)

    def last_training_line(self) -> dict[str, Any] | None:
        return last_training_line(self.metrics)

    def read_digests(self) -> dict[int, dict[str, Any]]:
        """digests.jsonl by step; a missing file or a damaged line is one line naming it."""
        path = self.digests
        if not path.exists():
            raise UserError(f"{path} not found: the run recorded no digests (train with [train] digest_interval > 0)")
        digests = {}
        for number, _, record in json_lines(read_run_text(path)):
            try:
                if not (isinstance(record["digest"], str) and isinstance(record.get("tensors", {}), dict)):
                    raise TypeError
                digests[int(record["step"])] = record
            except (KeyError, TypeError, ValueError):  # None: bad JSON
                raise UserError(f"{path} line {number} is corrupt (expected {{\"step\", \"digest\", \"tensors\"}})") from None
        return digests

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

    def read_reported_result(self) -> tuple[dict[str, Any] | None, str | None]:
        """What a user's --command program wrote to result.json: (it, None), or (None, what is wrong with it)."""
        try:
            reported = json.loads(read_run_text(self.result))  # a FIFO or a huge file is refused, not read
        except FileNotFoundError:
            return None, f"wrote no {self.result.name} (it must hold a test_loss)"
        except UserError as exc:
            return None, str(exc)
        except (ValueError, RecursionError) as exc:  # bad JSON, huge integers, deep nesting
            problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]
            return None, f"{self.result.name} is not valid JSON ({problem})"
        loss = reported.get("test_loss") if isinstance(reported, dict) else None
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
            return None, f"{self.result.name} has no finite test_loss (got {loss!r})"
        return reported, None


def json_lines(text: str) -> Iterator[tuple[int, str, dict[str, Any] | None]]:
    """(line number, line, its JSON object) for each line of a metrics.jsonl or digests.jsonl; the object is None
    for a torn or damaged line (bad JSON, a huge number, deep nesting, not an object). The one parser of both."""
    for number, line in enumerate(text.splitlines(), start=1):
        yield number, line, _record(line)


def _record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def write_line(handle: IO[str], record: dict[str, Any]) -> None:
    """Append one record to an open metrics.jsonl or digests.jsonl."""
    handle.write(json.dumps(record) + "\n")


def last_training_line(metrics: Path) -> dict[str, Any] | None:
    """The newest training line of a metrics.jsonl, reading only its tail."""
    try:
        with open(metrics, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        record = _record(line)
        if record is not None and all(isinstance(record.get(k), (int, float)) for k in ("step", "loss")) \
                and isinstance(record.get("tokens_per_s", 0), (int, float)):
            return record
    return None


@dataclass(frozen=True)
class SweepDir:
    path: Path

    study = property(lambda self: self.path / "noisefloor.toml")  # the study file (sweep/study.py reads it)
    plan = property(lambda self: self.path / "sweep.json")
    results = property(lambda self: self.path / "results.csv")
    runs = property(lambda self: self.path / "runs")
    until_decided = property(lambda self: self.path / "until-decided.json")  # `sweep --until-decided`'s stopping record

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.runs / run_id)


def default_run_dir(config: RunConfig) -> Path:
    """Where `noisefloor train` puts a run without --out."""
    return Path("runs") / config.digest()[:16]


def demo_sweep(out: Path) -> SweepDir:
    """Where `noisefloor demo --out OUT` trains (its report goes to OUT itself)."""
    return SweepDir(Path(out) / "sweep")


MAX_RUN_FILE_BYTES = 1 << 30  # digests.jsonl of a 100,000-step run with digests every 10 steps is ~130 MB


def read_run_text(path: Path) -> str:
    """The UTF-8 text of a file in a run or sweep folder. A FIFO or device (which could block or never end),
    an oversized file or one that is not UTF-8 is one line naming it; a missing file stays FileNotFoundError."""
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
