"""Verdicts: each intervention against the floor that matches it, and the Analysis object.

`analyse(path)` is the one entry point: CSV (or sweep directory) in, an
`Analysis` out. `noisefloor classify` prints it, `--json` serialises
`Analysis.to_json()`, and `noisefloor report` renders the same object, so
every number in a report is the number `classify` computes from that CSV.

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
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from noisefloor.errors import UserError
from noisefloor.stats import sequential, tests
from noisefloor.stats.components import Components, variance_components
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

SCHEMA = "noisefloor.classify/1"
SIGNAL, NOISE, UNDECIDED = "signal", "noise", "undecided"
SDS = 3.0
ALPHA = tests.ALPHA


REPRODUCIBILITY_FAILURE = "REPRODUCIBILITY FAILURE"

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
    floor_reason: str = ""
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
    notes: tuple[str, ...] = field(default=())
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
        return self.primary.interval(self.ci_level) if self.primary else None

    @property
    def margin_for_noise(self) -> float | None:
        """The smallest margin that would have called it noise: the interval's farthest end from 0."""
        return None if self.ci is None else max(abs(self.ci[0]), abs(self.ci[1]))

    @property
    def decision(self) -> str:
        """signal: Holm-adjusted p < alpha; noise: the (1 - 2 alpha) CI inside ±margin; else undecided."""
        if self.p_holm is not None and self.p_holm < self.alpha:
            return SIGNAL
        if self.margin is not None and self.margin_for_noise is not None and self.margin_for_noise < self.margin:
            return NOISE
        return UNDECIDED

    @property
    def decision_direction(self) -> str | None:
        if self.decision != SIGNAL:
            return None
        return "better" if self.primary.estimate < 0 else "worse"

    @property
    def decision_reason(self) -> str:
        if self.primary is None or self.p_holm is None:
            return "no test could be made (no usable floor or no spread)"
        p = f"Holm p = {self.p_holm:.3g} ({self.primary.test} test)"
        if self.decision == SIGNAL:
            return f"{p} < α = {self.alpha:g}"
        if self.ci is None:
            return f"{p} ≥ α = {self.alpha:g}; no interval"
        ci = f"{100 * self.ci_level:g}% CI of Δ [{self.ci[0]:+.4f}, {self.ci[1]:+.4f}]"
        if self.decision == NOISE:
            return f"{ci} lies inside ±{self.margin:g} (equivalence at α = {self.alpha:g}); {p}"
        if self.margin is None:
            margin = f"no --margin given (a margin > {self.margin_for_noise:.4f} would call it noise)"
        else:
            margin = f"not inside ±{self.margin:g} (noise needs a margin > {self.margin_for_noise:.4f})"
        return f"{p} ≥ α = {self.alpha:g}; {ci}: {margin}"

    @property
    def agrees(self) -> bool:
        """Whether the 3-SD rule and the decision say the same (the 3-SD 'noise' claims what only 'noise' may)."""
        return self.verdict == self.decision and self.direction == self.decision_direction

    @property
    def disagreement(self) -> str | None:
        """The two verdicts' difference in plain words, or None when they agree."""
        if self.agrees:
            return None
        three = f"3-SD rule: {self.verdict}" + (f" ({self.direction})" if self.direction else "")
        decided = f"decision: {self.decision}" + (f" ({self.decision_direction})" if self.decision_direction else "")
        return f"{three}, but {decided}, because {self.decision_reason}"

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
            if result is not None and result.p_value is not None:
                return result
        return None

    def to_json(self) -> dict:
        primary = self.primary
        return {
            "intervention": self.intervention,
            "decision": self.decision,
            "decision_direction": self.decision_direction,
            "decision_reason": self.decision_reason,
            "agrees_with_3sd_rule": self.agrees,
            "disagreement": self.disagreement,
            "ci": _pair(self.ci),
            "ci_level": self.ci_level,
            "margin": self.margin,
            "margin_for_noise": self.margin_for_noise,
            "e_value": self.e_value,
            "anytime_signal": self.anytime_signal,
            "n_runs": len(self.runs),
            "runs": list(self.runs),
            "init_seeds": list(self.init_seeds),
            "streams": list(self.streams),
            "test_loss": self.test_loss,
            "same_init": self.same_init,
            "same_init_source": self.same_init_source,
            "floor": self.floor.name if self.floor else None,
            "floor_kind": self.floor_kind,
            "floor_reason": self.floor_reason,
            "verdict": self.verdict,
            "direction": self.direction,
            "reference": self.reference,
            "delta": self.delta,
            "z": self.z,
            "sd": self.sd,
            "df": self.df,
            "n_compared": self.n_compared,
            "band_3sd": _pair(self.band_3sd),
            "prediction_interval_997": _pair(self.prediction_interval_997),
            "false_positive_rate_3sd": self.false_positive_rate_3sd,
            "p_prediction": self.prediction.p_value if self.prediction else None,
            "p_welch": self.welch.p_value if self.welch else None,
            "p_paired": self.paired.p_value if self.paired else None,
            "n_pairs": self.n_pairs,
            "delta_matched": self.delta_matched,
            "test": primary.test if primary else None,
            "p_value": primary.p_value if primary else None,
            "p_holm": self.p_holm,
            "tests": {t.test: t.to_json() for t in (self.prediction, self.welch, self.paired) if t is not None},
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Analysis:
    """Everything `classify` prints and `report` renders, computed once from one CSV."""

    results: Results
    floors: tuple[Floor, ...]
    verdicts: tuple[Verdict, ...]
    components: Components | None
    components_note: str | None
    factorial: Factorial | None
    notes: tuple[str, ...]
    pooled_train: PooledSD | None = None
    alpha: float = ALPHA
    margin: float | None = None

    @property
    def reproducibility_failures(self) -> list:
        return [r for r in self.results.repeats if not r.identical]

    @property
    def failure_notes(self) -> list[str]:
        """The notes every rendering shows first, as a banner, and not again among the others."""
        return [n for n in self.notes if n.startswith(REPRODUCIBILITY_FAILURE)]

    def floor(self, name: str) -> Floor:
        return next(f for f in self.floors if f.name == name)

    def to_json(self) -> dict:
        r = self.results
        return _finite(
            {
                "schema": SCHEMA,
                "source": r.source,
                "sha256": r.sha256,
                "n_rows_used": len(r.runs),
                "alpha": self.alpha,
                "margin": self.margin,
                "notes": list(self.notes),
                "left_out": [asdict(x) for x in r.left_out],
                "repeats": [asdict(x) | {"identical": x.identical} for x in r.repeats],
                "floors": [f.to_json() for f in self.floors],
                "pooled_training_loop_sd": self.pooled_train.to_json() if self.pooled_train else None,
                "interventions": [v.to_json() for v in self.verdicts],
                "variance_components": self.components.to_json() if self.components else None,
                "variance_components_note": self.components_note,
                "factorial": self.factorial.to_json() if self.factorial else None,
            }
        )


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
    components, components_note = variance_components(cells)
    return Analysis(
        results=results,
        floors=floors,
        verdicts=tuple(verdicts),
        components=components,
        components_note=components_note,
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


def _same_init_of_cell(cell, digests: dict[int, set[str]]) -> tuple[bool | None, str, str | None]:
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
            conflict = f"run {cell.runs[0]}: same_init=false, yet its init_digest equals the baseline's; using the column"
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


def _same_init(group: list, digests) -> tuple[bool | None, str, list[str]]:
    found = [_same_init_of_cell(cell, digests) for cell in group]
    notes = [conflict for _, _, conflict in found if conflict]
    values = {value for value, _, _ in found}
    sources = sorted({source for _, source, _ in found})
    if values == {True} or values == {False}:
        return values.pop(), " and ".join(sources), notes
    if None in values:
        return None, "unknown", notes
    notes.append("its runs disagree on same_init (some share the baseline's initial weights, some do not)")
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
        lacking = "has no spread" if judged.floor else "is missing"
        notes = notes + [f"the training-loop floor {lacking}: judged against the init floor instead (conservative)"]
        return _against_init_floor(verdict, group, ctx, notes)
    return _against_init_floor(verdict, group, ctx, notes)


def _unchanged_note(group: list, ctx: _Baseline) -> list[str]:
    """Runs whose final weights are bit-identical to the baseline's at the same seeds changed nothing at all."""
    comparable = [c for c in group if c.final_digest and (int(c.init_seed), c.stream) in ctx.final_by_cell]
    same = [c for c in comparable if ctx.final_by_cell[(int(c.init_seed), c.stream)] == c.final_digest]
    if not same:
        return []
    return [
        f"final weights bit-identical to the baseline's at the same seeds in {len(same)} of {len(comparable)} "
        "comparable run(s): the intervention did not change training there at all (e.g. gradients never "
        "reached the clipping norm)"
    ]


def _repeat_note(repeat) -> str:
    where = f"init_seed={repeat.init_seed}, {repeat.stream}"
    if repeat.identical:
        return f"runs {', '.join(repeat.runs)} ({where}) are repeats with identical loss: counted once"
    losses = ", ".join(f"{v:.6g}" for v in repeat.test_losses)
    return (
        f"{REPRODUCIBILITY_FAILURE}: runs {', '.join(repeat.runs)} ({where}) repeat the same configuration "
        f"but gave different losses ({losses}); their mean is used"
    )


NEEDS = {  # kind -> (floor name, what its runs share and vary, what "share" counts)
    TRAIN: ("training-loop", "the same init seed and different training streams", "an init seed"),
    INIT: ("init", "different init seeds and the same train_seed setting", "a setting"),
}


def _no_floor(verdict: Verdict, why: str, notes: list[str], kind: str, most: int) -> Verdict:
    name, needs, share = NEEDS[kind]
    missing = f"no {name} floor (needs >= 2 baseline runs with {needs}; at most {most} baseline run(s) share {share})"
    notes = tuple(notes + [f"undecided: {missing}"])
    return replace(verdict, floor_reason=f"{why}, so the {name} floor applies", notes=notes)


def _against_train_floor(verdict: Verdict, group, ctx: _Baseline, notes) -> Verdict:
    why = f"initial weights are the baseline's (same_init from the {verdict.same_init_source})"
    train_floors = ctx.train_floors
    seeds = verdict.init_seeds
    without = [s for s in seeds if s not in train_floors]
    own = largest(train_floors[s] for s in seeds if s in train_floors)
    floor = own or largest(train_floors.values())
    if floor is None:
        return _no_floor(verdict, why, notes, TRAIN, ctx.most_per_init)
    if not without:
        reason = f"{why}: training-loop floor at its init seed"
    else:
        reason = (
            f"{why}: no training-loop floor at init seed(s) {_seeds(without)}; training-loop SD "
            f"{'from' if own else 'borrowed from'} init_seed={floor.init_seed} (assumed equal at every init seed)"
        )
    if len(seeds) > 1:
        reason += "; each run compared with the baseline at its own init seed"
    pooled = ctx.pooled
    if pooled and pooled.sd > 0:
        reason += f"; SD pooled over the {len(pooled.floors)} training-loop floors (df = {pooled.df})"
        sd, df = pooled.sd, pooled.df
    else:
        sd, df = floor.sd, floor.df
    verdict = replace(verdict, floor=floor, floor_reason=reason, sd=sd, df=df)
    missing = sorted({int(c.init_seed) for c in group if int(c.init_seed) not in ctx.by_init})
    if missing:
        notes = notes + [f"runs at init seed(s) {_seeds(missing)} left out: no baseline run at that init seed"]
    used = [c for c in group if int(c.init_seed) in ctx.by_init]
    if not used:
        return replace(verdict, notes=tuple(notes + ["undecided: no baseline run at its init seed(s)"]))
    return _compare(verdict, used, [int(c.init_seed) for c in used], ctx.by_init, ctx, notes)


def _against_init_floor(verdict: Verdict, group, ctx: _Baseline, notes) -> Verdict:
    if verdict.same_init is False:
        why = f"initial weights differ from the baseline's (same_init from the {verdict.same_init_source})"
    elif verdict.same_init:
        why = (f"initial weights are the baseline's (same_init from the {verdict.same_init_source}), "
               "but no training-loop floor with spread exists")
    else:
        why = "same_init unknown (no same_init or init_digest for its runs): the init floor is the conservative choice"
    init_floors = {f.stream: f for f in ctx.floors if f.kind == INIT}
    streams = verdict.streams
    own = init_floors.get(streams[0]) if len(streams) == 1 else None
    floor = own or largest(init_floors.values(), prefer=lambda f: f.stream == NO_RESEED)
    if floor is None:
        return _no_floor(verdict, why, notes, INIT, ctx.most_per_stream)
    if own:
        reason = f"{why}; init floor with the same training-stream setting ({streams[0]})"
    else:
        reason = (
            f"{why}; no init floor with its training-stream setting ({', '.join(streams)}), "
            f"using the largest init floor ({floor.stream})"
        )
    verdict = replace(verdict, floor=floor, floor_reason=reason)
    seeds = _per_init_seed(group)
    if len(seeds) < len(group):
        notes = notes + [
            f"its {len(group)} runs are averaged per init seed into {len(seeds)} value(s): runs sharing an init seed "
            "differ only by the training loop, so each init seed is one draw from the init floor"
        ]
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
        notes = notes + [
            f"undecided: floor {floor.name} has zero spread (all {floor.n} runs gave {floor.mean:.6g}); "
            "the seeds it varies do not change the result, so it cannot separate signal from noise"
        ]
    else:
        outcome = SIGNAL if abs(delta) > SDS * sd else NOISE
    welch = paired = None
    own_floor = floor.kind == INIT or all(int(c.init_seed) == floor.init_seed for c in used)
    if k >= 2:
        if own_floor:
            welch = tests.welch(xs, list(floor.losses))
        else:
            notes = notes + ["no Welch test: its runs span init seeds and the floor holds one (see the paired test)"]
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
    tested = [i for i, v in enumerate(verdicts) if v.primary is not None]
    adjusted = tests.holm([verdicts[i].primary.p_value for i in tested])
    out = list(verdicts)
    for i, p in zip(tested, adjusted):
        out[i] = replace(out[i], p_holm=p)
    return out


def _notes(results: Results, floors, verdicts, margin: float | None, pooled: PooledSD | None) -> list[str]:
    notes = []
    failures = [r for r in results.repeats if not r.identical]
    if failures:
        notes.append(
            f"{REPRODUCIBILITY_FAILURE}: {len(failures)} set(s) of repeated runs gave different losses "
            "(same intervention, init seed and training stream); the runs are not deterministic"
        )
    confirmed = sum(1 for r in results.repeats if r.identical)
    if confirmed:
        notes.append(f"{confirmed} set(s) of repeated runs gave identical losses: repeatability confirmed, counted once")
    if any(v.same_init_source == "unknown" for v in verdicts):
        notes.append(
            "same_init unknown for some interventions (no same_init or init_digest): they are judged against "
            "the init floor, the conservative choice; add same_init or init_digest to use the training-loop floor"
        )
    for floor in floors:
        if floor.constant:
            notes.append(
                f"floor {floor.name} has zero spread: its {floor.n} runs have identical losses, so varying "
                "those seeds changed nothing; verdicts against it are undecided"
            )
    if results.left_out:
        notes.append(f"{len(results.left_out)} row(s) left out because their status is not 'done'")
    if pooled is not None:
        notes.append(
            f"training-loop SD pooled over the {len(pooled.floors)} training-loop floors: {pooled.sd:.5f} with "
            f"{pooled.df} degrees of freedom (the SD is assumed the same at every init seed)"
        )
    if margin is None and verdicts:
        notes.append(
            "no equivalence margin given (--margin, nats/token): no intervention can be decided noise; "
            "each undecided one shows the smallest margin that would have called it noise"
        )
    return notes


def _seeds(seeds) -> str:
    return ", ".join(str(s) for s in seeds)


def _pair(pair):
    return None if pair is None else [pair[0], pair[1]]


def _finite(obj):
    """JSON has no NaN/inf: replace them by null, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    return obj
