"""``ctdn denoise``: DICOM, .npy and NIfTI in and out; inputs untouched, outputs kept, clear errors.

A tiny random-init model saved to tmp_path stands in for the shipped weights, so these tests check the
plumbing (formats, headers, refusals), not the denoising quality.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import disc_volume, make_ct_series

from ctdn.cli import main
from ctdn.io import read_dicom
from ctdn.models import build, save_model

N, SIZE = 3, 64


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _body(n: int = N, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return disc_volume(n, size, seed)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_model(build("tiny"), path, {"name": "tiny"})


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_dicom_in_dicom_out_is_a_derived_series(tmp_path, model, capsys):
    series = tmp_path / "series"
    stored = np.clip(np.rint(_body() + 1024), 0, 4095).astype(np.int64)  # 12-bit unsigned, intercept -1024
    make_ct_series(series, n=N, rows=SIZE, cols=SIZE, stored=stored, shuffle=True)
    before = _hashes(series)
    out = tmp_path / "denoised"
    code, stdout, err = _run(capsys, "denoise", series, out, "--dose", "0.25", "--model", model, "--quiet")
    assert code == 0, err
    assert f"ctdn: denoised {N} slices in" in stdout and "slices/s" in stdout
    assert "backend torch on cpu, model tiny" in stdout and str(out) in stdout
    assert _hashes(series) == before  # input untouched, nothing written into it

    src, den = read_dicom(series), read_dicom(out)
    assert len(list(out.glob("*.dcm"))) == N
    assert den.hu.shape == src.hu.shape == (N, SIZE, SIZE)
    assert np.isfinite(den.hu).all()
    assert np.abs(den.hu - src.hu).max() > 1.0  # the pixels really changed
    assert den.series_uid != src.series_uid
    assert len({h.SeriesInstanceUID for h in den.headers}) == 1
    assert not {h.SOPInstanceUID for h in den.headers} & {h.SOPInstanceUID for h in src.headers}
    # Written in the input's slice order: IM00000.dcm is the first position along the normal.
    written = [read_dicom(p).headers[0] for p in sorted(out.glob("IM*.dcm"))]
    positions = [[float(v) for v in h.ImagePositionPatient] for h in written]
    assert positions == [[float(v) for v in h.ImagePositionPatient] for h in src.headers]
    for h in den.headers:
        assert "DERIVED" in list(h.ImageType)
        assert "ctdn denoised (dose 0.25, model tiny)" in str(h.SeriesDescription)
        assert "0.25" in str(h.DerivationDescription) and "tiny" in str(h.DerivationDescription)
        assert h.StudyInstanceUID == src.headers[0].StudyInstanceUID
        assert h.PatientID == src.headers[0].PatientID


def test_dicom_in_npy_and_nifti_out(tmp_path, model, capsys):
    nib = pytest.importorskip("nibabel", reason="NIfTI output needs nibabel")
    series = tmp_path / "series"
    stored = np.clip(np.rint(_body() + 1024), 0, 4095).astype(np.int64)
    make_ct_series(series, n=N, rows=SIZE, cols=SIZE, stored=stored, pixel_spacing=(0.75, 0.8), spacing=2.5)
    npy, nii = tmp_path / "out.npy", tmp_path / "out.nii.gz"
    assert _run(capsys, "denoise", series, npy, "--dose", "0.5", "--model", model, "--quiet")[0] == 0
    assert _run(capsys, "denoise", series, nii, "--dose", "0.5", "--model", model, "--quiet")[0] == 0
    a = np.load(npy)
    assert a.shape == (N, SIZE, SIZE) and a.dtype == np.float32
    img = nib.load(nii)
    assert img.shape == (SIZE, SIZE, N)
    np.testing.assert_allclose(img.get_fdata().T, a, atol=1e-3)
    np.testing.assert_allclose(np.abs(np.diag(img.affine))[:3], [0.8, 0.75, 2.5], atol=1e-5)  # x=col, y=row


def test_npy_in_npy_out(tmp_path, model, capsys):
    src = tmp_path / "in.npy"
    np.save(src, _body().astype(np.int16))  # integer HU in, float32 HU out
    before = _hashes(tmp_path)
    dst = tmp_path / "out.npy"
    code, stdout, err = _run(
        capsys, "denoise", src, dst, "--dose", "0.1", "--model", model, "--batch-size", "2"
    )
    assert code == 0, err
    out = np.load(dst)
    assert out.shape == (N, SIZE, SIZE) and out.dtype == np.float32
    assert np.isfinite(out).all() and not np.array_equal(out, np.load(src))
    assert "denoising" in err  # the progress bar, on stderr
    assert f"denoised {N} slices" in stdout
    after = _hashes(tmp_path)
    assert {k: after[k] for k in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "out.npy"]  # no temporary files left


def test_npy_2d_and_quiet(tmp_path, model, capsys):
    src = tmp_path / "slice.npy"
    np.save(src, _body(n=1)[0])
    dst = tmp_path / "out.npy"
    code, stdout, err = _run(capsys, "denoise", src, dst, "--dose", "1", "--model", model, "--quiet")
    assert code == 0, err
    assert np.load(dst).shape == (SIZE, SIZE)
    assert "denoising" not in err and "denoised 1 slice in" in stdout


def test_nifti_round_trip_keeps_affine_and_header(tmp_path, model, capsys):
    nib = pytest.importorskip("nibabel", reason="NIfTI input and output need nibabel")
    hu = _body()  # (N, H, W)
    xyz = np.ascontiguousarray(hu.transpose(2, 1, 0)).astype(np.int16)  # (X, Y, Z)
    affine = np.array([[-0.8, 0, 0, 100.0], [0, -0.75, 0, 90.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(xyz, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    src = tmp_path / "ct.nii.gz"
    nib.save(img, src)
    before = _hashes(tmp_path)
    for dst in (tmp_path / "den.nii.gz", tmp_path / "den.nii", tmp_path / "den.npy"):
        code, _, err = _run(capsys, "denoise", src, dst, "--dose", "0.25", "--model", model, "--quiet")
        assert code == 0, err
    after = _hashes(tmp_path)
    assert {k: after[k] for k in before} == before
    gz, plain = nib.load(tmp_path / "den.nii.gz"), nib.load(tmp_path / "den.nii")
    npy = np.load(tmp_path / "den.npy")
    for out in (gz, plain):
        assert out.shape == xyz.shape
        assert out.get_data_dtype() == np.float32
        np.testing.assert_allclose(out.affine, affine)
        assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
        data = out.get_fdata()
        assert np.isfinite(data).all() and np.abs(data - xyz).max() > 1.0
        # (X, Y, Z) -> (N, H, W) slices and back: the same as denoising the transposed array.
        np.testing.assert_allclose(data.transpose(2, 1, 0), npy, atol=1e-3)
    # 2-D NIfTI: a single slice.
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(xyz[:, :, 0].astype(np.float32), affine), flat)
    assert (
        _run(capsys, "denoise", flat, tmp_path / "flat_out.nii", "--dose", "0.25", "--model", model)[0] == 0
    )
    assert nib.load(tmp_path / "flat_out.nii").shape == (SIZE, SIZE)


def test_refuses_to_overwrite_without_flag(tmp_path, model, capsys):
    src = tmp_path / "in.npy"
    np.save(src, _body(seed=1))
    dst = tmp_path / "out.npy"
    np.save(dst, np.zeros((2, 3), np.float32))  # an earlier float32 result
    stamp = dst.read_bytes()
    code, _, err = _run(capsys, "denoise", src, dst, "--dose", "0.25", "--model", model, "--quiet")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert dst.read_bytes() == stamp
    code, _, err = _run(
        capsys, "denoise", src, dst, "--dose", "0.25", "--model", model, "--quiet", "--overwrite"
    )
    assert code == 0, err
    assert np.load(dst).shape == (N, SIZE, SIZE)
    # --overwrite never replaces a file that is not such an output
    other = tmp_path / "notes.npy"
    other.write_bytes(b"my notes")
    code, _, err = _run(
        capsys, "denoise", src, other, "--dose", "0.25", "--model", model, "--quiet", "--overwrite"
    )
    assert code == 2 and "refusing to replace" in err and "not a .npy array" in err
    assert other.read_bytes() == b"my notes"


def test_dicom_output_folder_refused_then_overwritten(tmp_path, model, capsys):
    series = tmp_path / "series"
    stored = np.clip(np.rint(_body(n=2) + 1024), 0, 4095).astype(np.int64)
    make_ct_series(series, n=2, rows=SIZE, cols=SIZE, stored=stored)
    out = tmp_path / "den"
    argv = ["denoise", series, out, "--dose", "0.5", "--model", model, "--quiet"]
    assert _run(capsys, *argv)[0] == 0
    first = _hashes(out)
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "already exists" in err
    assert _hashes(out) == first
    assert _run(capsys, *argv, "--overwrite")[0] == 0
    assert read_dicom(out).hu.shape == (2, SIZE, SIZE)
    # Never into the input: the output may not be the series folder or inside it.
    before = _hashes(series)
    code, _, err = _run(
        capsys, "denoise", series, series / "den", "--dose", "0.5", "--model", model, "--overwrite"
    )
    assert code == 2 and "input" in err
    assert _hashes(series) == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{src}", "{dst}", "--dose", "0"], "(0, 1]"),
        (["{src}", "{dst}", "--dose", "1.5"], "(0, 1]"),
        (["{src}", "{dst}", "--dose", "nan"], "(0, 1]"),
        (["{missing}", "{dst}", "--dose", "0.5"], "does not exist"),
        (["{nan}", "{dst}", "--dose", "0.5"], "NaN"),
        (["{four_d}", "{dst}", "--dose", "0.5"], "shape (1, 2, 32, 32)"),
        (["{src}", "{dicom_out}", "--dose", "0.5"], "DICOM output needs a DICOM input"),
        (["{src}", "{src}", "--dose", "0.5", "--overwrite"], "into the input"),
        (["{txt}", "{dicom_out}", "--dose", "0.5"], "DICOM"),
        (["{bad_nii}", "{dst}", "--dose", "0.5"], "NIfTI"),
        (
            ["{src}", "{dst}", "--dose", "0.5", "--model", "no-such-model"],
            "no shipped model named 'no-such-model'",
        ),
        (["{src}", "{dst}", "--dose", "0.5", "--model", "{missing_model}"], "model file not found"),
        (["{src}", "{dst}", "--dose", "0.5", "--backend", "warp"], "unknown backend 'warp'"),
        (["{src}", "{dst}", "--dose", "0.5", "--batch-size", "0"], "batch_size"),
    ],
)
def test_errors_are_one_line_and_exit_2(tmp_path, model, capsys, argv, message):
    src = tmp_path / "in.npy"
    np.save(src, _body(n=1, size=32)[0])
    nan = tmp_path / "nan.npy"
    bad = _body(n=2, size=32)
    bad[1, 3, 4] = np.nan
    np.save(nan, bad)
    four_d = tmp_path / "four.npy"
    np.save(four_d, _body(n=2, size=32)[None])
    txt = tmp_path / "notes"
    txt.mkdir()
    (txt / "readme.txt").write_text("not a scan")
    bad_nii = tmp_path / "broken.nii.gz"
    bad_nii.write_bytes(b"\x1f\x8b not really gzip")
    names = dict(
        src=src,
        dst=tmp_path / "out.npy",
        dicom_out=tmp_path / "series_out",
        missing=tmp_path / "nope.npy",
        nan=nan,
        four_d=four_d,
        txt=txt,
        bad_nii=bad_nii,
        missing_model=tmp_path / "gone.safetensors",
    )
    before = _hashes(tmp_path)
    args = ["denoise", *(a.format(**names) for a in argv)]
    if "--model" not in args:
        args += ["--model", str(model)]
    code = main(args + ["--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ctdn: error:") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _hashes(tmp_path) == before  # nothing written, nothing changed


def test_corrupt_dicom_is_an_error(tmp_path, model, capsys):
    series = tmp_path / "series"
    make_ct_series(series, n=2, rows=32, cols=32, shuffle=False)
    victim = sorted(series.glob("*.dcm"))[1]
    victim.write_bytes(victim.read_bytes()[:-500])  # truncated pixel data
    before = _hashes(tmp_path)
    code, _, err = _run(
        capsys, "denoise", series, tmp_path / "out", "--dose", "0.5", "--model", model, "--quiet"
    )
    assert code == 2 and err.startswith("ctdn: error:") and victim.name in err, err
    assert err.count("\n") == 1
    assert _hashes(tmp_path) == before and not (tmp_path / "out").exists()


def test_missing_nibabel_is_named(tmp_path, model, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_nibabel(name, *args, **kwargs):
        if name == "nibabel" or name.startswith("nibabel."):
            raise ImportError("No module named 'nibabel'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nibabel)
    src = tmp_path / "in.npy"
    np.save(src, _body(n=1, size=32)[0])
    code, _, err = _run(
        capsys, "denoise", src, tmp_path / "out.nii", "--dose", "0.5", "--model", model, "--quiet"
    )
    assert code == 2 and "pip install nibabel" in err
    assert not (tmp_path / "out.nii").exists()


def test_info_lists_default_model_and_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "default model: edge" in out
    assert "backends on cpu:" in out and "torch" in out


def test_info_reads_the_shipped_model_card(tmp_path, monkeypatch, capsys):
    import ctdn.models.checkpoint as checkpoint

    save_model(build("tiny"), tmp_path / "edge.safetensors", {"name": "edge", "doses_seen": [0.1, 0.25]})
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "not shipped yet" not in out
    assert "default model: edge" in out and "widths 8/16" in out and "doses 0.1, 0.25" in out
