"""Significance tests beside the 3-SD heuristic: Welch, paired, prediction, Holm, power.

All two-sided. A test whose statistic is undefined (no spread in the data)
returns p = None and a code saying why (`Undefined`), rather than a misleading 0 or NaN.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Sequence

import numpy as np
from scipy import special

ALPHA = 0.05
SIGNAL, NOISE, UNDECIDED = "signal", "noise", "undecided"
POWER = 0.80
MAX_SEEDS = 1_000_000
RELATIVE_NOISE = 1e-10


def t_sf(x: float, df: float) -> float:
    """Student-t upper tail P(T > x): scipy.special's ufunc, ~100x less per-call overhead than scipy.stats.t."""
    return float(special.stdtr(df, -x))


def t_ppf(q: float, df: float) -> float:
    """Student-t quantile (inverse of the CDF), via scipy.special."""
    return float(special.stdtrit(df, q))


class Undefined(str, Enum):
    """Why a test has no statistic (report/words.py says it in words)."""

    NO_SPREAD = "no_spread"  # neither sample varies
    EQUAL_DIFFERENCES = "equal_differences"  # every paired difference is the same
    FLOOR_WITHOUT_SPREAD = "floor_without_spread"  # the floor's SD is 0


class ConfidenceInterval(NamedTuple):
    """As scipy's: a (low, high) pair with names."""

    low: float
    high: float


@dataclass(frozen=True)
class TestResult:
    """A two-sided t-test, shaped like scipy's results: `statistic`, `pvalue`, `df`, `confidence_interval()`."""

    test: str  # "paired", "welch" or "prediction"
    statistic: float | None
    df: float | None
    pvalue: float | None
    undefined: Undefined | None = None
    estimate: float | None = None  # the difference the test is about (intervention - baseline)
    se: float | None = None  # its standard error; statistic = estimate / se

    def confidence_interval(self, confidence_level: float = 0.95) -> ConfidenceInterval | None:
        """Two-sided interval of the estimate: estimate ± t_{(1+level)/2, df} · se (None when the test is undefined)."""
        if self.pvalue is None or self.estimate is None or self.se is None:
            return None
        half = t_ppf(0.5 + confidence_level / 2.0, self.df) * self.se
        return ConfidenceInterval(self.estimate - half, self.estimate + half)

    def to_json(self, note: str | None) -> dict:
        """`note`: why the test is undefined, in words. The --json keys predate the scipy names: "p_value"."""
        out = dataclasses.asdict(self) | {"undefined": note}
        return {JSON_NAMES.get(key, key): value for key, value in out.items()}


JSON_NAMES = {"pvalue": "p_value", "undefined": "note"}


def has_spread(values: Sequence[float]) -> bool:
    """More than floating-point noise between the values (the floors' "constant" uses this too)."""
    return _spread(values, max(abs(v) for v in values))


def _spread(values: Sequence[float], scale: float) -> bool:
    """Spread beyond floating-point noise: decimal differences such as 5.0-5.1 and 5.1-5.2
    differ in their last bits, which would give a t statistic of 1e14 and p ~ 1e-15."""
    return max(values) - min(values) > RELATIVE_NOISE * max(1.0, scale)


def welch(intervention: Sequence[float], floor: Sequence[float]) -> TestResult:
    """Welch's unequal-variance t-test of the intervention's runs against the floor's runs.

    In closed form (Welch-Satterthwaite df) rather than scipy.stats.ttest_ind, whose per-call
    overhead dominated `classify` on files with hundreds of interventions; the tests compare the two.
    """
    scale = max(abs(v) for v in [*intervention, *floor])
    if not (_spread(intervention, scale) or _spread(floor, scale)):
        return TestResult("welch", None, None, None, Undefined.NO_SPREAD)
    a, b = (_variance(v) / len(v) for v in (intervention, floor))
    df = (a + b) ** 2 / (a * a / (len(intervention) - 1) + b * b / (len(floor) - 1))
    return t_test("welch", _mean(intervention) - _mean(floor), math.sqrt(a + b), df)


def paired(intervention: Sequence[float], baseline: Sequence[float]) -> TestResult:
    """Paired t-test on intervention - baseline at the same init seed and training stream (closed form)."""
    differences = [a - b for a, b in zip(intervention, baseline, strict=True)]
    if not _spread(differences, max(abs(v) for v in [*intervention, *baseline])):
        return TestResult("paired", None, None, None, Undefined.EQUAL_DIFFERENCES)
    n = len(differences)
    return t_test("paired", _mean(differences), math.sqrt(_variance(differences) / n), n - 1)


def t_test(name: str, estimate: float, se: float, df: float) -> TestResult:
    """estimate / se against Student's t with df degrees of freedom, two-sided."""
    statistic = estimate / se
    return TestResult(name, statistic, float(df), 2.0 * t_sf(abs(statistic), df), None, estimate, se)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _variance(values: Sequence[float]) -> float:
    """Sample variance (ddof = 1)."""
    mean = _mean(values)
    return math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)


