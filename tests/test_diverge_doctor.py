"""`diverge` finds the step where two runs part; `doctor` audits the environment and self-tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import REPO, run_cli
from noisefloor import config as config_module
from noisefloor.train import determinism, trainer
from noisefloor.train.data import ShuffledStream, Windows


def _config(data: str, **train):
    base = config_module.load(REPO / "training" / "micro.toml")
    return base.replace(train={"data": data, "steps": 12, "digest_interval": 1, "checkpoint_interval": 0,
                               "eval_interval": 0, **train})


def test_a_data_change_read_at_step_k_is_found_at_step_k(tmp_path, capsys):
    k = 7
    tokens = np.random.default_rng(0).integers(0, 500, size=24_000).astype(np.uint16)
    save_file({"tokens": tokens}, str(tmp_path / "a.safetensors"))
    config_a = _config(str(tmp_path / "a.safetensors"))

    # which training window the run reads first at step k (the stream is a pure function of the data seed)
    train_split = tokens[: int(len(tokens) * 0.9)]
    stream = ShuffledStream(Windows(train_split, 32, "train", "a"), determinism.data_seed(42, None))
    window = int(stream._permutation(0)[(k - 1) * config_a.train.microbatch_size])
    changed = tokens.copy()
    changed[window * 32 + 5] = (changed[window * 32 + 5] + 1) % 500
    save_file({"tokens": changed}, str(tmp_path / "b.safetensors"))

    trainer.train(config_a, tmp_path / "A")
    trainer.train(_config(str(tmp_path / "b.safetensors")), tmp_path / "B")
    code, out, _ = run_cli(capsys, "diverge", tmp_path / "A", tmp_path / "B", "--json")
    found = json.loads(out)
    assert code == 1 and found["diverged"]
    assert found["first_divergent_step"] == k and found["last_equal_step"] == k - 1
    assert "tok_emb.weight" in found["first_tensors"]
    assert any(line.startswith("train.data:") for line in found["config_differences"])
    assert found["environment_differences"] == []


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("diverge")
    base = config_module.load(REPO / "training" / "micro.toml")  # digests every 5 steps
    for name, cfg in {"a": base, "a2": base, "t7": base.replace(train={"train_seed": 7})}.items():
        trainer.train(cfg, root / name)
    return root


def test_a_different_training_seed_diverges_at_the_first_recorded_step(seed_runs, capsys):
    code, out, _ = run_cli(capsys, "diverge", seed_runs / "a", seed_runs / "t7")
    assert code == 1
    assert "DIVERGED at step 5 (last equal step: 0;" in out
    assert "train.train_seed: None != 7" in out


def test_identical_runs_do_not_diverge(seed_runs, capsys):
    code, out, _ = run_cli(capsys, "diverge", seed_runs / "a", seed_runs / "a2")
    assert code == 0 and out.startswith("NO DIVERGENCE in 5 recorded steps (last common step 20)")


def test_environment_differences_are_named(seed_runs, tmp_path, capsys):
    import shutil

    copy = tmp_path / "other-machine"
    shutil.copytree(seed_runs / "a2", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    here = manifest["environment"]["cpu_kernels"]
    manifest["environment"]["torch_threads"] = 8
    manifest["environment"]["packages"]["torch"] = "9.9.9"
    manifest["environment"]["cpu_kernels"] = "AVX512" if here != "AVX512" else "AVX2"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code, out, _ = run_cli(capsys, "diverge", seed_runs / "a", copy)
    assert code == 0
    assert "packages.torch: '2" in out and "torch_threads: 1 != 8" in out and f"cpu_kernels: '{here}'" in out


def test_diverge_needs_run_directories(tmp_path, capsys):
    code, _, err = run_cli(capsys, "diverge", tmp_path / "x", tmp_path / "y")
    assert code == 2 and "run directory not found" in err
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    code, _, err = run_cli(capsys, "diverge", tmp_path / "x", tmp_path / "y")
    assert code == 2 and "digests.jsonl not found" in err


def test_doctor_in_a_fresh_process_finds_the_default_hazards_and_passes_its_self_test():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")}
    done = subprocess.run([sys.executable, "-m", "noisefloor", "doctor", "--json"], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    found = {h["name"] for h in report["hazards"] if h["found"]}
    assert {"deterministic algorithms off", "thread count not fixed"} <= found
    assert report["noisefloor_mode"]["deterministic_algorithms"] is True and report["noisefloor_mode"]["threads"] == 1
    assert report["self_test"]["passed"] is True
    assert report["fingerprint"]["packages"]["torch"].startswith("2.")


def test_diverge_verify_identical_and_doctor_print_every_value_of_their_json(seed_runs, capsys, monkeypatch):
    """Piped to a log (no terminal, COLUMNS unset), the text holds every value of --json (tests/json_in_text.py)."""
    from json_in_text import missing_from_text

    monkeypatch.delenv("COLUMNS", raising=False)
    for argv, code in ((("diverge", seed_runs / "a", seed_runs / "t7"), 1),
                       (("verify-identical", seed_runs / "a", seed_runs / "t7"), 1),
                       (("doctor", "--skip-self-test"), 0)):
        done, out, _ = run_cli(capsys, *argv, "--json")
        assert done == code
        done, text, _ = run_cli(capsys, *argv)
        assert done == code
        assert missing_from_text(json.loads(out), text) == [], argv
