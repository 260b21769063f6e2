"""What the bitwise tools print: verify-identical's comparison, diverge's first divergent step, doctor's audit."""

from __future__ import annotations

from typing import Any

from noisefloor.checkpoints import Comparison, PathComparison
from noisefloor.report.console import print_table


def _number(value: float | int | None) -> str:
    return f"{value:.6g}" if isinstance(value, float) else f"{value:,}"


def show_name(name: str) -> str:
    """A tensor name or metadata key quoted and escaped, and whole: a report never cuts a name (an error
    message's checkpoints.show_name shortens it)."""
    return repr(name)


def comparison_lines(c: Comparison) -> list[str]:
    """One file pair, one line per finding."""
    verdict = "IDENTICAL" if c.identical else "DIFFERENT"
    skipped = f", {len(c.ignored)} ignored" if c.ignored else ""
    lines = [f"{c.a} vs {c.b}: {verdict} ({c.tensors_compared} tensors, {c.bytes_compared:,} bytes compared{skipped})"]
    if c.metadata is not None:
        m = c.metadata
        if m.a is None or m.b is None:
            lines.append(f"  metadata: {'A' if m.a is None else 'B'} has no __metadata__")
        lines += [f"  metadata: key {show_name(k)} only in A" for k in m.only_in_a]
        lines += [f"  metadata: key {show_name(k)} only in B" for k in m.only_in_b]
        lines += [f"  metadata: key {show_name(k)}: {show_name(m.a[k])} vs {show_name(m.b[k])}" for k in m.changed]  # type: ignore[index]
    lines += [f"  missing from B: {show_name(name)}" for name in c.only_in_a]
    lines += [f"  extra in B: {show_name(name)}" for name in c.only_in_b]
    lines += [f"  {show_name(m.name)}: {m.reason}" for m in c.mismatches]
    for d in c.differences:
        unit = "elements" if d.unit == "element" else "bytes"
        text = f"  {show_name(d.name)} {d.dtype} {list(d.shape)}: {d.differing:,} of {d.total:,} {unit} differ ({100 * d.fraction:.3g}%)"
        if d.max_ulp is not None:
            text += f"; max |a-b| {_number(d.max_abs_diff)}; max ULP {d.max_ulp:,}"
        text += f"; {d.nan_mismatches:,} with NaN"
        lines.append(text + f"; first at {list(d.first_index)}")
    return lines


def path_comparison_text(result: PathComparison) -> str:
    """What `verify-identical` prints: the verdict, then each file pair."""
    lines = ["IDENTICAL" if result.identical else "DIFFERENT"]
    lines += [f"{name}: only in {result.a}" for name in result.only_in_a]
    lines += [f"{name}: only in {result.b}" for name in result.only_in_b]
    for comparison in result.files:
        lines += comparison_lines(comparison)
    return "\n".join(lines)


def divergence_lines(found) -> list[str]:
    """What `diverge` prints (found: diverge.Divergence)."""
    if found.diverged:
        lines = [f"DIVERGED at step {found.first_divergent_step} (last equal step: "
                 f"{found.last_equal_step if found.last_equal_step is not None else 'none recorded'}; "
                 f"{found.compared_steps} recorded steps compared, the last common one {found.last_common_step})",
                 f"tensors that differ first ({len(found.first_tensors)}): {', '.join(found.first_tensors)}"]
    else:
        lines = [f"NO DIVERGENCE in {found.compared_steps} recorded steps (last common step {found.last_common_step})"]
    lines.append(f"runs: {found.run_a} vs {found.run_b}")
    if found.config_differences:
        lines.append("configs differ (this alone explains a divergence):")
        lines += [f"  {line}" for line in found.config_differences]
    if found.environment_differences:
        lines.append("environments differ (bit-identity needs the same stack and device):")
        lines += [f"  {line}" for line in found.environment_differences]
    if found.diverged and not found.config_differences and not found.environment_differences:
        lines.append("same config and environment: a nondeterministic kernel or an outside change (data files?) is to blame")
    return lines


def render_doctor(console, fingerprint: dict[str, Any], hazards, mode: dict[str, Any], test: dict | None) -> None:
    """What `doctor` prints: the fingerprint table, the hazards found, the settings runs use, the self-test."""
    from rich.table import Table  # rich: never loaded by --json output

    table = Table(title="environment fingerprint", title_justify="left", show_header=False)
    table.add_column("key")
    table.add_column("value")
    for key, value in fingerprint.items():
        text = ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
        table.add_row(key, text or "-")
    print_table(console, table, prose={"value"})
    found = [h for h in hazards if h.found]
    console.print(f"determinism hazards in this environment's defaults: {len(found)}")
    for h in found:
        handled = "noisefloor runs: handled" if h.handled else "NOT handled: fix the environment"
        console.print(f"  - {h.name}: {h.detail} [{handled}]", markup=False)
    absent = [h for h in hazards if not h.found]
    if absent:
        console.print(f"checked, not found here: {len(absent)}")
        for h in absent:
            console.print(f"  - {h.name}: {h.detail}", markup=False)
    console.print("noisefloor runs use: " + ", ".join(f"{k}={v}" for k, v in mode.items()))
    if test is not None:
        verdict = "PASS" if test["passed"] else "FAIL"
        console.print(f"self-test: trained {test['steps']} steps twice on {test['device']}: {verdict} "
                      f"({test['final_digest'][:23]} vs {test['second_digest'][:23]})")
