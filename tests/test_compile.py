"""torch.compile: a compiled run repeats itself and resumes bit-identically (its own numerics, not eager's)."""

from __future__ import annotations

import os

import pytest

from noisefloor.train import trainer
from test_train import StopAt, _interrupt_at


NO_VECTOR_KERNELS = os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "default"


@pytest.mark.kernels
@pytest.mark.skipif(NO_VECTOR_KERNELS, reason="torch.compile cannot build CPU kernels with ATEN_CPU_CAPABILITY=default")
def test_compiled_run_resumes_bit_identically_and_differs_from_eager(micro_config, tmp_path):
    compiled = micro_config.replace(train={"compile": True, "steps": 16, "checkpoint_interval": 5})
    straight = trainer.train(compiled, tmp_path / "straight")
    with pytest.raises(StopAt):
        trainer.train(compiled, tmp_path / "cut", _interrupt_at(12))
    resumed = trainer.resume(tmp_path / "cut")
    assert resumed["final_digest"] == straight["final_digest"]
    eager = trainer.train(compiled.replace(train={"compile": False}), tmp_path / "eager")
    assert eager["init_digest"] == straight["init_digest"]
    # Inductor lowers dropout to its own random stream (config.fallback_random is False), so a compiled run
    # draws other masks than eager on every machine, beyond any rounding: the mode must be recorded.
    assert eager["final_digest"] != straight["final_digest"]


def test_compile_without_vector_kernels_is_one_line_and_writes_nothing(micro_config, tmp_path, monkeypatch, capsys):
    from conftest import REPO, run_cli

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    code, _, err = run_cli(capsys, "train", "--config", REPO / "training" / "micro.toml", "--set", "train.compile=true",
                           "--out", tmp_path / "run", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "ATEN_CPU_CAPABILITY" in err
    assert not (tmp_path / "run" / "config.json").exists()
