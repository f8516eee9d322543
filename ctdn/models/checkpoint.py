"""Model checkpoints: safetensors weights with the config and provenance as JSON metadata.

A checkpoint ``name.safetensors`` carries its metadata inside the file (``__metadata__["ctdn"]``,
authoritative) and, for people and tools, the same JSON beside it as ``name.json``. No pickles.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from .._atomic import atomic_path
from .._version import __version__
from ..errors import CTDNError, InputError, InputTypeError
from .config import ModelConfig
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
    """A shipped model's file from its name (``"edge"``), or the given path."""
    p = Path(name_or_path)
    if p.suffix == ".safetensors" or p.parent != Path("."):
        return p
    shipped = WEIGHTS_DIR / f"{name_or_path}.safetensors"
    if not shipped.exists():
        names = sorted(f.stem for f in WEIGHTS_DIR.glob("*.safetensors"))
        raise InputError(
            f"no shipped model named {name_or_path!r} (shipped: {', '.join(names) or 'none'}); "
            "pass a .safetensors path, e.g. one written by ctdn-train"
        )
    return shipped


def read_meta(path) -> dict:
    """The metadata of a checkpoint, checked to be a ctdn student model."""
    meta = read_any_meta(path)
    if meta.get("kind") != "student":
        raise InputError(
            f"{path} holds a {meta.get('kind')!r} model, not a denoiser; use the student checkpoint "
            "that ctdn-train writes at the end of stage 2"
        )
    return meta


def read_any_meta(path) -> dict:
    """The metadata of a ctdn checkpoint of any kind (student or teacher)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("ctdn")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise InputError(f"{path} is not a readable safetensors file ({exc})") from exc
    if raw is None:
        raise InputError(f"{path} has no ctdn metadata: not a model written by ctdn")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: its ctdn metadata is not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is in format {meta.get('format')!r}; this ctdn reads {FORMAT!r}")
    return meta


def load_model(name_or_path="edge", *, device="cpu", expect: ModelConfig | None = None) -> CTDenoiser:
    """A model in eval mode from a shipped name or a .safetensors path, with ``config`` and ``meta`` set.

    ``expect``: refuse (with the differing fields named) a checkpoint whose config differs.
    """
    if isinstance(name_or_path, nn.Module):
        raise InputTypeError("load_model takes a name or a path; a module can be passed to ctdn.Denoiser")
    path = model_path(name_or_path)
    meta = read_meta(path)
    try:
        cfg = ModelConfig.from_dict(meta["config"])
    except (KeyError, TypeError, CTDNError) as exc:
        raise InputError(f"{path}: bad model config in its metadata ({exc})") from exc
    if list(cfg.hu_window) != list(meta.get("hu_window", cfg.hu_window)):
        raise InputError(
            f"{path}: HU window {meta.get('hu_window')} disagrees with its config {cfg.hu_window}"
        )
    if expect is not None and cfg != expect:
        diff = {k: (v, getattr(cfg, k)) for k, v in expect.to_dict().items() if cfg.to_dict()[k] != v}
        raise InputError(
            f"{path} is a different model than expected: "
            + ", ".join(f"{k} expected {a}, found {b}" for k, (a, b) in diff.items())
        )
    model = CTDenoiser(cfg)
    tensors = _safetensors().load_file(str(path))
    missing, unexpected = _compare(model.state_dict(), tensors)
    if missing or unexpected:
        raise InputError(
            f"{path}: weights do not match its config ({len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    model.load_state_dict(tensors)
    model.meta = meta
    return model.to(device).eval()


def _compare(expected: dict, found: dict) -> tuple[list[str], list[str]]:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    missing += [k for k in expected if k in found and tuple(expected[k].shape) != tuple(found[k].shape)]
    return missing, unexpected
