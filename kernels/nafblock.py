"""The fused NAFBlock forward: Triton kernels, their launchers and the module that uses them.

One block (with its optional dose scale/shift, ``CondBlock``) takes one of three paths; ``path_for``
picks fused or split-ln by the channel count C and the dtype, split runs when asked for:

**fused** (C <= ``FUSED_MAX_C`` = 128 in fp16/bf16, ``FUSED_MAX_C_FP32`` = 32 in fp32): three
passes over memory.

1. ``_film_ln_expand``: FiLM (x * (1 + scale) + shift) -> LayerNorm2d -> 1x1 conv C -> 2C.
   Reads x (C), writes t (2C).
2. ``_dw_gate_pool``: 3x3 depthwise conv on t -> SimpleGate -> g (C), plus per-tile channel sums of
   g for the attention's global average pool. Reads t (2C, neighbours from cache), writes g (C).
   The pool and its 1x1 conv (N x C numbers) are one small kernel, ``_attention``, between passes 2
   and 3; another, ``_film_rows``, turns the dose embedding into the FiLM's rows before pass 1.
3. ``_attn_proj_ffn``: g * attention -> 1x1 conv3 -> x + beta * y -> LayerNorm2d -> 1x1 conv4
   C -> 2C -> SimpleGate -> 1x1 conv5 -> + gamma * y. Reads g and x (FiLM recomputed: cheaper than
   storing it), writes the output (C).

So 9 C values move per pixel against about 45 C for the eager block. A program owns ``BLOCK_P``
consecutive pixels of one image and all channels (padded to a power of two, at least 16, the
smallest ``tl.dot``), and loads whole ``[C, C]`` weight matrices.

**split** (wider C; the first way, kept for comparison): that whole-channel tile does not fit a GPU
at C = 256 (``paper``'s every block): compiled for an H100 in fp16 (``python -m
ctdn.kernels.resources``, specialised as the JIT specialises a 64 x 64 launch), every config of pass
3 spills registers, 144 B-5.3 KiB per thread, and all but one of pass 1 (in fp32, from C = 64). The
split path is the three 1x1-conv stages as GEMM kernels tiled over output channels, pixels and a K
loop, with the normalisation, FiLM, gate and residuals in their prologues and epilogues:

1. ``_ln_gemm``: t = conv1(LN(FiLM(x))), an output-channel tile per program. Reads x, writes t (2C).
2. ``_dw_gate_pool`` as above.
3. ``_gemm_res``: x1 = FiLM(x) + beta * conv3(g * attention). Reads g, x, writes x1 (C).
4. ``_ln_gemm`` with the gate: h = SimpleGate(conv4(LN(x1))). Reads x1, writes h (C).
5. ``_gemm_res``: out = x1 + gamma * conv5(h). Reads h, x1, writes out (C).

14 C values per pixel (re-reads within a kernel counted once: they should hit L1/L2): 5 more than
the fused path, at the width where the 1x1 convs' arithmetic weighs most. x1 and h are rounded to
the input dtype between kernels, as the eager block rounds every tensor.

**split-ln** (what wide blocks run): the split path with each LayerNorm a pass of its own
(``_film_layernorm``), so that ``_ln_gemm`` runs without ``NORM`` as a plain GEMM whose operands
pipeline: the split ``_ln_gemm`` normalises its operand tile on CUDA cores in the K loop, once per
output tile, and ran at half ``_gemm_res``'s rate on an H200. 18 C values per pixel, 4 more than
split, yet on an H200 (fp16, CUDA graphs) ``paper``'s C = 256 block took 372 us at batch 16 against
split's 566, and 47 against 56 at batch 1; at C = 128 split-ln beat split too (24.0 against 25.8
us), and fused both (18.0).

Every path: NCHW in and out; LayerNorm statistics (fused passes: mean, then centred squares; split
GEMMs: one sweep of shifted sums and squares), dots and every intermediate in fp32 whatever the
input dtype (NAFNet activations overflow fp16 sums); fp16/bf16 inputs feed the dots in their own
dtype (tensor cores), fp32 inputs in IEEE fp32 (no TF32), so the fp32 path matches the reference to
rounding. Image offsets are int64 (N x C x H x W may pass 2^31).

Block sizes are autotuned on a GPU over a small config space per kernel (``_fused_configs``,
``_gemm_configs``, ``_dw_configs``), keyed by the batch, channel count, image size and variant,
pruned to what fits an H100 without spilling (measured by compiling, see ``ctdn.kernels.resources``). Under
``TRITON_INTERPRET=1`` (CPU) one small fixed config per kernel runs (``INTERPRET_META``).
"""

from __future__ import annotations

import inspect
import os

import torch
import triton
import triton.language as tl

from . import FUSED_MAX_C, FUSED_MAX_C_FP32, check_path, interpreting, padded_channels, path_for

__all__ = [
    "nafblock_forward",
    "path_for",
    "FUSED_MAX_C",
    "FUSED_MAX_C_FP32",
    "film_ln_expand",
    "film_layernorm",
    "dw_gate_pool",
    "attention",
    "film_rows",
    "attn_proj_ffn",
    "ln_gemm",
    "gemm_res",
    "plan",
    "arg_types",
    "launch_ints",
    "FusedNAFBlock",
]


# Fixed when this module is imported (TRITON_INTERPRET is read by triton at import time too).
EMULATED_HALF_DOT = tl.constexpr(interpreting())

# --- autotuner config spaces (GPU) ---------------------------------------------------------------------
# Smallest K of a tl.dot on 16- and 32-bit operands in triton 3.2-3.7 (3.8 allows 8 for fp32): no
# tile's K goes below it, whatever the triton (CUDA builds of torch 2.11 bring 3.6).
MIN_DOT_K = 16
HALF_BLOCK_K = 32


def _fused_configs():
    return [triton.Config({"BLOCK_P": p}, num_warps=w) for p in (32, 64, 128) for w in (4, 8)]


