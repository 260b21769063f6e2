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
import stat
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from noisefloor.errors import UserError
from noisefloor.rundir import SweepDir

BASELINE = "baseline"
REQUIRED = ("intervention", "init_seed", "train_seed", "test_loss")
NO_RESEED = "no re-seed"
TRUE_WORDS = {"true": True, "false": False}
CELL_KEYS = ("init_seed", "train_seed", "stream")
# Cross-entropies are tens of nats, perplexities at most ~1e9; beyond 1e12 a value is a typo, and squares of
# larger ones overflow the statistics' float arithmetic.
MAX_ABS_LOSS = 1e12
MAX_CELL_IN_MESSAGE = 40
MAX_CSV_BYTES = 256 << 20  # classify reads at most this: ~1.3 million runs of a sweep's results.csv


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
        csv_path = SweepDir(path).results
        if not csv_path.is_file():
            raise UserError(f"{path}: directory has no {csv_path.name}; pass the CSV file or a sweep directory")
        return csv_path
    if not path.exists():
        raise UserError(f"{path}: no such file or directory; pass a results CSV or a sweep directory")
    return path


def read_csv_bytes(path: str | Path) -> tuple[Path, bytes]:
    """The bytes of a results CSV (or SWEEP_DIR/results.csv), read once, and where they came from."""
    csv_path = resolve_csv(path)
    try:
        if not stat.S_ISREG(csv_path.stat().st_mode):  # a FIFO would block, a device never end: refused unopened
            raise UserError(f"{csv_path}: not a regular file; pass a results CSV file or a sweep directory")
        with open(csv_path, "rb") as handle:
            data = handle.read(MAX_CSV_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{csv_path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_CSV_BYTES:
        raise UserError(f"{csv_path}: more than {MAX_CSV_BYTES >> 20} MB, the most a results table may be "
                        "(about a million runs); is it the right file?")
    return csv_path, data


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
    fast = _vectorised(text, source) if len(text) > FAST_PATH_CHARS else None
    if fast is not None:
        return fast
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


FAST_PATH_CHARS = 1_000_000  # larger files are validated column by column first


def _vectorised(text: str, source: str) -> Results | None:
    """The same validation as `_validate`, column by column (a million rows in seconds, not minutes).

    Only for plain files: no quotes, no blank lines, every line with the header's field count, and every
    cell valid. Anything else returns None, and the row-by-row path reads the file and names the first
    problem exactly as it always does.
    """
    if '"' in text:
        return None
    lines = text.splitlines()
    header = [name.strip() for name in lines[0].split(",")]
    if len(set(header)) != len(header) or any(name not in header for name in REQUIRED):
        return None
    if any(line.count(",") != len(header) - 1 or not line.strip(", \t") for line in lines[1:]):
        return None
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False, header=0,
                        names=header, skip_blank_lines=False, engine="c")
    padded = " " in text or "\t" in text
    cells = {name: frame[name].str.strip() if padded else frame[name] for name in header}
    empty = pd.Series("", index=frame.index)
    line = np.arange(2, len(frame) + 2)
    intervention = cells["intervention"]
    if (intervention == "").any() or any(
        BASELINE in name.split("+") or "" in name.split("+") for name in intervention.unique() if "+" in name
    ):
        return None
    run = cells.get("run", empty)
    named = run[run != ""]
    if named.duplicated().any():
        return None
    keep = np.ones(len(frame), bool)
    left_out: list[LeftOut] = []
    if "status" in cells:
        keep = (cells["status"] == "done").to_numpy()
        for i in np.flatnonzero(~keep):
            name = run.iat[i] or f"line {line[i]}"
            left_out.append(LeftOut(name, int(line[i]), intervention.iat[i], cells["status"].iat[i] or "(empty)"))
    init, train = _integers(cells["init_seed"][keep]), cells["train_seed"][keep]
    has_train = (train != "").to_numpy()
    train_int = np.zeros(len(train), np.int64)
    if has_train.any():
        given = _integers(train[has_train])
        if given is None:
            return None
        train_int[has_train] = given
    if init is None:
        return None
    loss = pd.to_numeric(cells["test_loss"][keep], errors="coerce").to_numpy(float)
    same = cells.get("same_init", empty)[keep].str.lower()
    if not (np.abs(loss) <= MAX_ABS_LOSS).all() or not same.isin(("", "true", "false")).all():
        return None  # NaN, inf and implausible losses fail the comparison: the row-by-row reader names the line
    train_seed = np.where(has_train, train_int.astype(object), None)
    runs = pd.DataFrame(
        {
            "run": np.where(run[keep] != "", run[keep], ["line " + str(n) for n in line[keep]]),
            "line": line[keep],
            "intervention": intervention[keep].to_numpy(),
            "init_seed": init,
            "train_seed": train_seed,
            "stream": np.where(has_train, ["train_seed=" + str(t) for t in train_int], NO_RESEED),
            "test_loss": loss,
            "same_init": same.map({"": None, "true": True, "false": False}).to_numpy(),
            **{name: _or_none(cells.get(name, empty)[keep].to_numpy(object)) for name in ("init_digest", "final_digest")},
        }
    ).astype(object)
    runs["test_loss"] = runs["test_loss"].astype(float)
    cells_frame, repeats = _collapse(runs)
    return Results(source, runs, cells_frame, tuple(left_out), tuple(repeats))


def _integers(texts: pd.Series) -> np.ndarray | None:
    """int64 values when every text is a plain integer (what int() reads, short of underscores), else None."""
    values = pd.to_numeric(texts, errors="coerce")
    if values.dtype.kind != "i":  # a float, an unparsable text (NaN) or a seed beyond int64 anywhere
        return None
    return values.to_numpy(np.int64)


def _or_none(values: np.ndarray) -> np.ndarray:
    out = values.copy()
    out[values == ""] = None
    return out


def _check_header(header: list[str], source: str) -> list[str]:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise UserError(f"{source}: column {_cell(name)} appears twice in the header; keep one")
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
                    f"{where}, column 'run': run name {_cell(run)} already used on line {run_lines[run]}; "
                    "give every run a unique name"
                )
            run_lines[run] = line
        intervention = cell("intervention")
        if not intervention:
            raise UserError(f"{where}, column 'intervention': empty; write '{BASELINE}' or the intervention's name")
        parts = intervention.split("+")
        if len(parts) > 1 and (BASELINE in parts or any(not p for p in parts)):
            raise UserError(
                f"{where}, column 'intervention': {_cell(intervention)} is not a valid combination; "
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
    runs["train_seed"] = pd.Series([r["train_seed"] for r in records], dtype=object)  # ints and None, not floats
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
        raise UserError(f"{where}: {_cell(text)} is not an integer seed{empty}") from None


def _loss(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: {_cell(text)} is not a number; write the run's test loss (e.g. 5.1234)") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: {_cell(text)} is not a finite loss; fix the value or set the row's status to diverged")
    if abs(value) > MAX_ABS_LOSS:
        raise UserError(f"{where}: {_cell(text)} is beyond any plausible loss (|loss| <= {MAX_ABS_LOSS:g}); "
                        "fix the value or set the row's status to diverged")
    return value


def _cell(text: str) -> str:
    """A cell for an error line: a huge cell (a 5000-digit seed) is cut, never echoed whole."""
    if len(text) <= MAX_CELL_IN_MESSAGE:
        return repr(text)
    return f"{text[:MAX_CELL_IN_MESSAGE]!r}… ({len(text)} characters)"


def _boolean(text: str, where: str) -> bool | None:
    if not text:
        return None
    try:
        return TRUE_WORDS[text.lower()]
    except KeyError:
        raise UserError(f"{where}: {_cell(text)} is not true or false (leave it empty when unknown)") from None


def _collapse(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[Repeat]]:
    """One cell per (intervention, init seed, stream), in order of first appearance; repeats recorded.

    Column-wise: a cell of one run is that run; only the (few) repeated cells are built one by one.
    """
    codes = runs.groupby(["intervention", "init_seed", "stream"], sort=False).ngroup().to_numpy()
    first = np.unique(codes, return_index=True)[1]  # row of each cell's first run, in code (= first-seen) order
    sizes = np.bincount(codes)
    frame = runs.iloc[first][["intervention", *CELL_KEYS, "test_loss", "same_init", "init_digest", "final_digest"]]
    frame = frame.reset_index(drop=True)
    frame.insert(5, "runs", [(name,) for name in runs["run"].iloc[first]])
    repeats = []
    for code in np.flatnonzero(sizes > 1):
        group = runs[codes == code]
        losses = tuple(float(v) for v in group["test_loss"])
        names = tuple(group["run"])
        repeats.append(Repeat(group["intervention"].iat[0], int(group["init_seed"].iat[0]), group["stream"].iat[0], names, losses))
        frame.at[code, "runs"] = names
        frame.at[code, "test_loss"] = losses[0] if len(set(losses)) == 1 else sum(losses) / len(losses)
        for name in ("same_init", "init_digest", "final_digest"):
            frame.at[code, name] = _first_known(group[name])
    frame = frame.astype(object)
    frame["init_seed"] = [int(v) for v in frame["init_seed"]]
    frame["test_loss"] = frame["test_loss"].astype(float)
    return frame, repeats


def _first_known(values):
    for value in values:
        if value is not None:
            return value
    return None
