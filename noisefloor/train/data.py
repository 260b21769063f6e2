"""Corpora, the train/val/test split, and the window stream the trainer reads.

Sources (the `[train] data` key):
- `builtin`: the Python Language Reference topics that ship inside every
  CPython (`pydoc_data.topics`): real English text, no network, no download.
- a text file, or a folder of `.txt`/`.md`/`.rst` files (sorted by path);
- a `.safetensors` file holding a 1-D uint16 tensor named `tokens`, or a
  `.npy` file holding a 1-D integer array;
- llm.c token shards: a `.bin` file, a folder of them, or a glob
  (256 int32 header, magic 20240520, version 1, then uint16 tokens);
- a dataset already split into files: a folder with `train.*` and `val.*` or
  `validation.*` (and optionally `test.*`), each `.safetensors`, `.npy` or
  `.bin` (nanoGPT's raw uint16 `train.bin`/`val.bin`, or llm.c shards): the
  blog's `train.safetensors` + `validation.safetensors` is one.

Documents are joined with `<|endoftext|>`. Text is tokenised once and cached
as a `.npy` memmap keyed by (corpus hash, tokenizer), so a second run does not
re-tokenise. Splits a dataset comes with are used as given (llm.c's `*_val_*`
shards are the validation split, never trained on; the test loss is taken on
the validation split unless a test split is given). Otherwise the split is
fixed: the first 90% of the token stream is train, the next 5% validation,
the last 5% test. Windows are non-overlapping, `context_length` inputs with
targets shifted by one token.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING
from pathlib import Path

import numpy as np
import torch

from noisefloor import atomic
from noisefloor.checkpoints import open_safetensors
from noisefloor.errors import UserError, notice
from noisefloor.train.determinism import derive_seed
from noisefloor.train.tokenizer import END_OF_TEXT, get_tokenizer, tokenizer_id

if TYPE_CHECKING:
    from noisefloor.config import RunConfig

SPLITS = {"train": (0.0, 0.90), "val": (0.90, 0.95), "test": (0.95, 1.0)}
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
LLMC_MAGIC = 20240520
LLMC_HEADER_INTS = 256
NANOGPT_FILES = ("train.bin", "val.bin")  # raw uint16 tokens, no header
TOKEN_SUFFIXES = (".safetensors", ".npy", ".bin")
SPLIT_STEMS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
MAX_BUILTIN_EPOCHS = 100  # more passes over the small built-in corpus than this only measure memorisation


def cache_dir() -> Path:
    explicit = os.environ.get("NOISEFLOOR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "noisefloor"


# ---------------------------------------------------------------- sources


def builtin_documents() -> list[str]:
    import pydoc_data.topics  # the builtin corpus's 1 MB of text: loaded only when it is the data

    topics = pydoc_data.topics.topics
    return [topics[key] for key in sorted(topics)]


def _text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise UserError(f"data folder {path} holds no text files ({', '.join(TEXT_SUFFIXES)})")
    return files


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"data file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"cannot read data file {path}: {exc.strerror}") from None


def _llmc_shards(spec: str) -> list[Path] | None:
    path = Path(spec)
    if path.is_dir():
        shards = sorted(path.glob("*.bin"))
        return shards or None
    if path.suffix == ".bin" and path.is_file():
        return [path]
    if any(ch in spec for ch in "*?["):
        shards = sorted(Path(p) for p in globlib.glob(spec))
        if not shards:
            raise UserError(f"data glob {spec} matches no files")
        if not all(p.suffix == ".bin" for p in shards):
            raise UserError(f"data glob {spec} matches files that are not llm.c .bin shards")
        return shards
    return None


def _is_val_file(path: Path) -> bool:
    """llm.c names its validation shards `*_val_*.bin` (or `*_val.bin`); nanoGPT `val.bin`."""
    return path.stem in SPLIT_STEMS["val"] or "_val_" in path.name or path.stem.endswith("_val")


def _read_llmc_shard(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size < LLMC_HEADER_INTS * 4:
        raise UserError(f"llm.c shard {path}: {size} bytes, shorter than its 1024-byte header")
    header = np.fromfile(path, dtype="<i4", count=LLMC_HEADER_INTS)
    if header[0] != LLMC_MAGIC:
        raise UserError(f"llm.c shard {path}: magic number {header[0]}, expected {LLMC_MAGIC} "
                        f"(nanoGPT's raw uint16 token files are read when named {' or '.join(NANOGPT_FILES)})")
    if header[1] != 1:
        raise UserError(f"llm.c shard {path}: version {header[1]} (only version 1, uint16 tokens, is supported)")
    count = int(header[2])
    expected = LLMC_HEADER_INTS * 4 + 2 * count
    if count < 0 or size != expected:
        raise UserError(f"llm.c shard {path}: header says {count} tokens ({expected} bytes) but the file has {size} bytes")
    return np.memmap(path, dtype="<u2", mode="r", offset=LLMC_HEADER_INTS * 4, shape=(count,))


def _read_bin(path: Path) -> np.ndarray:
    """An llm.c shard (by its magic number), or nanoGPT's headerless uint16 train.bin / val.bin."""
    size = path.stat().st_size
    magic = int(np.fromfile(path, dtype="<i4", count=1)[0]) if size >= 4 else None
    if magic == LLMC_MAGIC or path.name not in NANOGPT_FILES:
        return _read_llmc_shard(path)
    if size == 0 or size % 2:
        raise UserError(f"data file {path}: {size} bytes, not a whole number of tokens; nanoGPT's {path.name} "
                        "holds raw uint16 tokens (2 bytes each)")
    return np.memmap(path, dtype="<u2", mode="r")


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise UserError(f"data file {path}: not a NumPy .npy array ({exc}); expected a 1-D array of token ids") from None
    if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype.kind not in "ui":
        what = f"a {array.dtype} array of shape {list(array.shape)}" if isinstance(array, np.ndarray) else "an archive"
        raise UserError(f"data file {path}: {what}; expected a 1-D integer array of token ids")
    if array.dtype == np.dtype("<u2"):
        return array
    if len(array) and (int(array.min()) < 0 or int(array.max()) > 0xFFFF):
        raise UserError(f"data file {path}: token ids from {int(array.min())} to {int(array.max())}, "
                        "outside 0..65535 (GPT-2 ids fit in uint16)")
    return array.astype("<u2")


