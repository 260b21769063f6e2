"""Do the improvements add up? Main effects and interactions against cell means worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_helpers import BASE, STUDY, run, study_rows, write_csv
from scipy import stats

from noisefloor.stats.classify import analyse


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
    assert "adding up" in interaction.reading


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
    assert [(term, "assume it is 0" in why) for term, why in f.not_estimable] == [("a x b", True)]


def test_no_combinations_no_factorial():
    from analysis_helpers import HAND

    assert analyse(HAND).factorial is None
