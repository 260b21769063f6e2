"""Per-run fixed overhead of a sweep: wall time of K micro runs vs K x one step loop in-process.

Overhead per run = (sweep wall time - K x step-loop time) / K: process start,
imports, data load, model init, evaluation and every file a run writes.
Target: < 2 s per run on CPU. Also checks that the tokenised corpus is built
once per sweep (one cache file, written before the first run started), not
once per run.

    python benchmarks/sweep_overhead.py [--runs 8] [--jobs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from noisefloor import config as config_module  # noqa: E402
from noisefloor.train import trainer  # noqa: E402

MICRO = REPO / "training" / "micro.toml"


def step_loop_seconds(cfg) -> float:
    """The step loop alone, in-process, after a warm-up run (imports and caches already paid)."""
    stamps: list[float] = []

    def on_event(event):
        if event["event"] in ("start", "step"):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        trainer.train(cfg, Path(tmp) / "warm-up")
        stamps.clear()
        trainer.train(cfg, Path(tmp) / "timed", on_event)
    return stamps[-1] - stamps[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NOISEFLOOR_CACHE_DIR": str(Path(tmp) / "cache"), "PYTHONPATH": str(REPO)}
        os.environ["NOISEFLOOR_CACHE_DIR"] = env["NOISEFLOOR_CACHE_DIR"]
        loop = step_loop_seconds(config_module.load(MICRO))
        for path in Path(env["NOISEFLOOR_CACHE_DIR"]).glob("*"):
            path.unlink()  # the sweep must build its own

        seeds = ",".join(str(1000 + i) for i in range(args.runs))
        out = Path(tmp) / "sweep"
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "noisefloor", "sweep", "--config", str(MICRO), "--init-seeds", seeds,
                        "--jobs", str(args.jobs), "--quiet", "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - began

        caches = list(Path(env["NOISEFLOOR_CACHE_DIR"]).glob("tokens-*.npy"))
        first_run = min((r / "manifest.json").stat().st_mtime for r in (out / "runs").iterdir())
        built_once = len(caches) == 1 and caches[0].stat().st_mtime <= first_run
        done = sum(json.loads((r / "result.json").read_text())["status"] == "done" for r in (out / "runs").iterdir())

    overhead = (wall * args.jobs - args.runs * loop) / args.runs
    print(f"micro preset, {args.runs} runs, --jobs {args.jobs}: {done} done")
    print(f"sweep wall time {wall:.2f} s; in-process step loop {loop:.3f} s per run")
    print(f"fixed overhead per run = {overhead:.2f} s  (target < 2 s: {'met' if overhead < 2 else 'MISSED'})")
    print(f"share of a run that is overhead at this size: {overhead / (overhead + loop):.0%}")
    print(f"tokenised corpus built once for the whole sweep: {'yes' if built_once else 'NO'} ({len(caches)} cache file)")


if __name__ == "__main__":
    main()
