"""A sweep (study) folder: the plan, the run directories, and `results.csv` (layout: rundir.py).

Commands add to a sweep folder: a `reseed` into the folder of an earlier
`sweep` adds its runs to the same plan, and a run both ask for is trained
once. A folder's baseline must stay one config: the same (intervention,
init seed, train seed) with another config is refused.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noisefloor import atomic
from noisefloor.checkpoints import file_digest
from noisefloor.errors import UserError
from noisefloor.rundir import RunDir, SweepDir, is_locked, read_run_text
from noisefloor.sweep.interventions import BASELINE
from noisefloor.sweep.spec import CommandRun, Plan, PlannedRun, config_from_dict

RESULT_COLUMNS = [
    "run", "intervention", "init_seed", "train_seed", "test_loss", "val_loss", "same_init",
    "init_digest", "final_digest", "status", "seconds", "tokens_per_s", "error",
]
STATUSES = ("done", "diverged", "failed", "running", "missing")


@dataclass
class RunRecord:
    planned: PlannedRun
    status: str
    result: dict[str, Any] | None
    init_tensors: dict[str, str] | None  # per-tensor digests of the step-0 weights
    init_constant: frozenset[str] = frozenset()  # step-0 tensors holding one value (no random draw)


class SweepStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        folder = SweepDir(self.path)
        self.plan_file = folder.plan
        self.results_file = folder.results
        self.runs_dir = folder.runs

    # ------------------------------------------------------------ plan

    def exists(self) -> bool:
        return self.plan_file.is_file()

    def load_plan(self) -> Plan:
        if not self.exists():
            raise UserError(f"{self.path} is not a sweep folder (no {self.plan_file.name}); start one with noisefloor sweep")
        try:
            raw = json.loads(read_run_text(self.plan_file))
            runs = [PlannedRun(r["intervention"], r["init_seed"], r["train_seed"], config_from_dict(r["config"], str(self.plan_file)))
                    for r in raw["runs"]]
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise UserError(f"{self.plan_file} is corrupt ({type(exc).__name__}: {str(exc)[:120]}); it cannot be resumed") from None
        return Plan(raw.get("name", self.path.name), runs)

    def merge_plan(self, plan: Plan) -> Plan:
        """Add `plan` to what the folder already holds; refuse a second config for the same role."""
        merged = self.load_plan() if self.exists() else Plan(plan.name)
        by_role = {(r.intervention, r.init_seed, r.train_seed): r for r in merged.runs}
        by_config = {r.config.digest(): r for r in merged.runs}
        for run in plan.runs:
            role = (run.intervention, run.init_seed, run.train_seed)
            other = by_role.get(role)
            if other is not None and other.config != run.config:
                raise UserError(
                    f"{self.path} already has a {run.intervention} run at init seed {run.init_seed}, train seed "
                    f"{run.train_seed} with another config; use another folder (--out DIR) for another base config"
                )
            twin = by_config.get(run.config.digest())
            if twin is not None and twin.intervention != run.intervention:
                raise UserError(f"interventions {twin.intervention!r} and {run.intervention!r} give the same config")
            merged.add(run)
            by_role[role], by_config[run.config.digest()] = run, run
        return merged

    def save_plan(self, plan: Plan) -> None:
        atomic.write_json(self.plan_file, {
            "name": plan.name,
            "runs": [{"run": r.run_id, "intervention": r.intervention, "init_seed": r.init_seed,
                      "train_seed": r.train_seed, "config": r.config.to_dict()} for r in plan.runs],
        })

    # ------------------------------------------------------------ runs

    def run_dir(self, run: PlannedRun) -> Path:
        return self.runs_dir / run.run_id

    def record(self, run: PlannedRun) -> RunRecord:
        run_dir = RunDir(self.run_dir(run))
        try:
            manifest = _checked_manifest(run_dir)
            result = run_dir.read_result()
        except UserError as exc:  # a damaged run is marked failed, naming the file; the sweep goes on
            return RunRecord(run, "failed", {"status": "failed", "error": str(exc)}, None)
        init = (manifest.get("init_tensors"), frozenset(manifest.get("init_constant", ())))
        if result is not None:
            if result["status"] == "done" and not finished_run_is_valid(run_dir, run, result):
                return RunRecord(run, "failed", {**result, "status": "failed",
                                                 "error": f"{run_dir.result.name} does not match the run's files"}, *init)
            return RunRecord(run, result["status"], result, *init)
        if run_dir.path.is_dir() and is_locked(run_dir.path):
            return RunRecord(run, "running", None, *init)
        return RunRecord(run, "missing", None, *init)

    def records(self, plan: Plan) -> list[RunRecord]:
        return [self.record(run) for run in plan.runs]

    # ------------------------------------------------------------ results.csv

    def write_results(self, plan: Plan) -> list[RunRecord]:
        records = self.records(plan)
        self.write_csv(records)
        return records

    def write_csv(self, records: list[RunRecord]) -> None:
        atomic.write_text(self.results_file, results_csv(records))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_run_text(path))
    except (OSError, UserError, ValueError, RecursionError):  # missing, not a regular file, not JSON
        return None


def _checked_manifest(run_dir: RunDir) -> dict[str, Any]:
    """The fields of manifest.json the store uses, type-checked ({} while the run has not written one)."""
    if not run_dir.manifest.exists():
        return {}
    manifest = run_dir.read_json(run_dir.manifest)
    tensors, constant = manifest.get("init_tensors"), manifest.get("init_constant", [])
    if not (tensors is None or (isinstance(tensors, dict) and all(isinstance(v, str) for v in tensors.values()))
            or not isinstance(constant, list) or not all(isinstance(n, str) for n in constant)):
        raise UserError(f"{run_dir.manifest} is corrupt (init_tensors/init_constant of the wrong type); "
                        "delete the run directory and train again")
    return manifest


def finished_run_is_valid(run_dir: RunDir, run: PlannedRun, result: dict[str, Any]) -> bool:
    """A `done` result counts only if its config is the planned one and its weights match its digest
    (a user's command need not save weights; when it did, they must match)."""
    config = _read_json(run_dir.config)
    if config is None or config != run.config.to_dict():
        return False
    if isinstance(run.config, CommandRun) and result.get("final_digest") is None:
        return not run_dir.final_weights.exists()
    try:
        return file_digest(run_dir.final_weights) == result.get("final_digest")
    except UserError:
        return False


def same_init(record: RunRecord, baseline: RunRecord | None) -> bool | None:
    """True when the run's step-0 weights hold no random draw the baseline's (same init seed) do not:
    every tensor both have is bit-identical, and every tensor only the run has is constant (a QKV bias
    initialised to zeros). Tensors only the baseline has (the head a tied model drops) are structure.
    Then the run and the baseline differ by the intervention and the training loop only."""
    if record.init_tensors is None or baseline is None or baseline.init_tensors is None:
        return None
    shared = record.init_tensors.keys() & baseline.init_tensors.keys()
    extra = record.init_tensors.keys() - baseline.init_tensors.keys()
    return (bool(shared) and all(record.init_tensors[k] == baseline.init_tensors[k] for k in shared)
            and extra <= record.init_constant)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def results_csv(records: list[RunRecord]) -> str:
    baselines: dict[int, RunRecord] = {}
    for record in records:
        if record.planned.intervention == BASELINE and record.init_tensors is not None:
            baselines.setdefault(record.planned.init_seed, record)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for record in records:
        run, result = record.planned, record.result or {}
        row = {
            "run": run.run_id, "intervention": run.intervention, "init_seed": run.init_seed,
            "train_seed": run.train_seed, "test_loss": result.get("test_loss"), "val_loss": result.get("val_loss"),
            "same_init": same_init(record, baselines.get(run.init_seed)),
            "init_digest": result.get("init_digest"), "final_digest": result.get("final_digest"),
            "status": record.status, "seconds": result.get("seconds"), "tokens_per_s": result.get("tokens_per_s"),
            "error": result.get("error"),
        }
        writer.writerow([_format(row[c]) for c in RESULT_COLUMNS])
    return out.getvalue()
