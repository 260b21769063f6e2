"""Variance components against an independent REML fit (numpy + scipy.optimize) and ANOVA by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_helpers import BASE, run, study_rows, write_csv
from scipy import optimize

from noisefloor.report import words
from noisefloor.stats.classify import analyse
from noisefloor.stats.components import ComponentsMissing


def reml_reference(y: np.ndarray, groupings: list[np.ndarray], x: np.ndarray | None = None) -> np.ndarray:
    """Minimise the restricted -2 log-likelihood of y = x beta + sum_g u_g + e directly (x: an intercept by default).

    Returns the variances (one per grouping, then the residual).
    """
    y = np.asarray(y, float)
    centre, scale = y.mean(), y.std()
    y = (y - centre) / scale
    n = len(y)
    zs = [(g[:, None] == np.unique(g)[None, :]).astype(float) for g in groupings]
    x = np.ones((n, 1)) if x is None else x

    def objective(log_var):
        var = np.exp(log_var)
        v = var[-1] * np.eye(n) + sum(s * z @ z.T for s, z in zip(var, zs))
        vi = np.linalg.inv(v)
        xtvix = x.T @ vi @ x
        beta = np.linalg.solve(xtvix, x.T @ vi @ y)
        r = y - x @ beta
        return np.linalg.slogdet(v)[1] + np.linalg.slogdet(xtvix)[1] + r @ vi @ r

    best = optimize.minimize(objective, np.zeros(len(zs) + 1), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
    return np.exp(best.x) * scale**2


def test_study_l_shape_matches_reml_by_hand(tmp_path):
    """init floor at 42/22/67 + training-loop floor at 42: random intercept per init seed."""
    analysis = analyse(write_csv(tmp_path / "r.csv", study_rows(BASE)))
    c = analysis.components
    assert c is not None and not c.crossed and c.n_runs == 5 and c.n_init_seeds == 3
    inits = np.array([i for (i, _t) in BASE])
    var_init, var_resid = reml_reference(np.array(list(BASE.values())), [inits])
    assert c.var_init == pytest.approx(var_init, rel=1e-4)
    assert c.var_train == pytest.approx(var_resid, rel=1e-4)
    assert c.share_init + c.share_train == pytest.approx(1.0)
    assert c.share_init > 0.5  # the init seed dominates in this study, as in the users' experience


def test_balanced_crossed_grid_matches_anova_by_hand(tmp_path):
    rng = np.random.default_rng(3)
    inits, trains = [1, 2, 3, 4], [10, 20, 30]
    a, b = rng.normal(0, 0.03, len(inits)), rng.normal(0, 0.01, len(trains))
    y = np.array([[5.0 + a[i] + b[j] + rng.normal(0, 0.004) for j in range(3)] for i in range(4)])
    # two-way ANOVA without interaction, one observation per cell: expected mean squares
    g = y.mean()
    ms_init = 3 * ((y.mean(1) - g) ** 2).sum() / 3
    ms_train = 4 * ((y.mean(0) - g) ** 2).sum() / 2
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + g
    ms_e = (resid**2).sum() / (3 * 2)
    var_init, var_train, var_e = (ms_init - ms_e) / 3, (ms_train - ms_e) / 4, ms_e
    assert min(var_init, var_train) > 0  # REML equals ANOVA for balanced data with positive estimates
    rows = [run("baseline", inits[i], trains[j], y[i, j]) for i in range(4) for j in range(3)]
    c = analyse(write_csv(tmp_path / "r.csv", rows)).components
    assert c.crossed
    assert c.var_init == pytest.approx(var_init, rel=1e-4)
    assert c.var_stream == pytest.approx(var_train, rel=1e-4)
    assert c.var_residual == pytest.approx(var_e, rel=1e-4)
    assert c.var_train == pytest.approx(var_train + var_e, rel=1e-4)


def test_components_need_two_init_seeds_and_two_streams(tmp_path):
    rows = study_rows({(42, None): 5.10, (22, None): 5.12, (67, None): 5.09})
    analysis = analyse(write_csv(tmp_path / "r.csv", rows))
    assert analysis.components is None
    assert analysis.components_missing == ComponentsMissing(n_draws=3, df_within=0)  # facts; words.py words them
    note = words.components_missing(analysis.components_missing)
    assert "need runs at >= 2 init seeds" in note and "found 3 init draw(s), 0 degree" in note
    # an init-changing intervention draws new weights at each seed: still nothing within a draw
    changed = [run("qkv-bias", s, None, 5.1 + 0.01 * k, False) for k, s in enumerate((42, 22, 67))]
    assert analyse(write_csv(tmp_path / "r.csv", rows + changed)).components is None
    # a same-init intervention beside the baseline at each seed: its runs share the seeds' draws (3 - 1 df)
    kept = [run("grad-clip", s, None, 5.1 + 0.01 * k, True) for k, s in enumerate((42, 22, 67))]
    c = analyse(write_csv(tmp_path / "r.csv", rows + kept)).components
    assert c is not None and c.df_train == 2 and c.n_interventions == 1 and c.n_runs == 6


def grid_rows(seed: int) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
    """The issue's 3x3 grid of baseline runs: init seeds 42/22/67 x no re-seed/23/67 (loop SD 0.006, init SD 0.019)."""
    rng = np.random.default_rng(seed)
    level = 5.0 + rng.normal(0, 0.019, 3)
    rows, y, inits, streams = [], [], [], []
    for i, init in enumerate((42, 22, 67)):
        for train in (None, 23, 67):
            value = float(level[i] + rng.normal(0, 0.006))
            rows.append(run("baseline", init, train, value))
            y.append(value)
            inits.append(init)
            streams.append(f"none@{init}" if train is None else str(train))  # no re-seed: its own stream per init seed
    return rows, np.array(y), np.array(inits), np.array(streams)


