"""Saving and restoring weights and full training state, without pickle.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` holding
- `model.safetensors`: the weights under the book's names;
- `state.safetensors`: optimizer moments (`optim.<param>.<key>`), RNG states
  (`rng.*`) and, in its one metadata key, JSON with the step, the scalar RNG
  state, the optimizer hyper-parameters and the GradScaler state.
It is written to a temporary folder and renamed into place, so a folder named
`step-*` is always complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from noisefloor import atomic
from noisefloor.checkpoints import open_safetensors, show_name
from noisefloor.digest import TensorDigest
from noisefloor.errors import UserError

METADATA_KEY = "noisefloor"
CHECKPOINT_PREFIX = "step-"
DIGEST_FILE = "digest.json"

SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Atomic safetensors write; metadata (if any) is one key of JSON."""
    contiguous = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    meta = {METADATA_KEY: json.dumps(metadata, sort_keys=True)} if metadata is not None else None
    with atomic.atomic_path(path) as tmp:
        try:
            save_file(contiguous, str(tmp), metadata=meta)
        except SafetensorError as exc:  # safetensors reports a full disk as its own error: make it the OSError it is
            code = re.search(r"os error (\d+)", str(exc))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


WEIGHT_DTYPES = ("F32", "F16", "BF16", "F64")  # what a model's floating-point parameters can take without losing meaning


def load_tensors(path: Path, dtypes: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Validate the header (torch-free) before letting safetensors read the file; with `dtypes`, refuse any
    other tensor dtype (never cast integers, booleans, complex or 8-bit floats into weights)."""
    with open_safetensors(path) as st:
        for name, info in st.tensors.items():
            if dtypes is not None and info.dtype not in dtypes and not name.endswith(".att.mask"):
                raise UserError(f"{path}: tensor {show_name(name)} is {info.dtype}; model weights must be "
                                f"{', '.join(dtypes)} (noisefloor does not cast them)")
    return load_file(str(path))


def state_digest(tensors: dict[str, torch.Tensor]) -> TensorDigest:
    """The project digest (see noisefloor.digest) of in-memory tensors."""
    digest = TensorDigest()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        flat = tensor.reshape(-1)  # a 0-d tensor (an optimizer step count) cannot be viewed as bytes
        raw = flat.view(torch.uint8) if tensor.dtype != torch.bool else flat.to(torch.uint8)
        data = raw.numpy().data if tensor.numel() else b""
        digest.add(name, SAFETENSORS_DTYPES[tensor.dtype], tuple(tensor.shape), [data], tensor.numel() * tensor.element_size())
    return digest


# ---------------------------------------------------------------- full training state


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Optimizer state keyed by parameter name, plus its param groups as JSON."""
    state = optimizer.state_dict()
    tensors = {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            tensors[f"optim.{names[index]}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    groups = [{k: v for k, v in group.items()} for group in state["param_groups"]]
    return tensors, groups


def restore_optimizer(optimizer: torch.optim.Optimizer, names: list[str], tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    index_of = {name: i for i, name in enumerate(names)}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        param_name, _, field = key[len("optim."):].rpartition(".")
        per_param.setdefault(index_of[param_name], {})[field] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX))


def checkpoint_digests(model_tensors: dict[str, torch.Tensor], state_tensors: dict[str, torch.Tensor],
                        metadata: str, model_digest: TensorDigest | None = None) -> dict[str, str]:
    """`model_digest`: the weights' digest when the caller has it already (a digest step that is also a checkpoint)."""
    return {"model": (model_digest or state_digest(model_tensors)).hexdigest(), "state": state_digest(state_tensors).hexdigest(),
            "metadata": "sha256:" + hashlib.sha256(metadata.encode()).hexdigest()}


def write_checkpoint(run_dir: Path, step: int, model_tensors: dict[str, torch.Tensor],
                     state_tensors: dict[str, torch.Tensor], state_json: dict[str, Any], keep: int,
                     model_digest: TensorDigest | None = None) -> Path:
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = folder / f".tmp-{CHECKPOINT_PREFIX}{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # off the device once: saving and digesting below then read the same host copies (on CUDA, weights and
    # both AdamW moments would otherwise cross to the host twice per checkpoint)
    model_tensors, state_tensors = ({name: t.detach().to("cpu").contiguous() for name, t in group.items()}
                                    for group in (model_tensors, state_tensors))
    try:
        save_tensors(tmp / "model.safetensors", model_tensors)
        save_tensors(tmp / "state.safetensors", state_tensors, metadata=state_json)
        metadata = json.dumps(state_json, sort_keys=True)  # exactly the string save_tensors stored
        atomic.write_json(tmp / DIGEST_FILE, checkpoint_digests(model_tensors, state_tensors, metadata, model_digest))
    except OSError:  # a full disk: give back the space the partial checkpoint took
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic.fsync_dir(folder)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class CorruptCheckpoint(UserError):
    """A checkpoint that cannot be read, or whose tensors no longer match the digests written with them."""


def read_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Model tensors, state tensors and state JSON, each checked against `digest.json` before it is trusted."""
    state_path, digest_path = folder / "state.safetensors", folder / DIGEST_FILE
    try:
        with open_safetensors(state_path) as st:
            raw = (st.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise CorruptCheckpoint(f"{state_path}: no '{METADATA_KEY}' metadata; not a noisefloor checkpoint")
        try:
            recorded = json.loads(digest_path.read_text())
        except FileNotFoundError:
            raise CorruptCheckpoint(f"{digest_path} is missing (a checkpoint of an older noisefloor, or damaged)") from None
        model_tensors, state_tensors = load_tensors(folder / "model.safetensors"), load_tensors(state_path)
        saved = json.loads(raw)
    except CorruptCheckpoint:
        raise
    except UserError as exc:
        raise CorruptCheckpoint(str(exc)) from None
    except (OSError, ValueError, RecursionError) as exc:  # unreadable file, bad JSON (ValueError), torn data
        raise CorruptCheckpoint(f"{folder}: cannot be read ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(saved, dict) or not isinstance(recorded, dict):
        raise CorruptCheckpoint(f"{folder}: its metadata or {DIGEST_FILE} is not a JSON object")
    actual = checkpoint_digests(model_tensors, state_tensors, raw)
    changed = [name for name, digest in actual.items() if recorded.get(name) != digest]
    if changed:
        files = {"model": "model.safetensors", "state": "state.safetensors", "metadata": "state.safetensors metadata"}
        raise CorruptCheckpoint(f"{folder}: {', '.join(files[c] for c in changed)} no longer match the digest "
                                "recorded when the checkpoint was written")
    return model_tensors, state_tensors, saved


def clean_partial_checkpoints(run_dir: Path) -> None:
    """Remove what a killed writer left: partial checkpoint folders and atomic writes' temporary files
    (`.model.safetensors.*.tmp`). Called under the run's lock, so no writer is using them."""
    folder = run_dir / "checkpoints"
    if folder.is_dir():
        for tmp in folder.glob(f".tmp-{CHECKPOINT_PREFIX}*"):
            shutil.rmtree(tmp, ignore_errors=True)
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
