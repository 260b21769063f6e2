"""The `noisefloor` command: parse arguments, call the library, print.

No logic lives here. Heavy imports (torch; scipy, pandas and statsmodels in
stats/; rich and matplotlib in report/; sweep/ and what it loads) happen inside
the handlers, so each command loads only what it uses: `classify` and
`verify-identical` start fast and work without touching torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn

from noisefloor import __version__, atomic
from noisefloor import config as config_module
from noisefloor.checkpoints import compare_paths
from noisefloor.config import check_seed, seed_list
from noisefloor.diverge import diverge
from noisefloor.errors import UserError
from noisefloor.report.bitwise import path_comparison_text
from noisefloor.report.status import eval_line, run_result_lines
from noisefloor.rundir import RunDir, SweepDir, default_run_dir, demo_sweep

Handler = Callable[[argparse.Namespace], int]
# --help lists the commands in the order a newcomer uses them
# stats.tests.ALPHA and POWER (a test keeps them equal); not imported from there, which would load scipy for every command
DEFAULT_ALPHA, DEFAULT_POWER = 0.05, 0.8
ORDER = ("demo", "init", "train", "eval", "export", "smoke", "design", "sweep", "reseed", "status", "classify", "plan", "report",
         "verify-identical", "diverge", "doctor")
COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler]] = []


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]):
    """Register a sub-command: its name, one-line help, argument builder and handler."""

    def register(handler: Handler) -> Handler:
        COMMANDS.append((name, help, arguments, handler))
        return handler

    return register


def _console(stderr: bool = False):
    from noisefloor.report.console import make_console  # rich: a quarter of a second, not needed by --json or --quiet output

    return make_console(stderr)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _number(text: str, low: float, high: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not low < value < high:
        raise argparse.ArgumentTypeError(f"{what}, got {text}")
    return value


def _alpha(text: str) -> float:
    return _number(text, 0.0, 0.5, "alpha must be between 0 and 0.5 (e.g. 0.05)")


def _minutes(text: str) -> float:
    return _number(text, 0.0, float("inf"), "must be more than 0 minutes")


def _positive_number(text: str) -> float:
    return _number(text, 0.0, float("inf"), "must be a positive number (nats/token, e.g. 0.01)")


def _seed(text: str) -> int:
    """config.py's rule, applied while parsing, so a bad seed is a usage mistake."""
    try:
        return check_seed(int(text), "a seed")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds between 0 and 2**63-1, got {text!r}") from None
    try:
        return seed_list(seeds, repr(text), "42,22,67")
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class OneLineErrorParser(argparse.ArgumentParser):
    """A usage mistake is one line naming it and where help is, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="noisefloor",
        description="Is a change to your training run real signal, or seed noise?",
        epilog="Start with `noisefloor demo`: the whole study on a built-in default, in a few minutes on a CPU.",
    )
    parser.add_argument("--version", action="version", version=f"noisefloor {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineErrorParser)
    for name, help_text, arguments, handler in sorted(COMMANDS, key=lambda c: ORDER.index(c[0])):
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
    except BrokenPipeError:  # `noisefloor classify --json | head`: the reader left, nothing is wrong
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:
        if exc.filename is None:  # not about a path the user named: a bug or a failing machine, keep the traceback
            raise
        print(f"noisefloor {args.command}: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2


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
            # rich: not needed with --quiet or --json
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
    p.add_argument("--init-seed", type=_seed, help="weight-init seed (sets train.init_seed)")
    p.add_argument("--train-seed", type=_seed, help="re-seed the training loop after init (sets train.train_seed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, e.g. --set train.clipping_max_norm=3.5 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/<run id>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its newest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print result.json to stdout")


@command("train", "train one run deterministically into a run directory", _train_arguments)
def _train(args: argparse.Namespace) -> int:
    live = TrainingProgress(quiet=args.quiet or args.json)
    if args.resume:
        if args.config or args.overrides or args.init_seed is not None or args.train_seed is not None or args.out:
            raise UserError("--resume takes the run's own config.json; drop --config/--set/--init-seed/--train-seed/--out")
        from noisefloor.train import trainer  # torch: only once the arguments are known to be usable

        with live:
            result = trainer.resume(args.resume, live)
        out = args.resume
    else:
        seeds = {"init_seed": args.init_seed, "train_seed": args.train_seed}
        config = config_module.load(args.config, args.overrides, {k: v for k, v in seeds.items() if v is not None})
        out = args.out or str(default_run_dir(config))
        from noisefloor.train import trainer  # torch: seconds to import, so a config error is reported first

        with live:
            result = trainer.train(config, out, live)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print("\n".join(run_result_lines(out, result)))
    return 0 if result["status"] == "done" else 1


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|WEIGHTS", help="a run directory or a .safetensors file")
    p.add_argument("--config", help="config of the weights: a file, a preset name or the blog's run folder "
                                    "(default: the run's config.json)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="which fixed split (default: test)")
    p.add_argument("--json", action="store_true", help="print JSON")


@command("eval", "loss of saved weights on the fixed test (or val) split", _eval_arguments)
def _eval(args: argparse.Namespace) -> int:
    from noisefloor.train.evaluate import evaluate  # torch: loaded by this command only

    result = evaluate(args.target, args.config, args.split)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(eval_line(result))
    return 0


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|WEIGHTS", help="a run directory (its model.safetensors) or a .safetensors file")
    p.add_argument("--to", required=True, choices=("book",), help="book: the state dict of the book's GPTModel (masks included)")
    p.add_argument("--out", help="file to write (default: beside the weights, model.book.safetensors)")
    p.add_argument("--config", help="config of the weights (default: the run's config.json)")


@command("export", "write saved weights for the book's GPTModel (load_state_dict with strict=True)", _export_arguments)
def _export(args: argparse.Namespace) -> int:
    from noisefloor.train.evaluate import export  # torch: loaded by this command only

    print(export(args.target, args.to, args.out, args.config))
    return 0


def _smoke_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|WEIGHTS", help="a run directory or a .safetensors file")
    p.add_argument("--prompt", default="Every effort moves you", help="text to continue")
    p.add_argument("--tokens", type=_positive_int, default=40, help="new tokens (default 40)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-k", type=_positive_int, help="sample only among the k most likely tokens")
    p.add_argument("--seed", type=_seed, default=0, help="sampling seed (default 0)")
    p.add_argument("--config", help="config of the weights (default: the run's config.json)")


@command("smoke", "continue a prompt with a trained model (greedy, or seeded sampling)", _smoke_arguments)
def _smoke(args: argparse.Namespace) -> int:
    from noisefloor.train.generate import continue_text  # torch: loaded by this command only

    print(continue_text(args.target, args.prompt, args.tokens, args.temperature, args.top_k, args.seed, args.config))
    return 0


# ---------------------------------------------------------------- sweeps


def _executor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="the study folder (default: the current folder): results.csv, sweep.json, runs/<run>/")
    p.add_argument("--config", help="base run config, a file or a preset (default: noisefloor.toml's, else tiny-cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a key of the base config (repeatable)")
    p.add_argument("--interventions", type=lambda s: [n.strip() for n in s.split(",") if n.strip()], default=[],
                   help="comma-separated interventions to run beside the baseline (combine with '+', e.g. grad-clip+no-dropout)")
    p.add_argument("--command", dest="user_command", metavar="CMD",
                   help="sweep your own program instead: a shell command with {init_seed}, {train_seed} and {run_dir}, "
                        "reporting through {run_dir}/result.json (docs/your-own-trainer.md)")
    p.add_argument("--intervention", dest="argument_sets", action="append", default=[], metavar="NAME=ARGS",
                   help="with --command: an intervention as extra arguments, e.g. 'qkv-bias=--qkv-bias' (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs, which exist, estimated time); train nothing")
    p.add_argument("--jobs", type=_positive_int, help="runs in parallel (default: cores / threads per run, or one per GPU; "
                                                     "one at a time for --command)")
    p.add_argument("--executor", choices=("local", "slurm"),
                   help="where runs execute (default: local; slurm for a folder whose runs went to Slurm)")
    p.add_argument("--partition", help="slurm partition")
    p.add_argument("--gpus-per-run", type=int, default=0, help="slurm: GPUs per run (default 0)")
    p.add_argument("--nodes-per-run", type=_positive_int, default=1, metavar="N",
                   help="slurm: nodes a DDP run (train.world_size > 1) spreads its ranks over, one task per rank (default 1)")
    p.add_argument("--time", type=_minutes, default=60, metavar="MINUTES",
                   help="time limit per run: Slurm's, and a --command run's anywhere (default 60)")
    p.add_argument("--slurm-arg", dest="slurm_args", action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: an extra sbatch option, e.g. --slurm-arg account=myproject (repeatable)")
    p.add_argument("--detach", action="store_true",
                   help="slurm: exit once the jobs are submitted; the same command (or status) collects them later")
    p.add_argument("--retry-failed", action="store_true", help="train failed runs again (from their last checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no live view")


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", help="a sweep spec file (seedsweeps/*.toml), or a sweep folder to continue; "
                                           "or give seeds (and optionally --config)")
    p.add_argument("--cancel", metavar="SWEEP_DIR", help="slurm: cancel the folder's queued and running jobs and exit")
    p.add_argument("--init-seeds", type=_seed_list, help="weight-init seeds, e.g. 42,22,67 (default: noisefloor.toml's)")
    p.add_argument("--train-seeds", type=_seed_list, help="training re-seeds crossed with every init seed (default: no re-seed)")
    p.add_argument("--until-decided", action="store_true",
                   help="add init seeds in rounds (to each undecided intervention and the baseline) until each is "
                        "decided (anytime-valid e-value for signal; noise only at --max-seeds) or has --max-seeds")
    p.add_argument("--max-seeds", type=_positive_int, metavar="N", help="with --until-decided: the most init seeds per intervention")
    _decision_arguments(p, alpha=None)
    _executor_arguments(p)


def _reseed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init-seed", "--init-seeds", dest="init_seeds", type=_seed_list,
                   help="the pinned init seed, or several for a crossed grid (default: the config's train.init_seed, 42)")
    p.add_argument("--train-seeds", type=_seed_list, help="training re-seeds, e.g. 23,67 (default: noisefloor.toml's)")
    _executor_arguments(p)


def _run_plan(plan, out, args: argparse.Namespace) -> int:
    summary = _execute(plan, out, args)
    _print_sweep_summary(summary)
    if args.detach:
        print(f"submitted to Slurm: {len(summary.trained)} runs; watch: noisefloor status {summary.path}   "
              f"collect: noisefloor sweep {summary.path}   cancel: noisefloor sweep --cancel {summary.path}")
        return 1 if any(r.status in ("failed", "diverged") for r in summary.records) else 0
    return 0 if summary.ok else 1


def _execute(plan, out, args: argparse.Namespace):
    """Train a plan into `out` (reusing its done runs) with the live view unless --quiet: the sweep's summary."""
    # sweep/ (the executors, checkpoints, numpy) and rich: only for the commands that train a plan
    from noisefloor.report.live import SweepView
    from noisefloor.sweep import slurm
    from noisefloor.sweep.runner import SweepOptions, run_sweep

    # a folder whose runs went to Slurm stays there unless told otherwise: its queued jobs are waited for
    executor = args.executor or ("slurm" if slurm.SweepJobs(slurm.jobs_folder(out)).load() else "local")
    if args.detach and executor != "slurm":
        raise UserError("--detach needs --executor slurm (local runs end with the command)")
    options = SweepOptions(executor=executor, jobs=args.jobs, retry_failed=args.retry_failed,
                           partition=args.partition, gpus_per_run=args.gpus_per_run, nodes_per_run=args.nodes_per_run,
                           time_minutes=args.time,
                           slurm_args=slurm.sbatch_args(args.slurm_args), detach=args.detach)
    if args.quiet:
        return run_sweep(plan, out, options)
    with SweepView(SweepDir(Path(out)).runs, _console(stderr=True)) as view:
        return run_sweep(plan, out, options, view, view.tick)