def test_crossed_3x3_grid_reaches_the_reml_optimum_where_the_default_optimiser_does_not(tmp_path):
    """Seed 6: statsmodels' default L-BFGS does not converge (init share ~30%); the reported components are the
    REML optimum found by a direct minimisation of the restricted likelihood (init share 99%)."""
    import warnings

    import pandas as pd
    import statsmodels.formula.api as smf

    rows, y, inits, streams = grid_rows(6)
    data = pd.DataFrame({"y": (y - y.mean()) / y.std(ddof=1), "init": inits.astype(str), "stream": streams, "group": 1})
    vc = {"init": "0 + C(init)", "stream": "0 + C(stream)"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = smf.mixedlm("y ~ 1", data, groups="group", re_formula="0", vc_formula=vc).fit(reml=True)
    assert not default.converged  # the failure the issue found, silently reported before
    c = analyse(write_csv(tmp_path / "r.csv", rows)).components
    var_init, var_stream, var_e = reml_reference(y, [inits, streams])
    assert c.crossed and c.method == "REML"
    assert c.var_init == pytest.approx(var_init, rel=1e-3)
    assert c.var_train == pytest.approx(var_stream + var_e, rel=1e-3, abs=1e-9)
    assert c.share_init > 0.95


def test_when_no_reml_fit_converges_the_components_come_from_anova(tmp_path, monkeypatch):
    from noisefloor.stats import components

    monkeypatch.setattr(components, "REML_METHODS", ())  # as if every optimiser failed to converge
    rows, y, inits, _ = grid_rows(1)
    c = analyse(write_csv(tmp_path / "r.csv", rows)).components
    grid = y.reshape(3, 3)  # balanced one-way ANOVA by hand: rows are init seeds
    ms_within = ((grid - grid.mean(1, keepdims=True)) ** 2).sum() / 6
    ms_between = 3 * ((grid.mean(1) - grid.mean()) ** 2).sum() / 2
    assert c.method == "ANOVA" and "method of moments" in words.components_method(c)
    assert c.var_residual == pytest.approx(ms_within) and c.var_init == pytest.approx((ms_between - ms_within) / 3)


def test_one_way_reml_matches_statsmodels_on_an_unbalanced_nested_design():
    """The exact profile-likelihood REML used without crossed train seeds, against statsmodels MixedLM."""
    import pandas as pd
    import statsmodels.formula.api as smf

    from noisefloor.stats.components import one_way_reml

    rng = np.random.default_rng(8)
    sizes = rng.integers(1, 5, 25)
    groups = np.repeat(np.arange(25), sizes)
    y = 5.0 + rng.normal(0, 0.02, 25)[groups] + rng.normal(0, 0.006, len(groups))
    var_init, var_e = one_way_reml(y, groups)
    data = pd.DataFrame({"y": (y - y.mean()) / y.std(), "g": groups})
    fit = smf.mixedlm("y ~ 1", data, groups="g").fit(reml=True, method=["powell"])
    assert fit.converged
    assert var_init == pytest.approx(float(fit.cov_re.iloc[0, 0]) * y.std() ** 2, rel=1e-4)
    assert var_e == pytest.approx(float(fit.scale) * y.std() ** 2, rel=1e-4)


# ---- one mixed model over every run: interventions as fixed effects


def _cells(rows):
    from noisefloor.stats.table import results_from_text

    lines = ["intervention,init_seed,train_seed,test_loss,same_init"]
    lines += [f"{n},{i},{'' if t is None else t},{float(y)!r},{'' if s is None else str(s).lower()}" for n, i, t, y, s in rows]
    return results_from_text("\n".join(lines) + "\n", "sim.csv").cells


def test_all_runs_with_interventions_as_fixed_effects_match_statsmodels():
    """Unbalanced: baseline (1-2 streams) at 8 init seeds, a same-init intervention (shares the seed's draw) at 6,
    an init-changing one (a new draw at each seed) at 5, a single-run one (fits itself: left out). statsmodels
    MixedLM, REML, same formula y ~ C(intervention) with a random intercept per init draw written out by hand."""
    import pandas as pd
    import statsmodels.formula.api as smf

    from noisefloor.stats.components import variance_components

    rng = np.random.default_rng(12)
    level = {s: rng.normal(0, 0.02) for s in range(8)}
    rows, draws = [], []
    for s in range(8):
        for k, train in enumerate((None, 100 + s)[: 1 + s % 2]):  # re-seeds unique to a seed: not crossed
            rows.append(("baseline", s, train, 5.0 + level[s] + rng.normal(0, 0.006), True))
            draws.append(str(s))
    for s in range(6):
        rows.append(("grad-clip", s, None, 5.01 + level[s] + rng.normal(0, 0.006), True))
        draws.append(str(s))
    for s in range(5):
        rows.append(("qkv-bias", s, None, 4.99 + rng.normal(0, 0.02) + rng.normal(0, 0.006), False))
        draws.append(f"qkv-bias@{s}")
    c, _ = variance_components(_cells(rows + [("solo", 1, None, 5.3, False)]))
    assert c.n_runs == len(rows) and c.n_interventions == 2 and c.n_draws == 13 and not c.crossed
    data = pd.DataFrame({"y": [r[3] for r in rows], "intervention": [r[0] for r in rows], "draw": draws})
    scale = data["y"].std()
    fit = smf.mixedlm("y ~ C(intervention)", data.assign(y=(data["y"] - data["y"].mean()) / scale),
                      groups="draw").fit(reml=True, method=["powell"])
    assert fit.converged
    assert c.var_init == pytest.approx(float(fit.cov_re.iloc[0, 0]) * scale**2, rel=1e-4)
    assert c.var_residual == pytest.approx(float(fit.scale) * scale**2, rel=1e-4)
    assert c.df_train == len(rows) - 13 - 1  # runs - draws - grad-clip's mean (qkv-bias's lies in its own draws)


def test_balanced_seeds_by_interventions_equal_two_way_anova_by_hand():
    """4 init seeds x (baseline + two same-init interventions), one run each: REML equals the closed-form two-way
    ANOVA (seed random, intervention fixed): var_init = (MS_seed - MS_e) / 3, var_train = MS_e; so does the
    method-of-moments fallback (Henderson III)."""
    from noisefloor.stats.components import anova_components, variance_components

    rng = np.random.default_rng(4)
    y = 5.0 + rng.normal(0, 0.02, (4, 1)) + np.array([0.0, 0.01, -0.02]) + rng.normal(0, 0.006, (4, 3))
    g = y.mean()
    ms_seed = 3 * ((y.mean(1) - g) ** 2).sum() / 3
    ms_e = ((y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + g) ** 2).sum() / 6
    assert ms_seed > ms_e
    names = ("baseline", "grad-clip", "no-dropout")
    c, _ = variance_components(_cells([(names[j], i, None, y[i, j], True) for i in range(4) for j in range(3)]))
    assert c.var_init == pytest.approx((ms_seed - ms_e) / 3, rel=1e-5)
    assert c.var_train == pytest.approx(ms_e, rel=1e-5) and c.df_train == 6
    moments = anova_components(y.ravel(), np.repeat(np.arange(4), 3), np.tile(np.arange(3), 4))
    assert moments == pytest.approx(((ms_seed - ms_e) / 3, ms_e), rel=1e-9)


def test_crossed_grid_with_an_intervention_matches_reml_by_hand():
    """The 3x3 grid (train seeds shared by the init seeds: crossed) plus a same-init intervention at each init
    seed: MixedLM's fit with the intervention as a fixed effect against a direct minimisation of the restricted
    likelihood with that X."""
    from noisefloor.stats.components import variance_components

    rows_, y, inits, streams = grid_rows(2)
    rng = np.random.default_rng(2)
    extra = [y[3 * i] + 0.01 + rng.normal(0, 0.006) for i in range(3)]
    rows = [(r["intervention"], r["init_seed"], r["train_seed"], r["test_loss"], True) for r in rows_]
    rows += [("grad-clip", s, None, v, True) for s, v in zip((42, 22, 67), extra)]
    c, _ = variance_components(_cells(rows))
    all_y = np.concatenate([y, extra])
    all_inits = np.concatenate([inits, [42, 22, 67]])
    all_streams = np.concatenate([streams, [f"none@{s}" for s in (42, 22, 67)]])
    x = np.column_stack([np.ones(12), np.r_[np.zeros(9), np.ones(3)]])
    var_init, var_stream, var_e = reml_reference(all_y, [all_inits, all_streams], x)
    assert c.crossed and c.method == "REML" and c.n_interventions == 1
    assert c.var_init == pytest.approx(var_init, rel=1e-3)
    assert c.var_train == pytest.approx(var_stream + var_e, rel=1e-3, abs=1e-9)


def test_interaction_of_init_changing_interventions_with_fitted_components_keeps_type_i_below_alpha():
    """No effect anywhere; init SD 0.019, loop SD 0.006 (the issue's). The L-shaped baseline and two init-changing
    interventions alone and together at 3 init seeds; the components fitted over all 14 runs (12 init draws) give
    the interaction's SE (Satterthwaite df). Its false-positive rate stays at alpha (it was 69% on loop noise)."""
    from noisefloor.stats.components import variance_components
    from noisefloor.stats.factorial import factorial_effects

    rng = np.random.default_rng(21)
    design = [("baseline", s, t, True) for s, t in ((1, None), (2, None), (3, None), (1, 23), (1, 67))]
    design += [(n, s, None, False) for n in ("qkv-bias", "tied", "qkv-bias+tied") for s in (1, 2, 3)]
    cells = _cells([(n, s, t, 5.0, same) for n, s, t, same in design])
    order = {(n, s, "none" if t is None else str(t)): k for k, (n, s, t, _) in enumerate(design)}
    keys = [order[(n, int(s), "none" if st == "no re-seed" else st.split("=")[-1])]
            for n, s, st in zip(cells["intervention"], cells["init_seed"], cells["stream"])]
    studies = 120
    draws = rng.normal(0, 0.019, (studies, 3 + 9))  # the baseline's 3 seeds, then one per init-changing run
    draw_of = [d[1] - 1 if d[0] == "baseline" else 3 + k - 5 for k, d in enumerate(design)]
    y = 5.0 + draws[:, draw_of] + rng.normal(0, 0.006, (studies, len(design)))
    rejected = 0
    for values in y:
        study = cells.assign(test_loss=values[keys])
        components, _ = variance_components(study)
        term = {t.term: t for t in factorial_effects(study, components).terms}["qkv-bias x tied"]
        assert term.changes_init
        rejected += term.p_value < 0.05
    assert rejected / studies <= 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / studies)


