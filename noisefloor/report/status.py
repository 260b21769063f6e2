"""What the sweep commands print: `status`'s table (one row per run), a sweep's closing summary, a --dry-run plan."""

from __future__ import annotations

from pathlib import Path

from noisefloor.report.console import print_table


def render_status(console, path: Path, rows: list[dict], statuses: tuple[str, ...], slurm: bool) -> None:
    """rows: the dicts `status --json` lists under "runs"; slurm: whether to show the Slurm job columns."""
    from rich.table import Table  # rich: never loaded by --json output

    counts = {s: sum(1 for r in rows if r["status"] == s) for s in statuses}
    table = Table(title=f"{path}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), title_justify="left")
    columns = ("run", "intervention", "init seed", "train seed", "status", "step", "test loss")
    for column in columns + (("slurm job", "slurm state") if slurm else ()) + ("error",):
        table.add_column(column)
    for r in rows:
        loss = f"{r['test_loss']:.6f}" if r["test_loss"] is not None else ""
        slurm_cells = (r.get("slurm_job", ""), r.get("slurm_state", "")) if slurm else ()
        train_seed = "none" if r["train_seed"] is None else str(r["train_seed"])
        table.add_row(r["run"], r["intervention"], str(r["init_seed"]), train_seed, r["status"],
                      f"{r['step']}/{r['steps'] or '?'}", loss, *slurm_cells, r["error"] or "")
    print_table(console, table, prose={"error"})


def sweep_summary_lines(summary, statuses: tuple[str, ...], results: Path) -> list[str]:
    """A sweep's closing lines (summary: sweep/runner.SweepSummary): counts, runs left alone or failed, what next."""
    counts = ", ".join(f"{summary.count(s)} {s}" for s in statuses if summary.count(s))
    lines = [f"{summary.path}: {len(summary.records)} runs ({counts}); trained now: {len(summary.trained)}"]
    lines += [f"  {run_id}: being trained by another process, left alone" for run_id in summary.skipped_running]
    lines += [f"  {r.planned.run_id}: {r.status} — {(r.result or {}).get('error')}"
              for r in summary.records if r.status in ("failed", "diverged")]
    return lines + [f"results: {results}   next: noisefloor classify {results}"]


def dry_run_lines(lines, out: Path, jobs: int) -> list[str]:
    """--dry-run: each planned run (lines: sweep/study.describe's) with its state and time, then the total."""
    todo = [line for line in lines if line.status != "done"]
    text = []
    for line in lines:
        train = "none" if line.train_seed is None else line.train_seed
        when = "unknown" if line.seconds is None else f"{line.seconds:,.0f} s{'' if line.measured else ' (estimated)'}"
        text.append(f"  {line.run_id}  {line.intervention}  init {line.init_seed}  train {train}  {line.status}  {when}")
    known = [line.seconds for line in todo if line.seconds is not None]
    if not todo:
        total = "nothing to train"
    elif len(known) < len(todo):
        total = "time unknown until a run finishes"
    else:
        total = f"about {max(sum(known) / jobs, max(known)) / 60:,.1f} min at {jobs} job(s) on CPU"
    return text + [f"{out}: {len(lines)} runs planned, {len(lines) - len(todo)} done, {len(todo)} to run; {total}"]


def run_result_lines(out, result: dict) -> list[str]:
    """What `train` prints of a run's result.json: the losses first, then every other field, whole. Only the
    fields the trainer always writes are certain (rundir.TRAINER_DONE_FIELDS); a resumed run from an older
    noisefloor, or a hand-edited file, may lack the rest, which are then left out."""
    if result["status"] != "done":
        return [f"{out}: {result['status']} — {result['error']}"]

    def given(key: str, kind=int):
        value = result.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    step, steps, tokens, memory = given("step"), given("steps"), given("tokens_seen"), given("peak_memory_bytes")
    progress = [f"step {step}/{steps if steps is not None else '?'}"] if step is not None else []
    progress.append(f"{tokens:,} tokens in {result['seconds']:,.2f} s" if tokens is not None
                    else f"{result['seconds']:,.2f} s")
    if memory is not None:
        progress.append(f"peak memory {memory:,} bytes ({given('peak_memory_kind', str) or 'unknown kind'})")
    init = given("init_digest", str)
    return [f"{out}: test loss {result['test_loss']:.6f}  val loss {result['val_loss']:.6f}  "
            f"{result['tokens_per_s']:,.0f} tok/s  final weights {result['final_digest'][7:19]}",
            f"  {result['status']}: " + ", ".join(progress),
            *([f"  initial weights {init}"] if init is not None else []),
            f"  final weights   {result['final_digest']}"]


def eval_line(result: dict) -> str:
    """What `eval` prints: the loss of the weights on the split, and what it was averaged over."""
    return (f"{result['split']} loss {result['loss']:.6f}  ({result['windows']} windows, {result['tokens']:,} tokens"
            f" of {result['weights']})")
