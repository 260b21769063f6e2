"""The one exception type for mistakes a user can make.

The CLI turns a UserError into a single line on stderr and exit code 2, and
so an OSError about a path the user named; every other exception is a bug
and keeps its traceback.
"""

import sys


class UserError(Exception):
    """Bad input from the user: config, CSV, file, arguments.

    The message must name the file/row/key at fault and, where it helps,
    what to do about it. It is printed as one line.
    """


def notice(message: str) -> None:
    """One line on stderr about something the library did for the user (a cache rebuilt, a checkpoint skipped)."""
    print(f"noisefloor: {message}", file=sys.stderr)
