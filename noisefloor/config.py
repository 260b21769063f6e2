"""Typed run configuration: `[model]` and `[train]`, from TOML or JSON, strictly validated.

Key names follow Raschka's "Build a Large Language Model (from Scratch)" where
one exists, since that is what the users already write; the blog trainer's
run folder (`model.json` + `train.json`, flat keys of its own) is read too.
Every mistake of a config is named in one UserError (file, section and key).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from noisefloor.errors import UserError
from noisefloor.presets import PRESETS

GPT2_VOCAB_SIZE = 50257
BYTE_TOKENS = 256

INITS = ("pytorch-default", "gpt2")
INIT_SCHEMES = ("per-parameter", "sequential")
PRECISIONS = ("fp32", "amp-fp16", "amp-bf16")
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("noisefloor", "book", "blog")
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


# ---------------------------------------------------------------- seeds: one rule wherever they come from
# (a config file, --set, --init-seed, the seed lists of a spec file, noisefloor.toml or the command line)

seed_problem = _in_range(0, MAX_SEED)


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and seed_problem(value) is None


def check_seed(value: Any, where: str) -> int:
    """A seed, or one UserError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where} must be an integer, got {_shown(value)}")
    problem = seed_problem(value)
    if problem:
        raise UserError(f"{where} {problem}, got {value}")
    return value


def seed_list(value: Any, where: str, example: str = "[42, 22, 67]") -> list[int]:
    """A non-empty list of distinct seeds, or one UserError naming `where` (and `example`, as the user writes one)."""
    if not isinstance(value, list) or not value or not all(_is_seed(s) for s in value):
        raise UserError(f"{where} must be a non-empty list of seeds (integers 0..2**63-1), e.g. {example}")
    if len(set(value)) != len(value):
        raise UserError(f"{where} lists a seed twice: {value!r}")
    return value


def _spec(default: Any, doc: str, check=None, *, optional: bool = False) -> Any:
    """A config field: default, one-line doc (docs/configuration.md is generated from it: noisefloor/config_docs.py), check."""
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
    init_seed: int = _spec(42, "seeds every RNG before the model is built", seed_problem)
    train_seed: int | None = _spec(None, "re-seeds every RNG right after the model is built (absent: the RNG simply continues)",
                                   seed_problem, optional=True)
    data: str = _spec("builtin", "'builtin' (Python's own documentation), a text file or folder, a .safetensors with a uint16 'tokens' tensor, a .npy, llm.c .bin shards (file, folder or glob), or a folder already split into train.* and val.*/validation.* token files")
    steps: int = _spec(100, "optimizer steps", _at_least(1))
    microbatch_size: int = _spec(8, "windows per forward/backward pass", _at_least(1))
    gradient_accumulation_steps: int = _spec(1, "microbatches per optimizer step", _at_least(1))
    learning_rate: float = _spec(0.0004, "AdamW learning rate (the peak when schedule_learning_rate)", _positive)
    schedule_learning_rate: bool = _spec(False, "linear warmup from initial_learning_rate, then cosine down to min_learning_rate")
    initial_learning_rate: float = _spec(0.0004, "learning rate at step 0 of the warmup", _at_least(0.0))
    min_learning_rate: float = _spec(0.00014, "floor of the cosine decay", _at_least(0.0))
    warmup_period_percent: float = _spec(5.0, "share of the steps spent warming up, in percent", _in_range(0.0, 100.0))
    lr_schedule: str = _spec(
        "noisefloor",
        "form of the schedule: 'noisefloor' (closed form, warmup step x (peak - initial) / warmup), 'book' (appendix D's "
        "arithmetic exactly), 'blog' (torch LinearLR from 1e-5 x learning_rate, then CosineAnnealingLR down to "
        "learning_rate / 10, as the blog's trainer steps them; initial/min_learning_rate unused)",
        _choice(LR_SCHEDULES),
    )
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

    def with_seeds(self, init_seed: int, train_seed: int | None) -> "RunConfig":
        """This config at other seeds, checked as a file's are, without a round trip through a dict (a sweep
        builds one per run; nothing else in the config depends on the seeds)."""
        check_seed(init_seed, "[train] init_seed")
        if train_seed is not None:
            check_seed(train_seed, "[train] train_seed")
        return dataclasses.replace(self, train=dataclasses.replace(self.train, init_seed=init_seed, train_seed=train_seed))

    @property
    def tokens_per_step(self) -> int:
        t = self.train
        return t.microbatch_size * t.gradient_accumulation_steps * t.world_size * self.model.context_length


