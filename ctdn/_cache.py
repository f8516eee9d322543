"""Checked cache files: a payload behind a one-line JSON header saying what it is and what it holds.

A file is ``ctdn-cache/1`` on the first line, a JSON object on the second (``kind``, the identity
fields the writer passes, ``bytes`` and ``sha256`` of the payload, ``ctdn_version``), then the payload.
:func:`read_checked` returns the payload only when the header matches what the reader expects and
the payload has the recorded size and checksum; anything else (another format, another version or
GPU, a truncated or altered payload, a foreign file) raises :class:`CacheInvalid` with the reason,
so the caller can ignore the file and rebuild it. Writes are atomic (:func:`ctdn._atomic.atomic_path`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ._atomic import atomic_path
from ._version import __version__

__all__ = ["MAGIC", "CacheInvalid", "sha256_file", "write_checked", "read_checked"]

MAGIC = b"ctdn-cache/1\n"
_MAX_HEADER = 1 << 16  # a header is a few hundred bytes; past this the file is not one of ours


class CacheInvalid(Exception):
    """A cache file that must not be used; the message says why (for the caller's warning)."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, read in chunks (packages and engines are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_checked(path: str | os.PathLike, payload: bytes, *, kind: str, identity: dict) -> Path:
    """Write ``payload`` to ``path`` (atomically) behind a header naming ``kind`` and ``identity``."""
    payload = bytes(payload)
    header = {
        "kind": kind,
        **identity,
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "ctdn_version": __version__,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload)
    return path


def _header(blob: bytes) -> tuple[dict, bytes]:
    if not blob.startswith(MAGIC):
        raise CacheInvalid("not a ctdn cache file (no ctdn-cache/1 header)")
    end = blob.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise CacheInvalid("its header is truncated or damaged")
    try:
        header = json.loads(blob[len(MAGIC) : end])
    except (UnicodeDecodeError, ValueError) as exc:
        raise CacheInvalid(f"its header is not readable JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CacheInvalid("its header is not a JSON object")
    return header, blob[end + 1 :]


def read_checked(path: str | os.PathLike, *, kind: str, identity: dict) -> bytes | None:
    """The payload of the cache file at ``path``; None if there is none; CacheInvalid if it is unusable.

    ``identity``: the fields the header must hold with exactly these values (e.g. the TensorRT version
    and the GPU the cache belongs to). OSError other than a missing file propagates.
    """
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    header, payload = _header(blob)
    for field, want in {"kind": kind, **identity}.items():
        if header.get(field) != want:
            raise CacheInvalid(f"{field} is {header.get(field)!r} in its header, {want!r} expected")
    if header.get("bytes") != len(payload):
        raise CacheInvalid(
            f"truncated or extended: its header says {header.get('bytes')!r} bytes, it holds {len(payload)}"
        )
    if header.get("sha256") != hashlib.sha256(payload).hexdigest():
        raise CacheInvalid("its payload does not match the sha256 in its header (damaged or altered)")
    return payload
