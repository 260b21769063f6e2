"""How many seeds to detect an effect you state, from the pilot floors' SDs (not from an observed delta).

Per floor: runs per arm for a two-sided two-sample t-test at `alpha` to reach `power` at |effect| / SD
(tests.seeds_needed). The training-loop floor's SD is pooled over init seeds when there are several.
Beside it, the mean seeds the anytime-valid e-value rule uses (paired differences with SD·√2, looks after
every seed from 3, stopping at e >= 1/alpha or at three times the fixed n), by a seeded simulation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from noisefloor.stats import sequential, tests
from noisefloor.stats.floors import TRAIN, Floor, PooledSD

SEQUENTIAL_STUDIES = 4000
FIRST_LOOK = 3
MAX_SIMULATED_SEEDS = 600  # beyond it the simulation would need gigabytes; such plans are not run seed by seed


@dataclass(frozen=True)
class PlanRow:
    floor: str
    kind: str
    sd: float
    df: int
    effect_sds: float | None  # the stated effect in SDs of this floor
    seeds_per_arm: int | None  # None: no spread, or more than tests.MAX_SEEDS
    sequential_mean_seeds: float | None
    sequential_power: float | None

    def to_json(self) -> dict:
        return asdict(self)


def plan_seeds(floors: tuple[Floor, ...], pooled: PooledSD | None, effect: float,
               alpha: float = tests.ALPHA, power: float = tests.POWER) -> list[PlanRow]:
    sources = [(f.name, f.kind, f.sd, f.df) for f in floors if not (pooled and f.kind == TRAIN)]
    if pooled:
        sources.insert(0, (f"train (pooled over {len(pooled.floors)} init seeds)", TRAIN, pooled.sd, pooled.df))
    rows = []
    for name, kind, sd, df in sources:
        n = tests.seeds_needed(effect, sd, alpha, power)
        mean_seeds = sequential_power = None
        if n is not None and 3 * n <= MAX_SIMULATED_SEEDS:
            mean_seeds, sequential_power = _sequential(effect / (sd * math.sqrt(2)), 3 * max(n, FIRST_LOOK), alpha)
        rows.append(PlanRow(name, kind, sd, df, effect / sd if sd else None, n, mean_seeds, sequential_power))
    return rows


def _sequential(effect_sds: float, max_seeds: int, alpha: float) -> tuple[float, float]:
    """(mean seeds used, rate of reaching e >= 1/alpha) for paired differences N(effect_sds, 1)."""
    rng = np.random.default_rng(0)  # the same answer for the same CSV
    differences = rng.standard_normal((SEQUENTIAL_STUDIES, max_seeds)) + effect_sds
    stopped, used = sequential.sequential_rule(differences, FIRST_LOOK, alpha)
    return float(used.mean()), float(stopped.mean())