def prediction(delta: float, sd: float, df: int, factor: float) -> TestResult:
    """The test behind the 3-SD verdict: delta / (sd · factor) ~ t(df) when there is no effect."""
    if sd == 0:
        return TestResult("prediction", None, df, None, Undefined.FLOOR_WITHOUT_SPREAD)
    statistic = delta / (sd * factor)
    return TestResult("prediction", statistic, df, 2.0 * t_sf(abs(statistic), df), None, delta, sd * factor)


def decide(p_holm: float | None, interval: Sequence[float] | None, alpha: float, margin: float | None) -> str:
    """The decision on an effect: signal when its Holm-adjusted p < alpha; noise only when its (1 - 2 alpha) interval
    lies inside ±margin (equivalence by TOST at alpha); else undecided. Single interventions and factorial terms alike."""
    if p_holm is not None and p_holm < alpha:
        return SIGNAL
    if margin is not None and interval is not None and max(abs(interval[0]), abs(interval[1])) < margin:
        return NOISE
    return UNDECIDED


def holm_where_tested(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm over the effects that have a p-value; None stays None (an untested effect is not in the family)."""
    tested = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    for i, adjusted in zip(tested, holm([p_values[i] for i in tested])):
        out[i] = adjusted
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error): the k-th smallest p times (m - k + 1), made
    monotone by a running maximum, capped at 1. In numpy: statsmodels' multipletests gives the same numbers
    (the tests compare them) but importing it costs `classify` seconds, and it calls gc.collect() per call."""
    if not p_values:
        return []
    p = np.asarray(p_values, float)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    adjusted = np.empty_like(p)
    adjusted[order] = scaled
    return [float(x) for x in adjusted]


def two_sample_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided two-sample t-test with n runs per arm at effect size |delta| / sd.

    Noncentral t with df = 2n - 2 and noncentrality effect·sqrt(n/2) (scipy). Where
    scipy's noncentral t returns NaN (very large noncentrality at small df), the same
    probability is integrated directly: T = (Z + nc) / sqrt(V/df), V ~ chi2(df), so
    P(|T| > c) = E_V[Phi(nc - c·sqrt(V/df)) + Phi(-nc - c·sqrt(V/df))].
    """
    from scipy import stats as sps  # lazily: scipy.stats costs start-up time classify does not need

    df = 2 * n - 2
    nc = abs(effect) * math.sqrt(n / 2.0)
    critical = float(sps.t.isf(alpha / 2.0, df))
    power = float(sps.nct.sf(critical, df, nc) + sps.nct.cdf(-critical, df, nc))
    if math.isfinite(power):
        return power

    def integrand(v: float) -> float:
        scale = critical * math.sqrt(v / df)
        return (sps.norm.cdf(nc - scale) + sps.norm.cdf(-nc - scale)) * sps.chi2.pdf(v, df)

    from scipy import integrate  # rarely needed: only where the noncentral t fails

    lo, hi = sps.chi2.ppf(1e-15, df), sps.chi2.isf(1e-15, df)
    value, _ = integrate.quad(integrand, lo, hi, limit=200)
    return min(max(float(value), 0.0), 1.0)


def seeds_needed(delta: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Smallest runs per arm for a two-sided two-sample t-test to detect `delta` with this SD.

    None when there is nothing to detect (delta = 0), no spread to size it by
    (sd = 0), or more than MAX_SEEDS would be needed. Starts from the normal
    approximation 2 ((z_{1-alpha/2} + z_power) / effect)^2, brackets, then bisects.
    """
    if sd == 0 or delta == 0 or not math.isfinite(delta / sd):
        return None
    from scipy import stats as sps  # lazily, as in two_sample_power

    effect = abs(delta) / sd

    def enough(n: int) -> bool:
        return two_sample_power(effect, n, alpha) >= power

    if enough(2):
        return 2
    ratio = float(sps.norm.isf(alpha / 2.0) + sps.norm.ppf(power)) / effect
    normal = 2.0 * ratio * ratio  # Python floats: a vanishing effect gives inf, not a numpy overflow warning
    guess = max(3, min(math.ceil(normal), MAX_SEEDS)) if math.isfinite(normal) else MAX_SEEDS
    step = max(1, guess // 16)
    if enough(guess):  # enough(hi) holds; walk down until not enough(lo)
        hi, lo = guess, max(2, guess - step)
        while lo > 2 and enough(lo):
            hi, lo, step = lo, max(2, lo - step), step * 2
    else:  # not enough(lo); walk up until enough(hi)
        lo, hi = guess, guess + step
        while not enough(hi):
            lo, hi, step = hi, hi + step, step * 2
            if hi > MAX_SEEDS:
                return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi
