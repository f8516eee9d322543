"""What the fused kernels ask of a GPU, found by compiling them for it: no GPU needed.

Triton compiles for any NVIDIA target on a machine without one (its wheel brings LLVM, ptxas and
cuobjdump), so the shared memory, registers and spills of every kernel of a NAFBlock can be read
before a GPU is ever touched. A kernel whose shared memory is over the target's per-block limit
cannot launch there; one with a stack frame spills registers to local memory (slow)::

    python -m ctdn.kernels.resources --arch 90 --channels 16 32 64 128 256 --dtype float16

prints, per pass and autotuner config, the shared memory, registers, stack bytes, whether its dots
compiled to tensor-core instructions, its global loads and stores by width (16-bit ones are
unvectorised half accesses), its size in SASS instructions with that of each loop body (what a
program issues, statically: the rest plus each body times its trips), and the verdict. Each
kernel is compiled as the JIT specialises it for a launch on ``--batch`` images of ``--size``
(integers divisible by 16 marked so, a 1 made a constant): what lets its accesses vectorise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile

import torch

from . import PATHS

__all__ = ["SHARED_LIMIT", "Resources", "compile_for", "block_resources", "main"]

# Largest dynamic shared memory one block may opt in to, bytes, per compute capability (CUDA C++
# Programming Guide, "Technical Specifications per Compute Capability").
SHARED_LIMIT = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}
REGISTERS_PER_BLOCK = 65536
# Per SM, for the occupancy estimate: (max resident warps, max resident blocks, shared memory bytes)
# (same tables); registers: 64K per SM, allocated per warp in units of 256, 1 KiB of shared memory
# reserved per block.
SM_LIMITS = {
    80: (64, 32, 167936),
    86: (48, 16, 102400),
    87: (48, 16, 167936),
    89: (48, 24, 102400),
    90: (64, 32, 233472),
}
_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclasses.dataclass(frozen=True)
class Resources:
    """One compiled kernel: its config and what it uses (bytes; registers per thread)."""

    kernel: str
    config: str
    shared: int
    registers: int
    stack: int
    num_warps: int
    arch: int
    mma: str = "none"  # tensor-core instructions in its SASS: "wgmma" (Hopper), "mma" (Ampere on), "none"
    memory: tuple = ()  # its global loads and stores by width: ``global_access``
    code: tuple = ()  # (SASS instructions in all, (instructions in each loop body, ...)): ``code_size``

    def access(self) -> str:
        """``memory`` in a few words: "ld 16b x20, 128b x2; st 128b x1"."""
        out = []
        for op in ("ld", "cp", "st"):
            widths = [f"{bits}b x{n}" for o, bits, n in self.memory if o == op]
            if widths:
                out.append(f"{op} " + ", ".join(widths))
        return "; ".join(out)

    def occupancy(self) -> float | None:
        """Resident warps per SM over the most an SM holds, by the CUDA occupancy rules (registers,
        shared memory, warps and blocks per SM): computed, not measured; None for an unknown arch."""
        if self.arch not in SM_LIMITS or any("cannot launch" in p for p in self.problems()):
            return None
        max_warps, max_blocks, shared_sm = SM_LIMITS[self.arch]
        regs_per_warp = -(-self.registers * 32 // 256) * 256
        by_regs = REGISTERS_PER_BLOCK // (regs_per_warp * self.num_warps)
        by_shared = shared_sm // (self.shared + 1024)
        blocks = min(max_blocks, max_warps // self.num_warps, by_regs, by_shared)
        return blocks * self.num_warps / max_warps

    def problems(self) -> list[str]:
        """Why this config cannot run well on its target (empty: it fits)."""
        out = []
        limit = SHARED_LIMIT.get(self.arch)
        if limit is not None and self.shared > limit:
            out.append(f"shared memory {self.shared // 1024} KiB > {limit // 1024} KiB: cannot launch")
        if self.registers * 32 * self.num_warps > REGISTERS_PER_BLOCK:
            out.append(f"{self.registers} registers x {32 * self.num_warps} threads > 64K: cannot launch")
        if self.stack:
            out.append(f"{self.stack} B stack per thread: registers spill to local memory")
        return out


def _tool(name: str) -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} is not in this triton wheel ({path}); cannot read kernel resources")
    return path


_WIDTH = {"U8": 8, "S8": 8, "U16": 16, "S16": 16, "64": 64, "128": 128}


def global_access(sass: str) -> tuple[tuple[str, int, int], ...]:
    """The global-memory instructions of a SASS listing: ``(op, bits, count)`` sorted, op ``ld``
    (LDG), ``st`` (STG) or ``cp`` (LDGSTS, the asynchronous copies of pipelined loops), bits per
    thread per instruction (128: a vectorised access of 8 halves; 16: one half). Counted in the
    code, not at run time: an instruction inside a loop counts once."""
    ops = {"LDG": "ld", "STG": "st", "LDGSTS": "cp"}
    counts: dict[tuple[str, int], int] = {}
    for m in re.finditer(r"\b(LDGSTS|LDG|STG)((?:\.[A-Z0-9_]+)*)", sass):
        parts = m.group(2).split(".")
        bits = next((_WIDTH[p] for p in parts if p in _WIDTH), 32)
        key = (ops[m.group(1)], bits)
        counts[key] = counts.get(key, 0) + 1
    return tuple((op, bits, n) for (op, bits), n in sorted(counts.items()))


def code_size(sass: str) -> tuple[int, tuple[int, ...]]:
    """(instructions, (instructions of each loop body, ...)) of a SASS listing, NOPs left out; a loop
    body runs from a backward branch's target to the branch. What a program issues is about the
    instructions outside the loops plus each body times its trips (a static count: predicated-off
    instructions count, cache misses do not)."""
    ins = [(int(a, 16), op) for a, op in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    ins = [(a, op.strip()) for a, op in ins if not op.strip().startswith("NOP")]
    bodies = []
    for addr, op in ins:
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", op)
        if m and int(m.group(1), 16) < addr:
            lo = int(m.group(1), 16)
            bodies.append(sum(1 for a, _ in ins if lo <= a <= addr))
    return len(ins), tuple(bodies)


def _usage(cubin: bytes, name: str) -> tuple[int, int, str, tuple, tuple]:
    """(registers per thread, stack bytes per thread, tensor-core instructions, global accesses, code
    size) of kernel ``name`` in ``cubin``, by cuobjdump: its resource line and its SASS (HGMMA:
    warpgroup MMA, HMMA: warp MMA; ``global_access``, ``code_size``)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)

        def dump(flag):
            run = subprocess.run([_tool("cuobjdump"), flag, path], capture_output=True, text=True, check=True)
            return run.stdout

        text, sass = dump("--dump-resource-usage"), dump("--dump-sass")
    m = re.search(rf"Function {re.escape(name)}:\s*REG:(\d+) STACK:(\d+)", text)
    if m is None:
        raise RuntimeError(f"cuobjdump printed no resource line for {name}:\n{text}")
    mma = "wgmma" if re.search(r"\bHGMMA\b", sass) else "mma" if re.search(r"\bHMMA\b", sass) else "none"
    return int(m.group(1)), int(m.group(2)), mma, global_access(sass), code_size(sass)


