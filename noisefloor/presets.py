"""Built-in run presets, so an installed noisefloor runs `demo`, `doctor` and
`train --config tiny-cpu` without the repository's training/ folder.

Plain data: `config.preset(name)` builds the RunConfig. training/<name>.toml
is the readable copy of each; a test keeps them equal.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    "micro": {
        "model": {"vocab_size": 512, "context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 2,
                  "drop_rate": 0.1, "qkv_bias": False},
        "train": {"steps": 20, "microbatch_size": 4, "learning_rate": 0.002, "weight_decay": 0.1, "eval_interval": 10,
                  "eval_windows": 16, "checkpoint_interval": 5, "digest_interval": 5, "threads": 1},
    },
    "tiny-cpu": {
        "model": {"vocab_size": 2048, "context_length": 128, "emb_dim": 64, "n_heads": 4, "n_layers": 4,
                  "drop_rate": 0.1, "qkv_bias": False, "tie_weights": False, "init": "pytorch-default",
                  "init_scheme": "per-parameter"},
        "train": {"data": "builtin", "steps": 120, "microbatch_size": 16, "gradient_accumulation_steps": 1,
                  "learning_rate": 0.0004, "weight_decay": 0.1, "precision": "fp32", "device": "auto", "threads": 1,
                  "eval_interval": 40, "checkpoint_interval": 40, "digest_interval": 10},
    },
    "gpt2-small-163m": {
        "model": {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12, "n_layers": 12,
                  "drop_rate": 0.1, "qkv_bias": False, "tie_weights": False, "init": "pytorch-default",
                  "init_scheme": "per-parameter"},
        "train": {"data": "builtin", "steps": 2000, "microbatch_size": 16, "gradient_accumulation_steps": 2,
                  "learning_rate": 0.0004, "weight_decay": 0.1, "precision": "amp-bf16", "device": "auto",
                  "threads": 8, "eval_interval": 250, "eval_windows": 200, "checkpoint_interval": 250,
                  "digest_interval": 50},
    },
}

