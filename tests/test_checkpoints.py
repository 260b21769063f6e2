"""verify-identical and the torch-free safetensors reader: CLI, library, digests, memory."""

from __future__ import annotations

import cmath
import json
import math
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from noisefloor import checkpoints
from noisefloor.checkpoints import (
    DTYPES,
    compare,
    compare_paths,
    decode,
    file_digest,
    key_distance,
    open_safetensors,
    order_key,
    tensor_digests,
)
from noisefloor.cli import main
from noisefloor.digest import TensorDigest, single_tensor_digest
from noisefloor.errors import UserError
from safetensors_files import write_arrays, write_raw, write_tensors

REPO = Path(__file__).resolve().parents[1]


def model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "h.0.attn.weight": rng.standard_normal((16, 48)).astype(np.float32),
        "h.0.attn.bias": rng.standard_normal(48).astype(np.float32),
        "wte.weight": rng.standard_normal((64, 16)).astype(np.float32),
        "step": np.array(7, dtype=np.int64),
    }


def save(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    save_file(arrays, str(path), metadata=metadata)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["verify-identical", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def flip_bit(arrays: dict[str, np.ndarray], name: str, flat_index: int, bit: int) -> dict[str, np.ndarray]:
    changed = {k: v.copy() for k, v in arrays.items()}
    bits = changed[name].reshape(-1).view(np.uint32)
    bits[flat_index] ^= np.uint32(1 << bit)
    return changed


# ------------------------------------------------------------------ the CLI on the cases


def test_identical_files_exit_0(tmp_path, capsys):
    a = save(tmp_path / "a.safetensors", model(), {"step": "7"})
    b = save(tmp_path / "b.safetensors", model(), {"step": "7"})
    code, out, err = run_cli(capsys, a, b)
    assert code == 0 and err == ""
    assert out.splitlines()[0] == "IDENTICAL"
    assert "4 tensors" in out


def test_one_flipped_bit_names_the_tensor_with_one_element(tmp_path, capsys):
    a = save(tmp_path / "a.safetensors", model())
    b = save(tmp_path / "b.safetensors", flip_bit(model(), "h.0.attn.weight", 5 * 48 + 7, 0))
    code, out, _ = run_cli(capsys, a, b)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "DIFFERENT"
    [line] = [line for line in lines if "h.0.attn.weight" in line]
    assert "1 of 768 elements differ" in line and "max ULP 1" in line and "first at [5, 7]" in line
    assert not any("wte" in line or "bias" in line for line in lines)

    [difference] = compare(a, b).differences
    assert (difference.name, difference.differing, difference.first_index, difference.max_ulp) == ("h.0.attn.weight", 1, (5, 7), 1)
    assert difference.fraction == 1 / 768
    original = model()["h.0.attn.weight"][5, 7]
    assert difference.max_abs_diff == pytest.approx(abs(float(np.nextafter(original, np.inf)) - float(original)), rel=1e-6)


def test_nan_payload_and_negative_zero_are_differences(tmp_path, capsys):
    plain = np.array([0.0, np.nan, 1.0, 2.0], dtype=np.float32)
    other = plain.copy()
    other[0] = -0.0
    other.view(np.uint32)[1] |= np.uint32(1)  # another quiet NaN payload
    assert np.array_equal(plain, other, equal_nan=True)  # equal as values
    a = save(tmp_path / "a.safetensors", {"x": plain})
    b = save(tmp_path / "b.safetensors", {"x": other})
    code, out, _ = run_cli(capsys, a, b)
    assert code == 1
    assert "2 of 4 elements differ" in out and "1 with NaN" in out and "max ULP 1" in out and "first at [0]" in out
    [difference] = compare(a, b).differences
    assert difference.nan_mismatches == 1 and difference.max_abs_diff == 0.0 and difference.max_ulp == 1


def test_extra_missing_dtype_and_shape_changes_give_reasons(tmp_path, capsys):
    base = model()
    changed = dict(base)
    changed["extra.weight"] = np.zeros(3, dtype=np.float32)
    del changed["step"]
    changed["wte.weight"] = base["wte.weight"].astype(np.float64)
    changed["h.0.attn.bias"] = base["h.0.attn.bias"].reshape(6, 8)
    a = save(tmp_path / "a.safetensors", base)
    b = save(tmp_path / "b.safetensors", changed)
    code, out, _ = run_cli(capsys, a, b)
    assert code == 1
    assert "extra in B: 'extra.weight'" in out
    assert "missing from B: 'step'" in out
    assert "'wte.weight': dtype F32 vs F64" in out
    assert "'h.0.attn.bias': shape [48] vs [6, 8]" in out
    result = compare(a, b)
    assert result.only_in_b == ["extra.weight"] and result.only_in_a == ["step"]
    assert {m.name: m.reason for m in result.mismatches} == {
        "h.0.attn.bias": "shape [48] vs [6, 8]",
        "wte.weight": "dtype F32 vs F64",
    }
    assert result.tensors_compared == 1 and not result.differences


def test_metadata_is_compared_as_parsed_json(tmp_path, capsys):
    arrays = {"x": np.arange(6, dtype=np.float32)}
    # Same tensors and metadata, but the header bytes differ: key order, layout order, padding.
    a = write_arrays(tmp_path / "a.safetensors", {**arrays, "y": np.ones(2, np.int32)}, {"k1": "v", "k2": "w"})
    b = write_arrays(tmp_path / "b.safetensors", {**arrays, "y": np.ones(2, np.int32)}, {"k2": "w", "k1": "v"}, reverse=True)
    assert a.read_bytes() != b.read_bytes()
    assert run_cli(capsys, a, b)[0] == 0

    c = write_arrays(tmp_path / "c.safetensors", {**arrays, "y": np.ones(2, np.int32)}, {"k1": "other", "k3": "new"})
    code, out, _ = run_cli(capsys, a, c)
    assert code == 1
    assert "metadata: key 'k2' only in A" in out and "key 'k3' only in B" in out and "key 'k1': 'v' vs 'other'" in out
    d = write_arrays(tmp_path / "d.safetensors", {**arrays, "y": np.ones(2, np.int32)})
    assert "A has no __metadata__" in run_cli(capsys, d, a)[1]


def test_ignore_patterns_skip_named_tensors_in_both_files(tmp_path, capsys):
    """A book checkpoint carries `att.mask` buffers that a noisefloor one lacks; --ignore leaves them out."""
    mask = np.triu(np.ones((4, 4), dtype=np.float32), 1)
    ours = save(tmp_path / "ours.safetensors", model())
    book = save(tmp_path / "book.safetensors", {**model(), "h.0.att.mask": mask, "h.1.att.mask": mask})
    code, out, _ = run_cli(capsys, ours, book)
    assert code == 1 and "extra in B: 'h.0.att.mask'" in out
    code, out, _ = run_cli(capsys, ours, book, "--ignore", "*.att.mask")
    assert code == 0 and out.startswith("IDENTICAL") and "4 tensors" in out and "2 ignored" in out
    # a real difference still counts, and every pattern given is applied
    changed = save(tmp_path / "changed.safetensors", {**flip_bit(model(), "wte.weight", 3, 0), "h.0.att.mask": mask})
    code, out, _ = run_cli(capsys, ours, changed, "--ignore", "*.att.mask")
    assert code == 1 and "wte.weight" in out
    code, out, _ = run_cli(capsys, ours, changed, "--ignore", "*.att.mask", "--ignore", "wte.*", "--json")
    assert code == 0 and json.loads(out)["files"][0]["ignored"] == ["h.0.att.mask", "wte.weight"]


def test_json_output_structure(tmp_path, capsys):
    a = save(tmp_path / "a.safetensors", model(), {"step": "7"})
    b = save(tmp_path / "b.safetensors", flip_bit(model(), "wte.weight", 17, 31), {"step": "8"})
    code, out, _ = run_cli(capsys, a, b, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["identical"] is False and report["only_in_a"] == [] and report["only_in_b"] == []
    [file] = report["files"]
    assert set(file) == {
        "a", "b", "identical", "metadata", "only_in_a", "only_in_b", "mismatches", "differences", "tensors_compared", "bytes_compared",
        "ignored",
    }  # fmt: skip
    assert file["metadata"]["changed"] == ["step"]
    [difference] = file["differences"]
    assert difference["name"] == "wte.weight" and difference["first_index"] == [1, 1] and difference["differing"] == 1
    assert set(difference) == {
        "name", "dtype", "shape", "differing", "total", "fraction", "max_abs_diff", "max_ulp", "nan_mismatches", "first_index", "unit",
    }  # fmt: skip
    value = float(model()["wte.weight"].reshape(-1)[17])
    assert difference["max_abs_diff"] == pytest.approx(2 * abs(value), rel=1e-6)  # sign flip
    assert json.loads(run_cli(capsys, a, a, "--json")[1])["identical"] is True


def test_run_directories(tmp_path, capsys):
    run_a, run_b = tmp_path / "run-a", tmp_path / "run-b"
    for run in (run_a, run_b):
        run.mkdir()
        save(run / "model.safetensors", model(1))
        save(run / "init.safetensors", model(0))
    code, out, _ = run_cli(capsys, run_a, run_b)
    assert code == 0 and out.count("IDENTICAL") == 3  # verdict, model, init

    save(run_b / "init.safetensors", flip_bit(model(0), "h.0.attn.bias", 3, 10))
    code, out, _ = run_cli(capsys, run_a, run_b)
    assert code == 1 and "init.safetensors: DIFFERENT" in out and "model.safetensors: IDENTICAL" in out

    (run_b / "init.safetensors").unlink()
    result = compare_paths(run_a, run_b)
    assert not result.identical and result.only_in_a == ["init.safetensors"] and len(result.files) == 1
    assert "init.safetensors: only in" in run_cli(capsys, run_a, run_b)[1]

    # A run directory against a plain file compares the model.
    assert run_cli(capsys, run_a, run_b / "model.safetensors")[0] == 0


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d / "absent.safetensors", "no such file"),
        (lambda d: d, "a run directory must hold model.safetensors"),
        (lambda d: write_bytes(d / "empty.safetensors", b""), "(empty file)"),
        (lambda d: write_raw(d / "short.safetensors", b"{}", length=1000), "runs past the end of the file"),
    ],
    ids=["missing", "directory-without-model", "empty", "length-past-eof"],
)
def test_errors_exit_2_with_one_line(tmp_path, capsys, setup, message):
    good = save(tmp_path / "good.safetensors", model())
    bad = setup(tmp_path)
    for args in ((bad, good), (good, bad), (bad, good, "--json")):
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and out == ""
        assert len(err.splitlines()) == 1 and err.startswith("noisefloor verify-identical: error: ") and message in err


