"""Nothing lost: what ``--overwrite`` may replace, one resolved output path, create-or-fail
commits, signals and stale temporaries, permissions (issue "output safety", items 1-5 and 15).

A tiny random-init model stands in for the shipped weights: the plumbing is under test.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import disc_volume, make_ct_series
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctdn import _atomic
from ctdn.cli import main
from ctdn.errors import DicomError
from ctdn.io import output, read_dicom, write_dicom
from ctdn.io.output import MANIFEST
from ctdn.models import build, save_model

N, SIZE = 3, 32


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, "<dir>" for folders, the target for links."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = "-> " + os.readlink(p)
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = "<dir>"
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    stored = np.clip(np.rint(disc_volume(N, SIZE, 0) + 1024), 0, 4095).astype(np.int64)
    make_ct_series(root / "series", n=N, rows=SIZE, cols=SIZE, stored=stored)
    np.save(root / "vol.npy", disc_volume(N, SIZE, 0))
    save_model(build("tiny"), root / "tiny.safetensors", {"name": "tiny"})
    return root


def _argv(inputs: Path, src: str, dst, *extra) -> list[str]:
    model = str(inputs / "tiny.safetensors")
    return ["denoise", str(inputs / src), str(dst), "--dose", "0.25", "--model", model, "--quiet", *extra]


def _run(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def _user_files(root: Path) -> None:
    (root / "mywork.txt").write_text("x")
    (root / "proj").mkdir()
    (root / "proj" / "code.py").write_text("y")


# --- 1. --overwrite replaces only ctdn's own output -----------------------------------------------
def test_empty_output_path_is_refused(inputs, tmp_path, capsys, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    _user_files(work)
    monkeypatch.chdir(work)
    before = _hashes(work)
    for dst in ("", " "):
        code, err = _run(capsys, _argv(inputs, "series", dst, "--overwrite"))
        assert code == 2 and "output path is empty" in err and err.count("\n") == 1
    assert _hashes(work) == before


@pytest.mark.parametrize("dst", [".", "..", "w", "w/proj"])
def test_overwrite_never_replaces_a_folder_of_user_files(inputs, tmp_path, capsys, monkeypatch, dst):
    work = tmp_path / "w"
    work.mkdir()
    _user_files(work)
    monkeypatch.chdir(work if dst in (".", "..") else tmp_path)
    before = _hashes(tmp_path)
    code, err = _run(capsys, _argv(inputs, "series", dst, "--overwrite"))
    assert code == 2 and "refusing to replace" in err and "ctdn wrote" in err, err
    assert _hashes(tmp_path) == before


def test_overwrite_names_what_is_in_the_way(inputs, tmp_path, capsys):
    out = tmp_path / "den"
    assert _run(capsys, _argv(inputs, "series", out))[0] == 0
    assert (out / MANIFEST).is_file()
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    before = _hashes(tmp_path)
    code, err = _run(capsys, _argv(inputs, "series", out, "--overwrite"))
    assert code == 2 and "2 other entries (notes.txt, sub/)" in err and "move them away" in err
    assert _hashes(tmp_path) == before
    (out / "notes.txt").unlink()
    (out / "sub").rmdir()
    first = read_dicom(out).series_uid
    assert _run(capsys, _argv(inputs, "series", out, "--overwrite"))[0] == 0  # ctdn's own: replaced
    assert read_dicom(out).series_uid != first


def test_overwrite_refuses_a_folder_whose_manifest_is_forged_or_damaged(inputs, tmp_path, capsys):
    out = tmp_path / "den"
    out.mkdir()
    (out / "important.dat").write_text("keep")
    for manifest in ("not json", '["IM00000.dcm"]', '{"written_by": "ctdn", "files": ["../x"]}'):
        (out / MANIFEST).write_text(manifest)
        before = _hashes(tmp_path)
        code, err = _run(capsys, _argv(inputs, "series", out, "--overwrite"))
        assert code == 2 and "refusing to replace" in err
        assert _hashes(tmp_path) == before


def test_file_outputs_replace_only_their_own_kind(inputs, tmp_path, capsys):
    nib = pytest.importorskip("nibabel")
    foreign = tmp_path / "theirs.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), foreign)
    folder = tmp_path / "looks.npy"
    folder.mkdir()
    (folder / "x").write_text("x")
    int_npy = tmp_path / "labels.npy"
    np.save(int_npy, np.zeros((2, 2), np.int16))
    before = _hashes(tmp_path)
    for dst in (foreign, folder, int_npy):
        code, err = _run(capsys, _argv(inputs, "vol.npy", dst, "--overwrite"))
        assert code == 2 and ("refusing to replace" in err or "existing folder" in err), err
    assert _hashes(tmp_path) == before
    mine = tmp_path / "mine.nii"
    assert _run(capsys, _argv(inputs, "vol.npy", mine))[0] == 0
    assert _run(capsys, _argv(inputs, "vol.npy", mine, "--overwrite"))[0] == 0  # ctdn's own NIfTI


# --- 2. one resolved path, checked and written -----------------------------------------------------
@pytest.mark.parametrize("kind", ["series", "vol.npy"])
def test_a_path_through_a_link_and_dotdot_is_checked_where_it_is_written(inputs, tmp_path, capsys, kind):
    base = tmp_path / "base"
    (base / "deep" / "sub").mkdir(parents=True)
    (base / "tmplink").symlink_to(base / "deep" / "sub")
    (base / "victim").mkdir()
    (base / "victim" / "notes.txt").write_text("keep")  # where the path points lexically
    name = "victim" if kind == "series" else "victim.npy"
    before = _hashes(base)
    code, err = _run(capsys, _argv(inputs, kind, f"{base}/tmplink/../{name}", "--overwrite"))
    assert code == 0, err
    written = base / "deep" / name  # where the operating system resolves it
    assert written.exists()
    after = _hashes(base)
    assert {k: after[k] for k in before} == before


def test_the_output_is_not_written_into_the_input_through_a_link(inputs, tmp_path, capsys):
    (tmp_path / "link").symlink_to(inputs / "series")
    before = _hashes(inputs)
    code, err = _run(capsys, _argv(inputs, "series", tmp_path / "link" / "den"))
    assert code == 2 and "input" in err
    assert _hashes(inputs) == before


# --- 3. concurrent writers: exactly one wins, nothing complete is deleted ---------------------------
def test_two_writers_of_one_output_exactly_one_wins(inputs, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ctdn", *_argv(inputs, "series", out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(2)
    ]
    codes = [p.wait(timeout=300) for p in procs]
    errs = [p.stderr.read().decode() for p in procs]
    assert sorted(codes) == [0, 2], errs
    loser = errs[codes.index(2)]
    assert "already exists" in loser or "another writer" in loser
    assert read_dicom(out).hu.shape == (N, SIZE, SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries left


def test_racing_commits_keep_the_first_series(inputs, tmp_path, monkeypatch):
    """Both writers pass the up-front check; the final rename decides, and the loser removes only
    its own temporary."""
    vol = read_dicom(inputs / "series")
    out = tmp_path / "out"
    barrier = threading.Barrier(2)
    real = output._write_manifest

    def together(folder):  # both series complete, both about to commit
        barrier.wait(timeout=30)
        real(folder)

    monkeypatch.setattr(output, "_write_manifest", together)
    results: list[object] = []

    def write():
        try:
            results.append(write_dicom(vol.hu, vol, out))
        except DicomError as exc:
            results.append(exc)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    errors = [r for r in results if isinstance(r, DicomError)]
    assert len(results) == 2 and len(errors) == 1 and "another writer" in str(errors[0])
    assert read_dicom(out).hu.shape == (N, SIZE, SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_refusals_come_before_the_work(inputs, tmp_path, capsys, monkeypatch):
    from ctdn.inference import Denoiser

    def never(*a, **k):
        raise AssertionError("denoised although the output was going to be refused")

    monkeypatch.setattr(Denoiser, "__call__", never)
    single = tmp_path / "one"
    single.mkdir()
    dcm = sorted((inputs / "series").iterdir())[0]
    (single / dcm.name).write_bytes(dcm.read_bytes())
    cases = [
        (_argv(inputs, "series", inputs / "series" / "den"), "input"),
        (
            [
                "denoise",
                str(single / dcm.name),
                str(single / "den"),
                "--dose",
                "0.25",
                "--quiet",
                "--model",
                str(inputs / "tiny.safetensors"),
            ],
            "input",
        ),
        (_argv(inputs, "series", "/proc/ctdn-out"), "cannot write the output /proc/ctdn-out"),
    ]
    for argv, text in cases:
        code, err = _run(capsys, argv)
        assert code == 2 and text in err, err


# --- 5. signals and stale temporaries -------------------------------------------------------------
_SLOW_WRITER = """
import sys, time
from pathlib import Path
import ctdn.io.dicom as d
real = d._write_file
def slow(ds, path):
    real(ds, path)
    Path(sys.argv[1]).touch()  # the test may signal now: the series is half written
    time.sleep(0.5)
