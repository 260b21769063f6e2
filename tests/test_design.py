"""`noisefloor design` writes a runnable sweep spec; classify analyses the factorial sweep it plans."""

from __future__ import annotations

from conftest import REPO, run_cli

from noisefloor.report import words
from noisefloor.sweep import spec

FIVE = "grad-clip,no-dropout,wd-0.01,lr-schedule,qkv-bias"


def test_design_writes_a_spec_whose_runs_are_the_design_rows_at_each_init_seed(tmp_path, capsys):
    out = tmp_path / "study.toml"
    code, stdout, _ = run_cli(capsys, "design", "--interventions", FIVE, "--runs", "16", "--init-seeds", "42,22",
                              "--config", REPO / "training" / "tiny-cpu.toml", "--out", out)
    assert code == 0
    assert "resolution V: 16 of the 32" in stdout and "no main effect or two-factor interaction is aliased" in stdout
    assert "16 rows x 2 init seed(s) = 32 (full factorial: 64)" in stdout
    plan = spec.from_file(out)
    assert plan.name == "study" and len(plan.runs) == 32 + 2  # and the training-loop floor: baseline 42 x 23, 67
    assert {(r.init_seed, r.train_seed) for r in plan.runs if r.train_seed} == {(42, 23), (42, 67)}
    rows = list(dict.fromkeys(r.intervention for r in plan.runs))
    assert rows[0] == "baseline" and len(rows) == 16
    # Every row switches an even number of the five on or off against E = ABCD: a half of the full factorial.
    assert all(len(row.split("+")) % 2 == 0 for row in rows[1:])
    both = next(r for r in plan.runs if r.intervention == "grad-clip+no-dropout+wd-0.01+lr-schedule")
    assert both.config.train.clipping_max_norm == 3.5 and both.config.model.drop_rate == 0.0
    assert {r.init_seed for r in plan.runs if r.intervention == "baseline"} == {42, 22}


def test_shipped_factorial_spec_is_what_design_writes(tmp_path, capsys):
    shipped = REPO / "seedsweeps" / "factorial-5.toml"
    code, stdout, _ = run_cli(capsys, "design", "--interventions", FIVE, "--runs", "16", "--name", "factorial-5",
                              "--config", REPO / "training" / "tiny-cpu.toml")
    assert code == 0
    body = [line for line in stdout.splitlines() if not line.startswith("#") and "config" not in line]
    assert body == [line for line in shipped.read_text().splitlines() if not line.startswith("#") and "config" not in line]
    assert len(spec.from_file(shipped).runs) == 34


def test_resolution_iii_design_names_its_aliases(capsys):
    code, stdout, _ = run_cli(capsys, "design", "--interventions", "grad-clip,no-dropout,wd-0.01", "--runs", "4",
                              "--config", "micro")
    assert code == 0
    assert "# generators: C=AB; defining relation: I = ABC" in stdout
    assert "#   grad-clip = no-dropout x wd-0.01" in stdout
    assert '  "grad-clip+wd-0.01",' in stdout


def test_design_mistakes_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "s.toml"
    for argv, message in [
        (["--interventions", "grad-clip,nodrop,wd-0.01"], "unknown intervention 'nodrop'"),
        (["--interventions", "grad-clip"], "2 to 7 interventions"),
        (["--interventions", "grad-clip,no-dropout,wd-0.01", "--runs", "16"], "more than the full factorial"),
        (["--interventions", "grad-clip,fp32", "--config", "micro"], "changes nothing"),
    ]:
        code, _, stderr = run_cli(capsys, "design", *argv, "--out", out)
        assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()


# ---------------------------------------------------------------- classify: a factorial sweep

import csv  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from noisefloor.stats.classify import analyse_results  # noqa: E402
from noisefloor.stats.design import choose  # noqa: E402
from noisefloor.stats.factorial import factorial_effects  # noqa: E402
from noisefloor.stats.table import results_from_text  # noqa: E402

FACTORS = FIVE.split(",")
# effects (mean loss on minus off) of the synthetic study; one interaction, the rest 0
TRUE = {"grad-clip": -0.03, "no-dropout": -0.05, "lr-schedule": -0.02, "grad-clip x no-dropout": 0.02}
LOOP_SD, INIT_SD = 0.005, 0.02


