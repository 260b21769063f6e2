"""The analysis in words: every sentence `classify`, `report` and `--json` say about an analysis.

stats/ returns numbers and typed flags (a `NoteKind` with its facts, a `FloorReason`, the variance components'
`Fit` and `ComponentsMissing`, a factorial term's `Reading`); this module is the one place that turns them into
sentences, so the terminal, Markdown, HTML and --json say the same.
"""

from __future__ import annotations

from dataclasses import asdict

from noisefloor.stats.classify import (
    NOISE,
    SIGNAL,
    SCHEMA,
    UNDECIDED,
    Analysis,
    FloorChoice,
    FloorReason,
    Note,
    NoteKind,
    Verdict,
    finite,
)
from noisefloor.stats.components import MAX_REML_RUNS, REML_METHODS, Components, ComponentsMissing, Fit
from noisefloor.stats.factorial import Factorial, NotEstimable, Reading, Term
from noisefloor.stats.floors import INIT, TRAIN
from noisefloor.stats.tests import TestResult, Undefined

REPRODUCIBILITY_FAILURE = "REPRODUCIBILITY FAILURE"

NEEDS = {  # floor kind -> (floor name, what its runs share and vary, what "share" counts)
    TRAIN: ("training-loop", "the same init seed and different training streams", "an init seed"),
    INIT: ("init", "different init seeds and the same train_seed setting", "a setting"),
}


def _seeds(seeds) -> str:
    return ", ".join(str(s) for s in seeds)


def _where(n: Note) -> str:
    return f"runs {', '.join(n['runs'])} (init_seed={n['init_seed']}, {n['stream']})"


NOTES = {
    NoteKind.REPRODUCIBILITY_FAILURE: lambda n: (
        f"{REPRODUCIBILITY_FAILURE}: {_where(n)} repeat the same configuration but gave different losses "
        f"({', '.join(f'{v:.6g}' for v in n['losses'])}); their mean is used"),
    NoteKind.REPEATS_IDENTICAL: lambda n: f"{_where(n)} are repeats with identical loss: counted once",
    NoteKind.SAME_INIT_CONFLICT: lambda n: (
        f"run {n['run']}: same_init=false, yet its init_digest equals the baseline's; using the column"),
    NoteKind.SAME_INIT_MIXED: lambda n: (
        "its runs disagree on same_init (some share the baseline's initial weights, some do not)"),
    NoteKind.UNCHANGED_WEIGHTS: lambda n: (
        f"final weights bit-identical to the baseline's at the same seeds in {n['same']} of {n['comparable']} "
        "comparable run(s): the intervention did not change training there at all (e.g. gradients never "
        "reached the clipping norm)"),
    NoteKind.INIT_FLOOR_INSTEAD: lambda n: (
        f"the training-loop floor {'has no spread' if n['spread'] else 'is missing'}: judged against the init "
        "floor instead (conservative)"),
    NoteKind.NO_FLOOR: lambda n: (
        "undecided: no {0} floor (needs >= 2 baseline runs with {1}; at most {most} baseline run(s) share {2})"
        .format(*NEEDS[n["floor_kind"]], most=n["most"])),
    NoteKind.RUNS_LEFT_OUT: lambda n: (
        f"runs at init seed(s) {_seeds(n['seeds'])} left out: no baseline run at that init seed"),
    NoteKind.NO_BASELINE_AT_INIT_SEED: lambda n: "undecided: no baseline run at its init seed(s)",
    NoteKind.AVERAGED_PER_INIT_SEED: lambda n: (
        f"its {n['runs']} runs are averaged per init seed into {n['values']} value(s): runs sharing an init seed "
        "differ only by the training loop, so each init seed is one draw from the init floor"),
    NoteKind.ZERO_SPREAD: lambda n: (
        f"undecided: floor {n['floor']} has zero spread (all {n['n']} runs gave {n['mean']:.6g}); "
        "the seeds it varies do not change the result, so it cannot separate signal from noise"),
    NoteKind.NO_WELCH: lambda n: "no Welch test: its runs span init seeds and the floor holds one (see the paired test)",
    NoteKind.REPRODUCIBILITY_FAILURES: lambda n: (
        f"{REPRODUCIBILITY_FAILURE}: {n['count']} set(s) of repeated runs gave different losses "
        "(same intervention, init seed and training stream); the runs are not deterministic"),
    NoteKind.REPEATS_CONFIRMED: lambda n: (
        f"{n['count']} set(s) of repeated runs gave identical losses: repeatability confirmed, counted once"),
    NoteKind.SAME_INIT_UNKNOWN: lambda n: (
        "same_init unknown for some interventions (no same_init or init_digest): they are judged against "
        "the init floor, the conservative choice; add same_init or init_digest to use the training-loop floor"),
    NoteKind.FLOOR_ZERO_SPREAD: lambda n: (
        f"floor {n['floor']} has zero spread: its {n['n']} runs have identical losses, so varying "
        "those seeds changed nothing; verdicts against it are undecided"),
    NoteKind.ROWS_LEFT_OUT: lambda n: f"{n['count']} row(s) left out because their status is not 'done'",
    NoteKind.POOLED_TRAIN_SD: lambda n: (
        f"training-loop SD pooled over the {n['floors']} training-loop floors: {n['sd']:.5f} with "
        f"{n['df']} degrees of freedom (the SD is assumed the same at every init seed)"),
    NoteKind.NO_MARGIN: lambda n: (
        "no equivalence margin given (--margin, nats/token): no intervention can be decided noise; "
        "each undecided one shows the smallest margin that would have called it noise"),
}


