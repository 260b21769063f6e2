"""The device a run trains on: refused when this machine lacks it, resolved for this process's rank."""

from __future__ import annotations

import torch

from noisefloor.config import RunConfig
from noisefloor.errors import UserError


def require_device(name: str) -> None:
    """Refuse a device this machine lacks, without touching (and so initialising) CUDA."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("[train] device is 'cuda' but no CUDA device is available; use device = 'auto' or 'cpu'")


def uses_cuda(config: RunConfig) -> bool:
    return config.train.device == "cuda" or (config.train.device == "auto" and torch.cuda.is_available())


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    require_device(name)
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