def _synthetic(rng, design, seeds, effects, same_init=lambda row: True, extra=()) -> str:
    """A results CSV of the design at every init seed: an init-seed level (block), the effects, loop noise."""
    z = 2 * design.matrix() - 1
    mean = np.zeros(design.runs)
    for name, effect in effects.items():  # effect = 2 x coefficient in the ±1 coding
        mean += effect / 2 * np.prod(z[:, [design.factors.index(f) for f in name.split(" x ")]], axis=1)
    lines = ["intervention,init_seed,train_seed,test_loss,same_init"]
    for seed in seeds:
        level = 5.0 + rng.normal(0, INIT_SD)
        for row, m in zip(design.rows(), mean):
            lines.append(f"{row},{seed},,{float(level + m + rng.normal(0, LOOP_SD))!r},{str(same_init(row)).lower()}")
    return "\n".join(lines + list(extra)) + "\n"


def test_known_main_effects_and_interaction_are_recovered_within_their_intervals():
    design = choose(FACTORS, runs=16)
    # One study: all 15 95% intervals cover in about 0.95^15 = 46% of studies, so the seed matters here; the
    # coverage rate itself is checked by simulation in the next test.
    text = _synthetic(np.random.default_rng(1), design, (42, 22, 67), TRUE)
    f = analyse_results(results_from_text(text, "synthetic.csv"), alpha=0.05, margin=0.01).factorial
    assert f.design is not None and f.design.resolution == 5 and f.n_runs == 48 and f.df_resid == 48 - 3 - 15
    terms = {t.term: t for t in f.terms}
    assert len(terms) == 15 and all(not t.aliases for t in f.terms)
    for name, term in terms.items():
        truth = TRUE.get(name, 0.0)
        assert term.ci95[0] < truth < term.ci95[1], name
        assert term.decision == ("signal" if truth else "noise"), name  # |effect| >= 0.02 vs SE ~0.0015; margin 0.01
    assert terms["grad-clip x no-dropout"].kind == "interaction" and "higher than the effects added up" in words.term_reading(terms["grad-clip x no-dropout"])
    # Balanced ±1 columns: every effect has the same SE, sqrt(4 s² / n) with s² the residual variance.
    assert len({round(t.se, 12) for t in f.terms}) == 1


def _holm_any(p: np.ndarray, alpha: float) -> np.ndarray:
    """Per row of p (sims x terms): whether any Holm-adjusted p is below alpha (the real code's step-down)."""
    ordered = np.sort(p, axis=1) * (p.shape[1] - np.arange(p.shape[1]))
    return (np.maximum.accumulate(ordered, axis=1) < alpha).any(axis=1)


def test_no_false_interaction_under_no_interaction_and_ci_coverage_by_simulation():
    """20,000 studies of the 16-run design at 2 init seeds with real main effects and no interaction: the chance
    of any interaction decided signal stays <= alpha, and the 95% intervals cover the true effects 95% of the time.
    Vectorised OLS over all studies at once, checked against the real code on the first studies."""
    design = choose(FACTORS, runs=16)
    seeds, sims, alpha = (42, 22), 20_000, 0.05
    mains = {k: v for k, v in TRUE.items() if " x " not in k}
    rng = np.random.default_rng(2024)
    texts = [_synthetic(rng, design, seeds, mains) for _ in range(3)]
    z = 2 * design.matrix() - 1
    chains = design.alias_chains()
    x = np.column_stack([np.ones(32), np.repeat([0.0, 1.0], 16)] +
                        [np.tile(np.prod(z[:, sorted(head)], axis=1), 2) for head, _ in chains])
    mean = x[:, 2:] @ np.array([mains.get(design.name(h), 0.0) / 2 for h, _ in chains])
    y = 5.0 + mean[:, None] + rng.normal(0, INIT_SD, (2, sims)).repeat(16, axis=0) + rng.normal(0, LOOP_SD, (32, sims))
    y[:, :3] = np.array([[float(line.split(",")[3]) for line in t.splitlines()[1:]] for t in texts]).T
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    df = 32 - x.shape[1]
    s2 = ((y - x @ beta) ** 2).sum(axis=0) / df
    se = 2 * np.sqrt(np.outer(np.diag(np.linalg.inv(x.T @ x))[2:], s2))
    effect = 2 * beta[2:]
    p = 2 * stats.t.sf(np.abs(effect / se), df).T
    for i, text in enumerate(texts):  # the real code gives the same effects and p-values
        real = factorial_effects(results_from_text(text, "s.csv").cells)
        assert [t.estimate for t in real.terms] == pytest.approx(effect[:, i], abs=1e-12)
        assert [t.p_value for t in real.terms] == pytest.approx(p[i], rel=1e-6)
    interactions = np.array([len(h) == 2 for h, _ in chains])
    # Holm over all 15 terms, as classify does; an interaction decided signal is a false one here
    adjusted = np.minimum(1, np.maximum.accumulate(np.take_along_axis(p, np.argsort(p, axis=1), 1) * (15 - np.arange(15)), axis=1))
    holm = np.empty_like(p)
    np.put_along_axis(holm, np.argsort(p, axis=1), adjusted, axis=1)
    false_interaction = (holm[:, interactions] < alpha).any(axis=1).mean()
    print(f"P(any false interaction) = {false_interaction:.4f}")
    assert false_interaction <= alpha
    real = np.array([design.name(h) in mains for h, _ in chains])
    assert (holm[:, real] < alpha).all(axis=1).mean() > 0.99  # the real main effects are found
    truth = np.array([mains.get(design.name(h), 0.0) for h, _ in chains])[:, None]
    half = stats.t.ppf(0.975, df) * se
    coverage = (np.abs(effect - truth) < half).mean()
    print(f"95% CI coverage = {coverage:.4f}")
    assert abs(coverage - 0.95) < 0.005
    assert _holm_any(p[:, interactions], alpha).mean() <= alpha  # Holm over the interactions alone: also <= alpha


