"""Export a ctdn model for deployment: ONNX (ONNX Runtime, OpenVINO, TensorRT) and AOTInductor packages.

The exported network is the backend contract of :mod:`ctdn.backends`: input ``x`` float32
(N, 1, H, W) in the model's unit space [-1, 1] (the HU window mapped), input ``dose`` float32 (N,)
in (0, 1], output ``y`` like ``x``; H and W multiples of ``model.config.multiple``. The HU window is
*not* folded into the graph: HU -> unit and back, padding and the pass-through of values outside the
window belong to the runtime (``ctdn.Denoiser`` in Python, a CUDA kernel in the C++ runtime), so one
graph serves int16 and float32 scanners and a window change never needs a re-export.

Every deployed file carries who it is: ONNX files in their ``metadata_props``, engines and packages
in a JSON sidecar (:mod:`ctdn.deploy.sidecar`), both keyed by :func:`fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from ._atomic import atomic_path
from ._version import __version__
from .errors import InputError, InputTypeError, MissingDependencyError
from .models import CTDenoiser, load_model

__all__ = ["fingerprint", "to_onnx", "to_aoti", "onnx_meta", "engine_dir", "engine_path", "device_slug"]

ONNX_FORMAT = "ctdn-onnx/1"
IO = {"x": "x", "dose": "dose", "y": "y"}
MIN_OPSET = 17  # LayerNormalization entered the standard opset in 17


def _model(model) -> CTDenoiser:
    if isinstance(model, CTDenoiser):
        return model
    if isinstance(model, torch.nn.Module):
        raise InputTypeError(f"model must be a ctdn CTDenoiser, a name or a path, got {type(model).__name__}")
    return load_model(model)


def model_name(model: CTDenoiser) -> str:
    """The model's name from its checkpoint metadata ("custom" for a module built in code)."""
    return str(getattr(model, "meta", {}).get("name", "custom"))


def fingerprint(model) -> str:
    """16 hex digits identifying a model: sha256 of its config and weights (not of a file's bytes)."""
    model = _model(model)
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _example(model: CTDenoiser, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    # Batch 2, not 1: a traced batch of 1 could bake a broadcast of the dose into the graph.
    m = model.config.multiple
    side = max(4 * m, 32)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, side, side, generator=g) * 2 - 1
    return x, torch.linspace(0.1, 0.7, batch)


def to_onnx(model, path, *, opset: int = MIN_OPSET, check: bool = True) -> Path:
    """Write ``model`` (a CTDenoiser, shipped name or checkpoint path) as ONNX with dynamic N, H, W.

    ``check``: run ``onnx.checker`` and compare with torch through ONNX Runtime on two shapes
    (raises :class:`ctdn.errors.InputError` above 1e-4 in unit space, i.e. 0.1 HU).
    """
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("ONNX export needs onnx: pip install 'ctdn[onnx]'") from exc
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise InputError(f"opset must be >= {MIN_OPSET} (LayerNormalization), got {opset!r}")
    net = _model(model)
    # Exported from a CPU fp32 copy: the caller's module is never moved or changed.
    export = CTDenoiser(net.config)
    export.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in net.state_dict().items()})
    export.eval().requires_grad_(False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"x": {0: "n", 2: "h", 3: "w"}, "dose": {0: "n"}, "y": {0: "n", 2: "h", 3: "w"}}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The TorchScript exporter: one graph for any N/H/W from a trace, no onnxscript dependency;
        # the model has no data-dependent control flow, so the trace is the whole model.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            export,
            _example(export),
            str(tmp),
            input_names=["x", "dose"],
            output_names=["y"],
            opset_version=opset,
            dynamic_axes=axes,
            do_constant_folding=True,
            dynamo=False,
        )
        proto = onnx.load(str(tmp))
        meta = {
            "ctdn.format": ONNX_FORMAT,
            "ctdn.model": model_name(net),
            "ctdn.fingerprint": fingerprint(export),
            "ctdn.config": json.dumps(net.config.to_dict(), sort_keys=True),
            "ctdn.hu_window": json.dumps(list(map(float, net.config.hu_window))),
            "ctdn.multiple": str(net.config.multiple),
            "ctdn.version": __version__,
        }
        onnx.helper.set_model_props(proto, meta)
        proto.producer_name, proto.producer_version = "ctdn", __version__
        onnx.save(proto, str(tmp))
        if check:
            onnx.checker.check_model(str(tmp), full_check=True)
            _compare(export, tmp)
    return path


