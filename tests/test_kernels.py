"""The fused NAFBlock kernels against the reference torch modules.

On a machine without CUDA they run on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1,
set here before the kernels are imported), on small awkward shapes: odd H and W, C not a power of
two, batch 1 and > 1. On a GPU the same tests run the compiled kernels.

Tolerances, as a fraction of the largest |reference| value of the fp32 reference: fp32 1e-5 (IEEE
dots, no TF32; measured ~5e-8), fp16 3e-3 (measured ~7e-4: operands rounded to fp16 at each dot),
bf16 3e-2 (measured ~8e-3: bf16 keeps 8 mantissa bits). The fp32 reference runs in IEEE fp32
(``ctdn.backends.ieee_fp32``): with cuDNN's default TF32 convolutions it was itself ~6e-5 off on an
H200, and nine fp32 cases failed on the reference's error, not the kernels'.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest
import torch

from ctdn import backends, kernels
from ctdn.errors import MissingDependencyError
from ctdn.models import build
from ctdn.models.layers import NAFBlock
from ctdn.models.nafnet import CondBlock

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before triton.jit decorates the kernels (import below)

pytestmark = [
    pytest.mark.skipif(kernels.unavailable() is not None, reason=str(kernels.unavailable())),
    pytest.mark.usefixtures("quick_autotune"),
]

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 3e-2}
DTYPES = list(TOL)
SHAPES = [(1, 8, 7, 9), (2, 24, 5, 13), (3, 5, 4, 6), (1, 16, 16, 16)]  # (N, C, H, W)


@pytest.fixture(autouse=True)
def _ieee_fp32_reference():
    """The fp32 reference in IEEE fp32: on a GPU, cuDNN's default TF32 convolutions are ~3e-4 off."""
    with backends.ieee_fp32():
        yield


@pytest.fixture(scope="module")
def nb():
    from ctdn.kernels import nafblock

    return nafblock


def _block(c: int, film: bool, seed: int = 0) -> CondBlock:
    torch.manual_seed(seed)
    b = CondBlock(c, 64 if film else None)
    with torch.no_grad():  # non-trivial weights (beta, gamma and the FiLM start at zero)
        for p in b.parameters():
            p.normal_(0, 0.3)
    return b.eval().to(DEVICE)


def _inputs(n, c, h, w, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, h, w, generator=g) * 2 + 0.5).to(DEVICE)
    emb = torch.rand(n, 64, generator=g).to(DEVICE)
    return x, emb


