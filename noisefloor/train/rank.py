"""One rank of a data-parallel (DDP) run: torchrun starts `python -m noisefloor.train.rank RUN_DIR`
once per process (launch.py); each trains its share of the run in the folder's config."""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist

from noisefloor.errors import UserError
from noisefloor.processes import die_with_parent
from noisefloor.rundir import RunDir
from noisefloor.train.distributed import backend, ranks_from_env
from noisefloor.train.trainer import Trainer


def main(argv: list[str]) -> int:
    die_with_parent()
    run = RunDir(Path(argv[0]))
    ranks = ranks_from_env()
    config = run.read_config()
    if ranks.world != config.train.world_size:
        print(f"noisefloor: error: {run.path} asks for world_size {config.train.world_size}, torchrun started "
              f"{ranks.world} processes", file=sys.stderr)
        return 2
    dist.init_process_group(backend(config.train.device))
    try:
        Trainer(config, run.path, ranks=ranks).run_training(resume=True)
    except UserError as exc:
        print(f"noisefloor: error: {exc}", file=sys.stderr)
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
