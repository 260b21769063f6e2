"""Every failure a user or the machine can cause is one line and exit 2, and leaves nothing behind."""

from __future__ import annotations

import pytest

from conftest import REPO, run_cli

MICRO = REPO / "training" / "micro.toml"


def _one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("override,expected", [
    ("model.emb_dim=1048576", "plausible maximum"),
    ("model.emb_dim=65536", "needs at least"),  # plausible, but 1.6 TB: beyond any test machine
    ("model.n_layers=1000000", "plausible maximum"),
    ("train.microbatch_size=100000000", "plausible maximum"),
    ("train.threads=100000", "plausible maximum"),
    ("train.steps=99999999999999999999999", "plausible maximum"),
    ('train.data=""', "must name a source"),
    ("train.steps=" + "9" * 5000, "thousands of digits"),
    ("train.steps=" + "[" * 5000 + "]" * 5000, "nested too deeply"),
])
def test_an_absurd_config_is_one_line_and_writes_nothing(capsys, tmp_path, override, expected):
    code, _, err = run_cli(capsys, "train", "--config", MICRO, "--set", override, "--out", tmp_path / "run")
    assert code == 2 and expected in err and _one_line(err) and len(err) < 400
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name,text,expected", [
    ("deep.json", '{"model":' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ("deep.toml", "x = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("big.json", '{"train": {"steps": ' + "9" * 5000 + "}}", "thousands of digits"),
    ("seed.toml", "[train]\ninit_seed = " + "9" * 4000, "digit number"),
])
def test_config_files_at_the_parsers_limits_are_one_line(capsys, tmp_path, name, text, expected):
    (tmp_path / name).write_text(text)
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / name, "--out", tmp_path / "run")
    assert code == 2 and expected in err and _one_line(err) and len(err) < 400
    assert not (tmp_path / "run").exists()


def test_memory_estimate_is_a_lower_bound_of_what_training_allocates(micro_config):
    """The estimate must never refuse a config that fits: it stays below the real parameter memory plus more."""
    from noisefloor.config import minimum_training_bytes, parameter_count
    from noisefloor.train.model import build_model

    for config in (micro_config, micro_config.replace(model={"qkv_bias": True, "tie_weights": True})):
        model = build_model(config.model, config.train.init_seed)
        assert parameter_count(config.model) == sum(p.numel() for p in model.parameters())
        assert minimum_training_bytes(config) >= 16 * parameter_count(config.model)


def _csv(tmp_path, rows: str, name: str = "results.csv"):
    path = tmp_path / name
    path.write_text("run,intervention,init_seed,train_seed,test_loss\n" + rows)
    return path


def test_a_loss_beyond_any_plausible_value_is_one_line_not_an_overflow(capsys, tmp_path):
    """The issue's file: OverflowError in the statistics before."""
    path = _csv(tmp_path, "a,baseline,42,,4.8\nb,baseline,22,,1e300\nc,x,42,,4.7\n")
    code, _, err = run_cli(capsys, "classify", path)
    assert code == 2 and _one_line(err) and "line 3, column 'test_loss'" in err and "plausible" in err
    # a file over 1 MB is validated column by column first: the same line, not a silent overflow
    filler = "".join(f"r{i},baseline,{i % 7},,4.8\n" for i in range(60_000))
    path = _csv(tmp_path, "a,baseline,42,,4.8\nb,baseline,22,,1e300\n" + filler)
    assert path.stat().st_size > 1_000_000
    code, _, err = run_cli(capsys, "classify", path)
    assert code == 2 and _one_line(err) and "line 3, column 'test_loss'" in err and "plausible" in err


def test_a_vanishing_effect_needs_more_seeds_than_can_be_run_rather_than_overflowing():
    from noisefloor.stats.tests import seeds_needed

    assert seeds_needed(1e-300, 1.0) is None and seeds_needed(1e-300, 1e-300) == seeds_needed(1.0, 1.0)


def test_report_accepts_the_subnormal_losses_classify_accepts(capsys, tmp_path):
    """A variance-components fit on subnormal losses has undefined shares: TypeError in the figures before."""
    rows = "".join(f"r{i},{iv},{seed},{train},{loss}\n" for i, (iv, seed, train, loss) in enumerate([
        ("x", 67, "", 1.06e-30), ("y", 1, 7, 1.208e-320), ("x", 42, "", 5e-324), ("baseline", 67, "", 1.149e-320),
        ("x", 67, 8, 1.029e-320), ("baseline", 42, 7, 1e-200), ("y", 67, 7, 0.0), ("baseline", 67, 7, 1.9194e-320)]))
    path = _csv(tmp_path, rows)
    assert run_cli(capsys, "classify", path)[0] == 0
    code, _, err = run_cli(capsys, "report", path, "--out", tmp_path / "report", "--quiet")
    assert code == 0, err


@pytest.mark.parametrize("kind", ["fifo", "device", "oversized"])
def test_classify_refuses_what_is_not_a_results_table_without_blocking(capsys, tmp_path, kind):
    import os

    from noisefloor.stats import table

    if kind == "fifo":
        path = tmp_path / "pipe.csv"
        os.mkfifo(path)  # no writer: opening it for reading would block forever
    elif kind == "device":
        path = "/dev/zero"
    else:
        path = tmp_path / "big.csv"
        with open(path, "wb") as handle:
            handle.truncate(table.MAX_CSV_BYTES + 1)  # sparse: costs no disk
    code, _, err = run_cli(capsys, "classify", path)
    assert code == 2 and _one_line(err) and ("not a regular file" in err or "MB" in err)


def test_csv_errors_do_not_echo_huge_cells(capsys, tmp_path):
    path = _csv(tmp_path, f"a,baseline,{'9' * 5000},,4.8\n")
    code, _, err = run_cli(capsys, "classify", path)
    assert code == 2 and _one_line(err) and "init_seed" in err and len(err) < 300


def test_differing_baseline_repeats_are_named_when_no_floor_can_be_built(capsys, tmp_path):
    """Two baseline runs at one seed that differ were 'the 1 usable baseline run(s)'."""
    path = _csv(tmp_path, "a,baseline,42,,4.8\nb,baseline,42,,4.9\nc,x,42,,4.7\n")
    code, _, err = run_cli(capsys, "classify", path)
    assert code == 2 and _one_line(err) and "2 usable baseline run(s)" in err and "reproducibility failure" in err