def _arg(named_args, kwargs, name, default):
    """A launch argument as the autotuner's pruning hook gets it: positional or keyword."""
    return named_args.get(name, kwargs.get(name, default))


def _prune_fused(configs, named_args, **kwargs):
    # A [CP, BLOCK_P] fp32 tile lives in registers: keep at most 16 of its values per thread (8 with
    # IEEE fp32 dots, whose operands are not packed halves). Compiled for an H100 every kept config is
    # free of spills (ctdn.kernels.resources). The rule was set by compiles that did not know the sizes
    # divisible by 16; compiled as the JIT specialises them, some dropped configs fit too (fp16 at
    # CP = 128: BLOCK_P 64 on 8 warps; fp32 at CP = 32: three more), a wider space left for a GPU to
    # time before it is opened.
    per_warp = 256 if _arg(named_args, kwargs, "IEEE", False) else 512
    cp = _arg(named_args, kwargs, "CP", 16)
    kept = [c for c in configs if cp * c.kwargs["BLOCK_P"] <= per_warp * c.num_warps]
    return kept or configs[:1]


def _gemm_configs():
    # (BLOCK_O, BLOCK_P, warps, stages) tiles that compile for an H100 without spilling in all four
    # GEMM variants (plain and gated _ln_gemm, _gemm_res with and without a FiLM'd residual; measured
    # with ctdn.kernels.resources under triton 3.6 and 3.9). fp16/bf16: K chunks of 32, three pipeline
    # stages (the K loop's loads overlap the dots); 128 x 64 and 64 x 128 need 8 warps, 128 x 128
    # spills with any; 64 x 64 takes 8 too: with 4, the gated _ln_gemm (two accumulators) sat at 255
    # registers and spilled 8 B for an A100. (Those figures are from compiles that did not know the
    # sizes divisible by 16; compiled as the JIT specialises them, the kept fp16 tiles need 64-156
    # registers a thread on sm_90.)
    # fp32 (IEEE dots, no tensor cores): a [BLOCK_O, BLOCK_K] fp32 operand is twice the registers, so
    # K chunks of MIN_DOT_K and two stages, but one for 32 x 64 (it spills 8 B with two under triton
    # 3.9; 64 x 64 at 4 warps, 48 B).
    half = [(64, 64, 8, 3), (128, 64, 8, 3), (64, 128, 8, 3), (32, 64, 4, 3), (32, 128, 4, 3)]
    ieee = [(32, 32, 4, 2), (32, 64, 4, 1), (64, 32, 4, 2), (32, 128, 8, 2), (128, 32, 8, 2)]

    def cfg(o, p, w, stages, k):
        return triton.Config({"BLOCK_O": o, "BLOCK_P": p, "BLOCK_K": k}, num_warps=w, num_stages=stages)

    return [cfg(*t, HALF_BLOCK_K) for t in half] + [cfg(*t, MIN_DOT_K) for t in ieee]


def _prune_gemm(configs, named_args, **kwargs):
    # The fp32 set (BLOCK_K = MIN_DOT_K) for IEEE dots, the fp16/bf16 set (HALF_BLOCK_K) otherwise.
    ieee = bool(_arg(named_args, kwargs, "IEEE", False))
    return [c for c in configs if (c.kwargs["BLOCK_K"] == MIN_DOT_K) == ieee]


def _dw_configs():
    # [BLOCK_C, BLOCK_P] tiles: several channels per program keep enough programs in flight at batch 1
    # (a 64 x 64 level is 16-32 pixel tiles) and give each load instruction more than one row. The taps
    # are a loop, not unrolled: unrolled, ptxas hoists all 18 loads and spills even at 2 x 256.
    return [triton.Config({"BLOCK_C": c, "BLOCK_P": p}, num_warps=4) for c in (2, 4, 8) for p in (128, 256)]


def _norm_configs():
    return [triton.Config({"BLOCK_P": p}, num_warps=w) for p in (16, 32, 64) for w in (4, 8)]


def _prune_norm(configs, named_args, **kwargs):
    # No dots, one [CP, BLOCK_P] fp32 tile and its centred copy: keep at most 32 values per thread.
    cp = _arg(named_args, kwargs, "CP", 16)
    kept = [c for c in configs if cp * c.kwargs["BLOCK_P"] <= 1024 * c.num_warps]
    return kept or configs[:1]


def _film_configs():
    # One config: a [BLOCK_J, EP] fp32 tile (64 x 64 for the 64-wide dose embedding), 16 values a thread.
    return [triton.Config({"BLOCK_J": 64}, num_warps=8)]


def _att_configs():
    # One config: [BLOCK_O, CP] weights and [BLOCK_T, CP] partial sums, up to 32 values a thread at C 256.
    return [triton.Config({"BLOCK_O": 16, "BLOCK_T": 8}, num_warps=4)]


# Under the interpreter: small tiles, so the tests' shapes cross tile edges in every direction.
INTERPRET_META = {
    "fused": {"BLOCK_P": 64},
    "norm": {"BLOCK_P": 16},
    "gemm": {"BLOCK_O": 16, "BLOCK_P": 32, "BLOCK_K": 16},
    "dw": {"BLOCK_C": 16, "BLOCK_P": 64},
    "film": {"BLOCK_J": 16},
    "att": {"BLOCK_O": 8, "BLOCK_T": 4},
}


