"""The fused NAFBlock forward: three Triton kernels, their launchers and the module that uses them.

One block (with its optional dose scale/shift, ``CondBlock``) in three passes over memory:

1. ``_film_ln_expand``: FiLM (x * (1 + scale) + shift) -> LayerNorm2d -> 1x1 conv C -> 2C.
   Reads x (C), writes t (2C).
2. ``_dw_gate_pool``: 3x3 depthwise conv on t -> SimpleGate -> g (C), plus per-tile channel sums of
   g for the attention's global average pool. Reads t (2C, neighbours from cache), writes g (C).
   The pool and its 1x1 conv (N x C numbers) are two tiny torch ops between passes 2 and 3.
3. ``_attn_proj_ffn``: g * attention -> 1x1 conv3 -> x + beta * y -> LayerNorm2d -> 1x1 conv4
   C -> 2C -> SimpleGate -> 1x1 conv5 -> + gamma * y. Reads g and x (FiLM recomputed: cheaper than
   storing it), writes the output (C).

So 9 C values move per pixel against about 25 C for the eager block (every op reads and writes its
tensor). NCHW in and out; a program owns a tile of ``BLOCK_P`` consecutive pixels of one image and
all channels, padded to a power of two (at least 16, the smallest ``tl.dot``). LayerNorm statistics,
dots and every intermediate are fp32 whatever the input dtype (NAFNet activations overflow fp16
sums); fp16/bf16 inputs feed the dots in their own dtype (tensor cores), fp32 inputs in IEEE fp32
(no TF32), so the fp32 path matches the reference to rounding.

Block sizes are autotuned on a GPU over ``BLOCK_P`` in {32, 64, 128} and 4 or 8 warps, keyed by the
channel count and image size, with tiles of more than 16K fp32 values pruned (register pressure at
C = 256). Under ``TRITON_INTERPRET=1`` (CPU) one fixed config runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreting

__all__ = [
    "nafblock_forward",
    "film_ln_expand",
    "dw_gate_pool",
    "attention",
    "attn_proj_ffn",
    "FusedNAFBlock",
]


# Fixed when this module is imported (TRITON_INTERPRET is read by triton at import time too).
EMULATED_HALF_DOT = tl.constexpr(interpreting())


def _configs():
    return [triton.Config({"BLOCK_P": p}, num_warps=w) for p in (32, 64, 128) for w in (4, 8)]


def _prune(configs, named_args, **kwargs):
    cp = named_args.get("CP", kwargs.get("CP", 16))
    kept = [c for c in configs if cp * c.kwargs["BLOCK_P"] <= 16384]
    return kept or configs[:1]


# --- shared pieces ----------------------------------------------------------------------------------
@triton.jit
def _load_tile(ptr, base, offs_c, offs_p, C, HW):
    """[CP, BLOCK_P] fp32 tile of channels offs_c and pixels offs_p of one image (zeros outside)."""
    m = (offs_c[:, None] < C) & (offs_p[None, :] < HW)
    return tl.load(ptr + base + offs_c[:, None] * HW + offs_p[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _vec(ptr, offs, n):
    return tl.load(ptr + offs, mask=offs < n, other=0.0).to(tl.float32)


@triton.jit
def _film(x, rows_ptr, offs_c, C):
    """The dose FiLM on an fp32 [CP, P] tile; rows_ptr: this image's [1 + scale | shift] (2C fp32)."""
    return x * _vec(rows_ptr, offs_c, C)[:, None] + _vec(rows_ptr + C, offs_c, C)[:, None]