def test_unreadable_file_and_fifo(tmp_path, monkeypatch):
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        open_safetensors(fifo)  # must not block waiting for a writer
    with pytest.raises(UserError, match="is a directory, expected a .safetensors file"):
        open_safetensors(tmp_path)
    locked = save(tmp_path / "locked.safetensors", model())

    def denied(*args, **kwargs):  # chmod 0 does not stop root, so fake what the OS says
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(UserError, match="locked.safetensors: permission denied"):
        open_safetensors(locked)


# ------------------------------------------------------------------ the reader's API


def test_reader_api_is_zero_copy_and_validated(tmp_path):
    arrays = model()
    path = save(tmp_path / "m.safetensors", arrays, {"framework": "np"})
    with open_safetensors(path) as st:
        assert st.metadata == {"framework": "np"}
        assert list(st.tensors) == sorted(arrays)
        info = st.tensors["h.0.attn.weight"]
        assert (info.dtype, info.shape, info.nbytes, info.numel) == ("F32", (16, 48), 16 * 48 * 4, 16 * 48)
        view = st.tensor_bytes("h.0.attn.weight")
        assert view.readonly and isinstance(view.obj, mmap.mmap)  # a view of the mapping, not a copy
        assert bytes(view) == arrays["h.0.attn.weight"].tobytes()
        assert b"".join(bytes(c) for c in st.chunks("wte.weight", chunk_bytes=1000)) == arrays["wte.weight"].tobytes()
        with pytest.raises(UserError, match="no tensor 'nope'"):
            st.tensor_bytes("nope")
    # A view kept past close keeps its mapping alive instead of failing.
    assert bytes(view) == arrays["h.0.attn.weight"].tobytes()


