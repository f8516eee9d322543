"""``python -m ctdn.kernels.resources``: the fused kernels compiled for an H100 (sm_90) on this
CPU-only machine, with triton's own ptxas and cuobjdump, and their registers, stack and shared
memory read back.

This is what can be said about the kernels on a GPU without one: every config the autotuner may
pick compiles for the target and fits it without spilling registers (a spill, or shared memory over
the per-block limit, is a verdict the tool prints and the tests below check both ways). It says
nothing about speed. Each run compiles every kernel and config of a block at C = 16 ... 256
(about 20 s on two cores); the tool runs in a subprocess without TRITON_INTERPRET, which
test_kernels.py sets in-process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ctdn import kernels

pytestmark = pytest.mark.skipif(kernels.unavailable() is not None, reason=str(kernels.unavailable()))

SMALL = {"_film_rows", "_attention"}  # both paths: the FiLM's rows and the channel attention (no dots)
FUSED = {"_film_ln_expand", "_dw_gate_pool", "_attn_proj_ffn"} | SMALL
SPLIT = {"_ln_gemm", "_dw_gate_pool", "_gemm_res"} | SMALL
SPLIT_LN = SPLIT | {"_film_layernorm"}  # what path_for picks for wide blocks
NO_DOTS = {"_dw_gate_pool", "_film_layernorm"} | SMALL


def _tool(*args: str, interpret: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    cmd = [sys.executable, "-m", "ctdn.kernels.resources", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _rows(*args: str) -> list[dict]:
    r = _tool("--json", *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_every_config_the_autotuner_may_pick_fits_an_h100(dtype):
    rows = _rows("--arch", "90", "--dtype", dtype)
    bad = [f"C={r['channels']} {r['kernel']} {r['config']}: {r['problems']}" for r in rows if r["problems"]]
    assert not bad, "\n".join(bad)
    kernels_at = {c: {r["kernel"] for r in rows if r["channels"] == c} for c in (16, 32, 64, 128, 256)}
    widest_fused = 32 if dtype == "float32" else 128
    for c, names in kernels_at.items():
        assert names == (FUSED if c <= widest_fused else SPLIT_LN), (c, names)
    assert all(r["arch"] == 90 and r["registers"] > 0 and r["stack"] == 0 for r in rows)
    # the plain and the gated _ln_gemm, the attention and the plain _gemm_res: two variants each
    split_rows = [r for r in rows if r["channels"] == 256 and r["kernel"] == "_ln_gemm"]
    assert len(split_rows) == 10
    # fp16/bf16 dots run on tensor cores: Hopper's warpgroup MMA for tiles of 64 rows or more (output
    # channels: BLOCK_O, or all C on the fused path), warp MMA below; fp32 dots are IEEE FMAs
    for r in rows:
        if r["kernel"] in NO_DOTS or dtype == "float32":
            assert r["mma"] == "none", r
            continue
        block_o = re.search(r"BLOCK_O=(\d+)", r["config"])
        m = int(block_o.group(1)) if block_o else kernels.padded_channels(r["channels"])
        assert r["mma"] == ("wgmma" if m >= 64 else "mma"), r


def test_an_a100_gets_warp_mma_and_every_config_fits_it_too():
    rows = _rows("--arch", "80", "--dtype", "bfloat16", "--channels", "16", "256")
    assert not [r for r in rows if r["problems"]]
    assert {r["mma"] for r in rows if r["kernel"] not in NO_DOTS} == {"mma"}
    assert {r["kernel"] for r in rows} == FUSED | SPLIT_LN


def test_the_fused_path_at_256_channels_spills_and_is_reported_so():
    """Why the split path exists: at C = 256 (every block of ``paper``) the three-pass kernels keep
    too much in registers: pass 3 spills in every config the autotuner has, pass 1 in all but one."""
    rows = _rows("--dtype", "float16", "--channels", "256", "--path", "fused", "--all-configs")
    pass3 = [r for r in rows if r["kernel"] == "_attn_proj_ffn"]
    assert len(pass3) == 6
    for r in pass3:
        assert r["stack"] > 0, r  # 144 B (triton 3.6; 472 B under 3.9) to 5 KiB per thread
        assert any("spill" in p for p in r["problems"]), r
    assert sum(r["stack"] > 0 for r in rows if r["kernel"] == "_film_ln_expand") >= 5
    assert all(not r["problems"] for r in rows if r["kernel"] in NO_DOTS)


def test_the_compile_is_specialised_as_the_jit_specialises_a_launch():
    """Sizes divisible by 16 let the loads and stores vectorise: compiled without that knowledge the
    kernels would look worse (and spill more) than what a GPU runs."""
    from ctdn.kernels import nafblock, resources

    ints = nafblock.launch_ints(nafblock._gemm_res, 1, 256, 64, 64)
    assert ints == {"N": 1, "C": 256, "HW": 4096}
    types = nafblock.arg_types(nafblock._gemm_res, "fp16")
    sig, constexprs, attrs = resources._specialised(nafblock._gemm_res, types, {"IEEE": False}, ints)
    names = nafblock._gemm_res.arg_names
    assert constexprs["N"] == 1 and sig["N"] == "constexpr" and sig["C"] == sig["HW"] == "i32"
    marked = {names[i] for (i,) in attrs}
    assert {"C", "HW", "inp_ptr", "out_ptr"} <= marked and "N" not in marked
    _, _, attrs = resources._specialised(nafblock._gemm_res, types, {}, {"N": 2, "C": 24, "HW": 4096})
    assert {names[i] for (i,) in attrs} & {"N", "C", "HW"} == {"HW"}


def test_global_access_counts_each_width():
    from ctdn.kernels.resources import Resources, global_access

    sass = """
        /*0100*/  LDG.E.U16 R4, desc[UR4][R2.64] ;
        /*0110*/  LDG.E.128.CONSTANT R8, desc[UR4][R6.64] ;
        /*0120*/  @P0 LDG.E.U16 R5, desc[UR4][R2.64+0x2] ;
        /*0130*/  LDGSTS.E.BYPASS.LTC128B.128 [R3], desc[UR4][R6.64] ;
        /*0140*/  STG.E.64 desc[UR4][R2.64], R10 ;
        /*0150*/  STG.E desc[UR4][R2.64], R12 ;
        /*0160*/  LDS.128 R4, [R3] ;
    """
    acc = global_access(sass)
    assert acc == (("cp", 128, 1), ("ld", 16, 2), ("ld", 128, 1), ("st", 32, 1), ("st", 64, 1))
    r = Resources("k", "", 0, 32, 0, 4, 90, "none", acc)
    assert r.access() == "ld 16b x2, 128b x1; cp 128b x1; st 32b x1, 64b x1"


def test_code_size_counts_each_loop_body_from_its_backward_branch():
    from ctdn.kernels.resources import code_size

    sass = """
        /*0000*/  MOV R1, c[0x0][0x28] ;
        /*0010*/  S2R R0, SR_TID.X ;
        /*0020*/  LDG.E.U16 R4, desc[UR4][R2.64] ;
        /*0030*/  FFMA R5, R4, R4, R5 ;
        /*0040*/  @P0 BRA `(.L_x_1) ;
        /*0050*/  NOP ;
        /*0060*/  ISETP.GE.AND P0, PT, R0, 0x8, PT ;
        /*0070*/  @!P0 BRA `(.L_x_0) 0x20 ;
        /*0080*/  IADD3 R0, R0, 0x1, RZ ;
        /*0090*/  @P1 BRA 0x80 ;
        /*00a0*/  EXIT ;
        /*00b0*/  BRA 0xb0 ;
    """
    # 11 instructions (the NOP left out); loops 0x20-0x70 (5) and 0x80-0x90 (2); a forward branch
    # and the closing self-branch are not loops
    assert code_size(sass) == (11, (5, 2))


def test_on_path_split_ln_every_gemm_pipelines_its_operand_loads():
    """Static evidence for what a GPU profile showed slow: on path "split" the plain _ln_gemm
    normalises its operand tile in the K loop (plain loads, CUDA-core work per output tile); on
    "split-ln", where the LayerNorm is a pass of its own, every GEMM's operands arrive by
    asynchronous copies (LDGSTS), as _gemm_res's do."""
    rows = _rows("--channels", "256", "--path", "split-ln")
    assert {r["kernel"] for r in rows} == SPLIT_LN
    assert not [r for r in rows if r["problems"]]

    def widths(r, op):
        return {bits for o, bits, _ in r["memory"] if o == op}

    gemms = [r for r in rows if r["kernel"] in ("_ln_gemm", "_gemm_res")]
    assert len(gemms) == 20 and all(128 in widths(r, "cp") for r in gemms)
    # x reaches split's _ln_gemm by 128-bit loads into registers (to normalise), split-ln's by copies
    split = _rows("--channels", "256", "--path", "split")
    assert not [r for r in split if r["problems"]]  # the path not picked by default still fits
    split = [r for r in split if r["kernel"] == "_ln_gemm"]
    assert len(split) == 10 and all(128 in widths(r, "ld") for r in split)
    assert all(128 not in widths(r, "ld") for r in rows if r["kernel"] == "_ln_gemm")


