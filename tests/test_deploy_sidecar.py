"""The ctdn-engine/1 sidecar: written, read back, and every refusal rule, with the machine injected."""

import json
import logging
import sys

import pytest
import torch

from ctdn.deploy import sidecar as sc
from ctdn.errors import EngineError, InputError
from ctdn.models import build

H100 = sc.Environment(
    torch="2.13.0",
    cuda="13.0",
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability="9.0",
    tensorrt="10.13.0.35",
)
A100 = H100.replace(gpu_name="NVIDIA A100-SXM4-80GB", compute_capability="8.0")
H200 = H100.replace(gpu_name="NVIDIA H200", compute_capability="9.0")
T4 = H100.replace(gpu_name="Tesla T4", compute_capability="7.5")
CPU = sc.Environment(torch="2.13.0", cuda=None)
REBUILD = "ctdn-build-engine edge --precision fp16 --out edge.engine"
SHAPES = {"batch": [1, 4, 16], "height": [512, 512, 512], "width": [512, 512, 512]}
META = {
    "name": "edge",
    "fingerprint": "0123456789abcdef",
    "config": {"arch": "nafnet"},
    "hu_window": [-1000.0, 1000.0],
    "multiple": 8,
}


def engine(tmp_path, env=H100, kind="tensorrt", device="cuda", name="edge.engine", **compat):
    path = tmp_path / name
    path.write_bytes(b"\x00serialized engine\x01" * 10)
    sc.write_sidecar(
        path,
        kind=kind,
        model=META,
        shapes=SHAPES,
        precision="fp16",
        device=device,
        rebuild=REBUILD,
        compatibility=compat or None,
        env=env,
    )
    return path