def test_digests_match_the_in_memory_digest(tmp_path):
    arrays = model()
    path = save(tmp_path / "m.safetensors", arrays, {"anything": "ignored by the digest"})
    expected = TensorDigest()
    for name in sorted(arrays):
        a = arrays[name]  # C-contiguous already (ascontiguousarray would make 0-d arrays 1-d)
        expected.add(name, {np.float32: "F32", np.int64: "I64"}[a.dtype.type], a.shape, [a.tobytes()], a.nbytes)
    assert file_digest(path) == expected.hexdigest()
    assert tensor_digests(path) == expected.tensor_digests
    a = arrays["wte.weight"]
    assert tensor_digests(path)["wte.weight"] == single_tensor_digest("wte.weight", "F32", a.shape, [a.tobytes()], a.nbytes)
    other = save(tmp_path / "o.safetensors", flip_bit(arrays, "wte.weight", 0, 0))
    assert file_digest(other) != file_digest(path)
    assert {k for k, v in tensor_digests(other).items() if v != expected.tensor_digests[k]} == {"wte.weight"}


def test_statistics_add_up_across_chunks(tmp_path):
    x = np.arange(1000, dtype=np.float32).reshape(10, 100)
    y = x.copy()
    y[3, 10] += 1  # chunk 1 of 64-byte chunks is bytes 0..63; this is element 310
    y[9, 99] = -y[9, 99]
    a = write_arrays(tmp_path / "a.safetensors", {"x": x})
    b = write_arrays(tmp_path / "b.safetensors", {"x": y})
    for chunk in (64, 4096, 1 << 20):
        [d] = compare(a, b, chunk_bytes=chunk).differences
        assert (d.differing, d.first_index, d.max_abs_diff) == (2, (3, 10), 2 * 999.0)
        assert d.max_ulp == int(order_key(DTYPES["F32"], np.float32(999).reshape(1).view(np.uint32))[0]) * 2 + 1
    with pytest.raises(ValueError):
        compare(a, b, chunk_bytes=12)


