"""Training throughput: the noisefloor trainer vs a minimal plain-PyTorch loop, side by side.

Both train the same model (tiny-cpu) on batches of the same shape with the
same thread count. The plain loop has no deterministic mode and no
bookkeeping; the trainer keeps everything it normally does per step
(deterministic algorithms, pre-clip gradient norm, metrics lines, parameter
digests every `digest_interval` steps, checkpoints every `checkpoint_interval`
steps). Periodic validation is switched off in both: it is evaluation, not
training. The two alternate, `--repeats` times each; the ratio of medians is
the figure of merit (target >= 0.95).

    python benchmarks/train_throughput.py [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from noisefloor import config as config_module  # noqa: E402
from noisefloor.train import trainer  # noqa: E402
from noisefloor.train.data import load_corpus  # noqa: E402
from noisefloor.train.model import GPTModel  # noqa: E402


def plain_loop(cfg, steps: int) -> float:
    """Tokens/s of the simplest loop a researcher would write for this model."""
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(0)
    tokens = np.asarray(load_corpus(cfg.train.data, cfg.model.vocab_size).split("train"), dtype=np.int64)
    model = GPTModel(cfg.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    L, B = cfg.model.context_length, cfg.train.microbatch_size
    rng = np.random.default_rng(0)
    began = time.perf_counter()
    for _ in range(steps):
        starts = rng.integers(0, len(tokens) - L - 1, size=B)
        rows = torch.from_numpy(np.stack([tokens[s : s + L + 1] for s in starts]))
        logits = model(rows[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
    return steps * cfg.tokens_per_step / (time.perf_counter() - began)


def noisefloor_trainer(cfg, steps: int) -> float:
    """Tokens/s of the trainer's step loop, from its first step to its last (setup and final evaluation excluded)."""
    stamps: list[float] = []

    def on_event(event):
        if event["event"] in ("start", "step"):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        trainer.train(cfg, Path(tmp) / "run", on_event)
    return steps * cfg.tokens_per_step / (stamps[-1] - stamps[0])


def digest_share(cfg, plain_tokens_per_s: float) -> float:
    """Cost of the parameter digests `diverge` relies on, per training step, as a share of the step time."""
    from noisefloor.train.model import build_model, export_state
    from noisefloor.train.state import state_digest

    model = build_model(cfg.model, cfg.train.init_seed)
    state_digest(export_state(model))  # warm-up
    repeats = 50
    began = time.perf_counter()
    for _ in range(repeats):
        state_digest(export_state(model)).hexdigest()
    per_digest = (time.perf_counter() - began) / repeats
    step_seconds = cfg.tokens_per_step / plain_tokens_per_s
    return per_digest / cfg.train.digest_interval / step_seconds


def integrity_costs(cfg, plain_tokens_per_s: float) -> tuple[float, float]:
    """(checkpoint digests as a share of the step time, token-cache check in step times per run start).

    A checkpoint's digests (weights, optimizer moments, RNG state) are taken when it is written and again
    when a resume reads it; the token cache's digest is checked once per run start."""
    from noisefloor.train.data import load_corpus, tokens_digest
    from noisefloor.train.model import build_model, export_state
    from noisefloor.train.state import checkpoint_digests

    model = build_model(cfg.model, cfg.train.init_seed)
    weights = export_state(model)
    moments = {f"optim.{n}.{k}": t.clone() for n, t in weights.items() for k in ("exp_avg", "exp_avg_sq")}
    repeats = 10
    began = time.perf_counter()
    for _ in range(repeats):
        checkpoint_digests(weights, moments, "{}")
    per_checkpoint = (time.perf_counter() - began) / repeats
    step_seconds = cfg.tokens_per_step / plain_tokens_per_s
    tokens = load_corpus(cfg.train.data, cfg.model.vocab_size).tokens
    began = time.perf_counter()
    for _ in range(repeats):
        tokens_digest(tokens)
    per_check = (time.perf_counter() - began) / repeats
    return per_checkpoint / cfg.train.checkpoint_interval / step_seconds, per_check / step_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "training" / "tiny-cpu.toml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = config_module.load(args.config, [f"train.steps={args.steps}", "train.eval_interval=0"])
    load_corpus(cfg.train.data, cfg.model.vocab_size)  # tokenise once, outside the timings

    plain, ours = [], []
    for repeat in range(args.repeats):
        plain.append(plain_loop(cfg, args.steps))
        ours.append(noisefloor_trainer(cfg, args.steps))
        print(f"repeat {repeat + 1}: plain {plain[-1]:,.0f} tok/s   noisefloor {ours[-1]:,.0f} tok/s   "
              f"ratio {ours[-1] / plain[-1]:.3f}", flush=True)
    ratio = statistics.median(ours) / statistics.median(plain)
    print(f"\n{Path(args.config).name}: {args.steps} steps x {cfg.tokens_per_step} tokens, {cfg.train.threads} thread(s), "
          f"digests every {cfg.train.digest_interval} steps, checkpoints every {cfg.train.checkpoint_interval}")
    print(f"median plain {statistics.median(plain):,.0f} tok/s, noisefloor {statistics.median(ours):,.0f} tok/s")
    print(f"throughput ratio noisefloor / plain = {ratio:.3f}  (target >= 0.95: {'met' if ratio >= 0.95 else 'MISSED'})")
    share = digest_share(cfg, statistics.median(plain))
    print(f"parameter digests every {cfg.train.digest_interval} steps cost {share:.2%} of the step time "
          f"(target < 2%: {'met' if share < 0.02 else 'MISSED'})")
    checkpoint_share, cache_steps = integrity_costs(cfg, statistics.median(plain))
    print(f"checkpoint digests (written, and checked on resume) every {cfg.train.checkpoint_interval} steps cost "
          f"{checkpoint_share:.2%} of the step time; the token-cache check costs {cache_steps:.2f} step(s) per run start")


if __name__ == "__main__":
    main()