def test_round_trip_has_every_field(tmp_path):
    path = engine(tmp_path)
    assert sc.sidecar_path(path) == tmp_path / "edge.engine.json"
    data = json.loads((tmp_path / "edge.engine.json").read_text())
    assert data == sc.read_sidecar(path) == sc.read_sidecar(tmp_path / "edge.engine.json")
    assert data["format"] == "ctdn-engine/1" and data["kind"] == "tensorrt"
    assert data["bytes"] == path.stat().st_size
    assert data["model"] == {"name": "edge", "fingerprint": "0123456789abcdef", "config": {"arch": "nafnet"}}
    assert data["hu_window"] == [-1000.0, 1000.0] and data["multiple"] == 8
    assert data["io"] == {"x": "x", "dose": "dose", "y": "y"}
    assert data["shapes"] == SHAPES and data["precision"] == "fp16"
    assert data["device"] == {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert data["versions"] == {"cuda": "13.0", "tensorrt": "10.13.0.35"}
    assert data["compatibility"] == {"hardware": "none", "version_compatible": False}
    assert data["rebuild"] == REBUILD and data["created"].endswith("Z")
    assert sc.check_sidecar(path, kind="tensorrt", env=H100)["model"]["name"] == "edge"


def test_aoti_sidecar_from_a_model_as_to_aoti_writes_it(tmp_path):
    # ctdn.export.to_aoti calls write_sidecar with these keywords (a CTDenoiser, not a dict).
    from ctdn.export import fingerprint

    model = build("tiny")
    path = tmp_path / "tiny.pt2"
    path.write_bytes(b"package")
    sc.write_sidecar(
        path,
        kind="aoti",
        model=model,
        name="tiny",
        shapes={"batch": [1, 1, 16], "height": [2, 64, 64], "width": [2, 64, 64]},
        precision="fp32",
        device=torch.device("cpu"),
        rebuild="python -c ...",
        env=CPU,
    )
    data = sc.check_sidecar(path, kind="aoti", device="cpu", env=CPU)
    assert data["model"]["fingerprint"] == fingerprint(model) and data["model"]["name"] == "tiny"
    assert data["device"] == {"type": "cpu"} and data["versions"] == {"cuda": None, "torch": "2.13.0"}
    assert data["multiple"] == model.config.multiple and data["model"]["config"] == model.config.to_dict()


def refusal(path, field, built, here, **kw):
    with pytest.raises(EngineError) as exc:
        sc.check_sidecar(path, **kw)
    msg = str(exc.value)
    assert field in msg and repr(built) in msg and repr(here) in msg, msg
    assert msg.endswith(f"rebuild it on this machine: {REBUILD}"), msg
    return msg


def test_other_compute_capability_is_refused(tmp_path):
    path = engine(tmp_path)
    msg = refusal(path, "device.compute_capability", "9.0", "8.0", kind="tensorrt", env=A100)
    assert "NVIDIA A100" in msg


def test_same_compute_capability_mode_still_needs_the_same_cc(tmp_path):
    path = engine(tmp_path, hardware="same_compute_capability")
    sc.check_sidecar(path, kind="tensorrt", env=H200)
    refusal(path, "device.compute_capability", "9.0", "8.0", kind="tensorrt", env=A100)


def test_other_gpu_model_with_the_same_cc_only_warns(tmp_path, caplog):
    path = engine(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ctdn"):
        sc.check_sidecar(path, kind="tensorrt", env=H200)
    assert "NVIDIA H200" in caplog.text and "same compute capability" in caplog.text


def test_ampere_plus_runs_on_any_cc_from_8_0(tmp_path):
    path = engine(tmp_path, hardware="ampere_plus")
    for env in (A100, H100, H100.replace(compute_capability="12.0")):
        sc.check_sidecar(path, kind="tensorrt", env=env)
    msg = refusal(path, "device.compute_capability", "9.0", "7.5", kind="tensorrt", env=T4)
    assert "ampere_plus" in msg


def test_no_gpu_is_refused(tmp_path):
    refusal(engine(tmp_path), "device.compute_capability", "9.0", None, kind="tensorrt", env=CPU)


def test_tensorrt_engines_run_on_cuda_only(tmp_path):
    refusal(engine(tmp_path), "device.type", "cuda", "cpu", kind="tensorrt", device="cpu", env=H100)


@pytest.mark.parametrize("here", ["10.14.0.1", "10.12.0", "11.0.0"])
def test_other_tensorrt_minor_is_refused(tmp_path, here):
    refusal(
        engine(tmp_path),
        "versions.tensorrt",
        "10.13.0.35",
        here,
        kind="tensorrt",
        env=H100.replace(tensorrt=here),
    )


def test_another_tensorrt_patch_release_is_fine(tmp_path):
    sc.check_sidecar(engine(tmp_path), kind="tensorrt", env=H100.replace(tensorrt="10.13.3.9"))


def test_version_compatible_engines_run_on_later_runtimes_of_the_same_major(tmp_path):
    path = engine(tmp_path, version_compatible=True)
    for here in ("10.13.0.35", "10.14.1", "10.16.1"):
        sc.check_sidecar(path, kind="tensorrt", env=H100.replace(tensorrt=here))
    for here in ("10.12.0", "11.0.0"):
        refusal(
            path, "versions.tensorrt", "10.13.0.35", here, kind="tensorrt", env=H100.replace(tensorrt=here)
        )


def test_missing_tensorrt_says_so(tmp_path):
    with pytest.raises(EngineError, match="needs TensorRT 10.13.0.35, which is not installed here"):
        sc.check_sidecar(engine(tmp_path), kind="tensorrt", env=H100.replace(tensorrt=None))


def test_replaced_or_truncated_file_is_refused(tmp_path):
    path = engine(tmp_path)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-3])
    msg = refusal(path, "bytes", size, size - 3, kind="tensorrt", env=H100)
    assert "corrupt or was replaced" in msg


def test_missing_engine_file_or_sidecar(tmp_path):
    path = engine(tmp_path)
    path.unlink()
    with pytest.raises(EngineError, match="not found .its sidecar is there.; rebuild it on this machine"):
        sc.check_sidecar(path, kind="tensorrt", env=H100)
    with pytest.raises(EngineError, match="no.engine.json not found"):
        sc.check_sidecar(tmp_path / "no.engine", kind="tensorrt", env=H100)


def test_wrong_kind_and_unknown_format(tmp_path):
    path = engine(tmp_path)
    with pytest.raises(EngineError, match="kind is 'tensorrt' in its sidecar but this loader opens 'aoti'"):
        sc.check_sidecar(path, kind="aoti", env=H100)
    data = json.loads(sc.sidecar_path(path).read_text())
    sc.sidecar_path(path).write_text(json.dumps({**data, "format": "ctdn-engine/9"}))
    with pytest.raises(EngineError, match="format is 'ctdn-engine/9' but this ctdn reads 'ctdn-engine/1'"):
        sc.check_sidecar(path, kind="tensorrt", env=H100)
    sc.sidecar_path(path).write_text("{not json")
    with pytest.raises(EngineError, match="not a readable JSON sidecar"):
        sc.read_sidecar(path)
    sc.sidecar_path(path).write_text(json.dumps({"format": "ctdn-engine/1"}))
    with pytest.raises(EngineError, match="lacks kind"):
        sc.read_sidecar(path)


