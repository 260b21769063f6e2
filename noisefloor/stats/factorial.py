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
variance components give, V = var_train I + var_init Z Z' (Z: one column per
init-changing intervention and init seed), i.e. (X'X)^-1 X'VX (X'X)^-1: an
interaction of two init-changing interventions carries init variance, not
only the training loop's. Without variance components such terms get no SE.

Terms the design cannot identify (e.g. a combination without runs of each of
its parts alone) are dropped and listed with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from noisefloor.stats.components import Components
from noisefloor.stats.table import BASELINE
from noisefloor.stats.tests import t_ppf, t_sf

SEP = "+"
NOT_IDENTIFIABLE = "not identifiable from these runs (needs runs of each part alone and together); the other terms assume it is 0"


@dataclass(frozen=True)
class Term:
    term: str
    kind: str  # "main" or "interaction"
    estimate: float
    se: float | None
    p_value: float | None
    ci95: tuple[float, float] | None
    changes_init: bool = False  # a term with an intervention whose runs start from other initial weights

    @property
    def reading(self) -> str:
        if self.kind == "main":
            text = "lowers the loss" if self.estimate < 0 else "raises the loss"
            if self.changes_init:
                text += " (its runs start from other initial weights: its SE includes init-seed variance)"
            return text
        if self.p_value is None and self.changes_init:
            return "no test: an init-changing term needs the variance components (baseline runs at >= 2 init seeds and >= 2 streams)"
        if self.p_value is None:
            return "no test: no residual degrees of freedom (add runs with other seeds)"
        if self.p_value >= 0.05:
            return f"consistent with the effects adding up (p = {self.p_value:.3g})"
        side = "higher" if self.estimate > 0 else "lower"
        return f"the combination's loss is {side} than the effects added up (p = {self.p_value:.3g})"

    def to_json(self) -> dict:
        return {
            "term": self.term,
            "kind": self.kind,
            "estimate": self.estimate,
            "se": self.se,
            "p_value": self.p_value,
            "ci95": list(self.ci95) if self.ci95 else None,
            "reading": self.reading,
        }


@dataclass(frozen=True)
class Factorial:
    factors: tuple[str, ...]
    n_runs: int
    df_resid: int
    blocks: tuple[int, ...]
    terms: tuple[Term, ...]
    not_estimable: tuple[tuple[str, str], ...]  # (term, reason)
    init_variance: bool = False  # SEs from the variance components (init-changing interventions present)

    def to_json(self) -> dict:
        return {
            "model": "OLS: test_loss ~ 1 + C(init_seed) + main effects + pairwise interactions"
            + ("; SEs from the variance components (init-seed variance of init-changing interventions)" if self.init_variance else ""),
            "factors": list(self.factors),
            "n_runs": self.n_runs,
            "df_resid": self.df_resid,
            "init_seed_blocks": list(self.blocks),
            "terms": [t.to_json() for t in self.terms],
            "not_estimable": [{"term": t, "reason": r} for t, r in self.not_estimable],
        }


def parts(intervention: str) -> tuple[str, ...]:
    return () if intervention == BASELINE else tuple(intervention.split(SEP))


def factorial_effects(cells: pd.DataFrame, components: Components | None = None) -> Factorial | None:
    """Main effects and interactions, or None when the results hold no combination."""

    combos = [name for name in dict.fromkeys(cells["intervention"]) if SEP in name]
    if not combos:
        return None
    factors = tuple(dict.fromkeys(p for name in combos for p in parts(name)))
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
            dropped.append((name, NOT_IDENTIFIABLE))

    init_changers = {f for f in factors if (used.loc[used["intervention"] == f, "same_init"] == False).any()}  # noqa: E712
    y = used["test_loss"].astype(float).to_numpy()
    x = np.column_stack(columns)
    params, df_resid, se = _ols(y, x)
    new_init = used["intervention"].map(lambda name: bool(set(parts(name)) & init_changers)).to_numpy()
    if new_init.any():
        se = _se_with_init_variance(x, used, new_init, components)
    terms = []
    for i, (name, kind) in enumerate(kept):
        if kind not in ("main", "interaction"):
            continue
        estimate = float(params[i])
        changes_init = bool(set(name.split(" x ")) & init_changers)
        if df_resid > 0 and np.isfinite(se[i]) and se[i] > 0:
            p_value, ci95 = _t_test(estimate, float(se[i]), df_resid)
            terms.append(Term(name, kind, estimate, float(se[i]), p_value, ci95, changes_init))
        else:
            terms.append(Term(name, kind, estimate, None, None, None, changes_init))
    return Factorial(factors, len(used), df_resid, blocks, tuple(terms), tuple(dropped), bool(new_init.any()))


def _ols(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """OLS of full-rank x: (coefficients, residual df, SEs = sqrt(diag(s² (X'X)^-1))), NaN SEs without residual df.
    In numpy (the tests check it against hand calculations): importing statsmodels' OLS costs classify ~1 s."""
    params, *_ = np.linalg.lstsq(x, y, rcond=None)
    df_resid = len(y) - x.shape[1]
    if df_resid <= 0:
        return params, df_resid, np.full(x.shape[1], np.nan)
    s2 = float(((y - x @ params) ** 2).sum()) / df_resid
    return params, df_resid, np.sqrt(np.clip(np.diag(np.linalg.inv(x.T @ x)) * s2, 0.0, None))


def _se_with_init_variance(x: np.ndarray, used: pd.DataFrame, new_init: np.ndarray, components: Components | None) -> np.ndarray:
    """SEs of the OLS coefficients when runs of init-changing interventions carry init-seed variance:
    sqrt(diag((X'X)^-1 X'VX (X'X)^-1)), V = var_train I + var_init Z Z'. NaN without components."""
    if components is None:
        return np.full(x.shape[1], np.nan)
    keys = pd.Series(list(zip(used["intervention"], used["init_seed"])))[new_init]
    z = np.zeros((len(used), keys.nunique()))
    z[np.flatnonzero(new_init), pd.factorize(keys)[0]] = 1.0  # one column per (intervention, init seed) draw
    v = components.var_train * np.eye(len(used)) + components.var_init * (z @ z.T)
    bread = np.linalg.pinv(x.T @ x)
    return np.sqrt(np.clip(np.diag(bread @ x.T @ v @ x @ bread), 0.0, None))


def _t_test(estimate: float, se: float, df: int) -> tuple[float, tuple[float, float]]:
    half = t_ppf(0.975, df) * se
    return 2.0 * t_sf(abs(estimate / se), df), (estimate - half, estimate + half)
