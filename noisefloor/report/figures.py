"""Figures for the report (seaborn/matplotlib, Agg canvas, PNG bytes).

No pyplot: each figure is a `matplotlib.figure.Figure` drawn on an Agg
canvas, so nothing depends on a display or a global backend.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from noisefloor.rundir import SweepDir, json_lines
from noisefloor.stats.classify import NOISE, SIGNAL, UNDECIDED, Analysis
from noisefloor.stats.factorial import half_normal_scores, lenth_pse
from noisefloor.stats.floors import TRAIN
from noisefloor.stats.table import BASELINE

LOSS_LABEL = "test loss (nats/token)"
FLOOR_COLOURS = {TRAIN: "#4C72B0", "init": "#DD8452"}
FLOOR_NAMES = {TRAIN: "training-loop floor", "init": "init floor"}
VERDICT_COLOURS = {
    f"{SIGNAL} (better)": "#2CA02C",
    f"{SIGNAL} (worse)": "#D62728",
    NOISE: "#9E9E9E",
    UNDECIDED: "#FFBF00",
    "floor run": "#000000",
}
DPI = 110


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _bands(ax, x: float, centre: float, sd: float, kind: str) -> None:
    """Nested ±3/±2/±1 SD rectangles around `centre` in column x (darker = narrower)."""
    for sds, alpha in ((3, 0.15), (2, 0.15), (1, 0.2)):
        box = Rectangle((x - 0.4, centre - sds * sd), 0.8, 2 * sds * sd, color=FLOOR_COLOURS[kind], alpha=alpha, lw=0)
        ax.add_patch(box).set_zorder(0)
    ax.hlines(centre, x - 0.4, x + 0.4, colors=FLOOR_COLOURS[kind], lw=1.5, zorder=1)


def _wrap(label: str, width: int = 13) -> str:
    """Break a tick label after '+' or '-' so that no line is much wider than `width`."""
    lines, line = [], ""
    for piece in re.split(r"(?<=[+-])", label):
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    return "\n".join(lines + [line])


def strip_plot(analysis: Analysis) -> bytes:
    """Test loss per run, per floor and intervention; each column shaded with the bands it is judged by."""
    columns, points, means = [], [], []
    for floor in analysis.floors:
        kind_name, setting = floor.name.split("@", 1)
        label = f"{kind_name} floor\n{setting}"
        columns.append((label, floor.kind, floor.mean, floor.sd))
        points += [(label, v, "floor run") for v in floor.losses]
    runs = analysis.results.runs
    for v in analysis.verdicts:
        label = _wrap(v.intervention)
        colour_key = f"{v.verdict} ({v.direction})" if v.verdict == SIGNAL else v.verdict
        columns.append((label, v.floor_kind, v.reference, v.sd))
        losses = runs.loc[runs["intervention"] == v.intervention, "test_loss"]
        points += [(label, float(x), colour_key) for x in losses]
        means.append((len(columns) - 1, v.test_loss, colour_key))
    data = pd.DataFrame(points, columns=["column", "loss", "kind"])
    lo, hi = _focus(analysis, data["loss"])
    shown = data[(data["loss"] >= lo) & (data["loss"] <= hi)]
    clipped = data[(data["loss"] < lo) | (data["loss"] > hi)]

    fig = _figure(max(7.5, 1.1 * len(columns) + 2.5), 5.0)
    ax = fig.add_subplot()
    for x, (_, kind, centre, sd) in enumerate(columns):
        if kind is not None and centre is not None and sd is not None:
            _bands(ax, x, centre, sd, kind)
    order = [c[0] for c in columns]
    sns.stripplot(
        data=shown, x="column", y="loss", hue="kind", order=order, palette=VERDICT_COLOURS,
        jitter=0.12, size=6, alpha=0.6, ax=ax, legend=False, zorder=2,
    )  # fmt: skip
    for x, mean, key in means:
        if lo <= mean <= hi:
            ax.scatter([x], [mean], marker="D", s=70, color=VERDICT_COLOURS[key], edgecolor="black", zorder=3)
    pad = 0.04 * (hi - lo)
    for column, group in clipped.groupby("column", sort=False):
        x = order.index(column)
        above = bool(group["loss"].iloc[0] > hi)
        edge = hi - pad if above else lo + pad
        ax.scatter([x], [edge], marker="^" if above else "v", s=90, color=VERDICT_COLOURS[group["kind"].iloc[0]],
                   edgecolor="black", zorder=3)
        values = ", ".join(f"{v:.2f}" for v in group["loss"])
        ax.annotate(f"off scale: {values}", (x, edge), textcoords="offset points", xytext=(0, -14 if above else 9),
                    ha="center", fontsize=7.5, color="#333333")
    ax.set_ylim(lo, hi)
    if analysis.floors and analysis.verdicts:
        ax.axvline(len(analysis.floors) - 0.5, color="#888888", ls=":", lw=1)
    ax.set_xlabel("")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title("Test loss per run\n(shaded: ±1/2/3 SD bands of the floor each column is judged against)", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    used_kinds = [k for k in FLOOR_COLOURS if any(c[1] == k for c in columns)]
    handles = [Patch(color=FLOOR_COLOURS[k], alpha=0.4, label=f"{FLOOR_NAMES[k]}: mean, ±1/2/3 SD") for k in used_kinds]
    kinds = [key for key in VERDICT_COLOURS if key in set(data["kind"])]
    handles += [Line2D([], [], marker="o", ls="", color=VERDICT_COLOURS[key], label=key) for key in kinds]
    handles.append(Line2D([], [], marker="D", ls="", color="white", markeredgecolor="black", label="intervention mean"))
    if not clipped.empty:
        handles.append(Line2D([], [], marker="^", ls="", color="white", markeredgecolor="black",
                              label="beyond the axis (value written)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(fig)


FOCUS_SPANS = 6  # how far beyond the floors' bands a run may lie and still be drawn to scale


def _focus(analysis: Analysis, losses: pd.Series) -> tuple[float, float]:
    """Y-limits that keep the floors' bands readable: the bands and floor runs, widened to every run within
    FOCUS_SPANS times their extent. Runs further out are drawn at the edge with their value written."""
    ends = [x for f in analysis.floors for x in (*f.band(3), *f.losses) if x is not None and math.isfinite(x)]
    if not ends:
        lo, hi = float(losses.min()), float(losses.max())
    else:
        lo, hi = min(ends), max(ends)
        span = max(hi - lo, 1e-9)
        near = losses[(losses >= lo - FOCUS_SPANS * span) & (losses <= hi + FOCUS_SPANS * span)]
        if not near.empty:
            lo, hi = min(lo, float(near.min())), max(hi, float(near.max()))
    pad = 0.08 * max(hi - lo, 1e-9)
    return lo - pad, hi + pad


def components_plot(analysis: Analysis) -> bytes | None:
    """Share of the baseline's test-loss variance from initialisation vs the training loop."""
    c = analysis.components
    if c is None or c.share_init is None:  # no variance, or a fit on subnormal losses whose total is NaN
        return None
    data = pd.DataFrame(
        {
            "source": ["initialisation", "training loop"],
            "share": [100 * c.share_init, 100 * c.share_train],
            "sd": [math.sqrt(c.var_init), math.sqrt(c.var_train)],
        }
    )
    fig = _figure(6.5, 2.6)
    ax = fig.add_subplot()
    sns.barplot(data=data, y="source", x="share", hue="source", palette=["#DD8452", "#4C72B0"], ax=ax, legend=False)
    for i, row in data.iterrows():
        text = f"{row['share']:.1f}%  (SD {row['sd']:.4f} nats/token)"
        inside = row["share"] > 55
        ax.text(
            row["share"] - 1.5 if inside else row["share"] + 1.5, i, text, va="center", fontsize=9,
            ha="right" if inside else "left", color="white" if inside else "black",
        )  # fmt: skip
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of a run's test-loss variance, interventions' means removed (%)")
    ax.set_ylabel("")
    ax.set_title(f"Variance components ({c.method}, {c.n_runs} runs)")
    return _png(fig)


