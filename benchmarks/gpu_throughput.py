"""GPU throughput of gpt2-small-163m at context 1024: tokens/s and MFU, deterministic mode on vs off,
eager vs compiled, side by side in one run. Needs a CUDA GPU (exits with a message otherwise).

    python benchmarks/gpu_throughput.py [--steps 50] [--warmup 10] [--microbatch 16] [--peak-tflops 989.4]

MFU = achieved FLOP/s / peak, with 6·N + 12·layers·width·context FLOPs per token (N: parameters);
the default peak is an H100/H200 SXM's dense bf16 989.4 TFLOP/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from noisefloor import config as config_module  # noqa: E402
from noisefloor.train import determinism, trainer  # noqa: E402


def nondeterministic_mode(threads: int) -> None:
    """The same settings minus determinism: what a plain script gets."""
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    torch.set_num_threads(threads)


def measure(cfg, steps: int, warmup: int, deterministic: bool) -> float:
    stamps: list[float] = []

    def on_event(event):
        if event["event"] == "step":
            torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    patch = (mock.patch.object(trainer.determinism, "enable_deterministic_mode", nondeterministic_mode)
             if not deterministic else mock.patch.object(trainer.determinism, "enable_deterministic_mode",
                                                          determinism.enable_deterministic_mode))
    with patch, tempfile.TemporaryDirectory() as tmp:
        trainer.train(cfg, Path(tmp) / "run", on_event)
    timed = stamps[warmup:]
    return (len(timed) - 1) * cfg.tokens_per_step / (timed[-1] - timed[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--microbatch", type=int, default=16)
    parser.add_argument("--peak-tflops", type=float, default=989.4)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_throughput: no CUDA device here; run it on a GPU machine")

    base = config_module.load(REPO / "training" / "gpt2-small-163m.toml", [
        f"train.steps={args.steps + args.warmup}", f"train.microbatch_size={args.microbatch}",
        "train.gradient_accumulation_steps=1", "train.eval_interval=0", "train.eval_windows=2",
        "train.checkpoint_interval=0", "train.device=cuda",
    ])
    m = base.model
    with torch.device("meta"):
        from noisefloor.train.model import GPTModel, count_parameters

        params = count_parameters(GPTModel(m))
    flops_per_token = 6 * params + 12 * m.n_layers * m.emb_dim * m.context_length
    rows = []
    for compiled in (False, True):
        cfg = base.replace(train={"compile": compiled})
        on = measure(cfg, args.steps, args.warmup, deterministic=True)
        off = measure(cfg, args.steps, args.warmup, deterministic=False)
        rows.append((compiled, on, off))
    name = torch.cuda.get_device_name()
    print(f"{name}, gpt2-small-163m, context {m.context_length}, microbatch {args.microbatch}, {base.train.precision}")
    print(f"{'mode':10} {'deterministic tok/s':>20} {'MFU':>6} {'nondeterministic tok/s':>23} {'MFU':>6} {'det/nondet':>11}")
    for compiled, on, off in rows:
        mfu = lambda tps: tps * flops_per_token / (args.peak_tflops * 1e12)
        print(f"{'compiled' if compiled else 'eager':10} {on:>20,.0f} {mfu(on):>6.1%} {off:>23,.0f} {mfu(off):>6.1%} "
              f"{on / off:>11.3f}")
    _, best_on, best_off = max(rows, key=lambda row: row[1])
    print(f"best deterministic throughput {best_on:,.0f} tok/s (target >= 400,000 on one H100); "
          f"determinism overhead there {1 - best_on / best_off:.1%} (target <= 10%)")


if __name__ == "__main__":
    main()
