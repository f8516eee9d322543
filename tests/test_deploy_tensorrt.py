"""ctdn.deploy.tensorrt: option checks, the build plan, and build_engine driving a fake ``tensorrt``
module that records its calls (TensorRT cannot be installed here), including an older TensorRT."""

import logging
import sys
import types

import pytest

from ctdn.deploy import sidecar as sc
from ctdn.deploy import timing_cache
from ctdn.deploy.tensorrt import (
    BuildOptions,
    build_engine,
    import_tensorrt,
    parse_range,
    parse_workspace,
    plan_build,
    rebuild_command,
    timing_cache_path,
)
from ctdn.errors import EngineError, InputError, MissingDependencyError
from ctdn.export import to_onnx
from ctdn.models import build

onnx = pytest.importorskip("onnx")

GPU = sc.Environment(torch="2.13.0", cuda="13.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


# ------------------------------------------------------------------------------------------------
# A fake tensorrt module: the TensorRT 10 Python API surface build_engine uses, recording each call.
class _Enum:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __int__(self):
        return self.value

    def __repr__(self):
        return self.name


def _ns(*names):
    return types.SimpleNamespace(**{n: _Enum(n, i) for i, n in enumerate(names)})


def fake_tensorrt(version="10.13.0.35", lacks=(), engine=b"\x00plan\x01" * 8, parse_ok=True, errors=()):
    calls = []
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = calls
    trt.float32 = "float32"
    net_flags = [n for n in ("EXPLICIT_BATCH", "STRONGLY_TYPED") if n not in lacks]
    trt.NetworkDefinitionCreationFlag = _ns(*net_flags)
    trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH.value = 0
    if "STRONGLY_TYPED" in net_flags:
        trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value = 1
    trt.BuilderFlag = _ns(*(f for f in ("FP16", "BF16", "TF32", "OBEY_PRECISION_CONSTRAINTS",
                                         "VERSION_COMPATIBLE") if f not in lacks))  # fmt: skip
    trt.MemoryPoolType = _ns("WORKSPACE")
    if "HardwareCompatibilityLevel" not in lacks:
        trt.HardwareCompatibilityLevel = _ns("NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")
    trt.LayerType = _ns("CONVOLUTION", "NORMALIZATION")

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            calls.append(("Logger", severity))

    class Layer:
        num_outputs = 1

        def __init__(self, kind):
            object.__setattr__(self, "type", kind)

        def __setattr__(self, name, value):
            calls.append((f"layer.{name}", self.type.name, value))

        def set_output_type(self, index, dtype):
            calls.append(("layer.set_output_type", self.type.name, index, dtype))

    class Network:
        num_layers = 3

        def get_layer(self, i):
            return Layer(
                [trt.LayerType.CONVOLUTION, trt.LayerType.NORMALIZATION, trt.LayerType.CONVOLUTION][i]
            )

    class Parser:
        def __init__(self, network, logger):
            calls.append(("OnnxParser",))
            self.num_errors = len(errors)

        def parse_from_file(self, path):
            proto = onnx.load(path)  # the file must exist while TensorRT parses it
            precision = {p.key: p.value for p in proto.metadata_props}.get("ctdn.precision", "fp32")
            calls.append(("parse_from_file", precision))
            return parse_ok

        def get_error(self, i):
            return errors[i]

    class Cache:
        def __init__(self, blob):
            self.blob = bytes(blob)

        def combine(self, other, ignore_mismatch):
            calls.append(("cache.combine", other.blob, ignore_mismatch))
            return True

        def serialize(self):
            calls.append(("cache.serialize",))
            return memoryview(self.blob + b"+timed")

    config_attrs = {
        "set_flag": lambda self, f: calls.append(("set_flag", f.name)),
        "clear_flag": lambda self, f: calls.append(("clear_flag", f.name)),
        "add_optimization_profile": lambda self, p: calls.append(("add_optimization_profile",)),
        "set_memory_pool_limit": lambda self, pool, size: calls.append(
            ("set_memory_pool_limit", pool.name, size)
        ),
        "create_timing_cache": lambda self, blob: (
            calls.append(("create_timing_cache", bytes(blob))),
            Cache(blob),
        )[1],
        "set_timing_cache": lambda self, c, ignore_mismatch: (
            calls.append(("set_timing_cache", ignore_mismatch)),
            object.__setattr__(self, "_cache", c),
        )[0],
        "get_timing_cache": lambda self: (calls.append(("get_timing_cache",)), self._cache)[1],
        "__setattr__": lambda self, k, v: calls.append((f"config.{k}", v)),
    }
    for attr in ("builder_optimization_level", "hardware_compatibility_level"):
        if attr not in lacks:
            config_attrs[attr] = None
    Config = type("IBuilderConfig", (), config_attrs)

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls.append(("set_shape", name, lo, opt, hi))

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder",))

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            calls.append(("create_builder_config",))
            return Config()

        def create_optimization_profile(self):
            calls.append(("create_optimization_profile",))
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            return None if engine is None else memoryview(engine)

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    return trt


def names(trt):
    return [c[0] for c in trt.calls]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    m = build("tiny")
    m.meta = {"name": "tiny"}
    return to_onnx(m, tmp_path_factory.mktemp("trt") / "tiny.onnx", check=False)


@pytest.fixture
def engine_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CTDN_ENGINE_DIR", str(tmp_path / "engines"))
    return tmp_path / "engines"


# ------------------------------------------------------------------------------------------------
def test_options_defaults_and_checks():
    o = BuildOptions().checked(8)
    assert (o.precision, o.typed, o.batch, o.height, o.width) == (
        "fp16",
        True,
        (1, 4, 16),
        (512,) * 3,
        (512,) * 3,
    )
    assert o.opt_level == 3 and o.workspace is None and o.timing_cache == "auto" and o.validate
    assert BuildOptions(precision="bf16").typed is False
    assert BuildOptions(precision="bf16", strongly_typed=True).typed is True
    assert BuildOptions(batch="2:8:32").checked().batch == (2, 8, 32)
    bad = {
        "precision must be one of fp32, fp16, bf16": dict(precision="int8"),
        "batch must satisfy min <= opt <= max, got 4:2:1": dict(batch=(4, 2, 1)),
        "batch min must be at least 1": dict(batch=(0, 1, 2)),
        "height must be .min, opt, max. integers": dict(height=(512, 512)),
        "width 500:512:512 must be multiples of the model's multiple .8.; e.g. 496 or 504": dict(
            width=(500, 512, 512)
        ),
        "opt_level must be an integer 0..5": dict(opt_level=7),
        "workspace must be a positive number of bytes": dict(workspace=-1),
        "hardware_compat must be one of": dict(hardware_compat="turing"),
        "version_compat must be True or False": dict(version_compat="yes"),
        "strongly_typed must be": dict(strongly_typed="auto"),
    }
    for msg, kw in bad.items():
        with pytest.raises(InputError, match=msg):
            BuildOptions(**kw).checked(8)


def test_parsers():
    assert parse_range("1:4:16", "b") == (1, 4, 16)
    assert parse_range("512", "h") == (512, 512, 512)
    assert parse_range("256:512", "h") == (256, 512, 512)
    with pytest.raises(InputError, match="--batch must be MIN:OPT:MAX"):
        parse_range("1:x:3", "--batch")
    assert parse_workspace("2G") == 2 << 30 and parse_workspace("512MiB") == 512 << 20
    assert parse_workspace("1000") == 1000
    with pytest.raises(InputError, match="workspace must be bytes like"):
        parse_workspace("lots")


def test_plan():
    p = plan_build("m.onnx", BuildOptions().checked(8))
    assert p.strongly_typed and p.set_flags == () and p.pin_fp32 == () and p.hardware is None
    assert p.profile["x"] == ((1, 1, 512, 512), (4, 1, 512, 512), (16, 1, 512, 512))
    assert p.profile["dose"] == ((1,), (4,), (16,))
    weak = plan_build("m.onnx", BuildOptions(strongly_typed=False, version_compat=True).checked(8))
    assert weak.set_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS", "VERSION_COMPATIBLE")
    assert weak.pin_fp32 == ("NORMALIZATION",)
    assert plan_build("m.onnx", BuildOptions(precision="fp32").checked()).clear_flags == ("TF32",)
    assert (
        plan_build("m.onnx", BuildOptions(hardware_compat="ampere_plus").checked()).hardware == "AMPERE_PLUS"
    )


def test_rebuild_command_and_timing_cache_path(engine_dir):
    o = BuildOptions(
        batch=(1, 8, 32), opt_level=5, hardware_compat="ampere_plus", version_compat=True
    ).checked()
    cmd = rebuild_command("edge", o, "out dir/edge.engine")
    assert cmd == (
        "ctdn-build-engine edge --precision fp16 --batch 1:8:32 --height 512:512:512 --width 512:512:512 "
        "--opt-level 5 --hardware-compat ampere_plus --version-compat --out 'out dir/edge.engine'"
    )
    env = GPU.replace(tensorrt="10.13.0.35")
    assert timing_cache_path(env) == engine_dir / "timing" / "sm90-nvidia-h100-80gb-hbm3-trt10.13.0.35.cache"
    with pytest.raises(EngineError, match="per GPU"):
        timing_cache_path(sc.Environment())


def test_missing_tensorrt_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match="^TensorRT is not installed: install TensorRT 10"):
        import_tensorrt()