def _init_changing_study(rng, seeds=(42, 22, 67), init_sd=0.019, loop_sd=0.006) -> str:
    """qkv-bias under sequential init in a 2^3 design, no effect at all: at each init seed the runs without it
    share the baseline's weights, the runs with it share one new draw."""
    design = choose(["grad-clip", "no-dropout", "qkv-bias"], runs=8)
    lines = ["intervention,init_seed,train_seed,test_loss,same_init"]
    for seed in seeds:
        level, new = 5.0 + rng.normal(0, init_sd, 2)
        for row in design.rows():
            start = new if "qkv-bias" in row else level
            lines.append(f"{row},{seed},,{float(start + rng.normal(0, loop_sd))!r},{str('qkv-bias' not in row).lower()}")
    return "\n".join(lines) + "\n"


def test_init_changing_factor_is_flagged_and_judged_by_its_spread_across_init_seeds():
    f = analyse_results(results_from_text(_init_changing_study(np.random.default_rng(3)), "s.csv")).factorial
    terms = {t.term: t for t in f.terms}
    assert f.init_changing == ("qkv-bias",) and words.factorial_json(f)["design"]["init_changing"] == ["qkv-bias"]
    assert [t.term for t in f.terms if t.changes_init] == ["qkv-bias"]
    assert "start from other initial weights" in words.term_reading(terms["qkv-bias"])
    # qkv-bias: one new draw per init seed, so its effect is judged by the per-seed effects (3 seeds: 2 df)
    rows = [line.split(",") for line in _init_changing_study(np.random.default_rng(3)).splitlines()[1:]]
    per_seed = [np.mean([float(r[3]) for r in rows if r[1] == s and "qkv-bias" in r[0]])
                - np.mean([float(r[3]) for r in rows if r[1] == s and "qkv-bias" not in r[0]]) for s in ("42", "22", "67")]
    assert terms["qkv-bias"].estimate == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert terms["qkv-bias"].se == pytest.approx(np.std(per_seed, ddof=1) / np.sqrt(3)) and terms["qkv-bias"].df == 2
    # the others: the residual, with the new draws' seed-to-seed scatter in their own 2 columns
    assert terms["grad-clip"].df == 24 - 3 - 2 - 6 and terms["grad-clip x qkv-bias"].se == pytest.approx(terms["grad-clip"].se)
    one_seed = analyse_results(results_from_text(_init_changing_study(np.random.default_rng(3), seeds=(42,)) +
                                                 "baseline,42,23,5.01,true\nbaseline,42,67,5.0,true\n", "s.csv")).factorial
    qkv = next(t for t in one_seed.terms if t.term == "qkv-bias")
    assert qkv.se is None and "needs runs at >= 2 init seeds" in words.term_reading(qkv)


