"""Fuzzed inputs: every malformed input gives a ctdn error (a CTDNError) or a correct result.

* The regression corpus (``tests/corpus``, written by ``tests/corpus/make_corpus.py``): each
  malformed DICOM case is read with :func:`ctdn.io.read_dicom` and must give the outcome its
  manifest entry names; a sample also goes through ``ctdn denoise`` (exit status 2 and one
  ``ctdn: error:`` line, or a written output). Input files are byte-identical afterwards.
* Array and dose cases (NaN/inf, wrong dtypes and shapes, extreme HU, doses of every wrong kind)
  through :class:`ctdn.Denoiser` with a tiny model.
* Hypothesis properties (derandomized, so CI is deterministic): random arrays and doses through
  the Denoiser, random byte mutations of a valid DICOM file through ``read_dicom``.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from dicom_factory import make_ct_series
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ctdn.errors
from ctdn import Denoiser
from ctdn.cli import main
from ctdn.errors import CTDNError, DicomError, DoseError, InputError, InputTypeError
from ctdn.io import list_series, read_dicom, write_dicom
from ctdn.models import build, save_model

CORPUS = Path(__file__).parent / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
CASES = MANIFEST["cases"]
EXPECTED = dict(np.load(CORPUS / "expected.npz"))

# Hypothesis examples per property (also reported in docs/robustness.md)
N_ARRAYS = 200
N_DOSES = 300
N_MUTATIONS = 600
N_GEOMETRY = 150


def _sources(case: dict) -> list[Path]:
    return [CORPUS / p for p in case.get("files") or [case["path"]]]


def _files(case: dict) -> list[Path]:
    out = []
    for p in _sources(case):
        out += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return out


def _digest(files: list[Path]) -> dict[str, str]:
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _read(case: dict):
    src = _sources(case)
    arg = [str(p) for p in src] if "files" in case else str(src[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_dicom(arg, **case.get("kwargs", {}))


def _check(case: dict, outcome) -> None:
    expect = case["expect"]
    what = f"{case['case']} ({case['what']})"
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, CTDNError), f"{what}: {type(outcome).__name__} escaped: {outcome}"
        wanted = expect.get("error") or expect.get("error_or_ok")
        assert wanted, f"{what}: expected a result, got {type(outcome).__name__}: {outcome}"
        assert isinstance(outcome, getattr(ctdn.errors, wanted)), (
            f"{what}: {type(outcome).__name__}: {outcome}"
        )
        if expect.get("match"):  # in the message proper, not in the case's folder name
            message = re.sub(r"\S*corpus/dicom/\S*", "", str(outcome))
            assert expect["match"].lower() in message.lower(), f"{what}: message {outcome}"
        # a clear message names the file or folder it is about
        names = {p.name for p in _sources(case)} | {p.parent.name for p in _sources(case)}
        assert any(n in str(outcome) for n in names), f"{what}: message does not name the input: {outcome}"
        return
    assert "error" not in expect, f"{what}: expected {expect['error']}, got a volume {outcome.shape}"
    hu = outcome.hu
    assert hu.dtype == np.float32 and np.isfinite(hu).all(), what
    if "ok" in expect:
        want = EXPECTED[expect["ok"]]
        assert hu.shape == want.shape, f"{what}: shape {hu.shape}, expected {want.shape}"
        np.testing.assert_array_equal(hu, want, err_msg=what)
        assert len(outcome.headers) == len(outcome.files) == hu.shape[0]
    else:
        assert list(hu.shape) == expect["shape"], what
        if "hu" in expect:  # a header corruption that still reads must not change the image
            np.testing.assert_array_equal(hu, EXPECTED[expect["hu"]], err_msg=what)


def test_corpus_is_large_and_covers_every_kind():
    assert MANIFEST["n_cases"] == len(CASES) >= 200
    kinds = {c["category"] for c in CASES}
    for kind in (
        "truncated",
        "corrupted",
        "missing tag",
        "odd value",
        "BitsStored < BitsAllocated",
        "PixelRepresentation mismatch",
        "big endian",
        "multi-frame",
        "non-CT modality",
        "orientation",
        "positions",
        "float pixel data",
        "extreme HU",
    ):
        assert kind in kinds
    size = sum(f.stat().st_size for f in (CORPUS / "dicom").rglob("*") if f.is_file())
    assert size < 2 * 1024 * 1024


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_corpus_case(case):
    files = _files(case)
    before = _digest(files)
    try:
        outcome = _read(case)
    except Exception as exc:  # noqa: BLE001 - the point is to see what escapes
        outcome = exc
    _check(case, outcome)
    src = _sources(case)
    try:  # list_series reads the same headers: a list of series or a CTDNError, nothing else
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            listed = list_series([str(p) for p in src] if "files" in case else str(src[0]))
    except CTDNError:
        pass
    else:
        assert all({"uid", "description", "n_files", "modality"} <= set(s) for s in listed)
    assert _digest(files) == before, f"{case['case']}: an input file changed"


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_corpus_case_mapped(case, tmp_path):
    """``ctdn denoise`` reads DICOM through ``ctdn.io.stream.read_dicom_mapped``: the same outcome."""
    stream = pytest.importorskip("ctdn.io.stream")
    src = _sources(case)
    arg = [str(p) for p in src] if "files" in case else str(src[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = stream.read_dicom_mapped(arg, scratch_dir=tmp_path, **case.get("kwargs", {}))
    except Exception as exc:  # noqa: BLE001
        assert isinstance(exc, CTDNError), f"{case['case']}: {type(exc).__name__} escaped: {exc}"
        wanted = case["expect"].get("error") or case["expect"].get("error_or_ok")
        assert wanted and isinstance(exc, getattr(ctdn.errors, wanted)), f"{case['case']}: {exc}"
        return
    assert "error" not in case["expect"], case["case"]
    if "ok" in case["expect"]:
        np.testing.assert_array_equal(np.asarray(outcome.hu), EXPECTED[case["expect"]["ok"]])


def test_whole_corpus_recursive():
    """All cases at once, recursively: one clear refusal (damaged files are never skipped)."""
    root = CORPUS / "dicom"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for call in (lambda: read_dicom(root, recursive=True), lambda: list_series(root, recursive=True)):
            with pytest.raises(DicomError):
                call()


OK_CASES = [c for c in CASES if "ok" in c["expect"]]


@pytest.mark.parametrize("case", OK_CASES, ids=[c["case"] for c in OK_CASES])
def test_corpus_round_trip(case, tmp_path):
    """What reads from the corpus writes back (write_dicom) and reads again to the same HU, within
    half a quantisation step, unless write_dicom warned that it clipped values to the stored range."""
    files = _files(case)
    before = _digest(files)
    vol = _read(case)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = write_dicom(vol.hu, vol, tmp_path / "out")
        back = read_dicom(out, allow_non_ct=True)
    assert back.hu.shape == vol.hu.shape and np.isfinite(back.hu).all()
    if not any("clipped" in str(w.message) for w in caught):
        slope = max(abs(float(h.get("RescaleSlope", 1) or 1)) for h in vol.headers)
        atol = 0.5 * slope + 1e-6 * float(np.abs(vol.hu).max())
        np.testing.assert_allclose(back.hu, vol.hu, rtol=0, atol=atol)
    assert _digest(files) == before


BAD_PATHS = {
    "empty_string": ("", DicomError),
    "empty_string_in_list": (["", "x.dcm"], DicomError),
    "nul_byte": ("a\0b", DicomError),
    "unknown_user": ("~no-such-user-ctdn/x", DicomError),
    "missing": ("/no/such/folder/ctdn", DicomError),
    "dev_null": ("/dev/null", DicomError),
    "bytes": (b"/tmp", InputTypeError),
    "int": (42, InputTypeError),
    "none": (None, InputTypeError),
    "dict": ({"path": "x"}, InputTypeError),
    "empty_list": ([], DicomError),
    "empty_tuple": ((), DicomError),
    "none_in_list": ([None], InputTypeError),
    "folder_in_list": ([str(CORPUS / "dicom" / "be_series")], DicomError),
}


@pytest.mark.parametrize("name", list(BAD_PATHS))
def test_bad_path_arguments(name):
    arg, kind = BAD_PATHS[name]
    with pytest.raises(kind):
        read_dicom(arg)


# --- the CLI on a sample of the corpus --------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_model(build("tiny"), path, {"name": "tiny"})


CLI_SAMPLE = [
    c
    for i, c in enumerate(CASES)
    if "files" not in c
    and not c.get("kwargs")
    and (i % 12 == 0 or c["case"] in ("hu_30000", "hu_minus_3024"))
]


@pytest.mark.parametrize("case", CLI_SAMPLE, ids=[c["case"] for c in CLI_SAMPLE])
def test_corpus_through_cli(case, tiny_model, tmp_path, capsys):
    files = _files(case)
    before = _digest(files)
    out = tmp_path / "out.npy"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(
            [
                "denoise",
                str(_sources(case)[0]),
                str(out),
                "--dose",
                "0.5",
                "--model",
                str(tiny_model),
                "--quiet",
            ]
        )
    err = capsys.readouterr().err
    assert _digest(files) == before
    expect = case["expect"]
    if code == 0:
        assert "error" not in expect, f"{case['case']}: the CLI accepted it"
        result = np.load(out)
        assert result.dtype == np.float32 and np.isfinite(result).all()
        if "ok" in expect:
            assert result.shape == EXPECTED[expect["ok"]].shape
    else:
        assert code == 2 and "ok" not in expect, (code, err)
        lines = err.strip().splitlines()
        assert len(lines) >= 1 and lines[0].startswith("ctdn: error: "), err
        assert not out.exists()


CLI_NPY = {
    "nan": np.full((2, 16, 16), np.nan, np.float32),
    "inf": np.full((2, 16, 16), np.inf, np.float32),
    "complex": np.zeros((2, 16, 16), np.complex64),
    "structured": np.zeros((2, 16, 16), dtype=[("hu", "f4")]),
    "bool": np.zeros((2, 16, 16), bool),
    "unicode": np.zeros((2, 16, 16), "U3"),
    "4d": np.zeros((1, 2, 16, 16), np.float32),
    "0d": np.array(1.0, np.float32),
    "1d": np.zeros(16, np.float32),
    "empty": np.zeros((0, 16, 16), np.float32),
    "beyond_float32": np.full((1, 16, 16), 1e39),
    "object": np.zeros((2, 16, 16), object),
    "truncated": None,
    "junk": None,
}


@pytest.mark.parametrize("name", list(CLI_NPY))
def test_cli_bad_npy(name, tiny_model, tmp_path, capsys):
    src = tmp_path / f"{name}.npy"
    if name == "truncated":
        np.save(src, np.zeros((2, 16, 16), np.float32))
        src.write_bytes(src.read_bytes()[:100])
    elif name == "junk":
        src.write_bytes(b"junk" * 10)
    else:
        np.save(src, CLI_NPY[name], allow_pickle=name == "object")
    before = src.read_bytes()
    out = tmp_path / "out.npy"
    code = main(["denoise", str(src), str(out), "--dose", "0.5", "--model", str(tiny_model), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ctdn: error: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and src.read_bytes() == before


CLI_DOSES = ["0", "-0.5", "1.0001", "2", "nan", "inf", "1e400", "abc", "", "0,5", "1/2"]
CLI_DOSES += ["-inf", "-nan", "-1e-3"]  # read by argparse as options unless attached to --dose


@pytest.mark.parametrize("dose", CLI_DOSES)
def test_cli_bad_dose(dose, tiny_model, tmp_path, capsys):
    src = tmp_path / "x.npy"
    np.save(src, np.zeros((2, 16, 16), np.float32))
    out = tmp_path / "out.npy"
    try:
        code = main(["denoise", str(src), str(out), "--dose", dose, "--model", str(tiny_model), "--quiet"])
    except SystemExit as exc:  # argparse refuses what is not a number, with its usage line
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "dose" in err and "Traceback" not in err, err
    if dose.startswith("-"):  # attached to --dose, not read as an option: ctdn's own message
        assert err.startswith("ctdn: error: --dose is the fraction of a routine full dose"), err
    assert not out.exists()


# --- arrays and doses through the Denoiser ----------------------------------------------------
@pytest.fixture(scope="module")
def den() -> Denoiser:
    torch.manual_seed(0)
    return Denoiser(build("tiny").eval(), backend="torch", device="cpu")


def _img(n: int = 2, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 100, (n, size, size)).astype(np.float32)


def _with(value, index=(0, 3, 4)) -> np.ndarray:
    x = _img()
    x[index] = value
    return x


BAD_ARRAYS = {
    # non-finite values
    "nan_one": (_with(np.nan), InputError),
    "inf_one": (_with(np.inf), InputError),
    "neg_inf_one": (_with(-np.inf), InputError),
    "all_nan": (np.full((1, 8, 8), np.nan, np.float32), InputError),
    "nan_float64": (_with(np.nan).astype(np.float64), InputError),
    "beyond_float32": (np.full((1, 8, 8), 1e39), InputError),
    "nan_tensor": (torch.from_numpy(_with(np.nan)), InputError),
    # wrong dtypes
    "complex64": (_img().astype(np.complex64), InputTypeError),
    "complex128": (_img().astype(np.complex128), InputTypeError),
    "bool": (_img() > 0, InputTypeError),
    "object": (_img().astype(object), InputTypeError),
    "unicode": (_img().astype(str), InputTypeError),
    "bytes": (_img().astype(bytes), InputTypeError),
    "structured": (np.zeros((2, 8, 8), dtype=[("hu", "f4"), ("mask", "u1")]), InputTypeError),
    "void": (np.zeros((2, 8, 8), dtype="V4"), InputTypeError),
    "datetime64": (_img().astype("datetime64[s]"), InputTypeError),
    "complex_tensor": (torch.zeros(2, 8, 8, dtype=torch.complex64), InputTypeError),
    "bool_tensor": (torch.zeros(2, 8, 8, dtype=torch.bool), InputTypeError),
    "list": (_img().tolist(), InputTypeError),
    "none": (None, InputTypeError),
    "string": ("volume.npy", InputTypeError),
    "dict": ({"hu": _img()}, InputTypeError),
    "scalar_float": (3.0, InputTypeError),
    # wrong shapes
    "0d": (np.array(3.0, np.float32), InputError),
    "1d": (np.zeros(16, np.float32), InputError),
    "4d": (np.zeros((1, 2, 8, 8), np.float32), InputError),
    "5d": (np.zeros((1, 1, 1, 8, 8), np.float32), InputError),
    "empty_3d": (np.zeros((0, 8, 8), np.float32), InputError),
    "zero_rows": (np.zeros((1, 0, 8), np.float32), InputError),
    "zero_cols": (np.zeros((1, 8, 0), np.float32), InputError),
    "empty_2d": (np.zeros((0, 0), np.float32), InputError),
    "empty_1d": (np.zeros(0, np.float32), InputError),
    "4d_tensor": (torch.zeros(1, 1, 8, 8), InputError),
}


@pytest.mark.parametrize("name", list(BAD_ARRAYS))
def test_bad_arrays(den, name):
    vol, kind = BAD_ARRAYS[name]
    copy = vol.copy() if isinstance(vol, np.ndarray) else None
    with pytest.raises(kind) as info:
        den(vol, 0.5)
    assert isinstance(info.value, CTDNError)
    assert "volume" in str(info.value)
    if copy is not None and copy.dtype.kind not in "OV":
        np.testing.assert_array_equal(vol, copy)


GOOD_ARRAYS = {
    "float16": _img().astype(np.float16),
    "float64": _img().astype(np.float64),
    "longdouble": _img().astype(np.longdouble),
    "int16": _img().astype(np.int16),
    "uint16": (_img() + 1024).astype(np.uint16),
    "int32": _img().astype(np.int32),
    "int64": _img().astype(np.int64),
    "uint8": np.abs(_img()).astype(np.uint8),
    "big_endian": _img().astype(">f4"),
    "non_contiguous": np.ascontiguousarray(_img().transpose(1, 2, 0)).transpose(2, 0, 1),
    "read_only": np.broadcast_to(np.float32(40.0), (2, 16, 16)),
    "one_pixel": np.zeros((1, 1, 1), np.float32),
    "one_row": np.zeros((1, 1, 37), np.float32),
    "odd_size": np.zeros((1, 13, 7), np.float32),
    "2d": _img()[0],
    "int16_tensor": torch.zeros(2, 8, 8, dtype=torch.int16),
    "bfloat16_tensor": torch.zeros(2, 8, 8, dtype=torch.bfloat16),
    "grad_tensor": torch.zeros(2, 8, 8, dtype=torch.float64, requires_grad=True),
}


@pytest.mark.parametrize("name", list(GOOD_ARRAYS))
def test_good_arrays(den, name):
    vol = GOOD_ARRAYS[name]
    out = den(vol, 0.5)
    arr = out.detach().numpy() if isinstance(out, torch.Tensor) else out
    assert arr.dtype == np.float32 and arr.shape == tuple(vol.shape) and np.isfinite(arr).all()


@pytest.mark.parametrize(
    "low, high",
    [(-3024.0, 30000.0), (-3024.0, 3071.0), (-32768.0, 32767.0), (-2000.0, 64511.0)],
)
def test_extreme_hu_pass_through(den, low, high):
    """Values far outside the window come back as they were (the pass-through seam); finite."""
    x = np.zeros((1, 24, 24), np.float32)
    x[0, :, :12] = low
    x[0, :, 12:] = high
    x[0, 8:16, 8:16] = 40.0  # a soft-tissue patch in between
    for vol in (x, x.astype(np.int32), torch.from_numpy(x)):
        out = den(vol, 0.25)
        out = out.numpy() if isinstance(out, torch.Tensor) else out
        assert out.dtype == np.float32 and np.isfinite(out).all()
        far = np.zeros(x.shape, bool)
        far[0, :, :6] = far[0, :, 18:] = True  # at least 2 pixels from anything inside the window
        np.testing.assert_allclose(out[far], x[far], rtol=0, atol=1e-2 * max(1.0, abs(high) / 1000))


BAD_DOSES = {
    "zero": 0,
    "zero_float": 0.0,
    "negative": -0.1,
    "negative_int": -1,
    "above_one": 1.0000001,
    "two": 2,
    "percent": 25,
    "nan": float("nan"),
    "inf": float("inf"),
    "neg_inf": float("-inf"),
    "np_nan": np.float32("nan"),
    "text": "abc",
    "empty_text": "",
    "none": None,
    "empty_list": [],
    "too_many": [0.5, 0.5, 0.5],
    "four_for_two": [0.5, 0.5, 0.5, 0.5],
    "nested": [[0.5, 0.5]],
    "2d_array": np.full((2, 1), 0.5),
    "list_with_nan": [0.5, float("nan")],
    "list_with_zero": [0.5, 0.0],
    "list_with_text": ["0.5", "x"],
    "list_with_none": [0.5, None],
    "complex": 0.5 + 0j,
    "complex_imag": 0.5 + 1j,
    "false": False,
    "dict": {"dose": 0.5},
    "set": {0.5},
    "object": object(),
    "datetime": np.datetime64("2020"),
    "tensor_zero": torch.tensor(0.0),
    "tensor_wrong_length": torch.tensor([0.5, 0.5, 0.5]),
    "tensor_2d": torch.full((2, 1), 0.5),
    "tensor_with_zero": torch.tensor([0.0, 0.5]),
    "tensor_nan": torch.tensor(float("nan")),
}


@pytest.mark.parametrize("name", list(BAD_DOSES))
def test_bad_doses(den, name):
    with pytest.raises(DoseError) as info:
        den(_img(), BAD_DOSES[name])
    assert "dose" in str(info.value)


GOOD_DOSES = {
    "one": 1,
    "one_float": 1.0,
    "tiny": 1e-6,
    "per_slice": [0.1, 1.0],
    "per_slice_array": np.array([0.25, 0.5]),
    "one_in_a_list": [0.5],
    "float16": np.float16(0.5),
    "tensor": torch.tensor(0.5),
    "tensor_per_slice": torch.tensor([0.25, 0.5], dtype=torch.float64),
    "int_array": np.array(1),
}


@pytest.mark.parametrize("name", list(GOOD_DOSES))
def test_good_doses(den, name):
    out = den(_img(), GOOD_DOSES[name])
    assert out.shape == (2, 16, 16) and np.isfinite(out).all()


# --- Hypothesis ---------------------------------------------------------------------------------
FUZZ = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])

REAL_DTYPES = [np.float32, np.float64, np.float16, np.int16, np.uint16, np.int32, np.uint8]
OTHER_DTYPES = [np.complex64, np.bool_]


@st.composite
def volumes(draw):
    dtype = np.dtype(draw(st.sampled_from(REAL_DTYPES + OTHER_DTYPES)))
    ndim = draw(st.sampled_from([0, 1, 2, 2, 3, 3, 3, 4]))
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=ndim, max_size=ndim)))
    if dtype.kind == "f":
        elements = st.floats(
            allow_nan=True, allow_infinity=True, width=min(dtype.itemsize * 8, 64), allow_subnormal=False
        )
        special = st.sampled_from([-3024.0, 30000.0, -1000.0, 0.0, 3071.0, 1e6, np.nan, np.inf])
        elements = st.one_of(elements, special)
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=N_ARRAYS, **FUZZ)
@given(vol=volumes(), dose=st.floats(0.01, 1.0))
def test_hypothesis_arrays(den, vol, dose):
    """Any array: a finite float32 result of the same shape, or the matching CTDNError."""
    before = vol.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        as32 = vol.astype(np.float32) if vol.dtype.kind in "fiu" else None
    if vol.dtype.kind not in "fiu":
        expected = InputTypeError
    elif vol.ndim not in (2, 3) or vol.size == 0 or not np.isfinite(as32).all():
        expected = InputError
    else:
        expected = None
    try:
        out = den(vol, dose)
    except Exception as exc:  # noqa: BLE001
        assert isinstance(exc, CTDNError), f"{type(exc).__name__} escaped: {exc}"
        assert expected is not None and isinstance(exc, expected), (vol.dtype, vol.shape, exc)
    else:
        assert expected is None, (vol.dtype, vol.shape)
        assert out.shape == vol.shape and out.dtype == np.float32 and np.isfinite(out).all()
        # far above the window (3x3 neighbourhood all >= 1000 HU + 50) the input comes back
        x = as32.reshape((-1,) + vol.shape[-2:])
        o = out.reshape(x.shape)
        pad = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
        lo3 = np.min(
            [pad[:, i : i + x.shape[1], j : j + x.shape[2]] for i in range(3) for j in range(3)], axis=0
        )
        hi_mask = lo3 >= 1050
        np.testing.assert_allclose(o[hi_mask], x[hi_mask], rtol=1e-5, atol=1e-2)
    np.testing.assert_array_equal(vol, before)


def _parses_as_float(s) -> bool:
    try:
        float(s)
    except (TypeError, ValueError):
        return False
    return True


doses = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5),
    st.text(max_size=5).filter(lambda s: not _parses_as_float(s)),  # numeric strings: see robustness.md
    st.none(),
    st.lists(st.one_of(st.floats(-0.5, 1.5), st.just(float("nan"))), min_size=0, max_size=4),
    st.builds(lambda v: np.asarray(v), st.lists(st.floats(0.01, 1.0), min_size=1, max_size=3)),
    st.builds(lambda v: torch.tensor(v), st.lists(st.floats(-0.5, 1.5), min_size=1, max_size=3)),
    st.complex_numbers(max_magnitude=2),
)


@settings(max_examples=N_DOSES, **FUZZ)
@given(dose=doses)
def test_hypothesis_doses(den, dose):
    """Any dose: the result when it is one value or one per slice in (0, 1], else a DoseError."""
    n = 3
    try:
        d = np.asarray(dose.numpy() if isinstance(dose, torch.Tensor) else dose)
        valid = (
            d.dtype.kind in "fiu"
            and d.ndim <= 1
            and d.size in ((1, n) if d.ndim == 1 else (1,))
            and bool(np.all((d > 0) & (d <= 1)))
        )
    except (TypeError, ValueError):
        valid = False
    try:
        out = den(_img(n, 8), dose)
    except Exception as exc:  # noqa: BLE001
        assert isinstance(exc, DoseError), f"{type(exc).__name__} escaped for dose {dose!r}: {exc}"
        assert not valid, f"valid dose {dose!r} refused: {exc}"
    else:
        assert valid, f"dose {dose!r} accepted"
        assert out.shape == (n, 8, 8) and np.isfinite(out).all()


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, tuple[bytes, int, str]]:
    """Valid 16x16 12-bit unsigned slices: {encoding: (file bytes, pixel value offset, numpy dtype)}."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    out = {}
    stored = np.random.default_rng(3).integers(0, 4095, (1, 16, 16), endpoint=True)
    for name, ts, tag, header, dtype in (
        ("little", ExplicitVRLittleEndian, b"\xe0\x7f\x10\x00", 12, "<u2"),
        ("big", ExplicitVRBigEndian, b"\x7f\xe0\x00\x10", 12, ">u2"),
        ("implicit", ImplicitVRLittleEndian, b"\xe0\x7f\x10\x00", 8, "<u2"),
    ):
        folder = tmp_path_factory.mktemp(name)
        make_ct_series(folder, n=1, rows=16, cols=16, stored=stored, shuffle=False, transfer_syntax=ts)
        (path,) = folder.glob("*.dcm")
        data = path.read_bytes()
        px = data.rfind(tag) + header
        assert len(data) - px == 2 * 16 * 16
        assert np.array_equal(np.frombuffer(data[px:], dtype).reshape(stored.shape), stored)
        out[name] = (data, px, dtype)
    return out


