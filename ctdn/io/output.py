"""Where a result is written, and what ctdn may replace there.

The rules, for every output kind (a DICOM series folder, a ``.npy`` or a NIfTI file):

- The output path is resolved once, as the operating system would (symbolic links, ``..``); the
  checks, the temporary and the final rename all use that one path. An empty path is refused.
- An output is never written into, or around, an input.
- Without ``overwrite`` an existing output is refused (an empty folder may take a new series), and
  the final rename is create-or-fail: of two writers racing for one name, exactly one wins and the
  other fails with nothing replaced.
- ``overwrite`` replaces only ctdn's own earlier output: a series folder that holds ctdn's
  manifest (:data:`MANIFEST`, written into every series ctdn writes) and nothing but the files it
  lists; a NIfTI file whose description ctdn wrote; a float32 ``.npy`` array. Anything else in the
  way is named and left alone.
- Writes go to a marked temporary beside the output (:mod:`ctdn._atomic`); a temporary left by a
  killed process is removed by the next write to the same output.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import _atomic
from .._hints import option
from .._version import __version__
from ..errors import InputError, InputTypeError

__all__ = ["MANIFEST", "output_kind", "resolve_output", "check_output", "file_output", "series_output"]

MANIFEST = ".ctdn-series.json"
PathLike = str | os.PathLike


def output_kind(path: PathLike) -> str:
    """``"npy"``, ``"nifti"`` or ``"dicom"`` (a folder, a DICOM file, anything else) from the name."""
    name = Path(path).name.lower()
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    return "dicom"


def resolve_output(path, *, error: type[Exception] = InputError) -> Path:
    """The absolute, resolved output path; refuses an empty path and the file system's root."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"output: expected a path, got {type(path).__name__}")
    text = os.fspath(path)
    if not str(text).strip():
        raise error("the output path is empty; name a new folder (DICOM) or a .npy/.nii/.nii.gz file")
    out = Path(os.path.expanduser(text)).resolve()
    if out.parent == out:
        raise error(f"refusing to write to {out}, the root of the file system; name a new folder")
    return out


def check_output(
    path,
    kind: str,
    *,
    overwrite: bool,
    inputs: Sequence[PathLike] = (),
    error: type[Exception] = InputError,
) -> Path:
    """Resolve ``path`` and check, before any work, that a ``kind`` output may be written there:
    not into or around an input (files, or folders whose whole content is input), not over
    anything but ctdn's own output, and in a folder that can be written. Returns the path to use."""
    out = resolve_output(path, error=error)
    _check_inputs(out, inputs, error)
    _atomic.warn_cleaned(_atomic.clean_stale(out))  # a dead writer's debris: ctdn's own, never the user's
    if os.path.lexists(out) and not (kind == "dicom" and _is_empty_folder(out)):
        if not overwrite:
            raise error(f"output {out} already exists; pass {option('overwrite')} to replace it")
        reason = replace_refusal(out, kind)
        if reason:
            raise error(f"refusing to replace {out}: {reason}")
    _check_writable(out, error)
    return out


def _check_inputs(out: Path, inputs: Sequence[PathLike], error) -> None:
    for given in inputs:
        src = Path(given).resolve()
        if out == src or (src.is_dir() and src in out.parents):
            raise error(f"output {out} would write into the input {src}; choose another output")
        if out in src.parents:
            raise error(f"output {out} contains the input {src}; choose another output")


def _is_empty_folder(p: Path) -> bool:
    try:
        return p.is_dir() and not p.is_symlink() and not any(os.scandir(p))
    except OSError:
        return False


def _check_writable(out: Path, error) -> None:
    """Probe the nearest existing folder above ``out`` with a marked file, created and removed:
    a read-only or virtual file system (``/proc``) is named now, before the denoising work."""
    folder = out.parent
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    if not folder.is_dir():
        raise error(f"cannot write the output {out}: {folder} is not a folder")
    probe = _atomic.temp_name(folder / out.name)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"cannot write the output {out}: {exc.strerror or exc} in {folder}") from exc


# ---------------------------------------------------------------------------------------------
# What counts as ctdn's own output
def replace_refusal(out: Path, kind: str) -> str | None:
    """Why the existing ``out`` must not be replaced by a ``kind`` output, or None if it may."""
    if kind == "dicom":
        return _series_refusal(out)
    if not out.is_file():
        return f"it is {_what(out)}, not a {kind} file"
    return _npy_refusal(out) if kind == "npy" else _nifti_refusal(out)


def _what(p: Path) -> str:
    if p.is_dir():
        return "a folder"
    if p.is_file():
        return "a file"
    return "not a regular file or folder"


def _series_refusal(out: Path) -> str | None:
    if not out.is_dir():
        return f"it is {_what(out)}, not a folder (ctdn writes a series as a folder)"
    listed = read_manifest(out)
    if listed is None:
        return (
            f"it is not a series that ctdn wrote (no readable {MANIFEST} in it); "
            "move it away or choose another output folder"
        )
    extra = sorted(
        e.name + ("/" if e.is_dir() else "") for e in os.scandir(out) if e.name not in listed | {MANIFEST}
    )
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        entries = "entry" if len(extra) == 1 else "entries"
        return (
            f"besides the series ctdn wrote it holds {len(extra)} other {entries} ({shown}); "
            "move them away or choose another output folder"
        )
    return None


