"""`noisefloor report`: a report folder from a results CSV or a sweep directory.

The folder gets report.md, report.html (self-contained: PNGs embedded as
base64), the PNG figures, analysis.json (exactly `classify --json`) and
results.csv, a byte-for-byte copy of the CSV that was analysed. Every number
comes from one `Analysis` computed once from those bytes.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from noisefloor import atomic
from noisefloor.report import figures, words
from noisefloor.report.tables import (
    Table,
    decision_text,
    interval,
    signed,
    signed_interval,
    tables,
    to_html,
    to_markdown,
    verdict_text,
)
from noisefloor.stats.classify import ALPHA, Analysis, analyse_results
from noisefloor.stats.table import read_csv_bytes, results_from_bytes

HOW_TO_READ = (
    ("decision", "error-controlled: `signal` when the Holm-adjusted p (p Holm) is below α, so the chance of any "
     "false signal in the file stays ≤ α; `noise` only when the (1 − 2α) CI of Δ lies inside ±margin (equivalence, "
     "TOST; margin stated with --margin); otherwise `undecided`, with the interval and the smallest margin that "
     "would have called it noise. The 3-SD verdict is the heuristic; where the two differ, it says why."),
    ("e-value", "anytime-valid evidence (safe t-test Bayes factor, right-Haar prior on the SD): seeds may be added "
     "and classify re-run any number of times; e ≥ 1/α is a signal with error ≤ α however often you looked."),
    ("3-SD band", "floor mean ± 3 sample SDs: the heuristic. With n floor runs the SD is itself uncertain, so a "
     "run of pure noise lands outside the band far more often than 0.3% of the time: see 3-SD FPR."),
    ("3-SD FPR", "the chance that the 3-SD rule calls `signal` when there is no effect, under normality, at this "
     "floor's n: 2(1 − T_{n−1}(3/√(1+1/n))) for one run (≈ 12% at n = 3, 0.3% only as n → ∞)."),
    ("99.7% PI", "Student-t prediction interval, mean ± t_{0.9985,n−1}·SD·√(1+1/n): where 99.7% of new runs of "
     "the baseline fall. The honest band for one new run."),
    ("z (SDs)", "Δ / floor SD: distance from the reference (the floor mean, or for same-init interventions run at "
     "several init seeds, the baseline at each run's init seed) in floor SDs."),
    ("p (test)", "paired t-test on intervention − baseline at matching seeds when ≥ 2 pairs exist, else Welch's "
     "t-test against the floor runs when the intervention has ≥ 2 runs, else the prediction test "
     "Δ/(SD·f) ~ t(n−1)."),
    ("p Holm", "the p-values above adjusted across all interventions (Holm, family-wise error)."),
    ("min margin", "the smallest equivalence margin (nats/token) that would have decided `noise`. "
     "To plan seeds for an effect you care about: `noisefloor plan --effect 0.01 CSV`."),
)


@dataclass(frozen=True)
class Written:
    folder: Path
    markdown: Path
    html: Path
    json: Path
    csv: Path
    figures: tuple[Path, ...]
    analysis: Analysis


def write_report(source: str | Path, out: str | Path, alpha: float = ALPHA, margin: float | None = None) -> Written:
    """Analyse a results CSV or sweep directory and write the report folder `out`."""
    csv_path, data = read_csv_bytes(source)
    analysis = analyse_results(results_from_bytes(data, str(csv_path)), alpha, margin)
    folder = atomic.out_folder(out)

    curves, curve_notes = figures.read_curves(analysis, csv_path.parent)
    pngs = {
        "test_loss.png": ("Test loss per intervention against its floor", figures.strip_plot(analysis)),
        "loss_curves.png": ("Loss curves across seeds", figures.curves_plot(curves)),
        "variance_components.png": ("Where the baseline's variance comes from", figures.components_plot(analysis)),
        "effects_half_normal.png": ("Half-normal (Daniel) plot of the factorial effects", figures.half_normal_plot(analysis)),
    }
    for name in [name for name, (_, png) in pngs.items() if png is None]:
        (folder / name).unlink(missing_ok=True)  # a figure from an earlier report into this folder
        del pngs[name]
    for name, (_, png) in pngs.items():
        atomic.write_bytes(folder / name, png)
    atomic.write_bytes(folder / "results.csv", data)
    atomic.write_json(folder / "analysis.json", words.analysis_json(analysis))
    items = tables(analysis)
    extra = words.other_notes(analysis) + curve_notes  # failures: the banner
    atomic.write_text(folder / "report.md", _markdown(analysis, items, pngs, extra))
    atomic.write_text(folder / "report.html", _html(analysis, items, pngs, extra))
    return Written(
        folder,
        folder / "report.md",
        folder / "report.html",
        folder / "analysis.json",
        folder / "results.csv",
        tuple(folder / name for name in pngs),
        analysis,
    )


def _summary(analysis: Analysis) -> list[tuple[str, str]]:
    """(bold lead, rest) per summary line."""
    r = analysis.results
    lines = [
        (
            "Source",
            f": {r.source} ({r.sha256}), copied here as results.csv; {len(r.runs)} runs used, {len(r.left_out)} "
            "left out. Every number below is `noisefloor classify --json` of that file (saved as analysis.json).",
        )
    ]
    for v in analysis.verdicts:
        if v.floor is None or v.delta is None:
            why = words.note(v.notes[-1]) if v.notes else words.floor_reason(v.floor_reason)
            lines.append((v.intervention, f": {v.decision}: {why}"))
        else:
            z = "" if v.z is None else f", {signed(v.z, 2)} SD"
            ci = f"{100 * v.ci_level:g}% CI {signed_interval(v.ci)}"
            three = f"3-SD rule: {verdict_text(v)}" + ("" if v.agrees_with_3sd_rule else " (disagrees, see below)")
            lines.append(
                (
                    v.intervention,
                    f": {decision_text(v)} ({ci}; {three}): Δ = {signed(v.delta)} nats/token{z} against "
                    f"{v.floor.name} (3-SD band {interval(v.band_3sd)}, 99.7% PI {interval(v.prediction_interval_997)})",
                )
            )
    return lines


def _markdown(analysis: Analysis, items: list[Table], pngs: dict, extra: list[str]) -> str:
    parts = ["# noisefloor report", ""]
    parts += _failure_lines(analysis, lambda text: f"> **{text}**")
    parts += [f"- **{lead}**{rest}" for lead, rest in _summary(analysis)] + [""]
    parts += [f"![{title}]({name})\n" for name, (title, _) in pngs.items()]
    parts.append(to_markdown(items))
    if extra:
        parts += ["## Notes", ""] + [f"- {n}" for n in extra] + [""]
    parts += ["## How to read these numbers", ""] + [f"- **{k}**: {text}" for k, text in HOW_TO_READ]
    return "\n".join(parts) + "\n"


def _failure_lines(analysis: Analysis, wrap) -> list[str]:
    lines = [wrap(n) for n in words.failure_notes(analysis)]
    return lines + [""] if lines else []


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.better { color: #1a7f1a; font-weight: bold; } td.worse { color: #c62828; font-weight: bold; }
td.undecided { color: #a06b00; } td.failure, .failure { color: #c62828; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0 1.5em; }
"""


def _html(analysis: Analysis, items: list[Table], pngs: dict, extra: list[str]) -> str:
    body = ["<h1>noisefloor report</h1>"]
    body += _failure_lines(analysis, lambda text: f'<p class="failure">{html.escape(text)}</p>')
    summary = "".join(f"<li><b>{html.escape(lead)}</b>{html.escape(rest)}</li>" for lead, rest in _summary(analysis))
    body.append(f"<ul>{summary}</ul>")
    for title, png in pngs.values():
        encoded = base64.b64encode(png).decode("ascii")
        title = html.escape(title)
        body.append(f'<h2>{title}</h2><img alt="{title}" src="data:image/png;base64,{encoded}">')
    body.append(to_html(items))
    if extra:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in extra) + "</ul>")
    body.append(
        "<h2>How to read these numbers</h2><ul>"
        + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(text)}</li>" for k, text in HOW_TO_READ)
        + "</ul>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>noisefloor report</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n"
    )
