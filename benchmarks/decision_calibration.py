"""How often each rule says signal / noise / undecided, by true effect: the 3-SD rule against the decision.

Simulated results files go through the real `analyse_results`. Design: n baseline runs at one init seed
(n training streams: the training-loop floor) and one intervention that keeps the initial weights, either
one run ("one run", judged by the prediction test) or a run at each of the baseline's n streams ("paired",
the paired t-test). Runs are N(level + effect, SD) with SD the training-loop SD; effects in SDs.
The decision uses alpha 0.05 and the margin --margin-sds (in SDs).

    python benchmarks/decision_calibration.py [--studies 400] [--margin-sds 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from noisefloor.stats.classify import analyse_results
from noisefloor.stats.table import results_from_text

SD = 0.006
EFFECTS = (0.0, 1.0, 2.0, 3.0, 5.0)


def results_text(rng, effect: float, n: int, paired: bool) -> str:
    streams = [""] + [str(100 + i) for i in range(n - 1)]
    lines = ["intervention,init_seed,train_seed,test_loss,same_init"]
    lines += [f"baseline,42,{t},{float(5.0 + SD * z)!r},true" for t, z in zip(streams, rng.standard_normal(n))]
    own = streams if paired else streams[:1]
    lines += [f"iv,42,{t},{float(5.0 + effect * SD + SD * z)!r},true" for t, z in zip(own, rng.standard_normal(len(own)))]
    return "\n".join(lines) + "\n"


def rates(effect: float, n: int, paired: bool, studies: int, margin: float, rng) -> tuple[dict, dict]:
    three, decision = {}, {}
    for _ in range(studies):
        (v,) = analyse_results(results_from_text(results_text(rng, effect, n, paired), "sim.csv"), 0.05, margin).verdicts
        three[v.verdict] = three.get(v.verdict, 0) + 1
        decision[v.decision] = decision.get(v.decision, 0) + 1
    return ({k: c / studies for k, c in three.items()}, {k: c / studies for k, c in decision.items()})


def main() -> None:
    import gc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=400)
    parser.add_argument("--margin-sds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    gc.collect = lambda *a, **k: 0  # statsmodels' Holm calls gc.collect() on every analysis; results unchanged
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    print(f"{args.studies} simulated files per row; decision: alpha 0.05, margin {args.margin_sds:g} SD")
    print("| design | n | effect (SD) | 3-SD: signal / noise / undecided | decision: signal / noise / undecided |")
    print("|---|---|---|---|---|")
    for paired in (False, True):
        for n in (3, 5):
            for effect in EFFECTS:
                three, decision = rates(effect, n, paired, args.studies, args.margin_sds * SD, rng)
                cells = [" / ".join(f"{r.get(k, 0):.2f}" for k in ("signal", "noise", "undecided")) for r in (three, decision)]
                print(f"| {'paired' if paired else 'one run'} | {n} | {effect:g} | {cells[0]} | {cells[1]} |", flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