def read_manifest(folder: Path) -> set[str] | None:
    """The file names a ctdn manifest in ``folder`` lists, or None if there is no valid one."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != "ctdn":
        return None
    files = data.get("files")
    if not isinstance(files, list):
        return None
    if not all(isinstance(f, str) and f and "/" not in f and f not in (".", "..") for f in files):
        return None
    return set(files)


def _npy_refusal(out: Path) -> str | None:
    try:
        with open(out, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            _, _, dtype = read(f)
    except Exception:  # noqa: BLE001 - any failure means: not a .npy array
        return "it is not a .npy array (ctdn writes float32 .npy arrays)"
    if dtype != np.float32:
        return f"it is a {dtype} .npy array, not a float32 one as ctdn writes"
    return None


def _nifti_refusal(out: Path) -> str | None:
    try:
        import nibabel
    except ImportError:
        return "nibabel is not installed, so ctdn cannot tell whether it wrote this file"
    try:
        descrip = bytes(nibabel.load(str(out)).header["descrip"].tobytes()).rstrip(b"\0")
    except Exception:  # noqa: BLE001 - nibabel raises many types
        return "it is not a NIfTI image"
    if not descrip.startswith(b"ctdn"):
        return "it is a NIfTI image that ctdn did not write (its description does not start with 'ctdn')"
    return None


# ---------------------------------------------------------------------------------------------
# Writing
def _taken(out: Path, error) -> Exception:
    return error(
        f"output {out} was created by another writer while ctdn was working; nothing was replaced "
        f"(pass {option('overwrite')} to replace ctdn's own output)"
    )


@contextlib.contextmanager
def file_output(
    out: Path, kind: str, *, overwrite: bool, error: type[Exception] = InputError
) -> Iterator[Path]:
    """Yield a temporary file for ``out`` (checked by :func:`check_output`); on success it becomes
    ``out``: created-or-failed, or, with ``overwrite``, replacing only ctdn's own output."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _atomic.warn_cleaned(_atomic.clean_stale(out))
        tmp = _atomic.make_temp_file(out)
    except OSError as exc:
        raise error(f"cannot write the output {out}: {exc}") from exc
    try:
        yield tmp
        _commit_file(tmp, out, kind, overwrite, error)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _commit_file(tmp: Path, out: Path, kind: str, overwrite: bool, error) -> None:
    with _atomic.folder_lock(out.parent):
        if overwrite and os.path.lexists(out):
            reason = replace_refusal(out, kind)  # again, under the lock: what is there now
            if reason:
                raise error(f"refusing to replace {out}: {reason}")
            _atomic.commit_file(tmp, out, replace=True)
            return
        try:
            _atomic.commit_file(tmp, out, replace=False)
        except _atomic.TargetExistsError:
            raise _taken(out, error) from None


@contextlib.contextmanager
def series_output(out: Path, *, overwrite: bool, error: type[Exception] = InputError) -> Iterator[Path]:
    """Yield a new temporary folder for the series at ``out``; on success a :data:`MANIFEST` of
    its files is added and it is renamed into place (create-or-fail, or replacing ctdn's own
    series under ``overwrite``). On any error or signal the temporary folder is removed."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _atomic.warn_cleaned(_atomic.clean_stale(out))
        tmp = _atomic.make_temp_folder(out)
    except OSError as exc:
        raise error(f"cannot create a temporary folder next to {out}: {exc}") from exc
    try:
        yield tmp
        _write_manifest(tmp)
        _commit_series(tmp, out, overwrite, error)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _write_manifest(folder: Path) -> None:
    files = sorted(e.name for e in os.scandir(folder) if e.is_file())
    data = {
        "written_by": "ctdn",
        "version": __version__,
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(data, indent=1) + "\n")


def _commit_series(tmp: Path, out: Path, overwrite: bool, error) -> None:
    with _atomic.folder_lock(out.parent):
        if overwrite and os.path.lexists(out) and not _is_empty_folder(out):
            reason = replace_refusal(out, "dicom")  # again, under the lock: what is there now
            if reason:
                raise error(f"refusing to replace {out}: {reason}")
            _replace_folder(tmp, out, error)
            return
        try:
            _atomic.commit_folder(tmp, out)
        except _atomic.TargetExistsError:
            raise _taken(out, error) from None
        except OSError as exc:
            raise error(f"cannot move the new series into place at {out}: {exc}") from exc


def _replace_folder(tmp: Path, out: Path, error) -> None:
    """Move ctdn's old series aside, the new one in, then delete the old one. If ctdn is killed
    between the two renames, the next write to ``out`` puts the old series back."""
    aside = _atomic.temp_name(out, _atomic.OLD_MARK)
    try:
        os.rename(out, aside)
        try:
            _atomic.commit_folder(tmp, out)
        except BaseException:
            os.rename(aside, out)
            raise
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise _taken(out, error) from None
        raise error(f"cannot move the new series into place at {out}: {exc}") from exc
    shutil.rmtree(aside, ignore_errors=True)
    if os.path.lexists(aside):
        _atomic.warn_cleaned([f"wrote {out}, but could not delete the old copy at {aside}"])
