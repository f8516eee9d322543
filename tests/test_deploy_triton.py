"""Triton Inference Server model repositories: config.pbtxt text and the folder layout."""

import re

import pytest

from ctdn.deploy import sidecar as sc
from ctdn.deploy.triton_server import config_text, write_repository
from ctdn.errors import InputError
from ctdn.export import to_onnx
from ctdn.models import build

GPU = sc.Environment(
    torch="2.13.0", cuda="13.0", gpu_name="NVIDIA L4", compute_capability="8.9", tensorrt="10.13.0.35"
)
META = {
    "name": "edge",
    "fingerprint": "0123456789abcdef",
    "config": {},
    "hu_window": [-1000.0, 1000.0],
    "multiple": 8,
}

EXPECTED = """\
name: "edge"
platform: "tensorrt_plan"
max_batch_size: 16
input [
  {
    name: "x"
    data_type: TYPE_FP32
    dims: [ 1, 512, 512 ]
  },
  {
    name: "dose"
    data_type: TYPE_FP32
    dims: [ 1 ]
    reshape: { shape: [ ] }
  }
]
output [
  {
    name: "y"
    data_type: TYPE_FP32
    dims: [ 1, 512, 512 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 16 ]
  max_queue_delay_microseconds: 1000
}
instance_group [
  {
    count: 1
    kind: KIND_GPU
  }
]
"""


def balanced(text: str) -> bool:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return body.count("{") == body.count("}") and body.count("[") == body.count("]")


def engine(tmp_path, batch=(1, 4, 16), height=(512, 512, 512), width=(512, 512, 512), **compat):
    path = tmp_path / "edge.engine"
    path.write_bytes(b"plan" * 100)
    shapes = {"batch": list(batch), "height": list(height), "width": list(width)}
    sc.write_sidecar(
        path,
        kind="tensorrt",
        model=META,
        shapes=shapes,
        precision="fp16",
        device="cuda",
        rebuild="ctdn-build-engine edge",
        compatibility=compat or None,
        env=GPU,
    )
    return path


def test_config_text():
    text = config_text("edge", "tensorrt_plan", height=(512, 512), width=(512, 512))
    assert text == EXPECTED and balanced(text)
    dyn = config_text(
        "edge", "onnxruntime_onnx", max_batch_size=8, preferred_batch_sizes=(8, 2, 2), instance_kind="cpu"
    )
    assert 'platform: "onnxruntime_onnx"' in dyn and dyn.count("dims: [ 1, -1, -1 ]") == 2
    assert "preferred_batch_size: [ 2, 8 ]" in dyn and "kind: KIND_CPU" in dyn and "max_batch_size: 8" in dyn
    with_comment = config_text("edge", "tensorrt_plan", comment="line one\nline two")
    assert with_comment.startswith("# line one\n# line two\nname:") and balanced(with_comment)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(platform="pytorch_libtorch"), "platform must be one of"),
        (dict(name="my model"), "a Triton model name is"),
        (dict(max_batch_size=0), "max_batch_size must be a positive integer"),
        (dict(preferred_batch_sizes=(32,)), r"preferred batch sizes must be in 1..16"),
        (dict(instance_kind="tpu"), "instance_kind must be gpu or cpu"),
        (dict(max_queue_delay_us=-1), "max_queue_delay_us must be a non-negative integer"),
    ],
)
def test_config_text_refuses(kw, msg):
    args = {"name": "edge", "platform": "tensorrt_plan", **kw}
    with pytest.raises(InputError, match=msg):
        config_text(args.pop("name"), args.pop("platform"), **args)


def test_repository_from_an_engine(tmp_path):
    model_dir = write_repository(tmp_path / "repo", engine(tmp_path))
    assert model_dir == tmp_path / "repo" / "edge"
    files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())
    assert files == ["1/model.plan", "1/model.plan.json", "config.pbtxt"]
    text = (model_dir / "config.pbtxt").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#")) + "\n"
    assert body == EXPECTED
    assert (
        "fingerprint 0123456789abcdef" in text
        and "NVIDIA L4" in text
        and "rebuild: ctdn-build-engine edge" in text
    )
    # The copied sidecar still describes the copied engine (same size): loaders accept it there.
    assert (
        sc.check_sidecar(model_dir / "1" / "model.plan", kind="tensorrt", env=GPU)["model"]["name"] == "edge"
    )


def test_repository_follows_the_engine_profile(tmp_path):
    path = engine(
        tmp_path, batch=(1, 8, 32), height=(256, 512, 1024), width=(512, 512, 512), version_compatible=True
    )
    d = write_repository(tmp_path / "repo", path, name="edge_fp16", max_batch_size=24, version=3)
    text = (d / "config.pbtxt").read_text()
    assert 'name: "edge_fp16"' in text and "max_batch_size: 24" in text
    assert text.count("dims: [ 1, -1, 512 ]") == 2 and "preferred_batch_size: [ 8, 24 ]" in text
    assert "--backend-config=tensorrt,version-compatible=true" in text
    assert (d / "3" / "model.plan").is_file()
    with pytest.raises(InputError, match="exceeds the engine's profile maximum 32"):
        write_repository(tmp_path / "repo2", path, max_batch_size=64)
    with pytest.raises(InputError, match="already exists; pass overwrite=True"):
        write_repository(tmp_path / "repo", path, name="edge_fp16", version=3)
    write_repository(tmp_path / "repo", path, name="edge_fp16", version=3, overwrite=True)


def test_repository_refuses_an_engine_triton_cannot_batch(tmp_path):
    with pytest.raises(InputError, match="Triton sends batches from 1 up"):
        write_repository(tmp_path / "repo", engine(tmp_path, batch=(4, 4, 16)))


def test_repository_from_onnx(tmp_path):
    m = build("tiny")
    m.meta = {"name": "tiny"}
    onnx_path = to_onnx(m, tmp_path / "tiny.onnx", check=False)
    d = write_repository(tmp_path / "repo", onnx_path)
    assert (d / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    text = (d / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in text and "max_batch_size: 16" in text
    assert re.search(
        r'name: "dose"\n\s+data_type: TYPE_FP32\n\s+dims: \[ 1 \]\n\s+reshape: \{ shape: \[ \] \}', text
    )
    assert "multiples of 2" in text and balanced(text)


def test_repository_refuses_other_files(tmp_path):
    (tmp_path / "m.pt2").write_bytes(b"x")
    with pytest.raises(InputError, match="take a .engine/.plan or an .onnx"):
        write_repository(tmp_path / "repo", tmp_path / "m.pt2")
    with pytest.raises(InputError, match="not found"):
        write_repository(tmp_path / "repo", tmp_path / "absent.onnx")
