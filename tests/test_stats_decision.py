"""The decision beside the 3-SD rule: its error rates by simulation through the real analysis, its numbers
against scipy; the anytime-valid e-value under optional stopping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_helpers import STUDY, no_gc_in_holm  # noqa: F401 (fixture)
from scipy import stats

from noisefloor.stats import sequential
from noisefloor.report import words
from noisefloor.stats.classify import analyse, analyse_results
from noisefloor.stats.table import results_from_text

pytestmark = pytest.mark.usefixtures("no_gc_in_holm")
STREAMS = ("", "23", "67")  # no re-seed and two train seeds: the users' training-loop floor at init seed 42
SIGMA = 0.006  # training-loop SD (nats/token), as measured in the issue


def study(rng, effects, paired: bool, n: int = 3) -> str:
    """One results file: n baseline runs at init seed 42 and, per effect, an intervention that keeps the initial
    weights: one run (no re-seed) or, paired, a run at each of the baseline's n streams."""
    streams = STREAMS[:n] if n <= 3 else STREAMS + tuple(str(100 + i) for i in range(n - 3))
    lines = ["intervention,init_seed,train_seed,test_loss,same_init"]
    lines += [f"baseline,42,{t},{float(5.0 + SIGMA * z)!r},true" for t, z in zip(streams, rng.standard_normal(n))]
    for k, effect in enumerate(effects):
        own = streams if paired else streams[:1]
        lines += [f"iv{k},42,{t},{float(5.0 + effect + SIGMA * z)!r},true" for t, z in zip(own, rng.standard_normal(len(own)))]
    return "\n".join(lines) + "\n"


def analysed(text: str, margin=None):
    return analyse_results(results_from_text(text, "simulated.csv"), 0.05, margin)


def test_signal_is_family_wise_controlled_with_six_null_interventions_sharing_a_floor():
    """6 no-effect interventions judged against one 3-run floor: the 3-SD rule calls at least one of them signal
    in about a third of the studies (the issue: 33%); the decision (Holm) in at most alpha."""
    rng = np.random.default_rng(2024)
    studies = 240
    any_decision = any_3sd = 0
    for _ in range(studies):
        verdicts = analysed(study(rng, [0.0] * 6, paired=False)).verdicts
        any_decision += any(v.decision == "signal" for v in verdicts)
        any_3sd += any(v.verdict == "signal" for v in verdicts)
    sampling_sd = math.sqrt(0.05 * 0.95 / studies)
    assert any_decision / studies <= 0.05 + 2.33 * sampling_sd, any_decision / studies
    assert any_3sd / studies > 0.2, any_3sd / studies


def test_noise_needs_the_interval_inside_the_margin_and_errs_at_most_alpha_at_the_margin():
    """A true effect exactly at the margin is decided noise (equivalence, TOST) in at most alpha of cases;
    without a margin nothing is ever noise."""
    rng = np.random.default_rng(7)
    margin = 2 * SIGMA
    decisions = []
    for _ in range(150):
        text = study(rng, [margin, -margin, margin, -margin, margin, -margin], paired=True)
        decisions += [v.decision for v in analysed(text, margin).verdicts]
        if len(decisions) == 6:
            assert all(v.decision != "noise" for v in analysed(text).verdicts)
    rate = np.mean([d == "noise" for d in decisions])
    assert rate <= 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / len(decisions)), rate
    # and with no effect and plenty of paired runs it does decide noise
    verdicts = analysed(study(rng, [0.0] * 3, paired=True, n=12), margin).verdicts
    assert [v.decision for v in verdicts] == ["noise"] * 3


def test_interval_and_margin_match_scipy():
    rng = np.random.default_rng(3)
    text = study(rng, [0.004], paired=True)
    (v,) = analysed(text, margin=0.05).verdicts
    rows = [line.split(",") for line in text.splitlines()[1:]]
    base = [float(r[3]) for r in rows if r[0] == "baseline"]
    runs = [float(r[3]) for r in rows if r[0] == "iv0"]
    expected = stats.ttest_rel(runs, base).confidence_interval(0.90)
    assert v.primary.test == "paired" and v.ci == pytest.approx((expected.low, expected.high), rel=1e-10)
    assert v.margin_for_noise == pytest.approx(max(abs(expected.low), abs(expected.high)))
    assert v.decision == "noise"  # single intervention: Holm p = p
    welch = stats.ttest_ind(runs, base, equal_var=False)
    assert (v.welch.pvalue, v.welch.df) == pytest.approx((welch.pvalue, welch.df), rel=1e-10)
    low, high = welch.confidence_interval(0.90)
    assert v.welch.confidence_interval(0.90) == pytest.approx((low, high), rel=1e-10)


