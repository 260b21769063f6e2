"""The analysis as tables of formatted strings, and their renderings.

`tables(analysis)` is the single place where numbers become text; the
terminal (rich), CSV, Markdown and HTML renderings all print these strings,
so `classify` and `report` show the same numbers for the same CSV.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass

from noisefloor.report import words
from noisefloor.report.console import print_table
from noisefloor.report.words import REPRODUCIBILITY_FAILURE
from noisefloor.stats.classify import SIGNAL, UNDECIDED, Analysis, Verdict
from noisefloor.stats.floors import TRAIN


class Cell(str):
    """A cell's text with how to colour it (`css`: better, worse, undecided, failure), decided where the cell is
    made from typed values, never by reading the text back."""

    css = ""


def styled(text: str, css: str) -> str:
    if not css:
        return text
    cell = Cell(text)
    cell.css = css
    return cell


def outcome_css(text: str, outcome: str, direction: str | None) -> str:
    """A verdict's or decision's cell: green when better, red when worse, yellow when exactly 'undecided'."""
    if outcome == SIGNAL:
        return styled(text, "better" if direction == "better" else "worse")
    return styled(text, "undecided" if text == UNDECIDED else "")


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def loss(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def signed(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:+.{digits}f}"


def spread(x: float | None) -> str:
    return "–" if x is None else f"{x:.5f}"


def interval(pair) -> str:
    return "–" if pair is None else f"{pair[0]:.4f} – {pair[1]:.4f}"


def percent(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def pvalue(x: float | None) -> str:
    if x is None:
        return "–"
    return "<1e-6" if x < 1e-6 else f"{x:.3g}"


def verdict_text(v: Verdict) -> str:
    return f"{v.verdict} ({v.direction})" if v.verdict == SIGNAL else v.verdict


def decision_text(v: Verdict) -> str:
    return f"{v.decision} ({v.decision_direction})" if v.decision == SIGNAL else v.decision


def signed_interval(pair) -> str:
    return "–" if pair is None else f"{pair[0]:+.4f}…{pair[1]:+.4f}"


def evalue(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if x < 1e6 else ">1e6"


def kind_text(kind: str) -> str:
    return "training loop" if kind == TRAIN else "init"


PROSE = {"floor chosen because", "notes", "why", "reading", "runs", "runs differ in", "test losses", "in plain words", "note", "model", "because"}  # columns that may wrap in a terminal
TEST_LABELS = {"paired": "paired", "welch": "Welch", "prediction": "pred"}


def tables(analysis: Analysis, details: bool = False) -> list[Table]:
    """Each table narrow enough for a 120-column terminal: floors and interventions come in two parts.
    details: also why each decision, the tests behind the p-values, the runs, the models and the source file,
    after why each floor (`classify` prints them, so its output holds every value of its --json; the report and
    --format csv/markdown leave them to analysis.json)."""
    out = [_floors(analysis), _floor_bands(analysis), _interventions(analysis)]
    optional = (_disagreements, _honest_numbers, _floor_choice)
    optional += (_decision_reasons, _tests, _factorial_intervals, _runs, _models, _source) if details else ()
    optional += (_components, _factorial, _repeats, _left_out)
    return out + [t for t in (make(analysis) for make in optional) if t]


def _floors(a: Analysis) -> Table:
    rows = tuple(
        (f.name, kind_text(f.kind), str(f.n), loss(f.mean), spread(f.sd), spread(f.sd_population), _varied(f))
        for f in a.floors
    )
    columns = ("floor", "kind", "n", "mean", "SD", "pop. SD", "runs differ in")
    return Table("floors", "Noise floors (baseline runs)", columns, rows)


def _varied(f) -> str:
    """What the floor's runs vary (the run names are in --json and the report's results.csv)."""
    return ("streams: " if f.kind == TRAIN else "init seeds: ") + ", ".join(f.varied)


def _floor_bands(a: Analysis) -> Table:
    rows = tuple(
        (
            f.name,
            interval(f.band(1)),
            interval(f.band(2)),
            interval(f.band(3)),
            interval(f.prediction_interval_997),
            percent(f.false_positive_rate_3sd),
        )
        for f in a.floors
    )
    columns = ("floor", "±1 SD", "±2 SD", "3-SD band", "99.7% PI (1 run)", "3-SD FPR")
    return Table("floor_bands", "Floor bands, and what the 3-SD band is worth at this n", columns, rows)


def _interventions(a: Analysis) -> Table:
    rows = tuple(
        (
            v.intervention,
            str(len(v.runs)),
            v.floor.name if v.floor else "–",
            signed(v.delta),
            outcome_css(decision_text(v), v.decision, v.decision_direction),
            signed_interval(v.ci),
            outcome_css(verdict_text(v) + ("" if v.agrees_with_3sd_rule else " *"), v.verdict, v.direction),
            signed(v.z, 2),
        )
        for v in a.verdicts
    )
    level = f"{100 * (1 - 2 * a.alpha):g}% CI of Δ"
    columns = ("intervention", "runs", "floor", "Δ", "decision", level, "3-SD verdict", "z (SDs)")
    title = f"Interventions: decision (α = {a.alpha:g}) beside the 3-SD rule (* = they disagree)"
    if not rows:
        title = ("Interventions: none in this file, only the floors; add some with "
                 "noisefloor sweep --interventions grad-clip,no-dropout (or interventions = [...] in noisefloor.toml)")
    return Table("interventions", title, columns, rows)


def _disagreements(a: Analysis) -> Table | None:
    rows = tuple((v.intervention, words.disagreement(v)) for v in a.verdicts if not v.agrees_with_3sd_rule)
    if not rows:
        return None
    return Table("disagreements", "Where the 3-SD rule and the decision disagree", ("intervention", "in plain words"), rows)


def _honest_numbers(a: Analysis) -> Table | None:
    if not a.verdicts:
        return None
    rows = tuple(
        (
            v.intervention,
            loss(v.test_loss),
            interval(v.band_3sd),
            interval(v.prediction_interval_997),
            percent(v.false_positive_rate_3sd),
            f"{pvalue(v.primary.pvalue)} {TEST_LABELS[v.primary.test]}" if v.primary else "–",
            pvalue(v.p_holm),
            evalue(v.e_value) + (" (signal)" if v.anytime_signal else ""),
            spread(v.margin_for_noise),
            signed(v.delta_matched),
        )
        for v in a.verdicts
    )
    columns = ("intervention", "test loss", "3-SD band", "99.7% PI", "3-SD FPR", "p (test)", "p Holm", "e-value", "min margin",
               "Δ paired")
    return Table("statistics", "Interventions: the honest small-n numbers", columns, rows)


def _decision_reasons(a: Analysis) -> Table | None:
    rows = tuple((v.intervention, decision_text(v), words.decision_reason(v)) for v in a.verdicts)
    return Table("decisions", "Why each decision", ("intervention", "decision", "because"), rows) if rows else None


def _factorial_intervals(a: Analysis) -> Table | None:
    if a.factorial is None or not a.factorial.terms:
        return None
    rows = tuple((t.term, "–" if t.df is None else f"{t.df:g}", signed_interval(t.ci)) for t in a.factorial.terms)
    level = f"{100 * (1 - 2 * a.alpha):g}% CI (the decision's)"
    return Table("factorial_intervals", "The factorial terms' decision intervals", ("term", "df", level), rows)


def _tests(a: Analysis) -> Table | None:
    rows = tuple(
        (v.intervention, t.test, "–" if t.statistic is None else f"{t.statistic:.4g}",
         "–" if t.df is None else f"{t.df:.4g}", signed(t.estimate, 5), spread(t.se), pvalue(t.pvalue),
         str(v.n_compared), str(v.n_pairs), words.test_note(t) or "")
        for v in a.verdicts for t in (v.prediction, v.welch, v.paired) if t is not None
    )
    if not rows:
        return None
    columns = ("intervention", "test", "t", "df", "estimate", "SE", "p", "runs compared", "pairs", "note")
    return Table("tests", "The tests behind the p-values (t = estimate / SE; prediction: Δ / (SD·f) against t(df))",
                 columns, rows)


def _runs(a: Analysis) -> Table:
    rows = tuple((f.name, ", ".join(f"{run} ({x:.6g})" for run, x in zip(f.runs, f.losses))) for f in a.floors)
    rows += tuple((v.intervention, ", ".join(v.runs)) for v in a.verdicts)
    return Table("runs", "Runs of each floor (test loss) and intervention", ("floor or intervention", "runs"), rows)


def _models(a: Analysis) -> Table | None:
    rows = ((("variance components", words.components_method(a.components)),) if a.components else ()) + (
        (("factorial effects", words.factorial_model(a.factorial)),) if a.factorial else ())
    return Table("models", "Models fitted", ("what", "model"), rows) if rows else None


def _source(a: Analysis) -> Table:
    r = a.results
    row = (r.source, r.sha256, str(len(r.runs)), str(len(r.left_out)))
    return Table("source", "Source", ("results file", "sha256", "rows used", "rows left out"), (row,))


def _floor_choice(a: Analysis) -> Table | None:
    if not a.verdicts:
        return None
    rows = tuple(
        (
            v.intervention,
            "unknown" if v.same_init is None else str(v.same_init).lower(),
            words.floor_reason(v.floor_reason),
            styled("; ".join(words.notes(v.notes)) or "–", "failure" if v.notes and v.notes[0].failure else ""),
        )
        for v in a.verdicts
    )
    return Table("floor_choice", "Why each floor", ("intervention", "same_init", "floor chosen because", "notes"), rows)


def _components(a: Analysis) -> Table | None:
    c = a.components
    if c is None:
        return None
    rows = (
        ("initialisation", spread(c.var_init**0.5), f"{c.var_init:.3g}", percent(c.share_init), "–"),
        ("training loop", spread(c.var_train**0.5), f"{c.var_train:.3g}", percent(c.share_train),
         "–" if c.df_train is None else str(c.df_train)),
    )
    over = f"all {c.n_runs} runs, {c.n_interventions} intervention(s) as fixed effects" if c.n_interventions else f"{c.n_runs} baseline runs"
    title = f"Variance components, one mixed model ({c.method}, {over}, {c.n_init_seeds} init seeds)"
    return Table("variance_components", title, ("source", "SD", "variance", "share", "df"), rows)


def _factorial(a: Analysis) -> Table | None:
    f = a.factorial
    if f is None:
        return None
    rows = tuple(
        (" = ".join((t.term, *t.aliases)), t.kind, signed(t.estimate), spread(t.se), interval(t.ci95), pvalue(t.p_value),
         pvalue(t.p_holm), outcome_css(t.decision, t.decision, "better" if t.estimate < 0 else "worse"), words.term_reading(t))
        for t in f.terms
    ) + tuple((term, "not estimable", "–", "–", "–", "–", "–", "–", words.NOT_ESTIMABLE[why])
              for term, why in f.not_estimable)
    title = f"Do the improvements add up? (OLS on {f.n_runs} runs, {f.df_resid} residual df)"
    if f.design is not None:
        d = f.design
        title = (f"Do the improvements add up? {d.runs}-run design of {d.k} interventions ({d.resolution_name}, "
                 f"{d.defining_relation}; full factorial {d.full_runs}), {f.n_runs} runs, {f.df_resid} residual df; "
                 "effect = mean loss on minus off"
                 + (f"; init-changing (new initial weights): {', '.join(f.init_changing)}" if f.init_changing else ""))
    term = "term (= its aliases)" if f.design is not None else "term"
    columns = (term, "kind", "effect on loss", "SE", "95% CI", "p", "Holm p", "decision", "reading")
    return Table("factorial", title, columns, rows)


def _repeats(a: Analysis) -> Table | None:
    if not a.results.repeats:
        return None
    rows = tuple(
        (
            r.intervention,
            str(r.init_seed),
            r.stream,
            ", ".join(r.runs),
            ", ".join(f"{x:.6g}" for x in r.test_losses),
            "identical: counted once" if r.identical else styled(REPRODUCIBILITY_FAILURE, "failure"),
        )
        for r in a.results.repeats
    )
    columns = ("intervention", "init_seed", "stream", "runs", "test losses", "outcome")
    return Table("repeats", "Repeated runs", columns, rows)


def _left_out(a: Analysis) -> Table | None:
    if not a.results.left_out:
        return None
    rows = tuple((x.run, str(x.line), x.intervention, x.status) for x in a.results.left_out)
    return Table("left_out", "Rows left out (status not 'done')", ("run", "line", "intervention", "status"), rows)


def plan_table(rows, effect: float, alpha: float, power: float) -> Table:
    """`noisefloor plan`: seeds per arm per floor (rows: stats.plan.PlanRow)."""
    body = tuple(
        (
            r.floor,
            kind_text(r.kind),
            spread(r.sd),
            str(r.df),
            "–" if r.effect_sds is None else f"{r.effect_sds:.2f}",
            "–" if r.seeds_per_arm is None else str(r.seeds_per_arm),
            "–" if r.sequential_mean_seeds is None else f"{r.sequential_mean_seeds:.1f} ({percent(r.sequential_power)})",
        )
        for r in rows
    )
    title = f"Seeds per arm to detect Δ = {effect:g} nats/token (two-sided α = {alpha:g}, power {power:g})"
    columns = ("floor", "kind", "SD", "df", "effect (SDs)", "seeds per arm", "e-value rule: mean seeds (power)")
    return Table("plan", title, columns, body)


def render_plan(table: Table, console) -> None:
    print_table(console, _rich_table(table), PROSE)


def until_decided_table(result) -> Table:
    """`sweep --until-decided`'s stopping verdict per intervention (result: sweep/until_decided.UntilDecided)."""
    rows = tuple((o.intervention, o.state, str(o.seeds), evalue(o.e_value), f"{o.threshold:g}", words.outcome_reason(o))
                 for o in result.outcomes)
    margin = "no margin" if result.margin is None else f"margin ±{result.margin:g}"
    title = (f"Until decided (error-controlled under optional stopping; alpha {result.alpha:g}, {margin}, "
             f"at most {result.max_seeds} seeds)")
    return Table("until_decided", title, ("intervention", "stopped on", "seeds", "e-value", "needed", "why"), rows)


