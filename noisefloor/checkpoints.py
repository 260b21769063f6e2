"""Safetensors files without torch: a validating reader, digests, bitwise comparison.

Reading. `open_safetensors` reads the 8-byte header length and the JSON header
itself and checks everything the Rust reference implementation checks before
any byte of tensor data is trusted: header length at most 100 MB and inside
the file, UTF-8 JSON object, known dtypes, `prod(shape) x element size` equal
to each tensor's byte range, ranges that tile the data area exactly (first at
0, each starting where the previous ends, the last ending at the end of the
file). On top of that it rejects what the reference accepts silently or
ambiguously: duplicate keys, unknown keys in a tensor entry, non-string
metadata, NaN/Infinity literals, lone surrogates, ranks above 64. All checks use
Python ints before anything is allocated; every failure is a `UserError`
naming the file and the fault (one line, exit 2 in the CLI).

Data. `tensor_bytes` maps the file (mmap) and hands out zero-copy views.
Streaming (`chunks`, the digests, `compare`) reads with pread into one reused
2 MB buffer per file, so a 2 GB checkpoint is compared with a few MB of
memory, and a file truncated underneath is an error rather than a SIGBUS.

Comparison. Bytes are compared chunk by chunk with memcmp (bytearray ==),
as fast as `cmp`; numpy is imported and element statistics are computed
only for a chunk whose bytes differ, so identical files never load numpy. An element differs when its
bytes differ: a NaN with another payload, or -0.0 against 0.0, is a
difference even where `==` would say otherwise. ULP distance is the distance
between the two bit patterns in the monotonic order of the format (integers:
|a - b|). In that order -0.0 and +0.0 are adjacent, one ULP apart, so every
differing non-NaN element is at least 1 ULP away. Pairs with a NaN on either
side are counted in `nan_mismatches` and left out of the max |a-b| and max ULP.
F4 and F6 (packed, several elements per byte) are compared byte by byte.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import math
import mmap
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from noisefloor.digest import TensorDigest
from noisefloor.errors import UserError
from noisefloor.rundir import INIT_FILE, MODEL_FILE

if TYPE_CHECKING:  # numpy is imported only where bytes differ: identical files never pay for it
    import numpy as np

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's cap
# Structural characters (, : { [) allowed in a header. Each can make Python
# create one object while parsing; this keeps a hostile 100 MB header from
# taking gigabytes. A GPT-2 header has ~2,000; 2 million fits ~150,000 tensors.
MAX_HEADER_VALUES = 2_000_000
MAX_RANK = 64  # numpy's own limit; no real tensor comes near
MAX_NAME_IN_MESSAGE = 80
CHUNK_BYTES = 2 << 20  # bytes read and compared per step: a multiple of every element size, cache-friendly
STATS_BLOCK = 1 << 15  # elements per step of the statistics where bytes differ: temporaries stay in cache
_USIZE_MAX = 2**64 - 1
_TENSOR_KEYS = frozenset({"dtype", "shape", "data_offsets"})


# ------------------------------------------------------------------ dtypes


def _minifloat_table(exp_bits: int, man_bits: int, bias: int, special: Callable[[int, int, int], float | None]) -> np.ndarray:
    """Values of all 256 bit patterns of an 8-bit float (float32 holds them all exactly)."""
    import numpy as np  # only where bytes differ: verify-identical of equal files never loads it

    values = np.empty(256, dtype=np.float32)
    for byte in range(256):
        sign, exp, man = byte >> 7, (byte >> man_bits) & ((1 << exp_bits) - 1), byte & ((1 << man_bits) - 1)
        value = special(sign, exp, man)
        if value is None:
            if exp == 0:
                value = math.ldexp(man / (1 << man_bits), 1 - bias)
            else:
                value = math.ldexp(1 + man / (1 << man_bits), exp - bias)
            value = -value if sign else value
        values[byte] = value
    return values


def _e4m3fn(sign: int, exp: int, man: int) -> float | None:
    return math.nan if (exp, man) == (15, 7) else None  # no infinities


def _e5m2(sign: int, exp: int, man: int) -> float | None:
    if exp == 31:
        return math.nan if man else (-math.inf if sign else math.inf)
    return None


def _e8m0(sign: int, exp: int, man: int) -> float | None:
    """Unsigned, exponent only (8 exponent bits: `exp` is the whole byte): 2**(exp - 127); 0xFF is NaN."""
    return math.nan if exp == 0xFF else math.ldexp(1.0, exp - 127)


def _fnuz(sign: int, exp: int, man: int) -> float | None:
    return math.nan if (sign, exp, man) == (1, 0, 0) else None  # the "-0" pattern is the only NaN


@dataclass(frozen=True)
class DType:
    """A safetensors dtype: its size and how to read its bits as numbers."""

    name: str
    bits: int
    kind: str  # "float" (sign-magnitude), "ufloat" (no sign bit), "sint", "uint", "complex", "packed"
    table: Callable[[], np.ndarray] | None = None  # 8-bit floats: value of each byte

    @property
    def itemsize(self) -> int:
        """Bytes per element; packed sub-byte formats are handled per byte (1)."""
        return max(self.bits // 8, 1)

    @property
    def bit_type(self) -> str:
        """The numpy type that holds one element's bits."""
        return f"<u{self.itemsize}"


