"""Read and validate a results CSV into a typed table of runs.

Accepts `results.csv` from `noisefloor sweep` and tables typed by hand.
Every mistake a user can make in the file becomes one UserError naming the
file, the line (the header is line 1) and the column, and saying what to do.

Output: a `Results` with one row per usable run, the rows left out (status
other than `done`), and the repeats: runs with the same intervention, init
seed and training stream. Repeats are collapsed into one *cell* (their mean
loss); identical losses confirm repeatability, different ones are a
reproducibility failure that the report shows prominently.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from noisefloor.errors import UserError

BASELINE = "baseline"
REQUIRED = ("intervention", "init_seed", "train_seed", "test_loss")
NO_RESEED = "no re-seed"
TRUE_WORDS = {"true": True, "false": False}
CELL_KEYS = ("init_seed", "train_seed", "stream")


@dataclass(frozen=True)
class LeftOut:
    """A row whose status is not `done`: not an error, not analysed."""

    run: str
    line: int
    intervention: str
    status: str


@dataclass(frozen=True)
class Repeat:
    """Several rows with the same intervention, init seed and training stream."""

    intervention: str
    init_seed: int
    stream: str
    runs: tuple[str, ...]
    test_losses: tuple[float, ...]

    @property
    def identical(self) -> bool:
        return len(set(self.test_losses)) == 1


@dataclass(frozen=True)
class Results:
    """The validated table.

    runs:  one row per usable CSV row; columns run, line, intervention,
           init_seed (int), train_seed (int or None), stream (str label),
           test_loss (float), same_init (True/False/None), init_digest and
           final_digest (str or None).
    cells: one row per (intervention, init_seed, stream): test_loss is the mean
           over repeats, runs the tuple of run names, same_init and the digests
           the first non-empty value among the repeats.
    """

    source: str
    runs: pd.DataFrame
    cells: pd.DataFrame
    left_out: tuple[LeftOut, ...]
    repeats: tuple[Repeat, ...]
    sha256: str | None = None  # of the CSV file's bytes, when read from a file


def stream_label(train_seed: int | None) -> str:
    """One training stream: each train_seed value, and the run that is not re-seeded."""
    return NO_RESEED if train_seed is None else f"train_seed={train_seed}"


def resolve_csv(path: str | Path) -> Path:
    """A sweep directory means its results.csv; a file is taken as it is."""
    path = Path(path)
    if path.is_dir():
        csv_path = path / "results.csv"
        if not csv_path.is_file():
            raise UserError(f"{path}: directory has no results.csv; pass the CSV file or a sweep directory")
        return csv_path
    if not path.exists():
        raise UserError(f"{path}: no such file or directory; pass a results CSV or a sweep directory")
    return path


def read_csv_bytes(path: str | Path) -> tuple[Path, bytes]:
    """The bytes of a results CSV (or SWEEP_DIR/results.csv), read once, and where they came from."""
    csv_path = resolve_csv(path)
    try:
        return csv_path, csv_path.read_bytes()
    except OSError as exc:
        raise UserError(f"{csv_path}: cannot read ({exc.strerror})") from None


def read_results(path: str | Path) -> Results:
    """Read a results CSV (or SWEEP_DIR/results.csv) and validate it."""
    csv_path, data = read_csv_bytes(path)
    return results_from_bytes(data, str(csv_path))


def results_from_bytes(data: bytes, source: str) -> Results:
    """Validate the bytes of a results CSV; `source` names it in messages."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{source}: not UTF-8 text; save the table as a UTF-8 CSV") from None
    return replace(results_from_text(text, source), sha256="sha256:" + hashlib.sha256(data).hexdigest())


def results_from_text(text: str, source: str) -> Results:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        numbered = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise UserError(f"{source}: not a readable CSV ({exc}); save the table as plain comma-separated text") from None
    numbered = [(line, row) for line, row in numbered if any(cell.strip() for cell in row)]
    if not numbered:
        raise UserError(f"{source}: the file is empty; expected a header line with {', '.join(REQUIRED)}")
    header = _check_header([name.strip() for name in numbered[0][1]], source)
    for line, row in numbered[1:]:
        if len(row) != len(header):
            raise UserError(
                f"{source}: line {line} has {len(row)} fields but the header has {len(header)}; "
                "fix the commas on that line"
            )
    rows = [(line, dict(zip(header, (cell.strip() for cell in row)))) for line, row in numbered[1:]]
    return _validate(rows, set(header), source)


def _check_header(header: list[str], source: str) -> list[str]:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise UserError(f"{source}: column {name!r} appears twice in the header; keep one")
        seen.add(name)
    for name in REQUIRED:
        if name not in seen:
            close = difflib.get_close_matches(name, header, n=1)
            hint = f" (did you mean {close[0]!r}? names are case-sensitive)" if close else ""
            raise UserError(
                f"{source}: missing required column {name!r}{hint}; "
                f"the header needs {', '.join(REQUIRED)}"
            )
    return header