def _print_sweep_summary(summary) -> None:
    from noisefloor.report.status import sweep_summary_lines
    from noisefloor.sweep.store import STATUSES  # sweep/: only for the commands that sweep

    print("\n".join(sweep_summary_lines(summary, STATUSES, SweepDir(summary.path).results)))


def _print_dry_run(resolved, jobs: int) -> None:
    from noisefloor.report.status import dry_run_lines
    from noisefloor.sweep.study import describe  # sweep/: only for the commands that sweep

    print("\n".join(dry_run_lines(describe(resolved), resolved.out, jobs)))


def _study_plan(kind: str, args: argparse.Namespace):
    from noisefloor.sweep.spec import cpu_jobs  # sweep/: only for the commands that sweep
    from noisefloor.sweep.study import Request, resolve

    request = Request(kind, args.out, args.config, args.overrides, args.interventions, args.argument_sets,
                      args.user_command, args.init_seeds, args.train_seeds)
    resolved = resolve(request)
    if resolved.notice:
        print(f"noisefloor {kind}: {resolved.notice}", file=sys.stderr)
    args.jobs = args.jobs or resolved.jobs
    until_decided = getattr(args, "until_decided", False)
    if until_decided:
        from noisefloor.sweep.until_decided import study_seeds  # sweep/: only for the commands that sweep

        seeds = study_seeds(resolved.plan, args.max_seeds)  # a mistake is one line before anything is planned or trained
    if args.dry_run:
        _print_dry_run(resolved, args.jobs or cpu_jobs(resolved.plan))
        if until_decided:
            from noisefloor.sweep.rounds import seed_sequence  # as above

            sequence = seed_sequence(seeds, args.max_seeds)
            print(f"then, until decided: init seeds {', '.join(map(str, sequence))} (at most {args.max_seeds} "
                  "per intervention), one more per round to each undecided intervention and the baseline")
        return 0
    if until_decided:
        return _until_decided(resolved, args)
    return _run_plan(resolved.plan, resolved.out, args)