DTYPES: dict[str, DType] = {
    d.name: d
    for d in [
        DType("BOOL", 8, "uint"),
        DType("U8", 8, "uint"),
        DType("I8", 8, "sint"),
        DType("U16", 16, "uint"),
        DType("I16", 16, "sint"),
        DType("U32", 32, "uint"),
        DType("I32", 32, "sint"),
        DType("U64", 64, "uint"),
        DType("I64", 64, "sint"),
        DType("F16", 16, "float"),
        DType("BF16", 16, "float"),
        DType("F32", 32, "float"),
        DType("F64", 64, "float"),
        DType("C64", 64, "complex"),
        DType("F8_E4M3", 8, "float", functools.cache(lambda: _minifloat_table(4, 3, 7, _e4m3fn))),
        DType("F8_E5M2", 8, "float", functools.cache(lambda: _minifloat_table(5, 2, 15, _e5m2))),
        DType("F8_E4M3FNUZ", 8, "float", functools.cache(lambda: _minifloat_table(4, 3, 8, _fnuz))),
        DType("F8_E5M2FNUZ", 8, "float", functools.cache(lambda: _minifloat_table(5, 2, 16, _fnuz))),
        DType(
            "F8_E8M0",
            8,
            "ufloat",
            functools.cache(lambda: _minifloat_table(8, 0, 127, _e8m0)),
        ),
        DType("F4", 4, "packed"),
        DType("F6_E2M3", 6, "packed"),
        DType("F6_E3M2", 6, "packed"),
    ]
}


