"""Model checkpoints: safetensors weights with the config and provenance as JSON metadata.

A checkpoint ``name.safetensors`` carries its metadata inside the file (``__metadata__["ctdn"]``,
authoritative) and, for people and tools, the same JSON beside it as ``name.json``. No pickles.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import torch
from torch import nn

from .._atomic import atomic_path
from .._version import __version__
from ..errors import CTDNError, InputError, InputTypeError, ModelError
from .config import ModelConfig, check_hu_window
from .nafnet import Autoencoder, CTDenoiser

__all__ = ["save_model", "load_model", "read_meta", "read_any_meta", "model_path", "WEIGHTS_DIR", "FORMAT"]

FORMAT = "ctdn-model/1"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as exc:  # pragma: no cover - a declared dependency
        from ..errors import MissingDependencyError

        raise MissingDependencyError(
            "reading ctdn models needs safetensors: pip install safetensors"
        ) from exc
    return st


def save_model(model: CTDenoiser | Autoencoder, path, meta: dict | None = None) -> Path:
    """Write ``model`` and ``meta`` to ``path`` (.safetensors) and its .json.

    A :class:`CTDenoiser` is written as kind ``student`` (what :func:`load_model` reads), an
    :class:`Autoencoder` as kind ``teacher`` (training only).
    """
    kinds = {CTDenoiser: "student", Autoencoder: "teacher"}
    if type(model) not in kinds:
        raise InputTypeError(f"save_model takes a CTDenoiser or an Autoencoder, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"a model file must end in .safetensors, got {path.name}")
    full = {
        **(meta or {}),
        "format": FORMAT,
        "kind": kinds[type(model)],
        "config": model.config.to_dict(),
        "hu_window": list(model.config.hu_window),
        "ctdn_version": __version__,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    st = _safetensors()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        st.save_file(tensors, str(tmp), metadata={"ctdn": json.dumps(full)})
    with atomic_path(path.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(full, indent=2) + "\n")
    return path


def model_path(name_or_path) -> Path:
    """A shipped model's file from its name (``"edge"``), or the given path (str, bytes or path-like)."""
    p = _as_path(name_or_path)
    if p.suffix == ".safetensors" or p.parent != Path("."):
        return p
    shipped = WEIGHTS_DIR / f"{p}.safetensors"
    if shipped.is_file():
        return shipped
    if os.path.exists(p):  # a bare name of a local file or folder: read_any_meta says what is wrong with it
        return p
    names = sorted(f.stem for f in WEIGHTS_DIR.glob("*.safetensors"))
    raise ModelError(
        f"no shipped model named {str(p)!r} (shipped: {', '.join(names) or 'none'}); "
        "pass a .safetensors path, e.g. one written by ctdn-train"
    )


def _as_path(name_or_path) -> Path:
    """The model argument as a Path; a bytes path is decoded the way the OS decodes file names."""
    if isinstance(name_or_path, nn.Module):
        raise InputTypeError("load_model takes a name or a path; a module can be passed to ctdn.Denoiser")
    if not isinstance(name_or_path, (str, bytes)) and not hasattr(name_or_path, "__fspath__"):
        raise InputTypeError(
            "a model is a shipped name (e.g. 'edge') or a .safetensors path, "
            f"got {type(name_or_path).__name__}"
        )
    try:
        text = os.fsdecode(name_or_path)
    except TypeError as exc:  # an __fspath__ that returns neither str nor bytes
        raise InputTypeError(f"the model path {name_or_path!r} is not a valid path ({exc})") from exc
    if not text:
        raise ModelError("the model name is empty; give a shipped name (e.g. 'edge') or a .safetensors path")
    if "\0" in text:
        raise ModelError(f"the model path {text!r} contains a NUL character")
    return Path(text)


def read_meta(path) -> dict:
    """The metadata of a checkpoint, checked to be a ctdn student model."""
    meta = read_any_meta(path)
    if meta["kind"] != "student":
        raise ModelError(
            f"model {path} holds a {meta['kind']!r} model, not a denoiser; use the student checkpoint "
            "that ctdn-train writes at the end of stage 2"
        )
    return meta


def read_any_meta(path) -> dict:
    """The metadata of a ctdn checkpoint of any kind (student or teacher), its known fields checked."""
    path = Path(path)
    _check_file(path)
    meta = _parse_meta(path, _read_header(path))
    _check_fields(path, meta)
    return meta


def _check_file(path: Path) -> None:
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ModelError(f"model file not found: {path}") from None
    except OSError as exc:  # permission, a symlink loop, a name too long
        raise ModelError(f"model {path} cannot be read ({_one_line(exc)})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ModelError(f"model {path} is a folder, not a .safetensors file")
    if not stat.S_ISREG(info.st_mode):
        raise ModelError(f"model {path} is not a regular file")
    if info.st_size == 0:
        raise ModelError(f"model file {path} is empty (0 bytes)")


def _read_header(path: Path) -> str | None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("ctdn")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"model {path} is not a readable safetensors file ({_one_line(exc)})") from exc