def _read_token_safetensors(path: Path) -> np.ndarray:
    with open_safetensors(path) as st:
        info = st.tensors.get("tokens")
        if info is None:
            raise UserError(f"data file {path}: no tensor named 'tokens' (found: {', '.join(sorted(st.tensors)) or 'none'}); "
                            "expected a 1-D uint16 tensor 'tokens' of token ids")
        if info.dtype != "U16" or len(info.shape) != 1:
            raise UserError(f"data file {path}: 'tokens' must be a 1-D uint16 tensor, got {info.dtype} {list(info.shape)}")
        if not info.numel:
            return np.empty(0, dtype="<u2")
        # mapped, not read: the blog's train.safetensors holds billions of tokens
        return np.memmap(path, dtype="<u2", mode="r", offset=st.data_start + info.begin, shape=(info.numel,))


READERS = {".safetensors": _read_token_safetensors, ".npy": _read_npy, ".bin": _read_bin}


def _split_files(folder: Path) -> dict[str, Path] | None:
    """train.* and val.*/validation.* (and test.*) in a folder: the splits a dataset came with."""
    found: dict[str, Path] = {}
    for split, stems in SPLIT_STEMS.items():
        for candidate in (folder / f"{stem}{suffix}" for stem in stems for suffix in TOKEN_SUFFIXES):
            if candidate.is_file():
                if split in found:
                    raise UserError(f"data folder {folder}: both {found[split].name} and {candidate.name} "
                                    f"hold the {split} split; keep one")
                found[split] = candidate
    if not found:
        return None
    missing = [name for name in ("train", "val") if name not in found]
    if missing:
        names = {"train": "train.*", "val": "val.* or validation.*"}
        raise UserError(f"data folder {folder}: has {', '.join(p.name for p in found.values())} but no "
                        f"{' and no '.join(names[m] for m in missing)}; a dataset split into files needs both "
                        f"({', '.join(TOKEN_SUFFIXES)})")
    return found