d._write_file = slow
from ctdn.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_writing_leaves_nothing_behind(inputs, tmp_path, sig):
    work = tmp_path / "work"
    work.mkdir()
    flag = tmp_path / "writing"
    argv = [sys.executable, "-c", _SLOW_WRITER, str(flag), *_argv(inputs, "series", work / "prev")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while not flag.exists() and proc.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    assert code == (143 if sig == signal.SIGTERM else 130), err
    assert "nothing was written" in err
    assert list(work.iterdir()) == []


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(inputs, tmp_path, capsys):
    out = tmp_path / "den"
    host = _atomic._HOST
    stale = tmp_path / f".den.{host}-{_dead_pid()}-0123456789.ctdn-tmp"
    stale.mkdir()
    (stale / "IM00000.dcm").write_bytes(b"half")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".den.{host}-{sleeper.pid}-abcdefabcd.ctdn-tmp"
        live.mkdir()
        user = tmp_path / ".den.notes.ctdn-tmp"  # looks alike, not ctdn's pattern: left alone
        user.write_text("mine")
        assert _run(capsys, _argv(inputs, "series", out))[0] == 0
        assert not stale.exists() and live.is_dir() and user.read_text() == "mine"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_interrupted_replacement_is_restored(inputs, tmp_path, capsys):
    out = tmp_path / "den"
    assert _run(capsys, _argv(inputs, "series", out))[0] == 0
    first = _hashes(out)
    aside = tmp_path / f".den.{_atomic._HOST}-{_dead_pid()}-0123456789.ctdn-old"
    os.rename(out, aside)  # as a kill between the two renames of a replacement leaves it
    code, err = _run(capsys, _argv(inputs, "series", out))
    assert code == 2 and "already exists" in err  # the old series is back, and not replaced
    assert _hashes(out) == first and not aside.exists()


# --- 15. permissions ----------------------------------------------------------------------------------
def test_outputs_get_the_umasks_permissions(inputs, tmp_path, capsys):
    old = os.umask(0o027)
    try:
        _atomic._UMASK = 0o027
        assert _run(capsys, _argv(inputs, "series", tmp_path / "den"))[0] == 0
        assert _run(capsys, _argv(inputs, "vol.npy", tmp_path / "den.npy"))[0] == 0
    finally:
        os.umask(old)
        _atomic._UMASK = old
    assert (tmp_path / "den").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "den.npy").stat().st_mode & 0o777 == 0o640
    assert all(p.stat().st_mode & 0o777 == 0o640 for p in (tmp_path / "den").iterdir())


