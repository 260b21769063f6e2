"""verify-identical against `cmp`, side by side on the same files, as ratios.

Case 1: two identical ~1 GB safetensors files. `cmp A B` and
`noisefloor verify-identical A B` (the CLI as a subprocess, so interpreter
start-up and imports are counted) run alternately, several times each, on a
warm page cache. Target: throughput >= 0.8 x cmp's.

Case 2: A against a file that differs in every element of every tensor (the
lowest mantissa bit flipped). cmp stops at the first difference, so it is no
yardstick here; the ratio printed is this case's throughput over case 1's,
i.e. what computing statistics for every tensor costs.

The in-process library time (no start-up) is printed too, for reference.

    python benchmarks/verify_speed.py [--gb 1.0] [--repeats 5] [--dir /tmp]

The files live in a temporary folder that is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ROWS = 8192  # tensors are ROWS x COLS float32
COLS = 8192
WRITE_CHUNK_ROWS = 1024


def write_checkpoint(path: Path, n_tensors: int, seed: int, flip: bool = False) -> None:
    """Write float32 tensors straight in the safetensors format, a slab at a time (bounded memory)."""
    nbytes = ROWS * COLS * 4
    header = {f"h.{i}.weight": {"dtype": "F32", "shape": [ROWS, COLS], "data_offsets": [i * nbytes, (i + 1) * nbytes]} for i in range(n_tensors)}
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as out:
        out.write(len(text).to_bytes(8, "little") + text.encode())
        for _ in range(n_tensors):
            for _ in range(ROWS // WRITE_CHUNK_ROWS):
                slab = rng.standard_normal((WRITE_CHUNK_ROWS, COLS), dtype=np.float32)
                if flip:
                    slab.view(np.uint32)[...] ^= np.uint32(1)
                out.write(slab.tobytes())


def warm(*paths: Path) -> None:
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(64 << 20):
                pass


def timed(command: list[str], expect: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}, expected {expect}: {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of each file (rounded to 256 MiB tensors)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to put the temporary files (default: the system's temp folder)")
    args = parser.parse_args()
    if shutil.which("cmp") is None:
        raise SystemExit("cmp not found")
    n_tensors = max(1, round(args.gb * 1e9 / (ROWS * COLS * 4)))
    sys.path.insert(0, str(REPO))
    from noisefloor.checkpoints import compare

    folder = Path(tempfile.mkdtemp(prefix="verify-speed-", dir=args.dir))
    try:
        a, b, c = folder / "a.safetensors", folder / "b.safetensors", folder / "c.safetensors"
        write_checkpoint(a, n_tensors, seed=0)
        shutil.copyfile(a, b)
        write_checkpoint(c, n_tensors, seed=0, flip=True)
        size = a.stat().st_size
        warm(a, b, c)
        cli = [sys.executable, "-m", "noisefloor", "verify-identical"]

        cmp_times, same_times, diff_times, lib_same, lib_diff = [], [], [], [], []
        for _ in range(args.repeats):  # alternate, so drift and neighbours' load hit all alike
            cmp_times.append(timed(["cmp", str(a), str(b)], expect=0))
            same_times.append(timed([*cli, str(a), str(b)], expect=0))
            diff_times.append(timed([*cli, str(a), str(c)], expect=1))
            start = time.perf_counter()
            assert compare(a, b).identical
            lib_same.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert len(compare(a, c).differences) == n_tensors
            lib_diff.append(time.perf_counter() - start)

        def rate(times: list[float]) -> float:
            return size / statistics.median(times) / 1e9

        print(f"two files of {size / 1e9:.2f} GB ({n_tensors} F32 tensors), warm page cache, {os.cpu_count()} CPUs, median of {args.repeats}")
        print(f"  cmp A B                           {rate(cmp_times):6.2f} GB/s")
        print(f"  verify-identical A B (CLI)        {rate(same_times):6.2f} GB/s")
        print(f"  verify-identical A C (CLI)        {rate(diff_times):6.2f} GB/s   every element differs")
        print(f"  compare() A B (library)           {rate(lib_same):6.2f} GB/s   no start-up")
        print(f"  compare() A C (library)           {rate(lib_diff):6.2f} GB/s   no start-up")
        ratio = rate(same_times) / rate(cmp_times)
        print(f"identical files: verify-identical / cmp throughput = {ratio:.2f}  (target >= 0.8: {'met' if ratio >= 0.8 else 'MISSED'})")
        print(f"every tensor different: throughput / identical-case throughput = {rate(diff_times) / rate(same_times):.2f} (CLI), "
              f"{rate(lib_diff) / rate(lib_same):.2f} (library)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
