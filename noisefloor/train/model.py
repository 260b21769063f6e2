"""GPT-2 as in Raschka's "Build a Large Language Model (from Scratch)" `GPTModel`.

Parameter names match the book's (`tok_emb`, `pos_emb`, `trf_blocks.{i}.att.W_query`,
`...ff.layers.{0,2}`, `...norm1.scale`, `final_norm`, `out_head`), so safetensors
checkpoints from book-based trainers load directly. Attention runs through
`F.scaled_dot_product_attention` (causal), so there is no `mask` buffer; book
checkpoints that carry one load all the same, and `book_state` adds them back
for the book's own `GPTModel`.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from noisefloor.checkpoints import show_name
from noisefloor.config import ModelConfig
from noisefloor.errors import UserError
from noisefloor.train.determinism import derive_seed


# On CUDA, attention may use flash, then memory-efficient, then math kernels, in that order: all three
# have deterministic backward passes under torch.use_deterministic_algorithms(True); cuDNN attention
# is left out (it has none). On the CPU the choice is PyTorch's.
CUDA_ATTENTION_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


def attention_backends(device: torch.device):
    """Context pinning the SDPA backends (CUDA); a no-op elsewhere."""
    if device.type != "cuda":
        return nullcontext()
    return sdpa_kernel([getattr(SDPBackend, name) for name in CUDA_ATTENTION_BACKENDS], set_priority=True)


class LayerNorm(nn.Module):
    def __init__(self, emb_dim: int):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class MultiHeadAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.emb_dim
        self.n_heads = cfg.n_heads
        self.drop_rate = cfg.drop_rate
        self.W_query = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.W_key = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.W_value = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        heads = (b, t, self.n_heads, d // self.n_heads)
        q = self.W_query(x).view(heads).transpose(1, 2)
        k = self.W_key(x).view(heads).transpose(1, 2)
        v = self.W_value(x).view(heads).transpose(1, 2)
        dropout = self.drop_rate if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return self.out_proj(context.transpose(1, 2).reshape(b, t, d))


class GELU(nn.Module):
    """The tanh approximation, as GPT-2 and the book use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim), GELU(), nn.Linear(4 * cfg.emb_dim, cfg.emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.att = MultiHeadAttention(cfg)
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class GPTModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop_emb(self.tok_emb(idx) + self.pos_emb(positions))
        logits = self.out_head(self.final_norm(self.trf_blocks(x)))
        return logits[..., : self.cfg.vocab_size] if logits.shape[-1] != self.cfg.vocab_size else logits


VOCAB_ROWS = ("tok_emb.weight", "out_head.weight")
# Vocabulary rows padded to a multiple of this on CUDA (50257 -> 50304): tensor-core friendly
# matmul shapes for the output head; checkpoints keep the book's shapes (see pad_vocab).
CUDA_VOCAB_MULTIPLE = 64


def pad_vocab(model: GPTModel, multiple: int) -> None:
    """Give tok_emb/out_head zero rows up to a multiple of `multiple` (matmul-friendly shapes on GPUs).

    The extra rows are never indexed, their logits are sliced off before the
    loss, so they get no gradient and stay zero under AdamW; `export_state`
    drops them, so checkpoints keep the book's shapes. Applied after
    initialisation: the initial weights are those of the unpadded model.
    """
    vocab = model.cfg.vocab_size
    padded = -(-vocab // multiple) * multiple
    if padded == vocab:
        return
    with torch.no_grad():
        for module in (model.tok_emb, model.out_head):
            if module is model.out_head and model.cfg.tie_weights:
                model.out_head.weight = model.tok_emb.weight
                continue
            grown = torch.zeros(padded, model.cfg.emb_dim, dtype=module.weight.dtype, device=module.weight.device)
            grown[:vocab] = module.weight
            module.weight = nn.Parameter(grown)


# ---------------------------------------------------------------- initialisation


def _is_residual_projection(name: str) -> bool:
    return name.endswith("att.out_proj.weight") or name.endswith("ff.layers.2.weight")


def _fill(name: str, shape: torch.Size, cfg: ModelConfig, generator: torch.Generator | None) -> torch.Tensor:
    """The initial value of one parameter under `cfg.init`, drawn from `generator` (None: global RNG)."""
    out = torch.empty(shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "scale":
        return out.fill_(1.0)
    if leaf == "shift":
        return out.zero_()
    is_embedding = name.startswith(("tok_emb.", "pos_emb."))
    if cfg.init == "gpt2":
        if leaf == "bias":
            return out.zero_()
        std = 0.02 / math.sqrt(2 * cfg.n_layers) if _is_residual_projection(name) else 0.02
        return out.normal_(0.0, std, generator=generator)
    # pytorch-default: what nn.Embedding / nn.Linear.reset_parameters draw
    if is_embedding:
        return out.normal_(0.0, 1.0, generator=generator)
    fan_in = shape[-1] if leaf == "weight" else _fan_in_of_bias(name, cfg)
    bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) reduces to this bound
    return out.uniform_(-bound, bound, generator=generator)


def _fan_in_of_bias(name: str, cfg: ModelConfig) -> int:
    return 4 * cfg.emb_dim if name.endswith("ff.layers.2.bias") else cfg.emb_dim


def build_model(cfg: ModelConfig, init_seed: int) -> GPTModel:
    """Build and initialise on the CPU.

    per-parameter: the module is built on the meta device (no global draw at
    all) and every tensor comes from its own generator seeded by
    (init_seed, name), so structural changes (qkv_bias, tie_weights) leave
    every other initial tensor bit-identical.
    sequential: the classic construction-order draw from the global RNG,
    seeded by the caller with init_seed.
    """
    if cfg.init_scheme == "per-parameter":
        with torch.device("meta"):
            model = GPTModel(cfg)
        model.to_empty(device="cpu")
        if cfg.tie_weights:  # to_empty re-creates parameters, so re-tie
            model.out_head.weight = model.tok_emb.weight
        with torch.no_grad():
            for name, param in model.named_parameters():
                generator = torch.Generator().manual_seed(derive_seed("init", init_seed, name))
                param.copy_(_fill(name, param.shape, cfg, generator))
        return model
    model = GPTModel(cfg)
    if cfg.init == "gpt2":
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(_fill(name, param.shape, cfg, None))
    return model


# ---------------------------------------------------------------- state dicts


def place_on(model: GPTModel, device: torch.device) -> GPTModel:
    """Move a model where it runs, padded on CUDA. Training and `eval` both place models
    here, so `eval` computes the trainer's test loss with the same shapes and kernels."""
    if device.type == "cuda":
        pad_vocab(model, CUDA_VOCAB_MULTIPLE)
    return model.to(device)


def export_state(model: GPTModel) -> dict[str, torch.Tensor]:
    """The tensors to save: book names, tied weights stored once (as tok_emb.weight)."""
    state = {name: t.detach() for name, t in model.state_dict().items()}
    vocab = model.cfg.vocab_size
    for name in VOCAB_ROWS:
        if name in state and state[name].shape[0] != vocab:  # pad_vocab's extra rows
            state[name] = state[name][:vocab]
    if model.cfg.tie_weights:
        state.pop("out_head.weight", None)
    return state


def book_state(model: GPTModel) -> dict[str, torch.Tensor]:
    """The state dict of the book's GPTModel for these weights: every parameter under its own name
    (a tied matrix under both, as separate tensors) and each block's causal `att.mask` buffer, so
    `GPTModel(cfg).load_state_dict(state, strict=True)` takes it."""
    state = export_state(model)
    if model.cfg.tie_weights:
        state["out_head.weight"] = state["tok_emb.weight"].clone()
    context = model.cfg.context_length
    mask = torch.triu(torch.ones(context, context), diagonal=1)
    for block in range(model.cfg.n_layers):
        state[f"trf_blocks.{block}.att.mask"] = mask.clone()
    return state


def load_state(model: GPTModel, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load book-named tensors, checking names and shapes with a clear message."""
    tensors = {k: v for k, v in tensors.items() if not k.endswith(".att.mask")}
    if model.cfg.tie_weights and "out_head.weight" in tensors and "tok_emb.weight" in tensors:
        if not torch.equal(tensors["out_head.weight"], tensors["tok_emb.weight"]):
            raise UserError(f"{source}: the config ties weights but out_head.weight differs from tok_emb.weight")
        tensors.pop("out_head.weight")
    elif model.cfg.tie_weights and "out_head.weight" in tensors:
        # safetensors.torch.save_model keeps one name of a shared tensor, the first in sorted order: out_head.weight
        tensors["tok_emb.weight"] = tensors.pop("out_head.weight")
    expected = export_state(model)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if "tok_emb.weight" in tensors and tensors["tok_emb.weight"].shape[0] != model.cfg.vocab_size:
        raise UserError(
            f"{source}: vocabulary of {tensors['tok_emb.weight'].shape[0]} tokens, but [model] vocab_size is "
            f"{model.cfg.vocab_size}; evaluate with the run's own config"
        )
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
        if extra:  # names from the file: escaped, so a newline or a terminal code in one cannot reach the terminal
            parts.append(f"unexpected {', '.join(show_name(n) for n in extra[:3])}{' …' if len(extra) > 3 else ''}")
        raise UserError(f"{source}: does not match the config's model ({'; '.join(parts)})")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise UserError(
                f"{source}: tensor {name} has shape {list(tensor.shape)}, the config's model wants {list(expected[name].shape)}"
            )
    with torch.no_grad():
        for name, param in model.state_dict().items():
            if name in tensors:
                param[: tensors[name].shape[0]].copy_(tensors[name])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