mutations = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.sampled_from(["set", "insert", "delete"])),
    min_size=1,
    max_size=8,
)


@settings(max_examples=N_MUTATIONS, **FUZZ)
@given(
    encoding=st.sampled_from(["little", "big", "implicit"]),
    ops=mutations,
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    in_pixels=st.booleans(),
)
def test_hypothesis_byte_mutations(valid_files, encoding, ops, cut, in_pixels):
    """Random byte edits of a valid file (little endian, big endian or implicit VR): a CTDNError or a
    finite volume; edits of pixel bytes alone must read back exactly as the edited bytes say
    (12 bits stored: the high 4 bits masked)."""
    import tempfile

    data, px, dtype = valid_files[encoding]
    buf = bytearray(data)
    if in_pixels:
        for off, value, _ in ops:
            buf[px + off % (len(data) - px)] = value
    else:
        for off, value, op in ops:
            i = off % (len(buf) + 1)
            if op == "insert":
                buf[i:i] = bytes([value])
            elif op == "delete" and i < len(buf):
                del buf[i]
            elif i < len(buf):
                buf[i] = value
        if cut is not None:
            buf = buf[: cut % (len(buf) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slice.dcm"
        path.write_bytes(bytes(buf))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vol = read_dicom(path)
        except Exception as exc:  # noqa: BLE001
            assert isinstance(exc, CTDNError), f"{type(exc).__name__} escaped: {exc}"
            assert not in_pixels, f"edited pixel bytes refused: {exc}"
            assert str(path) in str(exc) or path.name in str(exc), exc
        else:
            assert vol.hu.dtype == np.float32 and vol.hu.ndim == 3 and np.isfinite(vol.hu).all()
            if in_pixels:
                stored = np.frombuffer(bytes(buf[px:]), dtype).reshape(1, 16, 16) & 0x0FFF
                np.testing.assert_array_equal(vol.hu, stored.astype(np.float32) - 1024)
        assert path.read_bytes() == bytes(buf), "the input file changed"


@st.composite
def geometries(draw):
    n = draw(st.integers(2, 5))
    start = draw(st.floats(-60, 60))
    step = draw(st.sampled_from([-2.5, 0.625, 1.25, 5.0]) | st.floats(0.3, 8.0))
    jitter = draw(st.lists(st.floats(-0.03, 0.03), min_size=n, max_size=n))
    positions = [start + k * step + j * abs(step) for k, j in enumerate(jitter)]
    flaw = draw(st.sampled_from(["none", "none", "duplicate", "gap", "random"]))
    if flaw == "duplicate":
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        positions[i] = positions[j]
    elif flaw == "gap" and n > 2:
        k = draw(st.integers(1, n - 1))
        positions = positions[:k] + [p + 3 * step for p in positions[k:]]
    elif flaw == "random":
        positions = draw(st.lists(st.floats(-60, 60), min_size=n, max_size=n))
    positions = [round(float(p), 3) for p in positions]
    angle = draw(st.sampled_from([0.0, 90.0, 180.0]) | st.floats(-60, 60))
    axis = draw(st.sampled_from(["x", "y"]))
    c, s_ = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    if axis == "x":  # tilt the column direction about x
        orientation = (1.0, 0.0, 0.0, 0.0, c, s_)
    else:  # rotate in plane about z
        orientation = (c, s_, 0.0, -s_, c, 0.0)
    return positions, tuple(round(float(v), 8) for v in orientation)


@settings(max_examples=N_GEOMETRY, **FUZZ)
@given(geometry=geometries(), seed=st.integers(0, 2**16))
def test_hypothesis_series_geometry(geometry, seed):
    """Random slice positions and orientations: slices in ascending position along the normal with
    the median step as spacing, or a DicomError for duplicate positions or a gap."""
    import tempfile

    from hypothesis import assume, event

    positions, orientation = geometry
    steps = np.diff(np.sort(positions))
    median = float(np.median(steps))
    # keep clear of the thresholds, where rounding of the written positions decides
    assume(all(abs(s - 1e-3) > 1e-4 for s in steps))
    assume(median < 1e-3 or all(abs(s - 1.5 * median) > 1e-3 for s in steps))
    if steps.min() < 1e-3:
        expected = "duplicate"
    elif steps.max() > 1.5 * median:
        expected = "missing slice"
    else:
        expected = None
    event(f"expected: {expected or 'a volume'}")
    with tempfile.TemporaryDirectory() as tmp:
        hu = make_ct_series(
            tmp, rows=4, cols=4, positions=positions, orientation=orientation, seed=seed, shuffle=True
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vol = read_dicom(tmp)
        except Exception as exc:  # noqa: BLE001
            assert isinstance(exc, DicomError), f"{type(exc).__name__} escaped: {exc}"
            assert expected is not None and expected in str(exc), (positions, exc)
            assert tmp in str(exc), exc
        else:
            assert expected is None, (positions, expected)
            np.testing.assert_array_equal(vol.hu, hu)
            assert vol.spacing[0] == pytest.approx(median, abs=1e-4)
