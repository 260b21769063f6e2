"""Variance components of the baseline: initialisation vs the training loop.

Model (REML):
    test_loss = mu + a[init_seed] + b[train stream] + e
A run that is not re-seeded continues the RNG from its initialisation, so its
training stream belongs to its init seed: such runs get a stream of their own
("no re-seed @ init seed"). Explicit train seeds shared by several init seeds
are crossed with them and get the random effect b; otherwise b cannot be told
apart from e and is left out of the model: then the REML fit is exact and
fast (one_way_reml, a one-parameter profile likelihood); crossed designs are
fitted by statsmodels MixedLM (crossed random effects in one group).

Variance from the training loop = var(b) + var(e) (what changes when only the
stream changes); variance from initialisation = var(a).

MixedLM's optimiser can stop short or fail to converge on crossed designs
(a third of simulated 3x3 grids with statsmodels' default). So the fit is run
with several optimisers (L-BFGS, Powell, Nelder-Mead), only converged fits
count, and the one with the highest restricted likelihood wins (L-BFGS may
report convergence at a worse point). When none converges, or the baseline
has more than MAX_REML_RUNS runs (REML would take minutes), the components
come from one-way ANOVA (method of moments, init seed as the factor) and say
so: a non-converged fit is never reported.

Needs baseline runs at >= 2 init seeds and >= 2 streams at one init seed
(the study's L-shaped design qualifies, as does a full init x train grid).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from noisefloor.stats.table import BASELINE, NO_RESEED


REML_METHODS = ("lbfgs", "powell", "nm")
MAX_REML_RUNS = 300  # above it MixedLM takes minutes (dense per-group algebra); ANOVA is then as good
REML, ANOVA = "REML", "ANOVA"


@dataclass(frozen=True)
class Components:
    n_runs: int
    n_init_seeds: int
    crossed: bool  # explicit train seeds shared across init seeds: var_stream estimated
    var_init: float
    var_stream: float | None
    var_residual: float
    method: str = REML  # REML, or ANOVA when no REML fit converged

    @property
    def var_train(self) -> float:
        return (self.var_stream or 0.0) + self.var_residual

    @property
    def total(self) -> float:
        return self.var_init + self.var_train

    @property
    def share_init(self) -> float | None:
        return self.var_init / self.total if self.total > 0 else None

    @property
    def share_train(self) -> float | None:
        return self.var_train / self.total if self.total > 0 else None

    @property
    def method_text(self) -> str:
        if self.method == ANOVA:
            why = f"more than {MAX_REML_RUNS} runs" if self.n_runs > MAX_REML_RUNS else "no REML fit converged"
            return (f"one-way ANOVA, method of moments ({why}; the training stream's variance is "
                    "inside the training-loop component)")
        if not self.crossed:
            return "REML, random intercept per init seed (exact one-parameter profile likelihood)"
        return f"REML, statsmodels MixedLM (crossed random effects; best converged fit of {', '.join(REML_METHODS)})"

    def to_json(self) -> dict:
        return {
            "method": self.method_text,
            "n_runs": self.n_runs,
            "n_init_seeds": self.n_init_seeds,
            "crossed": self.crossed,
            "var_init": self.var_init,
            "var_train_stream": self.var_stream,
            "var_residual": self.var_residual,
            "var_train": self.var_train,
            "sd_init": self.var_init**0.5,
            "sd_train": self.var_train**0.5,
            "share_init": self.share_init,
            "share_train": self.share_train,
        }


def variance_components(cells: pd.DataFrame) -> tuple[Components | None, str | None]:
    """Fit the components on the baseline cells; (None, reason) when the design cannot."""

    base = cells[cells["intervention"] == BASELINE]
    per_init = base.groupby("init_seed")["stream"].nunique()
    if len(per_init) < 2 or per_init.max() < 2:
        return None, (
            "variance components need baseline runs at >= 2 init seeds and >= 2 training streams "
            f"at one init seed (found {len(per_init)} init seed(s), at most {int(per_init.max())} stream(s) at one)"
        )
    data = pd.DataFrame(
        {
            "y": base["test_loss"].astype(float).to_numpy(),
            "init": [str(s) for s in base["init_seed"]],
            "stream": [
                f"{NO_RESEED}@{init}" if stream == NO_RESEED else stream
                for init, stream in zip(base["init_seed"], base["stream"])
            ],
            "group": 1,
        }
    )
    shared = data[data["stream"].map(lambda s: not s.startswith(NO_RESEED))].groupby("stream")["init"].nunique()
    crossed = bool((shared >= 2).any())
    if data["y"].nunique() == 1:
        return Components(len(data), len(per_init), crossed, 0.0, 0.0 if crossed else None, 0.0), None
    # Centre and scale so the optimiser works on O(1) numbers; variances scale back by scale**2.
    raw = data["y"].to_numpy()
    centre, scale = data["y"].mean(), data["y"].std(ddof=1)
    data["y"] = (data["y"] - centre) / scale
    if not crossed:
        var_init, var_train = one_way_reml(raw, data["init"].to_numpy())
        return Components(len(data), len(per_init), False, var_init, None, var_train), None
    fit = _best_reml_fit(data) if len(data) <= MAX_REML_RUNS else None
    if fit is None:
        var_init, var_train = anova_components(raw, data["init"].to_numpy())
        return Components(len(data), len(per_init), crossed, var_init, None, var_train, ANOVA), None
    var = {name: float(v) * scale**2 for name, v in zip(fit.model.exog_vc.names, fit.vcomp)}
    return (
        Components(
            n_runs=len(data),
            n_init_seeds=len(per_init),
            crossed=True,
            var_init=max(var["init"], 0.0),
            var_stream=max(var["stream"], 0.0),
            var_residual=max(float(fit.scale) * scale**2, 0.0),
        ),
        None,
    )


def _best_reml_fit(data: pd.DataFrame):
    """The converged REML fit with the highest restricted likelihood over REML_METHODS, or None."""
    from statsmodels.regression.mixed_linear_model import MixedLM  # lazily: statsmodels is slow to import

    vc = {"init": "0 + C(init)", "stream": "0 + C(stream)"}  # crossed: one group, a variance component each
    model = MixedLM.from_formula("y ~ 1", data, groups="group", re_formula="0", vc_formula=vc)
    best = None
    for method in REML_METHODS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence is read from fit.converged, not from warnings
                fit = model.fit(reml=True, method=[method])
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            continue
        if fit.converged and np.isfinite(fit.llf) and (best is None or fit.llf > best.llf + 1e-9):
            best = fit
    return best


def one_way_reml(y: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """(var_init, var_residual) of y = mu + a[group] + e by REML, exactly, for any number of groups.

    With gamma = var(a) / var(e) and sigma² profiled out, -2 log L_R is, up to constants,
        (N - 1) log Q(gamma) + Σ log(1 + n_i gamma) + log W(gamma),
        W = Σ w_i, w_i = n_i / (1 + n_i gamma), mu = Σ w_i ȳ_i / W,
        Q = Σ_i [SS_i + w_i (ȳ_i - mu)²] (SS_i: within-group sum of squares), sigma² = Q / (N - 1).
    One parameter: minimised on a log grid (and at gamma = 0), then refined by golden-section search, so it
    always converges, in O(groups) per evaluation (MixedLM took minutes on hundreds of init seeds)."""
    y = np.asarray(y, float)
    scale = y.std(ddof=1)
    z = (y - y.mean()) / scale
    frame = pd.Series(z).groupby(groups)
    n, means = frame.size().to_numpy(float), frame.mean().to_numpy()
    within = float(((z - frame.transform("mean").to_numpy()) ** 2).sum())
    total = len(z)

    def q_and_w(gamma: float) -> tuple[float, float]:
        w = n / (1.0 + n * gamma)
        mu = (w * means).sum() / w.sum()
        return within + (w * (means - mu) ** 2).sum(), w.sum()

    def criterion(gamma: float) -> float:
        q, w = q_and_w(gamma)
        return (total - 1) * math.log(q) + np.log1p(n * gamma).sum() + math.log(w)

    grid = np.linspace(-25.0, 12.0, 149)  # log gamma
    values = [criterion(math.exp(t)) for t in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    while hi - lo > 1e-10:
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if criterion(math.exp(a)) < criterion(math.exp(b)):
            hi = b
        else:
            lo = a
    gamma = math.exp((lo + hi) / 2.0)
    if criterion(0.0) <= criterion(gamma):
        gamma = 0.0
    sigma2 = q_and_w(gamma)[0] / (total - 1) * scale**2
    return gamma * sigma2, sigma2


def anova_components(y: np.ndarray, init: np.ndarray) -> tuple[float, float]:
    """(var_init, var_train) by one-way random-effects ANOVA with unequal group sizes (method of moments):
    var_train = MS_within, var_init = (MS_between - MS_within) / n0, n0 = (N - Σ n_i² / N) / (k - 1), floored at 0."""
    groups = pd.Series(y).groupby(init)
    sizes, means = groups.size().to_numpy(), groups.mean().to_numpy()
    n, k = len(y), len(sizes)
    ms_within = float(((y - groups.transform("mean").to_numpy()) ** 2).sum() / (n - k))
    ms_between = float((sizes * (means - y.mean()) ** 2).sum() / (k - 1))
    n0 = (n - (sizes**2).sum() / n) / (k - 1)
    return max((ms_between - ms_within) / n0, 0.0), ms_within
