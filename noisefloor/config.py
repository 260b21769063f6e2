"""Typed run configuration: `[model]` and `[train]`, from TOML or JSON, strictly validated.

Key names follow Raschka's "Build a Large Language Model (from Scratch)" where
one exists, since that is what the users already write. Every mistake is a
UserError naming the file, section and key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from noisefloor.errors import UserError

GPT2_VOCAB_SIZE = 50257
BYTE_TOKENS = 256

INITS = ("pytorch-default", "gpt2")
INIT_SCHEMES = ("per-parameter", "sequential")
PRECISIONS = ("fp32", "amp-fp16", "amp-bf16")
DEVICES = ("auto", "cpu", "cuda")
MAX_SEED = 2**63 - 1  # the largest seed every RNG takes (torch refuses beyond 64 bits, numpy below 0)


def _choice(options: tuple[str, ...]):
    def check(value: str) -> str | None:
        return None if value in options else f"must be one of {', '.join(options)}"

    return check


def _at_least(lo: float):
    def check(value: float) -> str | None:
        return None if value >= lo else f"must be >= {lo}"

    return check


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def _in_range(lo: float, hi: float):
    def check(value: float) -> str | None:
        return None if lo <= value <= hi else f"must be between {lo} and {hi}"

    return check


def _spec(default: Any, doc: str, check=None, *, optional: bool = False) -> Any:
    """A config field: default, one-line doc (the README's configuration table), check."""
    return field(default=default, metadata={"doc": doc, "check": check, "optional": optional})


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = _spec(
        GPT2_VOCAB_SIZE,
        "GPT-2 BPE vocabulary; below 50257 the tokenizer keeps the first vocab_size-1 ranks plus <|endoftext|>",
        _in_range(BYTE_TOKENS + 1, GPT2_VOCAB_SIZE),
    )
    context_length: int = _spec(1024, "tokens per training window", _at_least(1))
    emb_dim: int = _spec(768, "embedding width", _at_least(1))
    n_heads: int = _spec(12, "attention heads (must divide emb_dim)", _at_least(1))
    n_layers: int = _spec(12, "transformer blocks", _at_least(1))
    drop_rate: float = _spec(0.1, "dropout on embeddings, attention weights and residual branches", _in_range(0.0, 0.99))
    qkv_bias: bool = _spec(False, "bias in the query/key/value projections")
    tie_weights: bool = _spec(False, "share tok_emb.weight with out_head.weight")
    init: str = _spec("pytorch-default", "'pytorch-default' (as in the book) or 'gpt2' (N(0, 0.02), scaled residual projections)", _choice(INITS))
    init_scheme: str = _spec(
        "per-parameter",
        "'per-parameter': each tensor from its own generator seeded by (init_seed, name); 'sequential': one global draw in construction order",
        _choice(INIT_SCHEMES),
    )


@dataclass(frozen=True)
class TrainConfig:
    init_seed: int = _spec(42, "seeds every RNG before the model is built", _in_range(0, MAX_SEED))
    train_seed: int | None = _spec(None, "re-seeds every RNG right after the model is built (absent: the RNG simply continues)",
                                   _in_range(0, MAX_SEED), optional=True)
    data: str = _spec("builtin", "'builtin' (Python's own documentation), a text file or folder, a .safetensors with a uint16 'tokens' tensor, or llm.c .bin shards (file, folder or glob)")
    steps: int = _spec(100, "optimizer steps", _at_least(1))
    microbatch_size: int = _spec(8, "windows per forward/backward pass", _at_least(1))
    gradient_accumulation_steps: int = _spec(1, "microbatches per optimizer step", _at_least(1))
    learning_rate: float = _spec(0.0004, "AdamW learning rate (the peak when schedule_learning_rate)", _positive)
    schedule_learning_rate: bool = _spec(False, "linear warmup from initial_learning_rate, then cosine down to min_learning_rate")
    initial_learning_rate: float = _spec(0.0004, "learning rate at step 0 of the warmup", _at_least(0.0))
    min_learning_rate: float = _spec(0.00014, "floor of the cosine decay", _at_least(0.0))
    warmup_period_percent: float = _spec(5.0, "share of the steps spent warming up, in percent", _in_range(0.0, 100.0))
    weight_decay: float = _spec(0.1, "AdamW weight decay (applied to every parameter, as in the book)", _at_least(0.0))
    clipping_max_norm: float | None = _spec(None, "clip gradients to this global L2 norm (absent: no clipping)", _positive, optional=True)
    precision: str = _spec("fp32", "'fp32' (no AMP, no TF32), 'amp-fp16' (with GradScaler) or 'amp-bf16'", _choice(PRECISIONS))
    device: str = _spec("auto", "'auto' (CUDA when available), 'cpu' or 'cuda'", _choice(DEVICES))
    threads: int = _spec(1, "CPU threads per process (results on CPU depend on it, so it is fixed and recorded)", _at_least(1))
    world_size: int = _spec(1, "data-parallel processes (DDP through torchrun, one per GPU; gloo on CPU); each takes microbatch_size windows", _at_least(1))
    compile: bool = _spec(False, "torch.compile the model (changes numerics: a run and its resume must agree)")
    eval_interval: int = _spec(50, "steps between validation losses (0: only at the end)", _at_least(0))
    eval_windows: int = _spec(0, "windows of the val/test split evaluated, always the first ones (0: all)", _at_least(0))
    checkpoint_interval: int = _spec(50, "steps between full resumable checkpoints (0: none)", _at_least(0))
    keep_checkpoints: int = _spec(1, "checkpoints kept on disk (the newest)", _at_least(1))
    digest_interval: int = _spec(10, "steps between parameter digests recorded for `noisefloor diverge` (0: none)", _at_least(0))


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}

    def digest(self) -> str:
        """Stable identity of the fully resolved config (seeds included)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def replace(self, **sections: Mapping[str, Any]) -> "RunConfig":
        """A copy with some keys changed, validated like a file: replace(train={"steps": 5})."""
        raw = self.to_dict()
        for section, values in sections.items():
            if section not in SECTIONS:
                raise UserError(f"unknown config section [{section}] (sections: model, train)")
            raw[section].update(values)
        return from_dict(raw, source="config")

    @property
    def tokens_per_step(self) -> int:
        t = self.train
        return t.microbatch_size * t.gradient_accumulation_steps * t.world_size * self.model.context_length


# ---------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[tp]


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    optional = f.metadata["optional"]
    base = {"int | None": int, "float | None": float, "int": int, "float": float, "bool": bool, "str": str}[str(f.type)]
    if value is None:
        if optional:
            return None
        raise UserError(f"{where} must be {_type_name(base)}, got nothing")
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                raise UserError(f"{where} must be a finite number, got {value}")
    else:
        ok = isinstance(value, str)
    if not ok:
        raise UserError(f"{where} must be {_type_name(base)}, got {_shown(value)}")
    check = f.metadata["check"]
    problem = check(value) if check else None
    if problem:
        raise UserError(f"{where} {problem}, got {_shown(value)}")
    return value


def _section(cls: type, raw: Any, source: str, name: str) -> Any:
    if not isinstance(raw, Mapping):
        raise UserError(f"{source}: [{name}] must be a table of keys")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f" (did you mean {hint[0]}?)" if hint else f" (known: {', '.join(known)})"
            raise UserError(f"{source}: unknown key [{name}] {key}{suggestion}")
        values[key] = _coerce(value, known[key], f"{source}: [{name}] {key}")
    return cls(**values)


def from_dict(raw: Any, source: str = "config") -> RunConfig:
    if not isinstance(raw, Mapping):
        raise UserError(f"{source}: expected tables [model] and [train]")
    for name in raw:
        if name not in SECTIONS:
            raise UserError(f"{source}: unknown section [{name}] (sections: model, train)")
    config = RunConfig(
        model=_section(ModelConfig, raw.get("model", {}), source, "model"),
        train=_section(TrainConfig, raw.get("train", {}), source, "train"),
    )
    _check_consistency(config, source)
    check_plausible(config, source)
    return config


def _check_consistency(config: RunConfig, source: str) -> None:
    m, t = config.model, config.train
    if m.emb_dim % m.n_heads:
        raise UserError(f"{source}: [model] emb_dim ({m.emb_dim}) must be divisible by n_heads ({m.n_heads})")
    if t.schedule_learning_rate and not (t.min_learning_rate <= t.learning_rate):
        raise UserError(
            f"{source}: [train] min_learning_rate ({t.min_learning_rate}) must not exceed learning_rate ({t.learning_rate})"
        )


# ---------------------------------------------------------------- plausibility

# Upper limits far beyond any model or run this tool is for (GPT-3 has emb_dim 12288, 96 layers), yet
# low enough that a typo (an extra digit, a stray exponent) is refused before anything is allocated.
PLAUSIBLE_MAXIMUM: dict[tuple[str, str], int] = {
    ("model", "context_length"): 1 << 20,
    ("model", "emb_dim"): 1 << 16,
    ("model", "n_heads"): 1 << 12,
    ("model", "n_layers"): 1 << 10,
    ("train", "steps"): 10**10,
    ("train", "microbatch_size"): 1 << 16,
    ("train", "gradient_accumulation_steps"): 1 << 16,
    ("train", "threads"): 1 << 10,
    ("train", "world_size"): 1 << 12,
    ("train", "eval_interval"): 10**10,
    ("train", "eval_windows"): 10**10,
    ("train", "checkpoint_interval"): 10**10,
    ("train", "keep_checkpoints"): 10**4,
    ("train", "digest_interval"): 10**10,
}


def _shown(value: Any) -> str:
    """A value for an error line: a huge number or string is summarised, never echoed whole."""
    text = repr(value)
    if len(text) <= 60:
        return text
    return f"a {len(text)}-digit number" if isinstance(value, int) else f"{text[:40]}… ({len(text)} characters)"


def check_plausible(config: RunConfig, source: str) -> None:
    """Refuse sizes no real run has, with one line, before a model is built or a folder written."""
    for (section, key), maximum in PLAUSIBLE_MAXIMUM.items():
        value = getattr(getattr(config, section), key)
        if value > maximum:
            raise UserError(f"{source}: [{section}] {key} = {_shown(value)} is beyond the plausible maximum {maximum}; "
                            "check for a typo")
    data = config.train.data
    if not data.strip() or "\0" in data:
        raise UserError(f"{source}: [train] data must name a source ('builtin', a file, a folder or a glob), "
                        f"got {data!r}")


def parameter_count(m: ModelConfig) -> int:
    """Parameters of the model a ModelConfig builds (book layout: biases on every linear but QKV, two LayerNorms a block)."""
    E = m.emb_dim
    block = 4 * E * E + E + (3 * E if m.qkv_bias else 0) + 8 * E * E + 5 * E + 4 * E
    head = 0 if m.tie_weights else m.vocab_size * E
    return m.vocab_size * E + m.context_length * E + m.n_layers * block + 2 * E + head


def minimum_training_bytes(config: RunConfig) -> int:
    """A lower bound of the memory one training process needs: weights, gradients and two AdamW moments in
    float32, plus the activations backward must keep at the least (the logits and every layer's attention
    scores of one microbatch). A config above the machine's memory cannot run; below it, it still might not."""
    m, t = config.model, config.train
    windows = t.microbatch_size * m.context_length
    logits = windows * m.vocab_size * 4
    attention = t.microbatch_size * m.n_heads * m.context_length**2 * m.n_layers * 4
    return 16 * parameter_count(m) + logits + attention


