"""CUDA: the same guarantees as on the CPU. Skipped cleanly without a GPU (CI has none)."""

from __future__ import annotations

import pytest
import torch

from conftest import REPO
from noisefloor import config as config_module
from noisefloor.train import trainer
from test_train import same_bytes, tensors

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("precision", ["amp-bf16", "amp-fp16", "fp32"])
def test_micro_on_cuda_repeats_bit_for_bit(tmp_path, precision):
    config = config_module.load(REPO / "training" / "micro.toml", ["train.device=cuda", f"train.precision={precision}"])
    a = trainer.train(config, tmp_path / "a")
    b = trainer.train(config, tmp_path / "b")
    assert a["final_digest"] == b["final_digest"]
    assert same_bytes(tensors(tmp_path / "a" / "model.safetensors"), tensors(tmp_path / "b" / "model.safetensors"))


def test_gpt2_small_200_steps_twice_bit_identical_and_train_seed_keeps_init(tmp_path):
    """The issue's target: the 163M baseline, 200 steps, twice; another train_seed keeps the init."""
    steps = ["train.steps=200", "train.eval_interval=0", "train.checkpoint_interval=100", "train.eval_windows=8"]
    config = config_module.load(REPO / "training" / "gpt2-small-163m.toml", steps)
    a = trainer.train(config, tmp_path / "a")
    b = trainer.train(config, tmp_path / "b")
    c = trainer.train(config.replace(train={"train_seed": 23}), tmp_path / "c")
    assert a["final_digest"] == b["final_digest"]
    assert same_bytes(tensors(tmp_path / "a" / "model.safetensors"), tensors(tmp_path / "b" / "model.safetensors"))
    assert same_bytes(tensors(tmp_path / "a" / "init.safetensors"), tensors(tmp_path / "c" / "init.safetensors"))
    assert c["final_digest"] != a["final_digest"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ddp_on_two_gpus_repeats_bit_for_bit(tmp_path):
    config = config_module.load(REPO / "training" / "micro.toml", ["train.device=cuda", "train.world_size=2",
                                                                  "train.precision=amp-bf16"])
    a = trainer.train(config, tmp_path / "a")
    b = trainer.train(config, tmp_path / "b")
    assert a["final_digest"] == b["final_digest"]
