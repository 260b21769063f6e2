"""Adding seeds until decided: the e-value (anytime-valid) against fixed-n and naively re-run t-tests.

Paired design: each added seed gives one difference (intervention - baseline at the same seeds), drawn
N(effect, 1), effect in SDs of that difference. Three rules, each at alpha:

- sequential e-value: look after every seed from --start to --max-seeds, stop at the first e >= 1/alpha
  (noisefloor's `e_value`, stats/sequential.py); a study that never gets there uses --max-seeds;
- fixed n: one paired t-test at exactly --max-seeds seeds (and at --start seeds);
- re-run t-test: the fixed-n test repeated after every seed, stopping at the first p < alpha: what
  re-running `classify` on the p-value does; its type I error is inflated.

Printed per effect: the rate of 'signal' (type I error at 0, power otherwise) and the mean seeds used.

    python benchmarks/sequential_calibration.py [--studies 20000] [--start 3] [--max-seeds 20] [--alpha 0.05]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

from noisefloor.stats import sequential


def simulate(effect: float, studies: int, start: int, max_seeds: int, alpha: float, rng) -> dict:
    d = rng.standard_normal((studies, max_seeds)) + effect
    e_stopped, e_used = sequential.sequential_rule(d, start, alpha)
    t, n = sequential.running_t(d)
    keep = n >= start
    p = 2 * stats.t.sf(np.abs(t[:, keep]), n[keep] - 1)
    rerun_stopped, rerun_used = sequential.first_stop(p < alpha, n[keep])
    return {
        "e": (e_stopped.mean(), e_used.mean()),
        "rerun": (rerun_stopped.mean(), rerun_used.mean()),
        "fixed_max": float((p[:, -1] < alpha).mean()),
        "fixed_start": float((p[:, 0] < alpha).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20_000)
    parser.add_argument("--start", type=int, default=3)
    parser.add_argument("--max-seeds", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"paired differences N(effect, 1); looks after every seed {args.start}..{args.max_seeds}; "
          f"alpha = {args.alpha}; {args.studies} studies per row; e-value prior SD {sequential.PRIOR_SD}")
    print(f"| effect (SD) | e-value: signal | e-value: mean seeds | re-run t-test: signal | re-run: mean seeds "
          f"| fixed n={args.start} | fixed n={args.max_seeds} |")
    print("|---|---|---|---|---|---|---|")
    for effect in (0.0, 1.0, 2.0, 3.0):
        r = simulate(effect, args.studies, args.start, args.max_seeds, args.alpha, rng)
        print(f"| {effect:g} | {r['e'][0]:.3f} | {r['e'][1]:.1f} | {r['rerun'][0]:.3f} | {r['rerun'][1]:.1f} "
              f"| {r['fixed_start']:.3f} | {r['fixed_max']:.3f} |")


if __name__ == "__main__":
    main()
