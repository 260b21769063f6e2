"""Verdicts: each intervention against the floor that matches it, and the Analysis object.

`analyse(path)` is the one entry point: CSV (or sweep directory) in, an
`Analysis` out. `noisefloor classify` prints it, `--json` serialises it
(`report.words.analysis_json`), and `noisefloor report` renders the same object, so
every number in a report is the number `classify` computes from that CSV.

Numbers and typed flags only: each finding is a `Note` (a `NoteKind` and its facts), the floor choice a
`FloorReason`; report/words.py says them in words (terminal, Markdown, HTML and --json alike).

Rules (documented in docs/method.md, "Which floor judges an intervention" and "Reading the numbers"):
- same_init per run: from the same_init column (the sweep compares the tensors
  a run shares with the baseline), else from init_digest when the run and the
  baseline at its init seed both have one, else unknown. An intervention is same-init
  only when all its runs are; unknown or mixed -> the init floor (conservative).
- same-init interventions -> training-loop floor: the largest among the
  intervention's init seeds, else the largest anywhere (ties: file order);
  its SD pooled over every init seed's training-loop floor (assumed equal
  across init seeds; df summed). Without a training-loop floor with spread,
  the init floor instead. Each run is compared with the mean of the baseline
  runs at its own init seed (paired by init seed): delta = mean(x_i - ref(init_i)).
- other interventions -> init floor at the runs' training-stream setting, else
  the largest init floor (ties: no re-seed); delta = mean(x_i) - floor mean.
- verdict: signal when |delta| > 3 SD (direction better: lower loss), noise
  otherwise, undecided without a usable floor or when the floor's SD is 0.
- decision: signal when the Holm-adjusted p of `primary` < alpha; noise when
  the (1 - 2 alpha) CI of `primary`'s estimate lies inside ±margin; else
  undecided. e_value: stats/sequential.py.
- Var(delta) = s^2 f^2 with f^2 = 1/k + sum_I c_I^2 / (k^2 n_I) (k runs, c_I of
  them referenced to n_I baseline runs at I): one run against an n-run floor
  gives f^2 = 1 + 1/n. FPR of the 3-SD rule = 2 (1 - T_df(3 / f)), df = n - 1.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from noisefloor.errors import UserError
from noisefloor.stats import sequential, tests
from noisefloor.stats.components import Components, ComponentsMissing, variance_components
from noisefloor.stats.factorial import Factorial, factorial_effects
from noisefloor.stats.floors import (
    INIT,
    TRAIN,
    Floor,
    PooledSD,
    build_floors,
    false_positive_rate,
    largest,
    pooled_train_sd,
    prediction_half_width,
)
from noisefloor.stats.table import BASELINE, NO_RESEED, Results, read_results
from noisefloor.stats.tests import NOISE, SIGNAL, UNDECIDED

SCHEMA = "noisefloor.classify/1"
SDS = 3.0
ALPHA = tests.ALPHA


class NoteKind(str, Enum):
    """What a note reports. Its facts (run names, counts, seeds) travel with it; report/words.py words it."""

    # about one intervention
    REPRODUCIBILITY_FAILURE = "reproducibility_failure"  # runs, init_seed, stream, losses
    REPEATS_IDENTICAL = "repeats_identical"  # runs, init_seed, stream
    SAME_INIT_CONFLICT = "same_init_conflict"  # run: same_init=false, yet its init_digest is the baseline's
    SAME_INIT_MIXED = "same_init_mixed"
    UNCHANGED_WEIGHTS = "unchanged_weights"  # same, comparable: final weights bit-identical to the baseline's
    INIT_FLOOR_INSTEAD = "init_floor_instead"  # spread: whether the training-loop floor exists (without spread)
    NO_FLOOR = "no_floor"  # floor_kind, most: the floor the intervention needs is missing
    RUNS_LEFT_OUT = "runs_left_out"  # seeds: init seeds without a baseline run
    NO_BASELINE_AT_INIT_SEED = "no_baseline_at_init_seed"
    AVERAGED_PER_INIT_SEED = "averaged_per_init_seed"  # runs, values
    ZERO_SPREAD = "zero_spread"  # floor, n, mean
    NO_WELCH = "no_welch"
    # about the whole file
    REPRODUCIBILITY_FAILURES = "reproducibility_failures"  # count
    REPEATS_CONFIRMED = "repeats_confirmed"  # count
    SAME_INIT_UNKNOWN = "same_init_unknown"
    FLOOR_ZERO_SPREAD = "floor_zero_spread"  # floor, n
    ROWS_LEFT_OUT = "rows_left_out"  # count
    POOLED_TRAIN_SD = "pooled_train_sd"  # floors, sd, df
    NO_MARGIN = "no_margin"


FAILURES = (NoteKind.REPRODUCIBILITY_FAILURE, NoteKind.REPRODUCIBILITY_FAILURES)


@dataclass(frozen=True)
class Note:
    kind: NoteKind
    facts: tuple[tuple[str, Any], ...] = ()

    def __getitem__(self, key: str) -> Any:
        return dict(self.facts)[key]

    @property
    def failure(self) -> bool:
        return self.kind in FAILURES


def note(kind: NoteKind, **facts) -> Note:
    return Note(kind, tuple(facts.items()))


class FloorChoice(str, Enum):
    """How the floor of an intervention was chosen (report/words.py says why in words)."""

    OWN_TRAIN_FLOOR = "own_train_floor"  # the training-loop floor at its init seed
    BORROWED_TRAIN_SD = "borrowed_train_sd"  # without: seeds lacking a floor; own: whether one of its seeds has one
    OWN_INIT_FLOOR = "own_init_floor"  # stream: the init floor at its training-stream setting
    LARGEST_INIT_FLOOR = "largest_init_floor"  # streams: its settings, none with an init floor
    NO_FLOOR = "no_floor"  # floor_kind: the floor that applies is missing


@dataclass(frozen=True)
class FloorReason:
    choice: FloorChoice
    same_init: bool | None
    same_init_source: str
    facts: tuple[tuple[str, Any], ...] = ()
    per_seed_reference: bool = False  # each run compared with the baseline at its own init seed
    pooled: PooledSD | None = None  # the training-loop SD pooled over init seeds

    def __getitem__(self, key: str) -> Any:
        return dict(self.facts)[key]


# The --json keys of an intervention, in order. Each is a field or a DERIVED property of Verdict, an entry of
# Verdict.test_values(), or one of the words report/words.py adds (decision_reason, disagreement, floor_reason, notes,
# tests).
JSON_KEYS = (
    "intervention", "decision", "decision_direction", "decision_reason", "agrees_with_3sd_rule", "disagreement",
    "ci", "ci_level", "margin", "margin_for_noise", "e_value", "anytime_signal", "n_runs", "runs", "init_seeds",
    "streams", "test_loss", "same_init", "same_init_source", "floor", "floor_kind", "floor_reason", "verdict",
    "direction", "reference", "delta", "z", "sd", "df", "n_compared", "band_3sd", "prediction_interval_997",
    "false_positive_rate_3sd", "p_prediction", "p_welch", "p_paired", "n_pairs", "delta_matched", "test", "p_value",
    "p_holm", "tests", "notes",
)
DERIVED = (
    "ci_level", "ci", "margin_for_noise", "decision", "decision_direction", "agrees_with_3sd_rule", "anytime_signal",
    "floor_kind", "z", "direction", "band_3sd", "prediction_interval_997", "false_positive_rate_3sd",
)


@dataclass(frozen=True)
class Verdict:
    intervention: str
    runs: tuple[str, ...]
    init_seeds: tuple[int, ...]
    streams: tuple[str, ...]
    test_loss: float  # mean over the intervention's runs (repeats counted once)
    same_init: bool | None
    same_init_source: str
    verdict: str
    floor: Floor | None = None
    floor_reason: FloorReason | None = None
    reference: float | None = None  # baseline value the runs are compared with (mean over runs)
    delta: float | None = None  # test_loss - reference
    sd: float | None = None
    factor: float | None = None  # sd of delta under no effect, in units of sd
    n_compared: int = 0
    prediction: tests.TestResult | None = None
    welch: tests.TestResult | None = None
    paired: tests.TestResult | None = None
    n_pairs: int = 0  # runs with a baseline run at the same init seed and stream
    delta_matched: float | None = None  # mean of (run - that baseline run) over the n_pairs
    p_holm: float | None = None
    notes: tuple[Note, ...] = field(default=())
    df: int | None = None  # degrees of freedom of sd (summed over init seeds when the SD is pooled)
    e_value: float | None = None  # anytime-valid evidence of an effect (stats/sequential.py)
    alpha: float = ALPHA
    margin: float | None = None  # equivalence margin in nats/token; None: `noise` is never decided

    @property
    def ci_level(self) -> float:
        """The equivalence test at alpha (TOST) is the (1 - 2 alpha) interval inside ±margin."""
        return 1.0 - 2.0 * self.alpha

    @cached_property
    def ci(self) -> tuple[float, float] | None:
        """(1 - 2 alpha) confidence interval of the effect, from the test that fits the design (`primary`)."""
        return self.primary.confidence_interval(self.ci_level) if self.primary else None

    @property
    def margin_for_noise(self) -> float | None:
        """The smallest margin that would have called it noise: the interval's farthest end from 0."""
        return None if self.ci is None else max(abs(self.ci[0]), abs(self.ci[1]))

    @property
    def decision(self) -> str:
        """signal: Holm-adjusted p < alpha; noise: the (1 - 2 alpha) CI inside ±margin; else undecided."""
        return tests.decide(self.p_holm, self.ci, self.alpha, self.margin)

    @property
    def decision_direction(self) -> str | None:
        if self.decision != SIGNAL:
            return None
        return "better" if self.primary.estimate < 0 else "worse"

    @property
    def agrees_with_3sd_rule(self) -> bool:
        """Whether the 3-SD rule and the decision say the same (the 3-SD 'noise' claims what only 'noise' may)."""
        return self.verdict == self.decision and self.direction == self.decision_direction

    @property
    def anytime_signal(self) -> bool | None:
        """The e-value reached 1/alpha: a signal that stays valid however many times seeds were added."""
        return None if self.e_value is None else self.e_value >= 1.0 / self.alpha

    @property
    def floor_kind(self) -> str | None:
        return self.floor.kind if self.floor else None

    @property
    def z(self) -> float | None:
        if self.delta is None or not self.sd:
            return None
        return self.delta / self.sd

    @property
    def direction(self) -> str | None:
        if self.verdict != SIGNAL:
            return None
        return "better" if self.delta < 0 else "worse"

    # Without spread (sd = 0) the band, interval and rate are None: zero width would claim a certainty not there.
    @property
    def band_3sd(self) -> tuple[float, float] | None:
        if self.reference is None or not self.sd:
            return None
        return (self.reference - SDS * self.sd, self.reference + SDS * self.sd)

    @property
    def prediction_interval_997(self) -> tuple[float, float] | None:
        if self.reference is None or not self.sd:
            return None
        half = prediction_half_width(self.sd, self.df, self.factor)
        return (self.reference - half, self.reference + half)

    @property
    def false_positive_rate_3sd(self) -> float | None:
        if self.factor is None or not self.sd:
            return None
        return false_positive_rate(self.df, self.factor, SDS)

    @property
    def primary(self) -> tests.TestResult | None:
        """The test whose p-value enters the Holm correction: paired, else Welch, else prediction."""
        for result in (self.paired, self.welch, self.prediction):
            if result is not None and result.pvalue is not None:
                return result
        return None

    @property
    def tests_made(self) -> dict[str, tests.TestResult]:
        """The tests made, by name, in the order --json lists them."""
        return {t.test: t for t in (self.prediction, self.welch, self.paired) if t is not None}

    def test_values(self) -> dict[str, Any]:
        """The run count and the tests' p-values as --json lists them."""
        primary, by_name = self.primary, self.tests_made
        return {
            "n_runs": len(self.runs),
            **{f"p_{name}": by_name[name].pvalue if name in by_name else None for name in ("prediction", "welch", "paired")},
            "test": primary.test if primary else None,
            "p_value": primary.pvalue if primary else None,
        }

    def to_json(self, words: dict[str, Any]) -> dict:
        """The --json object: JSON_KEYS from the fields, DERIVED, test_values() and `words` (the prose, and the
        tests with their notes in words)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)} | {name: getattr(self, name) for name in DERIVED}
        values |= self.test_values() | words
        return {key: plain(values[key]) for key in JSON_KEYS}


@dataclass(frozen=True)
class Analysis:
    """Everything `classify` prints and `report` renders, computed once from one CSV."""

    results: Results
    floors: tuple[Floor, ...]
    verdicts: tuple[Verdict, ...]
    components: Components | None
    components_missing: ComponentsMissing | None  # why there are no components (None when there are)
    factorial: Factorial | None
    notes: tuple[Note, ...]
    pooled_train: PooledSD | None = None
    alpha: float = ALPHA
    margin: float | None = None

    @property
    def reproducibility_failures(self) -> list:
        return [r for r in self.results.repeats if not r.identical]

    @property
    def failure_notes(self) -> list[Note]:
        """The notes every rendering shows first, as a banner, and not again among the others."""
        return [n for n in self.notes if n.failure]

    def floor(self, name: str) -> Floor:
        return next(f for f in self.floors if f.name == name)


def analyse(path: str | Path, alpha: float = ALPHA, margin: float | None = None) -> Analysis:
    """Read a results CSV (or SWEEP_DIR/results.csv) and analyse it."""
    return analyse_results(read_results(path), alpha, margin)


def analyse_results(results: Results, alpha: float = ALPHA, margin: float | None = None) -> Analysis:
    """alpha: the decision's error rate (Holm family-wise for signal, TOST for noise); margin: the
    equivalence margin in nats/token (None: no intervention is decided noise)."""
    cells = results.cells
    base = cells[cells["intervention"] == BASELINE]
    if base.empty:
        close = difflib.get_close_matches(BASELINE, list(dict.fromkeys(cells["intervention"])), n=1, cutoff=0.75)
        hint = f" (found {close[0]!r}; names are case-sensitive)" if close else ""
        raise UserError(
            f"{results.source}: column 'intervention': no usable row is '{BASELINE}'{hint}; "
            "mark the unchanged configuration's runs as baseline"
        )
    floors = tuple(build_floors(cells))
    if not floors:
        differing = [r for r in results.repeats if r.intervention == BASELINE and not r.identical]
        failure = ""
        if differing:  # repeats collapse into one cell: say they differ rather than count them as one run
            names = ", ".join(repr(run)[:40] for run in differing[0].runs[:3])
            failure = (f" (repeats {names} at init seed {differing[0].init_seed} differ: a reproducibility failure, "
                       "see noisefloor diverge)")
        runs = int((results.runs["intervention"] == BASELINE).sum())
        raise UserError(
            f"{results.source}: no noise floor: the {runs} usable baseline run(s){failure} share neither "
            "an init seed nor a train_seed setting; add baseline runs with the same init_seed and other train seeds, "
            "or with other init seeds and the same train_seed setting"
        )
    context = _Baseline.of(base, floors, results)
    verdicts = [
        _judge(name, group, context) for name, group in _by_intervention(cells).items() if name != BASELINE
    ]
    verdicts = [replace(v, alpha=alpha, margin=margin) for v in _holm(verdicts)]
    components, components_missing = variance_components(cells)
    return Analysis(
        results=results,
        floors=floors,
        verdicts=tuple(verdicts),
        components=components,
        components_missing=components_missing,
        factorial=factorial_effects(cells, components, alpha, margin),
        notes=tuple(_notes(results, floors, verdicts, margin, context.pooled)),
        pooled_train=context.pooled,
        alpha=alpha,
        margin=margin,
    )


@dataclass(frozen=True)
class _Baseline:
    """What every verdict looks up about the baseline, computed once."""

    floors: tuple[Floor, ...]
    digests: dict[int, set[str]]  # init seed -> init digests of its baseline runs
    by_init: dict[int, tuple[float, int]]  # init seed -> (mean test loss, number of runs)
    by_cell: dict[tuple[int, str], float]  # (init seed, stream) -> test loss
    final_by_cell: dict[tuple[int, str], str]  # (init seed, stream) -> digest of the final weights
    most_per_init: int  # the most baseline runs sharing an init seed
    most_per_stream: int  # the most baseline runs sharing a training-stream setting
    repeats: tuple
    pooled: PooledSD | None  # the training-loop SD pooled over init seeds
    train_floors: dict[int, Floor]  # init seed -> its training-loop floor

    @classmethod
    def of(cls, base: pd.DataFrame, floors, results: Results) -> _Baseline:
        digests: dict[int, set[str]] = {}
        for init_seed, digest in zip(base["init_seed"], base["init_digest"]):
            if digest:
                digests.setdefault(int(init_seed), set()).add(digest)
        stats = base.groupby("init_seed")["test_loss"].agg(["mean", "size"])
        return cls(
            floors=floors,
            digests=digests,
            by_init={int(seed): (float(row["mean"]), int(row["size"])) for seed, row in stats.iterrows()},
            by_cell={(int(i), st): float(x) for i, st, x in zip(base["init_seed"], base["stream"], base["test_loss"])},
            final_by_cell={(int(i), st): d for i, st, d in zip(base["init_seed"], base["stream"], base["final_digest"]) if d},
            most_per_init=int(stats["size"].max()),
            most_per_stream=int(base.groupby("stream").size().max()),
            repeats=results.repeats,
            pooled=pooled_train_sd(floors),
            train_floors={f.init_seed: f for f in floors if f.kind == TRAIN},
        )


def _same_init_of_cell(cell, digests: dict[int, set[str]]) -> tuple[bool | None, str, Note | None]:
    """(same_init, source, conflict note) for one intervention cell.

    The same_init column wins: `noisefloor sweep` compares the tensors a run
    shares with the baseline, so a run with extra tensors (a new QKV bias
    under per-parameter init) is same-init although its whole-state digest
    differs. init_digest decides only when the column is empty.
    """
    known = digests.get(int(cell.init_seed), set())
    if cell.same_init is not None:
        conflict = None
        if cell.same_init is False and cell.init_digest and cell.init_digest in known:
            conflict = note(NoteKind.SAME_INIT_CONFLICT, run=cell.runs[0])
        return cell.same_init, "same_init column", conflict
    if cell.init_digest and len(known) == 1:
        return cell.init_digest in known, "init_digest", None
    return None, "unknown", None


def _by_intervention(cells: pd.DataFrame) -> dict[str, list]:
    """Cells (named tuples with the columns of Results.cells) grouped by intervention, in file order."""
    out: dict[str, list] = {}
    for cell in cells.itertuples(index=False):
        out.setdefault(cell.intervention, []).append(cell)
    return out


def _same_init(group: list, digests) -> tuple[bool | None, str, list[Note]]:
    found = [_same_init_of_cell(cell, digests) for cell in group]
    notes = [conflict for _, _, conflict in found if conflict]
    values = {value for value, _, _ in found}
    sources = sorted({source for _, source, _ in found})
    if values == {True} or values == {False}:
        return values.pop(), " and ".join(sources), notes
    if None in values:
        return None, "unknown", notes
    notes.append(note(NoteKind.SAME_INIT_MIXED))
    return None, "mixed", notes


def _judge(name: str, group: list, ctx: _Baseline) -> Verdict:
    same_init, source, notes = _same_init(group, ctx.digests)
    notes += [_repeat_note(r) for r in ctx.repeats if r.intervention == name]
    notes += _unchanged_note(group, ctx)
    verdict = Verdict(
        intervention=name,
        runs=tuple(run for cell in group for run in cell.runs),
        init_seeds=tuple(dict.fromkeys(int(cell.init_seed) for cell in group)),
        streams=tuple(dict.fromkeys(cell.stream for cell in group)),
        test_loss=float(np.mean([cell.test_loss for cell in group])),
        same_init=same_init,
        same_init_source=source,
        verdict=UNDECIDED,
    )
    if same_init:
        judged = _against_train_floor(verdict, group, ctx, notes)
        if judged.sd or not any(f.kind == INIT for f in ctx.floors):
            return judged
        # Knowing the runs share the baseline's initial weights must not lose the verdict: the init
        # floor holds the training-loop noise too (and more), so judging against it stays valid.
        notes = notes + [note(NoteKind.INIT_FLOOR_INSTEAD, spread=judged.floor is not None)]
        return _against_init_floor(verdict, group, ctx, notes)
    return _against_init_floor(verdict, group, ctx, notes)


def _unchanged_note(group: list, ctx: _Baseline) -> list[Note]:
    """Runs whose final weights are bit-identical to the baseline's at the same seeds changed nothing at all."""
    comparable = [c for c in group if c.final_digest and (int(c.init_seed), c.stream) in ctx.final_by_cell]
    same = [c for c in comparable if ctx.final_by_cell[(int(c.init_seed), c.stream)] == c.final_digest]
    if not same:
        return []
    return [note(NoteKind.UNCHANGED_WEIGHTS, same=len(same), comparable=len(comparable))]


