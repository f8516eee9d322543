"""The fused NAFBlock against eager torch and torch.compile: per block and for the whole model.

Groups:

- ``nafblock-<preset>``: one NAFBlock (with its dose FiLM) of each level of the preset that has
  NAFBlocks, at the size that level sees for a 512x512 slice, batch 1 and 16. On a GPU a round is
  ``GRAPH_REPS`` calls replayed from one CUDA graph, every variant alike, and ``extra_info``'s
  ``us_per_call`` is one call: the kernels' time, not Python's and the launches'. Variants: ``eager``,
  ``compile`` (inductor, default mode), ``compile-max-autotune``, and the Triton kernels on each of
  their paths, ``fused-3pass``, ``fused-5pass`` (path "split") and, from 128 channels,
  ``fused-7pass`` (path "split-ln": each LayerNorm its own pass) (kernels/nafblock.py);
  ``extra_info``'s ``chosen`` says which one ``path_for`` picks (what ``fuse`` and the triton
  backend run), so one run shows whether the crossover ``FUSED_MAX_C`` is in the right place.
  ``extra_info`` has the bytes the block must move at least (read x, write y) and the path's actual
  traffic (9, 14 or 18 C values per pixel) and, on a GPU, the achieved bandwidth in GB/s and the
  peak it is compared with (a measured device-to-device copy).
- ``model-512``: the whole network (no HU conversion, no host copies), presets ``edge`` and
  ``paper``, batch 1, 16 and 32, slices/s in ``extra_info``, each variant as it would be deployed:
  ``fused`` is the triton backend's model replayed as a CUDA graph (``fused-split-ln``: the same with
  every block on path "split-ln", ``paper`` only), ``compile-graphs`` is torch.compile's own CUDA
  graphs (mode ``reduce-overhead``), the fair rival at batch 1.

fp16 on a GPU; on the CPU only ``eager`` and ``compile`` in fp32 run (the fused kernels need CUDA;
Triton's CPU interpreter is for correctness, not speed). Run:

    python -m pytest benchmarks/test_bench_kernels.py --benchmark-only --benchmark-json=OUT.json

With ``--benchmark-disable`` (or under pytest-xdist) each case runs its warm-up calls and one more,
untimed: ``benchmarks/gpu_kernels.sh`` does that first on many workers so that torch.compile's and
Triton's on-disk caches are filled before the timed, serial run.
"""

from __future__ import annotations

import functools

import pytest
import torch

from ctdn import kernels
from ctdn.models import build
from ctdn.models.nafnet import CondBlock

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.float16 if CUDA else torch.float32
VARIANTS = ["eager", "compile", "compile-graphs", "compile-max-autotune", "fused", "fused-split-ln"]
BLOCK_VARIANTS = ["eager", "compile", "compile-max-autotune", "fused-3pass", "fused-5pass", "fused-7pass"]
PATHS = {"fused-3pass": "fused", "fused-5pass": "split", "fused-7pass": "split-ln"}
# "split-ln" (each LayerNorm its own pass) is an alternative to "split" for wide blocks: timed where
# "split" is a candidate, and for the model whose blocks are all that wide (paper: C = 256).
WIDE = 128
GRAPH_REPS = 10  # block calls per timed round on a GPU, replayed from one CUDA graph


def _skip_variant(variant: str) -> None:
    if variant.startswith("fused"):
        why = kernels.unavailable()
        if why is not None:
            pytest.skip(why)
        if not CUDA:
            pytest.skip("the fused kernels are benchmarked on CUDA only (no CUDA device here)")
    if variant in ("compile-max-autotune", "compile-graphs") and not CUDA:
        pytest.skip(f"{variant} is for GPUs; no CUDA device here")


