"""Seeded fuzzing of everything the CLI reads: results CSVs, run configs, run-folder files and weights.

Every case goes through the real entry point in-process (`run_cli`), so a crash anywhere below is a
failing test with its traceback. The promise checked for each case: the exit code is one the command
documents, and exit 2 is exactly one line on stderr with no traceback. The generators are seeded, so a
failure names its case and reproduces; each test prints its tally (pytest -s).
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from collections import Counter

import numpy as np
import pytest

from conftest import REPO, run_cli

MICRO = REPO / "training" / "micro.toml"
HEADER = ["intervention", "init_seed", "train_seed", "test_loss"]


def _check(capsys, allowed: set[int], tally: Counter, case: object, *argv) -> int:
    code, _, err = run_cli(capsys, *argv)
    tally[code] += 1
    assert code in allowed, f"case {case!r}: exit {code}\n{err[-2000:]}"
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, f"case {case!r}: {err[-2000:]!r}"
        assert len(err) < 2000, f"case {case!r}: a {len(err)}-character error line"
    return code


# ---------------------------------------------------------------- results CSVs

_NOT_NUMBERS = ["abc", "4.8.1", "0x10", "\x00", "\u202e4.8", "4,8", '"', "'", "a\nb", "True", "1e", "--1"]
BAD_CELLS = {  # values each column must refuse
    "test_loss": _NOT_NUMBERS + ["nan", "inf", "-inf", "NaN", "1e300", "-1e300", "1e400", "9" * 5000, "", " "],
    "init_seed": _NOT_NUMBERS + ["", " ", "9" * 5000, "4.5", "1e3"],
    "train_seed": _NOT_NUMBERS + ["9" * 5000, "4.5", "1e3"],
    "same_init": _NOT_NUMBERS[:9] + ["yes", "1", "0", "maybe"],
}


def _csv_case(rng: random.Random) -> bytes:
    """A results table with at least one defect (so every case must be refused), plus harmless noise."""
    header = list(HEADER) + rng.sample(["run", "status", "same_init", "val_loss", "note"], rng.randint(0, 3))
    rows = []
    for i in range(rng.randint(1, 8)):
        row = {"intervention": rng.choice(["baseline", "baseline", "grad-clip", "no-dropout"]),
               "init_seed": str(rng.choice([42, 22, 67])), "train_seed": rng.choice(["", "7", "8"]),
               "test_loss": f"{4.8 + rng.gauss(0, 0.02):.6f}", "run": f"r{i}", "status": "done",
               "same_init": rng.choice(["", "true", "false"]), "val_loss": "4.9", "note": "ok"}
        rows.append(row)
    defect = rng.choice(["cell", "cell", "drop-column", "duplicate-column", "field-count", "bytes", "combination",
                         "duplicate-run", "empty", "quote", "no-baseline"])
    if defect == "cell":
        column = rng.choice([c for c in ("test_loss", "init_seed", "train_seed", "same_init", "test_loss") if c in header])
        rows[rng.randrange(len(rows))][column] = rng.choice(BAD_CELLS[column])
    elif defect == "drop-column":
        header.remove(rng.choice(HEADER))
    elif defect == "duplicate-column":
        header.append(rng.choice(header))
    elif defect == "combination":
        rows[0]["intervention"] = rng.choice(["baseline+grad-clip", "a++b", "+", "grad-clip+"])
    elif defect == "duplicate-run":
        if "run" not in header:
            header.append("run")
        rows.append(dict(rows[0]))
    elif defect == "no-baseline":
        for row in rows:
            row["intervention"] = rng.choice(["Baseline", "base", "x"])
    lines = [",".join(header)] + [",".join(_quoted(row.get(name, ""), rng) for name in header) for row in rows]
    if defect == "field-count":
        lines[rng.randrange(1, len(lines))] += ",extra"
    text = rng.choice(["\n", "\r\n"]).join(lines) + "\n"
    if rng.random() < 0.2:
        text = "\ufeff" + text
    data = text.encode("utf-8", "surrogatepass")
    if defect == "bytes":
        cut = rng.randrange(len(data))
        data = data[:cut] + bytes([rng.choice([0xff, 0xfe, 0xc3, 0x80])]) + data[cut:]
    elif defect == "empty":
        data = rng.choice([b"", b"\n\n", b",,,\n", b"\xef\xbb\xbf"])
    elif defect == "quote":
        data = data.replace(b"test_loss", b'test_loss"', 1) + b'"unterminated' * rng.randint(0, 1)
    return data


def test_fuzz_results_csv(capsys, tmp_path):
    rng, tally = random.Random(1301), Counter()
    path = tmp_path / "results.csv"
    for case in range(200):
        path.write_bytes(_csv_case(rng))
        _check(capsys, {2}, tally, (case, path.read_bytes()[:300]), "classify", path, "--json")
    print(f"results CSVs: {sum(tally.values())} cases, exit codes {dict(tally)}")


def _quoted(cell: str, rng: random.Random) -> str:
    if any(ch in cell for ch in ',"\n') or rng.random() < 0.1:
        return '"' + cell.replace('"', '""') + '"'
    return cell


# ---------------------------------------------------------------- run configs

HOSTILE_VALUES = [10**30, -1, 0, 2**63, 2**64, 1e308, -0.0, "", "x" * 3000, True, [], {}, [1, [2]], "nan",
                  None, 1.5, "1", 10**6, 65537, "../../etc", "\u0000"]
KEYS = {"model": ["vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias", "init"],
        "train": ["init_seed", "train_seed", "data", "steps", "microbatch_size", "learning_rate", "threads",
                  "precision", "device", "keep_checkpoints", "eval_windows", "world_size"]}


def _config_case(rng: random.Random) -> tuple[str, bytes]:
    base = {"model": {"vocab_size": 512, "context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 2},
            "train": {"steps": 20, "microbatch_size": 4, "threads": 1}}
    for _ in range(rng.randint(1, 3)):
        section = rng.choice(["model", "train", "train", "extra"])
        key = rng.choice(KEYS.get(section, ["x"]) + ["unknown_key"])
        base.setdefault(section, {})[key] = rng.choice(HOSTILE_VALUES)
    suffix = rng.choice([".json", ".toml"])
    if suffix == ".json":
        text = json.dumps(base)
    else:
        text = "".join(f"[{section}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
                       for section, values in base.items())
    data = text.encode("utf-8", "surrogatepass")
    damage = rng.random()
    if damage < 0.15:
        data = data[: rng.randrange(len(data))]
    elif damage < 0.25:
        data = rng.choice([b"[" * 50_000, b'{"a":' * 50_000, b"x = " + b"[" * 50_000 + b"]" * 50_000,
                           b'{"train": {"steps": ' + b"9" * 5000 + b"}}", b"\xff\xfe", b"[1, 2]", b"3", b"null"])
    return suffix, data


def _toml(value) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value).replace(":", "=") if isinstance(value, dict) else json.dumps(value)
    return json.dumps(value)


def test_fuzz_run_configs(capsys, tmp_path):
    """A config is read before anything else: into a folder that already holds a run, every case must end
    in exit 2 — its own error, or, for the few that are valid, 'already holds a run' — and nothing written."""
    held = tmp_path / "held"
    held.mkdir()
    (held / "config.json").write_text("{}")
    rng, tally = random.Random(1302), Counter()
    for case in range(200):
        suffix, data = _config_case(rng)
        path = tmp_path / f"config{suffix}"
        path.write_bytes(data)
        _check(capsys, {2}, tally, (case, data[:200]), "train", "--config", path, "--out", held, "--quiet")
        assert sorted(p.name for p in held.iterdir()) == ["config.json"]
    print(f"configs: {sum(tally.values())} cases, exit codes {dict(tally)}")


# ---------------------------------------------------------------- run-folder files


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A sweep folder with one finished micro run (trained in-process), and a second copy of that run."""
    from noisefloor import config as config_module
    from noisefloor.sweep.spec import Plan, PlannedRun
    from noisefloor.sweep.store import SweepStore
    from noisefloor.train import trainer

    root = tmp_path_factory.mktemp("fuzz-sweep")
    config = config_module.load(MICRO).replace(train={"steps": 4, "eval_interval": 0, "checkpoint_interval": 2,
                                                      "digest_interval": 2})
    store = SweepStore(root / "sweep")
    run = PlannedRun("baseline", config.train.init_seed, None, config)
    store.path.mkdir()
    store.save_plan(Plan("fuzz", [run]))
    trainer.train(config, store.run_dir(run))
    twin = shutil.copytree(store.run_dir(run), root / "twin")
    return store, store.run_dir(run), twin