def _until_decided(resolved, args: argparse.Namespace) -> int:
    # rich (report/) and sweep/: only for this command
    from noisefloor.report import tables
    from noisefloor.sweep.until_decided import run_until_decided

    margin = resolved.margin if args.margin is None else args.margin
    result = run_until_decided(resolved.plan, resolved.out, args.max_seeds, args.alpha, margin,
                               lambda plan: _execute(plan, resolved.out, args), print)
    _print_sweep_summary(result.summary)
    if result.analysis is None:  # a round ended with failed runs: their lines are above
        return 1
    console = _console()
    tables.render_rich(result.analysis, console)
    tables.render_plan(tables.until_decided_table(result), console)  # a plain table, as plan's
    print(f"written: {result.record}")
    return 0


def _design_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interventions", required=True, type=lambda s: [n.strip() for n in s.split(",") if n.strip()],
                   help="2 to 7 comma-separated interventions, e.g. grad-clip,no-dropout,wd-0.01,lr-schedule,qkv-bias")
    p.add_argument("--runs", type=_positive_int, help="at least this many design rows (default: the smallest of resolution V)")
    p.add_argument("--resolution", type=int, choices=(3, 4, 5, 6, 7), help="at least this resolution (default 5, or 3 with --runs)")
    p.add_argument("--init-seeds", type=_seed_list, default=[42, 22], help="init seeds, each a block replicating the design (default 42,22)")
    p.add_argument("--train-seeds", type=_seed_list, default=[23, 67],
                   help="the training-loop floor: baseline at the first init seed re-seeded with each (default 23,67)")
    p.add_argument("--no-train-floor", action="store_true", help="leave the training-loop floor out")
    p.add_argument("--config", help="base run config: a file or a preset (default tiny-cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a key of the base config (repeatable)")
    p.add_argument("--name", help="sweep name (default: --out's file name, else factorial-K)")
    p.add_argument("--out", help="write the spec here (default: print it)")