def _repeat_note(repeat) -> Note:
    where = dict(runs=tuple(repeat.runs), init_seed=repeat.init_seed, stream=repeat.stream)
    if repeat.identical:
        return note(NoteKind.REPEATS_IDENTICAL, **where)
    return note(NoteKind.REPRODUCIBILITY_FAILURE, **where, losses=tuple(repeat.test_losses))


def _no_floor(verdict: Verdict, notes: list[Note], kind: str, most: int) -> Verdict:
    notes = tuple(notes + [note(NoteKind.NO_FLOOR, floor_kind=kind, most=most)])
    return replace(verdict, floor_reason=_reason(verdict, FloorChoice.NO_FLOOR, floor_kind=kind), notes=notes)


def _reason(verdict: Verdict, choice: FloorChoice, per_seed_reference: bool = False, pooled: PooledSD | None = None,
            **facts) -> FloorReason:
    return FloorReason(choice, verdict.same_init, verdict.same_init_source, tuple(facts.items()), per_seed_reference,
                       pooled)


def _against_train_floor(verdict: Verdict, group, ctx: _Baseline, notes) -> Verdict:
    train_floors = ctx.train_floors
    seeds = verdict.init_seeds
    without = [s for s in seeds if s not in train_floors]
    own = largest(train_floors[s] for s in seeds if s in train_floors)
    floor = own or largest(train_floors.values())
    if floor is None:
        return _no_floor(verdict, notes, TRAIN, ctx.most_per_init)
    pooled = ctx.pooled if ctx.pooled and ctx.pooled.sd > 0 else None
    sd, df = (pooled.sd, pooled.df) if pooled else (floor.sd, floor.df)
    common = dict(per_seed_reference=len(seeds) > 1, pooled=pooled)
    if not without:
        reason = _reason(verdict, FloorChoice.OWN_TRAIN_FLOOR, **common)
    else:
        reason = _reason(verdict, FloorChoice.BORROWED_TRAIN_SD, **common, without=tuple(without), own=own is not None,
                         from_seed=floor.init_seed)
    verdict = replace(verdict, floor=floor, floor_reason=reason, sd=sd, df=df)
    missing = sorted({int(c.init_seed) for c in group if int(c.init_seed) not in ctx.by_init})
    if missing:
        notes = notes + [note(NoteKind.RUNS_LEFT_OUT, seeds=tuple(missing))]
    used = [c for c in group if int(c.init_seed) in ctx.by_init]
    if not used:
        return replace(verdict, notes=tuple(notes + [note(NoteKind.NO_BASELINE_AT_INIT_SEED)]))
    return _compare(verdict, used, [int(c.init_seed) for c in used], ctx.by_init, ctx, notes)


