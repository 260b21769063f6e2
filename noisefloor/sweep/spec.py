"""Experiments -> runs: from command-line flags or a spec file in `seedsweeps/`.

A spec file:

    [sweep]
    name = "noise-floor"                  # default output: sweeps/<name>
    config = "../training/tiny-cpu.toml"  # relative to the spec file
    set = ["train.steps=120"]             # optional overrides of the base config

    [interventions.wd-0.05]               # optional: your own interventions
    "train.weight_decay" = 0.05

    [[experiments]]
    name = "init-floor"
    interventions = ["baseline"]          # default ["baseline"]
    init_seeds = [42, 22, 67]
    train_seeds = [23, 67]                # optional; absent = no re-seed

Every experiment runs each intervention at every (init seed, train seed).
The whole plan is validated before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import string
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from noisefloor import config as config_module
from noisefloor.config import RunConfig, parse_problem, read_config_bytes, seed_list
from noisefloor.errors import UserError
from noisefloor.presets import PRESETS
from noisefloor.sweep.interventions import BASELINE, Registry, parse_overrides


PLACEHOLDERS = ("init_seed", "train_seed", "run_dir")
NO_RESEED_ARGUMENT = "none"  # what {train_seed} becomes when the training loop is not re-seeded


@dataclass(frozen=True)
class CommandRun:
    """A run of the user's own program: `template` with its placeholders filled in, then `arguments`
    (the intervention's; empty for the baseline). Its identity is the command it runs."""

    template: str
    arguments: str
    init_seed: int
    train_seed: int | None

    def command(self, run_dir: str) -> str:
        """The shell command line, each placeholder's value shell-quoted."""
        train = NO_RESEED_ARGUMENT if self.train_seed is None else str(self.train_seed)
        filled = self.template.format(init_seed=self.init_seed, train_seed=train, run_dir=shlex.quote(run_dir))
        return f"{filled} {self.arguments}".rstrip()

    def to_dict(self) -> dict[str, Any]:
        return {"command": asdict(self)}

    def digest(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def check_template(template: str, train_seeds: list[int] | None) -> None:
    """A --command must name where it reports ({run_dir}) and the seeds it is swept over."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise UserError(f"--command {template!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise UserError(f"--command: unknown placeholder {{{unknown[0]}}} (placeholders: {{init_seed}}, {{train_seed}}, {{run_dir}})")
    needed = ["run_dir", "init_seed"] + (["train_seed"] if train_seeds else [])
    missing = [name for name in needed if name not in names]
    if missing:
        raise UserError(f"--command must pass {{{missing[0]}}} to your program, e.g. "
                        "--command 'python train.py --init-seed {init_seed} --train-seed {train_seed} --out {run_dir}'")


def config_from_dict(raw: Any, source: str) -> "RunConfig | CommandRun":
    """A planned run's config as sweep.json stores it: noisefloor's run config, or a user's command."""
    if isinstance(raw, Mapping) and "command" in raw:
        return CommandRun(**raw["command"])
    return config_module.from_dict(raw, source)


@dataclass(frozen=True)
class PlannedRun:
    intervention: str
    init_seed: int
    train_seed: int | None
    config: RunConfig | CommandRun

    @property
    def steps(self) -> int | None:
        """Optimizer steps of a noisefloor run; None for a user's command (its program decides)."""
        return self.config.train.steps if isinstance(self.config, RunConfig) else None

    @property
    def run_id(self) -> str:
        """Readable and stable: intervention, seeds, and the resolved config's digest."""
        train = "none" if self.train_seed is None else self.train_seed
        return f"{self.intervention}_i{self.init_seed}_t{train}_{self.config.digest()[:10]}"


@dataclass
class Plan:
    name: str
    runs: list[PlannedRun] = field(default_factory=list)

    def add(self, run: PlannedRun) -> None:
        if all(r.run_id != run.run_id for r in self.runs):
            self.runs.append(run)


def expand(base: RunConfig, registry: Registry, interventions: list[str], init_seeds: list[int],
           train_seeds: list[int] | None, plan: Plan) -> None:
    """Add every (intervention, init seed, train seed) run to the plan."""
    if len(set(interventions)) != len(interventions):
        raise UserError(f"interventions listed twice: {', '.join(interventions)}")
    configs = {name: registry.apply(base, name) for name in interventions}
    for name in interventions:
        for init_seed in init_seeds:
            for train_seed in train_seeds or [None]:
                seeded = configs[name].with_seeds(init_seed, train_seed)
                plan.add(PlannedRun(name, init_seed, train_seed, seeded))


def from_flags(config_path: str | None, overrides: list[str], interventions: list[str], init_seeds: list[int],
               train_seeds: list[int] | None, name: str, registry: Registry | None = None) -> Plan:
    base = config_module.load(config_path, overrides)
    return from_base(base, interventions, init_seeds, train_seeds, name, registry)


def from_base(base: RunConfig, interventions: list[str], init_seeds: list[int], train_seeds: list[int] | None,
              name: str, registry: Registry | None = None) -> Plan:
    names = [BASELINE] + [n for n in interventions if n != BASELINE]
    plan = Plan(name)
    expand(base, registry or Registry(), names, init_seeds, train_seeds, plan)
    return plan


def from_command(template: str, interventions: Mapping[str, str], init_seeds: list[int],
                 train_seeds: list[int] | None, name: str) -> Plan:
    """Every (intervention, init seed, train seed) run of a user's command; interventions are named argument strings."""
    check_template(template, train_seeds)
    for label, arguments in interventions.items():
        if label == BASELINE or "+" in label or not label:
            raise UserError(f"intervention name {label!r} is reserved or empty; name it e.g. 'qkv-bias=--qkv-bias'")
        if not arguments.strip():
            raise UserError(f"intervention {label!r} adds no arguments; write it NAME=ARGS, e.g. 'qkv-bias=--qkv-bias'")
    plan = Plan(name)
    for label, arguments in {BASELINE: "", **interventions}.items():
        for init_seed in init_seeds:
            for train_seed in train_seeds or [None]:
                run = CommandRun(template, arguments.strip(), init_seed, train_seed)
                plan.add(PlannedRun(label, init_seed, train_seed, run))
    return plan


_SPEC_KEYS = {"sweep", "interventions", "experiments"}
_SWEEP_KEYS = {"name", "config", "set"}
_EXPERIMENT_KEYS = {"name", "interventions", "init_seeds", "train_seeds"}


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def from_file(path: str | Path) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep spec not found: {path}")
    try:
        raw = tomllib.loads(read_config_bytes(path).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # decode errors, huge integers, deep nesting
        raise UserError(f"{path}: not valid TOML: {parse_problem(exc)}") from None
    _check_keys(raw, _SPEC_KEYS, str(path))
    sweep = raw.get("sweep", {})
    if not isinstance(sweep, Mapping):
        raise UserError(f"{path}: [sweep] must be a table")
    _check_keys(sweep, _SWEEP_KEYS, f"{path} [sweep]")
    if not isinstance(sweep.get("config"), str):
        raise UserError(f"{path} [sweep]: 'config' (the base run config: a path or a preset name) is required, as a string")
    sets = sweep.get("set", [])
    if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise UserError(f"{path} [sweep]: 'set' must be a list of \"section.key=value\" strings")
    source = path.parent / sweep["config"]
    if not source.exists() and sweep["config"] in PRESETS:  # `config = "tiny-cpu"`: the built-in preset
        source = Path(sweep["config"])
    try:
        base = config_module.load(source, sets)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None

    custom = raw.get("interventions", {})
    if not isinstance(custom, Mapping):
        raise UserError(f"{path}: [interventions] must be a table of named override tables")
    registry = Registry({name: parse_overrides(value, f"{path} [interventions.{name}]") for name, value in custom.items()})

    experiments = raw.get("experiments")
    if not isinstance(experiments, list) or not experiments:
        raise UserError(f"{path}: no [[experiments]] to run")
    plan = Plan(str(sweep.get("name", path.stem)))
    seen: set[str] = set()
    for index, experiment in enumerate(experiments):
        if not isinstance(experiment, Mapping):
            raise UserError(f"{path}: [[experiments]] entry {index + 1} must be a table")
        label = str(experiment.get("name", f"#{index + 1}"))
        where = f"{path} experiment {label!r}"
        _check_keys(experiment, _EXPERIMENT_KEYS, where)
        if label in seen:
            raise UserError(f"{path}: two experiments are named {label!r}")
        seen.add(label)
        names = experiment.get("interventions", [BASELINE])
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{where}: 'interventions' must be a non-empty list of names")
        init_seeds = seed_list(experiment.get("init_seeds"), f"{where}: init_seeds")
        train_seeds = seed_list(experiment["train_seeds"], f"{where}: train_seeds") if "train_seeds" in experiment else None
        try:
            expand(base, registry, names, init_seeds, train_seeds, plan)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    return plan


def cpu_jobs(plan: Plan) -> int:
    """Runs at once on this machine's cores at the configs' thread count (torch-free); one at a time when the plan
    holds only user commands, whose program may use every core itself."""
    threads = [run.config.train.threads for run in plan.runs if isinstance(run.config, RunConfig)]
    return max(1, (os.cpu_count() or 1) // max(threads)) if threads else 1
