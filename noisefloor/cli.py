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


# ---- analysis: classify and report -------------------------------------------


def _source_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="CSV_OR_SWEEP_DIR",
        help="results CSV (columns intervention, init_seed, train_seed, test_loss) or a sweep directory (its results.csv)",
    )


def _classify_arguments(parser: argparse.ArgumentParser) -> None:
    _source_argument(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the analysis as JSON (schema in the README)")
    output.add_argument(
        "--format", choices=("table", "csv", "markdown"), default="table", help="how to print the tables (default: table)",
    )


@command("classify", "Noise floors and a signal/noise verdict per intervention from a results CSV", _classify_arguments)
def _classify(args: argparse.Namespace) -> int:
    from noisefloor.report import tables
    from noisefloor.stats.classify import analyse

    analysis = analyse(args.source)
    if args.json:
        import json

        print(json.dumps(analysis.to_json(), indent=2))
    elif args.format == "csv":
        sys.stdout.write(tables.to_csv(tables.tables(analysis)))
    elif args.format == "markdown":
        sys.stdout.write(tables.to_markdown(tables.tables(analysis)) + tables.notes_markdown(analysis))
    else:
        tables.render_rich(analysis, _console())
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    _source_argument(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder, e.g. reports/NAME")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")


@command("report", "Markdown and self-contained HTML report with figures from a results CSV", _report_arguments)
def _report(args: argparse.Namespace) -> int:
    from noisefloor.report.write import write_report

    written = write_report(args.source, args.out)
    if not args.quiet:
        _console().print(f"report written to {written.markdown} and {written.html}", markup=False)
    return 0
