"""`noisefloor doctor`: the environment fingerprint, determinism hazards, and a self-test.

Hazards are read from this process's defaults — what a hand-written training
script on this machine inherits — and each says whether noisefloor's own
runs are protected from it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from noisefloor.checkpoints import compare_paths
from noisefloor.config import RunConfig
from noisefloor.train import determinism
from noisefloor.train.trainer import train


@dataclass
class Hazard:
    name: str
    found: bool
    detail: str
    handled: bool  # noisefloor's own runs are protected from it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def audit(config: RunConfig) -> list[Hazard]:
    cuda = torch.cuda.is_available()
    hazards = [
        Hazard("deterministic algorithms off", not torch.are_deterministic_algorithms_enabled(),
               "torch.use_deterministic_algorithms is off by default: some kernels (index_add, scatter, fused SDPA "
               "backward on CUDA) may give different bits run to run", True),
        Hazard("thread count not fixed", "OMP_NUM_THREADS" not in os.environ,
               f"torch uses {torch.get_num_threads()} threads here by default and CPU results depend on the count",
               True),
        Hazard("cudnn.benchmark on", torch.backends.cudnn.benchmark,
               "autotuning picks kernels by timing, which can differ run to run", True),
    ]
    if cuda:
        tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32 \
            or torch.get_float32_matmul_precision() != "highest"
        hazards += [
            Hazard("CUBLAS_WORKSPACE_CONFIG unset on CUDA", "CUBLAS_WORKSPACE_CONFIG" not in os.environ,
                   "cuBLAS may split reductions differently between runs unless it is :4096:8 or :16:8", True),
            Hazard("TF32 on", tf32, "float32 matmuls/convolutions may run in TF32 (10-bit mantissa)", True),
        ]
    forced_tf32 = os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE") == "1" or os.environ.get("NVIDIA_TF32_OVERRIDE") == "1"
    hazards.append(Hazard("TF32 forced by environment", forced_tf32,
                          "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 or NVIDIA_TF32_OVERRIDE=1 overrides the settings in code", False))
    hazards.append(Hazard("torch.compile on", config.train.compile,
                          "compiled code changes numerics and RNG streams vs eager: a run and its resume must "
                          "use the same mode (noisefloor records it in config.json and resumes with it)", True))
    return hazards


def noisefloor_mode(threads: int) -> dict[str, Any]:
    """The settings noisefloor's runs use, as actually applied in this process."""
    determinism.enable_deterministic_mode(threads)
    mode = {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if torch.cuda.is_available():
        mode["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        mode["tf32"] = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
    return mode


def self_test(config: RunConfig) -> dict[str, Any]:
    """Train the config twice in-process; PASS when the final weights are bit-identical."""
    with tempfile.TemporaryDirectory() as tmp:
        first = train(config, Path(tmp) / "first")
        second = train(config, Path(tmp) / "second")
        comparison = compare_paths(Path(tmp) / "first", Path(tmp) / "second")
    return {
        "passed": comparison.identical and first["final_digest"] == second["final_digest"],
        "final_digest": first["final_digest"],
        "second_digest": second["final_digest"],
        "steps": config.train.steps,
        "device": "cuda" if torch.cuda.is_available() and config.train.device != "cpu" else "cpu",
    }
