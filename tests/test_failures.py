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
