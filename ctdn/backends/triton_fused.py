"""The triton backend: the model with its NAFBlocks fused by ``ctdn.kernels`` (Triton), on a CUDA GPU.

The reference NAFBlocks of a loaded model are swapped for the fused ones (same weights, no
retraining, :func:`ctdn.kernels.fuse`); the rest of the network (strided and transposed convs, the
dose MLP) stays torch. fp16 by default, bf16 and fp32 too; LayerNorm statistics and the dose path
are fp32 whatever the precision.

Batch-1 latency on a GPU is mostly kernel launches (a block is three kernels, five for blocks over
128 channels, and two small ones for the dose FiLM and the attention; the network a few dozen
launches), so each input shape
(N, H, W) is captured once as a CUDA graph and replayed: after a warm-up that also runs Triton's
autotuner (which cannot run inside a capture), a call copies the slices into the graph's input
buffer, replays, and copies the output out. At most ``MAX_GRAPHS`` shapes are kept;
``CTDN_CUDA_GRAPHS=0`` runs eagerly instead.

On the CPU it runs only under ``TRITON_INTERPRET=1`` (Triton's interpreter: exact but very slow), so
the backend's own code can be tested without a GPU. Ranked below torch for ``auto``: the H200
measurements so far (docs/kernels.md) favour it for ``edge`` but not yet for ``paper``, and it runs
fp16 by default.
"""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict

import numpy as np
import torch

from ..errors import InputError

NAME = "triton"
PRIORITY = {"cuda": 9}  # below torch (10): fp16 by default, see docs/kernels.md ("The triton backend")
PRECISIONS = ("fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MAX_GRAPHS = 8


def unavailable(device: torch.device) -> str | None:
    from .. import kernels

    why = kernels.unavailable()
    if why is not None:
        return why
    if device.type == "cuda":
        return None if torch.cuda.is_available() else "CUDA is not available to this torch build"
    if device.type == "cpu":
        if kernels.interpreting():
            return None
        return "the fused Triton kernels run on CUDA GPUs (on the CPU only with TRITON_INTERPRET=1: tests)"
    return f"device type {device.type!r} is not supported"


class _Graph:
    """One captured forward: static input buffers, the graph, and its output buffer."""

    def __init__(self, model, shape, dtype, device) -> None:
        self.x = torch.zeros(shape, dtype=dtype, device=device)
        self.dose = torch.full((shape[0],), 0.5, dtype=torch.float32, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up: autotuning and lazy init, outside the capture
            for _ in range(2):
                model(self.x, self.dose)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.y = model(self.x, self.dose)

    def __call__(self, x: torch.Tensor, dose: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x)
        self.dose.copy_(dose)
        self.graph.replay()
        return self.y


class Runner:
    """The fused model in ``precision`` (default fp16 on CUDA, fp32 under the CPU interpreter);
    ``path`` forces one of ``ctdn.kernels.PATHS`` on every block (benchmarks compare them)."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        precision: str | None = None,
        path: str | None = None,
    ) -> None:
        from .. import kernels

        precision = precision or ("fp16" if device.type == "cuda" else "fp32")
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device, self.precision, self.dtype = device, precision, DTYPES[precision]
        # A private copy first: fuse() shares parameters, and casting them must not touch the caller's.
        net = copy.deepcopy(model).eval().requires_grad_(False)
        net = kernels.fuse(net, path=path).to(device=device, dtype=self.dtype)  # path: None, per block
        if getattr(net, "dose_embed", None) is not None:
            net.dose_embed.float()  # the dose MLP sees fp32 (1/sqrt(dose) of a few thousand at most)
        self.model = net
        self.use_graphs = device.type == "cuda" and os.environ.get("CTDN_CUDA_GRAPHS", "1") != "0"
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._lock = threading.Lock()  # the graphs' static buffers are shared state

    def _graph(self, shape: tuple) -> _Graph:
        g = self._graphs.get(shape)
        if g is None:
            g = _Graph(self.model, shape, self.dtype, self.device)
            if len(self._graphs) >= MAX_GRAPHS:
                self._graphs.popitem(last=False)
            self._graphs[shape] = g
        else:
            self._graphs.move_to_end(shape)
        return g

    def __call__(self, x: np.ndarray, dose: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device, self.dtype, non_blocking=True)
            dt = torch.from_numpy(dose).to(self.device, torch.float32)
            if not self.use_graphs:
                return self.model(xt, dt).float().cpu().numpy()
            with self._lock:
                return self._graph(tuple(xt.shape))(xt, dt).float().cpu().numpy()
