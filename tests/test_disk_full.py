"""A full disk, at every point of a run and of a sweep, is one line naming the file and what was kept; once there
is room again the same command finishes the work, bit-identical to a run that never ran out of space.

Needs a small tmpfs: mounting one needs root (CI runs as root); elsewhere these tests skip and say why.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from conftest import REPO, run_cli

MICRO = REPO / "training" / "micro.toml"


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a folder on a tmpfs of that size; remount(size) grows it."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = []

    def mount(size: str):
        options = f"remount,size={size}" if mounted else f"size={size}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, f"nf-{uuid.uuid4().hex[:8]}", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root")
        mounted.append(size)
        return folder

    yield mount
    if mounted:
        subprocess.run(["umount", str(folder)], check=False)


def _one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from noisefloor import config as config_module
    from noisefloor.train import trainer

    return trainer.train(config_module.load(MICRO), tmp_path_factory.mktemp("straight") / "run")


# the disk fills while writing: the initial weights; the first checkpoint; a later checkpoint's state
@pytest.mark.parametrize("size,kept", [("64k", "no checkpoint yet"), ("400k", "no checkpoint yet"),
                                       ("1600k", "newest checkpoint step-0000005")])
def test_train_on_a_full_disk_is_one_line_and_resumes_bit_identical(small_disk, capsys, uninterrupted, size, kept):
    run = small_disk(size) / "run"
    code, _, err = run_cli(capsys, "train", "--config", MICRO, "--out", run, "--quiet")
    assert code == 2 and _one_line(err), err
    assert "No space left on device" in err and str(run) in err and kept in err and "--resume" in err
    assert not list(run.glob(".*.tmp")) and not list(run.glob("checkpoints/.tmp-*"))  # no partial file kept
    small_disk("8m")
    code, out, err = run_cli(capsys, "train", "--resume", run, "--json")
    assert code == 0, err
    assert json.loads(out)["final_digest"] == uninterrupted["final_digest"]


def test_sweep_on_a_full_disk_is_one_line_and_a_run_that_ran_out_is_marked_failed(small_disk, capsys):
    from noisefloor.sweep.executors import execute_run
    from noisefloor.sweep.store import SweepStore

    out = small_disk("4k") / "sweep"
    sweep = ["sweep", "--config", MICRO, "--init-seeds", "1", "--set", "train.steps=5", "--out", out, "--quiet"]
    code, _, err = run_cli(capsys, *sweep)
    assert code == 2 and _one_line(err) and "results.csv: No space left on device" in err and "same command" in err
    # room for the sweep's files, not for a run's weights: the worker's run fails, recorded, and the sweep goes on
    small_disk("40k")
    store = SweepStore(out)
    (run,) = store.load_plan().runs
    result = execute_run(str(store.run_dir(run)), run.config)
    assert result["status"] == "failed" and "No space left on device" in result["error"] and "Traceback" not in result["error"]
    code, stdout, err = run_cli(capsys, "status", out, "--json")
    assert code == 0 and json.loads(stdout)["runs"][0]["status"] == "failed"
    small_disk("8m")
    (store.run_dir(run) / "result.json").unlink()  # what --retry-failed does
    assert execute_run(str(store.run_dir(run)), run.config)["status"] == "done"


def test_a_full_token_cache_folder_trains_on_the_tokens_in_memory(small_disk, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("NOISEFLOOR_CACHE_DIR", str(small_disk("16k")))
    code, out, err = run_cli(capsys, "train", "--config", MICRO, "--set", "train.steps=2", "--out", tmp_path / "run",
                             "--quiet", "--json")
    assert code == 0 and "cannot write the token cache" in err and "No space left on device" in err
    assert len(err.strip().splitlines()) == 1 and json.loads(out)["status"] == "done"
