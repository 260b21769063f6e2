"""Corpora, tokenizer, split and the window stream."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from noisefloor.errors import UserError
from noisefloor.train import data as data_module
from noisefloor.train.data import ShuffledStream, Windows, load_corpus
from noisefloor.train.tokenizer import get_tokenizer


def test_builtin_corpus_is_real_english_split_90_5_5():
    corpus = load_corpus("builtin", 50257)
    text = get_tokenizer().decode(corpus.tokens[:2000].tolist())
    assert " the " in text and "Python" in text
    n = len(corpus.tokens)
    assert n > 100_000
    sizes = {name: len(corpus.split(name)) for name in ("train", "val", "test")}
    assert sum(sizes.values()) == n
    assert sizes["train"] == int(n * 0.9) and abs(sizes["val"] - sizes["test"]) <= 1


def test_cut_vocabulary_is_a_valid_bpe_of_the_first_ranks():
    full, cut = get_tokenizer(), get_tokenizer(2048)
    sentence = "Every effort moves you forward, said the interpreter."
    ids = cut.encode(sentence + "<|endoftext|>", allowed_special="all")
    assert max(ids[:-1]) < 2047 and ids[-1] == 2047
    assert cut.decode(ids[:-1]) == sentence
    # tokens the cut keeps are exactly the full BPE's tokens of the same rank
    assert all(cut.decode_single_token_bytes(i) == full.decode_single_token_bytes(i) for i in set(ids[:-1]))


def test_second_load_reuses_the_token_cache(monkeypatch, tmp_path):
    (tmp_path / "a.txt").write_text("one fish two fish\n" * 50)
    first = load_corpus(str(tmp_path / "a.txt"), 50257)

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(data_module, "_tokenize", no_tokenising)
    second = load_corpus(str(tmp_path / "a.txt"), 50257)
    assert np.array_equal(first.tokens, second.tokens) and first.corpus_hash == second.corpus_hash


def test_folder_of_text_files_in_path_order(tmp_path):
    (tmp_path / "b.txt").write_text("second document")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.md").write_text("third document")
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "skip.bin.bak").write_text("ignored")
    corpus = load_corpus(str(tmp_path), 50257)
    text = get_tokenizer().decode(corpus.tokens.tolist())
    assert text == "first document<|endoftext|>second document<|endoftext|>third document<|endoftext|>"


def test_changed_text_changes_the_corpus_hash(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    before = load_corpus(str(tmp_path), 50257).corpus_hash
    (tmp_path / "a.txt").write_text("alpha!")
    assert load_corpus(str(tmp_path), 50257).corpus_hash != before


def test_safetensors_tokens(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16) % 500
    save_file({"tokens": tokens}, str(tmp_path / "t.safetensors"))
    corpus = load_corpus(str(tmp_path / "t.safetensors"), 512)
    assert np.array_equal(np.asarray(corpus.tokens), tokens)
    with pytest.raises(UserError, match="token id 499.*vocab_size is 300"):
        load_corpus(str(tmp_path / "t.safetensors"), 300)
    save_file({"ids": tokens}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(UserError, match="no tensor named 'tokens'"):
        load_corpus(str(tmp_path / "wrong.safetensors"), 512)


def _write_llmc_shard(path, tokens, magic=20240520, version=1, count=None):
    header = np.zeros(256, dtype="<i4")
    header[:3] = [magic, version, len(tokens) if count is None else count]
    with open(path, "wb") as handle:
        handle.write(header.tobytes())
        handle.write(np.asarray(tokens, dtype="<u2").tobytes())


def test_llmc_shards_folder_and_glob_read_as_one_stream(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    _write_llmc_shard(shards / "d_000.bin", np.arange(0, 300))
    _write_llmc_shard(shards / "d_001.bin", np.arange(300, 700))
    for spec in (str(shards), str(shards / "d_*.bin")):
        corpus = load_corpus(spec, 50257)
        assert len(corpus.tokens) == 700
        assert np.array_equal(np.asarray(corpus.tokens[250:350]), np.arange(250, 350))
        windows = Windows(corpus.split("train"), 10, "train", spec)
        x, y = windows.batch(np.array([29]))  # crosses the shard boundary at 300
        assert np.array_equal(x[0], np.arange(290, 300 + 0)) and np.array_equal(y[0], np.arange(291, 301))


@pytest.mark.parametrize("kwargs,message", [
    ({"magic": 123}, "magic number 123"),
    ({"version": 2}, "version 2"),
    ({"count": 5000}, "header says 5000 tokens"),
])
def test_corrupt_llmc_shard_is_named(tmp_path, kwargs, message):
    _write_llmc_shard(tmp_path / "bad.bin", np.arange(100), **kwargs)
    with pytest.raises(UserError, match=message):
        load_corpus(str(tmp_path / "bad.bin"), 50257)


def test_missing_data_and_context_longer_than_the_data(tmp_path):
    with pytest.raises(UserError, match="data not found"):
        load_corpus(str(tmp_path / "nope.txt"), 50257)
    (tmp_path / "short.txt").write_text("a few words only")
    corpus = load_corpus(str(tmp_path / "short.txt"), 50257)
    with pytest.raises(UserError, match="test split has .* fewer than context_length"):
        Windows(corpus.split("test"), 64, "test", "short.txt")


def test_windows_shift_targets_by_one_token():
    tokens = np.arange(100, dtype=np.uint16)
    windows = Windows(tokens, 8, "train", "x")
    assert len(windows) == (100 - 1) // 8
    x, y = windows.batch(np.array([0, 3]))
    assert np.array_equal(x[1], np.arange(24, 32)) and np.array_equal(y[1], np.arange(25, 33))


def test_stream_visits_every_window_once_per_epoch_and_is_seed_dependent():
    windows = Windows(np.arange(1000, dtype=np.uint16), 9, "train", "x")
    n = len(windows)
    stream = ShuffledStream(windows, data_seed=5)
    x, _ = stream.take(0, n)
    starts = sorted(int(row[0]) // 9 for row in x)
    assert starts == list(range(n))
    again, _ = ShuffledStream(windows, data_seed=5).take(0, n)
    other, _ = ShuffledStream(windows, data_seed=6).take(0, n)
    assert np.array_equal(x, again) and not np.array_equal(x, other)
    # the second epoch is another permutation, and reading from the middle gives the same windows
    epoch2, _ = stream.take(n, n)
    assert not np.array_equal(epoch2, x)
    middle, _ = ShuffledStream(windows, data_seed=5).take(n + 3, 4)
    assert np.array_equal(middle, epoch2[3:7])


def test_missing_bpe_file_is_one_clear_line(monkeypatch):
    import tiktoken

    from noisefloor.train import tokenizer

    def offline(name):
        raise ConnectionError("no network")

    tokenizer._base_encoding.cache_clear()
    tokenizer.get_tokenizer.cache_clear()
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    try:
        with pytest.raises(UserError, match="TIKTOKEN_CACHE_DIR"):
            get_tokenizer()
    finally:
        tokenizer._base_encoding.cache_clear()
        tokenizer.get_tokenizer.cache_clear()
