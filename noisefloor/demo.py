"""`noisefloor demo`: the whole study on the built-in default, end to end.

tiny-cpu on Python's own documentation: the init floor (init seeds 42, 22, 67,
no re-seed), the training-loop floor (init seed 42 with train seeds 23 and 67,
plus the no-re-seed run: three streams), six interventions at init seed 42,
then `classify` and `report`. The demo uses the classic sequential init (as the
book's trainer does), so QKV bias changes every initial weight and is judged
against the init floor, while the others keep the baseline's initial weights
and are judged against the training-loop floor.

Everything goes under one folder: the report at its top, the sweep in
`sweep/`. Interrupted and restarted, it continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from noisefloor import atomic
from noisefloor.config import RunConfig, preset
from noisefloor.report.write import write_report
from noisefloor.rundir import demo_sweep
from noisefloor.sweep.interventions import BASELINE, Registry
from noisefloor.sweep.runner import SweepOptions, SweepSummary, run_sweep
from noisefloor.sweep.spec import Plan, expand
from noisefloor.train.determinism import fingerprint

INIT_SEEDS = [42, 22, 67]
PINNED_INIT_SEED = 42
TRAIN_SEEDS = [23, 67]
INTERVENTIONS = ["grad-clip", "no-dropout", "qkv-bias", "wd-0.01", "lr-schedule", "weight-tying"]
QUICK_STEPS = 30


def demo_config(quick: bool) -> RunConfig:
    config = preset("tiny-cpu").replace(model={"init_scheme": "sequential"})
    if quick:  # a first look: same study, a quarter of the training
        config = config.replace(train={"steps": QUICK_STEPS, "eval_interval": 15, "checkpoint_interval": 15})
    return config


def demo_plan(quick: bool) -> Plan:
    base, registry = demo_config(quick), Registry()
    plan = Plan("demo-quick" if quick else "demo")
    expand(base, registry, [BASELINE], INIT_SEEDS, None, plan)                       # init floor
    expand(base, registry, [BASELINE], [PINNED_INIT_SEED], TRAIN_SEEDS, plan)        # training-loop floor
    expand(base, registry, INTERVENTIONS, [PINNED_INIT_SEED], None, plan)            # interventions
    return plan


@dataclass
class DemoResult:
    summary: SweepSummary
    analysis: Any  # stats.classify.Analysis
    report_html: Path
    report_markdown: Path


def run_demo(out: str | Path, quick: bool = False, jobs: int | None = None,
             observer: Callable[[dict[str, Any]], None] = lambda e: None,
             tick: Callable[[], None] = lambda: None) -> DemoResult:
    out = atomic.out_folder(out)
    sweep = demo_sweep(out).path
    summary = run_sweep(demo_plan(quick), sweep, SweepOptions(jobs=jobs), observer, tick)
    written = write_report(sweep, out)
    atomic.write_json(out / "environment.json", fingerprint())
    return DemoResult(summary, written.analysis, written.html, written.markdown)