# ------------------------------------------------------------------ dtypes: values and ULPs


def test_float_order_key_is_monotonic_with_zeros_one_apart():
    bits = np.arange(1 << 16, dtype=np.uint16)
    values = bits.view(np.float16).astype(np.float64)
    keep = ~np.isnan(values)
    keys = order_key(DTYPES["F16"], bits)[keep].astype(np.int64)
    order = np.argsort(keys, kind="stable")
    assert np.all(np.diff(values[keep][order]) >= 0)  # key order is value order
    assert np.array_equal(np.sort(keys), np.arange(keys.min(), keys.min() + keys.size))  # no holes: distance = ULPs
    zero, negzero = np.array([0x0000, 0x8000], dtype=np.uint16)
    assert key_distance(order_key(DTYPES["F16"], np.array([zero])), order_key(DTYPES["F16"], np.array([negzero])))[0] == 1


def test_integer_distances_are_exact_at_the_extremes(tmp_path):
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    a = write_arrays(tmp_path / "a.safetensors", {"i": np.array([lo, 5], np.int64), "u": np.array([0], np.uint64)})
    b = write_arrays(tmp_path / "b.safetensors", {"i": np.array([hi, 5], np.int64), "u": np.array([2**64 - 1], np.uint64)})
    diffs = {d.name: d for d in compare(a, b).differences}
    assert diffs["i"].max_ulp == diffs["i"].max_abs_diff == 2**64 - 1
    assert diffs["u"].max_ulp == 2**64 - 1 and diffs["i"].first_index == (0,)


