"""What noisefloor reads back is checked against the digest recorded when it was written:
the token cache and the resumable checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO, run_cli
from noisefloor.train import data as data_module
from noisefloor.train.data import load_corpus, tokens_digest


def _cache_file(corpus_hash: str) -> "Path":
    (path,) = data_module.cache_dir().glob(f"tokens-{corpus_hash[7:23]}-*.npy")
    return path


def _flip_last_token_bit(path) -> None:
    """One flipped bit in the last token: the test split, which decides the test loss."""
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.fixture
def text_corpus(tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("The quick brown fox jumps over the lazy dog. " * 400)
    clean = load_corpus(str(source), 50257)
    return source, np.array(clean.tokens), clean


@pytest.mark.parametrize("damage", ["flip", "truncate", "digest record lost"])
def test_a_damaged_token_cache_is_rebuilt_from_the_source_with_a_line(text_corpus, capsys, damage):
    source, clean_tokens, clean = text_corpus
    cache = _cache_file(clean.corpus_hash)
    if damage == "flip":
        _flip_last_token_bit(cache)
    elif damage == "truncate":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    else:
        cache.with_suffix(".json").unlink()
    capsys.readouterr()
    again = load_corpus(str(source), 50257)
    err = capsys.readouterr().err
    assert np.array_equal(np.asarray(again.tokens), clean_tokens)
    assert again.tokens_digest == clean.tokens_digest == tokens_digest(clean_tokens)
    assert str(cache) in err and "rebuilding" in err and len(err.strip().splitlines()) == 1
    # rebuilt: the next load trusts the cache again and says nothing
    load_corpus(str(source), 50257)
    assert capsys.readouterr().err == ""


def test_an_unwritable_token_cache_still_trains_on_the_right_tokens(text_corpus, capsys, monkeypatch, tmp_path):
    source, clean_tokens, _ = text_corpus
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("NOISEFLOOR_CACHE_DIR", str(blocked))
    corpus = load_corpus(str(source), 50257)
    assert np.array_equal(np.asarray(corpus.tokens), clean_tokens)
    err = capsys.readouterr().err
    assert "cannot write the token cache" in err and len(err.strip().splitlines()) == 1


def test_a_flipped_cache_bit_never_reaches_training_and_the_manifest_records_the_tokens(micro_config, tmp_path, capsys):
    """Before: one flipped test-split bit in the cache gave another test loss and the same manifest."""
    from noisefloor.train import trainer

    config = micro_config.replace(train={"steps": 2, "checkpoint_interval": 0, "eval_interval": 0})
    clean = trainer.train(config, tmp_path / "clean")
    corpus = load_corpus("builtin", config.model.vocab_size)
    clean_digest = tokens_digest(np.array(corpus.tokens))
    _flip_last_token_bit(_cache_file(corpus.corpus_hash))
    code, _, err = run_cli(capsys, "train", "--config", REPO / "training" / "micro.toml", "--set", "train.steps=2",
                           "--set", "train.checkpoint_interval=0", "--set", "train.eval_interval=0",
                           "--out", tmp_path / "flipped", "--quiet")
    assert code == 0 and "rebuilding" in err
    flipped = json.loads((tmp_path / "flipped" / "result.json").read_text())
    assert flipped["test_loss"] == clean["test_loss"]
    manifests = [json.loads((tmp_path / run / "manifest.json").read_text())["corpus"] for run in ("clean", "flipped")]
    assert manifests[0] == manifests[1]
    assert manifests[0]["tokens_digest"] == clean_digest