def _against_init_floor(verdict: Verdict, group, ctx: _Baseline, notes) -> Verdict:
    init_floors = {f.stream: f for f in ctx.floors if f.kind == INIT}
    streams = verdict.streams
    own = init_floors.get(streams[0]) if len(streams) == 1 else None
    floor = own or largest(init_floors.values(), prefer=lambda f: f.stream == NO_RESEED)
    if floor is None:
        return _no_floor(verdict, notes, INIT, ctx.most_per_stream)
    if own:
        reason = _reason(verdict, FloorChoice.OWN_INIT_FLOOR, stream=streams[0])
    else:
        reason = _reason(verdict, FloorChoice.LARGEST_INIT_FLOOR, streams=tuple(streams), floor_stream=floor.stream)
    verdict = replace(verdict, floor=floor, floor_reason=reason)
    seeds = _per_init_seed(group)
    if len(seeds) < len(group):
        notes = notes + [note(NoteKind.AVERAGED_PER_INIT_SEED, runs=len(group), values=len(seeds))]
    verdict = replace(verdict, sd=floor.sd, df=floor.df)
    return _compare(verdict, seeds, ["floor"] * len(seeds), {"floor": (floor.mean, floor.n)}, ctx, notes, pair=False)


@dataclass(frozen=True)
class _SeedMean:
    """An intervention's runs at one init seed, averaged: one draw from an init floor."""

    init_seed: int
    stream: str | None
    test_loss: float
    runs: tuple[str, ...]