def test_aoti_rules(tmp_path):
    cpu = engine(tmp_path, env=CPU, kind="aoti", device="cpu", name="m.pt2")
    sc.check_sidecar(cpu, kind="aoti", device="cpu", env=CPU.replace(torch="2.13.0+cpu"))
    refusal(cpu, "device.type", "cpu", "cuda", kind="aoti", device="cuda", env=H100)
    refusal(
        cpu, "versions.torch", "2.13.0", "2.14.0", kind="aoti", device="cpu", env=CPU.replace(torch="2.14.0")
    )
    gpu = engine(tmp_path, env=H100, kind="aoti", device="cuda", name="g.pt2")
    assert sc.read_sidecar(gpu)["versions"] == {"cuda": "13.0", "torch": "2.13.0"}
    sc.check_sidecar(gpu, kind="aoti", device="cuda", env=H200)
    refusal(gpu, "device.compute_capability", "9.0", "8.0", kind="aoti", device="cuda", env=A100)


def test_check_off_warns_instead(tmp_path, caplog):
    path = engine(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ctdn"):
        data = sc.check_sidecar(path, kind="tensorrt", env=A100.replace(tensorrt="10.14.0"), check=False)
    assert data["kind"] == "tensorrt" and "check disabled" in caplog.text


def test_make_sidecar_validates(tmp_path):
    base = dict(
        kind="tensorrt", model=META, shapes=SHAPES, precision="fp16", device="cuda", rebuild="x", env=H100
    )
    with pytest.raises(InputError, match="kind must be"):
        sc.make_sidecar(**{**base, "kind": "onnx"})
    with pytest.raises(InputError, match="precision must be"):
        sc.make_sidecar(**{**base, "precision": "int8"})
    with pytest.raises(InputError, match="hardware must be"):
        sc.make_sidecar(**base, compatibility={"hardware": "turing"})
    with pytest.raises(InputError, match=r"shapes\['batch'\] must satisfy"):
        sc.make_sidecar(**{**base, "shapes": {**SHAPES, "batch": [4, 1, 16]}})
    with pytest.raises(EngineError, match="must be built on a machine with that CUDA GPU"):
        sc.make_sidecar(**{**base, "env": CPU})
    with pytest.raises(InputError, match="does not exist"):
        sc.write_sidecar(tmp_path / "absent.engine", sc.make_sidecar(**base))


def test_device_slug():
    assert sc.device_slug("cpu") == "cpu"
    assert sc.device_slug("cuda", H100) == "sm90-nvidia-h100-80gb-hbm3"
    assert sc.device_slug(0, A100) == "sm80-nvidia-a100-sxm4-80gb"
    with pytest.raises(EngineError, match="no CUDA GPU"):
        sc.device_slug("cuda", CPU)


def test_probe_on_this_machine(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as if not installed, whatever the machine has
    env = sc.probe("cpu")
    assert env.torch == torch.__version__.split("+")[0] and env.tensorrt is None
    if not torch.cuda.is_available():
        assert env.gpu_name is None and env.compute_capability is None


def _model(preset="tiny", seed=0, **changes):
    from ctdn.models.config import preset as cfg_of
    from ctdn.models.nafnet import CTDenoiser

    torch.manual_seed(seed)
    return CTDenoiser(cfg_of(preset, **changes)).eval()


def _package(tmp_path, model):
    path = tmp_path / "m.pt2"
    path.write_bytes(b"package")
    sc.write_sidecar(
        path, kind="aoti", model=model, shapes=SHAPES, precision="fp32", device="cpu",
        rebuild="python -m ctdn.export ...", env=CPU,
    )  # fmt: skip
    return sc.read_sidecar(path)


def test_check_model_accepts_the_model_it_was_built_from(tmp_path):
    m = _model()
    sc.check_model(_package(tmp_path, m), m, tmp_path / "m.pt2")


def test_check_model_names_what_differs(tmp_path):
    built = _package(tmp_path, _model())
    with pytest.raises(EngineError, match=r"m\.pt2 was built from another model.*same config, other weights"):
        sc.check_model(built, _model(seed=1), "m.pt2")
    with pytest.raises(EngineError, match=r"widths \[8, 16\] vs \[8, 24\].*rebuild it for this model"):
        sc.check_model(built, _model(widths=(8, 24)), "m.pt2")
    with pytest.raises(EngineError, match=r"HU window \[-1000\.0, 1000\.0\] vs \[-1024\.0, 2000\.0\]") as exc:
        sc.check_model(built, _model(hu_window=(-1024.0, 2000.0)), "m.pt2")
    assert "written by ctdn" in str(exc.value)
