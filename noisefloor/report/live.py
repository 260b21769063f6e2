"""The sweep's live view: runs queued/running/done/failed, each running run's loss, and an ETA."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from noisefloor.rundir import RunDir


class SweepView:
    """Observer + tick for `run_sweep`, rendered with rich.Live on stderr. It appears
    with the plan, so a sweep refused before training prints only its error line.
    Without a terminal (a log file) nothing redraws: a line per finished run, then one summary line."""

    def __init__(self, runs_dir: Path, console):
        self.runs_dir = runs_dir
        self.console = console
        self.total = 0
        self.steps: dict[str, int] = {}
        self.status: dict[str, str] = {}
        self.started_at: dict[str, float] = {}
        self.durations: list[float] = []
        self.jobs_seen = 1
        self.slurm: dict[str, str] = {}  # run id -> "JOBID STATE" as Slurm last said
        self.live = None  # rich.Live, on a terminal only
        self.started = False

    def __enter__(self) -> "SweepView":
        return self

    def _start(self) -> None:
        from rich.live import Live  # rich: a --quiet sweep never loads it

        self.started = True
        if not self.console.is_terminal:  # a log: no frames; a line per finished run and the summary at the end
            return
        self.live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False)
        self.live.start()

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.stop()
        elif self.started:
            self.console.print(self._summary(eta=False), markup=False, soft_wrap=True)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "plan":
            for record in event["records"]:
                run_id = record.planned.run_id
                self.steps[run_id] = record.planned.steps or "?"
                self.status[run_id] = "queued" if run_id in event["todo"] else record.status
            self.total = len(event["records"])
            if not self.started:
                self._start()
        elif kind == "started":
            self.status[event["run"]] = "running"
            self.started_at[event["run"]] = time.time()
            self.jobs_seen = max(self.jobs_seen, sum(1 for s in self.status.values() if s == "running"))
        elif kind == "slurm":
            self.slurm[event["run"]] = event["state"]
        elif kind == "finished":
            self.status[event["run"]] = event["result"].get("status", "failed")
            began = self.started_at.pop(event["run"], None)
            if began is not None and self.status[event["run"]] == "done":
                self.durations.append(time.time() - began)
            if self.started and self.live is None:
                self.console.print(self._finished_line(event["run"], event["result"]), markup=False, soft_wrap=True)
        self.tick()

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def _eta(self) -> str:
        left = sum(1 for s in self.status.values() if s in ("queued", "running"))
        if not left or not self.durations:
            return "eta --"
        seconds = sum(self.durations) / len(self.durations) * left / max(1, self.jobs_seen)
        return f"eta {int(seconds // 60)}:{int(seconds % 60):02d}"

    def _finished_line(self, run_id: str, result: dict[str, Any]) -> str:
        ended = sum(1 for s in self.status.values() if s not in ("queued", "running"))
        loss = result.get("test_loss")
        what = f"test loss {loss:.6f}" if isinstance(loss, (int, float)) else (result.get("error") or "")
        return f"{run_id}: {self.status[run_id]}  {what}  ({ended}/{self.total})"

    def _summary(self, eta: bool = True) -> str:
        counts = {s: sum(1 for v in self.status.values() if v == s) for s in ("done", "running", "queued", "failed", "diverged")}
        title = (f"{self.total} runs: {counts['done']} done, {counts['running']} running, {counts['queued']} queued, "
                 f"{counts['failed']} failed, {counts['diverged']} diverged" + (f"   {self._eta()}" if eta else ""))
        interrupted = sum(1 for v in self.status.values() if v == "interrupted")
        if interrupted:
            title += f"   {interrupted} interrupted (run again to resume)"
        return title

    def _render(self):
        from rich.table import Table  # as in _start

        table = Table(title=self._summary(), title_justify="left", expand=False)
        for column in ("running run", "step", "loss", "tok/s") + (("slurm job",) if self.slurm else ()):
            table.add_column(column, justify="right" if column in ("step", "loss", "tok/s") else "left")
        for run_id, status in self.status.items():
            if status != "running" and not (status == "queued" and run_id in self.slurm):
                continue
            line = RunDir(self.runs_dir / run_id).last_training_line() or {}
            step = f"{line.get('step', 0)}/{self.steps.get(run_id, '?')}"
            loss = f"{line['loss']:.4f}" if "loss" in line else "-"
            speed = f"{line['tokens_per_s']:,.0f}" if "tokens_per_s" in line else "-"
            table.add_row(run_id, step, loss, speed, *((self.slurm.get(run_id, ""),) if self.slurm else ()))
        return table