@command("design", "a two-level fractional-factorial plan of interventions, written as a sweep spec", _design_arguments)
def _design(args: argparse.Namespace) -> int:
    # numpy (stats/design.py) and sweep/: only for this command
    from noisefloor.stats.design import choose
    from noisefloor.sweep.design_spec import describe, design_spec

    design = choose(args.interventions, args.runs, args.resolution)
    out = Path(args.out) if args.out else None
    name = args.name or (out.stem if out else f"factorial-{design.k}")
    train_seeds = None if args.no_train_floor else args.train_seeds
    text = design_spec(design, args.init_seeds, train_seeds, name, args.config, args.overrides, out)
    if out is None:
        sys.stdout.write(text)
        return 0
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name the spec file, e.g. --out {out / (name + '.toml')}")
    atomic.write_text(out, text)
    print("\n".join(describe(design, args.init_seeds, train_seeds)))
    print(f"spec written to {out}   next: noisefloor sweep {out}")
    return 0


@command("sweep", "train the baseline and interventions at several init seeds (or a spec file's experiments)", _sweep_arguments)
def _sweep(args: argparse.Namespace) -> int:
    from noisefloor.sweep import spec  # sweep/: only for the commands that sweep

    if args.cancel:
        return _cancel(args.cancel)
    flags = (args.config or args.init_seeds or args.train_seeds or args.interventions or args.overrides or args.user_command
             or args.argument_sets)
    if args.spec and os.path.isdir(args.spec):  # a sweep folder: its own plan, continued
        from noisefloor.sweep.store import SweepStore  # sweep/: only for the commands that sweep

        if flags or args.out:
            raise UserError("a sweep folder continues its own plan; drop --config/--init-seeds/--train-seeds/"
                            "--interventions/--set/--command/--intervention/--out")
        plan, out = SweepStore(args.spec).load_plan(), args.spec
    elif args.spec:
        if flags:
            raise UserError("a spec file describes the whole sweep; drop --config/--init-seeds/--train-seeds/"
                            "--interventions/--set/--command/--intervention")
        plan = spec.from_file(args.spec)
        out = args.out or f"sweeps/{plan.name}"
    if (args.max_seeds or args.margin is not None or args.alpha is not None) and not args.until_decided:
        flag = "--max-seeds" if args.max_seeds else "--margin" if args.margin is not None else "--alpha"
        raise UserError(f"{flag} goes with --until-decided, e.g. --until-decided --max-seeds 10"
                        + (f" (classify and report take {flag} too)" if flag != "--max-seeds" else ""))
    args.alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
    if args.until_decided:
        if not args.max_seeds:
            raise UserError("--until-decided needs a limit: add --max-seeds N (the most init seeds per intervention)")
        if args.spec:
            raise UserError("--until-decided grows a study's init seeds (flags or noisefloor.toml); a spec file or "
                            "sweep folder fixes its own: drop it, e.g. noisefloor sweep --init-seeds 42,22 "
                            "--interventions grad-clip --until-decided --max-seeds 10")
        if args.detach:
            raise UserError("--until-decided waits for each round to decide the next; drop --detach")
    if args.spec:
        if args.dry_run:
            from noisefloor.sweep.spec import cpu_jobs  # sweep/: only for the commands that sweep
            from noisefloor.sweep.study import Resolved

            _print_dry_run(Resolved(plan, Path(out), None), args.jobs or cpu_jobs(plan))
            return 0
        return _run_plan(plan, out, args)
    return _study_plan("sweep", args)


