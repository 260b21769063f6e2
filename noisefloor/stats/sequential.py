"""Anytime-valid evidence: the e-value of a safe t-test, so adding seeds and re-running is allowed.

The e-value is the Bayes factor of the t-test with a right-Haar prior on the
noise scale (p(sigma) ∝ 1/sigma, and a flat prior on a common mean in the
two-sample case) and a normal prior N(0, g) on the standardised effect
delta / sigma. Pérez-Ortiz, Lardy, de Heide & Grünwald (Ann. Statist. 2024)
show this Bayes factor is an e-process for the scale-invariant t-test: under
no effect, P(it ever reaches 1/alpha) <= alpha however the looks are chosen
(Ville's inequality), so a user may add a seed and re-run `classify` after
every run. It depends on the data only through t and the sample sizes
(Rouder et al. 2009, fixed g):

    BF = (1 + N g)^(-1/2) · [(1 + t²/ν) / (1 + t²/(ν (1 + N g)))]^((ν + 1)/2)

one-sample / paired: N = n, ν = n - 1; two-sample (pooled variance):
N = n1 n2 / (n1 + n2), ν = n1 + n2 - 2.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

PRIOR_SD = 1.0  # prior SD of the standardised effect: 1 SD of noise, the scale of the effects users test
PRIOR_G = PRIOR_SD**2


def log_bayes_factor(t, n_effective, df, g: float = PRIOR_G):
    """log BF of the t statistic(s) `t` (numpy arrays broadcast) at effective size N and df ν."""
    t2 = np.square(np.asarray(t, float))
    spread = 1.0 + np.asarray(n_effective, float) * g
    return -0.5 * np.log(spread) + (np.asarray(df, float) + 1.0) / 2.0 * (
        np.log1p(t2 / df) - np.log1p(t2 / (df * spread))
    )


def e_value_paired(differences: Sequence[float]) -> float | None:
    """E-value of the one-sample t-test of mean(differences) = 0; None below 2 values or without spread."""
    d = np.asarray(differences, float)
    n = len(d)
    sd = d.std(ddof=1) if n >= 2 else 0.0
    if n < 2 or not sd > 0:
        return None
    t = d.mean() / (sd / math.sqrt(n))
    return _e(log_bayes_factor(t, n, n - 1))


def e_value_two_sample(x: Sequence[float], y: Sequence[float]) -> float | None:
    """E-value of the pooled-variance two-sample t-test of mean(x) = mean(y); None without spread."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n1, n2 = len(x), len(y)
    df = n1 + n2 - 2
    if n1 < 1 or n2 < 1 or df < 1:
        return None
    pooled = (((x - x.mean()) ** 2).sum() + ((y - y.mean()) ** 2).sum()) / df
    if not pooled > 0:
        return None
    n_effective = n1 * n2 / (n1 + n2)
    t = (x.mean() - y.mean()) / math.sqrt(pooled / n_effective)
    return _e(log_bayes_factor(t, n_effective, df))


MAX_LOG_E = 700.0  # e^700 ~ 1e304: beyond, the evidence is overwhelming and exp would overflow


def _e(log_e) -> float:
    return math.exp(min(float(log_e), MAX_LOG_E))


def running_t(differences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sample t statistics after each added value along the last axis (from n = 2): (t, n).

    Vectorised for simulations of optional stopping: differences has shape (studies, n_max).
    """
    d = np.asarray(differences, float)
    n = np.arange(1, d.shape[-1] + 1)
    total = np.cumsum(d, axis=-1)
    mean = total / n
    sum_sq = np.cumsum(d * d, axis=-1) - n * mean**2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / np.sqrt(sum_sq / (n - 1) / n)
    return t[..., 1:], n[1:]


def first_stop(hit: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per study (rows), whether a look (columns, at sample sizes n) hit, and the sample size it stopped at
    (the first hit, else the last look)."""
    stopped = hit.any(axis=1)
    return stopped, np.where(stopped, n[np.argmax(hit, axis=1)], n[-1])


def sequential_rule(differences: np.ndarray, first_look: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Simulate the anytime-valid rule on (studies, n_max) paired differences: look after every value from
    `first_look`, stop at e >= 1/alpha. Returns (stopped, values used)."""
    t, n = running_t(differences)
    keep = n >= first_look
    t, n = t[:, keep], n[keep]
    return first_stop(log_bayes_factor(t, n, n - 1) >= math.log(1.0 / alpha), n)
