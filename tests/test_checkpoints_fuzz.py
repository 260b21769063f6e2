"""Corrupt and hostile safetensors files: always a one-line UserError (exit 2), never a crash, hang or blow-up."""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from noisefloor import checkpoints
from noisefloor.checkpoints import DTYPES, compare, file_digest, open_safetensors
from noisefloor.cli import main
from noisefloor.errors import UserError
from safetensors_files import write_raw, write_tensors

F32X2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def tensor(dtype="F32", shape=(2,), offsets=(0, 8), **extra):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets), **extra}


HOSTILE = [
    # (id, header, data, length override, expected part of the message)
    ("5-byte file", None, b"", None, "too short for the 8-byte header length"),
    ("length above cap", {}, b"", 100_000_001, "above the 100000000-byte limit"),
    ("length 2**64-1", {}, b"", 2**64 - 1, "above the 100000000-byte limit"),
    ("length past eof", {}, b"", 4096, "runs past the end of the file"),
    ("not utf-8", b'{"\xff":1}', b"", None, "header is not UTF-8 (byte 2)"),
    ("not json", "{", b"", None, "header is not valid JSON"),
    ("trailing garbage", "{} x", b"", None, "not valid JSON: Extra data"),
    ("json array", [], b"", None, "header is a JSON list, expected an object"),
    ("json string", "\"x\"", b"", None, "header is a JSON str"),
    ("nan literal", '{"__metadata__":{"a":NaN}}', b"", None, "NaN is not a JSON value"),
    ("duplicate tensor", '{"x":%s,"x":%s}' % (json.dumps(F32X2), json.dumps(F32X2)), bytes(8), None, "duplicate key 'x'"),
    ("duplicate field", '{"x":{"dtype":"F32","dtype":"F64","shape":[2],"data_offsets":[0,8]}}', bytes(8), None, "duplicate key 'dtype'"),
    ("unknown dtype", {"x": tensor("F31")}, bytes(8), None, "unknown dtype 'F31'"),
    ("lowercase dtype", {"x": tensor("f32")}, bytes(8), None, "unknown dtype 'f32'"),
    ("dtype not string", {"x": tensor(5)}, bytes(8), None, "unknown dtype int"),
    ("missing offsets", {"x": {"dtype": "F32", "shape": [2]}}, bytes(8), None, "missing data_offsets"),
    ("unknown field", {"x": tensor(extra=1)}, bytes(8), None, "unknown key 'extra'"),
    ("entry not object", {"x": [1, 2]}, b"", None, "entry is list"),
    ("negative dim", {"x": tensor(shape=(-2,))}, bytes(8), None, "must hold non-negative integers"),
    ("float dim", '{"x":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', bytes(8), None, "must hold non-negative integers"),
    ("bool dim", {"x": tensor(shape=(True, 2))}, bytes(8), None, "must hold non-negative integers"),
    ("shape a string", '{"x":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}', bytes(8), None, "shape is str"),
    ("dim 2**64", {"x": tensor(shape=(2**64,))}, bytes(8), None, "below 2**64"),
    ("product overflows", {"x": tensor(shape=(2**32, 2**32, 2))}, bytes(8), None, "more than 2**64 elements"),
    ("absurd numel", {"x": tensor(shape=(2**31, 2**31))}, bytes(8), None, "needs 18446744073709551616 bytes"),
    ("rank 65", {"x": tensor(shape=[1] * 65)}, bytes(8), None, "rank 65 is above 64"),
    ("bytes mismatch", {"x": tensor(shape=(3,))}, bytes(8), None, "needs 12 bytes but data_offsets [0, 8] hold 8"),
    ("offsets 3 long", {"x": tensor(offsets=(0, 4, 8))}, bytes(8), None, "data_offsets must be [begin, end]"),
    ("offsets strings", {"x": tensor(offsets=("0", "8"))}, bytes(8), None, "data_offsets must be [begin, end]"),
    ("negative offset", {"x": tensor(offsets=(-8, 0))}, bytes(8), None, "data_offsets must be [begin, end]"),
    ("end before begin", {"x": tensor(offsets=(8, 0))}, bytes(8), None, "end 0 is before begin 8"),
    ("past data area", {"x": tensor()}, bytes(4), None, "run past the data area (4 bytes)"),
    ("huge offsets", {"x": tensor(offsets=(2**63, 2**63 + 8))}, bytes(8), None, "run past the data area"),
    ("overlap", {"a": tensor(), "b": tensor(offsets=(4, 12))}, bytes(12), None, "tensors 'a' and 'b' overlap"),
    ("gap", {"a": tensor(), "b": tensor(offsets=(12, 20))}, bytes(20), None, "4 unused bytes after tensor 'a'"),
    ("not from 0", {"a": tensor(offsets=(4, 12))}, bytes(12), None, "4 unused bytes before the first tensor"),
    ("trailing bytes", {"a": tensor()}, bytes(12), None, "4 bytes after the last tensor"),
    ("metadata list", {"__metadata__": []}, b"", None, "__metadata__ is list, expected an object of strings"),
    ("metadata int value", {"__metadata__": {"a": 1}}, b"", None, "__metadata__ 'a' is int, expected a string"),
    ("lone surrogate", '{"\\ud800":%s}' % json.dumps(F32X2), bytes(8), None, "is not valid UTF-8 (lone surrogate)"),
    ("surrogate metadata", '{"__metadata__":{"k":"\\udfff"}}', b"", None, "lone surrogate"),
    ("deep nesting", '{"a":' + "[" * 100_000 + "]" * 100_000 + "}", b"", None, "nests JSON too deeply"),
    ("5000-digit int", '{"x":{"dtype":"F32","shape":[%s],"data_offsets":[0,8]}}' % ("1" * 5000), bytes(8), None, "not valid JSON"),
    ("value budget", '{"__metadata__":{"a":"%s"}}' % ("," * 2_000_001), b"", None, "more than 2000000 JSON values"),
    ("partial byte", {"x": tensor("F4", (3,), (0, 2))}, bytes(2), None, "3 elements of F4 do not fill whole bytes"),
]