def _cancel(sweep: str) -> int:
    # sweep/: only for the commands that sweep
    from noisefloor.sweep import slurm
    from noisefloor.sweep.store import SweepStore

    store = SweepStore(sweep)
    store.load_plan()  # refuses a folder that is no sweep
    cancelled = slurm.SweepJobs(slurm.jobs_folder(store.path)).cancel()
    for run_id, state in sorted(cancelled.items()):
        print(f"  {run_id}: cancelled slurm job {state.job_id} (was {state.state.lower()})")
    print(f"{store.path}: cancelled {len(cancelled)} Slurm jobs; finished runs are kept, "
          f"and `noisefloor sweep {store.path}` resumes the others from their last checkpoints")
    return 0


@command("reseed", "pin the init seed and re-seed the training loop with each train seed", _reseed_arguments)
def _reseed(args: argparse.Namespace) -> int:
    return _study_plan("reseed", args)


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=".", help="the study folder (default: the current folder)")
    p.add_argument("--config", default="tiny-cpu", help="the base config it names (default: tiny-cpu)")


@command("init", "write a commented noisefloor.toml: this folder's base config, seeds and interventions", _init_arguments)
def _init(args: argparse.Namespace) -> int:
    from noisefloor.sweep.study import write_template  # sweep/: only for the commands that sweep

    written = write_template(args.out, args.config)
    print(f"wrote {written}: edit it, then `noisefloor sweep` and `noisefloor reseed` here use it "
          "(`noisefloor sweep --dry-run` shows the plan)")
    return 0