@triton.jit
def _input_tile(x_ptr, film_ptr, n, offs_c, offs_p, C, HW, HAS_FILM: tl.constexpr):
    """Image n's [CP, BLOCK_P] fp32 tile of the block input, the dose FiLM applied when there is one."""
    x = _load_tile(x_ptr, n * C * HW, offs_c, offs_p, C, HW)
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
def _matmul(w_ptr, row0, offs_c, C, K, x, DT: tl.constexpr, IEEE: tl.constexpr):
    """W[row0:row0+C, :K] @ x for an fp32 [KP, P] tile x; fp32 result [CP, P].

    IEEE: fp32 operands, no TF32. Otherwise operands rounded to DT (fp16/bf16) with fp32 accumulation:
    tensor cores on a GPU; under the interpreter, whose bf16 dot is wrong (numpy has no bf16), the same
    numbers through an fp32 dot of the rounded operands (their products are exact in fp32).
    """
    m = (offs_c[:, None] < C) & (offs_c[None, :] < K)
    w = tl.load(w_ptr + (row0 + offs_c[:, None]) * K + offs_c[None, :], mask=m, other=0.0)
    if IEEE:
        return tl.dot(w.to(tl.float32), x, input_precision="ieee")
    if EMULATED_HALF_DOT:
        return tl.dot(w.to(DT).to(tl.float32), x.to(DT).to(tl.float32), input_precision="ieee")
    return tl.dot(w.to(DT), x.to(DT))


