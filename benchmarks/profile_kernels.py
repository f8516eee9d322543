"""Where a fused NAFBlock's time goes on a GPU: each kernel's mean time and its share, per path.

One NAFBlock (with its dose FiLM) of each level of ``edge`` and ``paper`` at the size that level
sees for a 512x512 slice, fp16, batch 16 by default, on each path ("split-ln" from 128 channels,
where it is an alternative to "split"); the CUDA time of every kernel
it launches, from torch.profiler (CUPTI), against eager torch's total for the same block. Run on a
CUDA machine (``benchmarks/gpu_kernels.sh`` does, when time is left):

    python benchmarks/profile_kernels.py [--batch 16] [--reps 20] [--preset edge paper] [--model]

``--model`` first profiles each preset's whole fused model (the triton backend's, fp16, on
``path_for``'s paths) at that batch for one 512x512 slice each: the share of the block kernels
against everything else (the layers outside the NAFBlocks, run by torch). On an H200 a difference
of two runs put about 45 % of ``paper``'s time at batch 16 outside its blocks; this measured 45 %
in one run. Then the same forward by module: each kernel goes to the innermost module whose
``forward`` launched it (a fused block as a whole; the ops in a parent's own ``forward``, such as
the decoder's skip additions, to that parent), so the largest kernels of the rest get a layer name.
"""

from __future__ import annotations

import argparse
import collections
import contextlib

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from ctdn import kernels
from ctdn.models import build
from ctdn.models.nafnet import CondBlock


def _kernel_times(fn, args, reps: int) -> dict[str, float]:
    """Mean CUDA time per call (us) of each GPU kernel ``fn(*args)`` launches."""
    with torch.inference_mode():
        for _ in range(3):  # autotune and compile outside the profile
            fn(*args)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                fn(*args)
            torch.cuda.synchronize()
    times: dict[str, float] = collections.defaultdict(float)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            times[ev.name] += ev.device_time / reps
    if not times:  # a profiler that files kernels elsewhere: show its own table instead
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))
    return dict(times)


LAYER = "ctdn.layer:"  # the prefix of the profiler ranges _layer_ranges opens


