"""Is every value of a command's --json in its text output? The rule the output tests apply.

- null and true/false: not looked for (the text says them as words: "–", "IDENTICAL", "done").
- a number: some number printed in the text, read at the precision it is printed with, is the value: |value −
  printed| ≤ half a unit of the printed number's last digit (its last significant digit in scientific notation;
  a percentage read as a fraction; thousands separators ignored), and within CLOSE (20%) of the value: a
  coarse number ("0 failed", "5 runs") shows itself, not every value within half a unit of it. A p-value below 1e-6 may read "<1e-6", an
  e-value above 1e6 ">1e6".
- a string without spaces (a name, a run id, a digest, a path): verbatim in the text, so never cut or wrapped.
- a sentence: each of its words verbatim in the text (a table may wrap a sentence between words, never in one).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any, Iterator

CLOSE = 0.2
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?%?")


def printed_numbers(text: str) -> list[tuple[float, float]]:
    """(value, half a unit of its last printed digit) of every number in the text."""
    out = []
    for token in NUMBER.findall(text):
        raw = token.rstrip("%").replace(",", "")
        value = float(raw)
        if "e" in raw:
            mantissa = raw.split("e")[0].lstrip("+-").replace(".", "").lstrip("0")
            half = 0.5 * 10.0 ** (math.floor(math.log10(abs(value))) - max(len(mantissa), 1) + 1) if value else 0.0
        else:
            half = 0.5 * 10.0 ** Decimal(raw).as_tuple().exponent
        if token.endswith("%"):
            value, half = value / 100, half / 100
        out.append((value, half * (1 + 1e-9)))
    return out


def leaves(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, f"{path}[{i}]")
    else:
        yield path, obj


def _shown(value: Any, text: str, numbers: list[tuple[float, float]]) -> bool:
    if isinstance(value, str):
        return all(word in text for word in value.split()) if " " in value.strip() else value in text
    if value < 1e-6 and value >= 0 and "<1e-6" in text or value > 1e6 and ">1e6" in text:
        return True
    return any(abs(value - shown) <= min(half, CLOSE * abs(value)) for shown, half in numbers)


def missing_from_text(data: Any, text: str, exempt: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """The (path, value) leaves of `data` the text does not show; paths starting with an `exempt` entry aside."""
    numbers = printed_numbers(text)
    return [
        (path, value)
        for path, value in leaves(data)
        if value is not None and not isinstance(value, bool) and not path.startswith(exempt)
        and not _shown(value, text, numbers)
    ]
