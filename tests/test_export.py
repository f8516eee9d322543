"""ctdn.export (ONNX) and the onnxruntime / openvino backends, checked against the torch reference."""

from collections import Counter

import numpy as np
import pytest
import torch

import ctdn
from ctdn import backends, export
from ctdn.errors import InputError, InputTypeError
from ctdn.inference import Denoiser
from ctdn.models import build

onnx = pytest.importorskip("onnx", reason="onnx is a test dependency (pip install -e '.[test]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build("tiny")
    with torch.no_grad():  # a non-trivial network (a fresh one is close to the identity map)
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    return export.to_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def _ort(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_graph_is_valid_and_has_real_layernorm(onnx_file, model):
    proto = onnx.load(str(onnx_file))
    onnx.checker.check_model(proto, full_check=True)
    ops = Counter(n.op_type for n in proto.graph.node)
    n_norms = sum(isinstance(m, ctdn.models.layers.LayerNorm2d) for m in model.modules())
    assert ops["LayerNormalization"] == n_norms > 0
    assert [i.name for i in proto.graph.input] == ["x", "dose"]
    assert [o.name for o in proto.graph.output] == ["y"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["n", 1, "h", "w"]


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 24, 40), (2, 64, 16), (5, 8, 120)])
def test_onnx_matches_torch_on_any_batch_and_size(onnx_file, model, shape):
    n, h, w = shape
    x = torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(h * w)) * 2 - 1
    d = torch.linspace(0.05, 1.0, n)
    with torch.inference_mode():
        ref = model(x, d).numpy()
    got = _ort(onnx_file).run(None, {"x": x.numpy(), "dose": d.numpy()})[0]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-5  # unit space: 0.01 HU


def test_dose_is_a_real_input(onnx_file):
    x = np.zeros((2, 1, 16, 16), np.float32)
    s = _ort(onnx_file)
    a = s.run(None, {"x": x, "dose": np.array([0.1, 0.1], np.float32)})[0]
    b = s.run(None, {"x": x, "dose": np.array([0.1, 0.7], np.float32)})[0]
    np.testing.assert_array_equal(a[0], b[0])
    assert np.abs(a[1] - b[1]).max() > 1e-4


def test_metadata(onnx_file, model):
    meta = export.onnx_meta(onnx_file)
    assert meta["fingerprint"] == export.fingerprint(model)
    assert meta["config"] == model.config.to_dict()
    assert meta["multiple"] == model.config.multiple
    assert meta["hu_window"] == list(model.config.hu_window)
    assert meta["opset"] >= 17


def test_shipped_model_exports_within_tolerance(tmp_path):
    m = ctdn.load_model("edge")
    path = export.to_onnx(m, tmp_path / "edge.onnx")
    err = export._compare(m, path)
    assert err < 1e-5, err
    assert export.onnx_meta(path)["name"] == "edge"


def test_export_refuses_bad_arguments(model, tmp_path):
    with pytest.raises(InputError, match="opset"):
        export.to_onnx(model, tmp_path / "a.onnx", opset=16)
    with pytest.raises(InputTypeError, match="CTDenoiser"):
        export.to_onnx(torch.nn.Conv2d(1, 1, 3), tmp_path / "b.onnx")
    with pytest.raises(InputError, match="not an ONNX file exported by ctdn"):
        bare = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
        onnx.save(bare, str(tmp_path / "c.onnx"))
        export.onnx_meta(tmp_path / "c.onnx")
    assert not (tmp_path / "a.onnx").exists()


def test_export_leaves_the_callers_model_alone(model, tmp_path):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        export.to_onnx(model, tmp_path / "m.onnx", check=False)
        assert model.training
    finally:
        model.eval()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_fingerprint_follows_weights_and_config(model):
    fp = export.fingerprint(model)
    assert len(fp) == 16 and fp == export.fingerprint(model)
    other = build("tiny")
    other.load_state_dict(model.state_dict())
    assert export.fingerprint(other) == fp
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3
    assert export.fingerprint(other) != fp


def test_engine_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("CTDN_ENGINE_DIR", str(tmp_path))
    assert export.engine_dir() == tmp_path
    p = export.engine_path("edge", "0123456789abcdef", "tensorrt", "sm90-nvidia-h100", "fp16")
    assert p == tmp_path / "edge-0123456789abcdef-tensorrt-sm90-nvidia-h100-fp16.engine"
    assert export.engine_path("edge", "f", "aoti", "cpu", "fp32").suffix == ".pt2"
    with pytest.raises(InputError, match="kind"):
        export.engine_path("edge", "f", "onnx", "cpu", "fp32")
    assert export.device_slug("cpu") == "cpu"


BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    backends.unavailable("openvino", CPU) is not None, reason=str(backends.unavailable("openvino", CPU))))]


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_matches_torch_in_hu(model, name):
    rng = np.random.default_rng(1)
    vol = rng.normal(40, 300, (3, 45, 61)).astype(np.float32)  # odd sizes: padding and crop
    vol[0, :5, :5] = -3000  # outside the window: passes through
    dose = [0.1, 0.25, 0.7]
    ref = Denoiser(model, backend="torch")(vol, dose)
    den = Denoiser(model, backend=name)
    assert den.backend == name
    got = den(vol, dose, batch_size=2)
    assert np.abs(got - ref).max() < 0.05  # HU
    assert np.abs(ref - vol).max() > 1.0  # the network did something


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_refuses_reduced_precision_and_says_why_not_cuda(model, name):
    with pytest.raises(InputError, match="runs fp32"):
        backends.create(name, model, CPU, "fp16")
    if not torch.cuda.is_available():
        assert backends.unavailable(name, torch.device("cuda")) is not None


def test_cli_export_onnx(tmp_path, capsys):
    from ctdn.cli import main

    out = tmp_path / "edge.onnx"
    assert main(["export", str(out)]) == 0
    assert export.onnx_meta(out)["fingerprint"] == export.fingerprint(ctdn.load_model("edge"))
    before = out.read_bytes()
    assert main(["export", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["export", str(tmp_path / "edge.bin")]) == 2
    assert "name it .onnx or .pt2" in capsys.readouterr().err


@pytest.mark.skipif(backends.unavailable("openvino", CPU) is not None, reason="openvino is not installed")
def test_openvino_bf16_is_opt_in_and_close():
    import openvino as ov

    from ctdn import phantoms

    model = ctdn.load_model("edge")  # a trained model: bf16's error is measured where it matters
    noise = np.random.default_rng(3).normal(0, 30, (128, 128))
    vol = (phantoms.generate("abdomen", seed=0, size=128).hu + noise).astype(np.float32)
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(InputError, match="bf16 instructions"):
            backends.create("openvino", model, CPU, "bf16")
        return
    ref = Denoiser(model, backend="openvino")(vol, 0.1)
    np.testing.assert_allclose(ref, Denoiser(model, backend="torch")(vol, 0.1), atol=0.05)
    got = Denoiser(model, backend="openvino", precision="bf16")(vol, 0.1)
    diff = np.abs(got - ref)
    assert 0 < diff.max() < 5 and diff.mean() < 0.5  # measured 512x512: max 2.3 HU, mean 0.16 HU


def test_onnx_meta_refuses_damaged_files_with_the_reason(onnx_file, tmp_path):
    import onnx

    assert export.onnx_meta(onnx_file)["name"]
    with pytest.raises(InputError, match="ONNX file not found"):
        export.onnx_meta(tmp_path / "missing.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(onnx_file.read_bytes()[:1000])
    with pytest.raises(InputError, match="not a readable ONNX file"):
        export.onnx_meta(cut)
    proto = onnx.load(str(onnx_file))
    keep = [p for p in proto.metadata_props if p.key != "ctdn.fingerprint"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    partial = tmp_path / "partial.onnx"
    onnx.save(proto, str(partial))
    with pytest.raises(InputError, match="metadata is incomplete or damaged.*ctdn.fingerprint"):
        export.onnx_meta(partial)


@pytest.mark.parametrize("name", ["study-conv", "study-resnet", "study-unet"])
def test_the_studys_other_encoders_export_and_match_torch(name, tmp_path):
    torch.manual_seed(0)
    m = build(name).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = export.to_onnx(m, tmp_path / f"{name}.onnx")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    k = m.config.multiple
    x = torch.rand(2, 1, 2 * k, 3 * k, generator=torch.Generator().manual_seed(1)) * 2 - 1
    d = torch.tensor([0.1, 0.7])
    with torch.inference_mode():
        ref = m(x, d).numpy()
    got = _ort(path).run(None, {"x": x.numpy(), "dose": d.numpy()})[0]
    assert np.abs(got - ref).max() < 1e-5
