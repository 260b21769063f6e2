"""What `noisefloor status` prints: one row per run of a sweep."""

from __future__ import annotations

from pathlib import Path

from noisefloor.report.console import print_table


def render_status(console, path: Path, rows: list[dict], statuses: tuple[str, ...], slurm: bool) -> None:
    """rows: the dicts `status --json` lists under "runs"; slurm: whether to show the Slurm job columns."""
    from rich.table import Table

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
