"""`noisefloor sweep --until-decided --max-seeds N`: train, classify, add a seed where undecided, repeat.

The rules (which seeds, when to stop, why the error stays controlled) are in sweep/rounds.py; this module
only runs them: each round is an ordinary sweep of the grown plan (runs already done are reused), then
classify of the whole folder, then the next round's runs cloned from the intervention's runs at the
study's first init seed with the new init seed (its training-seed settings kept).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from noisefloor import atomic
from noisefloor.config import RunConfig
from noisefloor.errors import UserError
from noisefloor.report.words import analysis_json, outcome_reason
from noisefloor.rundir import SweepDir
from noisefloor.stats.classify import Analysis, analyse_results
from noisefloor.stats.table import read_results
from noisefloor.sweep import rounds
from noisefloor.sweep.interventions import BASELINE
from noisefloor.sweep.runner import SweepSummary
from noisefloor.sweep.spec import Plan, PlannedRun



@dataclass
class UntilDecided:
    summary: SweepSummary
    sequence: list[int]
    threshold: float
    max_seeds: int
    alpha: float
    margin: float | None
    analysis: Analysis | None = None  # None when a round ended with failed runs
    outcomes: list[rounds.Outcome] = field(default_factory=list)
    history: list[tuple[int, rounds.Round]] = field(default_factory=list)  # (round number, what it added)
    record: Path | None = None

    def to_json(self) -> dict:
        return {
            "schema": "noisefloor.until_decided/1",
            "alpha": self.alpha,
            "margin": self.margin,
            "max_seeds": self.max_seeds,
            "signal_threshold_e": self.threshold,
            "seed_sequence": self.sequence,
            "rounds": [{"round": n, "init_seed": r.seed, "arms": list(r.arms)} for n, r in self.history],
            "interventions": [{"intervention": o.intervention, "state": o.state, "seeds": o.seeds, "e_value": o.e_value,
                               "threshold": o.threshold, "reason": outcome_reason(o)} for o in self.outcomes],
            "classify": analysis_json(self.analysis) if self.analysis else None,
        }


def study_seeds(plan: Plan, max_seeds: int) -> list[int]:
    """The plan's init seeds, after checking that --until-decided can grow it to max_seeds."""
    seeds = list(dict.fromkeys(run.init_seed for run in plan.runs))
    if not any(run.intervention != BASELINE for run in plan.runs):
        raise UserError("--until-decided needs an intervention to decide: add --interventions grad-clip "
                        "(or interventions = [...] in noisefloor.toml)")
    if len(seeds) < 2:
        raise UserError(f"--until-decided starts from at least 2 init seeds (a floor needs two), got {seeds[0]}; "
                        "e.g. --init-seeds 42,22")
    if max_seeds < len(seeds):
        raise UserError(f"--max-seeds {max_seeds} is below the study's {len(seeds)} init seeds "
                        f"({', '.join(map(str, seeds))}); give --max-seeds {len(seeds)} or more")
    return seeds


def run_until_decided(plan: Plan, out: Path, max_seeds: int, alpha: float, margin: float | None,
                      train: Callable[[Plan], SweepSummary], say: Callable[[str], None]) -> UntilDecided:
    """Rounds until every intervention stops; `train` runs a plan (reusing done runs), `say` prints a line."""
    seeds = study_seeds(plan, max_seeds)
    names = list(dict.fromkeys(run.intervention for run in plan.runs if run.intervention != BASELINE))
    sequence = rounds.seed_sequence(seeds, max_seeds)
    bar = rounds.threshold(alpha, len(names))
    templates = {name: [r for r in plan.runs if r.intervention == name and r.init_seed == seeds[0]]
                 for name in [BASELINE] + names}
    say(f"until decided: at most {max_seeds} init seeds per intervention, in this order: "
        f"{', '.join(map(str, sequence))}; signal when the e-value reaches {bar:g} "
        f"({len(names)} intervention(s) / alpha {alpha:g}); noise only at {max_seeds} seeds "
        + (f"(equivalence within ±{margin:g})" if margin is not None else "(needs a margin: none given)"))
    plan = Plan(plan.name, list(plan.runs))
    result = UntilDecided(train(plan), sequence, bar, max_seeds, alpha, margin)
    number = 0
    while result.summary.ok:
        result.analysis = analyse_results(read_results(SweepDir(result.summary.path).results), alpha, margin)
        seeds_of = _seeds_done(result.summary, [BASELINE] + names)
        verdicts = {v.intervention: v for v in result.analysis.verdicts}
        result.outcomes = [rounds.judge(_standing(name, seeds_of[name], verdicts.get(name), margin), alpha,
                                        len(names), max_seeds, margin) for name in names]
        planned = rounds.next_rounds(sequence, result.outcomes, seeds_of, BASELINE)
        if not planned:
            break
        number += 1
        for added in planned:
            result.history.append((number, added))
            for arm in added.arms:
                for template in templates[arm]:
                    plan.add(_at_seed(template, added.seed))
            paired = " (same init seed: paired)" if len(added.arms) > 1 else ""
            say(f"round {number}: init seed {added.seed} for {', '.join(added.arms)}{paired}")
        stopped = [f"{o.intervention} ({o.state})" for o in result.outcomes if o.state != rounds.OPEN]
        if stopped:
            say(f"  stopped: {', '.join(stopped)}")
        trained = result.summary.trained
        result.summary = train(plan)
        result.summary.trained = trained + result.summary.trained  # "trained now" counts every round
    if result.analysis is not None and result.summary.ok:
        result.record = SweepDir(result.summary.path).until_decided
        atomic.write_text(result.record, json.dumps(result.to_json(), indent=2) + "\n")
    return result


def _seeds_done(summary: SweepSummary, names: list[str]) -> dict[str, frozenset[int]]:
    done: dict[str, set[int]] = {name: set() for name in names}
    for record in summary.records:
        if record.status == "done" and record.planned.intervention in done:
            done[record.planned.intervention].add(record.planned.init_seed)
    return {name: frozenset(seeds) for name, seeds in done.items()}


def _standing(name: str, seeds: frozenset[int], verdict, margin: float | None) -> rounds.Standing:
    if verdict is None:
        return rounds.Standing(name, seeds, None, False)
    # the equivalence test itself (interval inside ±margin), read whatever Holm's p says
    equivalent = margin is not None and verdict.margin_for_noise is not None and verdict.margin_for_noise < margin
    return rounds.Standing(name, seeds, verdict.e_value, equivalent)


def _at_seed(run: PlannedRun, init_seed: int) -> PlannedRun:
    if isinstance(run.config, RunConfig):
        config = run.config.with_seeds(init_seed, run.config.train.train_seed)
    else:
        config = dataclasses.replace(run.config, init_seed=init_seed)
    return PlannedRun(run.intervention, init_seed, run.train_seed, config)
