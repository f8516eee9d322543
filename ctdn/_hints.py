"""How an error message names an option: ``--overwrite`` on the command line, ``overwrite=True`` in Python.

The library's messages say what to pass to get past a refusal. The CLI runs inside :func:`cli` so
the same message names the flag a CLI user can type instead of a keyword argument they cannot.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["option", "cli"]

_IN_CLI = contextvars.ContextVar("ctdn_in_cli", default=False)


def option(name: str, value: object = True, *, placeholder: str = "...") -> str:
    """``option("overwrite")`` -> ``--overwrite`` / ``overwrite=True``;
    ``option("series_uid", None, placeholder="UID")`` -> ``--series-uid UID`` / ``series_uid=...``."""
    if _IN_CLI.get():
        flag = "--" + name.replace("_", "-")
        return flag if value is True else f"{flag} {placeholder if value is None else value}"
    return f"{name}={'...' if value is None else repr(value)}"


@contextlib.contextmanager
def cli() -> Iterator[None]:
    token = _IN_CLI.set(True)
    try:
        yield
    finally:
        _IN_CLI.reset(token)