# --- pass 1 -------------------------------------------------------------------------------------------
@triton.jit
def _film_ln_expand(
    x_ptr, film_ptr, lnw_ptr, lnb_ptr, w1_ptr, b1_ptr, t_ptr,
    C, HW, eps,
    HAS_FILM: tl.constexpr, IEEE: tl.constexpr, CP: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(1)
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.arange(0, CP)
    cmask = offs_c < C
    x = _input_tile(x_ptr, film_ptr, n, offs_c, offs_p, C, HW, HAS_FILM)
    xn = _layernorm(x, _vec(lnw_ptr, offs_c, C), _vec(lnb_ptr, offs_c, C), cmask, C, eps)
    DT = t_ptr.dtype.element_ty
    smask = cmask[:, None] & (offs_p[None, :] < HW)
    base = n * 2 * C * HW + offs_c[:, None] * HW + offs_p[None, :]
    for half in tl.static_range(2):
        t = _matmul(w1_ptr, half * C, offs_c, C, C, xn, DT, IEEE)
        t += _vec(b1_ptr + half * C, offs_c, C)[:, None]
        tl.store(t_ptr + base + half * C * HW, t.to(DT), mask=smask)


# --- pass 2 -------------------------------------------------------------------------------------------
@triton.jit
def _dw_gate_pool(
    t_ptr, w2_ptr, b2_ptr, g_ptr, part_ptr,
    C, H, W, T,
    BLOCK_P: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(1)
    tile = tl.program_id(0)
    HW = H * W
    offs_p = tile * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < HW
    h = offs_p // W
    w = offs_p % W
    DT = g_ptr.dtype.element_ty
    for c in range(0, C):
        acc_a = tl.zeros([BLOCK_P], dtype=tl.float32) + tl.load(b2_ptr + c).to(tl.float32)
        acc_b = tl.zeros([BLOCK_P], dtype=tl.float32) + tl.load(b2_ptr + C + c).to(tl.float32)
        base_a = (n * 2 * C + c) * HW
        base_b = (n * 2 * C + C + c) * HW
        for k in tl.static_range(9):
            hh = h + (k // 3 - 1)
            ww = w + (k % 3 - 1)
            m = pmask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            q = hh * W + ww
            va = tl.load(t_ptr + base_a + q, mask=m, other=0.0).to(tl.float32)
            vb = tl.load(t_ptr + base_b + q, mask=m, other=0.0).to(tl.float32)
            acc_a += va * tl.load(w2_ptr + c * 9 + k).to(tl.float32)
            acc_b += vb * tl.load(w2_ptr + (C + c) * 9 + k).to(tl.float32)
        g = (acc_a * acc_b).to(DT)
        tl.store(g_ptr + (n * C + c) * HW + offs_p, g, mask=pmask)
        # The pool sums g as stored (rounded to its dtype), as the reference pools its tensor.
        tl.store(part_ptr + (n * T + tile) * C + c, tl.sum(tl.where(pmask, g.to(tl.float32), 0.0), axis=0))


# --- pass 3 -------------------------------------------------------------------------------------------
@triton.jit
def _attn_proj_ffn(
    x_ptr, film_ptr, g_ptr, att_ptr, w3_ptr, b3_ptr, beta_ptr, lnw_ptr, lnb_ptr,
    w4_ptr, b4_ptr, w5_ptr, b5_ptr, gamma_ptr, out_ptr,
    C, HW, eps,
    HAS_FILM: tl.constexpr, IEEE: tl.constexpr, CP: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(1)
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.arange(0, CP)
    cmask = offs_c < C
    DT = out_ptr.dtype.element_ty
    x = _input_tile(x_ptr, film_ptr, n, offs_c, offs_p, C, HW, HAS_FILM)
    g = _load_tile(g_ptr, n * C * HW, offs_c, offs_p, C, HW) * _vec(att_ptr + n * C, offs_c, C)[:, None]
    y = _matmul(w3_ptr, 0, offs_c, C, C, g, DT, IEEE) + _vec(b3_ptr, offs_c, C)[:, None]
    x = x + y * _vec(beta_ptr, offs_c, C)[:, None]
    xn = _layernorm(x, _vec(lnw_ptr, offs_c, C), _vec(lnb_ptr, offs_c, C), cmask, C, eps)
    a = _matmul(w4_ptr, 0, offs_c, C, C, xn, DT, IEEE) + _vec(b4_ptr, offs_c, C)[:, None]
    b = _matmul(w4_ptr, C, offs_c, C, C, xn, DT, IEEE) + _vec(b4_ptr + C, offs_c, C)[:, None]
    y = _matmul(w5_ptr, 0, offs_c, C, C, a * b, DT, IEEE) + _vec(b5_ptr, offs_c, C)[:, None]
    out = x + y * _vec(gamma_ptr, offs_c, C)[:, None]
    m = cmask[:, None] & (offs_p[None, :] < HW)
    tl.store(out_ptr + n * C * HW + offs_c[:, None] * HW + offs_p[None, :], out.to(DT), mask=m)


_TUNED = {
    k: triton.autotune(_configs(), key=["C", "HW"], prune_configs_by={"early_config_prune": _prune})(k)
    for k in (_film_ln_expand, _attn_proj_ffn)
}
_TUNED[_dw_gate_pool] = triton.autotune(_configs(), key=["C", "H", "W"])(_dw_gate_pool)
INTERPRET_BLOCK_P = 64


# --- launchers ----------------------------------------------------------------------------------------
def _launch(kernel, grid_of, *args, **meta):
    """The autotuned kernel on a GPU; the plain one with a fixed BLOCK_P under the interpreter."""
    if interpreting():
        blk = INTERPRET_BLOCK_P
        kernel[grid_of(blk)](*args, BLOCK_P=blk, **meta)
        return blk
    tuned = _TUNED[kernel]
    tuned[lambda m: grid_of(m["BLOCK_P"])](*args, **meta)
    return tuned.best_config.kwargs["BLOCK_P"]


def _film_arg(x, film):
    return (film.contiguous().float(), True) if film is not None else (x, False)  # x: an unused pointer


def film_ln_expand(block, x: torch.Tensor, film: torch.Tensor | None = None) -> torch.Tensor:
    """Pass 1: conv1(norm1(FiLM(x))), (N, 2C, H, W) in x's dtype. ``x`` contiguous NCHW."""
    n, c, h, w = x.shape
    f, has_film = _film_arg(x, film)
    t = torch.empty((n, 2 * c, h, w), device=x.device, dtype=x.dtype)
    _launch(
        _film_ln_expand,
        lambda bp: (triton.cdiv(h * w, bp), n),
        x, f, block.norm1.weight, block.norm1.bias, block.conv1.weight, block.conv1.bias, t,
        c, h * w, block.norm1.eps,
        HAS_FILM=has_film, IEEE=x.dtype == torch.float32, CP=_cp(c),
    )  # fmt: skip
    return t


def dw_gate_pool(block, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass 2: g = SimpleGate(conv2(t)) (N, C, H, W) and its channel means (N, C) fp32."""
    n, c2, h, w = t.shape
    c, hw = c2 // 2, h * w
    g = torch.empty((n, c, h, w), device=t.device, dtype=t.dtype)
    # Per-tile partial sums: the tile count depends on the BLOCK_P the autotuner picks, so the buffer
    # is sized for the smallest one and only the tiles of the chosen config are summed.
    tiles_max = triton.cdiv(hw, 32)
    part = torch.zeros((n, tiles_max, c), device=t.device, dtype=torch.float32)
    bp = _launch(
        _dw_gate_pool,
        lambda bp: (triton.cdiv(hw, bp), n),
        t, block.conv2.weight, block.conv2.bias, g, part,
        c, h, w, tiles_max,
    )  # fmt: skip
    return g, part[:, : triton.cdiv(hw, bp)].sum(1) / hw


def attention(block, pool: torch.Tensor) -> torch.Tensor:
    """The channel attention's 1x1 conv on the pooled means: (N, C) fp32 (a tiny torch op)."""
    conv = block.sca[1]
    c = pool.shape[1]
    return torch.addmm(conv.bias.float(), pool, conv.weight.float().reshape(c, c).t()).contiguous()


def attn_proj_ffn(block, x, film, g, att) -> torch.Tensor:
    """Pass 3: the rest of the block (attention scale, conv3, beta residual, norm2, conv4, gate, conv5,
    gamma residual) on FiLM(x), g and the attention (N, C)."""
    n, c, h, w = x.shape
    f, has_film = _film_arg(x, film)
    out = torch.empty_like(x)
    _launch(
        _attn_proj_ffn,
        lambda bp: (triton.cdiv(h * w, bp), n),
        x, f, g, att, block.conv3.weight, block.conv3.bias, block.beta,
        block.norm2.weight, block.norm2.bias, block.conv4.weight, block.conv4.bias,
        block.conv5.weight, block.conv5.bias, block.gamma, out,
        c, h * w, block.norm2.eps,
        HAS_FILM=has_film, IEEE=x.dtype == torch.float32, CP=_cp(c),
    )  # fmt: skip
    return out


def _cp(c: int) -> int:
    return max(16, triton.next_power_of_2(c))


def nafblock_forward(block, x: torch.Tensor, film: torch.Tensor | None = None) -> torch.Tensor:
    """One NAFBlock (``ctdn.models.layers.NAFBlock``'s weights) on NCHW ``x``, fused.

    ``film``: None, or (N, 2C) fp32 rows ``[1 + scale | shift]`` of the dose FiLM applied to x
    first (``CondBlock``). x may be fp32, fp16 or bf16; the weights are read in any dtype.
    """
    x = x.contiguous()
    g, pool = dw_gate_pool(block, film_ln_expand(block, x, film))
    return attn_proj_ffn(block, x, film, g, attention(block, pool))


class FusedNAFBlock(torch.nn.Module):
    """A NAFBlock (and the dose FiLM in front of it, if any) run by the fused kernels; same weights.

    ``forward(x, emb=None)``: ``emb`` is the dose embedding when there is a FiLM (``CondBlock``'s
    signature); a bare NAFBlock's place in a ``Sequential`` calls ``forward(x)``.
    """

    def __init__(self, block: torch.nn.Module, film: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.block = block  # the reference module: its parameters are the ones used
        self.film = film

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        rows = None
        if self.film is not None:
            proj = self.film.proj  # in fp32 whatever the model's dtype: (N, 2C) numbers
            ss = torch.nn.functional.silu(
                torch.nn.functional.linear(emb.float(), proj.weight.float(), proj.bias.float())
            )
            scale, shift = ss.chunk(2, dim=1)
            rows = torch.cat([1 + scale, shift], dim=1)
        return nafblock_forward(self.block, x, rows)
