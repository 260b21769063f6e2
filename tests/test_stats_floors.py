"""Noise floors: membership and every summary number against an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_helpers import STUDY, run, study_rows, write_csv
from scipy import stats

from noisefloor.report import words
from noisefloor.stats.classify import analyse
from noisefloor.stats.floors import false_positive_rate, one_run_factor, prediction_half_width


def test_the_study_design_gives_one_floor_of_each_kind():
    analysis = analyse(STUDY)
    train = analysis.floor("train@init_seed=42")
    init = analysis.floor("init@no-reseed")
    assert (train.kind, train.n, sorted(train.losses)) == ("train", 3, [5.0991, 5.1032, 5.1068])
    assert (init.kind, init.n, sorted(init.losses)) == ("init", 3, [5.0874, 5.1032, 5.1251])
    assert len(analysis.floors) == 2  # train seeds 23 and 67 appear at one init seed only: no init floor there


def test_worked_by_hand(tmp_path):
    # 5.10, 5.11, 5.12: mean 5.11; squared deviations 1e-4, 0, 1e-4.
    # Bessel SD = sqrt(2e-4 / 2) = 0.01; population SD = sqrt(2e-4 / 3) = 0.0081650.
    rows = [run("baseline", 42, t, x) for t, x in ((None, 5.10), (1, 5.11), (2, 5.12))]
    floor = analyse(write_csv(tmp_path / "r.csv", rows)).floors[0]
    assert floor.mean == pytest.approx(5.11, abs=1e-12)
    assert floor.sd == pytest.approx(0.01, abs=1e-12)
    assert floor.sd_population == pytest.approx(0.0081650, abs=1e-7)
    assert floor.band(3) == pytest.approx((5.08, 5.14), abs=1e-12)
    assert floor.band(1) == pytest.approx((5.10, 5.12), abs=1e-12)
    # t with 2 df has the closed-form CDF 1/2 + t / (2 sqrt(2 + t^2)), so its quantile at
    # p = 0.9985 is sqrt(2 a^2 / (1 - a^2)) with a = 2p - 1 = 0.997: 18.2163.
    a = 0.997
    t = math.sqrt(2 * a * a / (1 - a * a))
    half = t * 0.01 * math.sqrt(4 / 3)
    assert half == pytest.approx(0.210344, abs=1e-6)
    assert floor.prediction_interval_997 == pytest.approx((5.11 - half, 5.11 + half), abs=1e-9)
    # FPR at n = 3 with the same closed form: 2 (1 - F(3 / sqrt(4/3))).
    x = 3 / math.sqrt(4 / 3)
    assert floor.false_positive_rate_3sd == pytest.approx(1 - x / math.sqrt(2 + x * x), abs=1e-12)


@pytest.mark.parametrize("losses", [[5.1, 5.13, 5.08], [4.2, 4.25], [6.0, 6.01, 6.03, 5.99, 6.02, 6.0]])
def test_floor_numbers_match_numpy_and_scipy(tmp_path, losses):
    rows = [run("baseline", 7, t, x) for t, x in enumerate(losses)]
    floor = analyse(write_csv(tmp_path / "r.csv", rows)).floors[0]
    data = np.array(losses)
    n = len(data)
    assert floor.n == n
    assert floor.mean == pytest.approx(data.mean(), rel=1e-14)
    assert floor.sd == pytest.approx(np.std(data, ddof=1), rel=1e-12)
    assert floor.sd_population == pytest.approx(np.std(data, ddof=0), rel=1e-12)
    s, m = np.std(data, ddof=1), data.mean()
    for k in (1, 2, 3):
        assert floor.band(k) == pytest.approx((m - k * s, m + k * s))
    half = stats.t.ppf(0.9985, n - 1) * s * math.sqrt(1 + 1 / n)
    assert floor.prediction_interval_997 == pytest.approx((m - half, m + half))
    assert floor.false_positive_rate_3sd == pytest.approx(2 * stats.t.sf(3 / math.sqrt(1 + 1 / n), n - 1))


def test_3sd_false_positive_rate_at_n3_is_about_12_percent():
    assert false_positive_rate(2, one_run_factor(3)) == pytest.approx(0.1217, abs=5e-4)
    # and tends to the normal 0.27% only as n grows
    assert false_positive_rate(10_000, one_run_factor(10_001)) == pytest.approx(2 * stats.norm.sf(3), rel=5e-3)


@pytest.mark.parametrize("n", [3, 5])
def test_fpr_and_prediction_interval_by_monte_carlo(n):
    """Independent check of the t-based formulas: simulate floors of n runs and one new run."""
    rng = np.random.default_rng(n)
    draws = rng.normal(size=(200_000, n + 1))
    floor, new = draws[:, :n], draws[:, n]
    m, s = floor.mean(axis=1), floor.std(axis=1, ddof=1)
    outside_band = np.mean(np.abs(new - m) > 3 * s)
    fpr = false_positive_rate(n - 1, one_run_factor(n))
    assert outside_band == pytest.approx(fpr, abs=4 * math.sqrt(fpr * (1 - fpr) / len(new)))
    half = prediction_half_width(1.0, n - 1, one_run_factor(n)) * s
    coverage = np.mean(np.abs(new - m) <= half)
    assert coverage == pytest.approx(0.997, abs=4 * math.sqrt(0.003 * 0.997 / len(new)))


def test_constant_floor_does_not_crash_and_says_what_it_means(tmp_path):
    rows = study_rows({(42, None): 5.1, (42, 23): 5.1, (42, 67): 5.1}, [run("grad-clip", 42, None, 5.0, True)])
    analysis = analyse(write_csv(tmp_path / "r.csv", rows))
    floor = analysis.floors[0]
    assert (floor.constant, floor.sd, floor.sd_population, floor.band(3)) == (True, 0.0, 0.0, (5.1, 5.1))
    (v,) = analysis.verdicts
    assert v.verdict == "undecided" and v.z is None and v.delta == pytest.approx(-0.1)
    assert any("zero spread" in n for n in words.notes(v.notes))
    assert any("identical losses, so varying those seeds changed nothing" in n for n in words.notes(analysis.notes))
    data = words.analysis_json(analysis)  # no NaN / inf anywhere
    import json

    json.dumps(data, allow_nan=False)
    assert data["interventions"][0]["tests"]["prediction"]["note"] == "the floor has no spread: the test is undefined"