def test_study_file_decisions_and_disagreements():
    verdicts = {v.intervention: v for v in analyse(STUDY).verdicts}
    grad = verdicts["grad-clip"]  # the example: 3-SD signal with Holm p = 0.35
    assert (grad.verdict, grad.decision, grad.agrees_with_3sd_rule) == ("signal", "undecided", False)
    assert "Holm p = 0.351" in words.disagreement(grad) and "no --margin given" in words.disagreement(grad)
    assert verdicts["no-dropout"].decision == "signal" and verdicts["no-dropout"].agrees_with_3sd_rule
    assert verdicts["lr-cosine"].decision_direction == "better" and verdicts["lr-cosine"].verdict == "noise"
    json = words.analysis_json(analyse(STUDY, margin=0.02))
    assert json["margin"] == 0.02 and json["interventions"][0]["decision"] == "undecided"
    first = list(json["interventions"][0])
    assert first[:2] == ["intervention", "decision"]  # the JSON leads with the decision


# ---- anytime validity ---------------------------------------------------------------------------------------


def test_e_value_matches_the_bayes_factor_by_quadrature():
    """The closed form against the Bayes factor integrated numerically over sigma with the right-Haar prior
    d(sigma)/sigma: under the alternative, mean = delta sigma with delta ~ N(0, g), i.e. d ~ N(0, sigma² (I + g 11'))."""
    from scipy import integrate

    d = np.array([0.3, -0.1, 0.5, 0.2, 0.45])
    n = len(d)

    def marginal(g: float) -> float:
        cov = np.eye(n) + g * np.ones((n, n))
        density = lambda log_sigma: stats.multivariate_normal.pdf(d, np.zeros(n), np.exp(2 * log_sigma) * cov)  # noqa: E731
        return integrate.quad(density, -12, 6, limit=400, epsabs=0, epsrel=1e-11)[0]

    assert sequential.e_value_paired(d) == pytest.approx(marginal(sequential.PRIOR_G) / marginal(0.0), rel=1e-6)


def test_anytime_valid_under_optional_stopping():
    """Look after every added seed from 3 to 20, stop at the first 'signal': the e-value (e >= 1/alpha) keeps
    the type I error below alpha; the fixed-n t-test re-run at each look does not (about 3x alpha)."""
    rng = np.random.default_rng(11)
    d = rng.standard_normal((20_000, 20))
    t, n = sequential.running_t(d)  # looks at n = 2..20
    looks = n >= 3
    t, n = t[:, looks], n[looks]
    e = np.exp(sequential.log_bayes_factor(t, n, n - 1))
    p = 2 * stats.t.sf(np.abs(t), n - 1)
    anytime = (e >= 20).any(axis=1).mean()
    fixed = (p < 0.05).any(axis=1).mean()
    assert anytime <= 0.05
    assert fixed > 0.12
    # and it has power: a 1.5-SD paired effect is found by n = 20 most of the time
    t1, _ = sequential.running_t(rng.standard_normal((2_000, 20)) + 1.5)
    assert (np.exp(sequential.log_bayes_factor(t1[:, 1:], n, n - 1)) >= 20).any(axis=1).mean() > 0.8


def test_e_value_in_classify():
    rng = np.random.default_rng(5)
    text = study(rng, [6 * SIGMA], paired=True, n=12)
    (v,) = analysed(text).verdicts
    rows = [line.split(",") for line in text.splitlines()[1:]]
    base, runs = ([float(r[3]) for r in rows if r[0] == name] for name in ("baseline", "iv0"))
    t = stats.ttest_rel(runs, base).statistic
    n, g = 12, sequential.PRIOR_G
    by_hand = (1 + n * g) ** -0.5 * ((1 + t * t / (n - 1)) / (1 + t * t / ((n - 1) * (1 + n * g)))) ** (n / 2)
    assert v.e_value == pytest.approx(by_hand, rel=1e-9) and v.e_value >= 20 and v.anytime_signal
    (v,) = analysed(study(rng, [0.0], paired=False)).verdicts
    assert v.e_value is not None and v.e_value < 20 and v.anytime_signal is False


def test_the_cli_defaults_are_the_statistics_defaults():
    """The CLI states alpha and power without importing scipy; classify, report, plan and sweep must still
    default to the levels the statistics (and their calibration tests) use."""
    from noisefloor import cli
    from noisefloor.stats import tests

    assert (cli.DEFAULT_ALPHA, cli.DEFAULT_POWER) == (tests.ALPHA, tests.POWER)