# --- the family: any output path, any thing in the way ------------------------------------------------
THINGS = [
    "nothing",
    "empty folder",
    "user folder",
    "ctdn series",
    "ctdn series + file",
    "user file",
    "ctdn npy",
    "link to user folder",
    "link to ctdn series",
    "dangling link",
]


def _place(thing: str, path: Path, inputs: Path, capsys) -> None:
    other = path.parent / "elsewhere"
    if thing == "empty folder":
        path.mkdir()
    elif thing == "user folder":
        path.mkdir()
        (path / "a.txt").write_text("a")
    elif thing.startswith("ctdn series"):
        vol = read_dicom(inputs / "series")
        write_dicom(vol.hu, vol, path)  # whatever the name says
        if thing.endswith("file"):
            (path / "b.txt").write_text("b")
    elif thing == "user file":
        path.write_text("user")
    elif thing == "ctdn npy":
        np.save(path if path.suffix == ".npy" else open(path, "wb"), np.zeros((2, 2), np.float32))
    elif thing == "link to user folder":
        other.mkdir()
        (other / "c.txt").write_text("c")
        path.symlink_to(other)
    elif thing == "link to ctdn series":
        vol = read_dicom(inputs / "series")
        write_dicom(vol.hu, vol, other)
        path.symlink_to(other)
    elif thing == "dangling link":
        path.symlink_to(other)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    thing=st.sampled_from(THINGS),
    kind=st.sampled_from(["series", "vol.npy"]),
    suffix=st.sampled_from(["", ".npy"]),
    overwrite=st.booleans(),
    via=st.sampled_from(["plain", "dotdot", "relative"]),
)
def test_no_output_path_loses_a_user_file(
    inputs, tmp_path_factory, capsys, thing, kind, suffix, overwrite, via
):
    root = tmp_path_factory.mktemp("family")
    (root / "sub").mkdir()
    (root / "keep.txt").write_text("keep")
    path = root / f"out{suffix}"
    _place(thing, path, inputs, capsys)
    protected = {k: v for k, v in _hashes(root).items()}
    ours = thing in ("ctdn series", "ctdn npy", "link to ctdn series")
    dst = {"plain": str(path), "dotdot": f"{root}/sub/../{path.name}", "relative": os.path.relpath(path)}[via]
    code, err = _run(capsys, _argv(inputs, kind, dst, *(["--overwrite"] if overwrite else [])))
    assert code in (0, 2) and err.count("\n") <= 1, err
    after = _hashes(root)
    lost = {k for k, v in protected.items() if after.get(k) != v}
    if code == 0 and overwrite and ours:  # ctdn's own earlier output, replaced on request
        target = path.resolve()
        lost = {k for k in lost if not str(root / k).startswith(str(target))}
    assert not lost, f"{thing}, overwrite={overwrite}: changed or lost {sorted(lost)}"
    assert not [p for p in root.rglob(".*.ctdn-[to][ml][pd]*")], "temporaries left behind"
    if code == 0:
        target = path.resolve()
        if kind == "series" and suffix == "":
            assert read_dicom(target).hu.shape == (N, SIZE, SIZE)
        elif kind == "vol.npy" and suffix == ".npy":
            assert np.load(target).shape == (N, SIZE, SIZE)