# ---------------------------------------------------------------- validation

Problems = list[tuple[str, str]]  # (file, what is wrong there): every mistake of a config, reported together
Labels = dict[tuple[str, str], tuple[str, str]]  # (section, key) -> (file, the name its author wrote)


def _raise_all(problems: Problems) -> None:
    """One UserError line naming every mistake, grouped by the file it is in."""
    if not problems:
        return
    grouped: dict[str, list[str]] = {}
    for source, text in problems:
        grouped.setdefault(source, []).append(text)
    raise UserError("; ".join(f"{source}: {'; '.join(texts)}" for source, texts in grouped.items()))


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[tp]


def _coerce(value: Any, f: dataclasses.Field, where: str) -> tuple[Any, str | None]:
    """(the value as the field's type, None) or (None, what is wrong with it)."""
    optional = f.metadata["optional"]
    base = {"int | None": int, "float | None": float, "int": int, "float": float, "bool": bool, "str": str}[str(f.type)]
    if value is None:
        return (None, None) if optional else (None, f"{where} must be {_type_name(base)}, got nothing")
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                return None, f"{where} must be a finite number, got {value}"
    else:
        ok = isinstance(value, str)
    if not ok:
        return None, f"{where} must be {_type_name(base)}, got {_shown(value)}"
    check = f.metadata["check"]
    problem = check(value) if check else None
    return (None, f"{where} {problem}, got {_shown(value)}") if problem else (value, None)


def _suggestion(key: str, known) -> str:
    hint = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {hint[0]}?)" if hint else f" (known: {', '.join(known)})"


def _section(cls: type, raw: Any, source: str, name: str, labels: Labels, problems: Problems) -> Any | None:
    """The section's dataclass, or None after adding each of its mistakes to `problems`."""
    if not isinstance(raw, Mapping):
        problems.append((source, f"[{name}] must be a table of keys"))
        return None
    known = {f.name: f for f in fields(cls)}
    values = {}
    found = len(problems)
    for key, value in raw.items():
        where, label = labels.get((name, key), (source, f"[{name}] {key}"))
        if key not in known:
            problems.append((where, f"unknown key [{name}] {key}{_suggestion(key, known)}"))
            continue
        coerced, problem = _coerce(value, known[key], label)
        if problem:
            problems.append((where, problem))
        values[key] = coerced
    return cls(**values) if len(problems) == found else None


def _validate(raw: Any, source: str, labels: Labels, problems: Problems) -> RunConfig:
    if not isinstance(raw, Mapping):
        problems.append((source, "expected tables [model] and [train]"))
        _raise_all(problems)
    problems.extend((source, f"unknown section [{name}] (sections: model, train)") for name in raw if name not in SECTIONS)
    model = _section(ModelConfig, raw.get("model", {}), source, "model", labels, problems)
    train = _section(TrainConfig, raw.get("train", {}), source, "train", labels, problems)
    if model is not None and train is not None:
        config = RunConfig(model=model, train=train)
        problems.extend((source, text) for text in _consistency_problems(config))
    _raise_all(problems)
    check_plausible(config, source)
    return config


def from_dict(raw: Any, source: str = "config") -> RunConfig:
    """Validate `{"model": {...}, "train": {...}}`; every mistake in it is named in one UserError."""
    return _validate(raw, source, {}, [])


def _consistency_problems(config: RunConfig) -> list[str]:
    m, t = config.model, config.train
    problems = []
    if m.emb_dim % m.n_heads:
        problems.append(f"[model] emb_dim ({m.emb_dim}) must be divisible by n_heads ({m.n_heads})")
    if t.schedule_learning_rate and t.lr_schedule != "blog" and not (t.min_learning_rate <= t.learning_rate):
        problems.append(f"[train] min_learning_rate ({t.min_learning_rate}) must not exceed learning_rate ({t.learning_rate})")
    return problems


# ---------------------------------------------------------------- the blog trainer's model.json / train.json

