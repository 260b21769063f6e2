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


# ---------------------------------------------------------------- datasets that come split: blog, llm.c, nanoGPT


def _tokens(lo, hi, n, seed=0):
    return np.random.default_rng(seed).integers(lo, hi, n).astype(np.uint16)


def _trained_tokens(corpus, context=16, windows=None):
    """Every token the trainer's stream reads in one epoch of the train split."""
    train = Windows(corpus.split("train"), context, "train", "x")
    x, y = ShuffledStream(train, data_seed=1).take(0, windows or len(train))
    return np.concatenate([x.ravel(), y.ravel()])


def test_the_blogs_dataset_folder_uses_its_splits_as_given(tmp_path):
    """train.safetensors is the train split, whole; validation.safetensors the val split and the test loss."""
    train, validation = _tokens(0, 256, 3000), _tokens(256, 512, 700, seed=1)
    save_file({"tokens": train}, str(tmp_path / "train.safetensors"))
    save_file({"tokens": validation}, str(tmp_path / "validation.safetensors"))
    corpus = load_corpus(str(tmp_path), 512)
    assert np.array_equal(np.asarray(corpus.split("train")), train)
    assert np.array_equal(np.asarray(corpus.split("val")), validation)
    assert np.array_equal(np.asarray(corpus.split("test")), validation)
    assert _trained_tokens(corpus).max() < 256  # no validation token is ever trained on
    assert corpus.describe()["split_files"] == {"train": ["train.safetensors"], "val": ["validation.safetensors"],
                                                "test": ["validation.safetensors"]}


def test_llmc_val_shard_is_validation_and_never_trained_on(tmp_path):
    shards = tmp_path / "fineweb10B"
    shards.mkdir()
    _write_llmc_shard(shards / "fineweb_val_000000.bin", _tokens(40000, 50257, 900))
    _write_llmc_shard(shards / "fineweb_train_000001.bin", _tokens(0, 40000, 1500, seed=1))
    _write_llmc_shard(shards / "fineweb_train_000002.bin", _tokens(0, 40000, 1500, seed=2))
    for spec in (str(shards), str(shards / "*.bin")):
        corpus = load_corpus(spec, 50257)
        assert len(corpus.split("train")) == 3000 and len(corpus.split("val")) == 900
        assert np.asarray(corpus.split("val")).min() >= 40000 and np.asarray(corpus.split("test")).min() >= 40000
        assert _trained_tokens(corpus).max() < 40000
    with pytest.raises(UserError, match="only validation shards"):
        load_corpus(str(shards / "*_val_*.bin"), 50257)


@pytest.mark.parametrize("suffix", [".bin", ".npy"])
def test_nanogpt_train_and_val_files_load_as_their_splits(tmp_path, suffix):
    train, val = _tokens(0, 300, 2000), _tokens(300, 512, 500, seed=1)
    if suffix == ".bin":  # nanoGPT's prepare.py: raw uint16, no header
        train.tofile(tmp_path / "train.bin")
        val.tofile(tmp_path / "val.bin")
    else:  # .npy of any integer type whose ids fit
        np.save(tmp_path / "train.npy", train.astype(np.int64))
        np.save(tmp_path / "val.npy", val.astype(np.int32))
    corpus = load_corpus(str(tmp_path), 512)
    assert np.array_equal(np.asarray(corpus.split("train")), train) and np.array_equal(np.asarray(corpus.split("val")), val)
    assert _trained_tokens(corpus).max() < 300
    single = load_corpus(str(tmp_path / f"train{suffix}"), 512)  # one file: one stream, cut 90/5/5
    assert np.array_equal(np.asarray(single.tokens), train) and len(single.split("val")) == 100


@pytest.mark.parametrize("files,message", [
    ({"train.bin": b"\x01\x00\x02\x00"}, "has train.bin but no val.* or validation.*"),
    ({"train.bin": b"\x01\x00", "val.bin": b"\x01\x00\x02"}, "val.bin: 3 bytes, not a whole number of tokens"),
    ({"train.npy": np.zeros((4, 4), np.uint16), "val.npy": np.zeros(4, np.uint16)}, "expected a 1-D integer array"),
    ({"train.npy": np.zeros(4, np.float32), "val.npy": np.zeros(4, np.uint16)}, "a float32 array of shape [4]"),
    ({"train.npy": b"not numpy at all", "val.npy": np.zeros(4, np.uint16)}, "not a NumPy .npy array"),
    ({"tokens.bin": np.arange(600, dtype=np.uint16).tobytes()}, "magic number 65536, expected 20240520"),
    ({"train.safetensors": {"ids": np.zeros(4, np.uint16)}, "validation.safetensors": {"tokens": np.zeros(4, np.uint16)}},
     "no tensor named 'tokens' (found: ids); expected a 1-D uint16 tensor"),
])
def test_a_wrong_token_file_says_what_it_is_and_what_was_expected(tmp_path, capsys, files, message):
    from conftest import run_cli

    for name, content in files.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        elif isinstance(content, dict):
            save_file(content, str(tmp_path / name))
        else:
            np.save(tmp_path / name, content)
    code, _, err = run_cli(capsys, "train", "--config", "micro", "--set", f"train.data={tmp_path}", "--out", tmp_path / "run")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_the_163m_preset_on_the_builtin_corpus_points_at_real_data(capsys, tmp_path):
    from conftest import run_cli

    code, _, err = run_cli(capsys, "train", "--config", "gpt2-small-163m", "--out", tmp_path / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    assert "would repeat the built-in corpus's" in err and "point train.data at real data" in err


def test_a_blog_run_folder_trains_on_its_dataset_folder_from_the_blogs_initial_weights(tmp_path, capsys):
    """The blog's layout end to end: runs/NAME/{model,train}.json naming datasets/NAME/{train,validation}.safetensors;
    the initial weights are the book GPTModel's draw after torch.manual_seed(random_seed), as the blog's trainer makes."""
    import json

    import torch
    from safetensors.torch import load_file

    from book_model import BookGPT
    from conftest import run_cli

    dataset = tmp_path / "datasets" / "tiny"
    dataset.mkdir(parents=True)
    save_file({"tokens": _tokens(0, 512, 4000)}, str(dataset / "train.safetensors"))
    save_file({"tokens": _tokens(0, 512, 600, seed=1)}, str(dataset / "validation.safetensors"))
    model = {"vocab_size": 512, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 2, "drop_rate": 0.1,
             "qkv_bias": True, "tie_weights": True}
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    (run / "model.json").write_text(json.dumps(model))
    (run / "train.json").write_text(json.dumps({"microbatch_size": 2, "dataset": "../../datasets/tiny", "random_seed": 11,
                                                "min_train_tokens": 3 * 2 * 16, "use_amp": False, "checkpoint_interval": 2,
                                                "schedule_learning_rate": True, "warmup_period_percent": 34}))
    code, out, err = run_cli(capsys, "train", "--config", run, "--out", tmp_path / "out", "--quiet", "--json")
    assert code == 0, err
    result, manifest = json.loads(out), json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert result["steps"] == 3 and manifest["corpus"]["split"] == {"train": 4000, "val": 600, "test": 600}
    torch.manual_seed(11)
    book = BookGPT(model).state_dict()
    init = load_file(str(tmp_path / "out" / "init.safetensors"))
    assert init.keys() == {k for k in book if not k.endswith(".att.mask") and k != "out_head.weight"}
    assert all(torch.equal(init[k], book[k]) for k in init)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
    assert lrs[0] == 0.0004 * 0.00001 and lrs[1] == 0.0004  # the blog's warmup: 1 step from 1e-5 x the peak