def _status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", nargs="?", default=".", help="a sweep (study) folder (default: the current folder)")
    p.add_argument("--json", action="store_true", help="print JSON")


@command("status", "which runs of a sweep are done, running, failed or missing", _status_arguments)
def _status(args: argparse.Namespace) -> int:
    # sweep/: only for the commands that read or run sweeps
    from noisefloor.sweep import slurm
    from noisefloor.sweep.store import STATUSES, SweepStore

    store = SweepStore(args.sweep)
    records = store.records(store.load_plan())
    jobs = slurm.SweepJobs(slurm.jobs_folder(store.path)).states()  # {} (and no Slurm call) for a local sweep
    if jobs:  # detached jobs report through their run folders: collect them
        store.write_csv(records)
    rows = []
    for record in records:
        run, result = record.planned, record.result or {}
        line = RunDir(store.run_dir(run)).last_training_line() or {}
        rows.append({"run": run.run_id, "intervention": run.intervention, "init_seed": run.init_seed,
                     "train_seed": run.train_seed, "status": record.status, "step": line.get("step", 0),
                     "steps": run.steps, "test_loss": result.get("test_loss"), "error": result.get("error")})
        if run.run_id in jobs:
            rows[-1].update(slurm_job=jobs[run.run_id].job_id, slurm_state=jobs[run.run_id].state or "gone")
    if args.json:
        print(json.dumps({"sweep": str(store.path), "runs": rows}, indent=2))
        return 0
    from noisefloor.report.status import render_status  # rich: not needed by --json

    render_status(_console(), store.path, rows, STATUSES, slurm=bool(jobs))
    return 0


# ---------------------------------------------------------------- bitwise tools (diverge, doctor)


def _diverge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", metavar="RUN_A", help="a run directory")
    p.add_argument("run_b", metavar="RUN_B", help="another run directory")
    p.add_argument("--json", action="store_true", help="print JSON")


