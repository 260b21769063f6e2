"""Digests of named tensors: sorted names, dtype, shape, raw bytes.

Never a hash of a file: pickles are not byte-stable and safetensors headers
may order metadata differently. The same digest comes out of tensors held in
memory (the trainer) and tensors read from a safetensors file
(`checkpoints.file_digest`), with or without torch.

Format, per tensor in sorted name order, fed to SHA-256:
    name (UTF-8) 0x00 dtype (safetensors spelling, e.g. "F32") 0x00
    shape as compact JSON (e.g. "[768,768]") 0x00
    byte length as 8-byte little-endian, then the raw little-endian bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable, Sequence

DIGEST_PREFIX = "sha256:"


def _header(name: str, dtype: str, shape: Sequence[int], nbytes: int) -> bytes:
    shape_text = json.dumps([int(d) for d in shape], separators=(",", ":"))
    return b"\0".join([name.encode(), dtype.encode(), shape_text.encode(), nbytes.to_bytes(8, "little")])


class TensorDigest:
    """Feed tensors (in any order of calls, but each name once) and read the digest.

    Names must be added in sorted order; `add` checks this so a caller cannot
    silently produce an order-dependent digest.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._last: str | None = None

    def add(self, name: str, dtype: str, shape: Sequence[int], chunks: Iterable[bytes | memoryview], nbytes: int) -> None:
        if self._last is not None and name <= self._last:
            raise ValueError(f"tensor names must be added in sorted order: {name!r} after {self._last!r}")
        self._last = name
        self._hash.update(_header(name, dtype, shape, nbytes))
        for chunk in chunks:
            self._hash.update(chunk)

    def hexdigest(self) -> str:
        return DIGEST_PREFIX + self._hash.hexdigest()


def single_tensor_digest(name: str, dtype: str, shape: Sequence[int], data: bytes | memoryview) -> str:
    """Digest of one tensor alone (what `diverge` compares tensor by tensor)."""
    digest = TensorDigest()
    digest.add(name, dtype, shape, [data], memoryview(data).nbytes)
    return digest.hexdigest()
