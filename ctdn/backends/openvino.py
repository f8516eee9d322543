"""The OpenVINO backend: the exported ONNX graph compiled by OpenVINO's runtime for the CPU."""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from ..errors import InputError
from .onnxruntime import export_bytes

NAME = "openvino"
# Measured against onnxruntime and torch on the 2-core CPU (benchmarks/test_bench_denoise.py).
PRIORITY = {"cpu": 15}


def unavailable(device: torch.device) -> str | None:
    for mod in ("openvino", "onnx"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install 'ctdn[openvino]')"
    if device.type != "cpu":
        return "ctdn runs OpenVINO on the CPU only (its GPU plugin targets Intel GPUs)"
    return None


class Runner:
    """One compiled model; each call makes its own infer request, so threads do not share state."""

    def __init__(self, model, device: torch.device, precision: str | None = None) -> None:
        import openvino as ov

        if (precision or "fp32") != "fp32":
            raise InputError(f"the openvino backend runs fp32 only, got precision {precision!r}")
        core = ov.Core()
        net = core.read_model(export_bytes(model))
        # INFERENCE_PRECISION_HINT f32: on CPUs with AMX/AVX512-BF16 OpenVINO would otherwise run bf16,
        # which moves outputs by ~1 HU; ctdn keeps one fp32 answer across CPU backends.
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = core.compile_model(net, "CPU", config)

    def __call__(self, x: np.ndarray, dose: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        dose = np.ascontiguousarray(dose, dtype=np.float32)
        req = self.compiled.create_infer_request()
        out = req.infer({"x": x, "dose": dose})
        return np.array(out[self.compiled.output("y")], dtype=np.float32, copy=True)
