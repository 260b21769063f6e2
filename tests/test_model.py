"""The model is the book's GPTModel: same names, same function, book checkpoints load."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

from book_model import BookGPT, book_config
from conftest import REPO, run_cli
from noisefloor import config as config_module
from noisefloor.train.model import build_model


def test_sequential_init_is_the_books_global_draw(micro_config):
    """Sequential init draws exactly what the book's GPTModel draws after torch.manual_seed; adding
    QKV bias then shifts every later draw (what per-parameter init avoids)."""
    from noisefloor.train.model import export_state

    config = micro_config.replace(model={"init_scheme": "sequential"})
    torch.manual_seed(42)
    book = BookGPT(book_config(config.model)).state_dict()
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
    book = BookGPT(book_config(micro_config.replace(model={"qkv_bias": True}).model)).eval()
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


@pytest.mark.kernels
def test_a_tied_blog_checkpoint_saved_by_save_model_loads(micro_config, tmp_path, capsys):
    """safetensors.torch.save_model keeps one name of a shared tensor (out_head.weight) and the masks."""
    cfg = micro_config.replace(model={"tie_weights": True})
    torch.manual_seed(3)
    book = BookGPT(book_config(cfg.model)).eval()
    path = tmp_path / "model.safetensors"
    save_model(book, str(path))
    saved = load_file(str(path))
    assert "out_head.weight" in saved and "tok_emb.weight" not in saved and "trf_blocks.1.att.mask" in saved

    from noisefloor.train.evaluate import load_model

    loaded = load_model(cfg, path, torch.device("cpu"))
    assert loaded.out_head.weight is loaded.tok_emb.weight
    idx = torch.randint(0, cfg.model.vocab_size, (2, cfg.model.context_length))
    with torch.no_grad():
        torch.testing.assert_close(loaded.double()(idx), book.double()(idx))  # float64: see the test above
    config_path = tmp_path / "tied.json"
    config_path.write_text(json.dumps(cfg.to_dict()))
    code, out, _ = run_cli(capsys, "eval", path, "--config", config_path)
    assert code == 0 and out.startswith("test loss ")
    untied = tmp_path / "untied.json"
    untied.write_text(json.dumps(micro_config.to_dict()))
    code, _, err = run_cli(capsys, "eval", path, "--config", untied)  # untied config: the file lacks tok_emb.weight
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing tok_emb.weight" in err


@pytest.mark.kernels
@pytest.mark.parametrize("tie", [False, True])
def test_export_to_book_loads_strictly_into_the_books_model(micro_config, tmp_path, capsys, tie):
    """`export --to book` writes what the book's GPTModel.load_state_dict(strict=True) takes, masks included,
    and the book's model then computes our model's logits."""
    from noisefloor.train.model import export_state
    from noisefloor.train.state import save_tensors

    cfg = micro_config.replace(model={"tie_weights": tie, "qkv_bias": True})
    ours = build_model(cfg.model, 5).eval()
    run = tmp_path / "run"
    run.mkdir()
    save_tensors(run / "model.safetensors", export_state(ours))
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    code, out, _ = run_cli(capsys, "export", run, "--to", "book")
    written = run / "model.book.safetensors"
    assert code == 0 and out.strip() == str(written)
    book = BookGPT(book_config(cfg.model)).eval()
    book.load_state_dict(load_file(str(written)), strict=True)
    idx = torch.randint(0, cfg.model.vocab_size, (2, cfg.model.context_length))
    with torch.no_grad():
        torch.testing.assert_close(book.double()(idx), ours.double()(idx))  # float64: two implementations
    # the export verifies identical to our weights once the book's extra tensors are ignored (untied: nothing else differs)
    if not tie:
        code, out, _ = run_cli(capsys, "verify-identical", run / "model.safetensors", written, "--ignore", "*.att.mask")
        assert code == 0, out


def test_eval_of_a_weights_file_with_a_preset_config(micro_config, tmp_path, capsys):
    from noisefloor.train.model import export_state
    from noisefloor.train.state import save_tensors

    weights = tmp_path / "w.safetensors"
    save_tensors(weights, export_state(build_model(micro_config.model, 1)))
    code, out, err = run_cli(capsys, "eval", weights, "--config", "micro")
    assert code == 0 and out.startswith("test loss "), err
    code, _, err = run_cli(capsys, "eval", weights, "--config", "tiny-cpu")
    assert code == 2 and "vocab_size is 2048" in err and len(err.strip().splitlines()) == 1


def test_tied_weights_are_one_tensor_saved_once(micro_config):
    model = build_model(micro_config.replace(model={"tie_weights": True}).model, 1)
    assert model.out_head.weight is model.tok_emb.weight
    from noisefloor.train.model import export_state

    assert "out_head.weight" not in export_state(model)


def test_parameter_count_of_the_163m_baseline():
    from noisefloor.train.model import GPTModel, count_parameters

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
