"""Helpers for the analysis tests: write small results CSVs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
STUDY = DATA / "study.csv"
HAND = DATA / "hand.csv"
COLUMNS = ("run", "intervention", "init_seed", "train_seed", "test_loss", "same_init")


def write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> Path:
    """Rows are dicts; missing keys are written empty; floats with repr (exact round trip)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else _text(row[c]) for c in columns])
    return path


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def run(intervention: str, init_seed: int, train_seed: int | None, loss: float, same_init=None, name=None) -> dict:
    return {
        "run": name,
        "intervention": intervention,
        "init_seed": init_seed,
        "train_seed": train_seed,
        "test_loss": float(loss),
        "same_init": same_init,
    }


def study_rows(base: dict, interventions: list[dict] | None = None) -> list[dict]:
    """The users' design: init floor at 42/22/67 (no re-seed), training-loop floor at 42 (none, 23, 67).

    base maps (init_seed, train_seed) -> loss for the five baseline cells.
    """
    rows = [run("baseline", i, t, x, True, f"base-{i}-{t}") for (i, t), x in base.items()]
    return rows + list(interventions or [])


BASE = {(42, None): 5.1032, (22, None): 5.1251, (67, None): 5.0874, (42, 23): 5.1068, (42, 67): 5.0991}


@pytest.fixture(scope="module")
def no_gc_in_holm():
    """statsmodels' Holm correction calls gc.collect() on every call (statsmodels/stats/multitest.py).
    In a test process full of objects that costs ~0.1 s per analysis and dominates tests that run
    hundreds of analyses; the correction itself is unchanged. Restored after the module."""
    import gc

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gc, "collect", lambda *args, **kwargs: 0)
        yield