@pytest.mark.parametrize("header, data, length, message", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_hostile_file_is_one_line_exit_2(tmp_path, capsys, header, data, length, message):
    path = tmp_path / "bad.safetensors"
    if header is None:
        path.write_bytes(b"\x01\x02\x03\x04\x05")
    else:
        write_raw(path, header, data, length)
    with pytest.raises(UserError) as raised:
        open_safetensors(path)
    assert message in str(raised.value) and str(raised.value).startswith(f"{path}: not a valid safetensors file: ")
    assert main(["verify-identical", str(path), str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and message in err


@pytest.mark.parametrize(
    "header, data",
    [
        ({}, b""),
        ({"__metadata__": None}, b""),
        ({"__metadata__": {}, "empty": tensor(shape=(0, 5), offsets=(0, 0)), "also": tensor(shape=(5, 0), offsets=(0, 0))}, b""),
        ({"b": tensor(offsets=(8, 16)), "a": tensor(), "z": tensor("F4", (4,), (16, 18))}, bytes(18)),
        ({"s": tensor("F6_E2M3", (4,), (0, 3))}, bytes(3)),
        ({"scalar": tensor("I64", (), (0, 8))}, bytes(8)),
    ],
    ids=["empty", "null-metadata", "zero-size", "any-order", "f6", "scalar"],
)
def test_edge_cases_the_format_allows(tmp_path, header, data):
    path = write_raw(tmp_path / "ok.safetensors", header, data)
    with open_safetensors(path) as st:
        assert len(st.tensors) == len(header) - ("__metadata__" in header)
    assert compare(path, path).identical
    file_digest(path)


# ------------------------------------------------------------------ fuzzing

MEMORY_SLACK = 4 << 20  # what one example may allocate beyond 20x its file size


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def check_file(path: Path) -> None:
    """Open, and when valid also compare and digest, under tracemalloc: only UserError may escape."""
    size = path.stat().st_size
    tracemalloc.start()
    started = time.perf_counter()
    try:
        try:
            with open_safetensors(path) as st:
                end = max((info.end for info in st.tensors.values()), default=0)
                assert st.data_start + end == size  # what validation promises
            assert compare(path, path).identical
            file_digest(path)
            outcome = "valid"
        except UserError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))
            outcome = re.sub(r"'[^']*'|\d+", "_", str(exc).split(": ", 2)[-1])[:60]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * size + MEMORY_SLACK, f"{peak} bytes allocated for a {size}-byte file"
    assert time.perf_counter() - started < 5
    if currently_in_test_context():
        event(outcome)  # pytest --hypothesis-show-statistics shows which checks the fuzzing reached


def check_cli(path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["verify-identical", str(path), str(path)])
    assert code in (0, 2)
    assert (code == 2) == bool(err.getvalue()) and len(err.getvalue().splitlines()) <= 1


FUZZ = settings(
    max_examples=300, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None
)


@FUZZ
@given(content=st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(folder, content):
    path = folder / "bytes.safetensors"
    path.write_bytes(content)
    check_file(path)


@FUZZ
@given(header=st.binary(max_size=200), data=st.binary(max_size=64), length=st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_fuzz_length_field_and_raw_header(folder, header, data, length):
    path = write_raw(folder / "raw.safetensors", header, data, length)
    check_file(path)


sizes = st.one_of(st.integers(0, 4), st.sampled_from([-1, 2**31, 2**32, 2**63, 2**64 - 1, 2**64, 10**30]))
dims = st.one_of(sizes, st.sampled_from([1.5, "3", None, True, [2]]))
offsets = st.one_of(
    st.lists(st.integers(-2, 40) | st.sampled_from([2**63, 2**64, 10**30]), min_size=0, max_size=3),
    st.sampled_from([None, "0,8", {"a": 1}]),
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from([*DTYPES, "F31", "f32", "", 7, None]),
        "shape": st.one_of(st.lists(dims, max_size=4), st.sampled_from([None, "2", 3])),
        "data_offsets": offsets,
        "extra": st.just(1),
    },
)
names = st.text(alphabet="abc.\x00\u00e9\U0001f600", max_size=4) | st.sampled_from(["__metadata__", "\ud800"])
metadata = st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=3), st.just([]))


