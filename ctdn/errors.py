"""One exception family for everything ctdn refuses.

Every error a user can trigger with bad input is a :class:`CTDNError`. The concrete classes also
derive from the matching builtin (``ValueError``, ``TypeError``, ``OSError``) so that code written
against the builtins keeps working.
"""

from __future__ import annotations

__all__ = [
    "CTDNError",
    "InputError",
    "InputTypeError",
    "DoseError",
    "DicomError",
    "MissingDependencyError",
    "CacheError",
    "EngineError",
    "ModelError",
]


class CTDNError(Exception):
    """Base class of every error ctdn raises on purpose."""


class InputError(CTDNError, ValueError):
    """An array or parameter has a bad value: wrong shape, NaN/inf, empty, out of range."""


class InputTypeError(CTDNError, TypeError):
    """An argument has the wrong type (e.g. a complex or object array)."""


class DoseError(InputError):
    """A dose that is not a finite fraction in (0, 1]."""


class DicomError(CTDNError, OSError):
    """A DICOM file or series that cannot be read or written as a CT series."""


class MissingDependencyError(CTDNError, ImportError):
    """An optional package is needed for this path; the message names it."""


class CacheError(CTDNError, OSError):
    """A simulated-pair cache that is corrupt or was built with other settings."""


class EngineError(CTDNError, RuntimeError):
    """A deployed engine or package that cannot run here: sidecar mismatch, other GPU or version, corrupt."""


class ModelError(InputError):
    """A model file that cannot be used: missing, unreadable, bad metadata or non-finite weights.

    An :class:`InputError` (so a ``ValueError``), as checkpoint refusals always were; the message
    names the model file and the field or tensor at fault.
    """