BLOG_MODEL_FILE, BLOG_TRAIN_FILE = "model.json", "train.json"
BLOG_MODEL_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias", "tie_weights")
# train.json keys that mean the same here (the value is taken as is), under noisefloor's name
BLOG_TRAIN_KEYS = {
    "microbatch_size": "microbatch_size", "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate", "weight_decay": "weight_decay", "clipping_max_norm": "clipping_max_norm",
    "schedule_learning_rate": "schedule_learning_rate", "warmup_period_percent": "warmup_period_percent",
    "checkpoint_interval": "checkpoint_interval", "random_seed": "init_seed", "validation_interval": "eval_interval",
}
BLOG_DATASETS = Path("datasets")  # where a train.json's `dataset` is looked for, beside the folder it names itself
BLOG_TRAIN_TRANSLATED = ("use_amp", "min_train_tokens", "dataset", "start_train_token", "start_val_token", "validation_batches")


@dataclass
class _Read:
    """A config file (or the blog's pair) as noisefloor sections, before validation."""

    source: str
    raw: dict[str, Any] = field(default_factory=lambda: {"model": {}, "train": {}})
    labels: Labels = field(default_factory=dict)
    # (file, what is wrong, the "section.key" a --set may give instead, which silences it)
    problems: list[tuple[str, str, str | None]] = field(default_factory=list)
    min_train_tokens: int | None = None  # the blog's length of training: steps follow once the batch is known


def _is_blog_file(path: Path, parsed: Any) -> bool:
    """The blog's JSON files are flat (no [model]/[train] tables; `moe` is the one nested key)."""
    return (path.suffix == ".json" and isinstance(parsed, Mapping) and bool(parsed) and not SECTIONS.keys() & parsed.keys()
            and not any(isinstance(value, Mapping) for key, value in parsed.items() if key != "moe"))


def _blog_model(read: _Read, path: Path, values: Mapping[str, Any]) -> None:
    model = read.raw["model"]
    model["init_scheme"] = "sequential"  # the blog's trainer seeds, then builds GPTModel: the global draw in order
    for key, value in values.items():
        if key in BLOG_MODEL_KEYS:
            model[key] = value
            read.labels[("model", key)] = (str(path), key)
        elif key == "moe":
            read.problems.append((str(path), "moe (mixture of experts) is not noisefloor's model; sweep your own trainer "
                                  "with noisefloor sweep --command instead", None))
        else:
            read.problems.append((str(path), f"unknown key {key}{_suggestion(key, BLOG_MODEL_KEYS)}", None))


def _blog_dataset(read: _Read, path: Path, value: Any) -> None:
    if not isinstance(value, str):
        read.problems.append((str(path), f"dataset must be a string, got {_shown(value)}", "train.data"))
        return
    for candidate in (Path(value), path.parent / value, BLOG_DATASETS / value):
        if candidate.exists():
            read.raw["train"]["data"] = str(candidate)
            return
    read.problems.append((str(path), f"dataset {_shown(value)} is not a local folder (the blog's trainer downloads it from Hugging "
                          f"Face): download it, e.g. `hf download {value} --repo-type dataset --local-dir "
                          f"{BLOG_DATASETS / value}` (looked for there), or add --set train.data=FOLDER", "train.data"))


def _blog_train(read: _Read, path: Path, values: Mapping[str, Any]) -> None:
    train, source = read.raw["train"], str(path)
    train["lr_schedule"] = "blog"
    train["precision"] = "amp-fp16"  # the blog's trainer uses AMP (float16, GradScaler) unless use_amp is false
    train["warmup_period_percent"] = 0.0  # its default when a scheduled run names no warmup
    train["eval_interval"] = 0  # it validates only when validation_interval says so: here, at the end
    for key, value in values.items():
        if key in BLOG_TRAIN_KEYS:
            train[BLOG_TRAIN_KEYS[key]] = value
            read.labels[("train", BLOG_TRAIN_KEYS[key])] = (source, key)
        elif key == "use_amp":
            if isinstance(value, bool):
                train["precision"] = "amp-fp16" if value else "fp32"
            else:
                read.problems.append((source, f"use_amp must be true or false, got {_shown(value)}", "train.precision"))
        elif key == "min_train_tokens":
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                read.min_train_tokens = value
            elif value == -1:
                read.problems.append((source, "min_train_tokens -1 (the whole dataset) needs the data's size: give the "
                                      "steps instead, e.g. --set train.steps=2000", "train.steps"))
            else:
                read.problems.append((source, f"min_train_tokens must be a positive integer, got {_shown(value)}", "train.steps"))
        elif key == "dataset":
            _blog_dataset(read, path, value)
        elif key in ("start_train_token", "start_val_token"):
            if value != 0:
                read.problems.append((source, f"{key} {_shown(value)}: noisefloor reads every split from its first token; "
                                      "cut the file there, or set it to 0", None))
        elif key == "validation_batches":
            batch = values.get("microbatch_size", TrainConfig.microbatch_size)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0 and isinstance(batch, int):
                train["eval_windows"] = value * batch
            else:
                read.problems.append((source, f"validation_batches must be a positive integer, got {_shown(value)}", "train.eval_windows"))
        else:
            read.problems.append((source, f"unknown key {key}{_suggestion(key, [*BLOG_TRAIN_KEYS, *BLOG_TRAIN_TRANSLATED])}", None))


