"""Writers of safetensors files for the checkpoint tests: real ones and hostile ones."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

NUMPY_DTYPES = {
    np.dtype(np.float16): "F16",
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
    np.dtype(np.int8): "I8",
    np.dtype(np.int16): "I16",
    np.dtype(np.int32): "I32",
    np.dtype(np.int64): "I64",
    np.dtype(np.uint8): "U8",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint32): "U32",
    np.dtype(np.uint64): "U64",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.complex64): "C64",
}


def write_raw(path: Path, header: Any, data: bytes = b"", length: int | None = None) -> Path:
    """A file with this header (dict/list/str/bytes), then `data`; `length` overrides the 8-byte length."""
    if isinstance(header, (dict, list, int, float)) or header is None:
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode("utf-8", "surrogatepass")
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


def write_tensors(
    path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], metadata: dict[str, str] | None = None, reverse: bool = False
) -> Path:
    """A valid file from (dtype, shape, raw bytes) per name, laid out in name order (or reversed)."""
    header: dict[str, Any] = {} if metadata is None else {"__metadata__": metadata}
    data, offset = [], 0
    for name in sorted(tensors, reverse=reverse):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        data.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    return write_raw(path, text, b"".join(data))


def write_arrays(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None, reverse: bool = False) -> Path:
    tensors = {name: (NUMPY_DTYPES[a.dtype], a.shape, np.ascontiguousarray(a).tobytes()) for name, a in arrays.items()}
    return write_tensors(path, tensors, metadata, reverse)
