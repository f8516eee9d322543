"""The ONNX Runtime backend: the model exported to ONNX (:func:`ctdn.export.to_onnx`) on ORT's CPU or
CUDA execution provider.

On the project's 2-core CPUs it is slower than the torch backend, which runs channels_last through
oneDNN (edge per 512x512 slice: 54-63 vs 50 ms on AMD EPYC, 71 vs 45 ms on a Xeon; paper: 726-765
vs 489-509 ms), so ``auto`` ranks it below torch; it is here for machines without torch's fast paths and as
the reference for TensorRT's ONNX input (docs/deployment.md).
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

NAME = "onnxruntime"
PRIORITY = {"cpu": 6, "cuda": 5}


def _missing() -> str | None:
    for mod, pip in (("onnxruntime", "onnxruntime"), ("onnx", "onnx")):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install 'ctdn[onnx]' or {pip})"
    return None


def unavailable(device: torch.device) -> str | None:
    why = _missing()
    if why or device.type == "cpu":
        return why
    if device.type != "cuda":
        return f"device type {device.type!r} is not supported"
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
    return None


def export_bytes(model) -> bytes:
    """The model as ONNX bytes (exported once per Runner; ~0.5 s for `edge`)."""
    from ..export import to_onnx

    with tempfile.TemporaryDirectory(prefix="ctdn-onnx-") as tmp:
        path = to_onnx(model, Path(tmp) / "model.onnx", check=False)
        return path.read_bytes()


class Runner:
    """An ORT InferenceSession on the exported graph; ``session.run`` is thread-safe, so one suffices."""

    def __init__(self, model, device: torch.device, precision: str | None = None) -> None:
        import onnxruntime as ort

        if (precision or "fp32") != "fp32":
            raise InputError(f"the onnxruntime backend runs fp32 only, got precision {precision!r}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's default is one thread per physical core, which is what a scanner console wants; torch's
        # own setting (set_num_threads) is honoured so both backends compare at equal threads.
        opts.intra_op_num_threads = torch.get_num_threads()
        if device.type == "cuda":
            idx = device.index if device.index is not None else torch.cuda.current_device()
            providers = [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(export_bytes(model), sess_options=opts, providers=providers)

    def __call__(self, x: np.ndarray, dose: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        dose = np.ascontiguousarray(dose, dtype=np.float32)
        return self.session.run(["y"], {"x": x, "dose": dose})[0]