@contextlib.contextmanager
def _layer_ranges(model: torch.nn.Module, opaque: tuple[type, ...] = ()):
    """A profiler range around every module's forward (``LAYER`` + its name), hooks removed after.

    Modules of an ``opaque`` type get a range of their own and none for their children.
    """
    hooks, skip = [], set()
    for name, mod in model.named_modules():
        if id(mod) in skip:
            continue
        if isinstance(mod, opaque):
            skip.update(id(m) for m in mod.modules())
        stack = []

        def enter(_mod, _args, label=LAYER + (name or "(model)"), stack=stack):
            stack.append(record_function(label))
            stack[-1].__enter__()

        def leave(_mod, _args, _out, stack=stack):
            stack.pop().__exit__(None, None, None)

        hooks += [mod.register_forward_pre_hook(enter), mod.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def by_layer(events, cost) -> dict[str, float]:
    """``cost(event)`` of every profiler event summed by the innermost ``LAYER`` range around it.

    Events outside every range go to "(outside the model)". ``cost`` is the device time of an
    event's kernels on a GPU (``kernel_cost``); anything per event (CPU self time) for a check.
    """
    out: dict[str, float] = collections.defaultdict(float)
    for ev in events:
        c = cost(ev)
        if not c:
            continue
        p = ev
        while p is not None and not p.name.startswith(LAYER):
            p = p.cpu_parent
        out[p.name[len(LAYER) :] if p is not None else "(outside the model)"] += c
    return dict(out)


def kernel_cost(ev) -> float:
    """Device time (us) of the kernels a CPU event launched itself (not its children's)."""
    return sum(k.duration for k in ev.kernels) if ev.device_type == torch.autograd.DeviceType.CPU else 0.0


def _block_kernel_names() -> tuple[str, ...]:
    from ctdn.kernels import nafblock

    return tuple(k.__name__ for k in nafblock._SPACE)


def _model_breakdown(preset: str, batch: int, reps: int) -> None:
    """Kernel time of one forward of the whole fused model: the block kernels' share, the rest's top."""
    from ctdn.backends.triton_fused import Runner

    torch.manual_seed(0)
    model = build(preset).eval().requires_grad_(False)
    net = Runner(model, torch.device("cuda"), "fp16").model
    x = torch.rand(batch, 1, 512, 512, device="cuda", dtype=torch.float16).mul(2).sub(1)
    dose = torch.full((batch,), 0.25, device="cuda")
    times = _kernel_times(net, (x, dose), reps)
    total = sum(times.values()) or float("nan")
    names = _block_kernel_names()
    ours = {n: t for n, t in times.items() if n.startswith(names)}
    rest = {n: t for n, t in times.items() if n not in ours}
    t_ours, t_rest = sum(ours.values()), sum(rest.values())
    per_slice = total / batch
    print(f"\n{preset} model, batch {batch}: {total:.1f} us of kernels a forward ({per_slice:.1f} a slice)")
    print(f"  NAFBlock kernels  {t_ours:9.1f} us {100 * t_ours / total:5.1f}%")
    print(f"  everything else   {t_rest:9.1f} us {100 * t_rest / total:5.1f}%  (largest:)")
    for name, t in sorted(rest.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {t:9.1f} us {100 * t / total:5.1f}%  {name[:70]}")
    module_table(net, (x, dose), reps, total)


def module_table(net, args, reps: int, total: float, cost=kernel_cost) -> dict[str, float]:
    """Print (and return) ``net(*args)``'s ``cost`` per module outside its fused blocks, per call.

    On a GPU ``cost`` is the device time of the kernels each op launched (``kernel_cost``); the
    tests pass a CPU cost, which this profiles as well.
    """
    from ctdn.kernels.nafblock import FusedNAFBlock

    cuda = torch.cuda.is_available() and next(net.parameters()).is_cuda
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    kinds = dict(net.named_modules())
    with torch.inference_mode(), _layer_ranges(net, (FusedNAFBlock,)):
        net(*args)  # warm: the hooks' first call
        sync()
        with profile(activities=activities) as prof:
            for _ in range(reps):
                net(*args)
            sync()
    layers = {k: v / reps for k, v in by_layer(prof.events(), cost).items()}
    kinds["(model)"] = kinds[""]
    blocks = [n for n in layers if isinstance(kinds.get(n), FusedNAFBlock)]
    t_blocks = sum(layers.pop(n) for n in blocks)
    seen = t_blocks + sum(layers.values())
    print(f"  by module: {seen:.1f} of the {total:.1f} us attributed; {len(blocks)} fused blocks", end=" ")
    print(f"{t_blocks:.1f} us;")
    print("  the rest by the innermost module that launched it (a parent's own ops: its own line):")
    for name, t in sorted(layers.items(), key=lambda kv: -kv[1])[:12]:
        kind = type(kinds[name]).__name__ if name in kinds else ""
        print(f"    {t:9.1f} us {100 * t / total:5.1f}%  {name} ({kind})")
    return dict(layers, **{"(fused blocks)": t_blocks})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--preset", nargs="+", default=["edge", "paper"], choices=["edge", "paper"])
    ap.add_argument("--model", action="store_true", help="first the whole models: blocks vs rest")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or kernels.unavailable() is not None:
        raise SystemExit(f"needs a CUDA device and triton: {kernels.unavailable() or 'no CUDA device'}")
    dtype = torch.float16
    print(f"{torch.cuda.get_device_name(0)}, fp16, batch {args.batch}")
    if args.model:
        for preset in args.preset:
            _model_breakdown(preset, args.batch, args.reps)
    print("\nper block: times in us per block call")
    for preset in args.preset:
        for lv, c, side, _ in build(preset).config.block_levels(512):
            torch.manual_seed(0)
            block = CondBlock(c, 64).eval().requires_grad_(False)
            with torch.no_grad():
                for p in block.parameters():
                    p.normal_(0, 0.1)
            block = block.to("cuda", dtype)
            x = torch.randn(args.batch, c, side, side, device="cuda", dtype=dtype)
            emb = torch.rand(args.batch, 64, device="cuda", dtype=dtype)
            eager = sum(_kernel_times(block, (x, emb), args.reps).values())
            print(f"\n{preset} L{lv}: C={c}, {side}x{side}; eager torch {eager:.1f} us in all kernels")
            for path in ("fused", "split", "split-ln") if c >= 128 else ("fused", "split"):
                times = _kernel_times(kernels.fuse(block, path=path), (x, emb), args.reps)
                total = sum(times.values()) or float("nan")
                print(f"  {path}: {total:.1f} us ({eager / total:.2f}x eager)")
                for name, t in sorted(times.items(), key=lambda kv: -kv[1]):
                    print(f"    {t:9.1f} us {100 * t / total:5.1f}%  {name[:70]}")


if __name__ == "__main__":
    main()