def test_init_changing_effects_keep_their_error_rate_by_simulation():
    """Under no effect (init SD 0.019, loop SD 0.006, as measured in issue 11), 20,000 studies of the 2^3 design
    at 3 init seeds: qkv-bias and its interactions stay at alpha; judged on the residual alone, qkv-bias would not.
    Vectorised, checked against the real code on the first studies."""
    design = choose(["grad-clip", "no-dropout", "qkv-bias"], runs=8)
    sims, alpha = 20_000, 0.05
    rng = np.random.default_rng(8)
    texts = [_init_changing_study(rng) for _ in range(3)]
    y = np.array([[float(line.split(",")[3]) for line in t.splitlines()[1:]] for t in texts]).T
    z = np.tile(2 * design.matrix() - 1, (3, 1))
    qkv_on = z[:, 2] == 1
    seeds = np.repeat(np.arange(3), 8)
    starts = rng.normal(0, 0.019, (3, 2, sims))  # per seed: the baseline's weights and qkv-bias's new ones
    more = 5.0 + starts[seeds, qkv_on.astype(int)] + rng.normal(0, 0.006, (24, sims))
    y = np.hstack([y, more])
    chains = design.alias_chains()
    effects = np.column_stack([np.prod(z[:, sorted(h)], axis=1) for h, _ in chains])
    draws = [qkv_on * ((seeds == b).astype(float) - (seeds == 0)) for b in (1, 2)]
    x = np.column_stack([np.ones(24), seeds == 1, seeds == 2, *draws, effects]).astype(float)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    df = 24 - x.shape[1]
    se = 2 * np.sqrt(np.outer(np.diag(np.linalg.inv(x.T @ x))[5:], ((y - x @ beta) ** 2).sum(axis=0) / df))
    estimate = 2 * beta[5:]
    p = 2 * stats.t.sf(np.abs(estimate / se), df)
    qkv = [i for i, (h, _) in enumerate(chains) if h == frozenset({2})][0]
    per_seed = np.stack([2 * (effects[seeds == b, qkv][:, None] * y[seeds == b]).mean(axis=0) for b in range(3)])
    p_qkv = 2 * stats.t.sf(np.abs(per_seed.mean(axis=0) / (per_seed.std(axis=0, ddof=1) / np.sqrt(3))), 2)
    for i, text in enumerate(texts):
        real = {t.term: t for t in factorial_effects(results_from_text(text, "s.csv").cells).terms}
        assert real["qkv-bias"].p_value == pytest.approx(p_qkv[i], rel=1e-6)
        assert [real[design.name(h)].p_value for h, _ in chains if h != frozenset({2})] == pytest.approx(
            np.delete(p[:, i], qkv), rel=1e-6)
    print(f"qkv-bias: P(p < alpha) = {(p_qkv < alpha).mean():.4f} by its per-seed spread, {(p[qkv] < alpha).mean():.4f} "
          f"on the residual; others: max {np.delete(p < alpha, qkv, axis=0).mean(axis=1).max():.4f}")
    assert (p_qkv < alpha).mean() <= alpha + 0.005
    assert (p[qkv] < alpha).mean() > 3 * alpha  # the residual alone misses the new draws
    for i, (h, _) in enumerate(chains):
        if i != qkv:
            assert (p[i] < alpha).mean() <= alpha + 0.005, design.name(h)


def test_micro_design_through_the_real_sweep_is_classified_as_a_factorial(tmp_path, capsys):
    """3 interventions in 4 rows (resolution III) x 2 init seeds of the micro config, trained for real."""
    import json

    from noisefloor.report import figures
    from noisefloor.stats.classify import analyse

    study = tmp_path / "micro-3.toml"
    code, _, _ = run_cli(capsys, "design", "--interventions", "no-dropout,wd-0.01,lr-schedule", "--runs", "4",
                         "--config", "micro", "--set", "train.steps=6", "--out", study)
    assert code == 0
    assert run_cli(capsys, "sweep", study, "--out", tmp_path / "sweep", "--quiet", "--jobs", "1")[0] == 0  # one worker: one torch import
    code, stdout, _ = run_cli(capsys, "classify", tmp_path / "sweep", "--json")
    f = json.loads(stdout)["factorial"]
    assert f["design"]["resolution"] == "resolution III" and f["design"]["defining_relation"] == "I = ABC"
    assert f["n_runs"] == 8 and f["df_resid"] == 8 - 2 - 3 and f["design"]["runs_left_out"] == 2  # the floor runs
    terms = {t["term"]: t for t in f["terms"]}
    assert terms["no-dropout"]["aliases"] == ["wd-0.01 x lr-schedule"] and set(terms) == {"no-dropout", "wd-0.01", "lr-schedule"}
    # On the real losses: each effect is the mean loss with the intervention on minus off (balanced design).
    rows = [r for r in csv.DictReader((tmp_path / "sweep" / "results.csv").open()) if not r["train_seed"]]  # the design
    for name, term in terms.items():
        on = [float(r["test_loss"]) for r in rows if name in r["intervention"].split("+")]
        off = [float(r["test_loss"]) for r in rows if name not in r["intervention"].split("+")]
        assert term["estimate"] == pytest.approx(np.mean(on) - np.mean(off), abs=1e-12)
        assert term["decision"] in ("signal", "undecided") and term["p_holm"] >= term["p_value"]
    assert figures.half_normal_plot(analyse(tmp_path / "sweep")).startswith(b"\x89PNG")
