"""Loss on a fixed split: every window (or the first `eval_windows`), token-weighted."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from noisefloor import config as config_module
from noisefloor.config import RunConfig
from noisefloor.errors import UserError
from noisefloor.rundir import RunDir
from noisefloor.train import determinism
from noisefloor.train.data import Windows, prepare_data
from noisefloor.train.devices import resolve_device
from noisefloor.train.model import attention_backends, book_state, build_model, load_state, place_on
from noisefloor.train.state import WEIGHT_DTYPES, load_tensors, save_tensors

AUTOCAST_DTYPES = {"amp-fp16": torch.float16, "amp-bf16": torch.bfloat16}


@contextmanager
def autocast(device: torch.device, precision: str):
    """The run's precision and, on CUDA, its pinned attention kernels, around a forward pass."""
    dtype = AUTOCAST_DTYPES.get(precision)
    with attention_backends(device), (torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()):
        yield


def logits_for_loss(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits go to float32 for the cross-entropy; float32 and float64 stay as they are
    (a float64 model, as the tests use to compare two computations, keeps float64 down to the loss)."""
    return logits.float() if logits.dtype in AUTOCAST_DTYPES.values() else logits


@torch.no_grad()
def split_loss(model: torch.nn.Module, windows: Windows, batch_size: int, device: torch.device, precision: str) -> float:
    """Mean cross-entropy in nats per token over the split's windows, summed in float64."""
    was_training = model.training
    model.eval()
    total = 0.0
    tokens = 0
    try:
        for start in range(0, len(windows), batch_size):
            indices = np.arange(start, min(start + batch_size, len(windows)))
            inputs, targets = windows.batch(indices)
            x = torch.from_numpy(inputs).to(device)
            y = torch.from_numpy(targets).to(device)
            with autocast(device, precision):
                logits = model(x)
            loss = F.cross_entropy(logits_for_loss(logits).flatten(0, 1), y.flatten(), reduction="sum")
            total += float(loss.double())
            tokens += y.numel()
    finally:
        model.train(was_training)
    return total / tokens


def resolve_weights(target: str, config_path: str | None) -> tuple[RunConfig, Path]:
    """A run directory (its config and final weights) or a .safetensors file (with --config,
    or the config.json of the run directory it sits in)."""
    path = Path(target)
    if path.is_dir():
        weights = RunDir(path).final_weights
        if not weights.exists():
            raise UserError(f"{path}: no {weights.name} (the run has not finished; resume it with noisefloor train --resume)")
        config_file = Path(config_path) if config_path else RunDir(path).config
    elif path.is_file():
        weights = path
        config_file = Path(config_path) if config_path else RunDir(path.parent).config
        if not config_path and not config_file.exists():
            raise UserError(f"{path}: no config.json beside it; pass --config with the model's config (a file, "
                            "a preset name or the blog's run folder)")
    else:
        raise UserError(f"not found: {path} (expected a run directory or a .safetensors file)")
    return config_module.load(config_file), weights


def load_model(config: RunConfig, weights: Path, device: torch.device) -> torch.nn.Module:
    tensors = load_tensors(weights, WEIGHT_DTYPES)  # refused before a model is built for it
    model = build_model(config.model, config.train.init_seed)
    load_state(model, tensors, str(weights))
    return place_on(model, device).eval()


def evaluate(target: str, config_path: str | None = None, split: str = "test") -> dict:
    """The loss of saved weights on the fixed split, exactly as the trainer computes it."""
    config, weights = resolve_weights(target, config_path)
    determinism.enable_deterministic_mode(config.train.threads)
    device = resolve_device(config.train.device)
    model = load_model(config, weights, device)  # a bad weights file is refused before the data is read
    data = prepare_data(config, training=False)
    windows = data.test if split == "test" else data.val
    loss = split_loss(model, windows, config.train.microbatch_size, device, config.train.precision)
    return {"weights": str(weights), "split": split, "loss": loss, "windows": len(windows),
            "tokens": len(windows) * config.model.context_length}


EXPORT_FORMATS = ("book",)


def export(target: str, to: str, out: str | None = None, config_path: str | None = None) -> Path:
    """Write saved weights in another program's layout; 'book': the state dict of the book's GPTModel
    (masks included), which `load_state_dict(..., strict=True)` accepts. Returns the file written."""
    if to not in EXPORT_FORMATS:
        raise UserError(f"--to {to}: unknown format (formats: {', '.join(EXPORT_FORMATS)})")
    config, weights = resolve_weights(target, config_path)
    destination = Path(out) if out else weights.with_name(f"{weights.stem}.{to}.safetensors")
    if destination.resolve() == weights.resolve():
        raise UserError(f"--out {destination}: that is the file being exported; choose another name")
    model = load_model(config, weights, torch.device("cpu"))  # the same dtype check as eval
    save_tensors(destination, book_state(model))
    return destination
