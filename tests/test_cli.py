"""The ``ctdn`` command line: outputs written, inputs untouched, errors clear."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import make_ct_series

from ctdn.cli import main
from ctdn.io import read_dicom

FAST = ["--geometry", "views=288", "detectors=368", "det_spacing_mm=2.5716"]


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _body(n: int = 64) -> np.ndarray:
    c = (np.arange(n) - (n - 1) / 2) * (360.0 / n)
    r = np.hypot(*np.meshgrid(c, c))
    return np.where(r < 150, 40.0, -1000.0).astype(np.float32)


def test_info(capsys):
    assert main(["info"]) == 0
    assert "ctdn" in capsys.readouterr().out


def test_demo_writes_a_panel_and_noise_grows_as_dose_falls(tmp_path, capsys):
    assert main(["sim-demo", "--size", "128", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    png = tmp_path / "demo" / "abdomen_doses.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = re.findall(r"^\s*(\d+)%\s+([\d.]+)\s+([\d.]+)", out, flags=re.M)
    doses = [int(r[0]) for r in rows]
    noise = [float(r[1]) for r in rows]
    assert doses == [70, 50, 25, 10]
    assert noise == sorted(noise) and noise[-1] > 2 * noise[0]


def test_simulate_npy_round_trip_leaves_input_untouched(tmp_path):
    src = tmp_path / "in.npy"
    np.save(src, np.stack([_body(), _body()]))
    before = _hashes(tmp_path)
    dst = tmp_path / "out.npy"
    assert main(["simulate", str(src), str(dst), "--dose", "0.25", *FAST]) == 0
    out = np.load(dst)
    assert out.shape == (2, 64, 64) and out.dtype == np.float32
    diff = (out - np.load(src))[:, _body() > 0]  # inside the body
    assert float(diff.std()) > 1.0 and abs(float(diff.mean())) < 2.0  # noise added, no shift
    after = _hashes(tmp_path)
    assert {k: after[k] for k in before} == before
    # Existing output: refused without --overwrite, output unchanged.
    stamp = dst.read_bytes()
    assert main(["simulate", str(src), str(dst), "--dose", "0.25", *FAST]) == 2
    assert dst.read_bytes() == stamp
    assert main(["simulate", str(src), str(dst), "--dose", "0.25", "--overwrite", "--seed", "5", *FAST]) == 0
    assert dst.read_bytes() != stamp


def test_simulate_dicom_writes_a_derived_series(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    make_ct_series(series, n=3, rows=64, cols=64, spacing=2.5)
    before = _hashes(series)
    out = tmp_path / "low"
    # The factory's air sits at the bottom of the 12-bit stored range, so noise below it is clipped,
    # and write_dicom says so.
    with pytest.warns(UserWarning, match="clipped"):
        code = main(["simulate", str(series), str(out), "--dose", "0.5", "--pixel-size", "5.0", *FAST])
    assert code == 0
    assert _hashes(series) == before
    src, low = read_dicom(series), read_dicom(out)
    assert low.hu.shape == src.hu.shape
    assert low.series_uid != src.series_uid
    assert "DERIVED" in list(low.headers[0].ImageType)
    assert "0.5" in str(low.headers[0].DerivationDescription)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "{src}", "{src}", "--dose", "0.5"], "into the input"),
        (["simulate", "{src}", "{dst}", "--dose", "1.5"], "(0, 1]"),
        (["simulate", "{src}", "{dst}", "--dose", "0"], "(0, 1]"),
        (["simulate", "{missing}", "{dst}", "--dose", "0.5"], "does not exist"),
        (["simulate", "{src}", "{dst}", "--dose", "0.5", "--geometry", "kind=cone"], "kind"),
        (["simulate", "{src}", "{dst}", "--dose", "0.5", "--geometry", "views"], "key=value"),
        (["simulate", "{nan}", "{dst}", "--dose", "0.5"], "non-finite"),
        (["simulate", "{txt}", "{dst}", "--dose", "0.5"], "DICOM"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    src = tmp_path / "in.npy"
    np.save(src, _body())
    nan = tmp_path / "nan.npy"
    bad = _body()
    bad[3, 3] = np.nan
    np.save(nan, bad)
    txt = tmp_path / "notes.txt"
    txt.write_text("not a scan")
    names = dict(src=src, dst=tmp_path / "out.npy", missing=tmp_path / "nope.npy", nan=nan, txt=txt)
    before = _hashes(tmp_path)
    code = main([a.format(**names) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ctdn: error:") and message in err
    assert "Traceback" not in err
    assert _hashes(tmp_path) == before  # nothing written, nothing changed
