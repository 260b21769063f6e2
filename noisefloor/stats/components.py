"""Variance components: initialisation vs the training loop, from one mixed model over every run.

Model (REML), over every run of the file:
    test_loss = mu + beta[intervention] + a[init draw] + b[train stream] + e
Each intervention shifts the mean (fixed effects); the initial weights and the training loop are the random
parts. An init draw is the initial weights a run starts from: the init seed for the baseline and for an
intervention known to keep the baseline's weights (same_init true, or its init_digest is the baseline's);
an intervention that changes them (or is not known to keep them) draws its own at each init seed. A run
that is not re-seeded continues the RNG from its initialisation, so its training stream belongs to its init
draw ("no re-seed @ draw"). Explicit train seeds shared by several draws are crossed with them and get the
random effect b; otherwise b cannot be told apart from e and is left out of the model: then REML is an
exact one-parameter profile likelihood (one_way_reml, in numpy from per-draw and per-intervention sums, fast
on a million rows); crossed designs are fitted by statsmodels MixedLM (crossed random effects in one group,
the interventions as fixed effects).

Runs that carry no information on the noise are left out before the fit, which leaves the restricted
likelihood unchanged: an intervention with a single run (its own mean fits it exactly) and a run whose final
weights are bit-identical to the baseline's at the same seeds (the intervention changed nothing there,
so it is no new draw of the training loop).

Variance from the training loop = var(b) + var(e) (what changes when only the stream changes); variance
from initialisation = var(a).

MixedLM's optimiser can stop short or fail to converge on crossed designs (a third of simulated 3x3 grids
with statsmodels' default). So the fit is run with several optimisers (L-BFGS, Powell, Nelder-Mead), only
converged fits count, and the one with the highest restricted likelihood wins (L-BFGS may report
convergence at a worse point). When none converges, or the fit has more than MAX_REML_RUNS runs (REML would
take minutes), the components come from ANOVA (Henderson's method III, the method of moments with the
interventions as fixed effects; one-way ANOVA when there is only the baseline) and say so: a non-converged
fit is never reported.

Needs runs at >= 2 init draws and, within a draw, runs left over once the interventions' means are fitted
(e.g. the study's L-shaped baseline, a full init x train grid, or a same-init intervention run beside the
baseline at its init seeds).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from enum import Enum

import numpy as np
import pandas as pd

from noisefloor.stats.table import BASELINE, NO_RESEED


REML_METHODS = ("lbfgs", "powell", "nm")
MAX_REML_RUNS = 300  # above it MixedLM takes minutes (dense per-group algebra); ANOVA is then as good
REML, ANOVA = "REML", "ANOVA"


class Fit(Enum):
    PROFILE_REML = "profile"  # one random factor: the exact one-parameter profile likelihood (one_way_reml)
    MIXEDLM_REML = "mixedlm"  # crossed random effects: the best converged MixedLM fit of REML_METHODS
    ANOVA_TOO_MANY_RUNS = "anova-too-many-runs"  # more than MAX_REML_RUNS runs: Henderson's method III
    ANOVA_NOT_CONVERGED = "anova-not-converged"  # no REML fit converged: Henderson's method III


@dataclass(frozen=True)
class ComponentsMissing:
    """Why the design gives no variance components: too few init draws or no degree of freedom within them."""

    n_draws: int
    df_within: int


@dataclass(frozen=True)
class Components:
    n_runs: int
    n_init_seeds: int
    crossed: bool  # explicit train seeds shared across init draws: var_stream estimated
    var_init: float
    var_stream: float | None
    var_residual: float
    method: str = REML  # REML, or ANOVA when no REML fit converged
    n_interventions: int = 0  # fixed effects beside the baseline
    n_draws: int = 0  # init draws (init seeds of the baseline and its same-init interventions, plus new ones)
    df_train: int | None = None  # within-draw degrees of freedom left once the interventions' means are fitted
    # covariance of the (var_init, var_train) estimates (inverse REML information): how uncertain an SE built
    # from them is (Satterthwaite's df); None for crossed and ANOVA fits, or above MAX_REML_RUNS runs
    covariance: tuple[tuple[float, float], tuple[float, float]] | None = None

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
    def fit(self) -> Fit:
        """Which fit gave the components (report/words.py says it in words)."""
        if self.method == ANOVA:
            return Fit.ANOVA_TOO_MANY_RUNS if self.n_runs > MAX_REML_RUNS else Fit.ANOVA_NOT_CONVERGED
        return Fit.MIXEDLM_REML if self.crossed else Fit.PROFILE_REML

    def to_json(self, method: str) -> dict:
        """The --json object; `method` is the fit in words (report/words.py)."""
        return {
            "method": method,
            "n_runs": self.n_runs,
            "n_init_seeds": self.n_init_seeds,
            "n_init_draws": self.n_draws,
            "n_interventions": self.n_interventions,
            "crossed": self.crossed,
            "var_init": self.var_init,
            "var_train_stream": self.var_stream,
            "var_residual": self.var_residual,
            "var_train": self.var_train,
            "df_train": self.df_train,
            "sd_init": self.var_init**0.5,
            "sd_train": self.var_train**0.5,
            "share_init": self.share_init,
            "share_train": self.share_train,
        }


def model_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """The runs the mixed model uses: y, intervention, init draw, train stream (see the module's docstring)."""
    names = cells["intervention"].to_numpy(object)
    seeds = cells["init_seed"].astype(int).to_numpy()
    streams = cells["stream"].to_numpy(object)
    is_base = names == BASELINE
    base_digest = dict(zip(seeds[is_base], cells["init_digest"].to_numpy(object)[is_base]))
    base_final = dict(zip(zip(seeds[is_base], streams[is_base]), cells["final_digest"].to_numpy(object)[is_base]))
    same = cells["same_init"].to_numpy(object)
    digest = cells["init_digest"].to_numpy(object)
    final = cells["final_digest"].to_numpy(object)
    # (per-row checks only where digests exist: a million-row file without them stays vectorised)
    unchanged = np.zeros(len(cells), bool)
    for i in np.flatnonzero(~is_base & pd.notna(final)):  # bit-identical to the baseline run at its seeds
        unchanged[i] = bool(final[i]) and base_final.get((seeds[i], streams[i])) == final[i]
    shared = is_base | np.asarray(same == True, bool)  # noqa: E712 (an object array: None, True, False)
    for i in np.flatnonzero(~shared & pd.isna(same) & pd.notna(digest)):  # same_init unknown: the digest decides
        shared[i] = bool(digest[i]) and base_digest.get(seeds[i]) == digest[i]
    draws = seeds.astype(str).astype(object)
    draws[~shared] = names[~shared] + "@" + draws[~shared]
    frame = pd.DataFrame({"y": cells["test_loss"].to_numpy(float), "intervention": names, "init": draws,
                          "stream": np.where(streams == NO_RESEED, NO_RESEED + "@" + draws, streams), "seed": seeds})
    frame = frame[~unchanged]
    single = frame["intervention"].map(frame["intervention"].value_counts()) == 1
    return frame[~single | (frame["intervention"] == BASELINE)].reset_index(drop=True)


def variance_components(cells: pd.DataFrame) -> tuple[Components | None, ComponentsMissing | None]:
    """Fit the components over every run (interventions as fixed effects); (None, why) when the design cannot."""
    data = model_frame(cells)
    names = pd.factorize(data["intervention"])[0]
    draws = pd.factorize(data["init"])[0]
    n_draws = int(draws.max()) + 1 if len(data) else 0
    df_within = _within_df(names, draws) if n_draws else 0
    if n_draws < 2 or df_within < 1:
        return None, ComponentsMissing(n_draws, df_within)
    shared = data[data["stream"].map(lambda s: not s.startswith(NO_RESEED))].groupby("stream")["init"].nunique()
    crossed = bool((shared >= 2).any())
    facts = dict(n_runs=len(data), n_init_seeds=int(data["seed"].nunique()), crossed=crossed,
                 n_interventions=int(names.max()), n_draws=n_draws, df_train=df_within)
    raw = data["y"].to_numpy(float)
    if np.ptp(raw) == 0:
        return Components(var_init=0.0, var_stream=0.0 if crossed else None, var_residual=0.0, **facts), None
    if not crossed:
        var_init, var_train = one_way_reml(raw, draws, names)
        covariance = reml_covariance(var_init, var_train, draws, names) if len(data) <= MAX_REML_RUNS else None
        return Components(var_init=var_init, var_stream=None, var_residual=var_train, covariance=covariance,
                          **facts), None
    fit = _best_reml_fit(data) if len(data) <= MAX_REML_RUNS else None
    if fit is None:
        var_init, var_train = anova_components(raw, draws, names)
        return Components(var_init=var_init, var_stream=None, var_residual=var_train, method=ANOVA, **facts), None
    scale = raw.std(ddof=1)
    var = {name: float(v) * scale**2 for name, v in zip(fit.model.exog_vc.names, fit.vcomp)}
    return Components(var_init=max(var["init"], 0.0), var_stream=max(var["stream"], 0.0),
                      var_residual=max(float(fit.scale) * scale**2, 0.0), **facts), None


def _best_reml_fit(data: pd.DataFrame):
    """The converged REML fit with the highest restricted likelihood over REML_METHODS, or None."""
    from statsmodels.regression.mixed_linear_model import MixedLM  # lazily: statsmodels is slow to import

    # Centre and scale so the optimiser works on O(1) numbers; variances scale back by scale**2.
    data = data.assign(y=(data["y"] - data["y"].mean()) / data["y"].std(ddof=1), group=1)
    vc = {"init": "0 + C(init)", "stream": "0 + C(stream)"}  # crossed: one group, a variance component each
    formula = "y ~ C(intervention)" if data["intervention"].nunique() > 1 else "y ~ 1"
    model = MixedLM.from_formula(formula, data, groups="group", re_formula="0", vc_formula=vc)
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


@dataclass(frozen=True)
class _Sums:
    """What the one-random-factor model needs of the data, in per-draw and per-intervention sums.

    X is the one-hot coding of the interventions (no intercept: the same column space), Z that of the draws.
    With V0 = I + gamma Z Z', V0^-1 = I - sum_g c_g 1_g 1_g' (c_g = gamma / (1 + n_g gamma)), so
    X'V0^-1 X = diag(n_j) - S' diag(c) S, X'V0^-1 y = u - S' (c t), y'V0^-1 y = y'y - sum c_g t_g², with
    S[g, j] the runs of intervention j in draw g, t_g and u_j the sums of y per draw and per intervention."""

    n_draw: np.ndarray
    n_name: np.ndarray
    counts: np.ndarray  # S
    t: np.ndarray
    u: np.ndarray
    yy: float
    n: int

    @classmethod
    def of(cls, z: np.ndarray, draws: np.ndarray, names: np.ndarray | None) -> "_Sums":
        names = np.zeros(len(z), int) if names is None else np.asarray(names)
        draws = np.asarray(draws)
        g, p = int(draws.max()) + 1, int(names.max()) + 1
        counts = np.zeros((g, p))
        np.add.at(counts, (draws, names), 1.0)
        return cls(np.bincount(draws, minlength=g).astype(float), np.bincount(names, minlength=p).astype(float),
                   counts, np.bincount(draws, z, minlength=g), np.bincount(names, z, minlength=p), float(z @ z), len(z))

    def solve(self, c: np.ndarray) -> tuple[float, float]:
        """(y'V0^-1 y - b'A^+ b, log pseudo-determinant of A) at draw weights c: the GLS residual quadratic form."""
        a = np.diag(self.n_name) - self.counts.T @ (c[:, None] * self.counts)
        b = self.u - self.counts.T @ (c * self.t)
        values, vectors = np.linalg.eigh(a)
        keep = values > 1e-9 * max(values.max(), 1.0)
        coef = vectors[:, keep] @ ((vectors[:, keep].T @ b) / values[keep])
        return self.yy - float((c * self.t**2).sum()) - float(b @ coef), float(np.log(values[keep]).sum())

    def rank(self, c: np.ndarray) -> int:
        a = np.diag(self.n_name) - self.counts.T @ (c[:, None] * self.counts)
        values = np.linalg.eigvalsh(a)
        return int((values > 1e-9 * max(values.max(), 1.0)).sum())


def _within_df(names: np.ndarray, draws: np.ndarray) -> int:
    """Runs minus the rank of [interventions, draws]: the degrees of freedom of the training-loop variance."""
    sums = _Sums.of(np.zeros(len(draws)), draws, names)
    return sums.n - len(sums.n_draw) - sums.rank(1.0 / sums.n_draw)


def one_way_reml(y: np.ndarray, groups: np.ndarray, names: np.ndarray | None = None) -> tuple[float, float]:
    """(var_init, var_residual) of y = X beta + a[group] + e by REML, exactly (X: one-hot `names`, default an
    intercept).

    With gamma = var(a) / var(e) and sigma² profiled out, -2 log L_R is, up to constants,
        (N - p) log Q(gamma) + Σ log(1 + n_g gamma) + log det(X'V0^-1 X),   sigma² = Q / (N - p),
    Q the GLS residual quadratic form (see _Sums). One parameter: minimised on a log grid (and at gamma = 0),
    then refined by golden-section search, so it always converges, in O(groups x interventions) per
    evaluation from sums computed once (MixedLM took minutes on hundreds of init seeds)."""
    y = np.asarray(y, float)
    scale = y.std(ddof=1)
    sums = _Sums.of((y - y.mean()) / scale, pd.factorize(np.asarray(groups))[0], names)
    p = sums.rank(np.zeros(len(sums.n_draw)))

    def q_of(gamma: float) -> tuple[float, float]:
        return sums.solve(gamma / (1.0 + sums.n_draw * gamma))

    def criterion(gamma: float) -> float:
        q, logdet = q_of(gamma)
        return (sums.n - p) * math.log(max(q, 1e-300)) + np.log1p(sums.n_draw * gamma).sum() + logdet

    grid = np.linspace(-25.0, 13.0, 20)  # log gamma in steps of 2, then golden-section search around the best
    values = [criterion(math.exp(t)) for t in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = criterion(math.exp(a)), criterion(math.exp(b))
    while hi - lo > 1e-7:  # one new evaluation per step: the other inner point is kept
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = criterion(math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = criterion(math.exp(b))
    gamma = math.exp((lo + hi) / 2.0)
    if criterion(0.0) <= criterion(gamma):
        gamma = 0.0
    sigma2 = q_of(gamma)[0] / (sums.n - p) * scale**2
    return gamma * sigma2, sigma2


def reml_covariance(var_init: float, var_train: float, draws: np.ndarray, names: np.ndarray):
    """Inverse of the REML information of (var_init, var_train) for V = var_init Z Z' + var_train I, X the
    interventions: I_kl = tr(P V_k P V_l) / 2, P = V^-1 - V^-1 X (X'V^-1 X)^+ X'V^-1 (dense: small files only)."""
    x = np.eye(int(names.max()) + 1)[names]
    z = np.eye(int(draws.max()) + 1)[draws]
    zz = z @ z.T
    v_inv = np.linalg.inv(var_init * zz + max(var_train, 1e-300) * np.eye(len(draws)))
    vx = v_inv @ x
    p = v_inv - vx @ np.linalg.pinv(x.T @ vx) @ vx.T
    pzz = p @ zz
    info = 0.5 * np.array([[np.sum(pzz * pzz.T), np.sum(pzz * p.T)], [np.sum(pzz * p.T), np.sum(p * p.T)]])
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return None
    return ((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1])))


def anova_components(y: np.ndarray, init: np.ndarray, names: np.ndarray | None = None) -> tuple[float, float]:
    """(var_init, var_train) by Henderson's method III (method of moments) for y = X beta + a[init] + e:
        var_train = SSE_full / (N - r_full)     (full model: interventions and draws as fixed effects)
        var_init  = (R(a | beta) - (r_full - r_X) var_train) / tr(Z' M_X Z), floored at 0,
    R(a | beta) = SSE_X - SSE_full, M_X the residual projection of the interventions alone. With the baseline
    only (X an intercept) this is one-way ANOVA with unequal groups: var_init = (MS_between - MS_within) / n0."""
    y = np.asarray(y, float)
    sums = _Sums.of(y - y.mean(), pd.factorize(np.asarray(init))[0], names)
    g = len(sums.n_draw)
    sse_x, _ = sums.solve(np.zeros(g))
    r_x = sums.rank(np.zeros(g))
    sse_full, _ = sums.solve(1.0 / sums.n_draw)
    r_full = g + sums.rank(1.0 / sums.n_draw)
    var_train = sse_full / (sums.n - r_full)
    trace = sums.n_draw.sum() - float(np.einsum("gj,gj->", sums.counts, sums.counts / sums.n_name[None, :]))
    var_init = (sse_x - sse_full - (r_full - r_x) * var_train) / trace
    return max(var_init, 0.0), var_train
