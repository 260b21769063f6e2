"""Property tests: verdicts do not depend on the units or origin of the loss; floor invariants."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from analysis_helpers import no_gc_in_holm, run  # noqa: F401 (fixture)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from noisefloor.stats.classify import analyse_results
from noisefloor.stats.table import results_from_text

LOSS = st.integers(4000, 7000).map(lambda i: i / 1000)  # 4.000 .. 7.000, typed to 3 decimals


@st.composite
def studies(draw):
    """A small study: a training-loop floor, an init floor, or both, and 1-4 interventions."""
    design = draw(st.sampled_from(["train", "init", "both"]))
    rows, seeds = [], [42]
    if design in ("train", "both"):
        streams = [None] + list(range(1, draw(st.integers(2, 4))))
        rows += [run("baseline", 42, t, draw(LOSS)) for t in streams]
    if design in ("init", "both"):
        seeds += list(range(100, 100 + draw(st.integers(1, 3))))
        rows += [run("baseline", s, None, draw(LOSS)) for s in seeds if design == "init" or s != 42]
    for i in range(draw(st.integers(1, 4))):
        same_init = draw(st.sampled_from([True, False, None]))
        for s in draw(st.lists(st.sampled_from(seeds), min_size=1, max_size=3, unique=True)):
            rows.append(run(f"iv{i}", s, None, draw(LOSS), same_init))
    if draw(st.booleans()):
        rows.append(dict(rows[0]))  # an identical repeat
    return rows


def csv_text(rows, transform=lambda x: x) -> str:
    lines = ["intervention,init_seed,train_seed,test_loss,same_init"]
    for r in rows:
        same = "" if r["same_init"] is None else str(r["same_init"]).lower()
        seed = "" if r["train_seed"] is None else r["train_seed"]
        lines.append(f"{r['intervention']},{r['init_seed']},{seed},{transform(r['test_loss'])!r},{same}")
    return "\n".join(lines) + "\n"


def analysis_of(rows, transform=lambda x: x):
    return analyse_results(results_from_text(csv_text(rows, transform), "study.csv"))


def outcome(analysis):
    return [(v.intervention, v.verdict, v.direction, v.floor.name if v.floor else None) for v in analysis.verdicts]


pytestmark = pytest.mark.usefixtures("no_gc_in_holm")
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    rows=studies(),
    shift=st.integers(-3000, 3000).map(lambda i: i / 1000),
    scale=st.fractions(Fraction(1, 4), Fraction(4), max_denominator=8).map(float),
)
def test_verdicts_unchanged_by_shifting_or_scaling_all_losses(rows, shift, scale):
    original = analysis_of(rows)
    # The verdict compares |Δ| with 3 SD; exactly on the boundary, rounding may tip either way.
    assume(all(v.z is None or abs(abs(v.z) - 3) > 1e-6 for v in original.verdicts))
    for transform in (lambda x: x + shift, lambda x: x * scale):
        changed = analysis_of(rows, transform)
        assert outcome(changed) == outcome(original)
        for before, after in zip(original.verdicts, changed.verdicts):
            assert (before.z is None) == (after.z is None)
            if before.z is not None:
                assert after.z == pytest.approx(before.z, rel=1e-6, abs=1e-6)
            assert after.false_positive_rate_3sd == before.false_positive_rate_3sd
        if original.components and original.components.total > 0:
            assert changed.components.share_init == pytest.approx(original.components.share_init, abs=1e-4)


@SETTINGS
@given(rows=studies())
def test_floor_invariants(rows):
    for floor in analysis_of(rows).floors:
        assert floor.sd >= floor.sd_population >= 0
        assert floor.sd == pytest.approx(floor.sd_population * math.sqrt(floor.n / (floor.n - 1)))
        for k in (1, 2, 3):
            lo, hi = floor.band(k)
            assert lo <= floor.mean <= hi
        if floor.constant:  # no spread: no interval or rate that would look meaningful
            assert floor.prediction_interval_997 is None and floor.false_positive_rate_3sd is None
            continue
        lo, hi = floor.prediction_interval_997
        assert lo <= floor.mean <= hi
        assert 0 < floor.false_positive_rate_3sd < 1
