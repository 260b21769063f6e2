"""Config files and --set: strict, typed, and every mistake is one line with exit code 2."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, run_cli
from noisefloor import config as config_module


def test_presets_load_and_json_is_accepted(tmp_path):
    for preset in ("micro", "tiny-cpu", "gpt2-small-163m"):
        cfg = config_module.load(REPO / "training" / f"{preset}.toml")
        as_json = tmp_path / f"{preset}.json"
        as_json.write_text(json.dumps(cfg.to_dict()))
        assert config_module.load(as_json) == cfg


@pytest.mark.parametrize("name", ["micro", "tiny-cpu", "gpt2-small-163m"])
def test_built_in_presets_equal_the_files_in_training(name):
    from noisefloor.presets import preset

    assert preset(name) == config_module.load(REPO / "training" / f"{name}.toml")
    assert config_module.load(name) == preset(name)  # `--config tiny-cpu` works without the repository


def test_set_overrides_are_typed_and_none_means_absent():
    cfg = config_module.load(REPO / "training" / "micro.toml",
                             ["train.clipping_max_norm=3.5", "model.qkv_bias=true", "train.data=some/file.txt",
                              "train.train_seed=23", "train.train_seed=none"])
    assert cfg.train.clipping_max_norm == 3.5 and cfg.model.qkv_bias is True
    assert cfg.train.data == "some/file.txt" and cfg.train.train_seed is None


def test_config_digest_is_stable_and_seed_sensitive():
    a = config_module.load(REPO / "training" / "micro.toml")
    assert a.digest() == config_module.load(REPO / "training" / "micro.toml").digest()
    assert a.digest() != a.replace(train={"train_seed": 1}).digest()


@pytest.mark.parametrize("setting,message", [
    ("model.emb_dimm=64", "unknown key [model] emb_dimm (did you mean emb_dim?)"),
    ("train.learning_rate=-0.1", "[train] learning_rate must be > 0, got -0.1"),
    ("train.steps=2.5", "[train] steps must be an integer, got 2.5"),
    ("model.qkv_bias=1", "[model] qkv_bias must be true or false, got 1"),
    ("model.init=xavier", "[model] init must be one of pytorch-default, gpt2"),
    ("model.n_heads=3", "emb_dim (32) must be divisible by n_heads (3)"),
    ("model.vocab_size=60000", "[model] vocab_size must be between 257 and 50257"),
    ("optim.lr=1", "unknown section [optim]"),
    ("train.steps", "expected section.key=value"),
    ("train.learning_rate=nan", "learning_rate must be a finite number"),
])
def test_bad_settings_exit_2_with_one_line(capsys, tmp_path, setting, message):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--config", REPO / "training" / "micro.toml", "--set", setting, "--out", out_dir)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out_dir.exists()


@pytest.mark.parametrize("content,message", [
    ("[model]\nemb_dim = 'wide'\n", "[model] emb_dim must be an integer, got 'wide'"),
    ("[model\n", "not valid TOML"),
    ("[training]\nsteps = 3\n", "unknown section [training]"),
    ("model = 3\n", "[model] must be a table"),
])
def test_bad_config_files_exit_2_naming_the_file(capsys, tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    code, _, err = run_cli(capsys, "train", "--config", path, "--out", tmp_path / "run")
    assert code == 2 and message in err and str(path) in err
    assert len(err.strip().splitlines()) == 1


def test_missing_config_and_missing_data(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / "nope.toml")
    assert code == 2 and "config file not found" in err
    code, _, err = run_cli(capsys, "train", "--config", REPO / "training" / "micro.toml",
                           "--set", f"train.data={tmp_path / 'corpus.txt'}", "--out", tmp_path / "run")
    assert code == 2 and "data not found" in err and not (tmp_path / "run").exists()


def test_context_longer_than_the_data(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--config", REPO / "training" / "micro.toml",
                           "--set", "model.context_length=50000", "--out", tmp_path / "run")
    assert code == 2 and "fewer than context_length + 1 = 50001" in err and not (tmp_path / "run").exists()


def test_eval_and_smoke_of_missing_things(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", tmp_path / "nowhere")
    assert code == 2 and "not found" in err
    (tmp_path / "w.safetensors").write_bytes(b"")
    code, _, err = run_cli(capsys, "eval", tmp_path / "w.safetensors")
    assert code == 2 and "--config" in err
    code, _, err = run_cli(capsys, "smoke", tmp_path / "nowhere")
    assert code == 2


def test_resume_of_something_that_is_not_a_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path)
    assert code == 2 and "not a noisefloor run directory" in err
    (tmp_path / "config.json").write_text("{not json")
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path)
    assert code == 2 and "corrupt" in err


def test_every_config_key_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = [f"{section}.{key}" for section, key, _, _ in config_module.describe() if f"`{section}.{key}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"


def test_usage_mistakes_are_one_line_pointing_at_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, "sweep", "--init-seeds", "a,b")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.strip().splitlines() == [
        "noisefloor sweep: error: argument --init-seeds: expected comma-separated seeds between 0 and 2**63-1, got 'a,b' "
        "(see noisefloor sweep --help)"]


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_out_onto_a_file_is_refused_and_the_file_kept(capsys, tmp_path, command):
    taken = tmp_path / "notes.txt"
    taken.write_text("my notes")
    seeds = ["--init-seeds", "1"] if command == "sweep" else []
    code, _, err = run_cli(capsys, command, "--config", REPO / "training" / "micro.toml", *seeds, "--out", taken)
    assert code == 2 and err.strip().splitlines() == [
        f"noisefloor {command}: error: {taken}: exists and is not a directory; choose another --out"]
    assert taken.read_text() == "my notes"


def test_an_unwritable_out_is_one_line_naming_the_path(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "run"  # a path below a regular file can never be created
    code, _, err = run_cli(capsys, "train", "--config", REPO / "training" / "micro.toml", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(tmp_path / "file") in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_is_refused_before_the_run_directory_exists(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--config", REPO / "training" / "micro.toml",
                           "--set", "train.device=cuda", "--out", tmp_path / "run")
    assert code == 2 and "no CUDA device" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [
    ["train", "--config", "micro", "--init-seed", str(2**64), "--out", "run"],
    ["smoke", "run", "--temperature", "1", "--top-k", "-3"],
    ["smoke", "run", "--seed", "-1"],
    ["sweep", "--config", "micro", "--init-seeds", "1", "--jobs", "0", "--out", "s"],
    ["sweep", "--config", "micro", "--init-seeds", "42,42", "--out", "s"],
])
def test_out_of_range_numbers_are_usage_mistakes(capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, *argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "(see noisefloor" in err
    assert list(tmp_path.iterdir()) == []


def test_a_config_error_in_train_is_reported_before_torch_is_imported(tmp_path):
    """torch takes seconds to import: `train --config bad.toml` must fail first (python -X importtime shows imports)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nn_layer = 2\n')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "noisefloor", "train", "--config", str(bad)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2 and "unknown key [model] n_layer" in done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("import time") and "torch" in line]
