"""Output piped to a file or a CI log is complete: every value of a command's --json is in its text output
(tests/json_in_text.py states how a value is looked for), a long name is never cut or wrapped, and the live view
ends with one summary line instead of an empty frame."""

from __future__ import annotations

import json
import shlex
import sys

import numpy as np
import pytest
from analysis_helpers import HAND, STUDY
from json_in_text import missing_from_text
from safetensors_files import write_arrays

from conftest import run_cli

LONG = "an-intervention-whose-name-is-far-longer-than-any-table-column-would-give-it-at-200-columns"
SCHEMA = (".schema",)  # the JSON format's own version, not a result


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch):
    """capsys is no terminal: the layout a log file gets (COLUMNS unset)."""
    monkeypatch.delenv("COLUMNS", raising=False)


def json_and_text(capsys, *argv, code: int = 0) -> tuple[dict, str]:
    done, out, _ = run_cli(capsys, *argv, "--json")
    assert done == code
    done, text, _ = run_cli(capsys, *argv)
    assert done == code
    return json.loads(out), text


@pytest.mark.parametrize("source", [STUDY, HAND], ids=["study", "hand"])
@pytest.mark.parametrize("margin", [(), ("--margin", "0.05")], ids=["no-margin", "margin"])
def test_classify_prints_every_value_of_its_json(capsys, source, margin):
    data, text = json_and_text(capsys, "classify", source, *margin)
    assert missing_from_text(data, text, SCHEMA) == []


def test_classify_prints_a_factorial_term_without_a_test(capsys, tmp_path):
    """A 2x2 at one init seed with no baseline repeat there: no residual df, so no term has a df or an interval
    (the terminal table once failed on the missing df)."""
    results = tmp_path / "results.csv"
    results.write_text("intervention,init_seed,train_seed,test_loss,same_init\nbaseline,42,,5.1,\nbaseline,22,,5.12,\n"
                       "a,42,,5.109,true\nb,42,,5.12,true\na+b,42,,5.107,true\n")
    data, text = json_and_text(capsys, "classify", str(results))
    assert all(t["df"] is None for t in data["factorial"]["terms"])
    assert missing_from_text(data, text, SCHEMA) == []


def test_plan_prints_every_value_of_its_json(capsys):
    data, text = json_and_text(capsys, "plan", STUDY, "--effect", "0.01")
    assert missing_from_text(data, text) == []


# a user's trainer: the loss depends on the init seed, and on --better (the long-named intervention)
PROGRAM = """
import json, sys
run_dir, seed, better = sys.argv[1], int(sys.argv[2]), "--better" in sys.argv
json.dump({"test_loss": 4.0 + seed / 1000 - (0.05 if better else 0.0)}, open(run_dir + "/result.json", "w"))
"""


@pytest.fixture(scope="module")
def command_study(tmp_path_factory):
    """A study of a user's command (no torch, no training): a baseline at three init seeds and LONG."""
    root = tmp_path_factory.mktemp("command-study")
    (root / "program.py").write_text(PROGRAM)
    return root


def test_a_command_study_prints_status_and_classify_whole_and_the_live_view_ends_with_a_summary(
        command_study, capsys):
    program = f"{shlex.quote(sys.executable)} {shlex.quote(str(command_study / 'program.py'))} {{run_dir}} {{init_seed}}"
    out = command_study / "study"
    code, stdout, stderr = run_cli(capsys, "sweep", "--command", program, "--init-seeds", "1,2,3", "--out", out,
                                   "--intervention", f"{LONG}=--better", "--jobs", "2")
    assert code == 0, stderr
    # no terminal: the live view printed no frame (an empty table), a line per finished run, then the sum
    lines = stderr.strip().splitlines()
    assert lines[-1] == "6 runs: 6 done, 0 running, 0 queued, 0 failed, 0 diverged"
    finished = [line for line in lines if line.endswith("/6)")]
    assert len(finished) == 6 and all(": done  test loss " in line for line in finished) and finished[-1].endswith("(6/6)")
    assert "running run" not in stderr
    data, text = json_and_text(capsys, "status", out)
    assert missing_from_text(data, text) == [] and LONG in text
    data, text = json_and_text(capsys, "classify", out)
    assert missing_from_text(data, text, SCHEMA) == [] and LONG in text


def test_verify_identical_prints_every_value_of_its_json(tmp_path, capsys):
    rng = np.random.default_rng(0)
    weights = {f"{LONG}.weight": rng.standard_normal((64, 8)).astype(np.float32), "bias": np.zeros(8, np.float32)}
    a = write_arrays(tmp_path / "a.safetensors", weights, {"format": "pt"})
    changed = dict(weights)
    changed[f"{LONG}.weight"] = weights[f"{LONG}.weight"].copy()
    changed[f"{LONG}.weight"][3, 1:5] += 1e-3
    b = write_arrays(tmp_path / "b.safetensors", changed | {"extra": np.ones(3, np.int64)}, {"format": "np"})
    data, text = json_and_text(capsys, "verify-identical", a, b, code=1)
    assert missing_from_text(data, text) == [] and f"{LONG}.weight" in text


def test_train_and_eval_print_every_value_of_their_json(tmp_path, capsys, micro_config):
    """`train --json` prints the run's result.json; the text names every field of it. `eval` likewise."""
    from noisefloor.rundir import RunDir

    run = tmp_path / "run"
    done, text, _ = run_cli(capsys, "train", "--config", "micro", "--set", "train.steps=4", "--out", run)
    assert done == 0
    assert missing_from_text(RunDir(run).read_result(), text) == []
    data, text = json_and_text(capsys, "eval", run)
    assert missing_from_text(data, text) == []


def test_the_rule_finds_a_wrong_number_even_beside_coarse_ones():
    """A bare integer in the text ("0 failed") must not pass for a p-value or delta near it."""
    text = "3 runs: 0 failed   p = 0.0208   delta -0.0093"
    assert missing_from_text({"p": 0.0208, "delta": -0.0093, "runs": 3}, text) == []
    wrong = {"p": 0.0308, "delta": -0.0193, "share": 0.3}
    assert missing_from_text(wrong, text) == [(".p", 0.0308), (".delta", -0.0193), (".share", 0.3)]
