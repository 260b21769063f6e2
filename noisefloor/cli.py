"""The `noisefloor` command: parse arguments, call the library, print.

No logic lives here. Heavy imports (torch) happen inside the handlers, so
`noisefloor classify` and `verify-identical` start fast and work without
touching torch.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from noisefloor import __version__
from noisefloor.errors import UserError

Handler = Callable[[argparse.Namespace], int]
COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler]] = []


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]):
    """Register a sub-command: its name, one-line help, argument builder and handler."""

    def register(handler: Handler) -> Handler:
        COMMANDS.append((name, help, arguments, handler))
        return handler

    return register


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("the seed list is empty")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="noisefloor",
        description="Is a change to your training run real signal, or seed noise?",
    )
    parser.add_argument("--version", action="version", version=f"noisefloor {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, arguments, handler in COMMANDS:
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        arguments(sub)
        sub.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"noisefloor {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"noisefloor {args.command}: interrupted", file=sys.stderr)
        return 130


def _verify_identical_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="a .safetensors file, or a run directory (model.safetensors, init.safetensors)")
    parser.add_argument("b", help="the file or run directory to compare it with")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


@command(
    "verify-identical",
    "Prove two checkpoints bit-identical, or show every tensor that differs (exit 0 identical, 1 different, 2 error).",
    _verify_identical_arguments,
)
def _verify_identical(args: argparse.Namespace) -> int:
    import json

    from noisefloor.checkpoints import compare_paths

    result = compare_paths(args.a, args.b)
    print(json.dumps(result.to_json(), indent=2) if args.json else result.render())
    return 0 if result.identical else 1
