"""Where rendered output goes: a rich console, and tables printed whole when no terminal reads them.

A terminal has a width, and a table wider than it must give somewhere (prose columns wrap first). A file or a CI
log has none: there a table gets the width it needs, its title stays on one line, and a name or a number is never
cut or wrapped; only prose columns wrap (at 200 columns, so lines stay readable).
"""

from __future__ import annotations

import os
import sys

LOG_WIDTH = 200  # without a terminal (and without COLUMNS): where prose wraps


def make_console(stderr: bool = False):
    from rich.console import Console  # rich: a quarter of a second, never loaded by --json output

    stream = sys.stderr if stderr else sys.stdout
    # rich would lay out at 80 columns without a terminal; COLUMNS, when set, still decides
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, highlight=False, width=LOG_WIDTH if wide else None)


def print_table(console, table, prose: frozenset[str] | set[str] = frozenset()) -> None:
    """Print a rich table. To a terminal as it is; elsewhere the columns not named in `prose` never wrap,
    the title is a line of its own, and the console widens for this table when its columns need more."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.measure import Measurement  # as in make_console
    from rich.text import Text

    unlimited = console.options.update_width(1 << 20)
    for column in table.columns:
        if column.header not in prose:
            column.no_wrap = True
            column.overflow = "ignore"
            column.min_width = max(Measurement.get(console, unlimited, cell).maximum
                                   for cell in (column.header, *column.cells))
    title, table.title = table.title, None
    if title:
        console.print(Text(str(title), style=table.title_style or ""), soft_wrap=True)
    needed = Measurement.get(console, unlimited, table).minimum
    width = console.width
    console.width = max(width, needed)
    try:
        console.print(table)
    finally:
        console.width = width
