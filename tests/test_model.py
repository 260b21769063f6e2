"""The model is the book's GPTModel: same names, same function, book checkpoints load."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from conftest import run_cli
from noisefloor import config as config_module
from noisefloor.train.model import build_model


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
        self.att = BookAttention(c.emb_dim, c.context_length, c.n_heads, c.qkv_bias)
        self.ff = nn.Module()
        self.ff.layers = nn.Sequential(nn.Linear(c.emb_dim, 4 * c.emb_dim), BookGELU(), nn.Linear(4 * c.emb_dim, c.emb_dim))
        self.norm1, self.norm2 = BookLayerNorm(c.emb_dim), BookLayerNorm(c.emb_dim)

    def forward(self, x):
        x = x + self.att(self.norm1(x))
        return x + self.ff.layers(self.norm2(x))


class BookGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.tok_emb, self.pos_emb = nn.Embedding(c.vocab_size, c.emb_dim), nn.Embedding(c.context_length, c.emb_dim)
        self.trf_blocks = nn.Sequential(*[BookBlock(c) for _ in range(c.n_layers)])
        self.final_norm = BookLayerNorm(c.emb_dim)
        self.out_head = nn.Linear(c.emb_dim, c.vocab_size, bias=False)

    def forward(self, idx):
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1]))
        return self.out_head(self.final_norm(self.trf_blocks(x)))


def test_sequential_init_is_the_books_global_draw(micro_config):
    """Sequential init draws exactly what the book's GPTModel draws after torch.manual_seed; adding
    QKV bias then shifts every later draw (what per-parameter init avoids)."""
    from noisefloor.train.model import export_state

    config = micro_config.replace(model={"init_scheme": "sequential"})
    torch.manual_seed(42)
    book = BookGPT(config.model).state_dict()
    torch.manual_seed(42)
    ours = export_state(build_model(config.model, 42))
    assert ours.keys() == {k for k in book if not k.endswith(".att.mask")}
    assert all(torch.equal(ours[k], book[k]) for k in ours)
    torch.manual_seed(42)
    with_bias = export_state(build_model(config.replace(model={"qkv_bias": True}).model, 42))
    assert not torch.equal(ours["trf_blocks.1.ff.layers.0.weight"], with_bias["trf_blocks.1.ff.layers.0.weight"])


@pytest.fixture
def book_checkpoint(micro_config, tmp_path):
    torch.manual_seed(0)
    book = BookGPT(micro_config.model.__class__(**{**micro_config.model.__dict__, "qkv_bias": True})).eval()
    path = tmp_path / "book.safetensors"
    save_file({k: v.contiguous() for k, v in book.state_dict().items()}, str(path))
    return book, path


@pytest.mark.kernels
def test_names_match_the_book_and_book_checkpoints_load(micro_config, book_checkpoint):
    book, path = book_checkpoint
    cfg = micro_config.replace(model={"qkv_bias": True})
    ours = build_model(cfg.model, 1)
    book_names = {k for k in book.state_dict() if not k.endswith(".att.mask")}
    assert set(ours.state_dict()) == book_names

    from noisefloor.train.evaluate import load_model

    loaded = load_model(cfg, path, torch.device("cpu"))
    idx = torch.randint(0, cfg.model.vocab_size, (2, cfg.model.context_length))
    # Two implementations of one function (the book's attention vs ours): compared in float64, where
    # their rounding (~1e-15) is far below assert_close's float64 tolerance (1e-7) on any CPU kernel.
    with torch.no_grad():
        torch.testing.assert_close(loaded.double()(idx), book.double()(idx))


def test_eval_of_a_book_checkpoint_and_vocab_mismatch(micro_config, book_checkpoint, tmp_path, capsys):
    _, path = book_checkpoint
    config_path = tmp_path / "micro-bias.json"
    import json

    config_path.write_text(json.dumps(micro_config.replace(model={"qkv_bias": True}).to_dict()))
    code, out, _ = run_cli(capsys, "eval", path, "--config", config_path)
    assert code == 0 and out.startswith("test loss ")

    config_path.write_text(json.dumps(micro_config.replace(model={"qkv_bias": True, "vocab_size": 1024}).to_dict()))
    code, _, err = run_cli(capsys, "eval", path, "--config", config_path)
    assert code == 2 and "vocabulary of 512 tokens" in err and "vocab_size is 1024" in err
    assert len(err.strip().splitlines()) == 1


def test_a_tied_config_names_what_an_untied_file_lacks(micro_config, tmp_path, capsys):
    import json

    weights = tmp_path / "head-only.safetensors"
    save_file({"out_head.weight": torch.zeros(512, 32)}, str(weights))
    config_path = tmp_path / "tied.json"
    config_path.write_text(json.dumps(micro_config.replace(model={"tie_weights": True}).to_dict()))
    code, _, err = run_cli(capsys, "eval", weights, "--config", config_path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "does not match the config's model" in err and "unexpected out_head.weight" in err


def test_tied_weights_are_one_tensor_saved_once(micro_config):
    model = build_model(micro_config.replace(model={"tie_weights": True}).model, 1)
    assert model.out_head.weight is model.tok_emb.weight
    from noisefloor.train.model import export_state

    assert "out_head.weight" not in export_state(model)


def test_parameter_count_of_the_163m_baseline():
    from noisefloor.train.model import GPTModel, count_parameters
    from conftest import REPO

    cfg = config_module.load(REPO / "training" / "gpt2-small-163m.toml")
    with torch.device("meta"):
        model = GPTModel(cfg.model)
    assert count_parameters(model) == 163_009_536


def test_gpt2_init_scales_residual_projections(micro_config):
    cfg = micro_config.replace(model={"init": "gpt2", "emb_dim": 256, "n_heads": 4, "n_layers": 8})
    state = build_model(cfg.model, 3).state_dict()
    assert state["tok_emb.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert state["trf_blocks.0.att.W_query.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert state["trf_blocks.0.att.out_proj.weight"].std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert state["trf_blocks.0.ff.layers.0.bias"].abs().sum().item() == 0.0


@pytest.mark.kernels
@pytest.mark.parametrize("tie", [False, True])
def test_padded_vocabulary_changes_nothing_a_user_sees(micro_config, tie, float64):
    """pad_vocab (used on CUDA) adds zero rows that no token indexes and no logit reaches."""
    import copy

    from noisefloor.train.model import export_state, load_state, pad_vocab

    cfg = micro_config.replace(model={"vocab_size": 500, "tie_weights": tie})
    plain = build_model(cfg.model, 1)
    padded = copy.deepcopy(plain)
    pad_vocab(padded, 64)
    assert padded.tok_emb.weight.shape[0] == 512 and (padded.out_head.weight is padded.tok_emb.weight) == tie
    idx = torch.randint(0, 500, (2, 16))
    plain.eval(), padded.eval()
    logits = padded(idx)
    assert logits.shape[-1] == 500
    torch.testing.assert_close(logits, plain(idx))  # float64: a wider matmul rounds alike to ~1e-15
    logits.sum().backward()
    assert padded.tok_emb.weight.grad[500:].abs().sum() == 0 and padded.out_head.weight.grad[500:].abs().sum() == 0
    exported, original = export_state(padded), export_state(plain)
    assert exported.keys() == original.keys() and all(torch.equal(exported[k], original[k]) for k in original)
    again = build_model(cfg.model, 2)
    pad_vocab(again, 64)
    load_state(again, original, "test")  # a book-shaped checkpoint loads into a padded model
    assert all(torch.equal(export_state(again)[k], original[k]) for k in original)
