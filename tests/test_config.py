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
    from noisefloor.config import preset

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


def test_every_config_key_is_documented_in_the_configuration_page():
    reference = (REPO / "docs" / "configuration.md").read_text()
    missing = [f"{section}.{key}" for section, key, _, _ in config_module.describe() if f"`{section}.{key}`" not in reference]
    assert not missing, f"docs/configuration.md lacks {missing}"


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


# ---------------------------------------------------------------- the blog trainer's model.json / train.json

BLOG_MODEL = {"vocab_size": 512, "context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 2, "drop_rate": 0.1,
              "qkv_bias": True, "tie_weights": True}


def blog_run(folder, train, model=BLOG_MODEL):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(model, indent=4))
    (folder / "train.json").write_text(json.dumps(train, indent=4))
    return folder


def test_the_blogs_run_folder_and_each_of_its_files_load(tmp_path):
    (tmp_path / "datasets" / "tiny").mkdir(parents=True)
    train = {"microbatch_size": 4, "gradient_accumulation_steps": 2, "checkpoint_interval": 5, "dataset": "../../datasets/tiny",
             "min_train_tokens": 4 * 2 * 32 * 10 + 1, "start_train_token": 0, "start_val_token": 0, "learning_rate": 0.0014,
             "schedule_learning_rate": True, "warmup_period_percent": 5, "clipping_max_norm": 3.5, "random_seed": 7,
             "use_amp": False, "weight_decay": 0.05}
    run = blog_run(tmp_path / "runs" / "baseline", train)
    cfg = config_module.load(run)
    m, t = cfg.model, cfg.train
    assert (m.vocab_size, m.context_length, m.emb_dim, m.qkv_bias, m.tie_weights) == (512, 32, 32, True, True)
    assert m.init_scheme == "sequential"  # the blog seeds, then builds GPTModel: one global draw
    assert t.init_seed == 7 and t.train_seed is None and t.precision == "fp32" and t.lr_schedule == "blog"
    assert t.steps == 11  # min_train_tokens rounded up to whole optimizer steps of 4 x 2 x 32 tokens
    assert (t.learning_rate, t.schedule_learning_rate, t.warmup_period_percent, t.clipping_max_norm) == (0.0014, True, 5.0, 3.5)
    assert (t.microbatch_size, t.gradient_accumulation_steps, t.checkpoint_interval, t.weight_decay) == (4, 2, 5, 0.05)
    assert t.data == str(run / "../../datasets/tiny")
    # each file alone: the other half keeps noisefloor's defaults (the model's are GPT-2 small, the blog's model)
    alone = config_module.load(run / "train.json")
    assert alone.train == t.__class__(**{**t.__dict__, "steps": -(-(4 * 2 * 32 * 10 + 1) // (4 * 2 * 1024))})
    assert alone.model.emb_dim == 768 and alone.model.init_scheme == "per-parameter"
    assert config_module.load(run / "model.json").model == m
    # the blog trainer's own defaults where train.json is silent: AMP on, seed 42
    plain = config_module.load(blog_run(tmp_path / "plain", {"microbatch_size": 2})).train
    assert plain.precision == "amp-fp16" and plain.init_seed == 42 and plain.eval_interval == 0
    # a --set on the steps wins over min_train_tokens; world_size enters the token arithmetic
    assert config_module.load(run, ["train.steps=3"]).train.steps == 3
    assert config_module.load(run, ["train.world_size=2"]).train.steps == 6
    # the blog's floor is learning_rate / 10, so noisefloor's min_learning_rate default never gets in its way
    low = blog_run(tmp_path / "low", {"learning_rate": 0.0001, "schedule_learning_rate": True})
    assert config_module.load(low).train.learning_rate == 0.0001
    # the trainer's older validation keys: batches of microbatch_size windows
    older = config_module.load(blog_run(tmp_path / "older", {"microbatch_size": 6, "validation_interval": 100,
                                                             "validation_batches": 50}))
    assert (older.train.eval_interval, older.train.eval_windows) == (100, 300)


def test_every_mistake_of_a_blog_config_in_one_line_saying_what_to_use(tmp_path, capsys, monkeypatch):
    train = {"microbatch_size": 4, "random_seed": -1, "use_amp": "yes", "min_train_tokens": -1,
             "dataset": "gpjt/fineweb-gpt2-tokens", "learning_rat": 0.1, "start_train_token": 1000}
    run = blog_run(tmp_path / "run", train, {**BLOG_MODEL, "moe": {"num_experts": 4}})
    code, _, err = run_cli(capsys, "train", "--config", run, "--out", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    for expected in (f"{run / 'model.json'}: moe (mixture of experts)", "noisefloor sweep --command",
                     f"{run / 'train.json'}: ", "random_seed must be between 0 and", "use_amp must be true or false, got 'yes'",
                     "min_train_tokens -1 (the whole dataset)", "--set train.steps=",
                     "hf download gpjt/fineweb-gpt2-tokens --repo-type dataset --local-dir datasets/gpjt/fineweb-gpt2-tokens",
                     "--set train.data=",
                     "unknown key learning_rat (did you mean learning_rate?)", "start_train_token 1000"):
        assert expected in err, expected
    # downloaded where the line says, the dataset is found
    monkeypatch.chdir(tmp_path)
    (tmp_path / "datasets" / "gpjt" / "fineweb-gpt2-tokens").mkdir(parents=True)
    code, _, err = run_cli(capsys, "train", "--config", run, "--out", tmp_path / "out")
    assert code == 2 and "hf download" not in err
    # what the line says to use silences its part of the line
    code, _, err = run_cli(capsys, "train", "--config", run / "train.json", "--set", "train.steps=2",
                           "--set", "train.data=builtin", "--out", tmp_path / "out")
    assert code == 2 and "min_train_tokens -1" not in err and "hf download" not in err and "random_seed" in err


def test_every_mistake_of_a_noisefloor_config_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nemb_dim = 'wide'\nn_layer = 2\n[train]\nsteps = -1\nprecision = 'fp8'\n[optim]\nlr = 1\n")
    code, _, err = run_cli(capsys, "train", "--config", path, "--out", tmp_path / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.count(str(path)) == 1
    for expected in ("unknown section [optim]", "[model] emb_dim must be an integer, got 'wide'",
                     "unknown key [model] n_layer (did you mean n_layers?)", "[train] steps must be >= 1, got -1",
                     "[train] precision must be one of fp32, amp-fp16, amp-bf16"):
        assert expected in err, expected


def test_blog_schedule_is_torchs_schedulers_step_for_step():
    """The 'blog' schedule equals the blog trainer's LinearLR -> CosineAnnealingLR under SequentialLR, read after
    each optimizer step, exactly; 'book' is appendix D's arithmetic; 'noisefloor' (default) stays as it was."""
    import math
    import warnings

    import torch

    from noisefloor.train.trainer import learning_rate

    for peak, steps, percent in ((0.0014, 400, 5), (0.0004, 30, 0), (0.001, 37, 7.5)):
        warmup = int((steps * percent) // 100)
        optimizer = torch.optim.AdamW([torch.zeros(2, requires_grad=True)], lr=peak, weight_decay=0.1)
        chained = torch.optim.lr_scheduler.SequentialLR(optimizer, schedulers=[
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.00001, end_factor=1.0, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - warmup, eta_min=peak / 10)],
            milestones=[warmup])
        torch_rates = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(steps):
                optimizer.step()
                torch_rates.append(optimizer.param_groups[0]["lr"])
                chained.step()
        cfg = config_module.load("micro", [f"train.steps={steps}", "train.schedule_learning_rate=true",
                                           f"train.learning_rate={peak}", f"train.warmup_period_percent={percent}",
                                           "train.lr_schedule='blog'"])
        assert [learning_rate(cfg, s) for s in range(steps)] == torch_rates

    book = config_module.load("micro", ["train.steps=100", "train.schedule_learning_rate=true", "train.lr_schedule='book'",
                                        "train.initial_learning_rate=3e-05", "train.learning_rate=0.001",
                                        "train.min_learning_rate=1e-06", "train.warmup_period_percent=20"])
    increment = (0.001 - 3e-05) / 20
    expected = [3e-05 + s * increment if s < 20 else
                1e-06 + (0.001 - 1e-06) * 0.5 * (1 + math.cos(math.pi * ((s - 20) / 80))) for s in range(100)]
    assert [learning_rate(book, s) for s in range(100)] == expected
    today = book.replace(train={"lr_schedule": "noisefloor"})
    assert [learning_rate(today, s) for s in range(20)] == [3e-05 + s * (0.001 - 3e-05) / 20 for s in range(20)]


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
