"""ctdn's C++ runtime (csrc/, ctdn._runtime) end to end on the CPU with the shipped model's AOTInductor
package: sidecar refusals, HU pre/post against the Python path, infer/denoise against torch, the aoti
backend and CLI, threads, the CMake build and its C++ example.

The extension and the package are built once per test session (about 15 s and 30 s on 2 cores) into
a folder both pytest-xdist workers share, under a file lock, so the second worker reuses them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import ctdn
from ctdn import backends, export, phantoms, runtime
from ctdn.cli import main
from ctdn.errors import DoseError, EngineError, InputError, InputTypeError
from ctdn.hu import hu_to_unit, unit_to_hu
from ctdn.inference import MARGIN, Denoiser, _saturate, blend, pad_for_network
from ctdn.models import load_model

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda)")


@contextlib.contextmanager
def _env(**values):
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            mp.setenv(k, str(v))
        yield


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> Path:
    """A folder all xdist workers of this session share (each worker's basetemp is below it)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    d = root / "ctdn-runtime"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="session")
def rt(shared):
    """ctdn._runtime, compiled for this session (CI checks that it builds, not a stale cache)."""
    with _env(CTDN_RUNTIME_DIR=shared / "build"):
        return runtime.load()


@pytest.fixture(scope="session")
def edge():
    return load_model("edge")


@pytest.fixture(scope="session")
def edge_pt2(shared, rt, edge) -> Path:
    """The edge package, compiled by the aoti backend on first use (its own file lock) into ``engines``."""
    from ctdn.backends import aoti

    with _env(CTDN_ENGINE_DIR=shared / "engines"):
        return aoti.Runner(edge, CPU).path


@pytest.fixture
def engines(monkeypatch, edge_pt2):
    """CTDN_ENGINE_DIR pointing at the session's compiled packages; the aoti backend registered."""
    monkeypatch.setenv("CTDN_ENGINE_DIR", str(edge_pt2.parent))
    monkeypatch.setitem(backends.BACKENDS, "aoti", "ctdn.backends.aoti")
    return edge_pt2.parent


@pytest.fixture(scope="session")
def edge_rt(rt, edge_pt2):
    return rt.Runtime(str(edge_pt2))


@pytest.fixture(scope="session")
def slice512() -> np.ndarray:
    """A 512 x 512 thorax phantom with noise, bone above the window and -3024 HU padding outside the FOV."""
    ph = phantoms.generate("thorax", seed=777, size=512)
    rng = np.random.default_rng(3)
    hu = ph.hu + rng.normal(0, 40, ph.hu.shape).astype(np.float32)
    hu[:, :12] = -3024.0
    return hu.astype(np.float32)


def _sidecar(path: Path) -> dict:
    return json.loads(Path(f"{path}.json").read_text())


def _copy(src: Path, dst: Path, sidecar: dict | None = None, text: str | None = None) -> Path:
    """``src`` as ``dst`` (a hard link when possible) with its sidecar, edited or replaced."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    side = Path(f"{dst}.json")
    if text is not None:
        side.write_text(text)
    elif sidecar is not None:
        side.write_text(json.dumps(sidecar))
    return dst


# --- the module and its sidecar checks ------------------------------------------------------------
def test_module_reports_its_build(rt):
    assert "aoti" in rt.build_features()
    assert rt.torch_version.split("+")[0] == torch.__version__.split("+")[0]
    assert runtime.unavailable() is None and "aoti" in runtime.features()


def test_a_module_built_from_other_sources_is_not_used(rt, monkeypatch):
    import sys

    from ctdn.runtime import build

    assert rt.sources_key == build.sources_key(build.csrc_dir())
    monkeypatch.setitem(sys.modules, "ctdn._runtime", rt)  # as if installed; restored after
    assert runtime._installed() is rt
    monkeypatch.setattr(build, "sources_key", lambda src: "0" * 16)
    assert runtime._installed() is None


def test_runtime_reads_the_sidecar(edge_rt, edge_pt2, edge):
    sc = edge_rt.sidecar
    assert sc == _sidecar(edge_pt2)
    assert sc["kind"] == "aoti" and sc["model"]["fingerprint"] == export.fingerprint(edge)
    assert edge_rt.multiple == edge.config.multiple and edge_rt.hu_window == tuple(edge.config.hu_window)
    assert "aoti edge on cpu" in repr(edge_rt)


def _edit(sc: dict, dotted: str, value) -> dict:
    sc = json.loads(json.dumps(sc))
    *parents, last = dotted.split(".")
    d = sc
    for p in parents:
        d = d[p]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value
    return sc


_DELETE = object()

# (case, edit of the sidecar, file name, words the EngineError must contain)
REFUSALS = [
    ("format", ("format", "ctdn-engine/0"), "m.pt2", ["format is 'ctdn-engine/0'", "reads 'ctdn-engine/1'"]),
    ("missing field", ("multiple", _DELETE), "m.pt2", ["lacks multiple", "corrupt"]),
    ("wrong type", ("multiple", "8"), "m.pt2", ["field 'multiple' must be an integer"]),
    ("bad shapes", ("shapes.height", [16, 8, 4]), "m.pt2", ["field 'shapes.height'", "min <= opt <= max"]),
    (
        "wrong kind",
        ("kind", "tensorrt"),
        "m.pt2",
        ["kind is 'tensorrt' in its sidecar", "opens 'aoti' files"],
    ),
    ("unknown kind", ("kind", "onnx"), "m.bin", ["kind is 'onnx' in its sidecar"]),
    ("size", ("bytes", 1234), "m.pt2", ["bytes is 1234 in its sidecar but", "corrupt or was replaced"]),
    ("torch", ("versions.torch", "2.0.0"), "m.pt2", ["versions.torch is '2.0.0' in its sidecar but '"]),
    ("no torch", ("versions.torch", _DELETE), "m.pt2", ["versions.torch is None in its sidecar"]),
]


@pytest.mark.parametrize("case,edit,name,words", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_sidecar_mismatches_are_refused_with_the_field_and_the_rebuild_command(
    rt, edge_pt2, tmp_path, case, edit, name, words
):
    sc = _edit(_sidecar(edge_pt2), *edit)
    path = _copy(edge_pt2, tmp_path / name, sc)
    with pytest.raises(EngineError) as exc:
        rt.Runtime(str(path))
    msg = str(exc.value)
    for w in words:
        assert w in msg, msg
    assert "rebuild it on this machine: " + sc.get("rebuild", "") in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of a CUDA package without a GPU")
def test_a_cuda_package_is_refused_without_a_gpu(rt, edge_pt2, tmp_path):
    sc = _edit(
        _sidecar(edge_pt2), "device", {"type": "cuda", "name": "NVIDIA H100", "compute_capability": "9.0"}
    )
    path = _copy(edge_pt2, tmp_path / "m.pt2", sc)
    with pytest.raises(EngineError, match=r"device\.type is 'cuda' in its sidecar but 'cpu' here"):
        rt.Runtime(str(path))


@pytest.mark.parametrize(
    "case,text,words",
    [
        ("corrupt", '{"format": "ctdn-engine/1", "kind": ', ["is not a readable JSON sidecar", "line 1"]),
        ("not an object", "[1, 2]", ["is not a ctdn sidecar"]),
        ("bad escape", '{"format": "ctdn-\\q"}', ["is not a readable JSON sidecar", "bad escape"]),
    ],
)
def test_unreadable_sidecars_are_refused(rt, edge_pt2, tmp_path, case, text, words):
    path = _copy(edge_pt2, tmp_path / "m.pt2", text=text)
    with pytest.raises(EngineError) as exc:
        rt.Runtime(str(path))
    for w in words:
        assert w in str(exc.value)


def test_missing_files_are_refused(rt, edge_pt2, tmp_path):
    with pytest.raises(EngineError, match="m.pt2.json not found: every ctdn engine/package has a sidecar"):
        rt.Runtime(str(_copy(edge_pt2, tmp_path / "m.pt2")))
    (tmp_path / "gone.pt2.json").write_text(json.dumps(_sidecar(edge_pt2)))
    with pytest.raises(EngineError, match=r"gone.pt2 not found \(its sidecar is there\); rebuild it"):
        rt.Runtime(str(tmp_path / "gone.pt2"))


def test_a_corrupt_package_is_refused(rt, edge_pt2, tmp_path):
    path = tmp_path / "m.pt2"
    path.write_bytes(b"not a zip file" * 100)
    sc = _edit(_sidecar(edge_pt2), "bytes", path.stat().st_size)
    Path(f"{path}.json").write_text(json.dumps(sc))
    with pytest.raises(EngineError, match="libtorch cannot load this AOTInductor package"):
        rt.Runtime(str(path))


@pytest.mark.parametrize("field,value", [("bytes", 1234), ("versions.torch", "2.0.0")])
def test_cpp_and_python_refuse_with_the_same_words(rt, edge_pt2, tmp_path, field, value):
    from ctdn.deploy.sidecar import check_sidecar

    path = _copy(edge_pt2, tmp_path / "m.pt2", _edit(_sidecar(edge_pt2), field, value))
    with pytest.raises(EngineError) as cpp:
        rt.Runtime(str(path))
    with pytest.raises(EngineError) as py:
        check_sidecar(path, kind="aoti", device="cpu")
    assert str(cpp.value) == str(py.value)


def test_check_false_warns_and_loads(rt, edge_pt2, tmp_path, capfd):
    path = _copy(edge_pt2, tmp_path / "m.pt2", _edit(_sidecar(edge_pt2), "versions.torch", "2.0.0"))
    r = rt.Runtime(str(path), check=False)
    assert "versions.torch is '2.0.0'" in capfd.readouterr().err
    x = np.zeros((1, 1, 16, 16), np.float32)
    assert r.infer(x, 0.5).shape == x.shape


# --- HU pre/post: the C++ CPU path against ctdn.inference ----------------------------------------
SHAPES = [(1, 1, 1), (2, 7, 5), (1, 513, 300), (3, 9, 17), (1, 1, 9), (2, 16, 3)]


def _awkward(shape, seed=0) -> np.ndarray:
    hu = np.random.default_rng(seed).normal(0, 1500, shape).astype(np.float32)
    hu.flat[0], hu.flat[-1] = -3000.0, 3000.0
    return hu


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
@pytest.mark.parametrize("m", [1, 8, 16])
@pytest.mark.parametrize("margin", [MARGIN, 0])
def test_hu_pre_post_match_the_python_path_exactly(rt, shape, dtype, m, margin):
    hu = _awkward(shape).astype(dtype)
    x = hu.astype(np.float32)
    lo, hi = -1000.0, 1000.0
    ref = pad_for_network(hu_to_unit(x, lo, hi).astype(np.float32)[:, None], m, margin)
    np.testing.assert_array_equal(rt.hu_pre(hu, lo, hi, m, margin=margin), ref)

    y = np.random.default_rng(1).random(ref.shape, dtype=np.float32) * 2 - 1
    h, w = shape[1:]
    # ctdn.Denoiser's own lines: crop, to HU, blend; integers saturated, what passes through copied.
    out, exact = blend(unit_to_hu(y[:, 0, margin : margin + h, margin : margin + w], lo, hi), x, (lo, hi))
    if dtype == np.int16:
        out = _saturate(out, hu.dtype)
        out[exact] = hu[exact]
    got = rt.hu_post(y, hu, lo, hi, margin=margin)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, out)


def test_hu_post_saturates_int16(rt):
    hu = np.zeros((1, 1, 2), np.int16)
    y = np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2)  # +-40000 HU in this window
    np.testing.assert_array_equal(rt.hu_post(y, hu, -40000.0, 40000.0), [[[32767, -32768]]])


# --- the network and HU paths against torch ------------------------------------------------------
def test_infer_matches_the_torch_model(edge_rt, edge):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 64, 48, generator=g) * 2 - 1
    d = torch.tensor([0.1, 0.5, 1.0])
    with torch.inference_mode():
        ref = edge(x, d).numpy()
    y = edge_rt.infer(x.numpy(), d.numpy())
    assert y.dtype == np.float32 and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-4)


def test_batches_larger_than_max_batch_are_split(rt, edge_rt, edge_pt2):
    small = rt.Runtime(str(edge_pt2), max_batch=2)
    x = np.random.default_rng(0).random((5, 1, 16, 32), dtype=np.float32) * 2 - 1
    d = np.linspace(0.1, 1.0, 5, dtype=np.float32)
    np.testing.assert_allclose(small.infer(x, d), edge_rt.infer(x, d), atol=1e-5)
    with pytest.raises(EngineError, match="max_batch 99 is outside"):
        rt.Runtime(str(edge_pt2), max_batch=99)


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_denoise_matches_the_torch_backend_on_a_phantom(edge_rt, slice512, dtype):
    hu = slice512.astype(dtype)
    ref = ctdn.denoise(hu, 0.25, backend="torch", device="cpu")  # float32 HU
    out = edge_rt.denoise(hu, 0.25)
    assert out.dtype == dtype and out.shape == hu.shape
    rounding = 0.5 if dtype == np.int16 else 0.0  # int16 out is rounded to whole HU
    assert np.abs(out.astype(np.float64) - ref).max() <= 0.5 + rounding
    np.testing.assert_array_equal(out[:, :12], hu[:, :12])  # padding outside the FOV passes through


def test_denoise_any_size_and_per_slice_doses(edge_rt, edge):
    hu = _awkward((3, 21, 37), seed=4).clip(-1100, 1500)
    d = np.array([0.1, 0.25, 0.7], np.float32)
    ref = Denoiser(edge, backend="torch", device="cpu")(hu, d)
    np.testing.assert_allclose(edge_rt.denoise(hu, d), ref, atol=0.5)
    np.testing.assert_allclose(edge_rt.denoise(hu[0], 0.1), ref[0], atol=0.5)  # (H, W) -> (H, W)


def test_denoise_passes_flat_padding_through_bit_exactly(edge_rt, slice512):
    hu = slice512.copy()
    yy, xx = np.mgrid[:512, :512]
    hu[(yy - 256) ** 2 + (xx - 256) ** 2 > 250**2] = -1024  # outside a round field of view
    hu[-6:] = -2000
    for dtype in (np.float32, np.int16):
        x = hu.astype(dtype)
        ref = ctdn.denoise(x, 0.3, backend="torch", device="cpu")
        out = edge_rt.denoise(x, 0.3)
        exact = blend(ref[None], x.astype(np.float32)[None], (-1000.0, 1000.0))[1][0]
        assert exact.sum() > 60000
        np.testing.assert_array_equal(out[exact], x[exact])
        assert np.abs(out.astype(np.float64) - ref).max() <= 1.0


def test_an_engine_whose_profile_cannot_take_the_margin_gets_bottom_right_padding(
    rt, edge_rt, edge_pt2, edge, slice512, tmp_path
):
    sc = _sidecar(edge_pt2)
    sc["shapes"]["height"] = sc["shapes"]["width"] = [16, 528, 528]  # 512 + 2 * 16 does not fit
    small = rt.Runtime(str(_copy(edge_pt2, tmp_path / "m.pt2", sc)))
    den = Denoiser(edge, backend="torch", device="cpu")
    den._limit = (528, 528)  # what the Python side reads from such an engine's sidecar
    out = small.denoise(slice512, 0.25)
    assert np.abs(out - den(slice512, 0.25)).max() <= 0.5
    assert np.abs(out - edge_rt.denoise(slice512, 0.25)).max() > 1.0  # the border is not the margin's


def test_inputs_are_never_modified(edge_rt):
    x = np.random.default_rng(0).random((2, 1, 16, 16), dtype=np.float32) * 2 - 1
    d = np.array([0.2, 0.9], np.float32)
    hu = _awkward((2, 13, 11)).astype(np.int16)
    keep = [a.copy() for a in (x, d, hu)]
    for a in (x, d, hu):
        a.flags.writeable = False  # read-only arrays are accepted
    edge_rt.infer(x, d)
    edge_rt.denoise(hu, d)
    edge_rt.denoise(hu.astype(np.float32), d)
    for a, b in zip((x, d, hu), keep, strict=True):
        np.testing.assert_array_equal(a, b)


def test_several_threads_share_one_runtime(edge_rt):
    rng = np.random.default_rng(0)
    jobs = [
        (rng.normal(0, 300, (2, 40, 24)).astype(np.float32), np.float32(0.1 + 0.15 * i)) for i in range(6)
    ]
    serial = [edge_rt.denoise(hu, d) for hu, d in jobs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(2):
                results[i] = edge_rt.denoise(*jobs[i])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, ref in enumerate(serial):
        np.testing.assert_allclose(results[i], ref, atol=1e-3)


def test_bad_inputs_are_named(edge_rt):
    x = np.zeros((1, 1, 16, 16), np.float32)
    with pytest.raises(InputTypeError, match="x must be a float32 array"):
        edge_rt.infer(x.astype(np.float64), 0.5)
    with pytest.raises(InputError, match=r"x must have shape \(N, 1, H, W\), got \(1, 16, 16\)"):
        edge_rt.infer(x[0], 0.5)
    with pytest.raises(InputError, match="C-contiguous"):
        edge_rt.infer(np.zeros((1, 1, 16, 32), np.float32)[..., ::2], 0.5)
    with pytest.raises(DoseError, match=r"in \(0, 1\]"):
        edge_rt.infer(x, 1.5)
    with pytest.raises(DoseError, match="one per slice"):
        edge_rt.infer(x, [0.5, 0.5])
    with pytest.raises(EngineError, match="multiples of 16"):
        edge_rt.infer(np.zeros((1, 1, 12, 16), np.float32), 0.5)
    with pytest.raises(InputTypeError, match="int16 or float32"):
        edge_rt.denoise(np.zeros((1, 8, 8), np.int32), 0.5)
    hu = np.zeros((1, 8, 8), np.float32)
    hu[0, 3, 5] = np.nan
    with pytest.raises(EngineError, match="NaN/inf value at slice 0, row 3, column 5"):
        edge_rt.denoise(hu, 0.5)
    with pytest.raises(EngineError, match="padded height 1040 is outside the range"):
        edge_rt.denoise(np.zeros((1, 1030, 8), np.int16), 0.5)


# --- the aoti backend and the CLI ----------------------------------------------------------------
def test_aoti_backend_matches_torch(engines, slice512):
    den = Denoiser("edge", backend="aoti", device="cpu")
    assert den.backend == "aoti" and den._runner.path.parent == engines
    ref = Denoiser("edge", backend="torch", device="cpu")(slice512, 0.1)
    assert np.abs(den(slice512, 0.1) - ref).max() <= 0.5
    with pytest.raises(InputError, match="fp32 only"):
        Denoiser("edge", backend="aoti", device="cpu", precision="bf16")


def test_aoti_backend_is_never_auto_on_the_cpu(engines):
    from ctdn.backends import aoti, pytorch

    assert aoti.unavailable(CPU) is None
    assert aoti.PRIORITY["cpu"] < pytorch.PRIORITY["cpu"]


def test_cli_denoise_with_the_aoti_backend(engines, tmp_path, slice512, capsys):
    src, out_aoti, out_torch = tmp_path / "in.npy", tmp_path / "aoti.npy", tmp_path / "torch.npy"
    np.save(src, slice512[None, :64, :96])
    assert main(["denoise", str(src), str(out_aoti), "--backend", "aoti", "--dose", "0.25", "--quiet"]) == 0
    assert "backend aoti on cpu" in capsys.readouterr().out
    assert main(["denoise", str(src), str(out_torch), "--backend", "torch", "--dose", "0.25", "--quiet"]) == 0
    assert np.abs(np.load(out_aoti) - np.load(out_torch)).max() <= 0.5


def test_another_models_package_under_this_models_name_is_refused(
    engines, edge, edge_pt2, monkeypatch, tmp_path
):
    import copy

    from ctdn.backends import aoti
    from ctdn.errors import EngineError

    other = copy.deepcopy(edge)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)  # same config, other weights: another fingerprint
    monkeypatch.setenv("CTDN_ENGINE_DIR", str(tmp_path))
    path = export.engine_path("edge", export.fingerprint(other), "aoti", "cpu", "fp32")
    shutil.copyfile(edge_pt2, path)  # edge's package (and sidecar) copied under the other's name
    shutil.copyfile(f"{edge_pt2}.json", f"{path}.json")
    with pytest.raises(EngineError, match="built from another model.*same config, other weights"):
        aoti.Runner(other, CPU)


def test_a_stale_package_is_compiled_again(engines, edge, edge_pt2, monkeypatch, tmp_path):
    from ctdn.backends import aoti

    monkeypatch.setenv("CTDN_ENGINE_DIR", str(tmp_path))
    path = export.engine_path("edge", export.fingerprint(edge), "aoti", "cpu", "fp32")
    shutil.copyfile(edge_pt2, path)  # as if compiled by another torch
    Path(f"{path}.json").write_text(json.dumps(_edit(_sidecar(edge_pt2), "versions.torch", "2.0.0")))
    compiled = []

    def to_aoti(model, p, device):  # stands in for the 30 s compile
        compiled.append(p)
        shutil.copyfile(edge_pt2, p)
        Path(f"{p}.json").write_text(json.dumps(_sidecar(edge_pt2)))

    monkeypatch.setattr(export, "to_aoti", to_aoti)
    runner = aoti.Runner(edge, CPU)
    assert compiled == [path] and runner.runtime.sidecar["versions"]["torch"] != "2.0.0"


# --- without Python: the CMake build and its example ---------------------------------------------
@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_build_and_the_raw_example_match_the_python_module(
    shared, edge_pt2, edge_rt, slice512, tmp_path
):
    from ctdn.runtime import file_lock

    build = shared / "cmake"
    with file_lock(shared / ".cmake.lock"):
        if not (build / "denoise_raw").is_file():
            gen = ["-G", "Ninja"] if shutil.which("ninja") else []
            prefix = torch.utils.cmake_prefix_path
            for cmd in (
                # One CUDA architecture (when nvcc is here): the CUDA code paths compile, quickly.
                [
                    "cmake",
                    "-S",
                    str(ROOT / "csrc"),
                    "-B",
                    str(build),
                    *gen,
                    f"-DCMAKE_PREFIX_PATH={prefix}",
                    "-DCMAKE_CUDA_ARCHITECTURES=90",
                ],
                ["cmake", "--build", str(build), "-j", "2"],
            ):
                r = subprocess.run(cmd, capture_output=True, text=True)
                assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    hu = slice512[100:164, 50:130].astype(np.int16)[None].repeat(2, axis=0)
    hu[1] = hu[1][::-1]
    src, dst = tmp_path / "in.raw", tmp_path / "out.raw"
    hu.tofile(src)
    r = subprocess.run(
        [str(build / "denoise_raw"), str(edge_pt2), str(src), str(dst), "64", "80", "0.25"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "2 slice(s) of 64x80" in r.stderr
    out = np.fromfile(dst, np.int16).reshape(hu.shape)
    np.testing.assert_array_equal(out, edge_rt.denoise(hu, 0.25))
    r = subprocess.run(
        [str(build / "denoise_raw"), str(edge_pt2), str(src), str(dst), "63", "80"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "not a whole number of 63x80 int16 slices" in r.stderr


# --- CUDA (run on a GPU machine) -----------------------------------------------------------------
@gpu
@needs_cuda
def test_cuda_package_denoise_matches_torch_on_the_gpu(shared, rt, edge, slice512):
    assert "cuda" in rt.build_features(), "the runtime was built without CUDA (nvcc missing?)"
    dev = torch.device("cuda")
    with _env(CTDN_ENGINE_DIR=shared / "engines"):
        from ctdn.backends import aoti

        path = aoti.Runner(edge, dev).path
    r = rt.Runtime(str(path), device=0)
    assert r.sidecar["device"]["type"] == "cuda"
    ref = Denoiser(edge, backend="torch", device="cuda")(slice512, 0.25)
    for dtype in (np.float32, np.int16):
        out = r.denoise(slice512.astype(dtype), 0.25)
        assert out.dtype == dtype and np.abs(out.astype(np.float64) - ref).max() <= 0.75
    x = np.random.default_rng(0).random((3, 1, 64, 48), dtype=np.float32) * 2 - 1
    d = np.array([0.1, 0.5, 1.0], np.float32)
    with torch.inference_mode():
        net = copy.deepcopy(edge).to(dev)
        want = net(torch.from_numpy(x).to(dev), torch.from_numpy(d).to(dev)).cpu().numpy()
    np.testing.assert_allclose(r.infer(x, d), want, atol=1e-3)