def test_build_engine_drives_tensorrt_in_the_documented_order(tiny_onnx, engine_dir):
    trt = fake_tensorrt()
    out = build_engine(tiny_onnx, None, BuildOptions(height=(64, 128, 256), width=128), env=GPU, trt=trt)
    assert names(trt) == [
        "Logger", "Builder", "create_network", "OnnxParser", "parse_from_file", "create_builder_config",
        "create_optimization_profile", "set_shape", "set_shape", "add_optimization_profile",
        "config.builder_optimization_level", "create_timing_cache", "set_timing_cache",
        "build_serialized_network", "get_timing_cache", "cache.serialize",
    ]  # fmt: skip
    assert ("create_network", 1 << 1) in trt.calls  # 1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert ("parse_from_file", "fp16") in trt.calls  # the strongly typed network reads the fp16 graph
    assert ("set_shape", "x", (1, 1, 64, 128), (4, 1, 128, 128), (16, 1, 256, 128)) in trt.calls
    assert ("set_shape", "dose", (1,), (4,), (16,)) in trt.calls
    assert ("config.builder_optimization_level", 3) in trt.calls
    assert ("set_timing_cache", False) in trt.calls and ("create_timing_cache", b"") in trt.calls
    # Written where the tensorrt backend looks, with its sidecar, which this machine accepts.
    fp = onnx.load(str(tiny_onnx)).metadata_props
    meta = {p.key: p.value for p in fp}
    assert (
        out == engine_dir / f"tiny-{meta['ctdn.fingerprint']}-tensorrt-sm90-nvidia-h100-80gb-hbm3-fp16.engine"
    )
    assert out.read_bytes() == b"\x00plan\x01" * 8
    data = sc.check_sidecar(out, kind="tensorrt", env=GPU.replace(tensorrt="10.13.0.35"))
    assert data["versions"]["tensorrt"] == "10.13.0.35" and data["precision"] == "fp16"
    assert data["shapes"] == {"batch": [1, 4, 16], "height": [64, 128, 256], "width": [128, 128, 128]}
    assert data["rebuild"].startswith(f"ctdn-build-engine {tiny_onnx} --precision fp16 --batch 1:4:16")
    cache = engine_dir / "timing" / "sm90-nvidia-h100-80gb-hbm3-trt10.13.0.35.cache"
    ident = timing_cache.identity(GPU.replace(tensorrt="10.13.0.35"))
    assert timing_cache.load(cache, ident) == b"+timed"  # behind its checked header

    # A second build reuses the cache (loaded before the build, merged with the file after it).
    trt2 = fake_tensorrt()
    build_engine(tiny_onnx, engine_dir / "again.engine", BuildOptions(), env=GPU, trt=trt2)
    assert ("create_timing_cache", b"+timed") in trt2.calls
    assert ("cache.combine", b"+timed", True) in trt2.calls
    assert timing_cache.load(cache, ident) == b"+timed+timed"


