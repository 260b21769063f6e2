"""`sweep --until-decided`: which seeds the next round adds, and when an intervention stops.

Pure: numbers in, decisions out; no torch, no files (sweep/until_decided.py runs the rounds).

- Seeds: the study's init seeds, then max(seeds) + 1, + 2, ... (never random, so a re-run of the same
  command adds the same seeds and reuses every run already done). A round adds to every open
  intervention the first seed of that sequence it lacks, and the same seed to the baseline: the
  arms share init seeds, which is what pairs them where the design pairs.
- Signal: the intervention's e-value (stats/sequential.py, the test classify uses for its design)
  reaches m / alpha, m = the study's interventions. Each e-value is an e-process, so by Ville's
  inequality P(ever >= m / alpha) <= alpha / m under no effect, however many rounds are looked at;
  over m interventions the family-wise error stays <= alpha (e-value Bonferroni; m = 1: 1 / alpha).
- Noise: the equivalence test (the (1 - 2 alpha) interval inside ±margin) is a fixed-n test, not
  anytime-valid, so it is looked at only once: at the maximum seeds. Claiming noise then is a subset of
  the event that the fixed-n test at the maximum rejects, so its error stays <= alpha.
- Otherwise the intervention gets another seed, or at the maximum is left undecided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from noisefloor.config import MAX_SEED

SIGNAL, NOISE, UNDECIDED, OPEN = "signal", "noise", "undecided", "open"


def seed_sequence(study_seeds: Sequence[int], length: int) -> list[int]:
    """The study's seeds, then the integers above the largest of them (from 0 once past MAX_SEED), unused ones only."""
    seeds = list(study_seeds)
    used = set(seeds)
    candidate = max(seeds) + 1
    while len(seeds) < length:
        if candidate > MAX_SEED:
            candidate = 0
        if candidate not in used:
            seeds.append(candidate)
            used.add(candidate)
        candidate += 1
    return seeds


def threshold(alpha: float, interventions: int) -> float:
    """The e-value an intervention must reach to stop on signal: m / alpha (family-wise alpha over m)."""
    return max(1, interventions) / alpha


@dataclass(frozen=True)
class Standing:
    """One intervention after a round: what classify found with every run of the folder."""

    intervention: str
    seeds: frozenset[int]  # init seeds it has finished runs at
    e_value: float | None
    equivalent: bool  # classify's equivalence decision: the (1 - 2 alpha) interval inside ±margin


@dataclass(frozen=True)
class Outcome:
    intervention: str
    state: str  # signal, noise, undecided (at the maximum), open (gets another seed)
    seeds: int
    e_value: float | None
    threshold: float
    max_seeds: int  # what the state was judged by (report/words.py says why in words)
    alpha: float
    margin: float | None


def judge(standing: Standing, alpha: float, interventions: int, max_seeds: int, margin: float | None) -> Outcome:
    """Stop on signal at any round (anytime-valid); on noise only at the maximum; else go on."""
    bar = threshold(alpha, interventions)
    n, e = len(standing.seeds), standing.e_value
    if e is not None and e >= bar:
        state = SIGNAL
    elif n < max_seeds:
        state = OPEN
    else:
        state = NOISE if standing.equivalent else UNDECIDED
    return Outcome(standing.intervention, state, n, e, bar, max_seeds, alpha, margin)


@dataclass(frozen=True)
class Round:
    """One init seed and the arms that get a run at it: the baseline (if it lacks the seed) and open interventions."""

    seed: int
    arms: tuple[str, ...]


def next_rounds(sequence: Sequence[int], outcomes: Iterable[Outcome], seeds_of: Mapping[str, Iterable[int]],
                baseline: str) -> list[Round]:
    """The runs of the next round: each open intervention's first seed of `sequence` it lacks.

    Open interventions normally move in step (one shared seed); after a stop, a re-run with a larger
    --max-seeds, or a failed run they can lag apart, and then each seed forms its own group.
    """
    by_seed: dict[int, list[str]] = {}
    for outcome in outcomes:
        if outcome.state != OPEN:
            continue
        have = set(seeds_of.get(outcome.intervention, ()))
        seed = next(s for s in sequence if s not in have)
        by_seed.setdefault(seed, []).append(outcome.intervention)
    base = set(seeds_of.get(baseline, ()))
    return [Round(seed, ((baseline,) if seed not in base else ()) + tuple(names)) for seed, names in by_seed.items()]