def half_normal_plot(analysis: Analysis) -> bytes | None:
    """Daniel plot of a factorial sweep's effects: |effect| against half-normal quantiles. Effects of no
    consequence fall on the line through 0 with Lenth's pseudo-SE as slope; real ones stand off to the right."""
    f = analysis.factorial
    if f is None or f.design is None or len(f.terms) < 3:
        return None
    terms = sorted(f.terms, key=lambda t: abs(t.estimate))
    size = [abs(t.estimate) for t in terms]
    scores = half_normal_scores(len(terms))
    pse = lenth_pse(size)
    fig = _figure(7.0, 4.6)
    ax = fig.add_subplot()
    ax.plot([0, pse * scores[-1]], [0, scores[-1]], color="#9E9E9E", lw=1, ls="--",
            label=f"no effect (slope: Lenth's pseudo-SE {pse:.4f})")
    for t, x, y in zip(terms, size, scores):
        colour = VERDICT_COLOURS[f"{SIGNAL} ({'better' if t.estimate < 0 else 'worse'})" if t.decision == SIGNAL else t.decision]
        ax.scatter([x], [y], s=36, color=colour, edgecolors="black", linewidths=0.5, zorder=3,
                   marker="D" if t.changes_init else "o")
        label = " = ".join((t.term, *t.aliases)) + ("" if t.estimate < 0 else " (+)")
        ax.annotate(label, (x, y), xytext=(5, -3), textcoords="offset points", fontsize=7)
    ax.set_xlim(0, max(size) * 1.45 or 1.0)
    ax.set_xlabel("|effect| on test loss (nats/token; (+) = raises the loss)")
    ax.set_ylabel("half-normal quantile")
    d = f.design
    ax.set_title(f"Half-normal plot: {d.runs}-run design, {d.resolution_name} "
                 "(colour: decision; diamond: init-changing)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


@dataclass(frozen=True)
class Curve:
    run: str
    intervention: str
    steps: list[int]
    losses: list[float]
    val_steps: list[int]
    val_losses: list[float]


def read_curves(analysis: Analysis, sweep_dir: Path) -> tuple[list[Curve], list[str]]:
    """Training/validation curves from SWEEP_DIR/runs/<run>/metrics.jsonl; absent files are skipped."""
    curves, notes = [], []
    runs = analysis.results.runs
    for run, intervention in zip(runs["run"], runs["intervention"]):
        path = SweepDir(sweep_dir).run(run).metrics
        if not path.is_file():
            continue
        steps, losses, val_steps, val_losses, bad = [], [], [], [], 0
        for _, line, record in json_lines(path.read_text(encoding="utf-8", errors="replace")):
            try:
                if record is None:
                    raise ValueError(line)
                key = "loss" if "loss" in record else "val_loss"
                step, value = int(record["step"]), float(record[key])
            except (ValueError, TypeError, KeyError):
                bad += line.strip() != ""
                continue
            if not math.isfinite(value):  # a hand-edited NaN/Infinity: a point no axis can hold
                bad += 1
            elif key == "loss":
                steps.append(step)
                losses.append(value)
            else:
                val_steps.append(step)
                val_losses.append(value)
        if bad:
            notes.append(f"{path}: {bad} unreadable line(s) skipped")
        if steps or val_steps:
            curves.append(Curve(run, intervention, steps, losses, val_steps, val_losses))
    return curves, notes


def _curve_focus(curves: list[Curve], last: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Y-limits of both panels, set by the baseline's curves (and whatever lies near them), so one
    runaway intervention does not flatten the rest; curves beyond are cut at the edge."""
    def values(curve: Curve, since: float) -> list[float]:
        return [y for s, y in zip(curve.steps + curve.val_steps, curve.losses + curve.val_losses) if s >= since]

    ranges = []
    for since in (0.0, 0.75 * last):
        base = [y for c in curves if c.intervention == BASELINE for y in values(c, since)]
        every = [y for c in curves for y in values(c, since)]
        if not base:
            base = every
        lo, hi = min(base), max(base)
        span = max(hi - lo, 1e-6)
        near = [y for y in every if lo - 2 * span <= y <= hi + 2 * span]
        lo, hi = min(near + [lo]), max(near + [hi])
        pad = 0.05 * max(hi - lo, 1e-6)
        ranges.append((lo - pad, hi + pad))
    return ranges[0], ranges[1]


def curves_plot(curves: list[Curve]) -> bytes | None:
    """Training loss (rolling mean) over steps for every run; right panel zooms on the last quarter."""
    if not curves:
        return None
    names = list(dict.fromkeys(c.intervention for c in curves))
    palette = dict(zip([n for n in names if n != BASELINE], sns.color_palette("tab10", 10) * 10))
    palette[BASELINE] = (0.1, 0.1, 0.1)
    dashes = {name: "--" if name == BASELINE else "-" for name in names}
    fig = _figure(12.0, 4.6)
    full, tail = fig.subplots(1, 2)
    last = max(max(c.steps + c.val_steps) for c in curves)
    window = 1
    for curve in curves:
        colour = palette[curve.intervention]
        if curve.steps:
            window = max(1, len(curve.steps) // 50)
            smooth = pd.Series(curve.losses).rolling(window, min_periods=1).mean()
            for ax in (full, tail):
                ax.plot(curve.steps, smooth, color=colour, ls=dashes[curve.intervention], lw=1.0, alpha=0.8)
        if curve.val_steps:
            for ax in (full, tail):
                ax.plot(curve.val_steps, curve.val_losses, "o", color=colour, ms=3)
    full_range, tail_range = _curve_focus(curves, last)
    off_scale = set()
    for ax, (lo, hi) in ((full, full_range), (tail, tail_range)):
        ax.set_ylim(lo, hi)
    for curve in curves:
        values = [y for s, y in zip(curve.steps + curve.val_steps, curve.losses + curve.val_losses) if s >= 0.75 * last]
        if values and (min(values) > tail_range[1] or max(values) < tail_range[0]):
            off_scale.add(curve.intervention)
    tail.set_xlim(0.75 * last, last * 1.01)
    smoothing = f"training loss: rolling mean of {window} logged steps" if window > 1 else "training loss"
    for ax, title in ((full, "Loss curves across seeds"), (tail, "Last quarter of training (zoom)")):
        ax.set_xlabel("training step")
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(f"{title}\n({smoothing}; dots: validation loss)", fontsize=10)
        ax.grid(alpha=0.3)

    handles = [Line2D([], [], color=palette[n], ls=dashes[n], lw=2, label=f"{n} (off scale)" if n in off_scale else n)
               for n in names]
    handles.append(Line2D([], [], marker="o", ls="", color="black", ms=4, label="validation loss"))
    tail.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(fig)