def _compare(model: CTDenoiser, path: Path, tol: float = 1e-4) -> float:
    """Max |ONNX Runtime - torch| on two shapes; raises above ``tol``. Skipped without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return float("nan")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    m = model.config.multiple
    err = 0.0
    for n, h, w in ((1, 4 * m, 6 * m), (3, 5 * m, 3 * m)):
        x = torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(n)) * 2 - 1
        d = torch.linspace(0.1, 1.0, n)
        with torch.inference_mode():
            ref = model(x, d).numpy()
        got = sess.run(None, {"x": x.numpy(), "dose": d.numpy()})[0]
        err = max(err, float(abs(got - ref).max()))
    if not err <= tol:
        raise InputError(f"the exported ONNX graph differs from torch by {err:.3g} (> {tol}) in unit space")
    return err


def onnx_meta(path) -> dict:
    """The ctdn metadata of an exported ONNX file (config and hu_window decoded)."""
    import onnx

    if not Path(path).is_file():
        raise InputError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends for damaged files
        raise InputError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("ctdn.format") != ONNX_FORMAT:
        raise InputError(f"{path} is not an ONNX file exported by ctdn (no {ONNX_FORMAT} metadata)")
    try:
        return {
            "name": meta["ctdn.model"],
            "fingerprint": meta["ctdn.fingerprint"],
            "config": json.loads(meta["ctdn.config"]),
            "hu_window": json.loads(meta["ctdn.hu_window"]),
            "multiple": int(meta["ctdn.multiple"]),
            "version": meta["ctdn.version"],
            "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0),
        }
    except (KeyError, ValueError) as exc:
        what = f"{type(exc).__name__}: {exc}"
        raise InputError(f"{path}: its ctdn metadata is incomplete or damaged ({what})") from exc


def engine_dir() -> Path:
    """Where built engines and packages are kept: $CTDN_ENGINE_DIR or ~/.cache/ctdn/engines."""
    env = os.environ.get("CTDN_ENGINE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ctdn" / "engines"


def device_slug(device="cpu") -> str:
    """``cpu``, or ``sm90-nvidia-h100-80gb-hbm3`` for a GPU (see :func:`ctdn.deploy.sidecar.device_slug`)."""
    from .deploy.sidecar import device_slug as slug

    return slug(device)


def engine_path(name: str, fp: str, kind: str, slug: str, precision: str) -> Path:
    """``<engine_dir>/<name>-<fingerprint>-<kind>-<device slug>-<precision>.<engine|pt2>``."""
    ext = {"tensorrt": "engine", "aoti": "pt2"}.get(kind)
    if ext is None:
        raise InputError(f"engine kind must be tensorrt or aoti, got {kind!r}")
    return engine_dir() / f"{name}-{fp}-{kind}-{slug}-{precision}.{ext}"


def to_aoti(model, path, *, device="cpu", max_batch: int = 16, max_size: int = 1024) -> Path:
    """Compile ``model`` to an AOTInductor package (``.pt2``) for ``device`` and write its sidecar.

    Dynamic batch 1..``max_batch`` and H, W = multiple * k up to ``max_size``. A package runs only on
    the device type and the torch version that compiled it (the sidecar says which; loaders check).
    """
    from .deploy.sidecar import write_sidecar  # the sidecar format lives with the other deploy code

    net = _model(model)
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"AOTInductor packages are built for cpu or cuda, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("an AOTInductor package for cuda must be compiled on a machine with a CUDA GPU")
    if not (isinstance(max_batch, int) and max_batch >= 1):
        raise InputError(f"max_batch must be a positive integer, got {max_batch!r}")
    m = net.config.multiple
    if not (isinstance(max_size, int) and max_size >= m):
        raise InputError(f"max_size must be an integer >= the model's multiple ({m}), got {max_size!r}")
    export = CTDenoiser(net.config)
    export.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in net.state_dict().items()})
    export.to(dev).eval().requires_grad_(False)
    x, d = (t.to(dev) for t in _example(export))
    n = torch.export.Dim("n", min=1, max=max(max_batch, 2))
    hk = torch.export.Dim("hk", min=1, max=max_size // m)
    wk = torch.export.Dim("wk", min=1, max=max_size // m)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad():
        ep = torch.export.export(export, (x, d), dynamic_shapes=({0: n, 2: m * hk, 3: m * wk}, {0: n}))
    with atomic_path(path) as tmp:
        torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp))
    size = max(max_size // m * m, m)
    write_sidecar(
        path,
        kind="aoti",
        model=export,
        name=model_name(net),
        shapes={"batch": [1, 1, max_batch], "height": [m, size, size], "width": [m, size, size]},
        precision="fp32",
        device=dev,
        rebuild=f"python -c \"import ctdn.export as e; e.to_aoti('{model_name(net)}', '{path}', "
        f"device='{dev.type}')\"",
    )
    return path