def note(n: Note) -> str:
    return NOTES[n.kind](n)


def notes(items) -> list[str]:
    return [note(n) for n in items]


def analysis_notes(analysis: Analysis, failures: bool = True) -> list[str]:
    """The analysis-wide notes in words, including why variance components are missing; failures=False leaves
    out the failure notes (the banner every rendering shows first says them)."""
    out = notes(n for n in analysis.notes if failures or not n.failure)
    if analysis.components is None and analysis.components_missing:
        out.append(components_missing(analysis.components_missing))
    return out


def failure_notes(analysis: Analysis) -> list[str]:
    """The banner every rendering shows first (and not again among the notes)."""
    return notes(analysis.failure_notes)


def other_notes(analysis: Analysis) -> list[str]:
    return analysis_notes(analysis, failures=False)


def floor_reason(reason: FloorReason | None) -> str:
    if reason is None:
        return ""
    source = f"same_init from the {reason.same_init_source}"
    choice = reason.choice
    train = choice in (FloorChoice.OWN_TRAIN_FLOOR, FloorChoice.BORROWED_TRAIN_SD) or (
        choice is FloorChoice.NO_FLOOR and reason["floor_kind"] == TRAIN)
    if train:
        why = f"initial weights are the baseline's ({source})"
    elif reason.same_init is False:
        why = f"initial weights differ from the baseline's ({source})"
    elif reason.same_init:
        why = f"initial weights are the baseline's ({source}), but no training-loop floor with spread exists"
    else:
        why = "same_init unknown (no same_init or init_digest for its runs): the init floor is the conservative choice"
    if choice is FloorChoice.NO_FLOOR:
        return f"{why}, so the {NEEDS[reason['floor_kind']][0]} floor applies"
    if choice is FloorChoice.OWN_INIT_FLOOR:
        return f"{why}; init floor with the same training-stream setting ({reason['stream']})"
    if choice is FloorChoice.LARGEST_INIT_FLOOR:
        return (f"{why}; no init floor with its training-stream setting ({', '.join(reason['streams'])}), "
                f"using the largest init floor ({reason['floor_stream']})")
    if choice is FloorChoice.OWN_TRAIN_FLOOR:
        text = f"{why}: training-loop floor at its init seed"
    else:
        text = (f"{why}: no training-loop floor at init seed(s) {_seeds(reason['without'])}; training-loop SD "
                f"{'from' if reason['own'] else 'borrowed from'} init_seed={reason['from_seed']} "
                "(assumed equal at every init seed)")
    if reason.per_seed_reference:
        text += "; each run compared with the baseline at its own init seed"
    if reason.pooled is not None:
        text += f"; SD pooled over the {len(reason.pooled.floors)} training-loop floors (df = {reason.pooled.df})"
    return text