def test_the_table_names_every_kernel_and_verdict():
    r = _tool("--dtype", "float16", "--channels", "24", "--path", "split")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("| C | kernel | config |") and "tensor cores" in lines[0]
    assert {line.split("|")[2].strip() for line in lines[2:]} == SPLIT
    assert all(line.rstrip().endswith("| fits |") for line in lines[2:])
    # split, never picked by default, fits in fp32 too (IEEE dots: the most registers)
    rows = _rows("--dtype", "float32", "--channels", "64", "--path", "split")
    assert rows and not [r for r in rows if r["problems"]]


def test_a_channel_count_size_or_batch_below_one_is_refused_by_name():
    r = _tool("--channels", "16", "0")
    assert r.returncode == 2 and "--channels must be positive" in r.stderr and "Traceback" not in r.stderr
    r = _tool("--size", "64", "0")
    assert r.returncode == 2 and "--size must be positive" in r.stderr and "Traceback" not in r.stderr
    r = _tool("--batch", "0")
    assert r.returncode == 2 and "--batch must be positive, got 0" in r.stderr


def test_under_the_interpreter_the_tool_refuses_and_says_why():
    r = _tool("--channels", "16", interpret=True)
    assert r.returncode == 2
    assert "TRITON_INTERPRET" in r.stderr and "Traceback" not in r.stderr


