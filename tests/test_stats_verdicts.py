"""Verdicts against the right floor, and the tests beside them, against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_helpers import BASE, STUDY, run, study_rows, write_csv
from scipy import stats
from statsmodels.stats.power import TTestIndPower

from noisefloor.cli import main
from noisefloor.stats import tests
from noisefloor.report import words
from noisefloor.stats.classify import analyse
from noisefloor.stats.plan import FIRST_LOOK

TRAIN42 = [BASE[(42, None)], BASE[(42, 23)], BASE[(42, 67)]]
INIT = [BASE[(42, None)], BASE[(22, None)], BASE[(67, None)]]


def verdicts_of(path):
    return {v.intervention: v for v in analyse(path).verdicts}


def test_study_verdicts_use_the_matching_floor():
    v = verdicts_of(STUDY)
    m, s = np.mean(TRAIN42), np.std(TRAIN42, ddof=1)
    gc = v["grad-clip"]
    assert (gc.floor.name, gc.floor_kind, gc.verdict, gc.direction) == ("train@init_seed=42", "train", "signal", "better")
    assert gc.z == pytest.approx((5.0912 - m) / s)
    assert "initial weights are the baseline's" in words.floor_reason(gc.floor_reason)
    qkv = v["qkv-bias"]
    assert (qkv.floor.name, qkv.verdict, qkv.direction) == ("init@no-reseed", "noise", None)
    assert qkv.z == pytest.approx((5.0958 - np.mean(INIT)) / np.std(INIT, ddof=1))
    assert "differ from the baseline's" in words.floor_reason(qkv.floor_reason)
    assert (v["weight-tying"].verdict, v["weight-tying"].direction) == ("signal", "worse")
    assert v["weight-decay-0.01"].verdict == "noise"


def test_same_intervention_is_noise_against_the_init_floor_but_signal_against_the_training_loop_floor(tmp_path):
    """The key observation: Δ = -0.012 is 3 training-loop SDs but well inside the init floor."""
    rows = study_rows(BASE, [run("a", 42, None, 5.0912, True), run("b", 42, None, 5.0912, False)])
    v = verdicts_of(write_csv(tmp_path / "r.csv", rows))
    assert (v["a"].verdict, v["a"].floor_kind) == ("signal", "train")
    assert (v["b"].verdict, v["b"].floor_kind) == ("noise", "init")


def test_single_run_numbers_match_scipy(tmp_path):
    rows = study_rows(BASE, [run("gc", 42, None, 5.0912, True)])
    (v,) = analyse(write_csv(tmp_path / "r.csv", rows)).verdicts
    n, m, s = 3, np.mean(TRAIN42), np.std(TRAIN42, ddof=1)
    f = math.sqrt(1 + 1 / n)
    assert v.delta == pytest.approx(5.0912 - m)
    assert v.band_3sd == pytest.approx((m - 3 * s, m + 3 * s))
    assert v.prediction_interval_997 == pytest.approx((m - stats.t.ppf(0.9985, 2) * s * f, m + stats.t.ppf(0.9985, 2) * s * f))
    assert v.false_positive_rate_3sd == pytest.approx(2 * stats.t.sf(3 / f, 2))
    assert (v.welch, v.paired) == (None, None)  # one run: no Welch; one pair: no paired test
    assert v.primary.test == "prediction"
    assert v.primary.pvalue == pytest.approx(2 * stats.t.sf(abs(5.0912 - m) / (s * f), 2))
    assert v.p_holm == pytest.approx(v.primary.pvalue)  # a family of one


def test_several_init_seeds_against_the_init_floor_welch_matches_scipy(tmp_path):
    xs = {42: 5.0702, 22: 5.0975, 67: 5.0601}
    rows = study_rows(BASE, [run("qkv", i, None, x, False) for i, x in xs.items()])
    (v,) = analyse(write_csv(tmp_path / "r.csv", rows)).verdicts
    x = [xs[42], xs[22], xs[67]]
    assert v.floor.name == "init@no-reseed" and v.n_compared == 3
    assert v.delta == pytest.approx(np.mean(x) - np.mean(INIT))
    f = math.sqrt(1 / 3 + 1 / 3)  # mean of 3 new runs against the mean of 3 floor runs
    assert v.false_positive_rate_3sd == pytest.approx(2 * stats.t.sf(3 / f, 2))
    welch = stats.ttest_ind(x, INIT, equal_var=False)
    assert v.welch.pvalue == pytest.approx(welch.pvalue) and v.welch.df == pytest.approx(welch.df)
    # other initial weights: pairing by init seed would remove no init noise, so Welch is the test
    assert v.paired is None and v.n_pairs == 0 and v.primary.test == "welch"


def test_runs_sharing_an_init_seed_are_one_draw_from_the_init_floor(tmp_path):
    """Four re-seeded runs at one init seed vary only by the training loop: one value against the init floor."""
    losses = [5.1201, 5.1188, 5.1230, 5.1215]
    rows = study_rows(BASE, [run("qkv", 42, t, x, False) for t, x in zip((1, 2, 3, 4), losses)])
    (v,) = analyse(write_csv(tmp_path / "r.csv", rows)).verdicts
    assert v.n_compared == 1 and v.welch is None
    assert v.delta == pytest.approx(np.mean(losses) - np.mean(INIT))
    assert v.false_positive_rate_3sd == pytest.approx(2 * stats.t.sf(3 / math.sqrt(1 + 1 / 3), 2))
    assert any("averaged per init seed" in n for n in words.notes(v.notes))


def test_matched_delta_is_against_the_baseline_run_of_the_same_seeds(tmp_path):
    rows = study_rows(BASE, [run("clip", 42, None, BASE[(42, None)] - 0.002, True)])
    (v,) = analyse(write_csv(tmp_path / "r.csv", rows)).verdicts
    assert v.delta_matched == pytest.approx(-0.002) and v.n_pairs == 1
    assert v.delta == pytest.approx(BASE[(42, None)] - 0.002 - np.mean([BASE[(42, None)], BASE[(42, 23)], BASE[(42, 67)]]))


def test_same_init_at_several_init_seeds_is_paired_with_the_baseline_at_each_seed(tmp_path):
    """The rule for training-loop interventions whose runs span init seeds (docs/method.md)."""
    v = verdicts_of(STUDY)["lr-cosine"]
    x = {42: 5.0935, 22: 5.1150, 67: 5.0790}
    refs = {42: np.mean(TRAIN42), 22: BASE[(22, None)], 67: BASE[(67, None)]}
    delta = np.mean([x[i] - refs[i] for i in x])
    s = np.std(TRAIN42, ddof=1)
    assert v.floor.name == "train@init_seed=42" and "compared with the baseline at its own init seed" in words.floor_reason(v.floor_reason)
    assert v.delta == pytest.approx(delta)
    assert v.z == pytest.approx(delta / s)
    # Var(Δ) = s² (1/k + Σ c_I² / (k² n_I)) = s² (1/3 + (1/3 + 1 + 1) / 9)
    f = math.sqrt(1 / 3 + (1 / 3 + 1 + 1) / 9)
    assert v.false_positive_rate_3sd == pytest.approx(2 * stats.t.sf(3 / f, 2))
    assert v.welch is None  # runs at other init seeds are not draws of the floor at 42
    pairs = [(x[42], BASE[(42, None)]), (x[22], BASE[(22, None)]), (x[67], BASE[(67, None)])]
    ref = stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs])
    assert v.paired.pvalue == pytest.approx(ref.pvalue)


def test_same_init_at_an_init_seed_without_floor_borrows_the_training_loop_sd(tmp_path):
    rows = study_rows(BASE, [run("x", 22, None, 5.1051, True)])
    (v,) = analyse(write_csv(tmp_path / "r.csv", rows)).verdicts
    assert v.reference == BASE[(22, None)] and v.delta == pytest.approx(5.1051 - 5.1251)
    assert v.sd == pytest.approx(np.std(TRAIN42, ddof=1))
    assert v.false_positive_rate_3sd == pytest.approx(2 * stats.t.sf(3 / math.sqrt(2), 2))  # two single runs


def test_undecided_with_the_reason(tmp_path):
    init_only = {(42, None): 5.10, (22, None): 5.12}
    rows = study_rows(init_only, [run("same", 42, None, 5.0, True), run("diff", 42, None, 5.0, False)])
    v = verdicts_of(write_csv(tmp_path / "a.csv", rows))
    # same_init=true without a training-loop floor falls back to the init floor, like an unknown same_init
    assert v["same"].verdict == "signal" and v["same"].floor.name == "init@no-reseed"
    assert "training-loop floor is missing: judged against the init floor" in words.note(v["same"].notes[-1])
    assert v["diff"].verdict == "signal"
    rows = study_rows(BASE, [run("elsewhere", 7, None, 5.0, True)])
    (v,) = analyse(write_csv(tmp_path / "b.csv", rows)).verdicts
    assert v.verdict == "undecided" and "no baseline run at its init seed" in words.note(v.notes[-1])
    train_only = {(42, None): 5.10, (42, 23): 5.11}
    rows = study_rows(train_only, [run("diff", 42, None, 5.0, False)])
    (v,) = analyse(write_csv(tmp_path / "c.csv", rows)).verdicts
    assert v.verdict == "undecided" and "no init floor" in words.note(v.notes[-1])


def test_init_floor_at_another_stream_setting_falls_back_to_the_largest(tmp_path):
    rows = study_rows(BASE, [run("x", 42, 23, 5.2, False)])
    (v,) = analyse(write_csv(tmp_path / "r.csv", rows)).verdicts
    assert v.floor.name == "init@no-reseed" and "using the largest init floor" in words.floor_reason(v.floor_reason)


def test_verdicts_do_not_change_the_exit_code(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["classify", str(STUDY)]) == 0
    assert "signal (better)" in capsys.readouterr().out


def test_holm_matches_a_hand_implementation():
    p = [0.01, 0.04, 0.03, 0.5, 0.002]
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    assert tests.holm(p) == pytest.approx(list(adjusted))
    from statsmodels.stats.multitest import multipletests

    ties = [0.01, 0.01, 0.2, 0.03, 0.9, 0.03, 1e-8]
    assert tests.holm(ties) == pytest.approx(list(multipletests(ties, method="holm")[1]), rel=1e-12)


def test_holm_is_applied_across_interventions():
    analysis = analyse(STUDY)
    raw = [v.primary.pvalue for v in analysis.verdicts]
    assert [v.p_holm for v in analysis.verdicts] == pytest.approx(tests.holm(raw))
    assert all(v.p_holm >= v.primary.pvalue for v in analysis.verdicts)


@pytest.mark.parametrize("effect", [0.2, 0.5, 0.8, 1.5, 3.0])
def test_seeds_needed_matches_statsmodels(effect):
    expected = math.ceil(TTestIndPower().solve_power(effect_size=effect, alpha=0.05, power=0.8))
    assert tests.seeds_needed(effect * 0.01, 0.01) == max(2, expected)
    n = expected
    assert tests.two_sample_power(effect, n) == pytest.approx(TTestIndPower().power(effect, n, 0.05), abs=1e-8)


def test_power_for_huge_effects_where_the_noncentral_t_fails():
    assert tests.two_sample_power(17.87, 2) == pytest.approx(TTestIndPower().power(17.87, 2, 0.05), abs=1e-9)
    huge = tests.two_sample_power(20.2, 2)  # scipy's nct gives NaN here; integrated directly
    assert tests.two_sample_power(17.87, 2) <= huge <= 1.0
    assert tests.seeds_needed(20.2, 1.0) == 2
    assert tests.seeds_needed(0.0, 1.0) is None and tests.seeds_needed(1.0, 0.0) is None


def test_t_tests_without_spread_are_undefined_not_zero():
    assert tests.welch([5.0, 5.0], [5.1, 5.1]).pvalue is None
    assert tests.welch([5.0, 5.0], [5.1, 5.1]).undefined is tests.Undefined.NO_SPREAD
    # equal differences in decimal, unequal in their last bits: still no spread
    assert tests.paired([5.0, 5.1], [5.1, 5.2]).pvalue is None
    assert tests.paired([5.0, 5.1], [5.1, 5.2001]).pvalue == pytest.approx(stats.ttest_rel([5.0, 5.1], [5.1, 5.2001]).pvalue)


def test_a_floor_differing_only_in_floating_point_noise_is_constant(tmp_path):
    rows = [run("baseline", 42, None, 5.1), run("baseline", 42, 23, 5.1000000000001), run("x", 42, None, 5.1001, True)]
    (v,) = analyse(write_csv(tmp_path / "r.csv", rows)).verdicts
    assert v.verdict == "undecided" and v.floor.constant and v.floor.sd == 0.0


def test_zero_spread_floor_reports_no_rate_and_no_zero_width_interval(tmp_path):
    rows = [run("baseline", 42, None, 5.1), run("baseline", 42, 23, 5.1), run("x", 42, None, 5.1001, True)]
    analysis = analyse(write_csv(tmp_path / "r.csv", rows))
    (v,) = analysis.verdicts
    assert v.verdict == "undecided" and v.decision == "undecided"
    assert (v.false_positive_rate_3sd, v.prediction_interval_997, v.band_3sd) == (None, None, None)
    (floor,) = words.analysis_json(analysis)["floors"]
    assert floor["false_positive_rate_3sd"] is None and floor["prediction_interval_997"] is None


def test_same_init_with_a_zero_spread_training_loop_floor_falls_back_to_the_init_floor(tmp_path):
    base = {(42, None): 5.10, (42, 23): 5.10, (22, None): 5.12, (67, None): 5.09}
    rows = study_rows(base, [run("x", 42, None, 5.0, True)])
    with_column = {v.intervention: v for v in analyse(write_csv(tmp_path / "a.csv", rows)).verdicts}["x"]
    rows_unknown = study_rows(base, [run("x", 42, None, 5.0, None)])
    unknown = analyse(write_csv(tmp_path / "b.csv", rows_unknown)).verdicts[0]
    assert with_column.floor.name == unknown.floor.name == "init@no-reseed"  # knowing more does not lose the verdict
    assert (with_column.verdict, with_column.delta) == (unknown.verdict, unknown.delta)
    assert "training-loop floor has no spread: judged against the init floor" in words.note(with_column.notes[-1])


def test_training_loop_sd_is_pooled_across_init_seeds(tmp_path):
    """3x3 grid: pooled s² = Σ (n_i - 1) s_i² / Σ (n_i - 1) with 6 df, not one seed's 2 df."""
    grid = {(42, None): 5.1032, (42, 23): 5.1068, (42, 67): 5.0991, (22, None): 5.1251, (22, 23): 5.1190,
            (22, 67): 5.1302, (67, None): 5.0874, (67, 23): 5.0930, (67, 67): 5.0861}  # fmt: skip
    rows = study_rows(grid, [run("x", 22, 23, 5.1010, True)])
    analysis = analyse(write_csv(tmp_path / "r.csv", rows))
    (v,) = analysis.verdicts
    variances = [np.var([x for (i, _), x in grid.items() if i == seed], ddof=1) for seed in (42, 22, 67)]
    pooled = math.sqrt(sum(2 * s2 for s2 in variances) / 6)
    assert v.floor.name == "train@init_seed=22" and "pooled" in words.floor_reason(v.floor_reason)
    assert (v.sd, v.df) == (pytest.approx(pooled), 6)
    assert v.reference == pytest.approx(np.mean([grid[(22, t)] for t in (None, 23, 67)]))
    f = math.sqrt(1 + 1 / 3)
    assert v.false_positive_rate_3sd == pytest.approx(2 * stats.t.sf(3 / f, 6))
    half = stats.t.ppf(0.9985, 6) * pooled * f
    assert v.prediction_interval_997 == pytest.approx((v.reference - half, v.reference + half))
    assert v.paired is None and v.primary.test == "prediction" and v.prediction.df == 6  # one pair: prediction test
    assert words.analysis_json(analysis)["pooled_training_loop_sd"]["df"] == 6
    assert any(n.startswith("training-loop SD pooled over the 3 training-loop floors") for n in words.notes(analysis.notes))


@pytest.mark.parametrize("effect", [0.004, 0.03])
def test_plan_from_a_stated_effect_matches_statsmodels(effect, capsys):
    """`noisefloor plan --effect`: seeds per arm for 80% power at the stated effect, from each floor's SD."""
    import json

    assert main(["plan", str(STUDY), "--effect", str(effect), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    analysis = analyse(STUDY)
    for row in plan["floors"]:
        sd = analysis.floor(row["floor"]).sd
        if TTestIndPower().power(effect / sd, 2, 0.05) >= 0.8:
            expected = 2  # statsmodels' solver gives NaN below 2 per arm
        else:
            expected = math.ceil(TTestIndPower().solve_power(effect_size=effect / sd, alpha=0.05, power=0.8))
        assert row["seeds_per_arm"] == expected and row["sd"] == pytest.approx(sd)
        if row["sequential_mean_seeds"] is not None:  # the anytime-valid rule stops early when it can
            assert FIRST_LOOK <= row["sequential_mean_seeds"] <= 3 * max(row["seeds_per_arm"], FIRST_LOOK)


def test_plan_needs_a_positive_effect(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["plan", str(STUDY), "--effect", "0"])
    assert exit_.value.code == 2 and "must be a positive number" in capsys.readouterr().err
