"""`noisefloor classify` wall time on small, wide and huge results files, beside yardsticks in the same run.

Each file is classified by the CLI as a subprocess (interpreter start-up and imports counted), --json to
/dev/null. Yardsticks measured alongside: `python -c "import pandas"` (what any pandas tool pays before it
reads a byte) and, for the large files, pandas.read_csv of the same file (parsing alone).

- small: tests/data/study.csv (16 rows). Target: under 1 s wall.
- wide: 600 init seeds, each with a 3-run training-loop floor and its own intervention run (2,400 rows,
  600 floors, 600 interventions). Target: under 10 s.
- huge: 1,000,000 rows: 10,000 init seeds x (baseline at 4 training streams, three of them train seeds
  shared by every init seed, + 96 interventions, one run each). Target: under 60 s.

    python benchmarks/classify_speed.py [--repeats 3] [--skip-huge]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HEADER = "intervention,init_seed,train_seed,test_loss,same_init\n"


def wide_csv(path: Path, blocks: int = 600) -> Path:
    rng = np.random.default_rng(1)
    lines = [HEADER]
    for b in range(blocks):
        level = 5.0 + rng.normal(0, 0.02)
        for train in ("", 10_000 + 2 * b, 10_001 + 2 * b):
            lines.append(f"baseline,{b},{train},{level + rng.normal(0, 0.006):.6f},true\n")
        lines.append(f"iv{b},{b},,{level + rng.normal(0, 0.006):.6f},true\n")
    path.write_text("".join(lines))
    return path


def huge_csv(path: Path, seeds: int = 10_000, interventions: int = 96) -> Path:
    rng = np.random.default_rng(2)
    with open(path, "w") as handle:
        handle.write(HEADER)
        for seed in range(seeds):
            level = 5.0 + rng.normal(0, 0.02)
            noise = rng.normal(0, 0.006, 4 + interventions)
            rows = [f"baseline,{seed},{t},{level + z:.6f},true\n" for t, z in zip(("", 1, 2, 3), noise[:4])]
            rows += [f"iv{k},{seed},,{level + 0.001 * (k % 5) + z:.6f},true\n" for k, z in enumerate(noise[4:])]
            handle.writelines(rows)
    return path


def wall(argv: list[str], repeats: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-huge", action="store_true")
    args = parser.parse_args()
    python = sys.executable
    classify = [python, "-m", "noisefloor", "classify", "--json"]
    pandas_import = wall([python, "-c", "import pandas"], args.repeats)
    print(f"yardstick: python -c 'import pandas': {pandas_import:.2f} s (median of {args.repeats})")
    print("| file | rows | classify (s) | target (s) | classify / import pandas | classify / pandas.read_csv |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        files = [("small (tests/data/study.csv)", ROOT / "tests/data/study.csv", 1.0, args.repeats)]
        files.append(("wide: 600 floors, 600 interventions", wide_csv(Path(folder) / "wide.csv"), 10.0, args.repeats))
        if not args.skip_huge:
            files.append(("huge: 10,000 init seeds x 100 runs", huge_csv(Path(folder) / "huge.csv"), 60.0, 1))
        for name, path, target, repeats in files:
            seconds = wall(classify + [str(path)], repeats)
            read = wall([python, "-c", f"import pandas; pandas.read_csv({str(path)!r})"], repeats)
            rows = sum(1 for _ in open(path)) - 1
            print(f"| {name} | {rows:,} | {seconds:.2f} | {target:g} | {seconds / pandas_import:.1f} | {seconds / read:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
