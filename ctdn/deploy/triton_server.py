"""A model repository for NVIDIA Triton Inference Server: one GPU server denoising for many scanners.

:func:`write_repository` lays out ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.plan``
(a TensorRT engine, platform ``tensorrt_plan``, with its sidecar beside it) or ``1/model.onnx``
(platform ``onnxruntime_onnx``). The configuration follows Triton's model configuration guide
(docs/user_guide/model_configuration.md): ``max_batch_size > 0`` so Triton owns the batch axis and
its dynamic batcher groups slices from concurrent requests (``preferred_batch_size``,
``max_queue_delay_microseconds``); each input and output declares its shape *without* the batch
axis: ``x`` and ``y`` are ``[1, H, W]`` (``-1`` where the engine's profile lets a size vary), and the
per-slice scalar ``dose``, whose model shape is just ``[batch]``, is declared ``dims: [ 1 ]`` with
``reshape: { shape: [ ] }`` (the guide's rule: every input needs a non-empty ``dims``).

Clients send ``x`` in the model's unit space (the HU window mapped to [-1, 1], padded to the
model's multiple) and get ``y`` the same way, as with any ctdn backend; the HU arithmetic is in
:mod:`ctdn.inference` (or the C++ runtime) on the client side.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .._version import __version__
from ..errors import InputError

__all__ = ["config_text", "write_repository", "PLATFORMS"]

PLATFORMS = {".engine": "tensorrt_plan", ".plan": "tensorrt_plan", ".onnx": "onnxruntime_onnx"}
_FILES = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _dims(lo: int, hi: int) -> int:
    return lo if lo == hi else -1


def config_text(
    name: str,
    platform: str,
    *,
    max_batch_size: int = 16,
    height: tuple[int, int] = (-1, -1),
    width: tuple[int, int] = (-1, -1),
    preferred_batch_sizes: tuple[int, ...] = (4, 16),
    max_queue_delay_us: int = 1000,
    instance_kind: str = "gpu",
    instances: int = 1,
    comment: str = "",
) -> str:
    """The ``config.pbtxt`` text. ``height``/``width``: (min, max) the model accepts (-1: any)."""
    if platform not in _FILES:
        raise InputError(f"platform must be one of {', '.join(_FILES)}, got {platform!r}")
    if not _NAME.match(name or ""):
        raise InputError(f"a Triton model name is letters, digits, '_', '.', '-'; got {name!r}")
    for label, v in (("max_batch_size", max_batch_size), ("instances", instances)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"{label} must be a positive integer, got {v!r}")
    if not isinstance(max_queue_delay_us, int) or max_queue_delay_us < 0:
        raise InputError(f"max_queue_delay_us must be a non-negative integer, got {max_queue_delay_us!r}")
    prefs = sorted({int(b) for b in preferred_batch_sizes})
    if not prefs or any(b < 1 or b > max_batch_size for b in prefs):
        raise InputError(
            f"preferred batch sizes must be in 1..{max_batch_size}, got {list(preferred_batch_sizes)}"
        )
    kind = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}.get(instance_kind)
    if kind is None:
        raise InputError(f"instance_kind must be gpu or cpu, got {instance_kind!r}")
    h, w = _dims(*height), _dims(*width)
    image = f"[ 1, {h}, {w} ]"
    lines = [f"# {line}" for line in comment.splitlines()] if comment else []
    lines += [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        "  {",
        '    name: "x"',
        "    data_type: TYPE_FP32",
        f"    dims: {image}",
        "  },",
        "  {",
        '    name: "dose"',
        "    data_type: TYPE_FP32",
        "    dims: [ 1 ]",
        "    reshape: { shape: [ ] }",
        "  }",
        "]",
        "output [",
        "  {",
        '    name: "y"',
        "    data_type: TYPE_FP32",
        f"    dims: {image}",
        "  }",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(map(str, prefs))} ]",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {instances}",
        f"    kind: {kind}",
        "  }",
        "]",
    ]
    return "\n".join(lines) + "\n"


def write_repository(
    repo,
    model_file,
    *,
    name: str | None = None,
    max_batch_size: int | None = None,
    preferred_batch_sizes: tuple[int, ...] | None = None,
    max_queue_delay_us: int = 1000,
    instance_kind: str = "gpu",
    instances: int = 1,
    version: int = 1,
    overwrite: bool = False,
) -> Path:
    """Put ``model_file`` (a ``.engine`` with its sidecar, or a ctdn ``.onnx``) into the Triton repository
    ``repo`` as model ``name`` (default: the ctdn model's name), version ``version``; returns the
    model's folder. A TensorRT engine's batch and size limits come from its sidecar's profile."""
    from .sidecar import read_sidecar, sidecar_path

    model_file = Path(model_file)
    platform = PLATFORMS.get(model_file.suffix)
    if platform is None:
        raise InputError(f"{model_file.name}: Triton repositories take a .engine/.plan or an .onnx file")
    if not model_file.is_file():
        raise InputError(f"{model_file} not found")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"version must be a positive integer, got {version!r}")
    if platform == "tensorrt_plan":
        sc = read_sidecar(model_file)
        info, hu = sc["model"], sc["hu_window"]
        b_lo, b_opt, b_max = sc["shapes"]["batch"]
        h_lo, _, h_hi = sc["shapes"]["height"]
        w_lo, _, w_hi = sc["shapes"]["width"]
        if b_lo != 1:
            raise InputError(
                f"{model_file.name} has batch profile {b_lo}..{b_max}; Triton sends batches from 1 up, "
                "so rebuild it with --batch 1:OPT:MAX"
            )
        mbs = max_batch_size or b_max
        if mbs > b_max:
            raise InputError(f"max_batch_size {mbs} exceeds the engine's profile maximum {b_max}")
        prefs = preferred_batch_sizes or tuple(b for b in (b_opt, mbs) if b <= mbs)
        height, width = (h_lo, h_hi), (w_lo, w_hi)
        notes = [
            f"ctdn {info['name']} (fingerprint {info['fingerprint']}), "
            f"TensorRT {sc['versions'].get('tensorrt')} "
            f"{sc['precision']} engine for {sc['device'].get('name')} (compute capability "
            f"{sc['device'].get('compute_capability')}); rebuild: {sc['rebuild']}",
        ]
        if sc["compatibility"].get("version_compatible"):
            notes.append(
                "version-compatible engine: start tritonserver with "
                "--backend-config=tensorrt,version-compatible=true"
            )
    else:
        from ..export import onnx_meta

        info = onnx_meta(model_file)
        hu = info["hu_window"]
        mbs = max_batch_size or 16
        prefs = preferred_batch_sizes or tuple(b for b in (4, mbs) if b <= mbs)
        height = width = (-1, -1)
        notes = [
            f"ctdn {info['name']} (fingerprint {info['fingerprint']}), ONNX export; "
            f"H, W multiples of {info['multiple']}"
        ]
    notes.append(
        f"written by ctdn {__version__}; x, y: (N, 1, H, W) float32 in the HU window {hu} "
        "mapped to [-1, 1]; dose: fraction of full dose per slice"
    )
    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "_", str(info["name"]))
    text = config_text(
        name,
        platform,
        max_batch_size=mbs,
        height=height,
        width=width,
        preferred_batch_sizes=prefs,
        max_queue_delay_us=max_queue_delay_us,
        instance_kind=instance_kind,
        instances=instances,
        comment="\n".join(notes),
    )
    model_dir = Path(repo) / name
    vdir = model_dir / str(version)
    if vdir.exists() and not overwrite:
        raise InputError(f"{vdir} already exists; pass overwrite=True (--overwrite) or another version")
    vdir.mkdir(parents=True, exist_ok=True)
    target = vdir / _FILES[platform]
    shutil.copyfile(model_file, target)
    if platform == "tensorrt_plan":
        shutil.copyfile(sidecar_path(model_file), sidecar_path(target))
    (model_dir / "config.pbtxt").write_text(text)
    return model_dir