def test_every_option_reaches_tensorrt(tiny_onnx, engine_dir, tmp_path):
    trt = fake_tensorrt()
    o = BuildOptions(
        precision="fp32",
        opt_level=5,
        workspace=1 << 30,
        timing_cache=None,
        hardware_compat="same_compute_capability",
        version_compat=True,
    )
    out = build_engine(tiny_onnx, tmp_path / "e.engine", o, env=GPU, trt=trt)
    c = trt.calls
    assert ("parse_from_file", "fp32") in c and ("create_network", 1 << 1) in c
    assert ("set_flag", "VERSION_COMPATIBLE") in c and ("clear_flag", "TF32") in c
    assert ("set_memory_pool_limit", "WORKSPACE", 1 << 30) in c
    assert ("config.builder_optimization_level", 5) in c
    assert (
        "config.hardware_compatibility_level",
        trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY,
    ) in c
    assert "create_timing_cache" not in names(trt) and not (engine_dir / "timing").exists()
    data = sc.read_sidecar(out)
    assert data["compatibility"] == {"hardware": "same_compute_capability", "version_compatible": True}
    assert "--version-compat" in data["rebuild"] and "--opt-level 5" in data["rebuild"]


def test_builder_flag_route_pins_layernorm_to_fp32(tiny_onnx, engine_dir, tmp_path):
    trt = fake_tensorrt()
    build_engine(tiny_onnx, tmp_path / "e.engine", BuildOptions(strongly_typed=False), env=GPU, trt=trt)
    c = trt.calls
    assert ("create_network", 0) in c and ("parse_from_file", "fp32") in c
    assert ("set_flag", "FP16") in c and ("set_flag", "OBEY_PRECISION_CONSTRAINTS") in c
    pinned = [x for x in c if x[0].startswith("layer.")]
    assert pinned == [
        ("layer.precision", "NORMALIZATION", "float32"),
        ("layer.set_output_type", "NORMALIZATION", 0, "float32"),
    ]
    assert "--no-strongly-typed" in sc.read_sidecar(tmp_path / "e.engine")["rebuild"]