def decode(dtype: DType, bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Values of raw bit patterns: float32 for floats up to 32 bits, float64 for F64, complex64 for C64.

    `out` (float32, for the formats that need converting) avoids allocating.
    """
    import numpy as np  # only where bytes differ: verify-identical of equal files never loads it

    if dtype.table is not None:
        return np.take(dtype.table(), bits, out=out)
    if dtype.name == "BF16":  # the top half of a float32
        wide = np.left_shift(bits, 16, dtype=np.uint32, out=None if out is None else out.view(np.uint32))
        return wide.view(np.float32)
    if dtype.name == "F16":
        if out is None:
            return bits.view(np.float16).astype(np.float32)
        out[...] = bits.view(np.float16)
        return out
    return bits.view({"F32": np.float32, "F64": np.float64, "C64": np.complex64}[dtype.name])


def order_key(dtype: DType, bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Bit patterns mapped to integers whose order is the numeric order.

    Sign-magnitude floats: x ^ 0b0111..1 for negatives, read as signed, so
    -0.0 is -1 and +0.0 is 0 (adjacent). Two's complement ints: the signed
    view. Unsigned ints, BOOL and F8_E8M0: the bits themselves. The ULP distance
    (floats) or |a - b| (ints) is `key_distance` of two keys. `out` (signed, the
    width of `bits`) avoids allocating.
    """
    import numpy as np  # only where bytes differ: verify-identical of equal files never loads it

    if dtype.kind == "float":
        signed = bits.view(bits.dtype.str.replace("u", "i"))
        flip = np.right_shift(signed, 8 * bits.dtype.itemsize - 1, out=out)  # -1 for negatives, else 0
        np.bitwise_and(flip, np.iinfo(signed.dtype).max, out=flip)
        return np.bitwise_xor(flip, signed, out=flip)
    if dtype.kind == "sint":
        return bits.view(bits.dtype.str.replace("u", "i"))
    return bits


def key_distance(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, spare: np.ndarray | None = None) -> np.ndarray:
    """|a - b| of two key arrays, exact: max - min in the unsigned type of the same width.

    `out` and `spare` (the keys' type) avoid allocating; the result is `out` viewed as unsigned.
    """
    import numpy as np  # only where bytes differ: verify-identical of equal files never loads it

    unsigned = a.dtype.str.replace("i", "u")
    high = np.maximum(a, b, out=out).view(unsigned)
    low = np.minimum(a, b, out=spare).view(unsigned)
    return np.subtract(high, low, out=high)


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class TensorInfo:
    """One tensor in a validated file. `begin`/`end` are offsets in the data area."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def show_name(name: str) -> str:
    """A tensor name or key as it goes into a one-line message: quoted, escaped, short."""
    text = repr(name)
    return text if len(text) <= MAX_NAME_IN_MESSAGE else text[: MAX_NAME_IN_MESSAGE - 3] + "..."


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _HeaderError(f"duplicate key {show_name(key)} in the header")
        result[key] = value
    return result


def _no_constants(text: str) -> Any:
    raise _HeaderError(f"header is not valid JSON: {text} is not a JSON value")


class _HeaderError(Exception):
    """Raised inside header parsing; turned into a UserError that names the file."""


def _utf8(text: str, what: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _HeaderError(f"{what} {show_name(text)} is not valid UTF-8 (lone surrogate)") from None
    return text


def _parse_header(fd: int, size: int) -> Any:
    """Read and parse the JSON header, within a budget of JSON values (see MAX_HEADER_VALUES)."""
    raw = _pread_exact(fd, size, 8)
    if len(raw) != size:
        raise _HeaderError("file shrank while being read")
    values = sum(raw.count(c) for c in (b",", b":", b"{", b"["))  # bounds the objects json creates
    if values > MAX_HEADER_VALUES:
        raise _HeaderError(f"header holds more than {MAX_HEADER_VALUES} JSON values")
    try:
        text = raw.decode("utf-8")
        del raw  # keep one copy of the header alive, not two
    except UnicodeDecodeError as exc:
        raise _HeaderError(f"header is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise _HeaderError(f"header is not valid JSON: {exc.msg} at character {exc.pos}") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise _HeaderError(f"header is not valid JSON: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise _HeaderError("header nests JSON too deeply") from None
    except MemoryError:
        raise _HeaderError("header JSON is too large to parse in the memory available") from None


def _nonneg_int(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _USIZE_MAX


def _tensor_info(name: str, entry: Any) -> TensorInfo:
    where = f"tensor {show_name(_utf8(name, 'tensor name'))}"
    if not isinstance(entry, dict):
        raise _HeaderError(f"{where}: entry is {type(entry).__name__}, expected an object with dtype, shape, data_offsets")
    missing = sorted(_TENSOR_KEYS - entry.keys())
    if missing:
        raise _HeaderError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(entry.keys() - _TENSOR_KEYS)
    if unknown:
        raise _HeaderError(f"{where}: unknown key {show_name(unknown[0])}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        shown = show_name(dtype) if isinstance(dtype, str) else type(dtype).__name__
        raise _HeaderError(f"{where}: unknown dtype {shown} (known: {', '.join(DTYPES)})")
    if not isinstance(shape, list):
        raise _HeaderError(f"{where}: shape is {type(shape).__name__}, expected a list of integers")
    if len(shape) > MAX_RANK:
        raise _HeaderError(f"{where}: rank {len(shape)} is above {MAX_RANK}")
    if not all(_nonneg_int(d) for d in shape):
        raise _HeaderError(f"{where}: shape {show_name(str(shape))} must hold non-negative integers below 2**64")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_nonneg_int(o) for o in offsets):
        raise _HeaderError(f"{where}: data_offsets must be [begin, end], non-negative integers below 2**64")
    begin, end = offsets
    if end < begin:
        raise _HeaderError(f"{where}: data_offsets end {end} is before begin {begin}")
    numel = 1
    for d in shape:
        numel *= d
        if numel > _USIZE_MAX:
            raise _HeaderError(f"{where}: shape {shape} has more than 2**64 elements")
    nbits = numel * DTYPES[dtype].bits
    if nbits % 8:
        raise _HeaderError(f"{where}: {numel} elements of {dtype} do not fill whole bytes")
    if nbits // 8 != end - begin:
        raise _HeaderError(
            f"{where}: shape {shape} of {dtype} needs {nbits // 8} bytes but data_offsets [{begin}, {end}] hold {end - begin}"
        )
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _HeaderError(f"__metadata__ is {type(value).__name__}, expected an object of strings")
    for key, item in value.items():
        _utf8(key, "__metadata__ key")
        if not isinstance(item, str):
            raise _HeaderError(f"__metadata__ {show_name(key)} is {type(item).__name__}, expected a string")
        _utf8(item, f"__metadata__ {show_name(key)} value")
    return value


def _check_layout(tensors: list[TensorInfo], data_size: int) -> None:
    """Byte ranges must tile the data area: start at 0, no gap, no overlap, no trailing bytes."""
    for info in tensors:
        if info.end > data_size:
            raise _HeaderError(
                f"tensor {show_name(info.name)}: data_offsets [{info.begin}, {info.end}] run past the data area ({data_size} bytes)"
            )
    position, previous = 0, None
    for info in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if info.begin > position:
            after = f"after tensor {show_name(previous.name)}" if previous else "before the first tensor"
            raise _HeaderError(f"{info.begin - position} unused bytes {after} (data_offsets must be contiguous)")
        if info.begin < position:
            raise _HeaderError(f"tensors {show_name(previous.name)} and {show_name(info.name)} overlap")
        position, previous = info.end, info
    if position != data_size:
        raise _HeaderError(f"{data_size - position} bytes after the last tensor (the data area is {data_size} bytes)")


def _open_regular(path: Path) -> tuple[int, int]:
    """Open a regular file for reading without ever blocking; return (fd, size)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a .safetensors file") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({exc.strerror})") from None
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        os.close(fd)
        raise UserError(f"{path}: is a directory, expected a .safetensors file")
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UserError(f"{path}: not a regular file")
    return fd, info.st_size


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    parts, got = [], 0
    while got < size:
        part = os.pread(fd, size - got, offset + got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class SafetensorsFile:
    """A validated safetensors file, open for reading. Use as a context manager.

    `metadata` is the `__metadata__` dict (or None); `tensors` maps each name,
    sorted, to its `TensorInfo`. `tensor_bytes` gives one tensor zero-copy
    through mmap; `chunks` streams one through a small reused buffer.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._mmap: mmap.mmap | None = None
        self._fd: int | None = None
        fd, self.size = _open_regular(self.path)
        try:
            self.data_start = 8 + self._read_header(fd)
        except OSError as exc:
            os.close(fd)
            raise UserError(f"{self.path}: cannot read ({exc.strerror})") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _read_header(self, fd: int) -> int:
        if self.size < 8:
            raise self._error(f"file is {self.size} bytes, too short for the 8-byte header length" + (" (empty file)" if not self.size else ""))
        header_size = int.from_bytes(_pread_exact(fd, 8, 0), "little")
        if header_size > MAX_HEADER_BYTES:
            raise self._error(f"header length {header_size} is above the {MAX_HEADER_BYTES}-byte limit")
        if 8 + header_size > self.size:
            raise self._error(f"header length {header_size} runs past the end of the file ({self.size} bytes)")
        try:
            header = _parse_header(fd, header_size)
            if not isinstance(header, dict):
                raise _HeaderError(f"header is a JSON {type(header).__name__}, expected an object")
            self.metadata = _metadata(header.pop("__metadata__", None))
            infos = [_tensor_info(name, entry) for name, entry in header.items()]
            _check_layout(infos, self.size - 8 - header_size)
        except _HeaderError as exc:
            raise self._error(str(exc)) from None
        self.tensors: dict[str, TensorInfo] = {info.name: info for info in sorted(infos, key=lambda t: t.name)}
        return header_size

    def _error(self, problem: str) -> UserError:
        return UserError(f"{self.path}: not a valid safetensors file: {problem}")

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise UserError(f"{self.path}: no tensor {show_name(name)}") from None

    def tensor_bytes(self, name: str) -> memoryview:
        """The raw little-endian bytes of one tensor, zero-copy from a read-only mapping.

        A view kept after `close` keeps the mapping alive until it is released.
        """
        info = self.info(name)
        if self._mmap is None:
            try:
                self._mmap = mmap.mmap(self._open_fd(), 0, access=mmap.ACCESS_READ)
            except OSError as exc:
                raise UserError(f"{self.path}: cannot map ({exc.strerror})") from None
        return memoryview(self._mmap)[self.data_start + info.begin : self.data_start + info.end]

    def chunks(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytearray]:
        """A tensor's bytes in order, `chunk_bytes` at a time, read into one reused buffer.

        Memory stays at one buffer whatever the tensor's size. Each chunk is
        valid until the next is asked for: copy what you keep. Chunks are
        bytearrays, so `chunk_a == chunk_b` is a memcmp.
        """
        info = self.info(name)
        fd = self._open_fd()
        buffer = bytearray(min(chunk_bytes, info.nbytes))
        for start in range(self.data_start + info.begin, self.data_start + info.end, chunk_bytes):
            size = min(chunk_bytes, self.data_start + info.end - start)
            chunk = buffer if size == len(buffer) else bytearray(size)  # the last, shorter one
            view = memoryview(chunk)
            done = 0
            while done < size:
                got = os.preadv(fd, [view[done:]], start + done)
                if not got:
                    raise UserError(f"{self.path}: file shrank while being read (was it overwritten?)")
                done += got
            view.release()
            yield chunk

    def _open_fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path}: file is closed")
        return self._fd

    def close(self) -> None:
        """Close the file. Views from `tensor_bytes` still held elsewhere keep the mapping alive."""
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a caller still holds a view: the mapping goes with it
            self._mmap = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()


def open_safetensors(path: str | os.PathLike[str]) -> SafetensorsFile:
    """Open and validate a safetensors file; `UserError` naming the file for anything malformed."""
    return SafetensorsFile(path)


# ------------------------------------------------------------------ digests


def digest_file(path: str | os.PathLike[str]) -> TensorDigest:
    """The project digest of a file's tensors (state and per tensor), streamed in bounded memory."""
    digest = TensorDigest()
    with open_safetensors(path) as st:
        for name, info in st.tensors.items():
            digest.add(name, info.dtype, info.shape, st.chunks(name), info.nbytes)
    return digest


def file_digest(path: str | os.PathLike[str]) -> str:
    """The state digest of a safetensors file: equal to `TensorDigest` over the same tensors in memory."""
    return digest_file(path).hexdigest()


def tensor_digests(path: str | os.PathLike[str]) -> dict[str, str]:
    """Each tensor's digest (`single_tensor_digest`), by name."""
    return digest_file(path).tensor_digests


# ------------------------------------------------------------------ comparison


@dataclass
class TensorDifference:
    """How one tensor's bytes differ between A and B (same name, dtype and shape)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    differing: int  # elements (bytes for F4/F6) whose bytes differ
    total: int
    max_abs_diff: float | int | None  # over differing pairs without NaN; None if there are none
    max_ulp: int | None  # likewise
    nan_mismatches: int  # differing pairs with a NaN on either side
    first_index: tuple[int, ...]  # multi-dimensional index of the first difference (flat byte index for F4/F6)
    unit: str = "element"  # "byte" for the packed F4/F6 formats

    @property
    def fraction(self) -> float:
        return self.differing / self.total


@dataclass
class TensorMismatch:
    """A tensor present in both files with another dtype or shape (its bytes are not compared)."""

    name: str
    dtype_a: str
    dtype_b: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]

    @property
    def reason(self) -> str:
        parts = []
        if self.dtype_a != self.dtype_b:
            parts.append(f"dtype {self.dtype_a} vs {self.dtype_b}")
        if self.shape_a != self.shape_b:
            parts.append(f"shape {list(self.shape_a)} vs {list(self.shape_b)}")
        return ", ".join(parts)


@dataclass
class MetadataDifference:
    """`__metadata__` of A and B differ (compared as parsed JSON, never as bytes)."""

    a: dict[str, str] | None
    b: dict[str, str] | None

    @property
    def only_in_a(self) -> list[str]:
        return sorted((self.a or {}).keys() - (self.b or {}).keys())

    @property
    def only_in_b(self) -> list[str]:
        return sorted((self.b or {}).keys() - (self.a or {}).keys())

    @property
    def changed(self) -> list[str]:
        a, b = self.a or {}, self.b or {}
        return sorted(key for key in a.keys() & b.keys() if a[key] != b[key])


@dataclass
class Comparison:
    """Everything that differs between two safetensors files."""

    a: str
    b: str
    metadata: MetadataDifference | None = None
    only_in_a: list[str] = field(default_factory=list)  # tensor names missing from B
    only_in_b: list[str] = field(default_factory=list)  # tensor names B has in addition
    mismatches: list[TensorMismatch] = field(default_factory=list)
    differences: list[TensorDifference] = field(default_factory=list)
    tensors_compared: int = 0
    bytes_compared: int = 0
    ignored: list[str] = field(default_factory=list)  # names matching an --ignore pattern, in either file

    @property
    def identical(self) -> bool:
        return not (self.metadata or self.only_in_a or self.only_in_b or self.mismatches or self.differences)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "identical": self.identical,
            "metadata": None
            if self.metadata is None
            else {
                "a": self.metadata.a,
                "b": self.metadata.b,
                "only_in_a": self.metadata.only_in_a,
                "only_in_b": self.metadata.only_in_b,
                "changed": self.metadata.changed,
            },
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "mismatches": [
                {"name": m.name, "a": {"dtype": m.dtype_a, "shape": list(m.shape_a)}, "b": {"dtype": m.dtype_b, "shape": list(m.shape_b)}}
                for m in self.mismatches
            ],
            "differences": [
                {
                    "name": d.name,
                    "dtype": d.dtype,
                    "shape": list(d.shape),
                    "differing": d.differing,
                    "total": d.total,
                    "fraction": d.fraction,
                    "unit": d.unit,
                    "max_abs_diff": _json_number(d.max_abs_diff),
                    "max_ulp": d.max_ulp,
                    "nan_mismatches": d.nan_mismatches,
                    "first_index": list(d.first_index),
                }
                for d in self.differences
            ],
            "tensors_compared": self.tensors_compared,
            "bytes_compared": self.bytes_compared,
            "ignored": self.ignored,
        }


@dataclass
class PathComparison:
    """A comparison of two files, or of two run directories (model, and init when present)."""

    a: str
    b: str
    files: list[Comparison] = field(default_factory=list)
    only_in_a: list[str] = field(default_factory=list)  # checkpoint files one run directory lacks
    only_in_b: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.only_in_a or self.only_in_b) and all(c.identical for c in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "a": self.a,
            "b": self.b,
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "files": [c.to_json() for c in self.files],
        }


def _json_number(value: float | int | None) -> float | int | str | None:
    """JSON has no infinity: an infinite difference is written as the string "inf"."""
    return "inf" if isinstance(value, float) and math.isinf(value) else value


class _DiffStats:
    """Element statistics over the chunks of one tensor whose bytes differ.

    Work happens in blocks of STATS_BLOCK elements in arrays allocated once
    (`_work`): the loop allocates nothing, so its speed does not depend on
    the allocator (fresh large temporaries cost an mmap and page faults each).
    """

    def __init__(self, info: TensorInfo) -> None:
        self.info = info
        self.dtype = DTYPES[info.dtype]
        self.differing = self.nan = 0
        self.first: int | None = None
        self.max_abs: float | int | None = None
        self.max_ulp: int | None = None
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    def _work(self, tag: str, dtype: Any, size: int) -> np.ndarray:
        import numpy as np  # only where bytes differ: verify-identical of equal files never loads it

        key = (tag, np.dtype(dtype).str)
        array = self._arrays.get(key)
        if array is None or array.size < size:
            array = self._arrays[key] = np.empty(max(size, STATS_BLOCK), dtype)
        return array[:size]

    def add(self, a: np.ndarray, b: np.ndarray, byte_offset: int) -> None:
        """Account for one chunk (uint8 arrays) starting `byte_offset` bytes into the tensor."""
        bits_a, bits_b = a.view(self.dtype.bit_type), b.view(self.dtype.bit_type)
        first = byte_offset // self.dtype.itemsize
        for start in range(0, bits_a.size, STATS_BLOCK):  # cache-sized blocks
            self._add_block(bits_a[start : start + STATS_BLOCK], bits_b[start : start + STATS_BLOCK], first + start)

    def _add_block(self, bits_a: np.ndarray, bits_b: np.ndarray, first: int) -> None:
        import numpy as np  # only where bytes differ: verify-identical of equal files never loads it

        work = self._work
        differ = np.not_equal(bits_a, bits_b, out=work("differ", bool, bits_a.size))
        count = int(np.count_nonzero(differ))
        if not count:
            return
        if self.first is None:
            self.first = first + int(np.argmax(differ))
        self.differing += count
        if self.dtype.kind == "packed":
            return
        if count < differ.size:
            bits_a = np.compress(differ, bits_a, out=work("bits_a", bits_a.dtype, count))
            bits_b = np.compress(differ, bits_b, out=work("bits_b", bits_b.dtype, count))
        if self.dtype.kind in ("uint", "sint"):
            distance = int(self._ulps(self.dtype, bits_a, bits_b).max())
            self._update(distance, distance)
            return
        converted = np.float32 if self.dtype.name in ("F16", "BF16") or self.dtype.table else None
        values_a = decode(self.dtype, bits_a, out=converted and work("values_a", converted, count))
        values_b = decode(self.dtype, bits_b, out=converted and work("values_b", converted, count))
        nan = work("nan", bool, count)
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are data here, not accidents
            if self.dtype.kind == "complex":
                np.logical_or(np.isnan(values_a, out=nan), np.isnan(values_b, out=work("nan_b", bool, count)), out=nan)
                gap = self._complex_gap(bits_a, bits_b, values_a, values_b)
            else:  # every pair here differs, so never inf - inf: NaN exactly where an input is
                gap = np.subtract(values_a, values_b, out=work("gap", values_a.dtype, count))
                np.isnan(gap, out=nan)
                np.abs(gap, out=gap)
        nans = int(np.count_nonzero(nan))
        self.nan += nans
        if nans == count:
            return
        keep = np.logical_not(nan, out=nan) if nans else True
        if self.dtype.kind == "complex":  # ULP over the float32 parts
            ulp = self._ulps(DTYPES["F32"], bits_a.view(np.uint32), bits_b.view(np.uint32)).reshape(-1, 2)
            max_ulp = int(np.max(ulp, where=keep if nans == 0 else keep[:, None], initial=0))
        else:
            max_ulp = int(np.max(self._ulps(self.dtype, bits_a, bits_b), where=keep, initial=0))
        max_abs = float(np.max(gap, where=keep, initial=0))
        if math.isinf(max_abs) and gap.dtype == np.float32:  # float32 overflowed: redo in float64 (rare)
            with np.errstate(over="ignore", invalid="ignore"):
                exact = np.abs(values_a.astype(np.float64) - values_b.astype(np.float64))
            max_abs = float(np.max(exact, where=keep, initial=0))
        self._update(max_abs, max_ulp)

    def _complex_gap(self, bits_a: np.ndarray, bits_b: np.ndarray, values_a: np.ndarray, values_b: np.ndarray) -> np.ndarray:
        """|a - b| of complex64 pairs in float64; a part with equal bits contributes 0 (even inf vs inf)."""
        import numpy as np  # only where bytes differ: verify-identical of equal files never loads it

        parts = np.subtract(values_a.view(np.float32), values_b.view(np.float32), dtype=np.float64, out=self._work("parts", np.float64, 2 * values_a.size))
        same = np.equal(bits_a.view(np.uint32), bits_b.view(np.uint32), out=self._work("same", bool, parts.size))
        np.copyto(parts, 0.0, where=same)
        pairs = parts.reshape(-1, 2)
        return np.hypot(pairs[:, 0], pairs[:, 1], out=self._work("gap", np.float64, values_a.size))

    def _ulps(self, dtype: DType, bits_a: np.ndarray, bits_b: np.ndarray) -> np.ndarray:
        signed = bits_a.dtype.str.replace("u", "i")
        key_a = order_key(dtype, bits_a, out=self._work("key_a", signed, bits_a.size))
        key_b = order_key(dtype, bits_b, out=self._work("key_b", signed, bits_b.size))
        return key_distance(key_a, key_b, out=self._work("high", key_a.dtype, key_a.size), spare=self._work("low", key_a.dtype, key_a.size))

    def _update(self, max_abs: float | int, max_ulp: int) -> None:
        self.max_abs = max_abs if self.max_abs is None else max(self.max_abs, max_abs)
        self.max_ulp = max_ulp if self.max_ulp is None else max(self.max_ulp, max_ulp)

    def result(self) -> TensorDifference | None:
        if self.first is None:
            return None
        info, packed = self.info, self.dtype.kind == "packed"
        first = (self.first,) if packed else _unravel(self.first, info.shape)
        return TensorDifference(
            name=info.name,
            dtype=info.dtype,
            shape=info.shape,
            differing=self.differing,
            total=info.nbytes if packed else info.numel,
            max_abs_diff=self.max_abs,
            max_ulp=self.max_ulp,
            nan_mismatches=self.nan,
            first_index=first,
            unit="byte" if packed else "element",
        )


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The C-order multi-dimensional index of a flat element index."""
    index = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        index.append(i)
    return tuple(reversed(index))


def _compare_bytes(fa: SafetensorsFile, fb: SafetensorsFile, info: TensorInfo, chunk_bytes: int) -> TensorDifference | None:
    """memcmp chunk by chunk; numpy is imported and statistics computed only for chunks that differ."""
    stats: _DiffStats | None = None
    offset = 0
    for chunk_a, chunk_b in zip(fa.chunks(info.name, chunk_bytes), fb.chunks(info.name, chunk_bytes)):
        if chunk_a != chunk_b:
            import numpy as np  # only where bytes differ: verify-identical of equal files never loads it

            stats = stats or _DiffStats(info)
            stats.add(np.frombuffer(chunk_a, np.uint8), np.frombuffer(chunk_b, np.uint8), offset)
        offset += len(chunk_a)
    return stats.result() if stats else None


def compare(a: str | os.PathLike[str], b: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES,
            ignore: Sequence[str] = ()) -> Comparison:
    """Compare two safetensors files: metadata, names, dtypes, shapes, every byte.

    Tensors whose name matches one of the `ignore` shell patterns (fnmatch, e.g. `*.att.mask`)
    are left out, from either file."""
    if chunk_bytes <= 0 or chunk_bytes % 8:
        raise ValueError("chunk_bytes must be a positive multiple of 8")
    with open_safetensors(a) as fa, open_safetensors(b) as fb:
        result = Comparison(a=str(fa.path), b=str(fb.path))
        if fa.metadata != fb.metadata:
            result.metadata = MetadataDifference(fa.metadata, fb.metadata)
        names = fa.tensors.keys() | fb.tensors.keys()
        result.ignored = sorted(n for n in names if any(fnmatch.fnmatchcase(n, pattern) for pattern in ignore))
        in_a, in_b = fa.tensors.keys() - set(result.ignored), fb.tensors.keys() - set(result.ignored)
        result.only_in_a = sorted(in_a - in_b)
        result.only_in_b = sorted(in_b - in_a)
        for name in sorted(in_a & in_b):
            ia, ib = fa.tensors[name], fb.tensors[name]
            if (ia.dtype, ia.shape) != (ib.dtype, ib.shape):
                result.mismatches.append(TensorMismatch(name, ia.dtype, ib.dtype, ia.shape, ib.shape))
                continue
            difference = _compare_bytes(fa, fb, ia, chunk_bytes)
            if difference:
                result.differences.append(difference)
            result.tensors_compared += 1
            result.bytes_compared += ia.nbytes
        return result


def checkpoint_files(path: str | os.PathLike[str]) -> dict[str, Path]:
    """The files `verify-identical` compares for a path: the file itself, or a run directory's checkpoints."""
    path = Path(path)
    if not path.is_dir():
        return {MODEL_FILE: path}
    files = {name: path / name for name in (MODEL_FILE, INIT_FILE) if (path / name).is_file()}
    if MODEL_FILE not in files:
        raise UserError(f"{path}: a run directory must hold {MODEL_FILE}")
    return files


def compare_paths(a: str | os.PathLike[str], b: str | os.PathLike[str], ignore: Sequence[str] = ()) -> PathComparison:
    """Compare two files, or two run directories (model.safetensors, init.safetensors when present).

    A checkpoint file present in one run directory only is a difference. A run
    directory against a plain file compares the directory's model.safetensors.
    `ignore`: tensor name patterns left out of every file pair (see `compare`).
    """
    files_a, files_b = checkpoint_files(a), checkpoint_files(b)
    result = PathComparison(a=str(a), b=str(b))
    if Path(a).is_dir() and Path(b).is_dir():
        result.only_in_a = sorted(files_a.keys() - files_b.keys())
        result.only_in_b = sorted(files_b.keys() - files_a.keys())
    for name in sorted(files_a.keys() & files_b.keys(), key=lambda n: n != MODEL_FILE):
        result.files.append(compare(files_a[name], files_b[name], ignore=ignore))
    return result
