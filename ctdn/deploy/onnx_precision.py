"""fp16/bf16 ONNX graphs for strongly typed TensorRT networks, with the fragile parts kept in fp32.

A strongly typed TensorRT network runs every tensor in the type the graph gives it, so the ONNX
graph itself must carry the precision. :func:`convert` turns a fp32 graph from
:func:`ctdn.export.to_onnx` into one where the image path (convolutions, gates, FiLM products) runs
in fp16 or bf16 while

- ``LayerNormalization`` reads and writes fp32 (NAFNet's LayerNorm overflows in fp16: the variance of
  activations of a few hundred squares past 65504), with Casts around it;
- ``GlobalAveragePool`` (the channel attention's mean over up to 512x512 pixels) reads fp32, so the
  sum never depends on an fp16 accumulator;
- the dose path (1/sqrt(dose) -> MLP -> FiLM scale/shift) stays fp32: it is a few hundred numbers
  per slice and feeds every block;
- the inputs ``x``, ``dose`` and the output ``y`` stay float32 (the runtime's contract), with a Cast
  after ``x`` and before ``y``.

bf16 graphs are moved to opset 22 first (``onnx.version_converter``): ONNX allows bfloat16
convolutions only from opset 22 on, while onnx-tensorrt's operator table (10.1) documents opsets
9..20, so :mod:`ctdn.deploy.tensorrt` builds bf16 engines through the builder flag by default
and uses these graphs only when a strongly typed bf16 network is asked for.

Weights of the low-precision part are stored converted (half the file). The graph keeps its
``ctdn.*`` metadata and gains ``ctdn.precision`` and ``ctdn.fp32_ops``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ..errors import InputError, MissingDependencyError

__all__ = ["convert", "convert_file", "KEEP_FP32", "precision_of"]

KEEP_FP32 = ("LayerNormalization", "GlobalAveragePool")
BF16_OPSET = 22  # the first opset whose Conv accepts bfloat16
_LOW = {"fp16": 10, "bf16": 16}  # onnx.TensorProto.FLOAT16, BFLOAT16
_FLOAT = 1  # onnx.TensorProto.FLOAT
_ANY_TYPE = ("Shape", "Size")  # read only the shape: any element type will do, no Cast needed


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError(
            "ONNX precision conversion needs onnx: pip install 'ctdn[onnx]'"
        ) from exc
    return onnx


def _to_low(arr: np.ndarray, precision: str, name: str):
    """A TensorProto of ``arr`` (float32) in fp16 or bf16 (bf16 through torch: numpy has none)."""
    onnx = _onnx()
    if precision == "fp16":
        big = np.abs(arr[np.isfinite(arr)]).max(initial=0.0)
        if big > 65504:
            raise InputError(
                f"weight {name!r} holds {big:.3g}, beyond fp16's range (65504): use bf16 or fp32"
            )
        return onnx.numpy_helper.from_array(arr.astype(np.float16), name)
    import torch

    bits = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(torch.bfloat16).view(torch.int16)
    t = onnx.TensorProto(name=name, data_type=_LOW["bf16"], dims=list(arr.shape))
    t.raw_data = bits.numpy().tobytes()
    return t


def precision_of(model) -> str:
    """``fp32``, ``fp16`` or ``bf16``: what :func:`convert` recorded in the graph (fp32 if nothing)."""
    meta = {p.key: p.value for p in model.metadata_props}
    return meta.get("ctdn.precision", "fp32")


def _dtypes(model) -> dict[str, int]:
    """Element type of every tensor name in the graph (after ONNX shape inference)."""
    onnx = _onnx()
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {}
    for vi in (*g.input, *g.output, *g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _inline_identities(graph) -> None:
    """Point consumers of Identity(initializer) at the initializer (the tracer's weight sharing)."""
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias, keep = {}, []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)