def notes_markdown(analysis: Analysis) -> str:
    items = words.analysis_notes(analysis)
    return "\n## Notes\n\n" + "".join(f"- {_md_cell(n)}\n" for n in items) if items else ""


# ---- renderings -------------------------------------------------------------


def to_csv(items: list[Table]) -> str:
    """Each table as CSV after a `# key` line; tables separated by a blank line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for i, table in enumerate(items):
        if i:
            buffer.write("\n")
        buffer.write(f"# {table.key}\n")
        writer.writerow(table.columns)
        writer.writerows(table.rows)
    return buffer.getvalue()


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(items: list[Table], heading: str = "##") -> str:
    parts = []
    for table in items:
        lines = [f"{heading} {table.title}", ""]
        lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
        lines.append("|" + "|".join("---" for _ in table.columns) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def to_html(items: list[Table]) -> str:
    parts = []
    for table in items:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
        body = "".join(
            "<tr>" + "".join(f'<td class="{_css(cell)}">{html.escape(cell)}</td>' for cell in row) + "</tr>"
            for row in table.rows
        )
        title = html.escape(table.title)
        parts.append(f"<h2>{title}</h2>\n<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join(parts)


def _css(cell: str) -> str:
    return getattr(cell, "css", "")


def render_rich(analysis: Analysis, console, keys: tuple[str, ...] | None = None, details: bool = False) -> None:
    """Print the tables (all, or those whose key is in `keys`) and notes to a rich console."""
    # rich: only for terminal output; --json, csv and markdown never load it
    from rich.markup import escape
    from rich.panel import Panel

    banner = words.failure_notes(analysis)
    if banner:
        console.print(Panel(escape("\n".join(banner)), title="reproducibility failure", style="bold red"))
    for table in tables(analysis, details):
        if keys is not None and table.key not in keys:
            continue
        if len(table.rows) > LARGE_TABLE_ROWS:
            console.print(_plain_table(table), markup=False, highlight=False, soft_wrap=True)
        else:
            print_table(console, _rich_table(table), PROSE)
    for note in words.other_notes(analysis):
        console.print(f"• {escape(note)}")


LARGE_TABLE_ROWS = 150  # rich lays out tables at ~10 ms a row; longer ones print as plain aligned text


def _plain_table(table: Table) -> str:
    """Columns padded to their widest cell (at most 40: a longer cell runs over), one line per row, no folding:
    fast for thousands of rows."""
    widths = [min(40, max(len(c) for c in column)) for column in zip(table.columns, *table.rows)]
    lines = [table.title, "", "  ".join(c.ljust(w) for c, w in zip(table.columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table.rows]
    return "\n".join(lines) + "\n"


def _rich_table(table: Table):
    from rich import box  # rich: as in render_rich
    from rich.table import Table as RichTable

    rich_table = RichTable(title=table.title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD)
    for column in table.columns:
        rich_table.add_column(column, overflow="fold", min_width=None if column in PROSE else min(len(column), 12))
    for row in table.rows:
        rich_table.add_row(*(_styled(cell) for cell in row))
    return rich_table


def _styled(cell: str) -> str:
    from rich.markup import escape  # rich: as in render_rich

    style = {"better": "bold green", "worse": "bold red", "undecided": "yellow", "failure": "bold red"}.get(_css(cell))
    return f"[{style}]{escape(cell)}[/]" if style else escape(cell)
