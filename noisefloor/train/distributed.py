"""Data-parallel runs (DDP): what each rank does beside a single process (launch.py starts the ranks).

A run with `train.world_size = N > 1` is trained by N processes started by
torchrun (`python -m torch.distributed.run --standalone`), one per GPU with
NCCL, or on the CPU with gloo. What keeps it bit-repeatable:

- every rank builds the same initial weights (same init seed, same code);
- at step s, microbatch k, rank r reads windows from stream position
  (s * accumulation * N + k * N + r) * microbatch: the ranks share one data
  order and never read the same window;
- rank 0's RNG is exactly a single-process run's; rank r > 0 is re-seeded
  from (init seed, train seed, r), so dropout masks differ between ranks;
- DDP's bucket size is fixed (25 MB) and gradients are all-reduced on the
  last microbatch only; the logged loss is the mean over ranks, so every
  rank takes the same branch (diverged or not);
- checkpoints store every rank's RNG state (gathered to rank 0), and all
  ranks restore their own on resume. Resume needs the same world size.

Only rank 0 writes files. With NCCL, keep the world size, the GPU model and
the NCCL algorithm/protocol fixed (e.g. NCCL_ALGO=Ring NCCL_PROTO=Simple):
a different reduction tree sums in another order. The environment
fingerprint records those variables.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from noisefloor.errors import UserError

BUCKET_CAP_MB = 25


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


SINGLE = Ranks()


def ranks_from_env() -> Ranks:
    return Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def backend(device: str) -> str:
    return "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"


def describe() -> dict[str, Any]:
    return {"backend": dist.get_backend(), "bucket_cap_mb": BUCKET_CAP_MB,
            "nccl": {k: v for k, v in os.environ.items() if k.startswith("NCCL_")}}


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, bucket_cap_mb=BUCKET_CAP_MB)


def maybe_no_sync(model: torch.nn.Module, skip_sync: bool):
    return model.no_sync() if skip_sync else nullcontext()


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def mean_over_ranks(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    if not ranks.distributed:
        return value
    total = value.clone()
    dist.all_reduce(total)
    return total / ranks.world


# ---------------------------------------------------------------- RNG state of every rank


def rng_of_all_ranks(values: dict, tensors: dict[str, torch.Tensor], ranks: Ranks) -> tuple[Any, dict[str, torch.Tensor]]:
    """A single process keeps its format; ranks gather theirs to rank 0 as a list and `rank<r>.`-prefixed tensors."""
    if not ranks.distributed:
        return values, tensors
    gathered: list = [None] * ranks.world
    dist.all_gather_object(gathered, (values, {k: v.cpu() for k, v in tensors.items()}))
    all_values = [v for v, _ in gathered]
    all_tensors = {f"rank{r}.{k}": v for r, (_, ts) in enumerate(gathered) for k, v in ts.items()}
    return all_values, all_tensors


def rng_of_rank(values: Any, tensors: dict[str, torch.Tensor], ranks: Ranks) -> tuple[dict, dict[str, torch.Tensor]]:
    if isinstance(values, dict):
        if ranks.distributed:
            raise UserError("the checkpoint was written by a single process; resume it with world_size = 1")
        return values, tensors
    if len(values) != ranks.world:
        raise UserError(f"the checkpoint was written by {len(values)} ranks; resume it with world_size = {len(values)}")
    prefix = f"rank{ranks.rank}."
    return values[ranks.rank], {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
