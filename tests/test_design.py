"""`noisefloor design` writes a runnable sweep spec; classify analyses the factorial sweep it plans."""

from __future__ import annotations

from conftest import REPO, run_cli

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
    assert terms["grad-clip x no-dropout"].kind == "interaction" and "higher than the effects added up" in terms["grad-clip x no-dropout"].reading
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


def test_init_changing_factor_is_flagged_and_carries_init_variance():
    """qkv-bias under sequential init: its runs start from other weights. Floor runs outside the design (baseline at
    42 re-seeded) are left out of the fit but give the variance components its SEs use."""
    design = choose(["grad-clip", "no-dropout", "qkv-bias"], runs=8)
    rng = np.random.default_rng(3)
    floors = [f"baseline,42,{t},{float(5.0 + rng.normal(0, LOOP_SD))!r},true" for t in (23, 67)]
    text = _synthetic(rng, design, (42, 22, 67), {}, lambda row: "qkv-bias" not in row, floors)
    a = analyse_results(results_from_text(text, "s.csv"))
    f = a.factorial
    assert f.design is not None and f.runs_left_out == 2 and f.init_variance and a.components is not None
    terms = {t.term: t for t in f.terms}
    assert [t.term for t in f.terms if t.changes_init] == ["qkv-bias"]
    # Runs with qkv-bias on at one init seed share one new draw: in the qkv-bias effect it enters with weight
    # n_s / n per seed (variance var_init / 3); in every other effect it cancels within its seed. The loop part
    # is the residual variance, the same as in the study without the floor runs (next lines).
    alone = analyse_results(results_from_text("\n".join(text.splitlines()[:-2]) + "\n", "s.csv"))
    bare = {t.term: t for t in alone.factorial.terms}
    assert terms["qkv-bias"].se == pytest.approx(np.sqrt(bare["grad-clip"].se ** 2 + a.components.var_init / 3), rel=1e-9)
    for name in ("grad-clip", "grad-clip x qkv-bias", "no-dropout x qkv-bias"):
        assert terms[name].se == pytest.approx(bare[name].se, rel=1e-9) and terms[name].se == pytest.approx(bare["grad-clip"].se)
    assert f.init_changing == ("qkv-bias",) and f.to_json()["design"]["init_changing"] == ["qkv-bias"]
    assert "init-seed variance" in terms["qkv-bias"].reading
    # Without the floor runs there are no variance components: the qkv-bias effect gets no test, the others keep
    # their residual SEs.
    assert alone.components is None
    assert bare["qkv-bias"].se is None and "needs the variance components" in bare["qkv-bias"].reading
    # df: 24 runs - 3 blocks - qkv-bias's new draws at the 2 other seeds - 3 main effects - 3 interactions
    assert bare["grad-clip"].se is not None and bare["grad-clip"].df == 24 - 3 - 2 - 6
    # the draws' columns leave every estimate the plain mean on minus off
    losses = {(line.split(",")[0], line.split(",")[1]): float(line.split(",")[3]) for line in text.splitlines()[1:-2]}
    on = [x for (name, _), x in losses.items() if "qkv-bias" in name]
    off = [x for (name, _), x in losses.items() if "qkv-bias" not in name]
    assert terms["qkv-bias"].estimate == pytest.approx(np.mean(on) - np.mean(off), abs=1e-12)


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
