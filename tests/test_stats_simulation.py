"""Simulated studies with no real effects: the tool's `signal` rate equals the false-positive rate it reports.

Each simulated CSV holds K independent blocks (one init seed each, with its own floor and its own
intervention), so its K verdicts are independent and the observed signal fraction is binomial
around the mean reported rate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_helpers import no_gc_in_holm, run, write_csv  # noqa: F401 (fixture)

from noisefloor.stats.classify import analyse

pytestmark = pytest.mark.usefixtures("no_gc_in_holm")
K = 400  # blocks per simulated study (the last test uses 300: its REML fit grows with K)


def check(path, expected_rate: float, k: int = K) -> None:
    verdicts = analyse(path).verdicts
    assert len(verdicts) == k
    reported = np.array([v.false_positive_rate_3sd for v in verdicts])
    assert reported == pytest.approx(expected_rate)
    observed = np.mean([v.verdict == "signal" for v in verdicts])
    sampling_sd = math.sqrt(expected_rate * (1 - expected_rate) / k)
    assert abs(observed - expected_rate) < 3.5 * sampling_sd, (observed, expected_rate)


def test_training_loop_floor_of_3_single_runs(tmp_path):
    """3 training streams at each of K init seeds, one intervention run each: the training-loop SD pooled
    over the K floors has 2K degrees of freedom, so the 3-SD rule's rate is 2 (1 - T_2K(3 / f)) ~ 0.95%
    (one floor alone: 12%); each intervention is still compared with the mean of its own init seed."""
    from scipy import stats

    rng = np.random.default_rng(11)
    rows = []
    for block in range(K):
        mu = 5.0 + rng.normal(0, 0.02)  # each init seed has its own level
        streams = [None, 10_000 + 2 * block, 10_001 + 2 * block]  # train seeds unique to the block
        rows += [run("baseline", block, t, x, True) for t, x in zip(streams, rng.normal(mu, 0.01, 3))]
        rows.append(run(f"iv{block}", block, None, rng.normal(mu, 0.01), True))
    check(write_csv(tmp_path / "r.csv", rows), 2 * stats.t.sf(3 / math.sqrt(4 / 3), 2 * K))


def test_init_floor_of_4_and_interventions_with_2_seeds(tmp_path):
    """Mean of 2 runs against a 4-run init floor: f^2 = 1/2 + 1/4, FPR = 2 (1 - T_3(3 / f)) ~ 4%."""
    from scipy import stats

    rng = np.random.default_rng(12)
    rows = []
    for block in range(K):
        seeds = range(4 * block, 4 * block + 4)
        stream = 50_000 + block  # one training-stream setting per block: one init floor per block
        rows += [run("baseline", s, stream, x, False) for s, x in zip(seeds, rng.normal(5.0, 0.02, 4))]
        rows += [run(f"iv{block}", s, stream, x, False) for s, x in zip(seeds[:2], rng.normal(5.0, 0.02, 2))]
    check(write_csv(tmp_path / "r.csv", rows), 2 * stats.t.sf(3 / math.sqrt(0.75), 3))


def test_same_init_runs_at_two_init_seeds_paired_with_the_baseline(tmp_path):
    """Training-loop floor at seed a (3 streams), one baseline run at seed b, the intervention at a and b:
    f^2 = 1/2 + (1/3 + 1/1) / 4, df = 2 per floor, pooled over the 300 floors: 600."""
    from scipy import stats

    rng = np.random.default_rng(13)
    rows = []
    for block in range(300):
        a, b = 2 * block, 2 * block + 1
        level = {s: 5.0 + rng.normal(0, 0.03) for s in (a, b)}  # init variance, shared by same-init runs
        streams = [None, 20_000 + 2 * block, 20_001 + 2 * block]
        rows += [run("baseline", a, t, level[a] + rng.normal(0, 0.005), True) for t in streams]
        rows.append(run("baseline", b, None, level[b] + rng.normal(0, 0.005), True))
        rows += [run(f"iv{block}", s, None, level[s] + rng.normal(0, 0.005), True) for s in (a, b)]
    f = math.sqrt(1 / 2 + (1 / 3 + 1) / 4)
    check(write_csv(tmp_path / "r.csv", rows), 2 * stats.t.sf(3 / f, 600), k=300)