def decision_reason(v: Verdict) -> str:
    if v.primary is None or v.p_holm is None:
        return "no test could be made (no usable floor or no spread)"
    p = f"Holm p = {v.p_holm:.3g} ({v.primary.test} test)"
    if v.decision == SIGNAL:
        return f"{p} < α = {v.alpha:g}"
    if v.ci is None:
        return f"{p} ≥ α = {v.alpha:g}; no interval"
    ci = f"{100 * v.ci_level:g}% CI of Δ [{v.ci[0]:+.4f}, {v.ci[1]:+.4f}]"
    if v.decision == NOISE:
        return f"{ci} lies inside ±{v.margin:g} (equivalence at α = {v.alpha:g}); {p}"
    if v.margin is None:
        margin = f"no --margin given (a margin > {v.margin_for_noise:.4f} would call it noise)"
    else:
        margin = f"not inside ±{v.margin:g} (noise needs a margin > {v.margin_for_noise:.4f})"
    return f"{p} ≥ α = {v.alpha:g}; {ci}: {margin}"


def disagreement(v: Verdict) -> str | None:
    """The 3-SD rule's and the decision's difference in plain words, or None when they agree."""
    if v.agrees_with_3sd_rule:
        return None
    three = f"3-SD rule: {v.verdict}" + (f" ({v.direction})" if v.direction else "")
    decided = f"decision: {v.decision}" + (f" ({v.decision_direction})" if v.decision_direction else "")
    return f"{three}, but {decided}, because {decision_reason(v)}"


UNDEFINED = {
    Undefined.NO_SPREAD: "no spread in either sample: the t-test is undefined",
    Undefined.EQUAL_DIFFERENCES: "all paired differences are equal: the t-test is undefined",
    Undefined.FLOOR_WITHOUT_SPREAD: "the floor has no spread: the test is undefined",
}


def test_note(t: TestResult) -> str | None:
    return None if t.undefined is None else UNDEFINED[t.undefined]


def components_method(c: Components) -> str:
    """How the variance components were fitted, and over which runs."""
    over = (f"; over all {c.n_runs} runs, {c.n_interventions} intervention(s) as fixed effects"
            if c.n_interventions else f"; over the {c.n_runs} baseline runs")
    fit = c.fit
    if fit in (Fit.ANOVA_TOO_MANY_RUNS, Fit.ANOVA_NOT_CONVERGED):
        why = f"more than {MAX_REML_RUNS} runs" if fit is Fit.ANOVA_TOO_MANY_RUNS else "no REML fit converged"
        return (f"ANOVA, method of moments ({why}; the training stream's variance is "
                f"inside the training-loop component){over}")
    if fit is Fit.PROFILE_REML:
        return f"REML, random intercept per init draw (exact one-parameter profile likelihood){over}"
    return f"REML, statsmodels MixedLM (crossed random effects; best converged fit of {', '.join(REML_METHODS)}){over}"


def components_missing(m: ComponentsMissing) -> str:
    return (
        "variance components need runs at >= 2 init seeds and, at one init seed, >= 2 runs that share its "
        "initial weights beyond what the interventions' means take (baseline runs at >= 2 training streams, or "
        f"a same-init intervention beside the baseline at >= 2 init seeds); found {m.n_draws} init draw(s), "
        f"{m.df_within} degree(s) of freedom within them"
    )


NO_INIT_TEST = ("no test: an init-changing term needs runs at >= 2 init seeds (in a design; else the variance "
                "components: baseline runs at >= 2 init seeds and >= 2 streams)")
READINGS = {
    Reading.LOWERS_LOSS: lambda t: "lowers the loss",
    Reading.RAISES_LOSS: lambda t: "raises the loss",
    Reading.ADDS_UP: lambda t: f"consistent with the effects adding up (p = {t.p_value:.3g})",
    Reading.HIGHER_THAN_ADDED: lambda t: f"the combination's loss is higher than the effects added up (p = {t.p_value:.3g})",
    Reading.LOWER_THAN_ADDED: lambda t: f"the combination's loss is lower than the effects added up (p = {t.p_value:.3g})",
    Reading.NO_INIT_TEST: lambda t: NO_INIT_TEST,
    Reading.NO_RESIDUAL_DF: lambda t: "no test: no residual degrees of freedom (add runs with other seeds)",
}


