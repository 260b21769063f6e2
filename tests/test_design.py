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
    assert plan.name == "study" and len(plan.runs) == 32
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
    assert len(spec.from_file(shipped).runs) == 32


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