def _parse_meta(path: Path, raw: str | None) -> dict:
    if raw is None:
        raise ModelError(f"model {path} has no ctdn metadata: not a model written by ctdn")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than json parses
        raise ModelError(f"model {path}: its ctdn metadata is not valid JSON ({_one_line(exc)})") from exc
    if not isinstance(meta, dict):
        raise ModelError(
            f"model {path}: its ctdn metadata is a JSON {_json_kind(meta)}, not an object of model fields; "
            "not a model written by ctdn"
        )
    return meta


# Fields save_model writes, with their JSON types; unknown fields are the caller's provenance, kept as is.
_REQUIRED = {"format": str, "kind": str, "config": dict, "hu_window": list, "ctdn_version": str}
_OPTIONAL = {"name": str, "doses_seen": list, "stages": list}


def _check_fields(path: Path, meta: dict) -> None:
    if meta.get("format") != FORMAT:
        found = f"format {meta['format']!r}" if "format" in meta else "no format field"
        raise ModelError(f"model {path} has {found}; this ctdn reads {FORMAT!r}")
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in meta:
            if key in _REQUIRED:
                raise ModelError(f"model {path}: its ctdn metadata has no {key!r} field")
        elif not isinstance(meta[key], kind):
            raise ModelError(
                f"model {path}: metadata field {key!r} must be a JSON {_json_kind(kind())}, "
                f"got {_json_kind(meta[key])} {_short(meta[key])}"
            )
    try:
        check_hu_window(meta["hu_window"])
    except InputError as exc:
        raise ModelError(f"model {path}: {exc}") from exc
    doses = meta.get("doses_seen", [])
    if not all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in doses):
        raise ModelError(
            f"model {path}: metadata field 'doses_seen' must be a list of numbers, got {_short(doses)}"
        )


def _json_kind(v) -> str:
    kinds = ((bool, "boolean"), (dict, "object"), (list, "array"), (str, "string"), ((int, float), "number"))
    return next((name for t, name in kinds if isinstance(v, t)), "null")


def _short(v, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_model(name_or_path="edge", *, device="cpu", expect: ModelConfig | None = None) -> CTDenoiser:
    """A model in eval mode from a shipped name or a .safetensors path, with ``config`` and ``meta`` set.

    The file's metadata and weights are checked before use (known fields of the right types, a sane
    HU window, finite weights): a bad file raises :class:`ctdn.errors.ModelError` naming it.
    ``expect``: refuse (with the differing fields named) a checkpoint whose config differs.
    """
    path = model_path(name_or_path)
    meta = read_meta(path)
    try:
        cfg = ModelConfig.from_dict(meta["config"])
    except (TypeError, CTDNError) as exc:
        raise ModelError(f"model {path}: bad model config in its metadata ({_one_line(exc)})") from exc
    if list(cfg.hu_window) != list(meta["hu_window"]):
        raise ModelError(
            f"model {path}: HU window {meta['hu_window']} disagrees with its config {cfg.hu_window}"
        )
    if expect is not None and cfg != expect:
        diff = {k: (v, getattr(cfg, k)) for k, v in expect.to_dict().items() if cfg.to_dict()[k] != v}
        raise ModelError(
            f"model {path} is a different model than expected: "
            + ", ".join(f"{k} expected {a}, found {b}" for k, (a, b) in diff.items())
        )
    model = CTDenoiser(cfg)
    try:
        tensors = _safetensors().load_file(str(path))
    except Exception as exc:  # a header that reads but a body that does not
        raise ModelError(f"model {path}: its weights cannot be read ({_one_line(exc)})") from exc
    _check_tensors(path, model.state_dict(), tensors)
    model.load_state_dict(tensors)
    _check_finite(path, model)
    model.meta = meta
    return model.to(device).eval()


def _check_tensors(path: Path, expected: dict, found: dict) -> None:
    missing, unexpected = _compare(expected, found)
    if missing or unexpected:
        raise ModelError(
            f"model {path}: weights do not match its config ({len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    for k, t in found.items():
        if expected[k].is_floating_point() and not t.is_floating_point():
            raise ModelError(f"model {path}: weight {k!r} is {t.dtype}, not a floating-point tensor")


def _check_finite(path: Path, model: CTDenoiser) -> None:
    """Every weight finite as loaded (a float64 value past float32's range arrives as inf)."""
    for k, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            raise ModelError(
                f"model {path}: weight {k!r} has {nan} NaN and {inf} infinite values (of {t.numel()}); "
                "the file is corrupt or its training diverged"
            )


def _compare(expected: dict, found: dict) -> tuple[list[str], list[str]]:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    missing += [k for k in expected if k in found and tuple(expected[k].shape) != tuple(found[k].shape)]
    return missing, unexpected
