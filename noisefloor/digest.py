"""Digests of named tensors: sorted names, dtype, shape, raw bytes.

Never a hash of a file: pickles are not byte-stable and safetensors headers
may order metadata differently. The same digest comes out of tensors held in
memory (the trainer) and tensors read from a safetensors file
(`checkpoints.file_digest`), with or without torch.

Definition (SHA-256 throughout):
- a tensor's digest hashes: name (UTF-8) 0x00 dtype (safetensors spelling,
  e.g. "F32") 0x00 shape as compact JSON (e.g. "[768,768]") 0x00, the byte
  length as 8-byte little-endian, then the raw little-endian bytes;
- a state's digest hashes, in sorted name order, each name 0x00 tensor-digest 0x0a.
The tensor bytes are read once and both levels come out, which is what
`diverge` needs (which tensors differ first) at no extra cost.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable, Sequence

DIGEST_PREFIX = "sha256:"


def _header(name: str, dtype: str, shape: Sequence[int], nbytes: int) -> bytes:
    shape_text = json.dumps([int(d) for d in shape], separators=(",", ":"))
    return b"\0".join([name.encode(), dtype.encode(), shape_text.encode(), nbytes.to_bytes(8, "little")])


def single_tensor_digest(name: str, dtype: str, shape: Sequence[int], chunks: Iterable[bytes | memoryview], nbytes: int) -> str:
    """Digest of one named tensor, its bytes given as chunks totalling `nbytes`."""
    h = hashlib.sha256(_header(name, dtype, shape, nbytes))
    for chunk in chunks:
        h.update(chunk)
    return DIGEST_PREFIX + h.hexdigest()


class TensorDigest:
    """Feed tensors in sorted name order; read the state digest and the per-tensor digests."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.tensor_digests: dict[str, str] = {}
        self._last: str | None = None

    def add(self, name: str, dtype: str, shape: Sequence[int], chunks: Iterable[bytes | memoryview], nbytes: int) -> str:
        if self._last is not None and name <= self._last:
            raise ValueError(f"tensor names must be added in sorted order: {name!r} after {self._last!r}")
        self._last = name
        digest = single_tensor_digest(name, dtype, shape, chunks, nbytes)
        self.tensor_digests[name] = digest
        self._hash.update(name.encode() + b"\0" + digest.encode() + b"\n")
        return digest

    def hexdigest(self) -> str:
        return DIGEST_PREFIX + self._hash.hexdigest()