def test_older_tensorrt_without_strong_typing_falls_back_with_a_warning(
    tiny_onnx, engine_dir, tmp_path, caplog
):
    trt = fake_tensorrt(version="8.6.1", lacks=("STRONGLY_TYPED",))
    with caplog.at_level(logging.WARNING, logger="ctdn"):
        build_engine(tiny_onnx, tmp_path / "e.engine", BuildOptions(), env=GPU, trt=trt)
    assert "TensorRT 8.6.1 has no strongly typed networks" in caplog.text
    assert ("create_network", 0) in trt.calls and ("set_flag", "FP16") in trt.calls
    assert ("parse_from_file", "fp32") in trt.calls
    # Asked for explicitly, it is an error naming the feature and the way out.
    with pytest.raises(
        EngineError, match="TensorRT 8.6.1 has no strongly typed networks; pass --no-strongly-typed"
    ):
        build_engine(tiny_onnx, tmp_path / "f.engine", BuildOptions(strongly_typed=True), env=GPU, trt=trt)


def test_missing_features_fail_only_when_asked_for(tiny_onnx, engine_dir, tmp_path, caplog):
    lacks = ("builder_optimization_level", "hardware_compatibility_level", "HardwareCompatibilityLevel")
    old = fake_tensorrt(version="8.5.3", lacks=(*lacks, "BF16", "VERSION_COMPATIBLE"))
    with caplog.at_level(logging.WARNING, logger="ctdn"):
        build_engine(tiny_onnx, tmp_path / "ok.engine", BuildOptions(), env=GPU, trt=old)
    assert "no builder optimization level; using its default" in caplog.text
    assert "config.builder_optimization_level" not in names(old)
    cases = {
        "no builder_optimization_level; drop --opt-level": BuildOptions(opt_level=1),
        "no hardware compatibility level AMPERE_PLUS; drop --hardware-compat": BuildOptions(
            hardware_compat="ampere_plus"
        ),
        r"no BuilderFlag.BF16; build fp16 instead": BuildOptions(precision="bf16"),
        r"no BuilderFlag.VERSION_COMPATIBLE; drop --version-compat": BuildOptions(version_compat=True),
    }
    for i, (msg, o) in enumerate(cases.items()):
        out = tmp_path / f"bad{i}.engine"
        with pytest.raises(EngineError, match=f"TensorRT 8.5.3 has {msg}"):
            build_engine(tiny_onnx, out, o, env=GPU, trt=old)
        assert not out.exists()
    # TensorRT 11 removed weak typing: the precision flags are gone.
    new = fake_tensorrt(version="11.0.0", lacks=("FP16",))
    with pytest.raises(EngineError, match="no BuilderFlag.FP16; weak typing is gone"):
        build_engine(tiny_onnx, tmp_path / "w.engine", BuildOptions(strongly_typed=False), env=GPU, trt=new)


