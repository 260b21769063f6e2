"""First divergent step between two runs, from the parameter digests the trainer records.

The trainer writes the digest of every parameter tensor each `digest_interval`
steps (digests.jsonl). Two runs are compared at the steps both recorded: the
first step whose digests differ, the last step before it where they were
equal, and which tensors differ first. Differences in config or environment
are reported beside, since either one alone explains a divergence.
Needs no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from noisefloor.errors import UserError
from noisefloor.rundir import RunDir

# environment keys that decide bit-identity (the rest of the fingerprint is informative)
IDENTITY_KEYS = ("python", "packages", "torch_cuda", "cudnn", "torch_threads", "cpu_kernels", "blas", "device")


@dataclass
class Divergence:
    run_a: str
    run_b: str
    compared_steps: int
    first_divergent_step: int | None
    last_equal_step: int | None
    first_tensors: list[str] = field(default_factory=list)
    config_differences: list[str] = field(default_factory=list)
    environment_differences: list[str] = field(default_factory=list)
    last_common_step: int | None = None

    @property
    def diverged(self) -> bool:
        return self.first_divergent_step is not None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "diverged": self.diverged}


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: value}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """'key: a != b' for every leaf key whose values differ."""
    fa, fb = flatten("", a), flatten("", b)
    return [f"{key}: {fa.get(key)!r} != {fb.get(key)!r}" for key in sorted(fa.keys() | fb.keys()) if fa.get(key) != fb.get(key)]


def environment_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keep = lambda env: {k: env.get(k) for k in IDENTITY_KEYS}
    found = differences(keep(a), keep(b))
    return [line for line in found if not line.startswith("device.memory_bytes")]


def _environment(run: RunDir) -> dict[str, Any]:
    environment = run.read_json(run.manifest).get("environment", {})
    if not isinstance(environment, dict):
        raise UserError(f"{run.manifest} is corrupt (its environment is not an object); delete the run directory and train again")
    return environment


def diverge(run_a: str | Path, run_b: str | Path) -> Divergence:
    a, b = Path(run_a), Path(run_b)
    for run in (a, b):
        if not run.is_dir():
            raise UserError(f"run directory not found: {run}")
    dir_a, dir_b = RunDir(a), RunDir(b)
    digests_a, digests_b = dir_a.read_digests(), dir_b.read_digests()
    common = sorted(digests_a.keys() & digests_b.keys())
    if not common:
        raise UserError(f"{a} and {b} share no recorded step (different digest_interval?)")
    first = last_equal = None
    tensors: list[str] = []
    for step in common:
        da, db = digests_a[step], digests_b[step]
        if da["digest"] == db["digest"]:
            last_equal = step
            continue
        first = step
        ta, tb = da.get("tensors", {}), db.get("tensors", {})
        tensors = sorted(name for name in ta.keys() | tb.keys() if ta.get(name) != tb.get(name))
        break
    return Divergence(
        run_a=str(a), run_b=str(b), compared_steps=len(common), first_divergent_step=first,
        last_equal_step=last_equal, first_tensors=tensors,
        config_differences=differences(dir_a.read_json(dir_a.config), dir_b.read_json(dir_b.config)),
        environment_differences=environment_differences(_environment(dir_a), _environment(dir_b)),
        last_common_step=common[-1],
    )