def test_problems_names_each_reason_a_config_cannot_run_well():
    from ctdn.kernels.resources import Resources

    def res(shared=0, registers=64, stack=0, warps=4, arch=90):
        return Resources("k", "", shared, registers, stack, warps, arch, "wgmma")

    assert res().problems() == []
    assert res(shared=232448).problems() == []  # the H100's opt-in limit itself
    (p,) = res(shared=232449).problems()
    assert "shared memory" in p and "cannot launch" in p
    assert res(shared=120_000, arch=89).problems()  # over the 99 KiB of an Ada GPU
    (p,) = res(registers=255, warps=16).problems()  # 255 x 512 threads > 64K registers
    assert "registers" in p
    (p,) = res(stack=40).problems()
    assert "40 B stack" in p and "spill" in p
    assert len(res(shared=10**6, registers=255, stack=8, warps=16).problems()) == 3


def test_without_triton_the_tool_says_how_to_install(monkeypatch, capsys):
    from ctdn.kernels import resources

    why = "triton is not installed (pip install 'ctdn[triton]')"
    monkeypatch.setattr(kernels, "unavailable", lambda: why)
    with pytest.raises(SystemExit) as e:
        resources.main(["--channels", "16"])
    assert e.value.code == 2
    assert "pip install 'ctdn[triton]'" in capsys.readouterr().err


def test_occupancy_follows_the_cuda_rules_for_registers_shared_memory_and_warps():
    from ctdn.kernels.resources import Resources

    def occ(registers=32, shared=0, warps=4, arch=90):
        return Resources("k", "", shared, registers, 0, warps, arch).occupancy()

    assert occ() == 1.0  # 16 blocks of 4 warps: the SM's 64 warps
    assert occ(registers=40) == 0.75  # 40 x 32 x 4 registers a block: 12 blocks
    assert occ(registers=255, warps=8) == 0.125  # rounded up to 256 a thread: one block
    assert occ(shared=100 * 1024) == 0.125  # 228 KiB an SM holds two such blocks (1 KiB reserved each)
    assert occ(registers=64) == 0.5 and occ(registers=64, arch=86) == 32 / 48  # 8 blocks; 48 warps an SM
    assert occ(arch=75) is None and occ(shared=300 * 1024) is None  # unknown arch; cannot launch