@command("diverge", "first recorded step where two runs' parameters differ, and why they might", _diverge_arguments)
def _diverge(args: argparse.Namespace) -> int:
    found = diverge(args.run_a, args.run_b)
    if args.json:
        print(json.dumps(found.to_json(), indent=2))
    else:
        from noisefloor.report.bitwise import divergence_lines  # not needed by --json

        print("\n".join(divergence_lines(found)))
    return 1 if found.diverged else 0


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="run config to self-test with and audit (default: the micro preset, built in)")
    p.add_argument("--skip-self-test", action="store_true", help="only print the fingerprint and hazards")
    p.add_argument("--json", action="store_true", help="print JSON")


@command("doctor", "environment fingerprint, determinism hazards, and a twice-trained self-test", _doctor_arguments)
def _doctor(args: argparse.Namespace) -> int:
    # torch: loaded by this command only
    from noisefloor import doctor
    from noisefloor.train import determinism

    config = config_module.load(args.config or "micro")
    hazards = doctor.audit(config)  # before noisefloor changes any setting
    fingerprint = determinism.fingerprint()
    mode = doctor.noisefloor_mode(config.train.threads)
    test = None if args.skip_self_test else doctor.self_test(config)
    if args.json:
        print(json.dumps({"fingerprint": fingerprint, "hazards": [h.to_json() for h in hazards],
                          "noisefloor_mode": mode, "self_test": test}, indent=2, default=str))
    else:
        from noisefloor.report.bitwise import render_doctor  # rich: not needed by --json

        render_doctor(_console(), fingerprint, hazards, mode, test)
    return 1 if test is not None and not test["passed"] else 0


# ---------------------------------------------------------------- analysis: classify and report


def _source_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="CSV_OR_SWEEP_DIR",
        help="results CSV (columns intervention, init_seed, train_seed, test_loss) or a sweep directory (its results.csv)",
    )


def _decision_arguments(parser: argparse.ArgumentParser, alpha: float | None = DEFAULT_ALPHA) -> None:
    # sweep's default is None, so that --alpha without --until-decided can be refused rather than ignored
    parser.add_argument("--alpha", type=_alpha, default=alpha, help=f"error rate of the decision (default {DEFAULT_ALPHA})")
    parser.add_argument(
        "--margin", type=_positive_number, metavar="NATS",
        help="equivalence margin in nats/token: an effect smaller than this does not matter to you (default: "
        "margin in the study's noisefloor.toml); without one no intervention is decided noise",
    )


def _margin(args: argparse.Namespace) -> float | None:
    """--margin, else the margin of the study file beside the results."""
    from noisefloor.sweep.study import study_margin  # sweep/: only for the commands that read a study

    return study_margin(args.source, args.margin)


