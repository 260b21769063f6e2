"""Seeds, deterministic mode, RNG state capture, and the environment fingerprint.

Two seeds, kept apart:
- `init_seed` seeds every global RNG before the model is built;
- `train_seed`, when given, re-seeds every global RNG right after the model
  is built, so dropout masks (F.dropout draws from the global generators)
  no longer depend on how many numbers initialisation drew.
Data order has its own generator (see data.ShuffledStream), seeded from the
training stream, never from a hidden global draw.
"""

from __future__ import annotations

import hashlib
import os
import platform
import random
import subprocess
import sys
from importlib import metadata
from typing import Any

import numpy as np
import torch

CUBLAS_WORKSPACE = ":4096:8"
SEED_BITS = 63


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of parts: independent streams with no arithmetic collisions."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << SEED_BITS) - 1)


def seed_everything(seed: int) -> None:
    """Seed python `random`, numpy, torch CPU and every CUDA device."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily, when CUDA initialises)


def data_seed(init_seed: int, train_seed: int | None) -> int:
    """The data-order seed of a training stream: re-seeded runs follow their train_seed,
    the others their init_seed."""
    return derive_seed("data", "train" if train_seed is not None else "init", train_seed if train_seed is not None else init_seed)


def deterministic_kernels(without_compiler: bool = False) -> None:
    """Deterministic kernels: cuBLAS's workspace (set before any CUDA work), deterministic algorithms (an op
    without one raises, not warns: fused SDPA backward must not slip through), cuDNN without autotuning.

    `without_compiler`: set torch's flag without the public call, which imports the compiler (seconds) only to
    set inductor's flag as well; for a user's script through seeding.init (one that compiles calls
    torch.use_deterministic_algorithms itself). Once the compiler is loaded, the public call costs nothing."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    if without_compiler and "torch._inductor" not in sys.modules and hasattr(torch._C, "_set_deterministic_algorithms"):
        torch._C._set_deterministic_algorithms(True, warn_only=False)
    else:
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def enable_deterministic_mode(threads: int) -> None:
    """Everything that makes a run repeatable on the same stack. Call before any CUDA work."""
    deterministic_kernels()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- RNG state


def capture_rng() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Every global RNG state, split into JSON-able values and tensors (no pickle)."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    values = {
        "python": {"version": version, "state": list(mt_state), "gauss_next": gauss},
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_initialized() else 0,
    }
    tensors = {"rng.numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.int32).copy()),
               "rng.torch_cpu": torch.get_rng_state()}
    for index in range(values["cuda_devices"]):
        tensors[f"rng.cuda.{index}"] = torch.cuda.get_rng_state(index)
    return values, tensors


def restore_rng(values: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    py = values["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    nps = values["numpy"]
    keys = tensors["rng.numpy_keys"].numpy().view(np.uint32)
    np.random.set_state((nps["kind"], keys, nps["pos"], nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(tensors["rng.torch_cpu"])
    for index in range(values["cuda_devices"]):
        torch.cuda.set_rng_state(tensors[f"rng.cuda.{index}"], index)


# ---------------------------------------------------------------- environment


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in ("noisefloor", "torch", "numpy", "tiktoken", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    config = torch.__config__.show()
    for marker in ("BLAS_INFO=", "LAPACK_INFO="):
        for part in config.replace(",", "\n").splitlines():
            part = part.strip()
            if part.startswith(marker):
                return part[len(marker):]
    return "unknown"


RELEVANT_ENV = (
    "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "PYTHONHASHSEED", "ATEN_CPU_CAPABILITY", "NCCL_ALGO", "NCCL_PROTO", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "NVIDIA_TF32_OVERRIDE",
)


def fingerprint(device: torch.device | None = None) -> dict[str, Any]:
    """What must stay the same for bit-identity: software stack, device model, threads."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # the CPU kernels torch dispatches to (DEFAULT, AVX2, AVX512): they round differently, so CPU
        # results are bit-identical only between machines that pick the same ones
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "blas": _blas(),
        "packages": _package_versions(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "env": {name: os.environ[name] for name in RELEVANT_ENV if name in os.environ},
    }
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device"] = {"type": "cuda", "name": props.name, "sm_count": props.multi_processor_count,
                          "capability": f"{props.major}.{props.minor}", "memory_bytes": props.total_memory,
                          "driver": _cuda_driver()}
    else:
        info["device"] = {"type": "cpu", "name": info["cpu"]}
    return info


def _cuda_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None