def _validate(rows: list[tuple[int, dict[str, str]]], columns: set[str], source: str) -> Results:
    """Validate (CSV line number, {column: stripped cell}) rows."""
    records = []
    left_out = []
    run_lines: dict[str, int] = {}
    for line, raw in rows:
        where = f"{source}: line {line}"

        def cell(name: str) -> str:
            return raw.get(name) or ""

        run = cell("run") or f"line {line}"
        if cell("run"):
            if run in run_lines:
                raise UserError(
                    f"{where}, column 'run': run name {run!r} already used on line {run_lines[run]}; "
                    "give every run a unique name"
                )
            run_lines[run] = line
        intervention = cell("intervention")
        if not intervention:
            raise UserError(f"{where}, column 'intervention': empty; write '{BASELINE}' or the intervention's name")
        parts = intervention.split("+")
        if len(parts) > 1 and (BASELINE in parts or any(not p for p in parts)):
            raise UserError(
                f"{where}, column 'intervention': {intervention!r} is not a valid combination; "
                "join intervention names with '+' (e.g. grad-clip+no-dropout), without 'baseline'"
            )
        if "status" in columns and cell("status") != "done":
            left_out.append(LeftOut(run, line, intervention, cell("status") or "(empty)"))
            continue
        init_seed = _integer(cell("init_seed"), f"{where}, column 'init_seed'", allow_empty=False)
        train_seed = _integer(cell("train_seed"), f"{where}, column 'train_seed'", allow_empty=True)
        records.append(
            {
                "run": run,
                "line": line,
                "intervention": intervention,
                "init_seed": init_seed,
                "train_seed": train_seed,
                "stream": stream_label(train_seed),
                "test_loss": _loss(cell("test_loss"), f"{where}, column 'test_loss'"),
                "same_init": _boolean(cell("same_init"), f"{where}, column 'same_init'"),
                "init_digest": cell("init_digest") or None,
                "final_digest": cell("final_digest") or None,
            }
        )

    runs = pd.DataFrame.from_records(
        records,
        columns=["run", "line", "intervention", *CELL_KEYS, "test_loss", "same_init", "init_digest", "final_digest"],
    ).astype(object)
    runs["test_loss"] = runs["test_loss"].astype(float)
    cells, repeats = _collapse(runs)
    return Results(source, runs, cells, tuple(left_out), tuple(repeats))


def _integer(text: str, where: str, *, allow_empty: bool) -> int | None:
    if not text:
        if allow_empty:
            return None
        raise UserError(f"{where}: empty; every run needs its integer init seed")
    try:
        return int(text)
    except ValueError:
        empty = " (leave it empty for a run that is not re-seeded)" if allow_empty else ""
        raise UserError(f"{where}: {text!r} is not an integer seed{empty}") from None


def _loss(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: {text!r} is not a number; write the run's test loss (e.g. 5.1234)") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: {text!r} is not a finite loss; fix the value or set the row's status to diverged")
    return value


def _boolean(text: str, where: str) -> bool | None:
    if not text:
        return None
    try:
        return TRUE_WORDS[text.lower()]
    except KeyError:
        raise UserError(f"{where}: {text!r} is not true or false (leave it empty when unknown)") from None


def _collapse(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[Repeat]]:
    """One cell per (intervention, init seed, stream); repeats recorded.

    Grouped in plain Python (first appearance order): pandas' per-group iteration cost
    ~50 µs a group, most of `classify`'s time on large files.
    """
    groups: dict[tuple, list[int]] = {}
    columns = {name: runs[name].tolist() for name in runs.columns}
    for i, key in enumerate(zip(columns["intervention"], columns["init_seed"], columns["stream"])):
        groups.setdefault(key, []).append(i)
    cells = []
    repeats = []
    for (intervention, init_seed, stream), rows in groups.items():
        losses = tuple(float(columns["test_loss"][i]) for i in rows)
        names = tuple(columns["run"][i] for i in rows)
        if len(rows) > 1:
            repeats.append(Repeat(intervention, int(init_seed), stream, names, losses))
        cells.append(
            (
                intervention,
                int(init_seed),
                columns["train_seed"][rows[0]],
                stream,
                losses[0] if len(set(losses)) == 1 else sum(losses) / len(losses),
                names,
                *(_first_known(columns[name][i] for i in rows) for name in ("same_init", "init_digest", "final_digest")),
            )
        )
    frame = pd.DataFrame.from_records(
        cells, columns=["intervention", *CELL_KEYS, "test_loss", "runs", "same_init", "init_digest", "final_digest"]
    ).astype(object)
    frame["test_loss"] = frame["test_loss"].astype(float)
    return frame, repeats


def _first_known(values):
    for value in values:
        if value is not None:
            return value
    return None