@functools.cache
def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in GB/s (read + write), the practical peak to compare with."""
    if not CUDA:
        return float("nan")
    a = torch.empty(256 * 2**20, dtype=torch.uint8, device=DEVICE)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(20):
        b.copy_(a)
    end.record()
    torch.cuda.synchronize()
    return 2 * a.numel() * 20 / (start.elapsed_time(end) / 1e3) / 1e9


def _timed(fn):
    """``fn`` followed by a device synchronisation, so the benchmark times the GPU work."""
    if not CUDA:
        return fn

    def run(*a):
        out = fn(*a)
        torch.cuda.synchronize()
        return out

    return run


def _variant(module: torch.nn.Module, variant: str, graphed: bool = False):
    if variant == "eager":
        return module
    if variant == "compile":
        return torch.compile(module)
    if variant == "compile-max-autotune":
        # A block is timed from a CUDA graph of ten calls (_graphed), and "max-autotune" captures its
        # own graphs, which cannot nest (on the H200 the capture failed): the graph-free mode there.
        return torch.compile(module, mode="max-autotune-no-cudagraphs" if graphed else "max-autotune")
    if variant == "compile-graphs":
        return torch.compile(module, mode="reduce-overhead")
    return kernels.fuse(module, path=PATHS.get(variant))


def _graphed(fn, args, reps: int):
    """One CUDA graph of ``reps`` calls of ``fn(*args)``; the returned callable replays it and waits.

    On an H200 every variant of a batch-1 block took 300-400 us a call, Python and launches, while its
    kernels ran for 10-100 us: timed call by call, the blocks compare host overheads. A graph times the
    kernels, which is how the triton backend runs them.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # compile and autotune before the capture, as capture needs
        for _ in range(3):
            fn(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn(*args)

    def replay():
        graph.replay()
        torch.cuda.synchronize()

    return replay


def _levels(preset: str):
    """(level, channels, size for a 512x512 slice) of each level with NAFBlocks."""
    return [(lv, c, side) for lv, c, side, _ in build(preset).config.block_levels(512)]


def _block_cases():
    for preset in ("edge", "paper"):
        for lv, c, size in _levels(preset):
            yield pytest.param(preset, c, size, id=f"{preset}-L{lv}-c{c}-{size}px")


@pytest.mark.parametrize("variant", BLOCK_VARIANTS)
@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize(("preset", "c", "size"), list(_block_cases()))
def test_nafblock(benchmark, preset, c, size, batch, variant):
    _skip_variant(variant)
    if variant == "fused-7pass" and c < WIDE:
        pytest.skip(f"split-ln is an alternative for blocks of {WIDE} channels or more")
    if not CUDA and batch > 1:
        pytest.skip("batch 16 on the CPU: minutes per round; batch 1 shows the same ratio")
    benchmark.group = f"nafblock-{preset}"
    torch.manual_seed(0)
    block = CondBlock(c, 64).eval().requires_grad_(False)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.1)
    block = block.to(DEVICE, DTYPE)  # pure fp16 on a GPU, FiLM included (eager torch needs one dtype)
    fn = _variant(block, variant, graphed=CUDA)
    x = torch.randn(batch, c, size, size, device=DEVICE, dtype=DTYPE)
    emb = torch.rand(batch, 64, device=DEVICE, dtype=DTYPE)
    with torch.inference_mode():
        if CUDA:
            calls, run = GRAPH_REPS, _graphed(fn, (x, emb), GRAPH_REPS)
        else:
            for _ in range(3):  # compile outside the timed rounds
                fn(x, emb)
            calls, run = 1, functools.partial(fn, x, emb)
        benchmark(run)
    elt = x.element_size()
    min_bytes = 2 * x.numel() * elt
    chosen = kernels.path_for(c, DTYPE)
    path = PATHS.get(variant, chosen)
    benchmark.extra_info.update(
        variant=variant, channels=c, size=size, batch=batch, dtype=str(DTYPE),
        min_bytes=min_bytes, fused_bytes=kernels.TRAFFIC[path] * x.numel() * elt,
        path=path if variant in PATHS else None, chosen=variant in PATHS and path == chosen,
    )  # fmt: skip
    if benchmark.disabled:
        return
    t = benchmark.stats.stats.mean / calls
    benchmark.extra_info.update(calls_per_round=calls, us_per_call=1e6 * t)
    if CUDA:
        bytes_moved = kernels.TRAFFIC[path] * x.numel() * elt if variant in PATHS else min_bytes
        benchmark.extra_info.update(
            achieved_gbs=bytes_moved / t / 1e9,
            min_bytes_gbs=min_bytes / t / 1e9,
            copy_peak_gbs=copy_bandwidth(),
        )


def _autocast(fn):
    def run(*a):
        with torch.autocast("cuda", dtype=DTYPE):
            return fn(*a)

    return run


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batch", [1, 16, 32])
@pytest.mark.parametrize("preset", ["edge", "paper"])
def test_model(benchmark, preset, batch, variant):
    _skip_variant(variant)
    if variant == "fused-split-ln" and preset != "paper":
        pytest.skip(f"split-ln is for blocks of {WIDE} channels or more: paper's, not {preset}'s")
    if not CUDA and (batch > 1 or variant != "eager"):
        pytest.skip("whole-model CPU latency is benchmarks/test_bench_denoise.py's (batch 1, eager)")
    benchmark.group = "model-512"
    torch.manual_seed(0)
    model = build(preset).eval().requires_grad_(False)
    x = torch.rand(batch, 1, 512, 512, device=DEVICE).mul(2).sub(1)
    dose = torch.full((batch,), 0.25, device=DEVICE)
    if variant.startswith("fused"):
        from ctdn.backends.triton_fused import Runner, _Graph

        path = "split-ln" if variant == "fused-split-ln" else None
        net = Runner(model, DEVICE, "fp16" if CUDA else "fp32", path=path).model
        x = x.to(DTYPE)
        fn = _timed(_Graph(net, tuple(x.shape), DTYPE, DEVICE))  # one CUDA graph, as the backend runs it
    else:
        # What the torch backend runs: fp32 weights under autocast (fp16 convs, fp32 norms and dose MLP).
        fn = _variant(model.to(DEVICE), variant)
        fn = _timed(_autocast(fn) if CUDA else fn)
    with torch.inference_mode():
        for _ in range(3):
            fn(x, dose)
        benchmark(fn, x, dose)
    if benchmark.disabled:
        return
    benchmark.extra_info.update(
        variant=variant, preset=preset, batch=batch, dtype=str(DTYPE),
        slices_per_s=batch / benchmark.stats.stats.mean,
        ms_per_slice=1e3 * benchmark.stats.stats.mean / batch,
    )  # fmt: skip