def _specialised(kernel, types: dict[str, str], constexprs: dict, ints: dict[str, int]):
    """(signature, constexprs, attrs) as the JIT specialises a launch: pointers 16-byte aligned, an
    integer of value 1 a constant, one divisible by 16 marked so (its loads and stores vectorise on
    that), the others plain; an integer missing from ``ints`` is taken as not divisible."""
    constexprs = {**constexprs, **{a: 1 for a, v in ints.items() if v == 1 and a not in constexprs}}
    names = kernel.arg_names
    sig = {a: ("constexpr" if a in constexprs else types[a]) for a in names}
    divisible = [
        a for a in names if sig[a].startswith("*") or (sig[a].startswith("i") and ints.get(a, 1) % 16 == 0)
    ]
    return sig, constexprs, {(names.index(a),): [["tt.divisibility", 16]] for a in divisible}


def compile_for(
    kernel, types: dict[str, str], constexprs: dict, *, arch: int, num_warps: int, num_stages=3, ints=None
):
    """``kernel`` (a ``triton.jit`` function) compiled for ``sm_<arch>``: a triton ``CompiledKernel``.

    ``types``: triton type of every runtime argument (``*fp16``, ``i32``, ``fp32``); ``ints``: the
    values of its integer arguments at the launch to mirror (``_specialised``: what the JIT makes of
    them).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, constexprs, attrs = _specialised(kernel, types, constexprs, ints or {})
    src = ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs)
    target = GPUTarget("cuda", arch, 32)
    # FMA contraction on, as the JIT compiles by default (and set, so triton >= 3.9 does not warn).
    options = {"num_warps": num_warps, "num_stages": num_stages, "enable_fp_fusion": True}
    return triton.compile(src, target=target, options=options)


def measure(kernel, types, constexprs, *, arch, num_warps, num_stages=3, config="", ints=None) -> Resources:
    """Compile ``kernel`` for ``sm_<arch>`` and read its shared memory, registers and stack."""
    k = compile_for(
        kernel, types, constexprs, arch=arch, num_warps=num_warps, num_stages=num_stages, ints=ints
    )
    regs, stack, *sass = _usage(k.asm["cubin"], kernel.__name__)
    return Resources(kernel.__name__, config, int(k.metadata.shared), regs, stack, num_warps, arch, *sass)


def block_resources(
    c: int,
    dtype: torch.dtype,
    *,
    film: bool = True,
    arch: int = 90,
    path=None,
    pruned: bool = True,
    size: tuple[int, int] = (64, 64),
    batch: int = 1,
) -> list[Resources]:
    """Every kernel a NAFBlock of ``c`` channels in ``dtype`` launches on ``batch`` images of ``size``
    (H, W), over the autotuner's configs (all of them with ``pruned=False``). The shape matters only
    through what the JIT specialises on: sizes divisible by 16, a batch of 1."""
    from . import nafblock

    out = []
    for kernel, constexprs, configs in nafblock.plan(c, dtype, film=film, path=path, pruned=pruned):
        types = nafblock.arg_types(kernel, _TRITON_TYPES[dtype])
        ints = nafblock.launch_ints(kernel, batch, c, *size)
        for cfg in configs:
            meta = {**constexprs, **cfg.kwargs}
            label = " ".join(f"{k}={v}" for k, v in cfg.kwargs.items())
            label += f" w{cfg.num_warps} s{cfg.num_stages}"
            w, s = cfg.num_warps, cfg.num_stages
            res = measure(kernel, types, meta, arch=arch, num_warps=w, num_stages=s, config=label, ints=ints)
            out.append(res)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctdn.kernels.resources", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100/H200; 80: A100)")
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float16")
    p.add_argument("--path", choices=["auto", *PATHS], default="auto")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[64, 64],
        metavar=("H", "W"),
        help="the image the block runs on (paper's blocks: 64 x 64 of a 512 x 512 slice)",
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--all-configs", action="store_true", help="also the configs the autotuner prunes")
    p.add_argument("--json", action="store_true", help="JSON lines, one per kernel and config")
    a = p.parse_args(argv)
    from . import interpreting, unavailable

    if unavailable():
        p.error(unavailable())
    if interpreting():
        p.error("TRITON_INTERPRET is set: the kernels are interpreted, not compiled; unset it")
    for name, values in (("--channels", a.channels), ("--size", a.size), ("--batch", [a.batch])):
        if min(values) < 1:
            p.error(f"{name} must be positive, got {values if len(values) > 1 else values[0]}")
    if not a.json:
        head = "C | kernel | config | shared KiB | regs | stack B | tensor cores | global ld/st"
        head += " | SASS (loop bodies) | occupancy | verdict"
        print(f"| {head} |")
        print("|---" * (head.count("|") + 1) + "|")
    path = None if a.path == "auto" else a.path
    dtype = getattr(torch, a.dtype)
    for c in a.channels:
        rows = block_resources(
            c, dtype, arch=a.arch, path=path, pruned=not a.all_configs, size=tuple(a.size), batch=a.batch
        )
        for r in rows:
            verdict = "; ".join(r.problems()) or "fits"
            if a.json:
                row = {"channels": c, **dataclasses.asdict(r), "occupancy": r.occupancy()}
                print(json.dumps({**row, "problems": r.problems()}))
            else:
                kib = f"{r.shared / 1024:.0f}"
                occ = "?" if r.occupancy() is None else f"{r.occupancy():.0%}"
                total, loops = r.code or (0, ())
                code = f"{total} ({', '.join(map(str, loops))})" if loops else str(total)
                cells = (c, r.kernel, r.config, kib, r.registers, r.stack, r.mma, r.access(), code, occ)
                cells += (verdict,)
                print("| " + " | ".join(map(str, cells)) + " |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