# ---------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: the whole token stream plus where it came from.

    `given` holds the splits a dataset came with (train, val, test); without
    it the stream is cut 90/5/5.
    """

    source: str
    corpus_hash: str
    tokenizer: str
    tokens: np.ndarray  # 1-D uint16, usually a read-only memmap
    tokens_digest: str  # of the token stream itself (see tokens_digest): what was trained on, not only its source
    given: dict[str, np.ndarray] | None = None
    given_files: dict[str, list[str]] | None = None

    def split(self, name: str) -> np.ndarray:
        if self.given is not None:
            return self.given[name]
        lo, hi = SPLITS[name]
        n = len(self.tokens)
        return self.tokens[int(n * lo) : int(n * hi)]

    def describe(self) -> dict:
        return {
            "source": self.source,
            "corpus_hash": self.corpus_hash,
            "tokenizer": self.tokenizer,
            "tokens": int(len(self.tokens)),
            "tokens_digest": self.tokens_digest,
            "split": {name: int(len(self.split(name))) for name in SPLITS},
            "split_files": self.given_files or "90/5/5 of the token stream",
        }


def _hash_texts(texts: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, text in texts:
        h.update(name.encode() + b"\0")
        h.update(hashlib.sha256(text.encode("utf-8")).digest())
    return "sha256:" + h.hexdigest()


def _tokenize(texts: list[str], vocab_size: int) -> np.ndarray:
    tokenizer = get_tokenizer(vocab_size)
    eot = tokenizer.encode_single_token(END_OF_TEXT)
    ids: list[int] = []
    for batch in tokenizer.encode_ordinary_batch(texts, num_threads=1):
        ids.extend(batch)
        ids.append(eot)
    return np.asarray(ids, dtype=np.uint16)


def tokens_digest(tokens: np.ndarray) -> str:
    """SHA-256 of the token stream as little-endian uint16: what the trainer actually reads."""
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(tokens, dtype="<u2").view(np.uint8)).hexdigest()


def _read_cache(path: Path, record: Path) -> tuple[np.ndarray | None, str]:
    """(the cached tokens, their digest) if the digest recorded beside them still matches, else (None, why not)."""
    try:
        expected = json.loads(record.read_text())
        tokens = np.load(path, mmap_mode="r")
    except FileNotFoundError as exc:  # a cache written before digests were recorded, or a lost record
        return None, f"no digest recorded beside it: {Path(exc.filename).name} is missing"
    except (OSError, ValueError, RecursionError) as exc:  # torn .npy header or data, or an unreadable digest record
        return None, f"it cannot be read ({type(exc).__name__})"
    if not isinstance(expected, dict) or tokens.dtype != np.uint16 or tokens.ndim != 1:
        return None, "its digest record or its array is malformed"
    if expected.get("tokens") != len(tokens) or expected.get("digest") != tokens_digest(tokens):
        return None, "its tokens no longer match the digest recorded when it was written"
    return tokens, expected["digest"]


def _cached(key: str, build) -> tuple[np.ndarray, str]:
    """The tokens (and their digest) from the cache, checked against the digest recorded beside them;
    rebuilt from the source when missing, torn or changed, kept in memory when the cache cannot be written."""
    path = cache_dir() / f"tokens-{key}.npy"
    record = path.with_suffix(".json")
    if path.exists():
        tokens, digest_or_problem = _read_cache(path, record)
        if tokens is not None:
            return tokens, digest_or_problem
        notice(f"token cache {path} is not trustworthy ({digest_or_problem}); rebuilding it from the source")
    tokens = build()
    digest = tokens_digest(tokens)
    try:
        with atomic.atomic_path(path) as tmp, open(tmp, "wb") as handle:
            # np.save's bytes, written through Python so a full disk is an OSError with its errno
            np.lib.format.write_array_header_1_0(handle, np.lib.format.header_data_from_array_1_0(tokens))
            handle.write(np.ascontiguousarray(tokens).data)
        atomic.write_json(record, {"digest": digest, "tokens": int(len(tokens))})
    except OSError as exc:
        notice(f"cannot write the token cache {exc.filename or path}: {exc.strerror or exc}; "
               "using the tokens without caching them (the next run tokenises again)")
    return tokens, digest


def load_corpus(data: str, vocab_size: int) -> Corpus:
    """Read (or reuse from cache) the corpus named by `[train] data`."""
    tok_id = tokenizer_id(vocab_size)
    if data == "builtin":
        documents = builtin_documents()
        corpus_hash = _hash_texts([(str(i), d) for i, d in enumerate(documents)])
        key = f"{corpus_hash[7:23]}-{tok_id}"
        return Corpus("builtin", corpus_hash, tok_id, *_cached(key, lambda: _tokenize(documents, vocab_size)))

    path = Path(data)
    split_files = _split_files(path) if path.is_dir() else None
    if split_files is not None:
        split_files.setdefault("test", split_files["val"])
        return _pretokenized(data, {name: [f] for name, f in split_files.items()}, vocab_size)

    shards = _llmc_shards(data)
    if shards is not None:
        val = [p for p in shards if _is_val_file(p)]
        train = [p for p in shards if not _is_val_file(p)]
        if val and not train:
            raise UserError(f"data {data}: only validation shards ({val[0].name}…); add the *_train_* shards to train on")
        return _pretokenized(data, {"train": train, "val": val, "test": val} if val else {"all": shards}, vocab_size)

    if not path.exists():
        raise UserError(f"data not found: {data} (use 'builtin', a text file or folder, token files (.safetensors, .npy, "
                        ".bin) or a folder with train.* and val.* token files)")
    if path.suffix in (".safetensors", ".npy"):
        return _pretokenized(data, {"all": [path]}, vocab_size)

    files = _text_files(path)
    texts = [(str(f.relative_to(path)) if path.is_dir() else f.name, _read_text(f)) for f in files]
    corpus_hash = _hash_texts(texts)
    key = f"{corpus_hash[7:23]}-{tok_id}"
    return Corpus(data, corpus_hash, tok_id, *_cached(key, lambda: _tokenize([t for _, t in texts], vocab_size)))


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else ConcatenatedTokens(arrays)


def _pretokenized(source: str, files: dict[str, list[Path]], vocab_size: int) -> Corpus:
    """Token files as one stream ({"all": files}) or as the splits they came as ({"train", "val", "test"})."""
    arrays: dict[Path, np.ndarray] = {}
    h = hashlib.sha256()
    top = -1
    for name, paths in files.items():
        if name != "all":
            h.update(name.encode() + b"\0")
        for path in paths:
            if path not in arrays:
                arrays[path] = READERS[path.suffix](path)
                if len(arrays[path]):
                    top = max(top, int(arrays[path].max()))
            h.update(np.ascontiguousarray(arrays[path]).view(np.uint8))
    if top >= vocab_size:
        raise UserError(f"data {source}: holds token id {top}, but [model] vocab_size is {vocab_size}")
    tokens = _joined(list(arrays.values()))
    tokenizer = f"pretokenized(max id {top})"
    # the raw little-endian uint16 streams (with their split names): already the tokens' own digest
    digest = "sha256:" + h.hexdigest()
    if "all" in files:
        return Corpus(source, digest, tokenizer, tokens, digest)
    given = {name: _joined([arrays[p] for p in paths]) for name, paths in files.items()}
    names = {name: [p.name for p in paths] for name, paths in files.items()}
    return Corpus(source, digest, tokenizer, tokens, digest, given, names)


class ConcatenatedTokens:
    """Several memmapped shards read as one token stream without copying them into RAM.

    Slicing is lazy (a view over the shards); `np.asarray` reads the tokens.
    """

    def __init__(self, arrays: list[np.ndarray], start: int = 0, stop: int | None = None):
        self._arrays = arrays
        self._offsets = np.cumsum([0] + [len(a) for a in arrays])
        self._start = start
        self._stop = int(self._offsets[-1]) if stop is None else stop

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, key: slice) -> "ConcatenatedTokens":
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("ConcatenatedTokens supports contiguous slices only")
        lo, hi, _ = key.indices(len(self))
        return ConcatenatedTokens(self._arrays, self._start + lo, self._start + max(lo, hi))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        lo, hi = self._start, self._stop
        parts = [np.empty(0, dtype=np.uint16)]
        shard = int(np.searchsorted(self._offsets, lo, side="right")) - 1
        while lo < hi:
            base = int(self._offsets[shard])
            take = min(hi, int(self._offsets[shard + 1]))
            parts.append(np.asarray(self._arrays[shard][lo - base : take - base]))
            lo, shard = take, shard + 1
        out = np.concatenate(parts)
        return out if dtype is None else out.astype(dtype)


# ---------------------------------------------------------------- windows


class Windows:
    """Non-overlapping windows of one split: inputs tokens[i:i+L], targets tokens[i+1:i+L+1]."""

    def __init__(self, tokens: np.ndarray, context_length: int, split: str, source: str, limit: int = 0):
        self.tokens = tokens
        self.context_length = context_length
        count = max(0, (len(tokens) - 1) // context_length)
        if count == 0:
            raise UserError(
                f"data {source}: the {split} split has {len(tokens)} tokens, fewer than context_length + 1 = "
                f"{context_length + 1}; use a shorter [model] context_length or more data"
            )
        self.count = min(count, limit) if limit else count

    def __len__(self) -> int:
        return self.count

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        L = self.context_length
        starts = np.asarray(indices, dtype=np.int64) * L
        rows = np.stack([np.asarray(self.tokens[s : s + L + 1]) for s in starts]).astype(np.int64)
        return rows[:, :-1], rows[:, 1:]


class ShuffledStream:
    """An endless stream of training windows: epoch e is a permutation drawn from
    its own generator seeded by (data_seed, e).

    The position in the stream is a single integer (samples consumed), so a
    resumed run reads exactly the windows the uninterrupted one would have.
    """

    def __init__(self, windows: Windows, data_seed: int):
        self.windows = windows
        self.data_seed = data_seed
        self._epoch = -1
        self._order: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.data_seed, "epoch", epoch))
            self._order = torch.randperm(len(self.windows), generator=generator).numpy()
            self._epoch = epoch
        return self._order

    def take(self, position: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.windows)
        indices = np.empty(count, dtype=np.int64)
        for k in range(count):
            epoch, offset = divmod(position + k, n)
            indices[k] = self._permutation(epoch)[offset]
        return self.windows.batch(indices)


@dataclass
class Data:
    corpus: Corpus
    train: Windows
    val: Windows
    test: Windows


def prepare_data(config: "RunConfig", training: bool = True) -> Data:
    """The corpus and its three window sets for a run config (tokenising once, then from cache).

    For training, a run that would pass over the small built-in corpus more than
    MAX_BUILTIN_EPOCHS times (the 163M preset as shipped) is refused: it needs real data."""
    corpus = load_corpus(config.train.data, config.model.vocab_size)
    L, limit, source = config.model.context_length, config.train.eval_windows, config.train.data
    data = Data(
        corpus,
        Windows(corpus.split("train"), L, "train", source),
        Windows(corpus.split("val"), L, "val", source, limit),
        Windows(corpus.split("test"), L, "test", source, limit),
    )
    if training and corpus.source == "builtin":
        available = len(corpus.split("train"))
        epochs = config.train.steps * config.tokens_per_step / available
        if epochs > MAX_BUILTIN_EPOCHS:
            raise UserError(
                f"{config.train.steps} steps of {config.tokens_per_step:,} tokens would repeat the built-in corpus's "
                f"{available:,} training tokens {epochs:,.0f} times; point train.data at real data, e.g. --set "
                "train.data='fineweb10B/*.bin' (llm.c shards) or a folder with train.safetensors + validation.safetensors"
            )
    return data
