"""ONNX graphs for TensorRT: fp16/bf16 conversion (checked with ONNX Runtime and onnx.checker) and the
exported graphs' operators against TensorRT's ONNX parser support matrix (ctdn.deploy.trt_ops)."""

import collections

import numpy as np
import pytest
import torch

from ctdn.deploy import trt_ops
from ctdn.deploy.onnx_precision import KEEP_FP32, convert, convert_file, precision_of
from ctdn.errors import InputError
from ctdn.export import onnx_meta, to_onnx
from ctdn.models import build, load_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

FLOAT, FLOAT16, BFLOAT16 = 1, 10, 16
TRT_TYPES = {FLOAT: "FP32", FLOAT16: "FP16", BFLOAT16: "BF16", 6: "INT32", 7: "INT64", 9: "BOOL"}


def tiny_model():
    """The tiny preset with every path active (FiLM, beta/gamma are zero at init)."""
    m = build("tiny").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, p in m.named_parameters():
            if k.endswith(("beta", "gamma")) or ".film." in k:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = tiny_model()
    return model, to_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped edge model and the paper preset (random weights), exported without the ORT check."""
    d = tmp_path_factory.mktemp("shipped")
    return {
        "edge": to_onnx(load_model("edge"), d / "edge.onnx", check=False),
        "paper": to_onnx(build("paper"), d / "paper.onnx", check=False),
    }


def types_of(model):
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({i.name: i.data_type for i in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            types[n.output[0]] = n.attribute[0].t.data_type
    return g, types


def test_fp16_graph_matches_fp32_in_onnxruntime(tiny, tmp_path):
    model, path = tiny
    out = convert_file(path, tmp_path / "tiny.fp16.onnx", "fp16")  # also runs onnx.checker (full)
    x = (torch.rand(3, 1, 48, 40, generator=torch.Generator().manual_seed(1)) * 2 - 1).numpy()
    d = np.array([0.1, 0.5, 1.0], np.float32)
    feed = {"x": x, "dose": d}
    y32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    y16 = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    with torch.inference_mode():
        ref = model(torch.from_numpy(x), torch.from_numpy(d)).numpy()
    assert y16.dtype == np.float32 and y16.shape == x.shape
    err32, err16 = np.abs(y32 - ref).max(), np.abs(y16 - ref).max()
    # Measured: 2e-4 (fp16 weights and activations; ORT's CPU provider falls back to fp32 kernels for
    # some fp16 ops, so this checks the graph, not TensorRT's fp16 arithmetic). 1e-2 = 10 HU.
    assert err32 < 1e-4 and 1e-6 < err16 < 1e-2, (err32, err16)


def test_fp16_graph_structure(tiny):
    _, path = tiny
    src = onnx.load(str(path))
    q = convert(src, "fp16")
    assert precision_of(src) == "fp32" and precision_of(q) == "fp16"
    meta = {p.key: p.value for p in q.metadata_props}
    assert meta["ctdn.fp32_ops"] == ",".join(KEEP_FP32) and meta["ctdn.format"] == "ctdn-onnx/1"
    g, types = types_of(q)
    # The contract's inputs and output stay float32.
    assert [(v.name, v.type.tensor_type.elem_type) for v in g.input] == [("x", FLOAT), ("dose", FLOAT)]
    assert [(v.name, v.type.tensor_type.elem_type) for v in g.output] == [("y", FLOAT)]
    ops = collections.Counter(n.op_type for n in g.node)
    src_ops = collections.Counter(n.op_type for n in src.graph.node)
    assert ops["LayerNormalization"] == src_ops["LayerNormalization"]
    for n in g.node:
        floats = [types[i] for i in n.input if i and types.get(i) in (FLOAT, FLOAT16)]
        if n.op_type in KEEP_FP32:
            assert set(floats) == {FLOAT}, (n.name, floats)  # LayerNorm reads x, scale, bias in fp32
            assert types[n.output[0]] == FLOAT
        elif n.op_type in ("Conv", "ConvTranspose"):
            assert set(floats) == {FLOAT16}, (n.name, floats)  # image path: fp16 activations and weights
        elif n.op_type == "Gemm":
            assert set(floats) == {FLOAT}, (n.name, floats)  # dose MLP and FiLM projections
        elif n.op_type not in ("Cast", "Shape") and floats:
            assert len(set(floats)) == 1, (n.name, n.op_type, floats)  # no mixed-type arithmetic
    fp16_weights = sum(i.data_type == FLOAT16 for i in g.initializer)
    assert fp16_weights > len(g.initializer) // 2


def test_bf16_graph_moves_to_opset_22_and_passes_the_checker(tiny):
    # ONNX Runtime's CPU provider has no bf16 Conv, so this one is checked structurally only.
    q = convert(onnx.load(str(tiny[1])), "bf16")
    onnx.checker.check_model(q, full_check=True)
    assert max(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) == 22
    g, types = types_of(q)
    assert {types[n.input[0]] for n in g.node if n.op_type == "Conv"} == {BFLOAT16}
    assert {types[n.input[0]] for n in g.node if n.op_type == "LayerNormalization"} == {FLOAT}


def test_convert_refuses_bad_input(tiny):
    src = onnx.load(str(tiny[1]))
    with pytest.raises(InputError, match="precision must be fp16 or bf16"):
        convert(src, "int8")
    with pytest.raises(InputError, match="already fp16"):
        convert(convert(src, "fp16"), "fp16")
    assert precision_of(src) == "fp32"  # the caller's graph is not modified


@pytest.mark.parametrize("name", ["edge", "paper"])
def test_exported_ops_are_supported_by_tensorrt(shipped, name):
    model = onnx.load(str(shipped[name]))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    lo, hi = trt_ops.OPSET_RANGE
    assert lo <= opset <= hi and opset >= 17, opset
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    for variant in (model, convert(model, "fp16")):
        g, types = types_of(variant)
        unsupported = sorted({n.op_type for n in g.node} - set(trt_ops.SUPPORTED))
        assert not unsupported, f"{name}: TensorRT's ONNX parser lacks {unsupported} ({trt_ops.SOURCE})"
        consts = {i.name for i in g.initializer}
        consts |= {o for n in g.node if n.op_type == "Constant" for o in n.output}
        for n in g.node:
            for idx in trt_ops.CONSTANT_INPUTS.get(n.op_type, ()):
                if idx < len(n.input) and n.input[idx]:
                    assert n.input[idx] in consts, f"{n.name}: input {idx} must be a build-time constant"
            for t in [*n.input, *n.output]:
                if t and t in types:
                    kind = TRT_TYPES.get(types[t])
                    assert kind in trt_ops.SUPPORTED[n.op_type], (name, n.op_type, t, kind)
        used = {i for n in g.node for i in n.input}
        for n in g.node:
            if n.op_type in trt_ops.SINGLE_OUTPUT:
                assert all(o not in used for o in n.output[1:]), n.name


@pytest.mark.parametrize("name", ["edge", "paper"])
def test_layer_norm_is_a_real_node(shipped, name):
    model = onnx.load(str(shipped[name]))
    meta = onnx_meta(shipped[name])
    net = load_model("edge") if name == "edge" else build("paper")
    norms = sum(type(m).__name__ == "LayerNorm2d" for m in net.modules())
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert norms > 0 and ops["LayerNormalization"] == norms, (norms, ops["LayerNormalization"])
    # No decomposed LayerNorm left over (ReduceMean/Pow/Sqrt on the image path).
    assert ops["ReduceMean"] == 0 and ops["Pow"] == 0
    for n in model.graph.node:
        if n.op_type == "LayerNormalization":
            axis = next((a.i for a in n.attribute if a.name == "axis"), -1)
            assert axis == -1 and len(n.input) == 3
    assert meta["opset"] >= 17
