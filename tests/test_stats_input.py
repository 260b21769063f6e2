"""Reading the results CSV: what is accepted, and every user mistake -> one line, exit 2."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from analysis_helpers import BASE, HAND, STUDY, run, study_rows, write_csv

from noisefloor.cli import main
from noisefloor.errors import UserError
from noisefloor.report import words
from noisefloor.stats.classify import analyse

GOOD = "intervention,init_seed,train_seed,test_loss\nbaseline,42,,5.10\nbaseline,42,23,5.11\n"


def classify_error(capsys, path) -> str:
    assert main(["classify", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


BAD = [
    ("missing column", "intervention,init_seed,train_seed\nbaseline,42,\n", ["missing required column 'test_loss'"]),
    (
        "misspelt column",
        "intervention,init_seed,train_seed,Test_Loss\nbaseline,42,,5.1\n",
        ["missing required column 'test_loss'", "did you mean 'Test_Loss'"],
    ),
    ("non-numeric loss", GOOD + "grad-clip,42,,abc\n", ["line 4", "column 'test_loss'", "'abc' is not a number"]),
    ("NaN loss", GOOD + "grad-clip,42,,nan\n", ["line 4", "column 'test_loss'", "not a finite loss"]),
    ("inf loss", GOOD + "grad-clip,42,,-inf\n", ["line 4", "column 'test_loss'", "not a finite loss"]),
    ("empty loss", GOOD + "grad-clip,42,,\n", ["line 4", "column 'test_loss'", "is not a number"]),
    (
        "duplicate run",
        "run,intervention,init_seed,train_seed,test_loss\na,baseline,42,,5.1\nb,baseline,42,23,5.2\na,x,42,,5.0\n",
        ["line 4", "column 'run'", "'a' already used on line 2"],
    ),
    (
        "no floor",
        "intervention,init_seed,train_seed,test_loss\nbaseline,42,,5.1\nbaseline,22,23,5.2\nx,42,,5.0\n",
        ["no noise floor", "2 usable baseline run(s)"],
    ),
    ("no baseline", "intervention,init_seed,train_seed,test_loss\nx,42,,5.1\nx,22,,5.2\n", ["no usable row is 'baseline';"]),
    (
        "Baseline",
        "intervention,init_seed,train_seed,test_loss\nBaseline,42,,5.1\nBaseline,42,1,5.2\n",
        ["no usable row is 'baseline' (found 'Baseline'; names are case-sensitive)"],
    ),
    ("bad init seed", GOOD + "grad-clip,forty,,5.0\n", ["line 4", "column 'init_seed'", "'forty' is not an integer"]),
    ("empty init seed", GOOD + "grad-clip,,,5.0\n", ["line 4", "column 'init_seed'", "empty"]),
    ("float train seed", GOOD + "grad-clip,42,2.5,5.0\n", ["line 4", "column 'train_seed'", "'2.5' is not an integer"]),
    ("bad same_init", GOOD.replace("test_loss\n", "test_loss,same_init\n").replace("5.10\n", "5.10,\n").replace("5.11\n", "5.11,yes\n"),
     ["line 3", "column 'same_init'", "'yes' is not true or false"]),  # fmt: skip
    ("ragged line", GOOD + "grad-clip,42,,5.0,extra\n", ["line 4 has 5 fields but the header has 4"]),
    ("empty intervention", GOOD + ",42,,5.0\n", ["line 4", "column 'intervention'", "empty"]),
    ("bad combination", GOOD + "baseline+grad-clip,42,,5.0\n", ["line 4", "not a valid combination"]),
    ("empty file", "", ["the file is empty"]),
    ("duplicate column", "intervention,init_seed,train_seed,test_loss,test_loss\n", ["column 'test_loss' appears twice"]),
]


@pytest.mark.parametrize("text,expected", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_csv_is_one_line_exit_2(tmp_path, capsys, text, expected):
    path = tmp_path / "results.csv"
    path.write_text(text)
    line = classify_error(capsys, path)
    assert str(path) in line
    for fragment in expected:
        assert fragment in line


def test_missing_path_and_sweep_dir_without_results(tmp_path, capsys):
    assert "no such file or directory" in classify_error(capsys, tmp_path / "nope.csv")
    assert "directory has no results.csv" in classify_error(capsys, tmp_path)


def test_not_utf8_is_a_user_error(tmp_path, capsys):
    path = tmp_path / "r.csv"
    path.write_bytes(GOOD.encode() + b"grad-clip,42,,5.0\xff\n")
    assert "not UTF-8" in classify_error(capsys, path)


def test_report_gives_the_same_one_line_error(tmp_path, capsys):
    path = tmp_path / "r.csv"
    path.write_text(GOOD + "grad-clip,42,,oops\n")
    assert main(["report", str(path), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 4, column 'test_loss'" in err[0]
    assert not (tmp_path / "rep").exists()


def test_sweep_dir_means_its_results_csv_and_header_whitespace_is_stripped(tmp_path):
    (tmp_path / "results.csv").write_text(" intervention , init_seed,train_seed ,test_loss\nbaseline,42,,5.1\nbaseline,42,23,5.2\n")
    analysis = analyse(tmp_path)
    assert analysis.results.source == str(tmp_path / "results.csv")
    assert [f.name for f in analysis.floors] == ["train@init_seed=42"]


def test_rows_not_done_are_left_out_and_listed_not_errors(tmp_path):
    text = STUDY.read_text()
    assert ",failed," in text  # fp32 failed, with no loss at all
    analysis = analyse(STUDY)
    left = words.analysis_json(analysis)["left_out"]
    assert left == [{"run": "fp32-i42", "line": 14, "intervention": "fp32", "status": "failed"}]
    assert "fp32" not in [v.intervention for v in analysis.verdicts]
    assert any("1 row(s) left out" in n for n in words.notes(analysis.notes))


def test_hand_typed_four_columns_work_and_say_the_conservative_floor_is_used():
    analysis = analyse(HAND)
    assert {v.floor.name for v in analysis.verdicts} == {"init@no-reseed"}
    assert all(v.same_init is None and "conservative" in words.floor_reason(v.floor_reason) for v in analysis.verdicts)
    assert any("same_init unknown" in n for n in words.notes(analysis.notes))


def test_identical_repeats_are_counted_once(tmp_path):
    rows = study_rows(BASE) + [run("baseline", 42, None, BASE[(42, None)], True, "again")]
    analysis = analyse(write_csv(tmp_path / "r.csv", rows))
    floor = analysis.floor("train@init_seed=42")
    assert floor.n == 3  # not 4: the repeat confirms, it does not add a stream
    (repeat,) = analysis.results.repeats
    assert repeat.identical and repeat.runs == ("base-42-None", "again")
    assert any("repeatability confirmed" in n for n in words.notes(analysis.notes))
    assert not analysis.reproducibility_failures


def test_different_repeats_are_a_reproducibility_failure(tmp_path, capsys):
    rows = study_rows(BASE, [run("grad-clip", 42, None, 5.09, True, "gc"), run("grad-clip", 42, None, 5.10, True, "gc2")])
    path = write_csv(tmp_path / "r.csv", rows)
    analysis = analyse(path)
    (failure,) = analysis.reproducibility_failures
    assert failure.test_losses == (5.09, 5.10)
    (verdict,) = analysis.verdicts
    assert verdict.test_loss == pytest.approx(5.095)  # the mean of the two, counted as one cell
    assert any(n.startswith("REPRODUCIBILITY FAILURE") for n in words.notes(verdict.notes))
    assert words.note(analysis.notes[0]).startswith("REPRODUCIBILITY FAILURE")
    assert main(["classify", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.lstrip().startswith("╭") and "reproducibility failure" in out.splitlines()[0]
    data = json.loads(_json(path, capsys))
    assert data["repeats"][0]["identical"] is False
    assert main(["report", str(path), "--out", str(tmp_path / "report"), "--quiet"]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.index(words.note(analysis.notes[0])) < report.index("## ") and report.count(words.note(analysis.notes[0])) == 1  # a banner, once


def _json(path, capsys) -> str:
    assert main(["classify", str(path), "--json"]) == 0
    return capsys.readouterr().out


def test_same_init_comes_from_the_column_else_from_init_digest(tmp_path):
    columns = ("run", "intervention", "init_seed", "train_seed", "test_loss", "same_init", "init_digest")
    rows = [dict(r, init_digest="sha256:aa" if r["init_seed"] == 42 else f"sha256:{r['init_seed']}") for r in study_rows(BASE)]
    rows += [
        dict(run("a", 42, None, 5.10), init_digest="sha256:aa"),  # no same_init: derived -> true
        dict(run("b", 42, None, 5.10), init_digest="sha256:bb"),  # derived -> false
        dict(run("c", 42, None, 5.10, True), init_digest="sha256:cc"),  # extra tensors: whole digest differs, column true
        dict(run("d", 42, None, 5.10, False), init_digest="sha256:aa"),  # column false, digest equal: contradiction
    ]
    verdicts = {v.intervention: v for v in analyse(write_csv(tmp_path / "r.csv", rows, columns)).verdicts}
    assert (verdicts["a"].same_init, verdicts["a"].floor_kind, verdicts["a"].same_init_source) == (True, "train", "init_digest")
    assert (verdicts["b"].same_init, verdicts["b"].floor_kind) == (False, "init")
    assert (verdicts["c"].same_init, verdicts["c"].floor_kind, verdicts["c"].same_init_source) == (True, "train", "same_init column")
    assert verdicts["d"].same_init is False and verdicts["d"].floor_kind == "init"
    assert any("init_digest equals the baseline's" in n for n in words.notes(verdicts["d"].notes))


def test_final_weights_identical_to_the_baselines_are_named(tmp_path):
    columns = ("run", "intervention", "init_seed", "train_seed", "test_loss", "same_init", "final_digest")
    rows = [dict(r, final_digest=f"sha256:{r['init_seed']}-{r['train_seed']}") for r in study_rows(BASE)]
    rows += [
        dict(run("clip", 42, None, BASE[(42, None)], True), final_digest="sha256:42-None"),  # the baseline's bits
        dict(run("wd", 42, None, 5.0990, True), final_digest="sha256:other"),
    ]
    verdicts = {v.intervention: v for v in analyse(write_csv(tmp_path / "r.csv", rows, columns)).verdicts}
    assert any("bit-identical to the baseline's at the same seeds in 1 of 1" in n for n in words.notes(verdicts["clip"].notes))
    assert not any("bit-identical" in n for n in words.notes(verdicts["wd"].notes))


def test_extra_columns_of_any_name_are_ignored(tmp_path, capsys):
    path = tmp_path / "r.csv"
    path.write_text(GOOD.replace("test_loss\n", "test_loss,_line,notes\n").replace("5.10\n", "5.10,7,a\n")
                    .replace("5.11\n", "5.11,8,b\n"))
    assert main(["classify", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["floors"][0]["n"] == 2


@pytest.mark.parametrize("source", [STUDY, HAND])
def test_large_file_path_reads_exactly_what_the_row_by_row_path_reads(source, monkeypatch):
    """Files over FAST_PATH_CHARS are validated column by column; the result must be the same table."""
    from noisefloor.stats import table

    text = source.read_text()
    monkeypatch.setattr(table, "FAST_PATH_CHARS", -1)
    fast = table.results_from_text(text, "x.csv")
    assert table._vectorised(text, "x.csv") is not None  # the column path really ran
    monkeypatch.setattr(table, "FAST_PATH_CHARS", 10**12)
    slow = table.results_from_text(text, "x.csv")
    pd.testing.assert_frame_equal(fast.runs, slow.runs)
    pd.testing.assert_frame_equal(fast.cells, slow.cells)
    assert (fast.left_out, fast.repeats) == (slow.left_out, slow.repeats)


def test_large_file_path_leaves_mistakes_to_the_exact_messages(monkeypatch):
    from noisefloor.stats import table

    monkeypatch.setattr(table, "FAST_PATH_CHARS", -1)
    text = STUDY.read_text().splitlines()
    text[3] = text[3].replace("5.", "five.", 1)
    with pytest.raises(UserError, match="line 4, column 'test_loss'"):
        table.results_from_text("\n".join(text) + "\n", "x.csv")
