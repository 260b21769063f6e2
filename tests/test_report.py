"""`classify` output formats and `report`: same numbers from the same CSV, self-contained HTML, figures."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from analysis_helpers import HAND, STUDY

from noisefloor.cli import main
from noisefloor.report import tables
from noisefloor.stats.classify import analyse

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cli_out(capsys, *argv) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_json_has_the_documented_schema(capsys):
    data = json.loads(cli_out(capsys, "classify", str(STUDY), "--json"))
    assert data["schema"] == "noisefloor.classify/1"
    floor_keys = {"name", "kind", "n", "mean", "sd", "sd_population", "band_3sd", "prediction_interval_997", "false_positive_rate_3sd"}
    for floor in data["floors"]:
        assert floor_keys <= floor.keys() and floor["kind"] in ("init", "train")
        assert len(floor["band_3sd"]) == 2 and len(floor["prediction_interval_997"]) == 2
    keys = {"intervention", "test_loss", "floor", "floor_kind", "verdict", "direction", "z", "delta", "band_3sd",
            "prediction_interval_997", "false_positive_rate_3sd", "p_welch", "p_paired", "p_holm", "decision", "ci", "margin_for_noise", "e_value", "anytime_signal",
            "disagreement"}  # fmt: skip
    for item in data["interventions"]:
        assert keys <= item.keys() and item["verdict"] in ("signal", "noise", "undecided")
    by_name = {i["intervention"]: i for i in data["interventions"]}
    assert by_name["grad-clip"]["verdict"] == "signal" and by_name["grad-clip"]["direction"] == "better"
    assert by_name["grad-clip"]["floor"] == "train@init_seed=42" and by_name["grad-clip"]["floor_kind"] == "train"
    assert data["variance_components"]["share_init"] > 0.5
    assert [t["term"] for t in data["factorial"]["terms"]][-1] == "grad-clip x no-dropout"


def test_csv_format_has_one_section_per_table(capsys):
    text = cli_out(capsys, "classify", str(STUDY), "--format", "csv")
    sections = {}
    for block in text.strip().split("\n\n"):
        key, body = block.split("\n", 1)
        sections[key.lstrip("# ")] = list(csv.DictReader(io.StringIO(body)))
    expected = {"floors", "floor_bands", "interventions", "disagreements", "statistics", "floor_choice", "variance_components",
                "factorial", "repeats", "left_out"}  # fmt: skip
    assert sections.keys() == expected
    rows = {r["intervention"]: r for r in sections["interventions"]}
    assert rows["weight-tying"]["3-SD verdict"] == "signal (worse) *"
    assert rows["grad-clip"]["z (SDs)"] == "-3.07"
    # the example: the 3-SD rule calls grad-clip signal although its Holm p is 0.35
    assert rows["grad-clip"]["decision"] == "undecided" and rows["grad-clip"]["3-SD verdict"] == "signal (better) *"
    assert rows["lr-cosine"]["decision"] == "signal (better)"
    plain = {r["intervention"]: r["in plain words"] for r in sections["disagreements"]}
    assert plain["grad-clip"].startswith("3-SD rule: signal (better), but decision: undecided, because Holm p = 0.351")
    assert "no-dropout" not in plain
    assert sections["floor_bands"][0]["3-SD FPR"] == "12.2%"
    stats = {r["intervention"]: r for r in sections["statistics"]}
    assert stats["lr-cosine"]["p (test)"] == "0.00297 paired" and stats["grad-clip"]["p Holm"] == "0.351"


def test_report_renders_the_numbers_classify_prints(tmp_path, capsys):
    out = tmp_path / "reports" / "study"
    assert main(["report", str(STUDY), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    files = {p.name for p in out.iterdir()}
    assert files == {"report.md", "report.html", "analysis.json", "results.csv", "test_loss.png", "variance_components.png"}
    assert (out / "results.csv").read_bytes() == STUDY.read_bytes()
    assert json.loads((out / "analysis.json").read_text()) == json.loads(cli_out(capsys, "classify", str(STUDY), "--json"))
    report = (out / "report.md").read_text()
    markdown = cli_out(capsys, "classify", str(STUDY), "--format", "markdown")
    for block in markdown.split("\n\n"):
        if block.startswith("|"):
            assert block.strip() in report  # every table, cell for cell
    assert ("undecided (90% CI -0.0248…+0.0012; 3-SD rule: signal (better) (disagrees, see below)): "
            "Δ = -0.0118 nats/token, -3.07 SD against train@init_seed=42") in report
    assert "![Test loss per intervention against its floor](test_loss.png)" in report


def test_html_is_self_contained(tmp_path):
    out = tmp_path / "r"
    assert main(["report", str(STUDY), "--out", str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing loaded from elsewhere
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert sorted(base64.b64decode(i) for i in images) == sorted((out / n).read_bytes() for n in ("test_loss.png", "variance_components.png"))
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    analysis = analyse(STUDY)
    for table in tables.tables(analysis):
        for row in table.rows:
            for cell in row:
                assert tables.html.escape(cell) in page


# hand-edited metrics lines a report must skip, not plot or crash on
BROKEN_LINES = ["{not json", '{"step": 2, "loss": null}', '{"step": 3, "loss": NaN}', '{"step": 4, "val_loss": Infinity}']


def test_loss_curves_from_run_directories(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copy(STUDY, sweep / "results.csv")
    for k, run in enumerate(["base-i42", "base-i42-t23", "grad-clip-i42", "no-dropout-i42"]):
        lines = [json.dumps({"step": s, "loss": 10 * 0.99**s + 5 + 0.01 * k, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 2e4}) for s in range(200)]
        lines += [json.dumps({"step": s, "val_loss": 10 * 0.99**s + 5.02}) for s in range(0, 200, 50)]
        (sweep / "runs" / run).mkdir(parents=True)
        (sweep / "runs" / run / "metrics.jsonl").write_text("\n".join(lines + (BROKEN_LINES if k == 0 else [])) + "\n")
    out = tmp_path / "report"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    assert "report written to" in capsys.readouterr().out
    assert (out / "loss_curves.png").read_bytes().startswith(PNG_MAGIC)
    report = (out / "report.md").read_text()
    assert "![Loss curves across seeds](loss_curves.png)" in report
    assert f"base-i42/metrics.jsonl: {len(BROKEN_LINES)} unreadable line(s) skipped" in report


def test_hand_typed_csv_report_has_no_curves_and_says_why_floor(tmp_path):
    out = tmp_path / "hand"
    assert main(["report", str(HAND), "--out", str(out), "--quiet"]) == 0
    assert not (out / "loss_curves.png").exists()
    assert "conservative" in (out / "report.md").read_text()


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_notes_reach_every_format(capsys, monkeypatch, fmt):
    monkeypatch.setenv("COLUMNS", "250")
    text = cli_out(capsys, "classify", str(HAND), "--format", fmt)
    assert "same_init unknown for some interventions" in text


def test_rewriting_a_report_folder_drops_figures_that_no_longer_apply(tmp_path):
    out = tmp_path / "r"
    assert main(["report", str(STUDY), "--out", str(out), "--quiet"]) == 0
    (out / "loss_curves.png").write_bytes(PNG_MAGIC)  # as if an earlier sweep had run directories
    assert main(["report", str(HAND), "--out", str(out), "--quiet"]) == 0
    assert not (out / "loss_curves.png").exists()
    assert (out / "results.csv").read_bytes() == HAND.read_bytes()


def test_analysis_works_without_torch(tmp_path):
    """stats/ and report/ never import torch: classify and every analysis module leave it out of sys.modules."""
    code = (
        "import sys\n"
        "import noisefloor.report.figures, noisefloor.report.write\n"
        "from noisefloor.cli import main\n"
        f"assert main(['classify', {str(HAND)!r}, '--format', 'csv']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr


def test_method_page_example_is_real_output(capsys, monkeypatch):
    """docs/method.md's example is what `COLUMNS=120 noisefloor classify tests/data/study.csv` prints in a terminal
    (piped, the tables would take the width they need instead)."""
    from rich.console import Console

    from noisefloor.report import console

    # a 120-column terminal without colours: is_terminal, and no escape codes in what capsys reads
    monkeypatch.setattr(console, "make_console", lambda stderr=False: Console(width=120, force_terminal=True,
                                                                               color_system=None, highlight=False))
    printed = [line.rstrip() for line in cli_out(capsys, "classify", str(STUDY)).splitlines()]
    method = (Path(__file__).parents[1] / "docs" / "method.md").read_text()
    example = method.split("## Example", 1)[1].split("```text\n", 1)[1].split("\n```", 1)[0].splitlines()
    cut = next(i for i, line in enumerate(example) if line.startswith("  [… 'Why each floor'"))
    assert example[:cut] == printed[:cut]
    assert example[cut + 4 :] == printed[-len(example[cut + 4 :]) :]


def test_long_tables_print_as_plain_aligned_text(tmp_path, capsys):
    """Over LARGE_TABLE_ROWS rows a table is printed without rich's layout (which costs ~10 ms a row)."""
    from analysis_helpers import run, write_csv

    rows = [run("baseline", 42, t, 5.1 + 0.001 * i) for i, t in enumerate((None, 23, 67))]
    rows += [run(f"iv{k:03d}", 42, None, 5.1 + 0.0001 * k, True) for k in range(tables.LARGE_TABLE_ROWS + 1)]
    text = cli_out(capsys, "classify", str(write_csv(tmp_path / "r.csv", rows)))
    lines = text.splitlines()
    start = lines.index("Interventions: decision (α = 0.05) beside the 3-SD rule (* = they disagree)")
    header, rule = lines[start + 2], lines[start + 3]
    assert header.split() == ["intervention", "runs", "floor", "Δ", "decision", "90%", "CI", "of", "Δ", "3-SD", "verdict", "z", "(SDs)"]
    assert set(rule) <= {"-", " "} and lines[start + 4].startswith("iv000 ")


def test_a_file_of_baseline_runs_only_says_how_to_add_interventions(tmp_path, capsys):
    """The design card's first two commands give floors only: classify says what to run next, not an empty table."""
    from conftest import run_cli

    path = tmp_path / "results.csv"
    path.write_text("run,intervention,init_seed,train_seed,test_loss\na,baseline,42,,4.80\nb,baseline,22,,4.82\n"
                    "c,baseline,67,,4.79\nd,baseline,42,23,4.805\ne,baseline,42,67,4.801\n")
    code, out, _ = run_cli(capsys, "classify", path)
    assert code == 0 and "none in this file" in " ".join(out.split()) and "--interventions grad-clip" in out
