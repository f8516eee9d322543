"""The OpenVINO backend: the exported ONNX graph compiled by OpenVINO's runtime for the CPU."""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from ..errors import InputError
from .onnxruntime import export_bytes

NAME = "openvino"
# fp32 on the 2-core CPUs (benchmarks/test_bench_denoise.py), edge per slice: AMD EPYC openvino 75 ms,
# torch 50, onnxruntime 54-63; Xeon 64 / 45 / 71. Below torch for auto (docs/deployment.md).
PRIORITY = {"cpu": 8}
# bf16 (AVX512-BF16 or AMX): edge 57-78 ms on AMD EPYC (34 on the Xeon), up to ~3 HU from fp32: opt-in.
PRECISIONS = ("fp32", "bf16")


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

        precision = precision or "fp32"
        if precision not in PRECISIONS:
            raise InputError(f"the openvino backend runs {' or '.join(PRECISIONS)}, got {precision!r}")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise InputError("bf16 needs a CPU with bf16 instructions (AVX512-BF16 or AMX); use fp32")
        net = core.read_model(export_bytes(model))
        # The hint is always explicit: on CPUs with AMX/AVX512-BF16 OpenVINO's default is bf16, which
        # moves `edge` outputs by up to ~2 HU; ctdn runs fp32 unless bf16 is asked for.
        config = {
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
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
