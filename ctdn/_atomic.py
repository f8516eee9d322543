"""Atomic writes: a marked temporary beside the target, put into place only when complete.

Every temporary ctdn creates is named ``.<target name>.<host>-<pid>-<random>.ctdn-tmp<suffix>``
(a folder being replaced is moved aside as ``... .ctdn-old``), so it can be told apart from the
user's files and its owner can be found. A temporary whose owner process is gone (killed by
SIGKILL, a power cut) is removed by the next write to the same target, and a folder that was moved
aside by a replacement that never finished is put back; nothing else beside the target is touched.

Commit modes:

- ``replace=True`` (:func:`atomic_path`'s default, for ctdn's own caches, checkpoints and
  reports): ``os.replace``, the target is whatever was written last.
- ``replace=False`` (user outputs without ``--overwrite``): create-or-fail. A file is hard-linked
  into place (the link fails if the name exists, whoever created it); a folder is renamed, which
  fails on a non-empty folder. Of two writers racing for one name exactly one wins.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

try:  # POSIX: advisory locks order ctdn's own writers around a replacement
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["atomic_path", "commit_file", "commit_folder", "folder_lock", "clean_stale", "TMP_MARK"]

TMP_MARK = ".ctdn-tmp"
OLD_MARK = ".ctdn-old"

# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


class TargetExistsError(FileExistsError):
    """The target of a create-or-fail commit exists (another writer got there first)."""


def file_mode() -> int:
    return 0o666 & ~_UMASK


def folder_mode() -> int:
    return 0o777 & ~_UMASK


def owner_tag() -> str:
    """``<host>-<pid>-<random>``: who made a temporary, and a unique part."""
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


def temp_name(path: Path, mark: str = TMP_MARK, suffix: str = "") -> Path:
    return path.parent / f".{path.name}.{owner_tag()}{mark}{suffix}"


def _owner_alive(host: str, pid: int) -> bool:
    if host != _HOST:
        return True  # another machine's (a shared folder): never ours to judge
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _stale(path: Path) -> list[tuple[Path, str]]:
    """ctdn's temporaries for ``path`` whose owner process is gone, with their mark."""
    pattern = re.compile(
        re.escape(f".{path.name}.")
        + r"([0-9a-f]{8})-(\d+)-[0-9a-f]{10}("
        + re.escape(TMP_MARK)
        + "|"
        + re.escape(OLD_MARK)
        + r")(\..*)?$"
    )
    found = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    for name in names:
        m = pattern.match(name)
        if m and not _owner_alive(m.group(1), int(m.group(2))):
            found.append((path.parent / name, m.group(3)))
    return found


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def clean_stale(path: str | os.PathLike) -> list[str]:
    """Remove the temporaries that dead ctdn processes left for ``path``; put back a folder that an
    interrupted replacement had moved aside (when ``path`` itself is missing). Returns what was done,
    one line each."""
    path = Path(path)
    done = []
    for p, mark in sorted(_stale(path), key=lambda x: x[1] != OLD_MARK):
        if mark == OLD_MARK and not os.path.lexists(path):
            try:
                os.rename(p, path)
                done.append(f"restored {path} from an interrupted replacement")
                continue
            except OSError:
                pass
        _remove(p)
        done.append(f"removed {p.name}, left by an interrupted ctdn write")
    return done


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (POSIX ``flock`` on the folder itself, so no lock
    file is left behind); a no-op where locks are not available."""
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def commit_file(tmp: Path, path: Path, *, replace: bool) -> None:
    """Put the complete file ``tmp`` at ``path`` (see the module docstring for ``replace``); call it
    under :func:`folder_lock` of the folder."""
    os.chmod(tmp, file_mode())  # mkstemp makes files private; give the result the umask's mode
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise TargetExistsError(errno.EEXIST, "created by another writer meanwhile", str(path)) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(path):  # no hard links here: the caller's folder_lock orders ctdn's writers
            raise TargetExistsError(errno.EEXIST, "created by another writer meanwhile", str(path)) from None
        os.rename(tmp, path)
        return
    os.unlink(tmp)


def commit_folder(tmp: Path, path: Path) -> None:
    """Rename the complete folder ``tmp`` to ``path``; fails if ``path`` is a non-empty folder or
    anything but a folder (rename replaces only an empty folder)."""
    os.chmod(tmp, folder_mode())  # mkdtemp makes folders private; give the result the umask's mode
    try:
        os.rename(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise TargetExistsError(exc.errno, "created by another writer meanwhile", str(path)) from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; it becomes ``path`` only if the block succeeds.

    A crash or exception leaves ``path`` as it was (absent or old) and no temporary file behind;
    a temporary left by a killed process is removed by the next write to ``path``. With
    ``replace=False`` the commit is create-or-fail (:class:`TargetExistsError`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = make_temp_file(path)
    try:
        yield tmp
        with folder_lock(path.parent):
            commit_file(tmp, path, replace=replace)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def make_temp_file(path: Path) -> Path:
    """A new, empty, marked temporary file beside ``path``, with ``path``'s suffix (``np.save``
    appends ``.npy`` to a name without it)."""
    tmp = temp_name(path, suffix=path.suffix)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return tmp


def make_temp_folder(path: Path) -> Path:
    """A new, empty, marked temporary folder beside ``path`` (private until committed)."""
    tmp = temp_name(path)
    os.mkdir(tmp, 0o700)
    return tmp


def warn_cleaned(lines: list[str]) -> None:
    for line in lines:
        warnings.warn(f"ctdn: {line}", UserWarning, stacklevel=2)
