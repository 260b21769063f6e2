"""torch.compile: a compiled run repeats itself and resumes bit-identically (its own numerics, not eager's)."""

from __future__ import annotations

import pytest

from noisefloor.train import trainer
from test_train import StopAt, _interrupt_at


def test_compiled_run_resumes_bit_identically_and_differs_from_eager(micro_config, tmp_path):
    compiled = micro_config.replace(train={"compile": True, "steps": 16, "checkpoint_interval": 5})
    straight = trainer.train(compiled, tmp_path / "straight")
    with pytest.raises(StopAt):
        trainer.train(compiled, tmp_path / "cut", _interrupt_at(12))
    resumed = trainer.resume(tmp_path / "cut")
    assert resumed["final_digest"] == straight["final_digest"]
    eager = trainer.train(compiled.replace(train={"compile": False}), tmp_path / "eager")
    assert eager["init_digest"] == straight["init_digest"]
    assert eager["final_digest"] != straight["final_digest"]  # compiled kernels round differently: record the mode
