"""Do the improvements add up? Main effects and pairwise interactions of combinations.

When the results hold combinations (interventions joined by '+', e.g.
`grad-clip+no-dropout`), fit by OLS (statsmodels):
    test_loss ~ 1 + C(init_seed) + sum_f x_f + sum_{f<g together in a combination} x_f x_g
on the baseline runs and the runs of every intervention made only of the
factors that appear in combinations. x_f = 1 when factor f is on. The init
seed enters as a block, so runs at different init seeds are compared within
their seed. An interaction near 0 means the effects add up; > 0 means the
combination's loss is higher than the sum of the single effects predicts.

Terms the design cannot identify (e.g. a combination without runs of each of
its parts alone) are dropped and listed with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from noisefloor.stats.table import BASELINE

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
    changes_init: bool = False  # a main effect whose runs start from other initial weights than the baseline's

    @property
    def reading(self) -> str:
        if self.kind == "main":
            text = "lowers the loss" if self.estimate < 0 else "raises the loss"
            if self.changes_init:
                text += (" (its runs start from other initial weights, so init-seed noise is inside this effect "
                         "while its SE reflects the training loop only: judge it in the verdicts, against the init floor)")
            return text
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

    def to_json(self) -> dict:
        return {
            "model": "OLS, statsmodels: test_loss ~ 1 + C(init_seed) + main effects + pairwise interactions",
            "factors": list(self.factors),
            "n_runs": self.n_runs,
            "df_resid": self.df_resid,
            "init_seed_blocks": list(self.blocks),
            "terms": [t.to_json() for t in self.terms],
            "not_estimable": [{"term": t, "reason": r} for t, r in self.not_estimable],
        }


def parts(intervention: str) -> tuple[str, ...]:
    return () if intervention == BASELINE else tuple(intervention.split(SEP))


def factorial_effects(cells: pd.DataFrame) -> Factorial | None:
    """Main effects and interactions, or None when the results hold no combination."""
    import statsmodels.api as sm

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
    fit = sm.OLS(y, np.column_stack(columns)).fit()
    df_resid = int(round(fit.df_resid))
    terms = []
    for i, (name, kind) in enumerate(kept):
        if kind not in ("main", "interaction"):
            continue
        estimate = float(fit.params[i])
        if df_resid > 0 and np.isfinite(fit.bse[i]) and fit.bse[i] > 0:
            lo, hi = (float(v) for v in fit.conf_int(0.05)[i])
            terms.append(Term(name, kind, estimate, float(fit.bse[i]), float(fit.pvalues[i]), (lo, hi), name in init_changers))
        else:
            terms.append(Term(name, kind, estimate, None, None, None, name in init_changers))
    return Factorial(factors, len(used), df_resid, blocks, tuple(terms), tuple(dropped))
