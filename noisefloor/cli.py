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


# ---------------------------------------------------------------- training


class TrainingProgress:
    """A rich progress bar fed by the trainer's events. It appears with the first
    event, so a run that fails validation prints only its error line."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = None
        self.task = None

    def __enter__(self) -> "TrainingProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        if event["event"] == "start":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=_console(stderr=True),
            )
            self.task = self.progress.add_task(f"train {event['run']}", total=event["steps"], completed=event["step"], status="")
            self.progress.start()
        elif event["event"] == "step" and self.progress is not None:
            status = f"loss {event['loss']:.4f}  {event['tokens_per_s']:,.0f} tok/s"
            if event.get("val_loss") is not None:
                status += f"  val {event['val_loss']:.4f}"
            self.progress.update(self.task, completed=event["step"], status=status)


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML or JSON run config (default: built-in defaults)")
    p.add_argument("--init-seed", type=int, help="weight-init seed (sets train.init_seed)")
    p.add_argument("--train-seed", type=int, help="re-seed the training loop after init (sets train.train_seed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, e.g. --set train.clipping_max_norm=3.5 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/<run id>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its newest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print result.json to stdout")


@command("train", "train one run deterministically into a run directory", _train_arguments)
def _train(args: argparse.Namespace) -> int:
    import json

    from noisefloor import config as config_module
    from noisefloor.train import trainer

    live = TrainingProgress(quiet=args.quiet or args.json)
    if args.resume:
        if args.config or args.overrides or args.init_seed is not None or args.train_seed is not None or args.out:
            raise UserError("--resume takes the run's own config.json; drop --config/--set/--init-seed/--train-seed/--out")
        with live:
            result = trainer.resume(args.resume, live)
        out = args.resume
    else:
        overrides = list(args.overrides)
        if args.init_seed is not None:
            overrides.append(f"train.init_seed={args.init_seed}")
        if args.train_seed is not None:
            overrides.append(f"train.train_seed={args.train_seed}")
        config = config_module.load(args.config, overrides)
        out = args.out or f"runs/{config.digest()[:16]}"
        with live:
            result = trainer.train(config, out, live)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif result["status"] == "done":
        print(f"{out}: test loss {result['test_loss']:.6f}  val loss {result['val_loss']:.6f}  "
              f"{result['tokens_per_s']:,.0f} tok/s  final weights {result['final_digest'][7:19]}")
    else:
        print(f"{out}: {result['status']} — {result['error']}")
    return 0 if result["status"] == "done" else 1


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|WEIGHTS", help="a run directory or a .safetensors file")
    p.add_argument("--config", help="config of the weights (default: the run's config.json)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="which fixed split (default: test)")
    p.add_argument("--json", action="store_true", help="print JSON")


@command("eval", "loss of saved weights on the fixed test (or val) split", _eval_arguments)
def _eval(args: argparse.Namespace) -> int:
    import json

    from noisefloor.train.evaluate import evaluate

    result = evaluate(args.target, args.config, args.split)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.split} loss {result['loss']:.6f}  ({result['windows']} windows, {result['tokens']} tokens)")
    return 0


def _smoke_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|WEIGHTS", help="a run directory or a .safetensors file")
    p.add_argument("--prompt", default="Every effort moves you", help="text to continue")
    p.add_argument("--tokens", type=int, default=40, help="new tokens (default 40)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-k", type=int, help="sample only among the k most likely tokens")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--config", help="config of the weights (default: the run's config.json)")


@command("smoke", "continue a prompt with a trained model (greedy, or seeded sampling)", _smoke_arguments)
def _smoke(args: argparse.Namespace) -> int:
    from noisefloor.train.generate import continue_text

    if args.tokens < 1:
        raise UserError("--tokens must be at least 1")
    print(continue_text(args.target, args.prompt, args.tokens, args.temperature, args.top_k, args.seed, args.config))
    return 0