def test_runs_that_changed_nothing_are_no_new_draw_of_the_training_loop(tmp_path):
    """grad-clip whose final weights are bit-identical to the baseline's at the same seeds (the norm was never
    reached) repeats the baseline run: counting it would claim zero training-loop spread. It is left out, and so
    is a single-run intervention (its own mean fits it exactly)."""
    columns = ("run", "intervention", "init_seed", "train_seed", "test_loss", "same_init", "final_digest")
    base = [dict(run("baseline", s, None, x, True), final_digest=f"sha256:{s}") for s, x in ((42, 5.10), (22, 5.12), (67, 5.09))]
    same = [dict(run("grad-clip", s, None, x, True), final_digest=f"sha256:{s}") for s, x in ((42, 5.10), (22, 5.12), (67, 5.09))]
    solo = [run("no-dropout", 42, None, 5.05, True)]
    assert analyse(write_csv(tmp_path / "r.csv", base + same + solo, columns)).components is None
    changed = [dict(r, final_digest="sha256:other", test_loss=r["test_loss"] + 0.004 * k) for k, r in enumerate(same)]
    c = analyse(write_csv(tmp_path / "r.csv", base + changed + solo, columns)).components
    assert c is not None and c.n_runs == 6 and c.df_train == 2


def test_reml_covariance_equals_the_anova_estimators_variance_on_a_balanced_design():
    """k init seeds x n runs: REML's inverse information is the exact covariance of the ANOVA estimators,
    Var(MS_w) = 2 v_e² / (k (n - 1)), Var(MS_b) = 2 (v_e + n v_a)² / (k - 1), var_init = (MS_b - MS_w) / n:
    what Satterthwaite's df of the factorial SEs is built from."""
    from noisefloor.stats.components import reml_covariance

    k, n, v_a, v_e = 5, 3, 4e-4, 4e-5
    draws = np.repeat(np.arange(k), n)
    cov = np.array(reml_covariance(v_a, v_e, draws, np.zeros(k * n, int)))
    var_w = 2 * v_e**2 / (k * (n - 1))
    var_b = 2 * (v_e + n * v_a) ** 2 / (k - 1)
    assert cov == pytest.approx(np.array([[(var_b + var_w) / n**2, -var_w / n], [-var_w / n, var_w]]), rel=1e-9)