# --- 14. CLI messages name CLI flags, in one line ---------------------------------------------------
def test_cli_messages_name_the_flags_a_cli_user_can_type(inputs, tmp_path, capsys):
    two = tmp_path / "two"
    make_ct_series(two, n=2, rows=SIZE, cols=SIZE, series_uid="1.2.3.1", prefix="A")
    make_ct_series(two, n=2, rows=SIZE, cols=SIZE, series_uid="1.2.3.2", prefix="B")
    code, err = _run(capsys, ["denoise", str(two), str(tmp_path / "o"), "--dose", "0.25", "--quiet"])
    assert code == 2 and "--series-uid UID" in err and "read_dicom(" not in err
    assert _run(capsys, _argv(inputs, "vol.npy", tmp_path / "x.npy", "--series-uid", "1"))[0] == 0
    mr = tmp_path / "mr"
    make_ct_series(mr, n=2, rows=SIZE, cols=SIZE, modality="MR")
    code, err = _run(capsys, ["denoise", str(mr), str(tmp_path / "m"), "--dose", "0.25", "--quiet"])
    assert code == 2 and "--allow-non-ct" in err and "allow_non_ct=True" not in err
    code, err = _run(capsys, _argv(inputs, "series", tmp_path / "m", "--allow-non-ct"))
    assert code == 0, err
    assert _run(capsys, _argv(inputs, "series", tmp_path / "m"))[1].count("--overwrite") == 1


@pytest.mark.parametrize("dose", ["10%", "abc", "1/4"])
def test_a_bad_dose_is_one_line(inputs, tmp_path, dose):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctdn",
            "denoise",
            str(inputs / "vol.npy"),
            str(tmp_path / "o.npy"),
            "--dose",
            dose,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "usage:" not in proc.stderr
    assert "--dose" in proc.stderr and "--help" in proc.stderr
    if dose == "10%":
        assert "give 0.1" in proc.stderr
    assert not (tmp_path / "o.npy").exists()


def test_the_library_names_keywords_not_flags(inputs, tmp_path):
    vol = read_dicom(inputs / "series")
    out = write_dicom(vol.hu, vol, tmp_path / "o")
    with pytest.raises(DicomError, match=r"overwrite=True"):
        write_dicom(vol.hu, vol, out)