def _per_init_seed(group: list) -> list:
    by_seed: dict[int, list] = {}
    for cell in group:
        by_seed.setdefault(int(cell.init_seed), []).append(cell)
    if all(len(cells) == 1 for cells in by_seed.values()):
        return group
    return [
        _SeedMean(seed, cells[0].stream if len(cells) == 1 else None, float(np.mean([c.test_loss for c in cells])),
                  tuple(run for c in cells for run in c.runs))
        for seed, cells in by_seed.items()
    ]


def _compare(verdict: Verdict, used: list, keys: list, refs: dict, ctx: _Baseline, notes, pair: bool = True) -> Verdict:
    """Delta, z, verdict, the honest numbers and the tests, against `verdict.floor` with SD `verdict.sd`.

    keys[i] names the reference of run i in `refs` (value, number of baseline runs averaged).
    pair: also compare each run with the baseline run of the same (init seed, stream): the paired
    test and the matched delta (same-init interventions only; otherwise pairing removes nothing).
    """
    floor = verdict.floor
    xs = [float(c.test_loss) for c in used]
    k = len(xs)
    reference = sum(refs[key][0] for key in keys) / k
    delta = sum(xs) / k - reference
    counts = Counter(keys)
    factor = math.sqrt(1.0 / k + sum(c * c / (k * k * refs[key][1]) for key, c in counts.items()))
    sd = verdict.sd
    if not sd:
        outcome = UNDECIDED
        notes = notes + [note(NoteKind.ZERO_SPREAD, floor=floor.name, n=floor.n, mean=floor.mean)]
    else:
        outcome = SIGNAL if abs(delta) > SDS * sd else NOISE
    welch = paired = None
    own_floor = floor.kind == INIT or all(int(c.init_seed) == floor.init_seed for c in used)
    if k >= 2:
        if own_floor:
            welch = tests.welch(xs, list(floor.losses))
        else:
            notes = notes + [note(NoteKind.NO_WELCH)]
    keyed = [((int(c.init_seed), c.stream), x) for c, x in zip(used, xs)]
    pairs = [(x, ctx.by_cell[key]) for key, x in keyed if key in ctx.by_cell] if pair else []
    if len(pairs) >= 2:
        paired = tests.paired([x for x, _ in pairs], [b for _, b in pairs])
        e_value = sequential.e_value_paired([x - b for x, b in pairs])
    else:
        e_value = sequential.e_value_two_sample(xs, floor.losses) if own_floor else None
    return replace(
        verdict,
        test_loss=sum(xs) / k,
        runs=tuple(run for c in used for run in c.runs),
        delta_matched=sum(x - b for x, b in pairs) / len(pairs) if pairs else None,
        verdict=outcome,
        reference=reference,
        delta=delta,
        sd=sd,
        factor=factor,
        n_compared=k,
        prediction=tests.prediction(delta, sd, verdict.df, factor),
        e_value=e_value,
        welch=welch,
        paired=paired,
        n_pairs=len(pairs),
        notes=tuple(notes),
    )


