"""Placeholder until the torch-free validating reader lands (branch `bitwise`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from noisefloor.errors import UserError


@dataclass
class _Info:
    dtype: str
    shape: tuple
    start: int
    end: int


class SafetensorsFile:
    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{path}: file not found")
        with open(self.path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        self.metadata = header.pop("__metadata__", None)
        self.tensors = {k: _Info(v["dtype"], tuple(v["shape"]), *v["data_offsets"]) for k, v in header.items()}
        self._base = 8 + n

    def tensor_bytes(self, name):
        info = self.tensors[name]
        with open(self.path, "rb") as f:
            f.seek(self._base + info.start)
            return f.read(info.end - info.start)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def open_safetensors(path) -> SafetensorsFile:
    return SafetensorsFile(path)


def file_digest(path) -> str:
    from noisefloor.digest import TensorDigest

    digest = TensorDigest()
    with open_safetensors(path) as st:
        for name in sorted(st.tensors):
            info = st.tensors[name]
            data = st.tensor_bytes(name)
            digest.add(name, info.dtype, info.shape, [data], len(data))
    return digest.hexdigest()
