"""The trainer: bit-identical repeats, seeds kept apart, exact resume, divergence, losses."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from conftest import REPO, run_cli
from noisefloor.train import trainer
from noisefloor.train.model import build_model, export_state


def tensors(path: Path) -> dict[str, np.ndarray]:
    return load_file(str(path))


def same_bytes(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


@pytest.fixture(scope="module")
def micro_runs(tmp_path_factory):
    """Four micro runs: a baseline, its repeat, another train_seed, another init_seed."""
    from noisefloor import config

    base = config.load(REPO / "training" / "micro.toml")
    root = tmp_path_factory.mktemp("micro")
    variants = {
        "a": base,
        "a_again": base,
        "train_seed_7": base.replace(train={"train_seed": 7}),
        "init_seed_43": base.replace(train={"init_seed": 43}),
    }
    results = {name: trainer.train(cfg, root / name) for name, cfg in variants.items()}
    return root, results


@pytest.mark.kernels
def test_same_config_and_seeds_give_bit_identical_weights(micro_runs):
    root, results = micro_runs
    assert same_bytes(tensors(root / "a" / "model.safetensors"), tensors(root / "a_again" / "model.safetensors"))
    assert results["a"]["final_digest"] == results["a_again"]["final_digest"]
    assert results["a"]["test_loss"] == results["a_again"]["test_loss"]


def test_train_seed_keeps_init_and_changes_training(micro_runs):
    root, results = micro_runs
    assert same_bytes(tensors(root / "a" / "init.safetensors"), tensors(root / "train_seed_7" / "init.safetensors"))
    assert not same_bytes(tensors(root / "a" / "model.safetensors"), tensors(root / "train_seed_7" / "model.safetensors"))
    assert results["a"]["init_digest"] == results["train_seed_7"]["init_digest"]


def test_init_seed_changes_initial_weights(micro_runs):
    root, results = micro_runs
    init_a, init_b = tensors(root / "a" / "init.safetensors"), tensors(root / "init_seed_43" / "init.safetensors")
    differing = [k for k in init_a if init_a[k].tobytes() != init_b[k].tobytes()]
    # every randomly initialised tensor changes; LayerNorm scale/shift start at 1/0 either way
    assert sorted(differing) == sorted(k for k in init_a if not k.endswith((".scale", ".shift")))


def test_digest_in_result_matches_the_saved_file(micro_runs):
    root, results = micro_runs
    from noisefloor.train.state import state_digest

    saved = {k: torch.from_numpy(v) for k, v in tensors(root / "a" / "model.safetensors").items()}
    assert state_digest(saved).hexdigest() == results["a"]["final_digest"]


def test_run_directory_contents(micro_runs):
    root, results = micro_runs
    run = root / "a"
    for name in ("config.json", "manifest.json", "init.safetensors", "model.safetensors", "metrics.jsonl", "digests.jsonl", "result.json"):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["init_seed"] == 42 and manifest["train_seed"] is None
    assert manifest["corpus"]["source"] == "builtin" and manifest["corpus"]["corpus_hash"].startswith("sha256:")
    assert manifest["environment"]["torch_threads"] == 1
    assert manifest["environment"]["deterministic_algorithms"] is True
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines if "loss" in line]
    assert steps == list(range(1, 21))
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(lines[0])
    assert [line["step"] for line in lines if "val_loss" in line] == [10, 20]
    digests = [json.loads(line) for line in (run / "digests.jsonl").read_text().splitlines()]
    assert [line["step"] for line in digests] == [0, 5, 10, 15, 20]
    result = results["a"]
    assert digests[0]["digest"] == result["init_digest"] and digests[-1]["digest"] == result["final_digest"]
    assert result["status"] == "done" and result["tokens_seen"] == 20 * 4 * 32
    assert result["peak_memory_bytes"] > 0


def test_eval_reproduces_the_trainers_test_loss(micro_runs, capsys):
    root, results = micro_runs
    code, out, _ = run_cli(capsys, "eval", root / "a")
    assert code == 0
    assert out.startswith(f"test loss {results['a']['test_loss']:.6f}")
    code, out, _ = run_cli(capsys, "eval", root / "a" / "model.safetensors", "--split", "val", "--json")
    assert code == 0 and json.loads(out)["loss"] == results["a"]["val_loss"]


def test_smoke_is_greedy_and_repeatable(micro_runs, capsys):
    root, _ = micro_runs
    code, first, _ = run_cli(capsys, "smoke", root / "a", "--tokens", "12")
    code2, second, _ = run_cli(capsys, "smoke", root / "a", "--tokens", "12")
    assert code == code2 == 0 and first == second and first.startswith("Every effort moves you")
    code, sampled, _ = run_cli(capsys, "smoke", root / "a", "--tokens", "12", "--temperature", "1.0", "--seed", "3")
    assert code == 0 and sampled != first


# ---------------------------------------------------------------- per-parameter init


@pytest.mark.parametrize("change", [{"qkv_bias": True}, {"tie_weights": True}])
def test_per_parameter_init_keeps_shared_tensors_bit_identical(micro_config, change):
    base = export_state(build_model(micro_config.model, 42))
    changed_config = micro_config.replace(model=change)
    changed = export_state(build_model(changed_config.model, 42))
    shared = base.keys() & changed.keys()
    assert len(shared) >= len(base) - 1
    assert all(torch.equal(base[name], changed[name]) for name in shared)
    if "qkv_bias" in change:
        assert any(name.endswith("W_query.bias") for name in changed.keys() - base.keys())


def _rng_after_setup(config, tmp_path: Path) -> torch.Tensor:
    (tmp_path / "run").mkdir(parents=True)
    t = trainer.Trainer(config, tmp_path / "run")
    t._setup(resume=False)
    return torch.get_rng_state()


@pytest.mark.parametrize("scheme,train_seed,same_stream", [
    ("sequential", 7, True),       # the re-seed cuts the training loop loose from init
    ("sequential", None, False),   # classic: the RNG continues after a different number of draws
    ("per-parameter", None, True),  # per-parameter init draws nothing from the global RNG
])
def test_training_rng_after_init(micro_config, tmp_path, scheme, train_seed, same_stream):
    config = micro_config.replace(model={"init_scheme": scheme}, train={"train_seed": train_seed})
    plain = _rng_after_setup(config, tmp_path / "plain")
    biased = _rng_after_setup(config.replace(model={"qkv_bias": True}), tmp_path / "biased")
    assert torch.equal(plain, biased) == same_stream


def test_learning_rate_schedule_warms_up_then_decays_to_the_floor(micro_config):
    config = micro_config.replace(train={"steps": 100, "schedule_learning_rate": True, "initial_learning_rate": 0.0004,
                                         "learning_rate": 0.0014, "min_learning_rate": 0.00014, "warmup_period_percent": 5.0})
    lrs = [trainer.learning_rate(config, step) for step in range(100)]
    assert lrs[0] == pytest.approx(0.0004)
    assert lrs[5] == pytest.approx(0.0014)  # peak right after 5 warmup steps
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6]))
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
    assert lrs[-1] == pytest.approx(0.00014, rel=0.01)


# ---------------------------------------------------------------- resume


def _train_subprocess(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "noisefloor", "train", "--quiet", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _steps_done(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if '"loss"' in line)


def test_kill_at_a_random_step_then_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    overrides = ["--config", str(REPO / "training" / "micro.toml"), "--set", "train.steps=40", "--set", "train.checkpoint_interval=7"]
    kill_at = random.Random().randint(3, 35)
    killed = tmp_path / "killed"
    proc = _train_subprocess([*overrides, "--out", str(killed)], env)
    deadline = time.time() + 120
    while _steps_done(killed) < kill_at and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists(), f"run finished before the kill at step {kill_at}"

    resumed = subprocess.run([sys.executable, "-m", "noisefloor", "train", "--quiet", "--resume", str(killed)],
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    straight = tmp_path / "straight"
    uninterrupted = subprocess.run([sys.executable, "-m", "noisefloor", "train", "--quiet", *overrides, "--out", str(straight)],
                                   env=env, capture_output=True, text=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert same_bytes(tensors(killed / "model.safetensors"), tensors(straight / "model.safetensors")), f"killed near step {kill_at}"
    result_k, result_s = (json.loads((p / "result.json").read_text()) for p in (killed, straight))
    assert result_k["test_loss"] == result_s["test_loss"]
    losses = lambda run: [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert losses(killed) == losses(straight)


def test_resume_of_a_finished_run_changes_nothing(micro_runs, capsys):
    root, results = micro_runs
    before = (root / "a" / "model.safetensors").read_bytes()
    code, out, _ = run_cli(capsys, "train", "--resume", root / "a", "--json")
    assert code == 0 and json.loads(out)["final_digest"] == results["a"]["final_digest"]
    assert (root / "a" / "model.safetensors").read_bytes() == before


def test_a_run_directory_cannot_be_trained_twice_at_once(micro_config, tmp_path):
    from noisefloor.rundir import RunDir, exclusive, is_locked

    run = RunDir(tmp_path)
    with exclusive(run):
        assert is_locked(tmp_path)
        with pytest.raises(Exception, match="another process"):
            with exclusive(run):
                pass
    assert not is_locked(tmp_path)


# ---------------------------------------------------------------- divergence


def test_non_finite_loss_stops_the_run_as_diverged(micro_config, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "--config", REPO / "training" / "micro.toml",
                           "--set", "train.learning_rate=1e30", "--set", "train.steps=50", "--out", tmp_path / "run", "--quiet")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert code == 1 and "diverged" in out
    assert result["status"] == "diverged" and 1 <= result["step"] < 50
    assert "non-finite" in result["error"]
    assert not (tmp_path / "run" / "model.safetensors").exists()


# ---------------------------------------------------------------- resume in-process, precisions, accumulation


class StopAt(Exception):
    """Raised from the progress callback: the process 'dies' right after step `step`."""


def _interrupt_at(step: int):
    def on_event(event):
        if event["event"] == "step" and event["step"] == step:
            raise StopAt

    return on_event


@pytest.mark.kernels
@pytest.mark.parametrize("precision,accumulation", [("fp32", 2), ("amp-bf16", 1), ("amp-fp16", 1)])
def test_interrupted_then_resumed_is_bit_identical(micro_config, tmp_path, precision, accumulation):
    config = micro_config.replace(train={"precision": precision, "gradient_accumulation_steps": accumulation,
                                         "checkpoint_interval": 5, "steps": 16})
    straight = trainer.train(config, tmp_path / "straight")
    with pytest.raises(StopAt):
        trainer.train(config, tmp_path / "cut", _interrupt_at(13))
    assert not (tmp_path / "cut" / "result.json").exists()
    resumed = trainer.resume(tmp_path / "cut")
    assert resumed["final_digest"] == straight["final_digest"] and resumed["test_loss"] == straight["test_loss"]
    assert same_bytes(tensors(tmp_path / "cut" / "model.safetensors"), tensors(tmp_path / "straight" / "model.safetensors"))


@pytest.mark.kernels
def test_gradient_accumulation_equals_one_bigger_microbatch(micro_config, tmp_path, float64):
    """Two microbatches of 4 accumulate to the step one microbatch of 8 takes (same windows, same data order)."""
    base = micro_config.replace(model={"drop_rate": 0.0}, train={"steps": 1, "digest_interval": 0, "checkpoint_interval": 0})
    big = trainer.train(base.replace(train={"microbatch_size": 8}), tmp_path / "big")
    accumulated = trainer.train(base.replace(train={"microbatch_size": 4, "gradient_accumulation_steps": 2}), tmp_path / "acc")
    assert big["tokens_seen"] == accumulated["tokens_seen"] == 8 * 32
    a, b = tensors(tmp_path / "big" / "model.safetensors"), tensors(tmp_path / "acc" / "model.safetensors")
    start = tensors(tmp_path / "big" / "init.safetensors")
    lr = base.train.learning_rate
    # AdamW's first update is lr * g / (|g| + eps), eps = 1e-8: float64 gradients that differ only by summation
    # order (|dg| ~ 1e-16) move a weight by at most about lr * 1e-8 (measured: below 1e-12 * lr with the default
    # and AVX2 kernels; float32 gave 6e-5 * lr, above any fixed tolerance once |g| nears eps); other windows move
    # weights by O(lr). 1e-6 * lr sits between the two.
    for name in a:
        assert a[name].dtype == np.float64
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6 * lr, err_msg=name)
    assert max(np.abs(a[name] - start[name]).max() for name in a) > 0.5 * lr  # the step moved the weights
    # Adam's step is blind to a constant gradient scale (a missing 1/k): the recorded loss and pre-clip gradient
    # norm are not, and in float64 they agree to summation-order rounding.
    (step_big,), (step_acc,) = (
        [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
        for run in ("big", "acc")
    )
    assert step_acc["loss"] == pytest.approx(step_big["loss"], rel=1e-12)
    assert step_acc["grad_norm"] == pytest.approx(step_big["grad_norm"], rel=1e-12)


def test_a_corrupt_checkpoint_is_one_line_on_resume(micro_config, tmp_path, capsys):
    with pytest.raises(StopAt):
        trainer.train(micro_config, tmp_path / "run", _interrupt_at(12))
    state = tmp_path / "run" / "checkpoints" / "step-0000010" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:1000])
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "run")
    assert code == 2 and "state.safetensors" in err and len(err.strip().splitlines()) == 1
