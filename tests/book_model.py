"""The book's GPTModel, written out again from its description for the tests (not imported from noisefloor).

Like the book (and the blog's trainer), it takes a dict config, draws its weights
in construction order from the global RNG, keeps a causal `att.mask` buffer per
block, and (the blog's addition) may tie `out_head.weight` to `tok_emb.weight`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BookAttention(nn.Module):
    """Attention written out the way the book does it: explicit mask buffer, softmax, dropout."""

    def __init__(self, d, context, heads, qkv_bias):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.W_query = nn.Linear(d, d, bias=qkv_bias)
        self.W_key = nn.Linear(d, d, bias=qkv_bias)
        self.W_value = nn.Linear(d, d, bias=qkv_bias)
        self.out_proj = nn.Linear(d, d)
        self.register_buffer("mask", torch.triu(torch.ones(context, context), diagonal=1))

    def forward(self, x):
        b, t, d = x.shape
        split = lambda z: z.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x))
        scores = (q @ k.transpose(2, 3)).masked_fill(self.mask.bool()[:t, :t], -torch.inf)
        weights = torch.softmax(scores / self.head_dim**0.5, dim=-1)
        return self.out_proj((weights @ v).transpose(1, 2).contiguous().view(b, t, d))


class BookLayerNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.scale, self.shift = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))

    def forward(self, x):
        mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + 1e-5) + self.shift


class BookGELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


class BookBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["emb_dim"]
        self.att = BookAttention(d, c["context_length"], c["n_heads"], c["qkv_bias"])
        self.ff = nn.Module()
        self.ff.layers = nn.Sequential(nn.Linear(d, 4 * d), BookGELU(), nn.Linear(4 * d, d))
        self.norm1, self.norm2 = BookLayerNorm(d), BookLayerNorm(d)

    def forward(self, x):
        x = x + self.att(self.norm1(x))
        return x + self.ff.layers(self.norm2(x))


class BookGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.tok_emb, self.pos_emb = nn.Embedding(c["vocab_size"], c["emb_dim"]), nn.Embedding(c["context_length"], c["emb_dim"])
        self.trf_blocks = nn.Sequential(*[BookBlock(c) for _ in range(c["n_layers"])])
        self.final_norm = BookLayerNorm(c["emb_dim"])
        self.out_head = nn.Linear(c["emb_dim"], c["vocab_size"], bias=False)
        if c.get("tie_weights", False):
            self.out_head.weight = self.tok_emb.weight

    def forward(self, idx):
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1]))
        return self.out_head(self.final_norm(self.trf_blocks(x)))


def book_config(model_config) -> dict:
    """The book's dict config for a noisefloor ModelConfig."""
    keys = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias", "tie_weights")
    return {key: getattr(model_config, key) for key in keys}