def test_bf16_values_and_infinities(tmp_path):
    one, two, inf = 0x3F80, 0x4000, 0x7F80
    a = write_tensors(tmp_path / "a.safetensors", {"w": ("BF16", (3,), np.array([one, one, 0], np.uint16).tobytes())})
    b = write_tensors(tmp_path / "b.safetensors", {"w": ("BF16", (3,), np.array([two, one + 1, 0], np.uint16).tobytes())})
    [d] = compare(a, b).differences
    assert (d.differing, d.max_abs_diff, d.max_ulp) == (2, 1.0, 128)
    c = write_tensors(tmp_path / "c.safetensors", {"w": ("BF16", (3,), np.array([inf, one, 0], np.uint16).tobytes())})
    [d] = compare(a, c).differences
    assert d.max_abs_diff == math.inf and compare(a, c).to_json()["differences"][0]["max_abs_diff"] == "inf"


def test_float32_overflowing_difference_is_exact():
    big = np.array([3e38, -3e38], dtype=np.float32)
    stats = checkpoints._DiffStats(checkpoints.TensorInfo("x", "F32", (1,), 0, 4))
    stats.add(big[:1].view(np.uint8), big[1:].view(np.uint8), 0)
    assert stats.result().max_abs_diff == pytest.approx(6e38, rel=1e-6)


def test_f8_tables_match_torch():
    torch = pytest.importorskip("torch")
    bits = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    for name, torch_dtype in [
        ("F8_E4M3", "float8_e4m3fn"),
        ("F8_E5M2", "float8_e5m2"),
        ("F8_E4M3FNUZ", "float8_e4m3fnuz"),
        ("F8_E5M2FNUZ", "float8_e5m2fnuz"),
        ("F8_E8M0", "float8_e8m0fnu"),
    ]:
        if not hasattr(torch, torch_dtype):
            continue
        expected = bits.view(getattr(torch, torch_dtype)).to(torch.float64).numpy()
        ours = decode(DTYPES[name], np.arange(256, dtype=np.uint8)).astype(np.float64)
        assert np.array_equal(ours, expected, equal_nan=True), name


def test_f8_complex_and_packed_formats(tmp_path):
    e4m3 = {"f8": ("F8_E4M3", (4,), bytes([0x38, 0x7F, 0x00, 0x01]))}  # 1.0, NaN, 0, smallest subnormal
    e4m3_b = {"f8": ("F8_E4M3", (4,), bytes([0x40, 0xFF, 0x80, 0x01]))}  # 2.0, NaN, -0, same
    c64 = np.array([1 + 2j, 3 - 1j], dtype=np.complex64)
    c64_b = c64.copy()
    c64_b[1] = 3 + 1j
    packed = {"f4": ("F4", (4,), bytes([0x12, 0x34]))}
    packed_b = {"f4": ("F4", (4,), bytes([0x12, 0x35]))}
    a = write_tensors(tmp_path / "a.safetensors", {**e4m3, **packed, "c": ("C64", (2,), c64.tobytes())})
    b = write_tensors(tmp_path / "b.safetensors", {**e4m3_b, **packed_b, "c": ("C64", (2,), c64_b.tobytes())})
    diffs = {d.name: d for d in compare(a, b).differences}
    assert (diffs["f8"].differing, diffs["f8"].nan_mismatches, diffs["f8"].max_abs_diff, diffs["f8"].max_ulp) == (3, 1, 1.0, 8)
    assert (diffs["c"].differing, diffs["c"].first_index, diffs["c"].max_abs_diff) == (1, (1,), 2.0)
    assert (diffs["f4"].unit, diffs["f4"].differing, diffs["f4"].total, diffs["f4"].first_index) == ("byte", 1, 2, (1,))
    assert diffs["f4"].max_ulp is None


