"""`noisefloor design`: a fractional-factorial plan written as a sweep spec.

The spec is the ordinary format of `seedsweeps/*.toml` (see spec.py): one
experiment whose interventions are the design's rows ('baseline' for the
all-off row, 'a+b+...' for the others), every row at every init seed (the
seed is a block: each init seed replicates the whole design). The design,
its defining relation and its aliases head the file as comments.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from noisefloor import config as config_module
from noisefloor.presets import PRESETS
from noisefloor.stats.design import LETTERS, Design
from noisefloor.sweep.interventions import Registry
from noisefloor.sweep.spec import Plan, expand

DEFAULT_CONFIG = "tiny-cpu"


def describe(design: Design, init_seeds: list[int], train_seeds: list[int] | None = None) -> list[str]:
    """What the design is, in lines a terminal prints and the spec file carries as comments."""
    k, p = design.k, design.p
    kind = "full factorial" if p == 0 else f"2^({k}-{p}) fractional factorial"
    lines = [
        f"design: {kind}, {design.resolution_name}: {design.runs} of the {design.full_runs} on/off combinations",
        "factors: " + ", ".join(f"{letter} = {name}" for letter, name in zip(LETTERS, design.factors)),
    ]
    if p:
        lines.append(f"generators: {', '.join(design.generators)}; defining relation: {design.defining_relation}")
    chains = [(effect, aliased) for effect, aliased in design.alias_chains() if aliased]
    if chains:
        lines.append("aliases (each estimate is the sum of the effects aliased together; three-factor and higher interactions assumed 0):")
        lines += [f"  {design.name(effect)} = " + " = ".join(design.name(a) for a in aliased) for effect, aliased in chains]
    else:
        lines.append("aliases: no main effect or two-factor interaction is aliased with another "
                     "(three-factor and higher interactions assumed 0)")
    seeds = len(init_seeds)
    lines.append(
        f"runs: {design.runs} rows x {seeds} init seed(s) = {design.runs * seeds} "
        f"(full factorial: {design.full_runs * seeds}); the init seed is a block, aliased with no effect"
    )
    if train_seeds:
        lines.append(
            f"  + {len(train_seeds)} baseline run(s) at init seed {init_seeds[0]} re-seeded with {', '.join(map(str, train_seeds))}: "
            "the training-loop floor (and with the init seeds, the variance components)"
        )
    return lines


def spec_config(config: str, spec_dir: Path) -> str:
    """The spec's `config`: a preset name as is, a file relative to the spec's folder (as spec.py reads it)."""
    if not Path(config).exists() and config in PRESETS:
        return config
    return Path(os.path.relpath(Path(config).resolve(), spec_dir.resolve())).as_posix()


def design_spec(design: Design, init_seeds: list[int], train_seeds: list[int] | None, name: str, config: str | None,
                sets: list[str], spec_path: Path | None) -> str:
    """The spec file's text, after checking every row is a known intervention that changes the config.
    train_seeds: also the training-loop floor (baseline at the first init seed re-seeded with each)."""
    config = config or DEFAULT_CONFIG
    base = config_module.load(config, sets)  # relative to the current folder, as the user typed it
    expand(base, Registry(), design.rows(), init_seeds, None, Plan(name))
    lines = [f"# {line}" for line in describe(design, init_seeds, train_seeds)]
    spec_dir = spec_path.parent if spec_path else Path.cwd()
    lines += [f"#   noisefloor sweep {spec_path or 'THIS_FILE.toml'}, then noisefloor classify sweeps/{name}", "[sweep]",
              f"name = {json.dumps(name)}", f"config = {json.dumps(spec_config(config, spec_dir))}"]
    if sets:
        lines.append("set = [" + ", ".join(json.dumps(s) for s in sets) + "]")
    lines += ["", "[[experiments]]", 'name = "factorial"', "interventions = ["]
    lines += [f"  {json.dumps(row)}," for row in design.rows()]
    lines += ["]", "init_seeds = [" + ", ".join(str(s) for s in init_seeds) + "]"]
    if train_seeds:
        lines += ["", "[[experiments]]", 'name = "train-floor"', f"init_seeds = [{init_seeds[0]}]",
                  "train_seeds = [" + ", ".join(str(s) for s in train_seeds) + "]"]
    return "\n".join(lines) + "\n"