def _json_mutation(rng: random.Random, original: bytes) -> bytes:
    value = json.loads(original) if original.strip().startswith(b"{") else None
    choice = rng.randrange(9)
    if choice == 0:
        return original[: rng.randrange(len(original))]
    if choice == 1:
        return rng.choice([b"[]", b"[1,2]", b"null", b"3", b'"x"', b"", b"\xff\xfe\x00"])
    if choice == 2:
        return b"[" * 100_000 + b"]" * 100_000
    if choice == 3:
        return b'{"step": ' + b"9" * 5000 + b"}"
    if choice == 4 and value is not None:  # right shape, a field of the wrong type
        key = rng.choice(sorted(value))
        value[key] = rng.choice([None, [], {}, "x", -1, 1e308, True, [1, 2]])
        return json.dumps(value).encode()
    if choice == 5 and value is not None:  # a field gone
        value.pop(rng.choice(sorted(value)))
        return json.dumps(value).encode()
    raw = bytearray(original)
    for _ in range(rng.randint(1, 4)):  # flipped bytes
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    return bytes(raw)


def _lines_mutation(rng: random.Random, original: bytes) -> bytes:
    lines = original.splitlines()
    index = rng.randrange(len(lines))
    lines[index] = _json_mutation(rng, lines[index])
    return b"\n".join(lines) + b"\n"


