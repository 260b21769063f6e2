"""Fractional-factorial designs checked against the full factorial and by brute force."""

from __future__ import annotations

from itertools import combinations, product

import numpy as np
import pytest

from noisefloor.errors import UserError
from noisefloor.stats import design
from noisefloor.stats.design import GENERATORS, LETTERS, choose, defining_words, low_order_effects, recognise, regular

CASES = sorted(GENERATORS) + [(k, 2**k) for k in range(2, 8)]


def _column(matrix: np.ndarray, effect) -> np.ndarray:
    """An effect's ±1 column: the product of its factors' ±1 codings."""
    return np.prod(2 * matrix[:, sorted(effect)] - 1, axis=1)


@pytest.mark.parametrize("k,runs", CASES)
def test_design_is_a_fraction_of_the_full_factorial_with_orthogonal_columns(k, runs):
    d = regular(tuple(LETTERS[:k].lower()), runs)
    m = d.matrix()
    full = {tuple(r) for r in product((0, 1), repeat=k)}
    assert m.shape == (runs, k) and len({tuple(r) for r in m}) == runs and {tuple(r) for r in m} <= full
    assert tuple(m[0]) == (0,) * k and d.rows()[0] == "baseline"
    # Every main effect balanced (half the runs on) and distinct effect columns orthogonal unless aliased.
    assert (m.sum(axis=0) == runs // 2).all()
    effects = low_order_effects(k)
    for a, b in combinations(effects, 2):
        dot = _column(m, a) @ _column(m, b)
        assert abs(dot) in (0, runs)
        assert (abs(dot) == runs) == (b in d.aliases(a))  # aliases from the defining words = equal columns
    # Resolution: the shortest defining word; a word's column is constant over the design (the all-off row's sign).
    for word in d.words:
        assert (_column(m, word) == (-1) ** len(word)).all()
    assert d.resolution == min((len(w) for w in d.words), default=design.FULL)
    assert len(d.words) == 2**d.p - 1


def _wordlength_pattern(words) -> tuple[int, ...]:
    return tuple(sum(1 for w in words if len(w) == n) for n in range(3, 8))


@pytest.mark.parametrize("k,runs", sorted(GENERATORS))
def test_generators_are_minimum_aberration(k, runs):
    """No other choice of generators (interactions of the basic factors) has a smaller word-length pattern."""
    base = LETTERS[: k - len(GENERATORS[(k, runs)])]
    candidates = ["".join(c) for n in range(2, len(base) + 1) for c in combinations(base, n)]
    added = LETTERS[len(base) : k]
    best = min(
        _wordlength_pattern(defining_words(tuple(f"{x}={g}" for x, g in zip(added, chosen))))
        for chosen in combinations(candidates, len(added))
    )
    assert _wordlength_pattern(regular(tuple(LETTERS[:k]), runs).words) == best


def test_run_counts_and_resolutions_for_3_to_7_interventions():
    chosen = {k: choose([f"f{i}" for i in range(k)]) for k in range(3, 8)}  # default: resolution V or better
    assert {k: (d.runs, d.full_runs) for k, d in chosen.items()} == {3: (8, 8), 4: (16, 16), 5: (16, 32), 6: (32, 64), 7: (64, 128)}
    assert [d.resolution for d in chosen.values()] == [design.FULL, design.FULL, 5, 6, 7]
    smallest = {k: choose([f"f{i}" for i in range(k)], runs=1) for k in range(3, 8)}  # --runs: at least resolution III
    assert {k: (d.runs, d.resolution) for k, d in smallest.items()} == {3: (4, 3), 4: (8, 4), 5: (8, 3), 6: (8, 3), 7: (8, 3)}
    assert choose(list("abcde"), runs=9).runs == 16 and choose(list("abcdefg"), resolution=4).runs == 16


def test_resolution_iii_aliases_main_effects_with_two_factor_interactions():
    d = choose(["grad-clip", "no-dropout", "wd-0.01"], runs=4)
    assert d.defining_relation == "I = ABC" and d.resolution_name == "resolution III"
    assert d.rows() == ["baseline", "grad-clip+wd-0.01", "no-dropout+wd-0.01", "grad-clip+no-dropout"]
    assert [(d.name(e), [d.name(a) for a in al]) for e, al in d.alias_chains()] == [
        ("grad-clip", ["no-dropout x wd-0.01"]), ("no-dropout", ["grad-clip x wd-0.01"]), ("wd-0.01", ["grad-clip x no-dropout"])
    ]


def test_resolution_v_keeps_all_main_effects_and_two_factor_interactions_apart():
    d = choose(["grad-clip", "no-dropout", "wd-0.01", "lr-schedule", "qkv-bias"], runs=16)
    assert (d.runs, d.resolution, d.generators) == (16, 5, ("E=ABCD",))
    assert all(not aliased for _, aliased in d.alias_chains()) and len(d.alias_chains()) == 15


def test_init_seed_blocks_are_orthogonal_to_every_effect():
    d = choose(list("abcde"), runs=8)
    m = np.vstack([d.matrix(), d.matrix()])  # the design replicated at two init seeds
    block = np.repeat([-1, 1], d.runs)
    assert all(_column(m, e) @ block == 0 for e in low_order_effects(5))


@pytest.mark.parametrize("k,runs", CASES)
def test_a_design_is_recognised_from_its_rows(k, runs):
    d = regular(tuple(LETTERS[:k]), runs)
    rng = np.random.default_rng(k * runs)
    found = recognise(d.factors, d.matrix()[rng.permutation(runs)])
    assert found is not None and set(found.words) == set(d.words) and found.runs == runs


def test_rows_that_are_no_regular_design_are_not_recognised():
    assert recognise(("a", "b", "c"), np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])) is None  # one at a time
    assert recognise(("a", "b", "c"), np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]])) is None  # no baseline


def test_user_mistakes_are_one_line():
    with pytest.raises(UserError, match="2 to 7 interventions"):
        choose(["grad-clip"])
    with pytest.raises(UserError, match="give single interventions"):
        choose(["grad-clip+no-dropout", "wd-0.01"])
    with pytest.raises(UserError, match="listed twice"):
        choose(["a", "a", "b"])
    with pytest.raises(UserError, match="more than the full factorial"):
        choose(["a", "b", "c"], runs=16)


def test_half_normal_scores_and_lenth_pseudo_standard_error():
    from scipy import stats

    from noisefloor.stats.factorial import half_normal_scores, lenth_pse

    n = 15
    assert half_normal_scores(n) == pytest.approx(stats.halfnorm.ppf((np.arange(1, n + 1) - 0.5) / n))
    # Lenth (1989): s0 = 1.5 median |c| = 1.5 x 2 = 3; |c| < 7.5 leaves 1, 1, 1, 2, 3 (median 1): PSE = 1.5
    assert lenth_pse([1.0, -1.0, 1.0, 2.0, -3.0, 10.0, -20.0]) == pytest.approx(1.5)
    # Under no effect the PSE estimates the effects' SD (Lenth's consistency factor 1.5), checked on 4,000 draws
    rng = np.random.default_rng(5)
    assert np.median([lenth_pse(rng.normal(0, 0.01, 15)) for _ in range(4000)]) == pytest.approx(0.01, rel=0.05)