def term_reading(t: Term) -> str:
    """A factorial term's reading, with what its init-changing runs mean for its SE."""
    text = READINGS[t.reading](t)
    if not t.changes_init:
        return text
    if t.kind == "main":
        return text + (" (its runs start from other initial weights: its SE includes init-seed variance)"
                       if t.se is not None else f"; {NO_INIT_TEST}")
    if t.p_value is not None:
        return text + " (init-changing: its runs start from other initial weights, its SE includes init-seed variance)"
    return text


NOT_ESTIMABLE = {
    NotEstimable.NOT_IDENTIFIABLE: (
        "not identifiable from these runs (needs runs of each part alone and together); the other terms assume it is 0"),
}


def factorial_model(f: Factorial) -> str:
    """The factorial model fitted, as a formula and where its SEs come from."""
    if f.design is not None:
        text = ("OLS in ±1 coding: test_loss ~ 1 + C(init_seed) + one column per alias chain of main effects and "
                "two-factor interactions; effect = mean loss on minus off")
    else:
        text = "OLS: test_loss ~ 1 + C(init_seed) + main effects + pairwise interactions"
    if f.init_variance:
        text += "; SEs from the variance components (init-seed variance of init-changing interventions)"
    if f.init_changing:
        text += (f"; effects of init-changing {', '.join(f.init_changing)} alone: t-test on their per-init-seed "
                 "estimates (the new initial weights are drawn once per init seed)")
    return text


def factorial_json(f: Factorial) -> dict:
    return f.to_json(factorial_model(f), [term_reading(t) for t in f.terms],
                     [NOT_ESTIMABLE[why] for _, why in f.not_estimable])


def outcome_reason(o) -> str:
    """Why `sweep --until-decided` stopped an intervention, or gives it another seed (o: sweep/rounds.Outcome)."""
    shown = "none yet" if o.e_value is None else f"{o.e_value:.3g}"
    if o.state == SIGNAL:
        return f"e-value {shown} >= {o.threshold:g} at {o.seeds} seeds"
    if o.state == NOISE:
        return f"at the maximum {o.seeds} seeds its {100 * (1 - 2 * o.alpha):g}% interval lies inside ±{o.margin:g}"
    if o.state != UNDECIDED:  # open: it gets another seed
        return f"e-value {shown} < {o.threshold:g} at {o.seeds} of {o.max_seeds} seeds"
    why = ("no margin given (--margin, or margin in noisefloor.toml), so noise cannot be decided" if o.margin is None
           else f"its interval is not inside ±{o.margin:g}")
    return f"e-value {shown} < {o.threshold:g} at the maximum {o.seeds} seeds; {why}"


def verdict_json(v: Verdict) -> dict:
    return v.to_json({"decision_reason": decision_reason(v), "disagreement": disagreement(v),
                      "floor_reason": floor_reason(v.floor_reason), "notes": notes(v.notes),
                      "tests": {name: t.to_json(test_note(t)) for name, t in v.tests_made.items()}})


def analysis_json(a: Analysis) -> dict:
    """`classify --json` (and a report's analysis.json)."""
    r = a.results
    return finite(
        {
            "schema": SCHEMA,
            "source": r.source,
            "sha256": r.sha256,
            "n_rows_used": len(r.runs),
            "alpha": a.alpha,
            "margin": a.margin,
            "notes": notes(a.notes),
            "left_out": [asdict(x) for x in r.left_out],
            "repeats": [asdict(x) | {"identical": x.identical} for x in r.repeats],
            "floors": [f.to_json() for f in a.floors],
            "pooled_training_loop_sd": a.pooled_train.to_json() if a.pooled_train else None,
            "interventions": [verdict_json(v) for v in a.verdicts],
            "variance_components": a.components.to_json(components_method(a.components)) if a.components else None,
            "variance_components_note": components_missing(a.components_missing) if a.components_missing else None,
            "factorial": factorial_json(a.factorial) if a.factorial else None,
        }
    )