def _read_blog(read: _Read, files: list[tuple[Path, Any]]) -> _Read:
    for path, values in files:
        if not isinstance(values, Mapping):
            read.problems.append((str(path), "expected a JSON object of keys", None))
            continue
        is_model = path.name == BLOG_MODEL_FILE or (path.name != BLOG_TRAIN_FILE and any(k in BLOG_MODEL_KEYS for k in values))
        (_blog_model if is_model else _blog_train)(read, path, values)
    return read


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


def _read(path: Path) -> _Read:
    """A noisefloor TOML/JSON file, a preset name, the blog's model.json or train.json, or a folder holding them."""
    read = _Read(str(path))
    if path.is_dir():
        files = [path / name for name in (BLOG_MODEL_FILE, BLOG_TRAIN_FILE) if (path / name).is_file()]
        if not files:
            raise UserError(f"{path}: a config folder must hold the blog trainer's {BLOG_MODEL_FILE} and/or {BLOG_TRAIN_FILE}")
        return _read_blog(read, [(f, _parse_file(f)) for f in files])
    parsed = _parse_file(path)
    if _is_blog_file(path, parsed):
        return _read_blog(read, [(path, parsed)])
    if not isinstance(parsed, Mapping):
        raise UserError(f"{path}: expected tables [model] and [train]")
    for name, section in parsed.items():
        read.raw[name] = dict(section) if isinstance(section, Mapping) else section
    return read


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


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
         seeds: Mapping[str, int] | None = None) -> RunConfig:
    """Read a config (None: all defaults; see `_read` for what it may be) and apply `--set` overrides, then
    `seeds` ({"init_seed": 7} from --init-seed, {"train_seed": 23} from --train-seed) as they are.

    Every mistake of the file and the overrides together is named in one UserError.
    """
    read = _read(Path(path)) if path is not None else _Read("config")
    overridden = set()
    for text in overrides:
        section, name, value = parse_override(text)
        if section not in SECTIONS:
            raise UserError(f"--set {text!r}: unknown section [{section}] (sections: model, train)")
        if isinstance(read.raw.get(section), dict):
            read.raw[section][name] = value
        read.labels.pop((section, name), None)
        overridden.add(f"{section}.{name}")
    for name, value in (seeds or {}).items():
        if isinstance(read.raw.get("train"), dict):
            read.raw["train"][name] = value
        read.labels.pop(("train", name), None)
        overridden.add(f"train.{name}")
    problems = [(source, text) for source, text, instead in read.problems if instead not in overridden]
    config = _validate(read.raw, read.source if not (overrides or seeds) else f"{read.source} (with --set)", read.labels, problems)
    if read.min_train_tokens is not None and "train.steps" not in overridden:
        # the blog's trainer rounds its token budget up to whole optimizer steps
        config = config.replace(train={"steps": -(-read.min_train_tokens // config.tokens_per_step)})
    return config


def preset(name: str) -> RunConfig:
    """A built-in preset (presets.py) as a RunConfig."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r} (built in: {', '.join(PRESETS)})")
    return from_dict(PRESETS[name], f"the built-in {name} preset")


def describe() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, doc) for every key: the config reference."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((section, f.name, default, f.metadata["doc"]))
    return rows