def test_build_failures_leave_no_engine(tiny_onnx, engine_dir, tmp_path):
    out = tmp_path / "e.engine"
    with pytest.raises(EngineError, match="build_serialized_network returned None"):
        build_engine(tiny_onnx, out, BuildOptions(), env=GPU, trt=fake_tensorrt(engine=None))
    bad = fake_tensorrt(parse_ok=False, errors=("In node 12 (Conv): UNSUPPORTED_NODE",))
    with pytest.raises(EngineError, match="ONNX parser rejected .*In node 12 .Conv.: UNSUPPORTED_NODE"):
        build_engine(tiny_onnx, out, BuildOptions(), env=GPU, trt=bad)
    with pytest.raises(EngineError, match="needs a CUDA GPU"):
        build_engine(tiny_onnx, out, BuildOptions(), env=sc.Environment(torch="2.13.0"), trt=fake_tensorrt())
    with pytest.raises(InputError, match="multiples of the model's multiple"):
        build_engine(tiny_onnx, out, BuildOptions(height=(63, 64, 64)), env=GPU, trt=fake_tensorrt())
    assert not out.exists() and not sc.sidecar_path(out).exists()


def test_bf16_strongly_typed_uses_the_bf16_graph(tiny_onnx, engine_dir, tmp_path):
    trt = fake_tensorrt()
    build_engine(
        tiny_onnx,
        tmp_path / "b.engine",
        BuildOptions(precision="bf16", strongly_typed=True),
        env=GPU,
        trt=trt,
    )
    assert ("parse_from_file", "bf16") in trt.calls and not any(c[0] == "set_flag" for c in trt.calls)
    trt = fake_tensorrt()
    build_engine(tiny_onnx, tmp_path / "c.engine", BuildOptions(precision="bf16"), env=GPU, trt=trt)
    assert ("parse_from_file", "fp32") in trt.calls and ("set_flag", "BF16") in trt.calls


def test_wrong_io_names_are_refused(tmp_path, engine_dir):
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    props = {
        "ctdn.format": "ctdn-onnx/1",
        "ctdn.model": "m",
        "ctdn.fingerprint": "0" * 16,
        "ctdn.config": "{}",
    }
    props.update({"ctdn.hu_window": "[-1000, 1000]", "ctdn.multiple": "1", "ctdn.version": "0"})
    helper.set_model_props(m, props)
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    with pytest.raises(InputError, match=r"inputs \['input'\] and outputs \['output'\]"):
        build_engine(
            path, tmp_path / "m.engine", BuildOptions(height=8, width=8), env=GPU, trt=fake_tensorrt()
        )


def test_fake_enum_values_match_the_bindings():
    # The flag arithmetic uses int(flag); the bindings' NetworkDefinitionCreationFlag.STRONGLY_TYPED is 1
    # (kSTRONGLY_TYPED = 1 in NvInfer.h, TensorRT 10), as in the fake.
    trt = fake_tensorrt()
    assert int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the refusal on a machine without a GPU"
)
def test_runner_checks_the_sidecar_before_tensorrt_sees_the_engine(
    tiny_onnx, engine_dir, tmp_path, monkeypatch
):
    from ctdn.deploy.tensorrt import TensorRTRunner

    out = build_engine(tiny_onnx, tmp_path / "e.engine", BuildOptions(), env=GPU, trt=fake_tensorrt())
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineError, match=r"device.compute_capability is '9.0' in its sidecar but None here"):
        TensorRTRunner(out, "cuda")
