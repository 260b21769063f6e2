"""Slurm's cost per run: the same micro sweep on the local pool and through sbatch job arrays, side by side.

Starts a one-node Slurm cluster on this machine (Debian's slurm-wlm, as root; the
test suite's `tests/slurm_cluster.py`) with 2 CPUs, and runs the same K-run sweep
alternately with `--executor local --jobs 2` and `--executor slurm` (2 runs at a
time either way), `--repeats` times each, in fresh folders. Reported: median wall
time per sweep, the ratio slurm / local, and the extra seconds per run Slurm
costs: (slurm wall - local wall) x 2 / K. Both must give the same final digests.

    sudo python benchmarks/slurm_overhead.py [--runs 6] [--repeats 2] [--poll 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from slurm_cluster import one_node_cluster  # noqa: E402

from noisefloor.sweep import spec  # noqa: E402
from noisefloor.sweep.executors import SlurmExecutor  # noqa: E402
from noisefloor.sweep.runner import SweepOptions, run_sweep  # noqa: E402

MICRO = REPO / "training" / "micro.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--poll", type=float, default=SlurmExecutor.poll_seconds,
                        help=f"seconds between squeue calls (default {SlurmExecutor.poll_seconds:g}, the CLI's)")
    args = parser.parse_args()
    SlurmExecutor.poll_seconds = args.poll
    plan = spec.from_flags(str(MICRO), [], [], [1000 + i for i in range(args.runs)], None, "bench")
    options = {"local": SweepOptions(jobs=2),
               "slurm": SweepOptions(executor="slurm", partition="debug", time_minutes=10)}
    walls: dict[str, list[float]] = {"local": [], "slurm": []}
    digests: dict[str, set] = {"local": set(), "slurm": set()}
    with tempfile.TemporaryDirectory() as tmp, one_node_cluster(Path(tmp) / "cluster", cpus=2):
        run_sweep(plan, Path(tmp) / "warm-up", options["local"])  # tokenised corpus and page cache for both
        for repeat in range(args.repeats):
            for kind in ("local", "slurm"):
                began = time.perf_counter()
                summary = run_sweep(plan, Path(tmp) / f"{kind}-{repeat}", options[kind])
                walls[kind].append(time.perf_counter() - began)
                assert summary.ok, f"{kind} sweep failed"
                digests[kind].add(tuple(sorted(r.result["final_digest"] for r in summary.records)))
    local, slurm = statistics.median(walls["local"]), statistics.median(walls["slurm"])
    print(f"micro preset, {args.runs} runs, 2 at a time, median of {args.repeats}; squeue every {args.poll:g} s")
    print(f"local pool (--jobs 2):   {local:6.2f} s per sweep  ({', '.join(f'{w:.1f}' for w in walls['local'])})")
    print(f"slurm job array (2 CPUs): {slurm:6.2f} s per sweep  ({', '.join(f'{w:.1f}' for w in walls['slurm'])})")
    print(f"ratio slurm / local: {slurm / local:.2f}; Slurm's extra cost per run: {(slurm - local) * 2 / args.runs:.2f} s")
    print(f"same final digests on both executors: {'yes' if digests['local'] == digests['slurm'] and len(digests['local']) == 1 else 'NO'}")


if __name__ == "__main__":
    main()