@FUZZ
@given(
    tensors=st.dictionaries(names, entries | st.integers() | st.lists(st.integers(), max_size=2), max_size=5),
    meta=metadata,
    data_size=st.integers(0, 48),
)
def test_fuzz_structured_headers(folder, tensors, meta, data_size):
    header = {"__metadata__": meta, **tensors} if meta is not None else tensors
    path = write_raw(folder / "structured.safetensors", json.dumps(header), bytes(range(data_size)))
    check_file(path)
    check_cli(path)


small_change = st.sampled_from([0] * 12 + [1, -1, 4, -4, 2**63, 2**64])


@st.composite
def near_valid_headers(draw) -> tuple[dict, int]:
    """Headers that are right but for a few small faults, so validation is exercised past the JSON level."""
    header: dict = {}
    rare = st.integers(0, 9).map(lambda n: n == 0)  # one fault in ten draws
    if draw(rare):
        header["__metadata__"] = draw(st.sampled_from([[], {"k": 1}, "text"]))
    elif draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))
    offset = 0
    for name in draw(st.lists(st.text(alphabet="abc.\u00e9", min_size=1, max_size=3), unique=True, max_size=4)):
        dtype = draw(st.sampled_from(["F31", 7]) if draw(rare) else st.sampled_from(list(DTYPES)))
        shape = draw(st.lists(sizes | dims, max_size=3) if draw(rare) else st.lists(st.integers(0, 3), max_size=3))
        valid_dims = all(type(d) is int and 0 <= d < 2**20 for d in shape)
        nbits = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].bits if dtype in DTYPES and valid_dims else 32
        begin = max(offset + draw(small_change), 0)
        end = begin + nbits // 8 + draw(small_change)
        entry = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
        if draw(rare):
            del entry[draw(st.sampled_from(sorted(entry)))]
        header[name] = entry
        offset = max(end, offset)
    order = draw(st.permutations(list(header)))
    return {key: header[key] for key in order}, max(offset + draw(small_change), 0)


@FUZZ
@given(header_and_size=near_valid_headers())
def test_fuzz_near_valid_headers(folder, header_and_size):
    header, data_size = header_and_size
    path = write_raw(folder / "near.safetensors", json.dumps(header), bytes(min(data_size, 1 << 16)))
    check_file(path)


valid_tensors = st.dictionaries(
    st.text(alphabet="abcxyz._0123456789", min_size=1, max_size=6),
    st.tuples(st.sampled_from(["F32", "BF16", "F16", "I64", "U8", "F8_E4M3", "C64", "BOOL"]), st.lists(st.integers(0, 3), max_size=3)),
    max_size=4,
)
edit_bytes = st.sampled_from(list(b'0123456789[]{},:" ')) | st.integers(0, 255)


@FUZZ
@given(tensors=valid_tensors, cut=st.integers(0, 10_000), edits=st.lists(st.tuples(st.integers(0, 10_000), edit_bytes), max_size=3))
def test_fuzz_truncated_and_edited_valid_files(folder, tensors, cut, edits):
    path = folder / "edited.safetensors"
    specs = {}
    for name, (dtype, shape) in tensors.items():
        nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].bits // 8
        specs[name] = (dtype, tuple(shape), bytes(i % 251 for i in range(nbytes)))
    write_tensors(path, specs, {"step": "1"})
    content = bytearray(path.read_bytes())
    for position, value in edits:
        content[position % len(content)] = value
    path.write_bytes(bytes(content[: max(cut, 0)] if cut < len(content) else content))
    check_file(path)
    check_cli(path)


def test_fuzz_memory_check_is_live(folder, monkeypatch):
    """The tracemalloc bound would catch an allocation sized from the header."""

    def allocating(self, fd):
        np.zeros(64 << 20, dtype=np.uint8).fill(1)
        raise UserError(f"{self.path}: rejected")

    monkeypatch.setattr(checkpoints.SafetensorsFile, "_read_header", allocating)
    path = write_raw(folder / "tiny.safetensors", {})
    with pytest.raises(AssertionError, match="allocated"):
        check_file(path)


def test_fifty_megabyte_token_bomb_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.safetensors"
    path.write_bytes(struct.pack("<Q", 50_000_000) + b"[" * 50_000_000)
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match="more than 2000000 JSON values"):
            open_safetensors(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 60_000_000 and time.perf_counter() - started < 5
