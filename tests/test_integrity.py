"""What noisefloor reads back is checked against the digest recorded when it was written:
the token cache and the resumable checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from noisefloor.train import data as data_module
from noisefloor.train.data import load_corpus, tokens_digest


def _cache_file(corpus_hash: str) -> Path:
    (path,) = data_module.cache_dir().glob(f"tokens-{corpus_hash[7:23]}-*.npy")
    return path


def _flip_test_token_bit(path) -> None:
    """One flipped bit in the first window of the test split, which every test loss evaluates."""
    count = len(np.load(path, mmap_mode="r"))
    raw = bytearray(path.read_bytes())
    raw[len(raw) - 2 * count + 2 * (int(count * 0.95) + 1)] ^= 0x01
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
        _flip_test_token_bit(cache)
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

    source = tmp_path / "corpus.txt"  # small, so that rebuilding the cache is quick
    source.write_text("Every effort moves you forward, said the interpreter to the reference manual. " * 300)
    overrides = {"steps": 2, "checkpoint_interval": 0, "eval_interval": 0, "data": str(source)}
    config = micro_config.replace(train=overrides)
    clean = trainer.train(config, tmp_path / "clean")
    corpus = load_corpus(str(source), config.model.vocab_size)
    clean_digest = tokens_digest(np.array(corpus.tokens))
    _flip_test_token_bit(_cache_file(corpus.corpus_hash))
    code, _, err = run_cli(capsys, "train", "--config", REPO / "training" / "micro.toml", "--out", tmp_path / "flipped",
                           "--quiet", *[f"--set=train.{key}={json.dumps(value)}" for key, value in overrides.items()])
    assert code == 0 and "rebuilding" in err
    flipped = json.loads((tmp_path / "flipped" / "result.json").read_text())
    assert flipped["test_loss"] == clean["test_loss"]
    manifests = [json.loads((tmp_path / run / "manifest.json").read_text())["corpus"] for run in ("clean", "flipped")]
    assert manifests[0] == manifests[1]
    assert manifests[0]["tokens_digest"] == clean_digest


class StopAt(Exception):
    pass


def _stop_after(step: int):
    def on_event(event):
        if event["event"] == "step" and event["step"] == step:
            raise StopAt

    return on_event


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory):
    """A micro run stopped after step 12 with checkpoints at steps 5 and 10, and the uninterrupted run."""
    from noisefloor import config as config_module
    from noisefloor.train import trainer

    root = tmp_path_factory.mktemp("cut")
    config = config_module.load(REPO / "training" / "micro.toml").replace(
        train={"steps": 14, "keep_checkpoints": 2, "eval_interval": 0})
    straight = trainer.train(config, root / "straight")
    with pytest.raises(StopAt):
        trainer.train(config, root / "cut", _stop_after(12))
    return root / "cut", straight


def _copy(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "run")


def _flip_last_byte(path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["model.safetensors", "state.safetensors", "digest.json", "metadata"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_good_one(cut_run, tmp_path, capsys, damage):
    """Before: a flipped bit in a checkpoint's weights was resumed and trained into other final weights."""
    run = _copy(cut_run[0], tmp_path)
    newest = run / "checkpoints" / "step-0000010"
    if damage == "metadata":  # bad JSON in the state file's metadata, same length so the header still parses
        path = newest / "state.safetensors"
        raw = path.read_bytes()
        path.write_bytes(raw.replace(b'\\"step\\": 10', b'\\"step\\"! 10', 1))
        assert path.read_bytes() != raw
    else:
        _flip_last_byte(newest / damage)
    stale = [run / ".model.safetensors.x1y2z3.tmp", run / ".init.safetensors.a1b2c3.tmp"]  # a kill mid-write
    for path in stale:
        path.write_bytes(b"half a file")
    code, out, err = run_cli(capsys, "train", "--resume", run, "--json")
    assert not any(path.exists() for path in stale)
    assert code == 0, err
    assert "step-0000010" in err and "falling back to step-0000005" in err and len(err.strip().splitlines()) == 1
    assert json.loads(out)["final_digest"] == cut_run[1]["final_digest"]


def test_a_damaged_checkpoint_with_none_before_it_stops_with_one_line(cut_run, tmp_path, capsys):
    import shutil

    run = _copy(cut_run[0], tmp_path)
    shutil.rmtree(run / "checkpoints" / "step-0000005")
    _flip_last_byte(run / "checkpoints" / "step-0000010" / "model.safetensors")
    code, _, err = run_cli(capsys, "train", "--resume", run)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "model.safetensors no longer match" in err and "delete" in err
    assert not (run / "result.json").exists() and not (run / "model.safetensors").exists()


def test_outputs_are_readable_by_others_as_the_umask_allows(cut_run):
    """safetensors and mkstemp create files 0600; results are meant to be shared (0644 under umask 022)."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    straight = cut_run[0].parent / "straight"
    for path in [straight / "model.safetensors", straight / "init.safetensors", straight / "result.json",
                 *straight.glob("checkpoints/*/*")]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path
