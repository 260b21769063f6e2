"""Do the improvements add up? Main effects and pairwise interactions of combinations.

When the results hold combinations (interventions joined by '+', e.g.
`grad-clip+no-dropout`), fit by OLS (numpy least squares):
    test_loss ~ 1 + C(init_seed) + sum_f x_f + sum_{f<g together in a combination} x_f x_g
on the baseline runs and the runs of every intervention made only of the
factors that appear in combinations. x_f = 1 when factor f is on. The init
seed enters as a block, so runs at different init seeds are compared within
their seed. An interaction near 0 means the effects add up; > 0 means the
combination's loss is higher than the sum of the single effects predicts.

An intervention that changes the initial weights (same_init false) draws new
initial weights at every init seed, so its runs carry init-seed variance the
block does not remove. Then the SEs are those of OLS under the variance the
variance components give (one mixed model over every run of the file,
stats/components.py), V = var_train I + var_init Z Z' (Z: the runs' init
draws: one per init seed for the baseline and same-init runs, one per
init-changing intervention and init seed), i.e. (X'X)^-1 X'VX (X'X)^-1: an
interaction of two init-changing interventions carries init variance, not
only the training loop's. Their t-tests take Satterthwaite's degrees of
freedom from the components' REML covariance (the SE is itself estimated).
Without variance components such terms get no SE.

Terms the design cannot identify (e.g. a combination without runs of each of
its parts alone) are dropped and listed with the reason.

A factorial sweep (3 to 7 factors whose combinations form a regular two-level
design, e.g. what `noisefloor design` plans; stats/design.py recognises it
from the rows) is fitted in the ±1 coding instead, on the runs at the (init
seed, stream) cells every row has (the design's replicates):
    test_loss ~ 1 + C(init_seed) + sum over alias chains of z_chain
with one column per chain of aliased main effects / two-factor interactions
(three-factor and higher interactions assumed 0). An effect is the mean loss
with the factor on minus off, 2x its coefficient; an interaction effect is
half the departure from additivity ((y_ab - y_a - y_b + y_0) / 2 over the
other factors). Balanced columns are orthogonal, so the effects have equal
SEs and a half-normal (Daniel) plot compares them. The residual variance
gives the SEs (the loop noise between runs sharing an init seed and stream,
the comparison the design makes); a saturated design (no residual df) takes
the training-loop variance of the variance components instead. In a balanced
design the block is orthogonal to every effect, so a random init-seed block
(the mixed model) gives the same estimates and SEs.

A factor is init-changing when every run with it on starts from other
initial weights (same_init false). At one init seed, the runs with the same
init-changing factors on share one new draw (the other factors leave the init
alone): a split-plot, the draws the whole plots. In every other effect a draw
cancels within its seed; an effect made of init-changing factors alone carries
the draws, so it is judged by the spread of its per-seed estimates (t-test,
S - 1 df over S init seeds; no test at one seed), and one column per
init-changing combination and further seed keeps the draws out of the
residual the other effects use.

Every tested term gets the decision of single interventions: signal when its
Holm-adjusted p-value (over the terms) is below alpha; noise when its
(1 - 2 alpha) interval lies inside ±margin; otherwise undecided.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from itertools import combinations

import numpy as np
import pandas as pd

from noisefloor.stats.components import Components
from noisefloor.stats.design import Design, recognise
from noisefloor.stats.table import BASELINE
from noisefloor.stats.tests import ALPHA, SIGNAL, TestResult, decide, holm_where_tested, t_test

SEP = "+"


class Reading(Enum):
    """What a term says, for report/words.py to word (with the term's p-value and whether it changes the init)."""

    LOWERS_LOSS = "lowers"  # main effects
    RAISES_LOSS = "raises"
    ADDS_UP = "adds-up"  # interactions not decided signal
    HIGHER_THAN_ADDED = "higher"  # the combination's loss is above the sum of the single effects
    LOWER_THAN_ADDED = "lower"
    NO_INIT_TEST = "no-init-test"  # an init-changing interaction without runs at >= 2 init seeds
    NO_RESIDUAL_DF = "no-residual-df"


class NotEstimable(Enum):
    NOT_IDENTIFIABLE = "not-identifiable"  # a combination without runs of each of its parts alone and together


@dataclass(frozen=True)
class Term:
    term: str
    kind: str  # "main" or "interaction"
    estimate: float
    se: float | None
    p_value: float | None
    changes_init: bool = False  # a term with an intervention whose runs start from other initial weights (design
    # fit: a term made of such interventions alone, the only ones whose estimate carries init-seed variance)
    df: int | None = None  # degrees of freedom of the SE
    aliases: tuple[str, ...] = ()  # effects aliased with this one by the design (its estimate is their sum)
    p_holm: float | None = None  # over the file's factorial terms
    alpha: float = ALPHA
    margin: float | None = None

    @property
    def test(self) -> TestResult | None:
        return None if self.p_value is None else t_test("factorial", self.estimate, self.se, self.df)

    @property
    def ci95(self) -> tuple[float, float] | None:
        return None if self.test is None else self.test.confidence_interval(0.95)

    @property
    def ci(self) -> tuple[float, float] | None:
        """(1 - 2 alpha) interval: inside ±margin is equivalence at alpha (TOST), as for single interventions."""
        return None if self.test is None else self.test.confidence_interval(1.0 - 2.0 * self.alpha)

    @property
    def decision(self) -> str:
        return decide(self.p_holm, self.ci, self.alpha, self.margin)

    @property
    def reading(self) -> Reading:
        if self.kind == "main":
            return Reading.LOWERS_LOSS if self.estimate < 0 else Reading.RAISES_LOSS
        if self.p_value is None:
            return Reading.NO_INIT_TEST if self.changes_init else Reading.NO_RESIDUAL_DF
        if self.decision != SIGNAL:  # the reading never claims more than the decision (Holm, alpha)
            return Reading.ADDS_UP
        return Reading.HIGHER_THAN_ADDED if self.estimate > 0 else Reading.LOWER_THAN_ADDED

    def to_json(self, reading: str) -> dict:
        """The --json object; `reading` is the reading in words (report/words.py)."""
        return {
            "term": self.term,
            "kind": self.kind,
            "estimate": self.estimate,
            "se": self.se,
            "p_value": self.p_value,
            "ci95": list(self.ci95) if self.ci95 else None,
            "df": self.df,
            "aliases": list(self.aliases),
            "changes_init": self.changes_init,
            "p_holm": self.p_holm,
            "decision": self.decision,
            "ci": list(self.ci) if self.ci else None,
            "ci_level": 1.0 - 2.0 * self.alpha,
            "reading": reading,
        }


@dataclass(frozen=True)
class Factorial:
    factors: tuple[str, ...]
    n_runs: int
    df_resid: int
    blocks: tuple[int, ...]
    terms: tuple[Term, ...]
    not_estimable: tuple[tuple[str, NotEstimable], ...]  # (term, why)
    init_variance: bool = False  # SEs from the variance components (init-changing interventions present)
    design: Design | None = None  # a recognised regular design: the ±1 fit of alias chains
    runs_left_out: int = 0  # runs outside the (init seed, stream) cells every design row has
    init_changing: tuple[str, ...] = ()  # factors whose runs start from other initial weights (design fit)

    def to_json(self, model: str, readings: list[str], reasons: list[str]) -> dict:
        """The --json object; the model, each term's reading and each not-estimable term's reason in words
        (report/words.py), in the order of terms and not_estimable."""
        d = self.design
        return {
            "model": model,
            "design": None if d is None else {
                "runs": d.runs, "full_factorial_runs": d.full_runs, "resolution": d.resolution_name,
                "defining_relation": d.defining_relation, "runs_left_out": self.runs_left_out,
                "init_changing": list(self.init_changing),
            },
            "factors": list(self.factors),
            "n_runs": self.n_runs,
            "df_resid": self.df_resid,
            "init_seed_blocks": list(self.blocks),
            "terms": [t.to_json(reading) for t, reading in zip(self.terms, readings)],
            "not_estimable": [{"term": t, "reason": r} for (t, _), r in zip(self.not_estimable, reasons)],
        }


def parts(intervention: str) -> tuple[str, ...]:
    return () if intervention == BASELINE else tuple(intervention.split(SEP))


def factorial_effects(cells: pd.DataFrame, components: Components | None = None, alpha: float = ALPHA,
                      margin: float | None = None) -> Factorial | None:
    """Main effects and interactions, or None when the results hold no combination."""

    combos = [name for name in dict.fromkeys(cells["intervention"]) if SEP in name]
    if not combos:
        return None
    factors = tuple(dict.fromkeys(p for name in combos for p in parts(name)))
    fitted = _design_effects(cells, factors, components) or _combination_effects(cells, factors, components, combos)
    adjusted = holm_where_tested([t.p_value for t in fitted.terms])
    terms = tuple(replace(t, alpha=alpha, margin=margin, p_holm=p) for t, p in zip(fitted.terms, adjusted))
    return replace(fitted, terms=terms)


def _combination_effects(cells: pd.DataFrame, factors: tuple[str, ...], components: Components | None,
                         combos: list[str]) -> Factorial:
    """The 0/1 fit of combinations and their parts (any study that is not a regular design)."""
    ordered = [sorted(parts(name), key=factors.index) for name in combos]
    pairs = list(dict.fromkeys(pair for names in ordered for pair in combinations(names, 2)))
    used = cells[cells["intervention"].map(lambda name: set(parts(name)) <= set(factors))]
    on = {f: used["intervention"].map(lambda name, f=f: float(f in parts(name))).to_numpy() for f in factors}

    blocks = tuple(sorted(int(s) for s in used["init_seed"].unique()))
    candidates: list[tuple[str, str, np.ndarray]] = [("intercept", "intercept", np.ones(len(used)))]
    candidates += [(f"init_seed={b}", "block", (used["init_seed"] == b).to_numpy(float)) for b in blocks[1:]]
    candidates += [(f, "main", on[f]) for f in factors]
    candidates += [(f"{f} x {g}", "interaction", on[f] * on[g]) for f, g in pairs]

    kept, dropped, columns = [], [], []
    for name, kind, column in candidates:
        trial = np.column_stack(columns + [column])
        if np.linalg.matrix_rank(trial) > len(columns):
            kept.append((name, kind))
            columns.append(column)
        elif kind in ("main", "interaction"):
            dropped.append((name, NotEstimable.NOT_IDENTIFIABLE))

    init_changers = {f for f in factors if (used.loc[used["intervention"] == f, "same_init"] == False).any()}  # noqa: E712
    y = used["test_loss"].astype(float).to_numpy()
    x = np.column_stack(columns)
    params, df_resid, se = _ols(y, x)
    new_init = used["intervention"].map(lambda name: bool(set(parts(name)) & init_changers)).to_numpy()
    dfs = np.full(len(se), df_resid)
    if new_init.any():
        se, dfs = _se_with_init_variance(x, used, new_init, components, df_resid)
    terms = []
    for i, (name, kind) in enumerate(kept):
        if kind not in ("main", "interaction"):
            continue
        estimate = float(params[i])
        changes_init = bool(set(name.split(" x ")) & init_changers)
        if dfs[i] > 0 and np.isfinite(se[i]) and se[i] > 0:
            p_value = t_test("factorial", estimate, float(se[i]), int(dfs[i])).pvalue
            terms.append(Term(name, kind, estimate, float(se[i]), p_value, changes_init, int(dfs[i])))
        else:
            terms.append(Term(name, kind, estimate, None, None, changes_init))
    return Factorial(factors, len(used), df_resid, blocks, tuple(terms), tuple(dropped), bool(new_init.any()))


def _design_effects(cells: pd.DataFrame, factors: tuple[str, ...], components: Components | None) -> Factorial | None:
    """The ±1 fit of a recognised regular design of 3 to 7 factors, or None when the rows are not one."""
    if len(factors) < 3:  # a 2x2 keeps the 0/1 fit: its interaction is the plain departure from additivity
        return None
    used = cells[cells["intervention"].map(lambda name: set(parts(name)) <= set(factors))]
    factors = _written_order(list(dict.fromkeys(used["intervention"])), factors)
    on = np.column_stack([used["intervention"].map(lambda name, f=f: f in parts(name)).to_numpy(int) for f in factors])
    keep = _replicates(on, list(zip(used["init_seed"].astype(int), used["stream"])))
    design = recognise(factors, on[keep]) if keep.any() else None
    if design is None:
        return None
    used, on = used[keep], on[keep]
    init_changers = _init_changing_factors(used, on, factors)
    blocks = tuple(sorted(int(s) for s in used["init_seed"].unique()))
    chains = design.alias_chains()
    signs = 2 * on - 1
    seeds = used["init_seed"].astype(int).to_numpy()
    changed = [frozenset(f for f, x in zip(factors, row) if x and f in init_changers) for row in on]
    columns = [np.ones(len(used))] + [(seeds == b).astype(float) for b in blocks[1:]]
    effects = [np.prod(signs[:, sorted(head)], axis=1).astype(float) for head, _ in chains]
    # Each init-changing combination draws new weights at each init seed: columns for those draws (within
    # seeds) keep their scatter out of the residual, which stays the loop noise; they are orthogonal to the
    # effects, and the draws' mean stays in the effects made of init-changing factors (their SE says so).
    for combination in dict.fromkeys(c for c in changed if c):
        for b in blocks[1:]:
            # seed b against the first seed: orthogonal to every effect column in a balanced design
            draw = np.array([c == combination for c in changed]) * ((seeds == b).astype(float) - (seeds == blocks[0]))
            trial = np.column_stack(columns + [draw] + effects)
            if np.linalg.matrix_rank(trial) == trial.shape[1]:
                columns.append(draw)
    columns += effects
    x = np.column_stack(columns)
    y = used["test_loss"].astype(float).to_numpy()
    params, df_resid, se = _ols(y, x)
    df = df_resid
    if df_resid <= 0 and components is not None and components.df_train:  # saturated: the training-loop variance of the components
        se = np.sqrt(np.diag(np.linalg.inv(x.T @ x)) * components.var_train)
        df = components.df_train  # its own df: runs within init draws once the interventions' means are fitted
    first = len(columns) - len(chains)
    terms = []
    for (head, aliased), column, estimate, error in zip(chains, effects, 2.0 * params[first:], 2.0 * se[first:]):
        name, kind, names = design.name(head), "main" if len(head) == 1 else "interaction", tuple(map(design.name, aliased))
        # Runs with the same init-changing factors on at one init seed start from the same new weights (the other
        # factors leave the init alone): one draw per init seed. In an effect made of init-changing factors alone
        # the draws do not cancel: it is judged by its spread across init seeds (whole plots), S - 1 df.
        changes_init = any(all(factors[i] in init_changers for i in e) for e in (head, *aliased))
        term_df = df
        if changes_init:
            per_seed = np.array([2.0 * np.mean(column[seeds == b] * y[seeds == b]) for b in blocks])
            term_df = len(blocks) - 1
            error = per_seed.std(ddof=1) / np.sqrt(len(blocks)) if term_df > 0 else np.nan
        if term_df > 0 and np.isfinite(error) and error > 0:
            p_value = t_test("factorial", float(estimate), float(error), term_df).pvalue
            terms.append(Term(name, kind, float(estimate), float(error), p_value, changes_init, term_df, names))
        else:
            terms.append(Term(name, kind, float(estimate), None, None, changes_init, None, names))
    return Factorial(factors, len(used), df_resid, blocks, tuple(terms), (), False, design, int((~keep).sum()),
                     tuple(f for f in factors if f in init_changers))


def _replicates(on: np.ndarray, keys: list[tuple]) -> np.ndarray:
    """Runs at the (init seed, stream) cells every distinct row of `on` has: the design's replicates (floor runs
    of the baseline at other streams fall outside)."""
    cells_of: dict[tuple, set] = {}
    for row, key in zip(map(tuple, on), keys):
        cells_of.setdefault(row, set()).add(key)
    support = set.intersection(*cells_of.values())
    return np.array([key in support for key in keys])


def half_normal_scores(n: int) -> np.ndarray:
    """Expected positions of n ordered |effects| under no effect: the half-normal quantiles
    Phi^-1(0.5 + 0.5 (i - 0.5) / n), i = 1..n (Daniel 1959)."""
    from scipy.special import ndtri  # scipy.special only: scipy.stats costs the report ~1 s to import

    return ndtri(0.5 + 0.5 * (np.arange(1, n + 1) - 0.5) / n)


def lenth_pse(effects) -> float:
    """Lenth's (1989) pseudo standard error of unreplicated effects: 1.5 x the median |effect| of those below
    2.5 x (1.5 x median |effect|): the slope a half-normal plot's null effects follow."""
    size = np.abs(np.asarray(effects, float))
    s0 = 1.5 * np.median(size)
    return float(1.5 * np.median(size[size < 2.5 * s0])) if (size < 2.5 * s0).any() else float(s0)


def _written_order(names: list[str], factors: tuple[str, ...]) -> tuple[str, ...]:
    """The factors in the order the combinations write them (`noisefloor design` writes A+B+..., so the letters
    match the plan's), ties in order of appearance."""
    before = {f: set() for f in factors}  # factor -> factors written before it
    for name in names:
        named = parts(name)
        for i, f in enumerate(named):
            before[f].update(named[:i])
    order: list[str] = []
    while len(order) < len(factors):
        ready = [f for f in factors if f not in order and before[f] <= set(order)]
        order.append(ready[0] if ready else next(f for f in factors if f not in order))  # a cycle: appearance order
    return tuple(order)


def _init_changing_factors(used: pd.DataFrame, on: np.ndarray, factors: tuple[str, ...]) -> set[str]:
    """Factors every run of which (with it on) starts from other initial weights than the baseline's."""
    same = used["same_init"].to_numpy(object)
    out = set()
    for j, f in enumerate(factors):
        known = [v for v in same[on[:, j] == 1] if v is not None and not pd.isna(v)]
        if known and not any(known):
            out.add(f)
    return out


def _ols(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """OLS of full-rank x: (coefficients, residual df, SEs = sqrt(diag(s² (X'X)^-1))), NaN SEs without residual df.
    In numpy (the tests check it against hand calculations): importing statsmodels' OLS costs classify ~1 s."""
    params, *_ = np.linalg.lstsq(x, y, rcond=None)
    df_resid = len(y) - x.shape[1]
    if df_resid <= 0:
        return params, df_resid, np.full(x.shape[1], np.nan)
    s2 = float(((y - x @ params) ** 2).sum()) / df_resid
    return params, df_resid, np.sqrt(np.clip(np.diag(np.linalg.inv(x.T @ x)) * s2, 0.0, None))


def _se_with_init_variance(x: np.ndarray, used: pd.DataFrame, new_init: np.ndarray, components: Components | None,
                           df_resid: int) -> tuple[np.ndarray, np.ndarray]:
    """SEs of the OLS coefficients when runs of init-changing interventions carry init-seed variance:
    sqrt(diag((X'X)^-1 X'VX (X'X)^-1)), V = var_train I + var_init Z Z' (Z: the runs' init draws, as in the
    mixed model of stats/components.py). NaN without components.

    The SE² is a_t var_train + a_i var_init with estimated components: its degrees of freedom are
    Satterthwaite's, 2 SE⁴ / Var(SE²) from the components' REML covariance (at most the residual df; the
    residual df alone when the fit has no covariance). Returns (SEs, dfs)."""
    if components is None:
        return np.full(x.shape[1], np.nan), np.full(x.shape[1], df_resid)
    # one column per init draw, as in the mixed model: the init seed's own weights for the baseline and same-init
    # runs (whose blocks absorb them), a new draw per (intervention, init seed) for init-changing ones; the
    # baseline's draws count too, since an init-changing run is compared with its block's baseline runs
    owner = np.where(new_init, used["intervention"].to_numpy(object), "")
    draws = pd.factorize(pd.Series(list(zip(owner, used["init_seed"].astype(int)))))[0]
    z = np.zeros((len(used), draws.max() + 1))
    z[np.arange(len(used)), draws] = 1.0
    bread = np.linalg.pinv(x.T @ x)
    zx = z.T @ x @ bread
    from_init, from_train = (zx * zx).sum(axis=0), np.diag(bread)  # diag(B X'ZZ'X B), diag(B X'X B)
    variance = np.clip(components.var_init * from_init + components.var_train * from_train, 0.0, None)
    dfs = np.full(x.shape[1], df_resid)
    if components.covariance is not None:
        weights = np.column_stack([from_init, from_train])
        spread = np.einsum("ik,kl,il->i", weights, np.array(components.covariance), weights)
        with np.errstate(divide="ignore", invalid="ignore"):
            satterthwaite = np.floor(2.0 * variance**2 / spread)
        dfs = np.where(np.isfinite(satterthwaite) & (spread > 0), np.clip(satterthwaite, 1, df_resid), df_resid)
    return np.sqrt(variance), dfs.astype(int)