def _check(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, out_dtype=None) -> None:
    assert got.dtype == (out_dtype or dtype) and got.shape == ref.shape
    err = (got.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item()
    assert err <= TOL[dtype] * scale, f"{dtype}: max error {err:.3g} > {TOL[dtype]} x {scale:.3g}"


def _film_rows(block: CondBlock, emb):
    scale, shift = torch.nn.functional.silu(block.film.proj(emb)).chunk(2, dim=1)
    return torch.cat([1 + scale, shift], dim=1)


@pytest.mark.parametrize("path", kernels.PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("film", [True, False], ids=["film", "plain"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@torch.no_grad()
def test_fused_block_matches_the_reference(nb, shape, film, dtype, path):
    block = _block(shape[1], film)
    x, emb = _inputs(*shape)
    ref = block(x, emb if film else None)  # fp32 reference
    fused = nb.FusedNAFBlock(block.block.to(dtype), block.film, path=path)
    xin = x.to(dtype)
    before = xin.clone()
    got = fused(xin, emb if film else None)
    _check(got, ref, dtype)
    assert torch.equal(xin, before), "the input was modified"


@pytest.mark.parametrize(("c", "path"), [(100, "fused"), (130, "split-ln")])
@torch.no_grad()
def test_blocks_either_side_of_the_crossover_take_their_path_and_match(nb, c, path):
    """The widest fused block (C = 100 pads to 128 rows) and the narrowest split one (130), fp16, by
    the path ``path_for`` picks: the widths where a padding or tiling slip would show."""
    assert nb.path_for(c, torch.float16) == path
    block = _block(c, film=True)
    x, emb = _inputs(2, c, 5, 7)
    ref = block(x, emb)
    fused = nb.FusedNAFBlock(block.block.half(), block.film)
    _check(fused(x.half(), emb), ref, torch.float16)


def _space(nb, c, dtype, path):
    """(kind, config) of every config the GPU autotuner may pick for a block of c channels."""
    out = []
    for kernel, _, configs in nb.plan(c, dtype, path=path):
        kind = nb._SPACE[kernel][0]
        out += [(kind, cfg) for cfg in configs if (kind, cfg.kwargs) not in [(k, o.kwargs) for k, o in out]]
    return out


def _forcing(nb, kind, cfg):
    """``nb._launch`` that runs ``cfg`` for the kernels of ``kind`` (compiled with its warps and
    stages on a GPU, with its block sizes under the interpreter) and the usual one for the others."""
    real = nb._launch

    def launch(kernel, grid_of, *args, **meta):
        if nb._SPACE[kernel][0] != kind:
            return real(kernel, grid_of, *args, **meta)
        warps = {} if kernels.interpreting() else {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
        kernel[grid_of(cfg.kwargs)](*args, **cfg.kwargs, **meta, **warps)
        launch.forced += 1
        return cfg.kwargs

    launch.forced = 0
    return launch


SPACE_CASES = [
    (20, torch.float16, "fused"),
    (40, torch.float16, "split"),
    (40, torch.float32, "split"),
    (40, torch.float16, "split-ln"),
]


@pytest.mark.parametrize(("c", "dtype", "path"), SPACE_CASES, ids=lambda v: str(v).replace("torch.", ""))
@torch.no_grad()
def test_every_config_the_autotuner_may_pick_computes_the_block(nb, monkeypatch, c, dtype, path):
    """Each config the autotuner may pick, in turn, computes the block: tiles wider than the problem,
    BLOCK_K 32 of the fp16 GEMMs, 8 channels per depthwise program. The autotuner itself only times
    the configs and checks none, and the interpreter normally runs one small config per kernel; on a
    GPU this compiles and runs each one."""
    block = _block(c, film=True)
    x, emb = _inputs(2, c, 5, 9)
    ref = block(x, emb)
    fused = nb.FusedNAFBlock(block.block.to(dtype), block.film, path=path)
    space = _space(nb, c, dtype, path)
    assert len(space) >= 11
    for kind, cfg in space:
        monkeypatch.setattr(nb, "_launch", launch := _forcing(nb, kind, cfg))
        _check(fused(x.to(dtype), emb), ref, dtype)
        assert launch.forced >= 1, (kind, cfg)
        monkeypatch.undo()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_dot_is_narrower_than_older_tritons_allow(nb, dtype):
    """triton 3.2-3.7 refuse a tl.dot with K < 16 on 16- and 32-bit operands (3.8 allows 8 in fp32, and
    CI has a newer one): every config's K chunk and the fused tiles' padded C stay at MIN_DOT_K or more,
    so the kernels also compile with the triton 3.6 that CUDA builds of torch 2.11 bring."""
    assert nb.MIN_DOT_K == 16 and nb.INTERPRET_META["gemm"]["BLOCK_K"] >= nb.MIN_DOT_K
    for c in (1, 12, 40, 130, 256):
        for path in ("fused", "split"):
            for _kernel, meta, configs in nb.plan(c, dtype, path=path, pruned=False):
                assert meta.get("CP", nb.MIN_DOT_K) >= nb.MIN_DOT_K
                assert all(cfg.kwargs.get("BLOCK_K", nb.MIN_DOT_K) >= nb.MIN_DOT_K for cfg in configs)


@torch.no_grad()
def _op_by_op(n, c, h, w):
    """A FiLM'd block, its inputs and every intermediate of the reference, op by op in fp32."""
    cb = _block(c, film=True)
    x, emb = _inputs(n, c, h, w)
    blk = cb.block
    r = types.SimpleNamespace(cb=cb, blk=blk, x=x, emb=emb, rows=_film_rows(cb, emb))
    r.xf = cb.film(x, emb)
    r.t = blk.conv1(blk.norm1(r.xf))
    r.g = blk.sg(blk.conv2(r.t))
    r.pool = r.g.mean((2, 3))
    r.att = blk.sca(r.g).reshape(n, c)
    r.x1 = r.xf + blk.beta * blk.conv3(r.g * r.att[:, :, None, None])
    r.h = blk.sg(blk.conv4(blk.norm2(r.x1)))
    r.out = r.x1 + blk.gamma * blk.conv5(r.h)
    return r


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@torch.no_grad()
def test_each_pass_matches_its_reference_ops(nb, dtype):
    r = _op_by_op(2, 12, 9, 7)
    b = r.blk.to(dtype)
    _check(nb.film_ln_expand(b, r.x.to(dtype), r.rows), r.t, dtype)
    # Passes 2 and 3 on the reference's own inputs, so each is checked alone.
    g, partial = nb.dw_gate_pool(b, r.t.to(dtype).contiguous())
    _check(g, r.g, dtype)
    _check(partial.sum(1) / 63, r.pool, dtype, out_dtype=torch.float32)  # (N, tiles, C) fp32 sums
    # the attention on the reference's pool (as one tile of sums), b's weights in dtype
    _check(nb.attention(b, r.pool[:, None] * 63, 63), r.att, dtype, out_dtype=torch.float32)
    out = nb.attn_proj_ffn(b, r.x.to(dtype), r.rows, r.g.to(dtype).contiguous(), r.att.contiguous())
    _check(out, r.out, dtype)


@pytest.mark.parametrize("hw", [(1, 9), (7, 1), (1, 1), (2, 64), (3, 33)], ids=lambda s: f"{s[0]}x{s[1]}")
@torch.no_grad()
def test_the_depthwise_pass_pads_every_border_of_any_image(nb, hw):
    """One-pixel rows and columns (every side tap outside the image), a 1 x 1 image, a row that is a
    whole interpreter tile (64 pixels: the tile's end is the row's end) and one that crosses it."""
    h, w = hw
    blk = _block(6, film=False).block
    t = torch.randn(2, 12, h, w, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    g, partial = nb.dw_gate_pool(blk, t)
    ref = blk.sg(blk.conv2(t))
    _check(g, ref, torch.float32)
    _check(partial.sum(1), ref.sum((2, 3)), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@torch.no_grad()
def test_the_attention_sums_every_tile_of_a_view_of_partial_sums(nb, dtype):
    """11 tiles (three BLOCK_T chunks under the interpreter, the last one partial), read through a
    view of a wider buffer as pass 2 leaves them, C = 12 (not a power of two)."""
    r = _op_by_op(2, 12, 9, 7)
    b = r.blk.to(dtype)
    buf = torch.randn(2, 16, 12, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    buf[:, 10] = r.pool * 63 - buf[:, :10].sum(1)  # the 11 tiles sum to the pooled total
    _check(nb.attention(b, buf[:, :11], 63), r.att, dtype, out_dtype=torch.float32)
    with pytest.raises(ValueError, match="rows of C contiguous values"):
        nb.attention(b, buf[:, :11].transpose(1, 2).contiguous().transpose(1, 2), 63)


@torch.no_grad()
def test_the_film_rows_match_the_reference_film(nb):
    """[1 + scale | shift] from the dose embedding in one kernel: 2C = 40 rows (three BLOCK_J tiles
    under the interpreter, the last one partial), fp32, and an fp16 FiLM and embedding as the
    benchmark's pure-fp16 block has them (read as they are, computed in fp32)."""
    cb = _block(20, film=True)
    _, emb = _inputs(3, 20, 2, 2)
    _check(nb.film_rows(cb.film, emb), _film_rows(cb, emb), torch.float32)
    half = CondBlock(20, 64).to(DEVICE)
    half.load_state_dict(cb.state_dict())
    half.film.half()
    ref = _film_rows(cb, emb.half().float())  # the fp16 embedding, fp32 weights
    _check(nb.film_rows(half.film, emb.half()), ref, torch.float16, out_dtype=torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@torch.no_grad()
def test_each_split_kernel_matches_its_reference_ops(nb, dtype):
    """The wide-block path's GEMM kernels alone, on C = 40: three K chunks (the last one partial)
    and three output tiles of 16 channels under the interpreter's config."""
    r = _op_by_op(2, 40, 5, 9)
    b = r.blk.to(dtype)
    _check(nb.ln_gemm(b.norm1, b.conv1, r.x.to(dtype), r.rows), r.t, dtype)
    x1 = nb.gemm_res(b.conv3, r.g.to(dtype), r.x.to(dtype), b.beta, att=r.att.contiguous(), film=r.rows)
    _check(x1, r.x1, dtype)
    _check(nb.ln_gemm(b.norm2, b.conv4, r.x1.to(dtype), gate=True), r.h, dtype)
    _check(nb.gemm_res(b.conv5, r.h.to(dtype), r.x1.to(dtype), b.gamma), r.out, dtype)
    # path "split-ln": each LayerNorm alone (rounded to dtype, as the reference's is), then plain GEMMs
    xn = nb.film_layernorm(b.norm1, r.x.to(dtype), r.rows)
    mu, var = r.xf.mean(1, keepdim=True), r.xf.var(1, unbiased=False, keepdim=True)
    ln = b.norm1.weight.float()[:, None, None] * (r.xf - mu) / (var + b.norm1.eps).sqrt()
    _check(xn, ln + b.norm1.bias.float()[:, None, None], dtype)
    _check(nb.ln_gemm(None, b.conv1, xn), r.t, dtype)
    _check(nb.ln_gemm(None, b.conv4, nb.film_layernorm(b.norm2, r.x1.to(dtype)), gate=True), r.h, dtype)
    with pytest.raises(ValueError, match="a FiLM needs the norm"):
        nb.ln_gemm(None, b.conv1, xn, r.rows)


def test_the_path_follows_the_channel_count_and_a_bad_one_is_refused(nb):
    assert [nb.path_for(c) for c in (5, 16, 100, 128, 129, 256)] == ["fused"] * 4 + ["split-ln"] * 2
    assert nb.path_for(100, torch.bfloat16) == "fused"
    assert [nb.path_for(c, torch.float32) for c in (5, 32, 33, 128)] == ["fused"] * 2 + ["split-ln"] * 2
    # three passes, seven (split-ln) or five (split) GEMM/norm/depthwise kernels, plus the FiLM's
    # rows and the attention
    assert len(nb.plan(64, torch.float16)) == 5 and len(nb.plan(64, torch.float32)) == 9
    assert len(nb.plan(64, torch.float32, path="split")) == 7
    assert len(nb.plan(64, torch.float16, film=False)) == 4
    with pytest.raises(ValueError, match="path must be"):
        nb.nafblock_forward(_block(8, film=False).block, torch.zeros(1, 8, 4, 4, device=DEVICE), path="fast")
    with pytest.raises(ValueError, match="path must be"):
        kernels.fuse(build("tiny"), path="fast")
    with pytest.raises(ValueError, match="path must be"):
        nb.FusedNAFBlock(_block(8, film=False).block, path="Split")


@pytest.mark.parametrize(
    ("c", "dtype", "film", "path"),
    [(20, torch.float16, True, "fused"), (12, torch.float32, False, "fused"),
     (40, torch.bfloat16, True, "split"), (40, torch.float32, False, "split"),
     (40, torch.float16, True, "split-ln"), (24, torch.float32, False, "split-ln")],
    ids=str,
)  # fmt: skip
@torch.no_grad()
def test_the_launchers_launch_what_plan_lists(nb, monkeypatch, c, dtype, film, path):
    """``plan`` and ``arg_types`` are what ctdn.kernels.resources compiles for a GPU without one: the
    launchers must launch those kernels, in that order, with those constexprs and argument types."""
    from ctdn.kernels.resources import _TRITON_TYPES as TL  # the names the resource check compiles with

    launched = []
    real = nb._launch

    def spy(kernel, grid_of, *args, **meta):
        launched.append((kernel, args, meta))
        return real(kernel, grid_of, *args, **meta)

    monkeypatch.setattr(nb, "_launch", spy)
    block = _block(c, film)
    x, emb = _inputs(2, c, 5, 7)
    nb.FusedNAFBlock(block.block.to(dtype), block.film if film else None, path=path)(x.to(dtype), emb)
    want = nb.plan(c, dtype, film=film, path=path)
    assert [k.__name__ for k, _, _ in launched] == [k.__name__ for k, _, _ in want]
    for (kernel, args, meta), (_, constexprs, configs) in zip(launched, want, strict=True):
        assert meta == constexprs, kernel.__name__
        # the rest of the signature: these constexprs and the autotuned block sizes
        assert set(kernel.arg_names[len(args) :]) == set(meta) | set(configs[0].kwargs), kernel.__name__
        types = nb.arg_types(kernel, TL[dtype])
        unused = {"film_ptr"} if not meta.get("HAS_FILM", True) else set()
        unused |= {"att_ptr"} if meta.get("HAS_ATT") is False else set()
        for name, a in zip(kernel.arg_names[: len(args)], args, strict=True):
            if torch.is_tensor(a):
                assert name in unused or types[name] == "*" + TL[a.dtype], (kernel.__name__, name)
            elif isinstance(a, float):
                assert types[name] == "fp32", (kernel.__name__, name)
            else:
                assert isinstance(a, int) and types[name] == "i32" and 0 < a < 2**31, (kernel.__name__, name)


def test_quick_autotuning_swaps_each_autotuners_timer_and_restores_it(nb, monkeypatch):
    from conftest import quick_autotuning

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what the fixture does on a GPU
    before = {k: t._do_bench for k, t in nb._TUNED.items()}
    for t in nb._TUNED.values():
        monkeypatch.setattr(t, "cache_results", True, raising=False)  # as on a GPU (off when interpreting)
    with quick_autotuning() as tuned:
        assert len(tuned) == len(nb._TUNED)
        assert all(t._do_bench is not before[k] for k, t in nb._TUNED.items())
        assert not any(t.cache_results for t in tuned)  # quick picks stay out of the disk cache
    assert all(t._do_bench is before[k] for k, t in nb._TUNED.items())
    assert all(t.cache_results for t in nb._TUNED.values())


@pytest.mark.parametrize("env", ["1", "0"])
def test_autotuned_picks_are_kept_on_disk_unless_turned_off(env):
    """On a GPU the picks go to Triton's cache (a new process does not re-time every config);
    CTDN_AUTOTUNE_CACHE=0 turns that off. Checked outside the interpreter, which never caches."""
    import inspect

    import triton

    if "cache_results" not in inspect.signature(triton.autotune).parameters:
        pytest.skip(f"triton {triton.__version__} cannot keep autotuning results on disk")
    code = (
        "from ctdn.kernels import nafblock as nb; "
        "print(sorted({t.cache_results for t in nb._TUNED.values()}))"
    )
    env_vars = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"CTDN_AUTOTUNE_CACHE": env}
    out = subprocess.run([sys.executable, "-c", code], env=env_vars, capture_output=True, text=True)
    if out.returncode and "driver" in out.stderr.lower():
        pytest.skip("this triton needs a GPU driver to make its autotuners outside the interpreter")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == (["[True]"] if env == "1" else ["[False]"])


def test_every_autotuner_is_keyed_by_the_batch(nb):
    """A tile tuned at batch 1 is not kept at batch 32 (on an H200 it was, before N was a key)."""
    for kernel, tuned in nb._TUNED.items():
        key = nb._SPACE[kernel][3]
        assert "N" in key and set(key) <= set(kernel.arg_names), kernel.__name__
        assert list(tuned.keys) == key, kernel.__name__  # what triton's autotuner was given


def test_the_autotuner_spaces_are_pruned_by_tile_size_and_precision(nb):
    """What the GPU autotuner may pick (the configs ctdn.kernels.resources compiles spill-free)."""

    def configs(c, dtype, path, kernel):
        return next(cfgs for k, _, cfgs in nb.plan(c, dtype, path=path) if k.__name__ == kernel)

    def tiles(cfgs):
        return {(c.kwargs["BLOCK_P"], c.num_warps) for c in cfgs}

    # fused: a [CP, BLOCK_P] fp32 tile at most 16 values a thread (8 with IEEE fp32 dots)
    assert tiles(configs(128, torch.float16, "fused", "_attn_proj_ffn")) == {(32, 8)}
    assert tiles(configs(32, torch.float32, "fused", "_attn_proj_ffn")) == {(32, 4), (32, 8), (64, 8)}
    assert len(configs(16, torch.bfloat16, "fused", "_film_ln_expand")) == 6
    # split GEMMs: K chunks of 32 and three stages in fp16/bf16; of 16 and two stages in fp32, but one
    # for the 32 x 64 tile (which spills 8 B with two)
    half, ieee = {(32, 3)}, {(16, 2), (16, 1)}
    for dtype, want in ((torch.float16, half), (torch.bfloat16, half), (torch.float32, ieee)):
        for kernel in ("_ln_gemm", "_gemm_res"):
            cfgs = configs(256, dtype, "split", kernel)
            assert len(cfgs) == 5
            assert {(c.kwargs["BLOCK_K"], c.num_stages) for c in cfgs} == want
    unpruned = nb.plan(256, torch.float16, path="split", pruned=False)[1][2]  # [0]: the FiLM's rows
    assert len(unpruned) == 10 and {c.kwargs["BLOCK_K"] for c in unpruned} == {nb.MIN_DOT_K, nb.HALF_BLOCK_K}
    # the autotuner of each kernel prunes as plan says (launchers pass the constexprs as keywords)
    cases = ((128, torch.float16, "fused"), (32, torch.float32, "fused"), (64, torch.float32, "split"))
    for c, dtype, path in cases:
        for kernel, meta, cfgs in nb.plan(c, dtype, path=path):
            tuned = nb._TUNED[kernel]
            tuned.nargs = {}
            assert tuned.prune_configs(meta) == cfgs, kernel.__name__


@pytest.mark.parametrize("path", ["fused", "split", "split-ln"])
@torch.no_grad()
def test_large_values_keep_layernorm_statistics_in_fp32(nb, path):
    """Activations whose squares overflow fp16 (NAFNet's known fp16 failure) still normalise."""
    block = _block(16, film=False)
    x, _ = _inputs(1, 16, 6, 5)
    x = x * 300 + 2000  # |x| up to ~3000: x*x > 65504
    ref = block(x)
    got = nb.FusedNAFBlock(block.block.half(), path=path)(x.half())
    assert torch.isfinite(got).all()
    _check(got, ref, torch.float16)


@pytest.mark.parametrize("path", [None, "split"])
@torch.no_grad()
def test_fuse_swaps_every_block_and_shares_the_weights(path):
    torch.manual_seed(0)
    model = build("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    model = model.to(DEVICE)
    n_blocks = sum(isinstance(m, NAFBlock) for m in model.modules())
    fused = kernels.fuse(model, path=path)
    from ctdn.kernels.nafblock import FusedNAFBlock

    assert sum(isinstance(m, FusedNAFBlock) and m.path == path for m in fused.modules()) == n_blocks > 0
    assert not any(isinstance(m, CondBlock) for m in fused.modules())
    assert not any(isinstance(m, FusedNAFBlock) for m in model.modules()), "the caller's model changed"
    ours = dict(fused.named_parameters())
    assert all(any(p is q for q in ours.values()) for p in model.parameters()), "weights not shared"
    x = torch.rand(2, 1, 16, 24, device=DEVICE) * 2 - 1
    dose = torch.tensor([0.1, 0.5], device=DEVICE)
    _check(fused(x, dose), model(x, dose), torch.float32)


def test_fuse_of_a_single_block(nb):
    cb = _block(8, film=True)
    f = kernels.fuse(cb)
    assert isinstance(f, nb.FusedNAFBlock) and f.block is not cb.block  # a new module tree ...
    assert f.block.conv1.weight is cb.block.conv1.weight and f.film.proj.weight is cb.film.proj.weight


def test_without_triton_fuse_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "triton" else real(n, *a))
    assert "pip install 'ctdn[triton]'" in kernels.unavailable()
    with pytest.raises(MissingDependencyError, match="triton is not installed"):
        kernels.fuse(build("tiny"))


@pytest.mark.parametrize(
    ("triton_v", "numpy_v", "interpret", "why"),
    [
        ("3.6.0", "2.4.6", "1", "with numpy >= 2.4 (installed: triton 3.6.0, numpy 2.4.6)"),
        ("3.3.1", "2.3.5", "1", "needs triton >= 3.4 on a machine without a GPU driver"),
        ("3.6.0", "2.3.5", "1", None),
        ("3.7.0", "2.5.2", "1", None),
        ("3.3.1", "2.5.2", "0", None),
    ],
)
def test_an_interpreter_that_cannot_run_here_is_named(monkeypatch, triton_v, numpy_v, interpret, why):
    """Old tritons' interpreters fail here from deep inside triton (3.2-3.3: no GPU driver; before 3.7,
    with numpy >= 2.4: a loop bound through int() of a 1-element array): said by name instead.
    Compiled on a GPU, neither matters."""
    import importlib.metadata

    real, fake = importlib.metadata.version, {"triton": triton_v, "numpy": numpy_v}
    monkeypatch.setattr(importlib.metadata, "version", lambda d: fake.get(d) or real(d))
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    if why and "GPU driver" in why and torch.cuda.is_available():
        why = None  # there is one
    got = kernels.unavailable()
    assert got is None if why is None else why in got


def test_importing_ctdn_kernels_does_not_import_triton():
    code = "import sys, ctdn, ctdn.kernels; assert 'triton' not in sys.modules, 'triton imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fuse_leaves_other_encoders_blocks_alone():
    from ctdn.kernels.nafblock import FusedNAFBlock

    from ctdn.models import ResBlock

    model = build("study-resnet").eval()
    fused = kernels.fuse(model)
    assert not any(isinstance(m, FusedNAFBlock) for m in fused.modules())
    assert sum(isinstance(m, ResBlock) for m in fused.modules()) == sum(
        isinstance(m, ResBlock) for m in model.modules()
    ) > 0