def _holm(verdicts: list[Verdict]) -> list[Verdict]:
    adjusted = tests.holm_where_tested([v.primary.pvalue if v.primary is not None else None for v in verdicts])
    return [replace(v, p_holm=p) for v, p in zip(verdicts, adjusted)]


def _notes(results: Results, floors, verdicts, margin: float | None, pooled: PooledSD | None) -> list[Note]:
    notes = []
    failures = sum(1 for r in results.repeats if not r.identical)
    if failures:
        notes.append(note(NoteKind.REPRODUCIBILITY_FAILURES, count=failures))
    confirmed = sum(1 for r in results.repeats if r.identical)
    if confirmed:
        notes.append(note(NoteKind.REPEATS_CONFIRMED, count=confirmed))
    if any(v.same_init_source == "unknown" for v in verdicts):
        notes.append(note(NoteKind.SAME_INIT_UNKNOWN))
    notes += [note(NoteKind.FLOOR_ZERO_SPREAD, floor=f.name, n=f.n) for f in floors if f.constant]
    if results.left_out:
        notes.append(note(NoteKind.ROWS_LEFT_OUT, count=len(results.left_out)))
    if pooled is not None:
        notes.append(note(NoteKind.POOLED_TRAIN_SD, floors=len(pooled.floors), sd=pooled.sd, df=pooled.df))
    if margin is None and verdicts:
        notes.append(note(NoteKind.NO_MARGIN))
    return notes


def plain(value):
    """A value as JSON holds it: tuples as lists, a floor by its name, an enum by its value."""
    if isinstance(value, Floor):
        return value.name
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [plain(x) for x in value]
    if isinstance(value, dict):
        return {key: plain(x) for key, x in value.items()}
    return value


def finite(obj):
    """JSON has no NaN/inf: replace them by null, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(value) for value in obj]
    return obj
