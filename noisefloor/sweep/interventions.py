"""Named interventions: each one a set of config overrides on the baseline.

Combinations are written `a+b` and apply both (they may not set the same key
to different values). A spec file may define more, or redefine none of these.
"""

from __future__ import annotations

from typing import Any, Mapping

from noisefloor.config import RunConfig
from noisefloor.errors import UserError

BASELINE = "baseline"

Overrides = dict[str, dict[str, Any]]  # section -> key -> value

BUILTIN: dict[str, tuple[Overrides, str]] = {
    "grad-clip": ({"train": {"clipping_max_norm": 3.5}}, "clip gradients to a global L2 norm of 3.5"),
    "no-dropout": ({"model": {"drop_rate": 0.0}}, "dropout rate 0 everywhere"),
    "qkv-bias": ({"model": {"qkv_bias": True}}, "bias in the query/key/value projections"),
    "wd-0.01": ({"train": {"weight_decay": 0.01}}, "AdamW weight decay 0.01 instead of 0.1"),
    "lr-schedule": (
        {"train": {"schedule_learning_rate": True, "initial_learning_rate": 0.0004, "learning_rate": 0.0014,
                   "min_learning_rate": 0.00014, "warmup_period_percent": 5.0}},
        "5% linear warmup to 0.0014, then cosine decay, in the base config's train.lr_schedule form: 'noisefloor' "
        "(default) and 'book' from 0.0004 down to 0.00014, 'blog' (a blog train.json) from 1.4e-8 down to 0.00014",
    ),
    "weight-tying": ({"model": {"tie_weights": True}}, "output head shares the token-embedding matrix"),
    "fp32": ({"train": {"precision": "fp32"}}, "full float32: no AMP, no TF32"),
}


def parse_overrides(raw: Any, where: str) -> Overrides:
    """A spec file's `[interventions.NAME]` table: `{model = {...}, train = {...}}` or `"section.key" = value`."""
    if not isinstance(raw, Mapping) or not raw:
        raise UserError(f"{where}: an intervention must be a non-empty table of config overrides")
    out: Overrides = {}
    for key, value in raw.items():
        if isinstance(value, Mapping):
            out.setdefault(key, {}).update(value)
            continue
        section, dot, name = key.partition(".")
        if not dot:
            raise UserError(f"{where}: override {key!r} must be written section.key (e.g. \"train.weight_decay\")")
        out.setdefault(section, {})[name] = value
    return out


class Registry:
    """Built-in interventions plus the ones a spec file defines."""

    def __init__(self, extra: Mapping[str, Overrides] | None = None):
        self.overrides: dict[str, Overrides] = {name: spec for name, (spec, _) in BUILTIN.items()}
        for name, overrides in (extra or {}).items():
            if "+" in name or name == BASELINE:
                raise UserError(f"intervention name {name!r} is reserved ('baseline' and names with '+')")
            self.overrides[name] = overrides

    def resolve(self, name: str) -> Overrides:
        """Overrides of a name or an `a+b` combination (empty for baseline)."""
        if name == BASELINE:
            return {}
        merged: Overrides = {}
        parts = name.split("+")
        if len(set(parts)) != len(parts):
            raise UserError(f"intervention {name!r} names a part twice")
        for part in parts:
            if part not in self.overrides:
                known = ", ".join(sorted(self.overrides))
                raise UserError(f"unknown intervention {part!r} (known: {known}; combine with '+')")
            for section, values in self.overrides[part].items():
                for key, value in values.items():
                    previous = merged.get(section, {}).get(key, value)
                    if previous != value:
                        raise UserError(f"intervention {name!r}: its parts set {section}.{key} to {previous!r} and {value!r}")
                    merged.setdefault(section, {})[key] = value
        return merged

    def apply(self, base: RunConfig, name: str) -> RunConfig:
        overrides = self.resolve(name)
        try:
            config = base.replace(**overrides)
        except UserError as exc:
            raise UserError(f"intervention {name!r}: {exc}") from None
        if name != BASELINE and config == base:
            raise UserError(f"intervention {name!r} changes nothing in this config (it already has those settings)")
        return config