def convert(model, precision: str = "fp16", *, keep_fp32: tuple[str, ...] = KEEP_FP32):
    """A copy of the fp32 ONNX ``model`` (ModelProto) running in ``precision`` except ``keep_fp32`` ops.

    Low precision covers the nodes whose float inputs depend on the image input ``x`` (the image
    path); nodes fed only by ``dose`` and constants (the dose MLP) stay fp32, as do ``keep_fp32`` ops.
    """
    onnx = _onnx()
    from onnx import helper, numpy_helper

    if precision not in _LOW:
        raise InputError(f"precision must be fp16 or bf16, got {precision!r}")
    if precision_of(model) != "fp32":
        raise InputError(f"the graph is already {precision_of(model)}; convert the fp32 export")
    low = _LOW[precision]
    model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy: the caller's stays fp32
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if precision == "bf16" and opset < BF16_OPSET:
        # ONNX allows bfloat16 Conv/ConvTranspose/LayerNormalization inputs only from opset 22 on.
        from onnx import version_converter

        model = version_converter.convert_version(model, BF16_OPSET)
    g = model.graph
    names = [i.name for i in g.input]
    if "x" not in names:
        raise InputError(f"the graph has no input 'x' (inputs: {names}); export it with ctdn.export.to_onnx")
    _inline_identities(g)
    types = _dtypes(model)
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}

    # 1. The image path: float tensors computed from x (through float tensors only; Shape(x) is not).
    from_x = {"x"}
    for node in g.node:
        if any(i in from_x and types.get(i) == _FLOAT for i in node.input):
            from_x.update(o for o in node.output if types.get(o) == _FLOAT)
    # Indices, not id(): protobuf hands out a new wrapper object on every access.
    low_nodes = {
        k for k, n in enumerate(g.node) if n.op_type not in keep_fp32 and any(o in from_x for o in n.output)
    }

    new_nodes, new_inits, cast_cache, is_low = [], [], {}, set()

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in cast_cache:
            out = f"{name}__to_{'fp32' if to == _FLOAT else precision}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"cast_{out}"))
            cast_cache[key] = out
            if to != _FLOAT:
                is_low.add(out)
        return cast_cache[key]

    def low_constant(name: str) -> str:
        key = (name, "const")
        if key not in cast_cache:
            src = (
                inits[name]
                if name in inits
                else next(a.t for a in consts[name].attribute if a.name == "value")
            )
            arr = numpy_helper.to_array(src).astype(np.float32)
            out = f"{name}__{precision}"
            new_inits.append(_to_low(arr, precision, out))
            cast_cache[key] = out
            is_low.add(out)
        return cast_cache[key]

    for k, node in enumerate(g.node):
        if k in low_nodes:
            for i, name in enumerate(node.input):
                if not name or types.get(name) != _FLOAT or name in is_low:
                    continue
                if name in inits or name in consts:
                    node.input[i] = low_constant(name)
                else:
                    node.input[i] = cast(name, low)
            if node.op_type == "Cast":
                for a in node.attribute:
                    if a.name == "to" and a.i == _FLOAT:
                        a.i = low
            is_low.update(o for o in node.output if types.get(o) == _FLOAT)
        elif node.op_type not in _ANY_TYPE:
            for i, name in enumerate(node.input):
                if name in is_low:
                    node.input[i] = cast(name, _FLOAT)
        new_nodes.append(node)

    # 2. Graph outputs stay float32: the producer writes a low tensor, a Cast writes the output name.
    for out in g.output:
        if out.name in is_low:
            low_name = f"{out.name}__{precision}"
            for node in new_nodes:
                for i, o in enumerate(node.output):
                    if o == out.name:
                        node.output[i] = low_name
                for i, name in enumerate(node.input):
                    if name == out.name:
                        node.input[i] = low_name
            new_nodes.append(
                helper.make_node("Cast", [low_name], [out.name], to=_FLOAT, name=f"cast_{out.name}")
            )

    # Constants used only through their converted copies are dropped.
    used = {i for n in new_nodes for i in n.input} | {o.name for o in g.output}
    kept_nodes = [n for n in new_nodes if n.op_type != "Constant" or n.output[0] in used]
    kept_inits = [i for i in g.initializer if i.name in used] + new_inits
    del g.node[:]
    g.node.extend(_toposort(kept_nodes, {i.name for i in g.input} | {i.name for i in kept_inits}))
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    del g.value_info[:]
    helper.set_model_props(
        model,
        {
            **{p.key: p.value for p in model.metadata_props},
            "ctdn.precision": precision,
            "ctdn.fp32_ops": ",".join(keep_fp32),
        },
    )
    return model


def _toposort(nodes, available: set[str]):
    """Nodes in an order where every input is produced before use (the Casts were appended late)."""
    done, order, pending = set(available) | {""}, [], list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i in done for i in n.input):
                order.append(n)
                done.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in done})[:5]
            raise InputError(f"cannot order the converted graph: inputs never produced: {missing}")
        pending = rest
    return order


def convert_file(src, dst, precision: str = "fp16", *, check: bool = True) -> Path:
    """Convert the ONNX file ``src`` to ``precision``, written atomically to ``dst``; returns ``dst``."""
    onnx = _onnx()
    proto = convert(onnx.load(str(src)), precision)
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        onnx.save(proto, str(tmp))
        if check:
            onnx.checker.check_model(str(tmp), full_check=True)
    return dst
