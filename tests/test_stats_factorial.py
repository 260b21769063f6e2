"""Do the improvements add up? Main effects and interactions against cell means worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_helpers import BASE, STUDY, run, study_rows, write_csv
from scipy import stats

from noisefloor.report import words
from noisefloor.stats.classify import analyse
from noisefloor.stats.factorial import Reading


def test_two_by_two_at_one_init_seed_worked_by_hand(tmp_path):
    base = [5.1032, 5.1068, 5.0991]  # three training streams at init 42: the residual df
    a, b, ab = 5.0912, 5.0342, 5.0251
    rows = [run("baseline", 42, t, x) for t, x in zip((None, 23, 67), base)]
    rows += [run("grad-clip", 42, None, a), run("no-dropout", 42, None, b), run("grad-clip+no-dropout", 42, None, ab)]
    f = analyse(write_csv(tmp_path / "r.csv", rows)).factorial
    terms = {t.term: t for t in f.terms}
    m = np.mean(base)
    assert terms["grad-clip"].estimate == pytest.approx(a - m)
    assert terms["no-dropout"].estimate == pytest.approx(b - m)
    interaction = terms["grad-clip x no-dropout"]
    assert interaction.estimate == pytest.approx(ab - a - b + m)
    # Only the baseline cell has replicates: residual SD = baseline SD with 2 df, and
    # Var(ab - a - b + mean3) = s^2 (1 + 1 + 1 + 1/3).
    s = np.std(base, ddof=1)
    assert f.df_resid == 2
    assert interaction.se == pytest.approx(s * math.sqrt(3 + 1 / 3))
    t = interaction.estimate / interaction.se
    assert interaction.p_value == pytest.approx(2 * stats.t.sf(abs(t), 2))
    assert interaction.ci95 == pytest.approx(
        (interaction.estimate - stats.t.ppf(0.975, 2) * interaction.se, interaction.estimate + stats.t.ppf(0.975, 2) * interaction.se)
    )
    assert interaction.reading is Reading.ADDS_UP and "adding up" in words.term_reading(interaction)


def test_study_blocks_by_init_seed():
    """Baseline runs at 22 and 67 only inform their own block: the effects are the same as at 42 alone."""
    f = analyse(STUDY).factorial
    assert f.blocks == (22, 42, 67) and f.factors == ("grad-clip", "no-dropout") and f.n_runs == 8
    terms = {t.term: t for t in f.terms}
    m42 = np.mean([5.1032, 5.1068, 5.0991])
    assert terms["grad-clip x no-dropout"].estimate == pytest.approx(5.0251 - 5.0912 - 5.0342 + m42)


def test_combination_without_its_parts_alone_is_not_estimable(tmp_path):
    rows = study_rows(BASE, [run("a", 42, None, 5.09), run("a+b", 42, None, 5.05)])
    f = analyse(write_csv(tmp_path / "r.csv", rows)).factorial
    assert [t.term for t in f.terms] == ["a", "b"]  # b = (a+b) - a, assuming no interaction, as the note says
    assert [(term, "assume it is 0" in words.NOT_ESTIMABLE[why]) for term, why in f.not_estimable] == [("a x b", True)]


def test_no_combinations_no_factorial():
    from analysis_helpers import HAND

    assert analyse(HAND).factorial is None


def _init_changing_study(rng) -> str:
    """L-shaped baseline (init seeds 1/2/3, streams at 1) and two init-changing interventions alone and together,
    one run each at init seed 1; no effects at all. Init SD 0.019 and loop SD 0.006, as measured in the issue."""
    lines = ["intervention,init_seed,train_seed,test_loss,same_init"]
    level = {s: 5.0 + rng.normal(0, 0.019) for s in (1, 2, 3)}
    for seed, train in ((1, ""), (2, ""), (3, ""), (1, "23"), (1, "67")):
        lines.append(f"baseline,{seed},{train},{float(level[seed] + rng.normal(0, 0.006))!r},true")
    for name in ("qkv-bias", "tied", "qkv-bias+tied"):
        for seed in (1,):  # new initial weights: a fresh init draw
            lines.append(f"{name},{seed},,{float(5.0 + rng.normal(0, 0.019) + rng.normal(0, 0.006))!r},false")
    return "\n".join(lines) + "\n"


def test_interaction_of_init_changing_interventions_carries_init_variance():
    """Under no effect, the interaction of two init-changing interventions came out p < .05 in 69% of studies when
    judged on training-loop noise; with the variance components in its SE it stays near alpha."""
    from noisefloor.stats.components import Components
    from noisefloor.stats.factorial import factorial_effects
    from noisefloor.stats.table import results_from_text

    truth = Components(5, 3, False, var_init=0.019**2, var_stream=None, var_residual=0.006**2)
    rng = np.random.default_rng(17)
    studies = 150
    p_new, p_old = [], []
    for _ in range(studies):
        cells = results_from_text(_init_changing_study(rng), "sim.csv").cells
        terms = {t.term: t for t in factorial_effects(cells, truth).terms}
        p_new.append(terms["qkv-bias x tied"].p_value)
        old = {t.term: t for t in factorial_effects(cells.assign(same_init=True), truth).terms}  # loop noise only
        p_old.append(old["qkv-bias x tied"].p_value)
        assert terms["qkv-bias x tied"].changes_init and not old["qkv-bias x tied"].changes_init
    assert np.mean(np.array(p_new) < 0.05) <= 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / studies)
    assert np.mean(np.array(p_old) < 0.05) > 0.3


def test_interaction_se_by_hand_with_init_variance(tmp_path):
    """One init seed, every intervention run a fresh init draw: Var(ab - a - b + mean3) = 3 (v_i + v_t) + v_i + v_t / 3
    (the baseline's three runs share one draw, their seed's, which none of the new draws cancels)."""
    from noisefloor.stats.components import Components
    from noisefloor.stats.factorial import factorial_effects
    from noisefloor.stats.table import results_from_text

    text = _init_changing_study(np.random.default_rng(1))
    cells = results_from_text(text, "sim.csv").cells
    one_seed = cells[cells["init_seed"] == 1]
    c = Components(5, 3, False, var_init=4e-4, var_stream=None, var_residual=4e-5)
    terms = {t.term: t for t in factorial_effects(one_seed, c).terms}
    assert terms["qkv-bias x tied"].se == pytest.approx(math.sqrt(3 * (4e-4 + 4e-5) + 4e-4 + 4e-5 / 3))


def test_interaction_df_is_satterthwaites_from_the_components_covariance():
    """SE² = a_i v_i + a_t v_t with estimated components: df = floor(2 SE⁴ / w'Σw), w = (a_i, a_t), Σ the REML
    covariance of (v_i, v_t); with a well-determined init component the df stays the residual df."""
    from noisefloor.stats.components import Components
    from noisefloor.stats.factorial import factorial_effects
    from noisefloor.stats.table import results_from_text

    cells = results_from_text(_init_changing_study(np.random.default_rng(1)), "sim.csv").cells
    one_seed = cells[cells["init_seed"] == 1]
    weights = np.array([4.0, 3.0 + 1.0 / 3.0])  # from the by-hand variance above
    variance = weights @ [4e-4, 4e-5]
    for var_init_variance, expected in ((3e-7, None), (1e-14, "residual")):
        covariance = ((var_init_variance, 0.0), (0.0, 1e-12))
        c = Components(5, 3, False, var_init=4e-4, var_stream=None, var_residual=4e-5, covariance=covariance)
        fitted = factorial_effects(one_seed, c)
        term = {t.term: t for t in fitted.terms}["qkv-bias x tied"]
        satterthwaite = math.floor(2 * variance**2 / (weights @ np.array(covariance) @ weights))
        if expected == "residual":
            assert satterthwaite > fitted.df_resid and term.df == fitted.df_resid
        else:
            assert 1 <= satterthwaite < fitted.df_resid and term.df == satterthwaite