# --- shared pieces ----------------------------------------------------------------------------------
@triton.jit
def _load_tile(img, offs_c, offs_p, C, HW):
    """[len(offs_c), len(offs_p)] fp32 tile of channels offs_c and pixels offs_p of the image at
    ``img`` (zeros outside)."""
    m = (offs_c[:, None] < C) & (offs_p[None, :] < HW)
    return tl.load(img + offs_c[:, None] * HW + offs_p[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _vec(ptr, offs, n):
    return tl.load(ptr + offs, mask=offs < n, other=0.0).to(tl.float32)


@triton.jit
def _film(x, rows_ptr, offs_c, C):
    """The dose FiLM on an fp32 [c, P] tile; rows_ptr: this image's [1 + scale | shift] (2C fp32)."""
    return x * _vec(rows_ptr, offs_c, C)[:, None] + _vec(rows_ptr + C, offs_c, C)[:, None]


@triton.jit
def _input_tile(x_ptr, film_ptr, n, offs_c, offs_p, C, HW, HAS_FILM: tl.constexpr):
    """Image n's fp32 tile of channels offs_c of the block input, the dose FiLM applied if any."""
    x = _load_tile(x_ptr + n * C * HW, offs_c, offs_p, C, HW)
    if HAS_FILM:
        x = _film(x, film_ptr + n * 2 * C, offs_c, C)
    return x


@triton.jit
def _layernorm(x, w, b, cmask, C, eps):
    """LayerNorm over axis 0 (channels) of an fp32 [CP, P] tile whose padded rows are zero."""
    mean = tl.sum(x, axis=0) / C
    xc = tl.where(cmask[:, None], x - mean[None, :], 0.0)
    var = tl.sum(xc * xc, axis=0) / C
    rstd = 1.0 / tl.sqrt(var + eps)
    return xc * rstd[None, :] * w[:, None] + b[:, None]


@triton.jit
def _film_ln_tile(x_ptr, film_ptr, lnw_ptr, lnb_ptr, n, offs_c, offs_p, C, HW, eps, HAS_FILM: tl.constexpr):
    """LN(FiLM(x)) on image n's fp32 [CP, P] tile of all channels (offs_c: arange(CP))."""
    x = _input_tile(x_ptr, film_ptr, n, offs_c, offs_p, C, HW, HAS_FILM)
    return _layernorm(x, _vec(lnw_ptr, offs_c, C), _vec(lnb_ptr, offs_c, C), offs_c < C, C, eps)


@triton.jit
def _wdot(w_ptr, offs_r, R, offs_k, K, x, DT: tl.constexpr, IEEE: tl.constexpr):
    """W[offs_r, offs_k] @ x, W row-major with K columns, rows >= R and columns >= K read as 0;
    x an fp32 [len(offs_k), P] tile; fp32 result.

    IEEE: fp32 operands, no TF32. Otherwise operands rounded to DT (fp16/bf16) with fp32 accumulation:
    tensor cores on a GPU; under the interpreter, whose bf16 dot is wrong (numpy has no bf16), the same
    numbers through an fp32 dot of the rounded operands (their products are exact in fp32).
    """
    m = (offs_r[:, None] < R) & (offs_k[None, :] < K)
    w = tl.load(w_ptr + offs_r[:, None] * K + offs_k[None, :], mask=m, other=0.0)
    if IEEE:
        return tl.dot(w.to(tl.float32), x, input_precision="ieee")
    if EMULATED_HALF_DOT:
        return tl.dot(w.to(DT).to(tl.float32), x.to(DT).to(tl.float32), input_precision="ieee")
    return tl.dot(w.to(DT), x.to(DT))


@triton.jit
def _matmul(w_ptr, row0, offs_c, C, K, x, DT: tl.constexpr, IEEE: tl.constexpr):
    """W[row0:row0+C, :K] @ x for an fp32 [KP, P] tile x (the fused path's square blocks)."""
    return _wdot(w_ptr, row0 + offs_c, row0 + C, offs_c, K, x, DT, IEEE)


# --- fused pass 1 -------------------------------------------------------------------------------------
@triton.jit
def _film_ln_expand(
    x_ptr, film_ptr, lnw_ptr, lnb_ptr, w1_ptr, b1_ptr, t_ptr,
    N, C, HW, eps,
    HAS_FILM: tl.constexpr, IEEE: tl.constexpr, CP: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(1).to(tl.int64)
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.arange(0, CP)
    cmask = offs_c < C
    xn = _film_ln_tile(x_ptr, film_ptr, lnw_ptr, lnb_ptr, n, offs_c, offs_p, C, HW, eps, HAS_FILM)
    DT = t_ptr.dtype.element_ty
    smask = cmask[:, None] & (offs_p[None, :] < HW)
    t_img = t_ptr + n * 2 * C * HW
    for half in tl.static_range(2):
        t = _matmul(w1_ptr, half * C, offs_c, C, C, xn, DT, IEEE)
        t += _vec(b1_ptr + half * C, offs_c, C)[:, None]
        tl.store(t_img + (half * C + offs_c[:, None]) * HW + offs_p[None, :], t.to(DT), mask=smask)


# --- pass 2 (both paths) ------------------------------------------------------------------------------
@triton.jit
def _dw_gate_pool(
    t_ptr, w2_ptr, b2_ptr, g_ptr, part_ptr,
    N, C, H, W, T,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    tile = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    HW = H * W
    offs_p = tile * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    pmask = offs_p < HW
    cmask = offs_c < C
    col = offs_p % W
    acc_a = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32) + _vec(b2_ptr, offs_c, C)[:, None]
    acc_b = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32) + _vec(b2_ptr + C, offs_c, C)[:, None]
    t_img = t_ptr + n * 2 * C * HW  # int64 image offset once; int32 offsets inside the image
    ptr_a = t_img + offs_c[:, None] * HW + offs_p[None, :]  # the centre tap; the others are shifts
    ptr_b = ptr_a + C * HW
    for r in range(3):  # the rows of taps; the three taps of a row unrolled (all nine: ptxas spills)
        # A tap row is inside the image where the flat index q = p + dy W is: a test on a contiguous
        # range that keeps the centre taps' loads vectorised when W is a multiple of 16 (the same test
        # on h = p // W and h + dy, per element, would not). The side taps also test the column.
        q = offs_p + (r - 1) * W
        m = cmask[:, None] & (pmask & (q >= 0) & (q < HW))[None, :]
        for s in tl.static_range(3):
            if s == 0:
                ms = m & (col > 0)[None, :]
            elif s == 2:
                ms = m & (col < W - 1)[None, :]
            else:
                ms = m
            shift = (r - 1) * W + (s - 1)
            va = tl.load(ptr_a + shift, mask=ms, other=0.0).to(tl.float32)
            vb = tl.load(ptr_b + shift, mask=ms, other=0.0).to(tl.float32)
            wa = tl.load(w2_ptr + offs_c * 9 + 3 * r + s, mask=cmask, other=0.0).to(tl.float32)
            wb = tl.load(w2_ptr + (C + offs_c) * 9 + 3 * r + s, mask=cmask, other=0.0).to(tl.float32)
            acc_a += va * wa[:, None]
            acc_b += vb * wb[:, None]
    DT = g_ptr.dtype.element_ty
    g = (acc_a * acc_b).to(DT)
    smask = cmask[:, None] & pmask[None, :]
    tl.store(g_ptr + n * C * HW + offs_c[:, None] * HW + offs_p[None, :], g, mask=smask)
    # The pool sums g as stored (rounded to its dtype), as the reference pools its tensor.
    part = tl.sum(tl.where(smask, g.to(tl.float32), 0.0), axis=1)
    tl.store(part_ptr + (n * T + tile) * C + offs_c, part, mask=cmask)


# --- the two small steps around the passes (both paths) -----------------------------------------------
# Each replaces a handful of torch ops that were about 35-40 us of GPU time per block on an H200, some
# ten kernels of 1-3 us each (casts, linear, SiLU, concatenation, the pool's sum, addmm): at batch 1
# they are a large share of a block's time.
@triton.jit
def _film_rows(
    emb_ptr, fw_ptr, fb_ptr, film_ptr,
    N, C, E,
    EP: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    """The dose FiLM's rows [1 + scale | shift] (N, 2C) fp32 = SiLU(W emb + b), W (2C, E), +1 on the
    first C: what every pass applies as x * row[c] + row[C + c]."""
    n = tl.program_id(1).to(tl.int64)
    offs_j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_e = tl.arange(0, EP)
    jmask = offs_j < 2 * C
    e = _vec(emb_ptr + n * E, offs_e, E)
    wmask = jmask[:, None] & (offs_e < E)[None, :]
    w = tl.load(fw_ptr + offs_j[:, None] * E + offs_e[None, :], mask=wmask, other=0.0)
    z = tl.sum(w.to(tl.float32) * e[None, :], axis=1) + _vec(fb_ptr, offs_j, 2 * C)
    z = z / (1.0 + tl.exp(-z))  # SiLU
    tl.store(film_ptr + n * 2 * C + offs_j, tl.where(offs_j < C, 1.0 + z, z), mask=jmask)


@triton.jit
def _attention(
    part_ptr, w_ptr, b_ptr, att_ptr,
    N, C, T, S, inv_hw,
    CP: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    """The channel attention (N, C) fp32: W @ (the pass-2 partial sums summed over their T tiles
    / HW) + b, W (C, C) the 1x1 conv after the global average pool; S: elements per image of part."""
    n = tl.program_id(1).to(tl.int64)
    offs_o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_k = tl.arange(0, CP)
    kmask = offs_k < C
    pool = tl.zeros([CP], dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        m = (offs_t[:, None] < T) & kmask[None, :]
        sums = tl.load(part_ptr + n * S + offs_t[:, None] * C + offs_k[None, :], mask=m, other=0.0)
        pool += tl.sum(sums, axis=0)
    wmask = (offs_o[:, None] < C) & kmask[None, :]
    w = tl.load(w_ptr + offs_o[:, None] * C + offs_k[None, :], mask=wmask, other=0.0)
    att = tl.sum(w.to(tl.float32) * (pool * inv_hw)[None, :], axis=1) + _vec(b_ptr, offs_o, C)
    tl.store(att_ptr + n * C + offs_o, att, mask=offs_o < C)


# --- fused pass 3 -------------------------------------------------------------------------------------
@triton.jit
def _attn_proj_ffn(
    x_ptr, film_ptr, g_ptr, att_ptr, w3_ptr, b3_ptr, beta_ptr, lnw_ptr, lnb_ptr,
    w4_ptr, b4_ptr, w5_ptr, b5_ptr, gamma_ptr, out_ptr,
    N, C, HW, eps,
    HAS_FILM: tl.constexpr, IEEE: tl.constexpr, CP: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(1).to(tl.int64)
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.arange(0, CP)
    cmask = offs_c < C
    DT = out_ptr.dtype.element_ty
    x = _input_tile(x_ptr, film_ptr, n, offs_c, offs_p, C, HW, HAS_FILM)
    g = _load_tile(g_ptr + n * C * HW, offs_c, offs_p, C, HW) * _vec(att_ptr + n * C, offs_c, C)[:, None]
    y = _matmul(w3_ptr, 0, offs_c, C, C, g, DT, IEEE) + _vec(b3_ptr, offs_c, C)[:, None]
    x = x + y * _vec(beta_ptr, offs_c, C)[:, None]
    xn = _layernorm(x, _vec(lnw_ptr, offs_c, C), _vec(lnb_ptr, offs_c, C), cmask, C, eps)
    a = _matmul(w4_ptr, 0, offs_c, C, C, xn, DT, IEEE) + _vec(b4_ptr, offs_c, C)[:, None]
    b = _matmul(w4_ptr, C, offs_c, C, C, xn, DT, IEEE) + _vec(b4_ptr + C, offs_c, C)[:, None]
    y = _matmul(w5_ptr, 0, offs_c, C, C, a * b, DT, IEEE) + _vec(b5_ptr, offs_c, C)[:, None]
    out = x + y * _vec(gamma_ptr, offs_c, C)[:, None]
    m = cmask[:, None] & (offs_p[None, :] < HW)
    tl.store(out_ptr + n * C * HW + offs_c[:, None] * HW + offs_p[None, :], out.to(DT), mask=m)


# --- split path: the 1x1 convs as tiled GEMMs ---------------------------------------------------------
@triton.jit
def _tile_ids(O, HW, BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr):
    """(output rows, pixels) of this program: output tiles vary fastest, so the programs that read the
    same input pixels run together and find them in L2."""
    num_o = tl.cdiv(O, BLOCK_O)
    pid = tl.program_id(0)
    offs_o = (pid % num_o) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_p = (pid // num_o) * BLOCK_P + tl.arange(0, BLOCK_P)
    return offs_o, offs_p


@triton.jit
def _film_layernorm(
    x_ptr, film_ptr, lnw_ptr, lnb_ptr, out_ptr,
    N, C, HW, eps,
    HAS_FILM: tl.constexpr, CP: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """out = LN(FiLM(x)) in the input's dtype, all C channels of BLOCK_P pixels per program (path
    "split-ln": the GEMM that follows reads it as it is, so each pixel is normalised once, not once
    per output tile)."""
    n = tl.program_id(1).to(tl.int64)
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.arange(0, CP)
    cmask = offs_c < C
    xn = _film_ln_tile(x_ptr, film_ptr, lnw_ptr, lnb_ptr, n, offs_c, offs_p, C, HW, eps, HAS_FILM)
    m = cmask[:, None] & (offs_p[None, :] < HW)
    out = xn.to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + n * C * HW + offs_c[:, None] * HW + offs_p[None, :], out, mask=m)


@triton.jit
def _ln_gemm(
    x_ptr, film_ptr, lnw_ptr, lnb_ptr, w_ptr, b_ptr, out_ptr,
    N, C, HW, eps,
    HAS_FILM: tl.constexpr, GATE: tl.constexpr, NORM: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """out = W @ LN(FiLM(x)) + b with W (2C, C): 2C output channels; with GATE, C output channels
    (W[:C] @ xn + b[:C]) * (W[C:] @ xn + b[C:]) (conv4 + SimpleGate). Without NORM, x is already
    normalised (``_film_layernorm``; no FiLM either): a plain GEMM whose operand loads pipeline."""
    n = tl.program_id(1).to(tl.int64)
    O = C if GATE else 2 * C
    offs_o, offs_p = _tile_ids(O, HW, BLOCK_O, BLOCK_P)
    offs_k = tl.arange(0, BLOCK_K)
    # LayerNorm statistics over all C channels of the tile's pixels in one sweep (the GEMM's sweep
    # re-reads x from L1/L2): sums of d = x - r and d * d, r the pixel's first channel, a shift that
    # keeps the fp32 sums exact when |mean| >> std (d is then of the order of std). The sums build up
    # elementwise in [BLOCK_K, BLOCK_P] tiles and cross threads once, after the loop. On an H200 the
    # earlier form (a mean sweep, then a centred-squares sweep, each reducing across channels at every
    # step) made _ln_gemm 4 x slower than _gemm_res for the same GEMM.
    if NORM:
        r = tl.load(x_ptr + n * C * HW + offs_p, mask=offs_p < HW, other=0.0).to(tl.float32)
        if HAS_FILM:
            r = r * tl.load(film_ptr + n * 2 * C) + tl.load(film_ptr + n * 2 * C + C)
        s1 = tl.zeros([BLOCK_K, BLOCK_P], dtype=tl.float32)
        s2 = tl.zeros([BLOCK_K, BLOCK_P], dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):
            xk = _input_tile(x_ptr, film_ptr, n, k0 + offs_k, offs_p, C, HW, HAS_FILM)
            d = tl.where((k0 + offs_k)[:, None] < C, xk - r[None, :], 0.0)
            s1 += d
            s2 += d * d
        dm = tl.sum(s1, axis=0) / C
        mean = r + dm
        rstd = 1.0 / tl.sqrt(tl.maximum(tl.sum(s2, axis=0) / C - dm * dm, 0.0) + eps)
    DT = out_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_O, BLOCK_P], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_O, BLOCK_P], dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        ks = k0 + offs_k
        xn = _input_tile(x_ptr, film_ptr, n, ks, offs_p, C, HW, HAS_FILM)
        if NORM:
            xn = (xn - mean[None, :]) * rstd[None, :]
            xn = xn * _vec(lnw_ptr, ks, C)[:, None] + _vec(lnb_ptr, ks, C)[:, None]
        acc += _wdot(w_ptr, offs_o, O, ks, C, xn, DT, IEEE)
        if GATE:
            acc_b += _wdot(w_ptr, C + offs_o, 2 * C, ks, C, xn, DT, IEEE)
    y = acc + _vec(b_ptr, offs_o, O)[:, None]
    if GATE:
        y = y * (acc_b + _vec(b_ptr + C, offs_o, C)[:, None])
    m = (offs_o[:, None] < O) & (offs_p[None, :] < HW)
    tl.store(out_ptr + n * O * HW + offs_o[:, None] * HW + offs_p[None, :], y.to(DT), mask=m)


@triton.jit
def _gemm_res(
    inp_ptr, att_ptr, w_ptr, b_ptr, res_ptr, film_ptr, ls_ptr, out_ptr,
    N, C, HW,
    HAS_ATT: tl.constexpr, HAS_FILM: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """out = FiLM(res) + ls * (W @ (inp * att) + b): a 1x1 conv C -> C, its input optionally scaled
    per channel (the channel attention), and its layer-scaled residual (beta or gamma)."""
    n = tl.program_id(1).to(tl.int64)
    offs_o, offs_p = _tile_ids(C, HW, BLOCK_O, BLOCK_P)
    offs_k = tl.arange(0, BLOCK_K)
    DT = out_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_O, BLOCK_P], dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        ks = k0 + offs_k
        ik = _load_tile(inp_ptr + n * C * HW, ks, offs_p, C, HW)
        if HAS_ATT:
            ik = ik * _vec(att_ptr + n * C, ks, C)[:, None]
        acc += _wdot(w_ptr, offs_o, C, ks, C, ik, DT, IEEE)
    y = acc + _vec(b_ptr, offs_o, C)[:, None]
    res = _input_tile(res_ptr, film_ptr, n, offs_o, offs_p, C, HW, HAS_FILM)
    out = res + y * _vec(ls_ptr, offs_o, C)[:, None]
    m = (offs_o[:, None] < C) & (offs_p[None, :] < HW)
    tl.store(out_ptr + n * C * HW + offs_o[:, None] * HW + offs_p[None, :], out.to(DT), mask=m)


# --- what each kernel is, for the launchers and ctdn.kernels.resources ----------------------------------
_SPACE = {
    _film_ln_expand: ("fused", _fused_configs, _prune_fused, ["N", "C", "HW", "HAS_FILM"]),
    _attn_proj_ffn: ("fused", _fused_configs, _prune_fused, ["N", "C", "HW", "HAS_FILM"]),
    _dw_gate_pool: ("dw", _dw_configs, None, ["N", "C", "H", "W"]),
    _film_layernorm: ("norm", _norm_configs, _prune_norm, ["N", "C", "HW", "HAS_FILM"]),
    _ln_gemm: ("gemm", _gemm_configs, _prune_gemm, ["N", "C", "HW", "HAS_FILM", "GATE", "NORM"]),
    _gemm_res: ("gemm", _gemm_configs, _prune_gemm, ["N", "C", "HW", "HAS_FILM", "HAS_ATT"]),
    _film_rows: ("film", _film_configs, None, ["N", "C", "E"]),
    _attention: ("att", _att_configs, None, ["N", "C", "T"]),
}
# Autotuner keys: the sizes and the constexprs that change the kernel (triton adds the tensors' dtypes,
# which fix IEEE), so the gated and plain _ln_gemm of one block are tuned apart. The batch N is a key
# (and a kernel argument only for that): the best tile at batch 1, where a 64 x 64 level is a few
# dozen programs, is not the best at batch 32; without it, a process kept whichever batch it tuned
# first (on an H200, the model benchmark ran batch 32 with batch 1's tiles).
# The autotuners' picks are kept on disk (Triton's cache, TRITON_CACHE_DIR, keyed by the GPU's
# architecture, triton's version, the kernel's source, the key and the configs), so only the first
# process ever to see a shape pays the tuning (seconds per kernel, every config timed), not each
# start of a scanner's service. triton 3.2 has no such option; CTDN_AUTOTUNE_CACHE=0 turns it off.
_AUTOTUNE_KW = (
    {"cache_results": True}
    if "cache_results" in inspect.signature(triton.autotune).parameters
    and os.environ.get("CTDN_AUTOTUNE_CACHE", "1") != "0"
    else {}
)
_TUNED = {
    k: triton.autotune(
        cfgs(), key=key, prune_configs_by={"early_config_prune": prune} if prune else None, **_AUTOTUNE_KW
    )(k)
    for k, (_, cfgs, prune, key) in _SPACE.items()
}
# Pointer arguments by what they hold: activations in the input's dtype, fp32 side inputs; every other
# pointer is a weight (the model's dtype).
_ACT_PTRS = {"x_ptr", "t_ptr", "g_ptr", "out_ptr", "inp_ptr", "res_ptr"}
_F32_PTRS = {"film_ptr", "att_ptr", "part_ptr", "emb_ptr", "fw_ptr", "fb_ptr"}  # the dose MLP: fp32


def arg_types(kernel, act: str, weight: str | None = None) -> dict[str, str]:
    """Triton types of ``kernel``'s runtime arguments for activations of type ``act`` ("fp16"...)
    and weights of type ``weight`` (default: ``act``, as the triton backend casts the model)."""
    out = {}
    for name in kernel.arg_names:
        if name.endswith("_ptr"):
            out[name] = "*" + (act if name in _ACT_PTRS else "fp32" if name in _F32_PTRS else weight or act)
        else:
            out[name] = "fp32" if name in ("eps", "inv_hw") else "i32"
    return out


def launch_ints(kernel, n: int, c: int, h: int, w: int, emb: int = 64) -> dict[str, int]:
    """The integer arguments the launchers pass ``kernel`` for a batch of ``n`` images of ``c``
    channels, ``h`` x ``w`` (the depthwise pass's tile count as ``dw_gate_pool`` sizes its buffer)."""
    tiles = triton.cdiv(h * w, _dw_min_block_p())
    known = {"N": n, "C": c, "HW": h * w, "H": h, "W": w, "E": emb, "T": tiles, "S": tiles * c}
    return {a: known[a] for a in kernel.arg_names if a in known}


def plan(c: int, dtype: torch.dtype, *, film=True, path: str | None = None, pruned=True, emb=64):
    """The kernels one block of ``c`` channels launches: ``(kernel, constexprs, configs)`` each, the
    configs being the autotuner's (after pruning unless ``pruned`` is False); ``emb``: the width of
    the dose embedding its FiLM reads."""
    path = path or path_for(c, dtype)
    ieee = dtype == torch.float32
    steps = [(_film_rows, {"EP": triton.next_power_of_2(emb)})] if film else []
    att = (_attention, {"CP": padded_channels(c)})
    if path == "fused":
        steps += [
            (_film_ln_expand, {"HAS_FILM": film, "IEEE": ieee, "CP": padded_channels(c)}),
            (_dw_gate_pool, {}),
            att,
            (_attn_proj_ffn, {"HAS_FILM": film, "IEEE": ieee, "CP": padded_channels(c)}),
        ]
    elif path == "split":
        steps += [
            (_ln_gemm, {"HAS_FILM": film, "GATE": False, "NORM": True, "IEEE": ieee}),
            (_dw_gate_pool, {}),
            att,
            (_gemm_res, {"HAS_ATT": True, "HAS_FILM": film, "IEEE": ieee}),
            (_ln_gemm, {"HAS_FILM": False, "GATE": True, "NORM": True, "IEEE": ieee}),
            (_gemm_res, {"HAS_ATT": False, "HAS_FILM": False, "IEEE": ieee}),
        ]
    else:  # "split-ln"
        steps += [
            (_film_layernorm, {"HAS_FILM": film, "CP": padded_channels(c)}),
            (_ln_gemm, {"HAS_FILM": False, "GATE": False, "NORM": False, "IEEE": ieee}),
            (_dw_gate_pool, {}),
            att,
            (_gemm_res, {"HAS_ATT": True, "HAS_FILM": film, "IEEE": ieee}),
            (_film_layernorm, {"HAS_FILM": False, "CP": padded_channels(c)}),
            (_ln_gemm, {"HAS_FILM": False, "GATE": True, "NORM": False, "IEEE": ieee}),
            (_gemm_res, {"HAS_ATT": False, "HAS_FILM": False, "IEEE": ieee}),
        ]
    out = []
    for kernel, meta in steps:
        _, cfgs, prune, _ = _SPACE[kernel]
        configs = prune(cfgs(), meta) if prune and pruned else cfgs()
        out.append((kernel, meta, configs))
    return out


# --- launchers ----------------------------------------------------------------------------------------
def _launch(kernel, grid_of, *args, **meta):
    """The autotuned kernel on a GPU; the plain one with ``INTERPRET_META`` under the interpreter.
    ``grid_of(block sizes)`` -> grid. Returns the block sizes that ran."""
    if interpreting():
        blocks = INTERPRET_META[_SPACE[kernel][0]]
        kernel[grid_of(blocks)](*args, **blocks, **meta)
        return blocks
    tuned = _TUNED[kernel]
    tuned[lambda m: grid_of(m)](*args, **meta)
    return tuned.best_config.kwargs


def _film_arg(x, film):
    return (film.contiguous().float(), True) if film is not None else (x, False)  # x: an unused pointer


def _pixel_grid(hw: int, n: int):
    """A program per tile of BLOCK_P pixels of each image (fused passes 1 and 3, the LayerNorm pass)."""
    return lambda m: (triton.cdiv(hw, m["BLOCK_P"]), n)


def film_ln_expand(block, x: torch.Tensor, film: torch.Tensor | None = None) -> torch.Tensor:
    """Fused pass 1: conv1(norm1(FiLM(x))), (N, 2C, H, W) in x's dtype."""
    x = x.contiguous()  # the kernels index NCHW; a no-op for the tensors nafblock_forward passes
    n, c, h, w = x.shape
    f, has_film = _film_arg(x, film)
    t = torch.empty((n, 2 * c, h, w), device=x.device, dtype=x.dtype)
    _launch(
        _film_ln_expand,
        _pixel_grid(h * w, n),
        x, f, block.norm1.weight, block.norm1.bias, block.conv1.weight, block.conv1.bias, t,
        n, c, h * w, block.norm1.eps,
        HAS_FILM=has_film, IEEE=x.dtype == torch.float32, CP=padded_channels(c),
    )  # fmt: skip
    return t


def dw_gate_pool(block, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass 2: g = SimpleGate(conv2(t)) (N, C, H, W) and the per-tile channel sums of g, (N, tiles, C)
    fp32, which ``attention`` turns into the global average pool."""
    t = t.contiguous()
    n, c2, h, w = t.shape
    c, hw = c2 // 2, h * w
    g = torch.empty((n, c, h, w), device=t.device, dtype=t.dtype)
    # Per-tile partial sums: the tile count depends on the BLOCK_P the autotuner picks, so the buffer
    # is sized for the smallest one and only the tiles of the chosen config are read (each of those is
    # written, so the buffer needs no zeroing).
    tiles_max = triton.cdiv(hw, _dw_min_block_p())
    part = torch.empty((n, tiles_max, c), device=t.device, dtype=torch.float32)
    blocks = _launch(
        _dw_gate_pool,
        lambda m: (triton.cdiv(hw, m["BLOCK_P"]), n, triton.cdiv(c, m["BLOCK_C"])),
        t, block.conv2.weight, block.conv2.bias, g, part,
        n, c, h, w, tiles_max,
    )  # fmt: skip
    return g, part[:, : triton.cdiv(hw, blocks["BLOCK_P"])]


def attention(block, partial: torch.Tensor, hw: int) -> torch.Tensor:
    """The channel attention (N, C) fp32: the 1x1 conv after the global average pool, on pass 2's
    per-tile sums ``partial`` (N, tiles, C) fp32 (a view; its rows are C apart) over ``hw`` pixels."""
    n, tiles, c = partial.shape
    if partial.stride()[1:] != (c, 1):
        raise ValueError("attention: partial sums must be rows of C contiguous values")
    conv = block.sca[1]
    att = torch.empty((n, c), device=partial.device, dtype=torch.float32)
    _launch(
        _attention,
        lambda m: (triton.cdiv(c, m["BLOCK_O"]), n),
        partial, conv.weight, conv.bias, att,
        n, c, tiles, partial.stride(0), 1.0 / hw,
        CP=padded_channels(c),
    )  # fmt: skip
    return att


def film_rows(film, emb: torch.Tensor) -> torch.Tensor:
    """The dose FiLM's rows [1 + scale | shift] (N, 2C) fp32 from the dose embedding ``emb`` (N, E)
    and ``film`` (``ctdn.models.nafnet.FiLM``: a Linear E -> 2C, then SiLU), in one kernel."""
    emb = emb.contiguous()
    proj = film.proj
    n, e = emb.shape
    c = proj.weight.shape[0] // 2
    rows = torch.empty((n, 2 * c), device=emb.device, dtype=torch.float32)
    _launch(
        _film_rows,
        lambda m: (triton.cdiv(2 * c, m["BLOCK_J"]), n),
        emb, proj.weight.contiguous(), proj.bias, rows,
        n, c, e,
        EP=triton.next_power_of_2(e),
    )  # fmt: skip
    return rows


def attn_proj_ffn(block, x, film, g, att) -> torch.Tensor:
    """Fused pass 3: the rest of the block (attention scale, conv3, beta residual, norm2, conv4, gate,
    conv5, gamma residual) on FiLM(x), g and the attention (N, C)."""
    x, g, att = x.contiguous(), g.contiguous(), att.contiguous()
    n, c, h, w = x.shape
    f, has_film = _film_arg(x, film)
    out = torch.empty_like(x)
    _launch(
        _attn_proj_ffn,
        _pixel_grid(h * w, n),
        x, f, g, att, block.conv3.weight, block.conv3.bias, block.beta,
        block.norm2.weight, block.norm2.bias, block.conv4.weight, block.conv4.bias,
        block.conv5.weight, block.conv5.bias, block.gamma, out,
        n, c, h * w, block.norm2.eps,
        HAS_FILM=has_film, IEEE=x.dtype == torch.float32, CP=padded_channels(c),
    )  # fmt: skip
    return out


def _gemm_grid(o: int, hw: int, n: int):
    return lambda m: (triton.cdiv(o, m["BLOCK_O"]) * triton.cdiv(hw, m["BLOCK_P"]), n)


def film_layernorm(norm, x: torch.Tensor, film: torch.Tensor | None = None) -> torch.Tensor:
    """Path "split-ln": norm(FiLM(x)) (N, C, H, W) in x's dtype, as the reference rounds it."""
    x = x.contiguous()
    n, c, h, w = x.shape
    f, has_film = _film_arg(x, film)
    out = torch.empty_like(x)
    _launch(
        _film_layernorm,
        _pixel_grid(h * w, n),
        x, f, norm.weight, norm.bias, out,
        n, c, h * w, norm.eps,
        HAS_FILM=has_film, CP=padded_channels(c),
    )  # fmt: skip
    return out


def ln_gemm(norm, conv, x: torch.Tensor, film: torch.Tensor | None = None, gate: bool = False):
    """Split path: conv(norm(FiLM(x))) with ``conv`` C -> 2C, (N, 2C, H, W); with ``gate``, its
    SimpleGate (N, C, H, W). ``norm`` None: x is already normalised (``film_layernorm``), no FiLM."""
    x = x.contiguous()
    n, c, h, w = x.shape
    if norm is None and film is not None:
        raise ValueError("ln_gemm: a FiLM needs the norm (pass both, or normalise first)")
    f, has_film = _film_arg(x, film)
    ln_w, ln_b, eps = (norm.weight, norm.bias, norm.eps) if norm is not None else (conv.bias, conv.bias, 0.0)
    o = c if gate else 2 * c
    out = torch.empty((n, o, h, w), device=x.device, dtype=x.dtype)
    _launch(
        _ln_gemm,
        _gemm_grid(o, h * w, n),
        x, f, ln_w, ln_b, conv.weight, conv.bias, out,
        n, c, h * w, eps,
        HAS_FILM=has_film, GATE=gate, NORM=norm is not None, IEEE=x.dtype == torch.float32,
    )  # fmt: skip
    return out


def gemm_res(conv, inp, res, scale, att=None, film=None) -> torch.Tensor:
    """Split path: FiLM(res) + scale * conv(inp * att), ``conv`` C -> C, ``scale`` (1, C, 1, 1) (beta
    or gamma), ``att`` (N, C) fp32 or None."""
    inp, res = inp.contiguous(), res.contiguous()
    att = att.contiguous() if att is not None else None
    n, c, h, w = inp.shape
    f, has_film = _film_arg(res, film)
    out = torch.empty_like(res)
    _launch(
        _gemm_res,
        _gemm_grid(c, h * w, n),
        inp, att if att is not None else f, conv.weight, conv.bias, res, f, scale, out,
        n, c, h * w,
        HAS_ATT=att is not None, HAS_FILM=has_film, IEEE=inp.dtype == torch.float32,
    )  # fmt: skip
    return out


def _dw_min_block_p() -> int:
    if interpreting():
        return INTERPRET_META["dw"]["BLOCK_P"]
    return min(c.kwargs["BLOCK_P"] for c in _dw_configs())


def nafblock_forward(block, x: torch.Tensor, film: torch.Tensor | None = None, path: str | None = None):
    """One NAFBlock (``ctdn.models.layers.NAFBlock``'s weights) on NCHW ``x``, fused.

    ``film``: None, or (N, 2C) fp32 rows ``[1 + scale | shift]`` of the dose FiLM applied to x
    first (``CondBlock``). x may be fp32, fp16 or bf16; the weights are read in any dtype. ``path``:
    ``"fused"``, ``"split"``, ``"split-ln"`` or None (``path_for`` the channel count and dtype).
    """
    check_path(path)
    x = x.contiguous()
    path = path or path_for(x.shape[1], x.dtype)
    if path == "fused":
        g, partial = dw_gate_pool(block, film_ln_expand(block, x, film))
        return attn_proj_ffn(block, x, film, g, attention(block, partial, x.shape[2] * x.shape[3]))
    if path == "split-ln":  # each LayerNorm its own pass, then plain GEMMs
        t = ln_gemm(None, block.conv1, film_layernorm(block.norm1, x, film))
    else:
        t = ln_gemm(block.norm1, block.conv1, x, film)
    g, partial = dw_gate_pool(block, t)
    att = attention(block, partial, x.shape[2] * x.shape[3])
    x1 = gemm_res(block.conv3, g, x, block.beta, att=att, film=film)
    if path == "split-ln":
        h = ln_gemm(None, block.conv4, film_layernorm(block.norm2, x1), gate=True)
    else:
        h = ln_gemm(block.norm2, block.conv4, x1, gate=True)
    return gemm_res(block.conv5, h, x1, block.gamma)


class FusedNAFBlock(torch.nn.Module):
    """A NAFBlock (and the dose FiLM in front of it, if any) run by the fused kernels; same weights.

    ``forward(x, emb=None)``: ``emb`` is the dose embedding when there is a FiLM (``CondBlock``'s
    signature); a bare NAFBlock's place in a ``Sequential`` calls ``forward(x)``.
    """

    def __init__(self, block: torch.nn.Module, film: torch.nn.Module | None = None, path: str | None = None):
        super().__init__()
        self.block = block  # the reference module: its parameters are the ones used
        self.film = film
        self.path = check_path(path)  # one of PATHS, or None: by the channel count and dtype

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        rows = film_rows(self.film, emb) if self.film is not None else None  # fp32 whatever the dtypes
        return nafblock_forward(self.block, x, rows, self.path)