# ------------------------------------------------------------------ memory and imports


def _in_subprocess(code: str, *args: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak resident size from /proc")
def test_streaming_keeps_memory_bounded(tmp_path):
    """Comparing and digesting 2 x 48 MB (identical, then all different) adds far less than the files' size."""
    x = np.random.default_rng(0).standard_normal(12 << 20).astype(np.float32)
    a = write_arrays(tmp_path / "a.safetensors", {"x": x})
    b = write_arrays(tmp_path / "b.safetensors", {"x": x})
    c = write_arrays(tmp_path / "c.safetensors", {"x": (x.view(np.uint32) ^ 1).view(np.float32)})
    warm = write_arrays(tmp_path / "warm.safetensors", {"x": x[:4096], "y": -x[:4096]})
    del x
    out = _in_subprocess(
        """
        import re, sys
        from noisefloor.checkpoints import compare, file_digest
        def peak_mb():  # VmHWM: this process's own peak (ru_maxrss may carry the parent's from fork)
            return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
        a, b, c, warm = sys.argv[1:]
        compare(warm, warm), file_digest(warm)  # imports and numpy's caches
        base = peak_mb()
        assert compare(a, b).identical
        file_digest(a)
        assert not compare(a, c).identical
        print(peak_mb() - base)
        """,
        a,
        b,
        c,
        warm,
    )
    assert int(out) < 40, f"peak resident memory grew by {out} MB for 96 MB of files"


def test_torch_is_never_imported_and_numpy_only_for_differences(tmp_path):
    a = save(tmp_path / "a.safetensors", model())
    b = save(tmp_path / "b.safetensors", model())
    c = save(tmp_path / "c.safetensors", flip_bit(model(), "wte.weight", 0, 0))
    out = _in_subprocess(
        """
        import sys
        from noisefloor.checkpoints import file_digest
        from noisefloor.cli import main
        same = main(["verify-identical", sys.argv[1], sys.argv[2]])
        file_digest(sys.argv[1])
        numpy = "numpy" in sys.modules
        different = main(["verify-identical", sys.argv[1], sys.argv[3], "--json"])
        print(same, numpy, different, "torch" in sys.modules)
        """,
        a,
        b,
        c,
    )
    assert out.splitlines()[-1] == "0 False 1 False"


# ------------------------------------------------------------------ statistics against a plain-Python reference

REFERENCE_DTYPES = ["F32", "F16", "BF16", "F64", "C64", "F8_E4M3", "F8_E5M2", "I32", "I64", "U8", "U64"]


def reference_value(dtype: str, raw: bytes) -> float | int:
    if dtype in ("I32", "I64"):
        return int.from_bytes(raw, "little", signed=True)
    if dtype in ("U8", "U64"):
        return int.from_bytes(raw, "little")
    if dtype == "BF16":
        return struct.unpack("<f", b"\0\0" + raw)[0]
    if dtype == "C64":
        return complex(*struct.unpack("<ff", raw))
    if dtype.startswith("F8"):
        return float(decode(DTYPES[dtype], np.frombuffer(raw, np.uint8))[0])
    return struct.unpack({"F16": "<e", "F32": "<f", "F64": "<d"}[dtype], raw)[0]


def reference_ulp(raw_a: bytes, raw_b: bytes, parts: int = 1) -> int:
    """Sign-magnitude bits on one number line: +x at magnitude x, -x at -magnitude-1."""

    if parts == 2:  # C64: the worse of the two float32 parts
        return max(reference_ulp(raw_a[:4], raw_b[:4]), reference_ulp(raw_a[4:], raw_b[4:]))

    def position(raw: bytes) -> int:
        bits = int.from_bytes(raw, "little")
        sign = 1 << (8 * len(raw) - 1)
        return -(bits - sign) - 1 if bits & sign else bits

    return abs(position(raw_a) - position(raw_b))


def reference_gap(dtype: str, raw_a: bytes, raw_b: bytes) -> float:
    """|a - b|; for C64 per part, a part with equal bits contributing 0 (so inf vs inf is 0, not NaN)."""
    if dtype != "C64":
        return abs(reference_value(dtype, raw_a) - reference_value(dtype, raw_b))
    parts = [0.0 if raw_a[i : i + 4] == raw_b[i : i + 4] else reference_value("F32", raw_a[i : i + 4]) - reference_value("F32", raw_b[i : i + 4]) for i in (0, 4)]
    return math.hypot(*parts)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    dtype=st.sampled_from(REFERENCE_DTYPES),
    data=st.data(),
    chunk=st.sampled_from([8, 16, 64, 4096]),
)
def test_statistics_match_a_plain_python_reference(dtype, data, chunk):
    size = DTYPES[dtype].itemsize
    n = data.draw(st.integers(1, 40))
    special = [bytes(size), bytes(size - 1) + b"\x80", b"\xff" * size, b"\x7f" + b"\xff" * (size - 1)]
    element = st.binary(min_size=size, max_size=size) | st.sampled_from([s[::-1] for s in special] + special)
    a = data.draw(st.lists(element, min_size=n, max_size=n))
    b = [data.draw(element) if data.draw(st.integers(0, 3)) == 0 else x for x in a]
    with tempfile.TemporaryDirectory() as folder:
        pa = write_tensors(Path(folder) / "a.safetensors", {"t": (dtype, (n,), b"".join(a))})
        pb = write_tensors(Path(folder) / "b.safetensors", {"t": (dtype, (n,), b"".join(b))})
        result = compare(pa, pb, chunk_bytes=chunk)
    differing = [i for i in range(n) if a[i] != b[i]]
    if not differing:
        assert result.identical
        return
    [d] = result.differences
    assert (d.differing, d.first_index, d.total) == (len(differing), (differing[0],), n)
    values = [(reference_value(dtype, a[i]), reference_value(dtype, b[i]), i) for i in differing]
    if dtype[0] in "IU":
        assert d.max_ulp == d.max_abs_diff == max(abs(x - y) for x, y, _ in values)
        return
    usable = [(x, y, i) for x, y, i in values if not (cmath.isnan(x) or cmath.isnan(y))]
    assert d.nan_mismatches == len(values) - len(usable)
    if not usable:
        assert d.max_ulp is None and d.max_abs_diff is None
        return
    assert d.max_ulp == max(reference_ulp(a[i], b[i], parts=2 if dtype == "C64" else 1) for _, _, i in usable)
    expected = max(reference_gap(dtype, a[i], b[i]) for _, _, i in usable)
    assert d.max_abs_diff == (math.inf if math.isinf(expected) else pytest.approx(expected, rel=1e-6))


def test_complex_beyond_one_block_with_infinite_parts(tmp_path):
    n = checkpoints.STATS_BLOCK + 100
    a = np.full(n, 1 + 1j, dtype=np.complex64)
    a[0] = complex(np.inf, 1)
    b = a + np.complex64(0.5j)  # every element differs in its imaginary part only
    b[0] = complex(np.inf, 3)  # same infinite real part: contributes 0, not inf - inf = NaN
    pa = write_arrays(tmp_path / "a.safetensors", {"c": a})
    pb = write_arrays(tmp_path / "b.safetensors", {"c": b})
    [d] = compare(pa, pb).differences
    assert (d.differing, d.nan_mismatches, d.max_abs_diff) == (n, 0, 2.0)
    assert d.max_ulp == int(key_distance(order_key(DTYPES["F32"], np.float32([1.0]).view(np.uint32)), order_key(DTYPES["F32"], np.float32([3.0]).view(np.uint32)))[0])