def _classify_arguments(parser: argparse.ArgumentParser) -> None:
    _source_argument(parser)
    _decision_arguments(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the analysis as JSON (schema in docs/method.md)")
    output.add_argument(
        "--format", choices=("table", "csv", "markdown"), default="table", help="how to print the tables (default: table)",
    )


@command("classify", "noise floors and a signal/noise verdict per intervention, from a results CSV", _classify_arguments)
def _classify(args: argparse.Namespace) -> int:
    # scipy, pandas, statsmodels (stats/) and rich (report/): only for the analysis commands
    from noisefloor.report import tables
    from noisefloor.report.words import analysis_json
    from noisefloor.stats.classify import analyse

    analysis = analyse(args.source, args.alpha, _margin(args))
    if args.json:
        print(json.dumps(analysis_json(analysis), indent=2))
    elif args.format == "csv":
        sys.stdout.write(tables.to_csv(tables.tables(analysis)))
    elif args.format == "markdown":
        sys.stdout.write(tables.to_markdown(tables.tables(analysis)) + tables.notes_markdown(analysis))
    else:
        tables.render_rich(analysis, _console(), details=True)
    return 0


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    _source_argument(parser)
    parser.add_argument("--effect", type=_positive_number, required=True, metavar="NATS",
                        help="the smallest effect on test loss you want to detect, in nats/token (e.g. 0.01)")
    parser.add_argument("--alpha", type=_alpha, default=DEFAULT_ALPHA, help=f"two-sided test level (default {DEFAULT_ALPHA})")
    parser.add_argument("--power", type=_alpha_power, default=DEFAULT_POWER, help=f"power to reach (default {DEFAULT_POWER})")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def _alpha_power(text: str) -> float:
    return _number(text, 0.0, 1.0, "power must be between 0 and 1 (e.g. 0.8)")


@command("plan", "seeds per arm to detect a stated effect, from the pilot floors' SDs", _plan_arguments)
def _plan(args: argparse.Namespace) -> int:
    # scipy, pandas, statsmodels (stats/) and rich (report/): only for the analysis commands
    from noisefloor.report import tables
    from noisefloor.stats.classify import analyse
    from noisefloor.stats.plan import plan_seeds

    analysis = analyse(args.source)
    rows = plan_seeds(analysis.floors, analysis.pooled_train, args.effect, args.alpha, args.power)
    if args.json:
        print(json.dumps({"effect": args.effect, "alpha": args.alpha, "power": args.power,
                          "floors": [r.to_json() for r in rows]}, indent=2))
    else:
        tables.render_plan(tables.plan_table(rows, args.effect, args.alpha, args.power), _console())
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    _source_argument(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder, e.g. reports/NAME")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    _decision_arguments(parser)


@command("report", "Markdown and self-contained HTML report with figures, from a results CSV", _report_arguments)
def _report(args: argparse.Namespace) -> int:
    from noisefloor.report.write import write_report  # matplotlib, seaborn, scipy, statsmodels: only for this command

    written = write_report(args.source, args.out, args.alpha, _margin(args))
    if not args.quiet:
        _console().print(f"report written to {written.markdown} and {written.html}", markup=False)
    return 0


# ---------------------------------------------------------------- bitwise: verify-identical


def _verify_identical_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="a .safetensors file, or a run directory (model.safetensors, init.safetensors)")
    parser.add_argument("b", help="the file or run directory to compare it with")
    parser.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                        help="skip tensors whose name matches this shell pattern, e.g. '*.att.mask' (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


@command(
    "verify-identical",
    "prove two checkpoints bit-identical, or show every tensor that differs (exit 0 identical, 1 different, 2 error)",
    _verify_identical_arguments,
)
def _verify_identical(args: argparse.Namespace) -> int:
    result = compare_paths(args.a, args.b, args.ignore)
    print(json.dumps(result.to_json(), indent=2) if args.json else path_comparison_text(result))
    return 0 if result.identical else 1


# ---------------------------------------------------------------- demo


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a first look: the same study with a quarter of the training")
    p.add_argument("--out", help="output folder (default: reports/demo, or reports/demo-quick)")
    p.add_argument("--jobs", type=_positive_int, help="runs in parallel (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no live view")


@command("demo", "the whole study on the built-in default: floors, interventions, verdicts, report", _demo_arguments)
def _demo(args: argparse.Namespace) -> int:
    # sweep/, stats/ and report/ (scipy, statsmodels, matplotlib): only for this command
    from noisefloor.demo import run_demo
    from noisefloor.report import tables
    from noisefloor.report.live import SweepView

    out = Path(args.out or ("reports/demo-quick" if args.quick else "reports/demo"))
    if args.quiet:
        result = run_demo(out, args.quick, args.jobs)
    else:
        with SweepView(demo_sweep(out).runs, _console(stderr=True)) as view:
            result = run_demo(out, args.quick, args.jobs, view, view.tick)
    console = _console()
    tables.render_rich(result.analysis, console, keys=("interventions",))
    _print_sweep_summary(result.summary)
    print(f"report: {result.report_html}  (and {result.report_markdown.name} beside it)")
    return 0 if result.summary.ok else 1
