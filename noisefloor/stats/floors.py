"""Noise floors: which baseline runs form them, and their summary statistics.

- Training-loop floor (kind "train"), one per init seed: the baseline runs
  with that init seed and different training streams (each train_seed value,
  and the run that is not re-seeded, is one stream).
- Init floor (kind "init"), one per training-stream setting: the baseline
  runs with that setting and different init seeds.

Only floors of at least 2 runs exist (an SD needs two). Repeats of the same
run have already been collapsed into one cell, so they are not counted twice.

The honest small-n numbers, for a floor of n runs with mean m and sample SD
s, and a mean of new runs X̄ that carries a variance factor f² relative to
s² (f² = 1 + 1/n for one new run compared with m):
    (X̄ - m) / (s f) ~ t(n - 1)
so the 3-SD rule |X̄ - m| > 3 s fires by chance with probability
2 (1 - T_{n-1}(3 / f)), and the 99.7% prediction interval is
m ± t_{0.9985, n-1} s f.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable

import numpy as np

from noisefloor.stats.table import BASELINE, NO_RESEED
from noisefloor.stats.tests import has_spread, t_ppf, t_sf

TRAIN = "train"
INIT = "init"
PI_LEVEL = 0.997
BAND_SDS = (1, 2, 3)


def false_positive_rate(df: int, factor: float, sds: float = 3.0) -> float:
    """P(|X̄ - m| > sds·s) under normality with no real effect: 2 (1 - T_df(sds / factor))."""
    return 2.0 * t_sf(sds / factor, df)


def prediction_half_width(sd: float, df: int, factor: float, level: float = PI_LEVEL) -> float:
    """Half-width of the Student-t prediction interval: t_{(1+level)/2, df} · sd · factor."""
    return t_ppf(0.5 + level / 2.0, df) * sd * factor


def one_run_factor(n: int) -> float:
    """Variance factor for one new run compared with the mean of n floor runs."""
    return math.sqrt(1.0 + 1.0 / n)


@dataclass(frozen=True)
class Floor:
    name: str
    kind: str  # TRAIN or INIT
    init_seed: int | None  # the training-loop floor's init seed
    stream: str | None  # the init floor's training-stream setting
    runs: tuple[str, ...]
    losses: tuple[float, ...]
    varied: tuple[str, ...] = ()  # per run, what differs between them: its stream (train floor) or init seed (init floor)

    @property
    def n(self) -> int:
        return len(self.losses)

    @property
    def df(self) -> int:
        return self.n - 1

    @cached_property
    def constant(self) -> bool:
        """All runs gave the same loss, up to floating-point noise: the floor has no spread."""
        return not has_spread(self.losses)

    @cached_property
    def mean(self) -> float:
        return self.losses[0] if self.constant else float(np.mean(self.losses))

    @cached_property
    def sd(self) -> float:
        return 0.0 if self.constant else float(np.std(self.losses, ddof=1))

    @property
    def sd_population(self) -> float:
        return 0.0 if self.constant else float(np.std(self.losses, ddof=0))

    def band(self, sds: float) -> tuple[float, float]:
        return (self.mean - sds * self.sd, self.mean + sds * self.sd)

    @property
    def prediction_interval_997(self) -> tuple[float, float] | None:
        """None for a floor without spread: a zero-width interval would claim certainty it does not have."""
        if self.constant:
            return None
        half = prediction_half_width(self.sd, self.df, one_run_factor(self.n))
        return (self.mean - half, self.mean + half)

    @property
    def false_positive_rate_3sd(self) -> float | None:
        """None for a floor without spread: with SD 0 the 3-SD rule has no false-positive rate to speak of."""
        return None if self.constant else false_positive_rate(self.df, one_run_factor(self.n))

    def to_json(self) -> dict:
        out = {
            "name": self.name,
            "kind": self.kind,
            "init_seed": self.init_seed,
            "stream": self.stream,
            "n": self.n,
            "runs": list(self.runs),
            "test_losses": list(self.losses),
            "varied": list(self.varied),
            "mean": self.mean,
            "sd": self.sd,
            "sd_population": self.sd_population,
            "constant": self.constant,
            "prediction_interval_997": None if self.constant else list(self.prediction_interval_997),
            "false_positive_rate_3sd": self.false_positive_rate_3sd,
        }
        for sds in BAND_SDS:
            out[f"band_{sds}sd"] = list(self.band(sds))
        return out


@dataclass(frozen=True)
class PooledSD:
    """The training-loop SD pooled over the init seeds' training-loop floors (assumed equal at every seed):
    s² = Σ (n_i - 1) s_i² / Σ (n_i - 1) with df = Σ (n_i - 1), more degrees of freedom than any one floor."""

    floors: tuple[Floor, ...]

    @cached_property
    def df(self) -> int:
        return sum(f.df for f in self.floors)

    @cached_property
    def sd(self) -> float:
        return math.sqrt(sum(f.df * f.sd**2 for f in self.floors) / self.df)

    def to_json(self) -> dict:
        return {"sd": self.sd, "df": self.df, "floors": [f.name for f in self.floors]}


def pooled_train_sd(floors: Iterable[Floor]) -> PooledSD | None:
    """The pooled training-loop SD when there are >= 2 training-loop floors, else None."""
    train = tuple(f for f in floors if f.kind == TRAIN)
    return PooledSD(train) if len(train) >= 2 else None


def train_floor_name(init_seed: int) -> str:
    return f"train@init_seed={init_seed}"


def init_floor_name(stream: str) -> str:
    return "init@" + ("no-reseed" if stream == NO_RESEED else stream)


def build_floors(cells) -> list[Floor]:
    """All floors of at least 2 runs from the baseline cells (pandas frame of `Results.cells`)."""
    base = cells[cells["intervention"] == BASELINE]
    floors = []
    for init_seed, group in base.groupby("init_seed", sort=False):
        if len(group) >= 2:
            floors.append(_floor(train_floor_name(int(init_seed)), TRAIN, int(init_seed), None, group))
    for stream, group in base.groupby("stream", sort=False):
        if len(group) >= 2:
            floors.append(_floor(init_floor_name(stream), INIT, None, stream, group))
    return floors


def _floor(name: str, kind: str, init_seed, stream, group) -> Floor:
    return Floor(
        name=name,
        kind=kind,
        init_seed=init_seed,
        stream=stream,
        runs=tuple(cell[0] for cell in group["runs"]),
        losses=tuple(float(v) for v in group["test_loss"]),
        varied=tuple(str(v) for v in (group["stream"] if kind == TRAIN else group["init_seed"])),
    )


def largest(floors: Iterable[Floor], prefer=None) -> Floor | None:
    """The floor with the most runs; ties go to `prefer(floor)` being true, then file order."""
    best = None
    for floor in floors:
        key = (floor.n, bool(prefer(floor)) if prefer else False)
        if best is None or key > best[0]:
            best = (key, floor)
    return None if best is None else best[1]
