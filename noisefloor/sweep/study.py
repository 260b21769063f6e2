"""The study folder: what `noisefloor sweep` and `noisefloor reseed` do when flags are left out.

The current folder is the study unless `--out` names another; its layout is
the sweep store's (results.csv, sweep.json, runs/<run id>/) plus an optional
`noisefloor.toml` that `noisefloor init` writes:

    [study]
    config = "tiny-cpu"        # base run config: a preset or a file (relative to noisefloor.toml)
    set = []                   # overrides of the base config
    init_seeds = [42, 22, 67]  # `sweep` without --init-seeds
    train_seeds = [23, 67]     # `reseed` without --train-seeds
    interventions = []         # what `sweep` runs beside the baseline
    jobs = 2                   # optional: runs in parallel here when --jobs is absent
    command = "..."            # optional: the user's own program instead of `config`
    margin = 0.01              # optional: the equivalence margin (nats/token) of classify/report/--until-decided

    [interventions]
    "wd-0.05" = {"train.weight_decay" = 0.05} # config overrides (noisefloor's trainer)
    qkv-bias = "--qkv-bias"                   # extra arguments (a command)

The base config: --config, else the study file's, else the tiny-cpu preset
(and a line says so). `reseed` pins the init seed to --init-seed, else the
base config's train.init_seed (42 by default). `sweep` runs the study's
interventions; `reseed` measures the training-loop floor, so only the
baseline unless --interventions names more.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from noisefloor import atomic
from noisefloor import config as config_module
from noisefloor.config import RunConfig, TrainConfig, parse_problem, read_config_bytes, seed_list
from noisefloor.errors import UserError
from noisefloor.presets import PRESETS
from noisefloor.rundir import SweepDir
from noisefloor.sweep.interventions import Overrides, Registry, parse_overrides
from noisefloor.sweep.spec import CommandRun, Plan, from_base, from_command
from noisefloor.sweep.store import SweepStore

STUDY_FILE = SweepDir(Path(".")).study.name
DEFAULT_PRESET = "tiny-cpu"
_STUDY_KEYS = {"config", "set", "init_seeds", "train_seeds", "interventions", "jobs", "command", "margin"}
# seconds a run costs beyond its arithmetic (process start, data, evaluation, files): measured by
# benchmarks/sweep_overhead.py at about 1 s; the arithmetic rate is tiny-cpu's on one CPU core
RUN_OVERHEAD_S = 1.0
CPU_FLOPS_PER_THREAD = 1.7e10

TEMPLATE = '''\
# noisefloor.toml: this folder is a noisefloor study. `noisefloor sweep` and
# `noisefloor reseed` run in this folder read it for whatever their flags
# leave out; runs/, results.csv and sweep.json are written beside it.
#
#   noisefloor sweep                   # baseline and interventions at each init seed (the init floor)
#   noisefloor reseed                  # init seed pinned, training loop re-seeded (the training-loop floor)
#   noisefloor classify results.csv    # a verdict per intervention
#   noisefloor sweep --dry-run         # the plan and its estimated time, nothing trained

[study]
# the base run config: a built-in preset (micro, tiny-cpu, gpt2-small-163m) or a
# TOML/JSON file, relative to this one
config = "{config}"
# overrides of the base config, e.g. ["train.steps=240", "model.init_scheme=sequential"];
# `reseed` pins the init seed to train.init_seed (42 unless set here)
set = []
# weight-init seeds of `noisefloor sweep` (no re-seed of the training loop)
init_seeds = [42, 22, 67]
# training-loop re-seeds of `noisefloor reseed`
train_seeds = [23, 67]
# what `noisefloor sweep` runs beside the baseline at every init seed: built in
# (grad-clip, no-dropout, qkv-bias, wd-0.01, lr-schedule, weight-tying, fp32;
# combine with '+', e.g. "grad-clip+no-dropout") or defined below
interventions = []
# runs in parallel on this machine (default: cores / the config's threads; 1 for a command)
# jobs = 2
# the equivalence margin in nats/token: an effect smaller than this does not matter to you, so
# `classify`, `report` and `sweep --until-decided` may decide "noise" (--margin overrides it)
# margin = 0.01
# your own training program instead of `config` (delete config then; docs/your-own-trainer.md):
# command = "python train.py --init-seed {{init_seed}} --train-seed {{train_seed}} --out {{run_dir}}"

[interventions]
# "wd-0.05" = {{"train.weight_decay" = 0.05}}   # config overrides, for noisefloor's trainer (quote a name with a dot)
# qkv-bias = "--qkv-bias"                     # extra arguments, for `command`
'''


@dataclass
class Study:
    file: Path
    config: str | None = None
    sets: list[str] = field(default_factory=list)
    command: str | None = None
    init_seeds: list[int] | None = None
    train_seeds: list[int] | None = None
    interventions: list[str] = field(default_factory=list)
    jobs: int | None = None
    margin: float | None = None
    config_interventions: dict[str, Overrides] = field(default_factory=dict)
    command_interventions: dict[str, str] = field(default_factory=dict)


def write_template(folder: str | Path, config: str = DEFAULT_PRESET) -> Path:
    folder = atomic.out_folder(folder)
    target = SweepDir(folder).study
    if target.exists():
        raise UserError(f"{target} exists already; edit it, or delete it and run noisefloor init again")
    atomic.write_text(target, TEMPLATE.format(config=config))
    return target


def _strings(value: Any, where: str, example: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where} must be a list of strings, e.g. {example}")
    return value


def _margin(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise UserError(f"{where}: margin must be a positive number of nats/token, e.g. margin = 0.01 "
                        f"(got {value!r})")
    return float(value)


def study_margin(source: str | Path, given: float | None) -> float | None:
    """The equivalence margin for analysing `source` (a results CSV or a sweep folder): --margin when given,
    else the margin of the study file beside it, else None."""
    if given is not None:
        return given
    folder = Path(source) if Path(source).is_dir() else Path(source).parent
    study = load_study(folder) if SweepDir(folder).study.is_file() else None
    return study.margin if study else None


def load_study(folder: str | Path) -> Study | None:
    """The folder's noisefloor.toml, validated; None when there is none."""
    path = SweepDir(Path(folder)).study
    if not path.is_file():
        return None
    try:
        raw = tomllib.loads(read_config_bytes(path).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # decode errors, huge integers, deep nesting (as spec files)
        raise UserError(f"{path}: not valid TOML: {parse_problem(exc)}") from None
    unknown = sorted(set(raw) - {"study", "interventions"})
    if unknown:
        raise UserError(f"{path}: unknown table [{unknown[0]}] (tables: [study], [interventions])")
    table = raw.get("study", {})
    if not isinstance(table, Mapping):
        raise UserError(f"{path}: [study] must be a table")
    unknown = sorted(set(table) - _STUDY_KEYS)
    if unknown:
        raise UserError(f"{path} [study]: unknown key {unknown[0]!r} (keys: {', '.join(sorted(_STUDY_KEYS))})")
    study = Study(path)
    for key in ("config", "command"):
        if key in table:
            if not isinstance(table[key], str) or not table[key].strip():
                raise UserError(f"{path} [study]: {key} must be a non-empty string")
            setattr(study, key, table[key])
    if study.config and study.command:
        raise UserError(f"{path} [study]: give config (noisefloor's trainer) or command (your own), not both")
    study.sets = _strings(table.get("set", []), f"{path} [study] set", '["train.steps=240"]')
    study.interventions = _strings(table.get("interventions", []), f"{path} [study] interventions", '["grad-clip"]')
    if "jobs" in table:
        if not isinstance(table["jobs"], int) or isinstance(table["jobs"], bool) or table["jobs"] < 1:
            raise UserError(f"{path} [study]: jobs must be a whole number >= 1, e.g. jobs = 2")
        study.jobs = table["jobs"]
    if "margin" in table:
        study.margin = _margin(table["margin"], f"{path} [study]")
    if "init_seeds" in table:
        study.init_seeds = seed_list(table["init_seeds"], f"{path} [study] init_seeds")
    if "train_seeds" in table:
        study.train_seeds = seed_list(table["train_seeds"], f"{path} [study] train_seeds")
    defined = raw.get("interventions", {})
    if not isinstance(defined, Mapping):
        raise UserError(f"{path}: [interventions] must be a table of NAME = overrides or NAME = \"--arguments\"")
    for name, value in defined.items():
        if isinstance(value, str):
            study.command_interventions[name] = value
        else:
            study.config_interventions[name] = parse_overrides(value, f"{path} [interventions] {name}")
    return study


@dataclass
class Request:
    """What `sweep` (without a spec file) or `reseed` was asked on the command line."""

    kind: str  # "sweep" or "reseed"
    out: str | None = None
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    interventions: list[str] = field(default_factory=list)  # --interventions a,b
    argument_sets: list[str] = field(default_factory=list)  # --intervention NAME=ARGS (command mode)
    command: str | None = None
    init_seeds: list[int] | None = None
    train_seeds: list[int] | None = None


@dataclass
class Resolved:
    plan: Plan
    out: Path
    notice: str | None  # one line: where the config came from, when the user did not say
    jobs: int | None = None  # the study file's, when --jobs is absent
    margin: float | None = None  # the study file's equivalence margin (nats/token)


def _base_config(request: Request, study: Study | None, folder: Path) -> tuple[RunConfig, str | None]:
    if request.config:
        return config_module.load(request.config, request.overrides), None
    if study is not None and study.config:
        source = study.file.parent / study.config
        if not source.exists() and study.config in PRESETS:
            source = Path(study.config)
        try:
            return config_module.load(source, study.sets + request.overrides), None
        except UserError as exc:
            raise UserError(f"{study.file}: {exc}") from None
    sets = (study.sets if study else []) + request.overrides
    where = f"{STUDY_FILE} here" if folder == Path(".") else f"{folder / STUDY_FILE}"
    notice = (f"no --config and no {where}: using the built-in {DEFAULT_PRESET} preset (about 40 s a run "
              f"on one CPU core); change it with --config PRESET_OR_FILE, or `noisefloor init` and edit noisefloor.toml")
    return config_module.load(DEFAULT_PRESET, sets), notice


def _seed_choice(kind: str, given: list[int] | None, from_study: list[int] | None, flag: str, key: str,
                 example: str) -> list[int]:
    if given:
        return given
    if from_study:
        return from_study
    raise UserError(f"no {key.replace('_', ' ')}: type noisefloor {kind} {flag} {example}, "
                    f"or set {key} = [{example}] in noisefloor.toml (noisefloor init writes one)")


def _argument_sets(texts: list[str]) -> dict[str, str]:
    sets: dict[str, str] = {}
    for text in texts:
        name, sep, arguments = text.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--intervention {text!r}: write NAME=ARGUMENTS, e.g. --intervention 'qkv-bias=--qkv-bias'")
        if name.strip() in sets:
            raise UserError(f"--intervention {name.strip()!r} is given twice")
        sets[name.strip()] = arguments
    return sets


def _command_plan(request: Request, study: Study | None, template: str, name: str) -> Plan:
    if request.config or request.overrides:
        raise UserError("--command runs your own program: drop --config/--set (pass its settings in the command)")
    defined = study.command_interventions if study else {}
    chosen = _argument_sets(request.argument_sets)
    names = request.interventions or ([] if request.argument_sets or request.kind == "reseed" or not study
                                      else study.interventions)
    for label in names:
        if label not in defined:
            raise UserError(f"intervention {label!r} has no arguments for the command: add --intervention "
                            f"'{label}=--your-flag', or define {label} = \"--your-flag\" under [interventions] in noisefloor.toml")
        chosen.setdefault(label, defined[label])
    if request.kind == "sweep":
        init_seeds = _seed_choice("sweep", request.init_seeds, study and study.init_seeds, "--init-seeds", "init_seeds", "42,22,67")
        train_seeds = request.train_seeds
    else:
        init_seeds = request.init_seeds or [TrainConfig().init_seed]
        train_seeds = _seed_choice("reseed", request.train_seeds, study and study.train_seeds, "--train-seeds", "train_seeds", "23,67")
    return from_command(template, chosen, init_seeds, train_seeds, name)


def resolve(request: Request) -> Resolved:
    """The plan a `sweep`/`reseed` command line means in its study folder."""
    folder = atomic.out_folder(request.out or ".")
    study = load_study(folder)
    name = folder.resolve().name or "study"
    template = request.command or (study.command if study and not request.config else None)
    jobs = study.jobs if study else None
    margin = study.margin if study else None
    if template:
        return Resolved(_command_plan(request, study, template, name), folder, None, jobs, margin)
    if request.argument_sets:
        raise UserError("--intervention NAME=ARGS is for --command; with noisefloor's trainer use "
                        "--interventions grad-clip,no-dropout (or define overrides in noisefloor.toml)")
    base, notice = _base_config(request, study, folder)
    registry = Registry(study.config_interventions if study else None)
    if request.kind == "sweep":
        init_seeds = _seed_choice("sweep", request.init_seeds, study and study.init_seeds, "--init-seeds", "init_seeds", "42,22,67")
        train_seeds = request.train_seeds
        interventions = request.interventions or (study.interventions if study else [])
    else:
        init_seeds = request.init_seeds or [base.train.init_seed]
        train_seeds = _seed_choice("reseed", request.train_seeds, study and study.train_seeds, "--train-seeds", "train_seeds", "23,67")
        interventions = request.interventions
    return Resolved(from_base(base, interventions, init_seeds, train_seeds, name, registry), folder, notice, jobs, margin)


# ---------------------------------------------------------------- --dry-run


def estimate_seconds(config: RunConfig) -> float:
    """A rough CPU estimate: 6 FLOPs per parameter per token trained, plus the per-run overhead."""
    tokens = config.train.steps * config.tokens_per_step
    return RUN_OVERHEAD_S + 6 * config_module.parameter_count(config.model) * tokens / (CPU_FLOPS_PER_THREAD * config.train.threads)


@dataclass
class PlanLine:
    run_id: str
    intervention: str
    init_seed: int
    train_seed: int | None
    status: str  # done, failed, diverged, running, missing
    seconds: float | None  # measured for a finished run, else estimated (None: unknown)
    measured: bool


def describe(resolved: Resolved) -> list[PlanLine]:
    """Each planned run, whether the folder holds it already, and its time (measured or estimated)."""
    store = SweepStore(resolved.out)
    records = [store.record(run) for run in resolved.plan.runs]
    measured_commands = [r.result["seconds"] for r in records
                         if r.status == "done" and isinstance(r.planned.config, CommandRun) and r.result.get("seconds")]
    lines = []
    for record in records:
        run = record.planned
        seconds = (record.result or {}).get("seconds") if record.status == "done" else None
        measured = seconds is not None
        if seconds is None:
            if isinstance(run.config, CommandRun):
                seconds = sum(measured_commands) / len(measured_commands) if measured_commands else None
            else:
                seconds = estimate_seconds(run.config)
        lines.append(PlanLine(run.run_id, run.intervention, run.init_seed, run.train_seed, record.status, seconds, measured))
    return lines