# ---------------------------------------------------------------- loading


def _parse_file(path: Path) -> Any:
    if not path.exists():
        from noisefloor.presets import PRESETS

        if str(path) in PRESETS:  # `--config tiny-cpu`: the built-in copy of training/tiny-cpu.toml
            return PRESETS[str(path)]
        raise UserError(f"config file not found: {path} (built-in presets: {', '.join(PRESETS)})")
    text = read_config_bytes(path)
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return tomllib.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # decode errors; a >4300-digit integer (ValueError); deep nesting
        raise UserError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {parse_problem(exc)}") from None


MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; a megabyte is a wrong file


def read_config_bytes(path: Path) -> bytes:
    """A config file's bytes: a regular file of at most MAX_CONFIG_BYTES (a FIFO or device would block or never end)."""
    import stat

    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path}: not a regular file; give a TOML or JSON config file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise UserError(f"{path}: {info.st_size} bytes, more than a config's {MAX_CONFIG_BYTES}; is it the right file?")
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror or exc}") from None


def parse_problem(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if "integer string conversion" in str(exc):  # Python's own message suggests a setting, not a fix to the file
        return "an integer with thousands of digits"
    return str(exc)[:200]


def parse_override(text: str) -> tuple[str, str, Any]:
    """'train.clipping_max_norm=3.5' -> ('train', 'clipping_max_norm', 3.5).

    The value is read as a TOML value (numbers, true/false, quoted strings);
    a bare word stays a string, and none/null mean "absent".
    """
    key, sep, value_text = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise UserError(f"--set {text!r}: expected section.key=value, e.g. train.clipping_max_norm=3.5")
    value_text = value_text.strip()
    if value_text.lower() in ("none", "null"):
        return section, name, None
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text
    except (ValueError, RecursionError) as exc:  # a >4300-digit integer, or nesting deeper than the parser goes
        raise UserError(f"--set {text[:60]!r}: value cannot be read ({parse_problem(exc)})") from None
    return section, name, value


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a TOML/JSON config (None: all defaults) and apply `--set` overrides."""
    raw: dict[str, Any] = {"model": {}, "train": {}}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        parsed = _parse_file(path)
        if not isinstance(parsed, Mapping):
            raise UserError(f"{source}: expected tables [model] and [train]")
        for name, section in parsed.items():
            if name not in SECTIONS:
                raise UserError(f"{source}: unknown section [{name}] (sections: model, train)")
            if not isinstance(section, Mapping):
                raise UserError(f"{source}: [{name}] must be a table of keys")
            raw[name] = dict(section)
    for text in overrides:
        section, name, value = parse_override(text)
        if section not in SECTIONS:
            raise UserError(f"--set {text!r}: unknown section [{section}] (sections: model, train)")
        raw[section][name] = value
    return from_dict(raw, source=source if not overrides else f"{source} (with --set)")


def describe() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, doc) for every key: the config reference."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((section, f.name, default, f.metadata["doc"]))
    return rows
