"""Deployment: TensorRT engines with JSON sidecars, their validation, and Triton model repositories.

- :mod:`ctdn.deploy.sidecar` — the ``ctdn-engine/1`` sidecar beside every engine/package and the
  checks that refuse a file built for another GPU, TensorRT or torch.
- :mod:`ctdn.deploy.tensorrt` — :class:`BuildOptions` and :func:`build_engine` (TensorRT 10 Python API);
  ``ctdn-build-engine`` (:mod:`ctdn.deploy.cli`) is its command line.
- :mod:`ctdn.deploy.onnx_precision` — fp16/bf16 ONNX graphs for strongly typed networks (LayerNorm,
  global pooling and the dose MLP kept in fp32).
- :mod:`ctdn.deploy.validate` — a deployed runner against the reference on a phantom at each dose
  (``from ctdn.deploy.validate import validate``: the function is not re-exported here, where it
  would hide the module).
- :mod:`ctdn.deploy.triton_server` — a Triton Inference Server model repository.

Nothing here imports TensorRT, ONNX or ONNX Runtime until a function needs them.
"""

from .sidecar import Environment, check_sidecar, device_slug, probe, read_sidecar, write_sidecar
from .tensorrt import BuildOptions, build_engine
from .triton_server import write_repository

__all__ = [
    "Environment",
    "probe",
    "device_slug",
    "read_sidecar",
    "write_sidecar",
    "check_sidecar",
    "BuildOptions",
    "build_engine",
    "write_repository",
]