def test_fuzz_run_folder_files(capsys, finished_sweep):
    """Damaged manifest/result/config/digests/metrics files: status goes on (the run marked failed or still
    counted), diverge and resume name the file, nothing crashes."""
    store, run, twin = finished_sweep
    files = ["manifest.json", "result.json", "config.json", "digests.jsonl", "metrics.jsonl"]
    rng, tally = random.Random(1303), Counter()
    for case in range(100):
        name = files[case % len(files)]
        path = run / name
        original = path.read_bytes()
        try:
            path.write_bytes((_lines_mutation if name.endswith(".jsonl") else _json_mutation)(rng, original))
            label = (case, name, path.read_bytes()[:120])
            _check(capsys, {0}, tally, label, "status", store.path, "--json")
            _check(capsys, {0, 1, 2}, tally, label, "diverge", run, twin)
            _check(capsys, {0, 1, 2}, tally, label, "train", "--resume", run, "--quiet")
        finally:
            path.write_bytes(original)
        assert not (run / "model.safetensors.tmp").exists()
    print(f"run-folder files: {sum(tally.values())} commands on 100 damaged files, exit codes {dict(tally)}")


# ---------------------------------------------------------------- weights


def _weights_case(rng: random.Random, tensors: dict[str, np.ndarray]) -> bytes:
    """The run's weights re-encoded with a hostile twist: another dtype, names, shapes, bytes."""
    from safetensors_files import NUMPY_DTYPES

    header, data, offset = {}, bytearray(), 0
    twist = rng.choice(["none", "dtype", "dtype", "raw-dtype", "name", "shape", "drop", "truncate", "flip"])
    for name, array in tensors.items():
        if twist == "dtype" and rng.random() < 0.3:
            array = array.astype(rng.choice(list(NUMPY_DTYPES)))
        dtype = NUMPY_DTYPES[array.dtype]
        raw = array.tobytes()
        if twist == "raw-dtype" and rng.random() < 0.3:  # formats numpy lacks: same bytes, declared otherwise
            dtype = rng.choice(["F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "BF16", "U64"])
            raw = bytes(_size(dtype, array.size))
        shape = list(array.shape)
        if twist == "name" and rng.random() < 0.3:
            name = rng.choice([name + "\n\x1b[31mred", name.upper(), "\u202e" + name, name + "x" * 500])
        if twist == "shape" and rng.random() < 0.3 and shape:
            shape = shape[::-1] if len(shape) > 1 else [shape[0] // 2, 2]
            if np.prod(shape) != array.size:
                shape = list(array.shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    if twist == "drop":  # the layout check refuses the gap this leaves, or the model finds the tensor missing
        header.pop(rng.choice(sorted(header)))
    blob = json.dumps(header).encode()
    out = bytearray(struct.pack("<Q", len(blob)) + blob + bytes(data))
    if twist == "truncate":
        out = out[: rng.randrange(len(out))]
    elif twist == "flip":
        out[rng.randrange(min(len(out), 8 + len(blob)))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _size(dtype: str, numel: int) -> int:
    from noisefloor.checkpoints import DTYPES

    return (numel * DTYPES[dtype].bits + 7) // 8


def test_fuzz_weights_given_to_eval(capsys, finished_sweep, tmp_path):
    """eval either evaluates float weights of the right shapes or refuses with one line; it never casts
    integers, booleans, complex or 8-bit floats into a model."""
    from safetensors.numpy import load_file

    _, run, _ = finished_sweep
    tensors = load_file(str(run / "model.safetensors"))
    (tmp_path / "config.json").write_bytes((run / "config.json").read_bytes())
    weights = tmp_path / "model.safetensors"
    rng, tally = random.Random(1304), Counter()
    for case in range(120):
        weights.write_bytes(_weights_case(rng, tensors))
        code = _check(capsys, {0, 2}, tally, case, "eval", weights)
        if code == 0:  # evaluated: then every tensor was a float the model can hold
            from noisefloor.checkpoints import open_safetensors

            with open_safetensors(weights) as st:
                assert {info.dtype for info in st.tensors.values()} <= {"F16", "F32", "F64", "BF16"}, case
    print(f"weights for eval: {sum(tally.values())} cases, exit codes {dict(tally)}")


# ---------------------------------------------------------------- the cases, named


@pytest.mark.parametrize("name,content,command,expected", [
    ("manifest.json", b"[1,2]", "diverge", "manifest.json is corrupt (a JSON list, not an object)"),
    ("digests.jsonl", b"\xff\xfe{}\n", "diverge", "digests.jsonl is corrupt (not UTF-8 at byte 0)"),
    ("result.json", b"[]", "resume", "result.json is corrupt (a JSON list, not an object)"),
])
def test_damaged_run_files_are_named_with_what_is_wrong(capsys, finished_sweep, name, content, command, expected):
    store, run, twin = finished_sweep
    original = (run / name).read_bytes()
    (run / name).write_bytes(content)
    try:
        argv = ("diverge", run, twin) if command == "diverge" else ("train", "--resume", run)
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
        code, out, _ = run_cli(capsys, "status", store.path, "--json")  # status goes on, marking the run
        (row,) = json.loads(out)["runs"]
        assert code == 0
        if name != "digests.jsonl":
            assert row["status"] == "failed" and expected in row["error"]
    finally:
        (run / name).write_bytes(original)


@pytest.mark.parametrize("dtype", ["U64", "I32", "BOOL", "C64", "F8_E4M3", "F6_E2M3"])
def test_eval_refuses_weights_a_model_cannot_use_instead_of_casting(capsys, finished_sweep, tmp_path, dtype):
    """Before: U64 weights were cast and evaluated ('test loss 9084.7'), F6_E2M3 gave a SafetensorError traceback."""
    from safetensors.numpy import load_file

    _, run, _ = finished_sweep
    tensors = load_file(str(run / "model.safetensors"))
    header, data = {}, bytearray()
    for name, array in tensors.items():
        hostile = name == "out_head.weight"
        raw = bytes(_size(dtype, array.size)) if hostile else array.tobytes()
        header[name] = {"dtype": dtype if hostile else "F32", "shape": list(array.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    blob = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(data))
    shutil.copy(run / "config.json", tmp_path / "config.json")
    code, out, err = run_cli(capsys, "eval", tmp_path / "model.safetensors")
    assert code == 2 and f"'out_head.weight' is {dtype}" in err and "does not cast" in err and not out


def test_eval_mismatch_escapes_tensor_names_from_the_file(capsys, finished_sweep, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, run, _ = finished_sweep
    tensors = load_file(str(run / "model.safetensors"))
    tensors["evil\n\x1b[31mred"] = tensors["final_norm.scale"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    shutil.copy(run / "config.json", tmp_path / "config.json")
    code, _, err = run_cli(capsys, "eval", tmp_path / "model.safetensors")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "\x1b" not in err and "'evil\\n\\x1b[31mred'" in err
