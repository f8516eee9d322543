"""ctdn-build-engine: --help, option errors, the missing-TensorRT message, --onnx-only and Triton
repositories end to end on a tiny model, and a whole build through a fake tensorrt module."""

import re
import sys

import pytest

from ctdn.deploy import sidecar as sc
from ctdn.deploy.cli import NO_TRT_HINT, build_parser, main
from ctdn.models import build, save_model

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_model(build("tiny"), tmp_path_factory.mktemp("cli") / "tiny.safetensors", {"name": "tiny"})


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on this workplace's machines


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 20
    for action in options:
        assert action.help and "default" in action.help or action.dest == "model_opt", action.dest
        assert any(o in text for o in action.option_strings), action.option_strings
    for flag in ("--precision", "--batch", "--height", "--width", "--shape", "--opt-level", "--workspace",
                 "--timing-cache", "--hardware-compat", "--version-compat", "--no-strongly-typed",
                 "--no-validate", "--onnx-only", "--triton-repo", "--quiet", "--out"):  # fmt: skip
        assert flag in text
    assert (
        "(default: fp16)" in text and "(default: 1:4:16)" in text and "(default: 3, TensorRT's own)" in text
    )
    assert "examples:" in text


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--batch", "4:2:1"], "batch must satisfy min <= opt <= max, got 4:2:1"),
        (["--batch", "1:x:4"], "--batch must be MIN:OPT:MAX integers"),
        (["--shape", "512"], "--shape must be HxW"),
        (["--shape", "512x512", "--height", "256"], "use either --shape or --height/--width"),
        (["--opt-level", "9"], "opt_level must be an integer 0..5"),
        (["--workspace", "lots"], "workspace must be bytes like 4G"),
        (["--backend", "onnxruntime"], "--backend onnxruntime only applies to --triton-repo"),
        (["--model", "edge"], "give the model once"),
    ],
)
def test_option_errors_are_one_line(capsys, no_tensorrt, argv, msg):
    code, out, err = run(capsys, "edge", *argv)
    assert code == 2 and out == ""
    assert err.startswith("ctdn-build-engine: error: ") and msg in err and err.count("\n") == 1, err


def test_sizes_must_fit_the_model(capsys, tiny, tmp_path):
    code, _, err = run(capsys, tiny, "--onnx-only", "--shape", "63x64", "--out", tmp_path / "t.onnx")
    assert code == 2 and "must be multiples of the model's multiple (2)" in err


def test_unknown_choice_is_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["edge", "--precision", "int8"])
    assert exc.value.code == 2 and "invalid choice: 'int8'" in capsys.readouterr().err


def test_missing_tensorrt_is_one_clear_line(capsys, no_tensorrt):
    code, out, err = run(capsys, "edge")
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("ctdn-build-engine: error: TensorRT is not installed: ")
    assert err.rstrip().endswith(NO_TRT_HINT)
    assert NO_TRT_HINT == "--onnx-only and --triton-repo with --backend onnxruntime work without it"


def test_onnx_only_end_to_end(capsys, no_tensorrt, tiny, tmp_path):
    from ctdn.deploy.onnx_precision import precision_of
    from ctdn.export import fingerprint, onnx_meta
    from ctdn.models import load_model

    out = tmp_path / "exports" / "tiny.onnx"
    code, stdout, err = run(capsys, tiny, "--onnx-only", "--out", out)
    assert code == 0 and err == "", err
    fp16 = tmp_path / "exports" / "tiny.fp16.onnx"
    assert f"wrote {out} (fp32) and {fp16} (fp16" in stdout
    meta32, meta16 = onnx_meta(out), onnx_meta(fp16)
    assert (
        meta32 == meta16
        and meta32["name"] == "tiny"
        and meta32["fingerprint"] == fingerprint(load_model(tiny))
    )
    assert precision_of(onnx.load(str(out))) == "fp32" and precision_of(onnx.load(str(fp16))) == "fp16"
    onnx.checker.check_model(str(fp16), full_check=True)
    # Outputs are not replaced without --overwrite; with it they are. --quiet prints nothing.
    code, _, err = run(capsys, tiny, "--onnx-only", "--out", out)
    assert code == 2 and "exists; pass --overwrite" in err
    code, stdout, _ = run(capsys, tiny, "--onnx-only", "--out", out, "--overwrite", "--quiet")
    assert code == 0 and stdout == ""
    # An .onnx model argument works too (copied, and converted).
    code, _, err = run(capsys, out, "--onnx-only", "--out", tmp_path / "again.onnx", "--precision", "bf16")
    assert code == 0, err
    assert precision_of(onnx.load(str(tmp_path / "again.bf16.onnx"))) == "bf16"


def test_onnx_only_default_path_is_in_the_engine_dir(capsys, no_tensorrt, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("CTDN_ENGINE_DIR", str(tmp_path / "engines"))
    code, stdout, _ = run(capsys, tiny, "--onnx-only")
    assert code == 0
    files = sorted(p.name for p in (tmp_path / "engines").iterdir())
    assert len(files) == 2 and re.fullmatch(r"tiny-[0-9a-f]{16}\.fp16\.onnx", files[0]), files


def test_triton_repo_with_onnxruntime_needs_no_tensorrt(capsys, no_tensorrt, tiny, tmp_path):
    code, stdout, err = run(capsys, tiny, "--triton-repo", tmp_path / "repo", "--backend", "onnxruntime")
    assert code == 0, err
    d = tmp_path / "repo" / "tiny"
    assert (d / "1" / "model.onnx").is_file() and 'platform: "onnxruntime_onnx"' in (
        d / "config.pbtxt"
    ).read_text()
    assert "Triton model repository entry" in stdout


def test_a_whole_build_through_a_fake_tensorrt(capsys, tiny, tmp_path, monkeypatch):
    from test_deploy_tensorrt import GPU, fake_tensorrt

    import ctdn.deploy.tensorrt as trt_mod

    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_mod, "probe", lambda device=None, **kw: GPU)
    monkeypatch.setenv("CTDN_ENGINE_DIR", str(tmp_path / "engines"))
    out = tmp_path / "tiny.engine"
    argv = [tiny, "--out", out, "--batch", "1:2:8", "--shape", "64x64", "--no-validate", "--triton-repo"]
    code, stdout, err = run(capsys, *argv, tmp_path / "repo")
    assert code == 0, err
    assert "building a fp16 engine with TensorRT 10.13.0.35" in stdout and f"wrote {out}" in stdout
    data = sc.check_sidecar(out, kind="tensorrt", env=GPU.replace(tensorrt="10.13.0.35"))
    assert data["shapes"] == {"batch": [1, 2, 8], "height": [64, 64, 64], "width": [64, 64, 64]}
    assert data["rebuild"] == (
        f"ctdn-build-engine {tiny} --precision fp16 --batch 1:2:8 --height 64:64:64 --width 64:64:64 "
        f"--out {out}"
    )
    assert ("set_shape", "x", (1, 1, 64, 64), (2, 1, 64, 64), (8, 1, 64, 64)) in trt.calls
    text = (tmp_path / "repo" / "tiny" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in text and "dims: [ 1, 64, 64 ]" in text
    # Without a GPU the build stops with one line.
    monkeypatch.setattr(trt_mod, "probe", lambda device=None, **kw: sc.Environment(torch="2.13.0"))
    code, _, err = run(capsys, tiny, "--out", out, "--no-validate")
    assert code == 2 and "needs a CUDA GPU" in err and err.count("\n") == 1


@pytest.mark.parametrize("broken", [False, True])
def test_validation_after_the_build(capsys, tiny, tmp_path, monkeypatch, broken):
    # The engine runner and the GPU are stood in for: the torch model on the CPU plays the engine.
    import numpy as np
    import torch
    from test_deploy_tensorrt import GPU, fake_tensorrt

    import ctdn.backends.pytorch as torch_backend
    import ctdn.deploy.tensorrt as trt_mod
    import ctdn.deploy.validate as val_mod
    from ctdn.models import load_model

    cpu_runner = torch_backend.Runner(load_model(tiny), torch.device("cpu"))

    class FakeEngineRunner:
        def __init__(self, path, device):
            self.sidecar = sc.read_sidecar(path)

        def __call__(self, x, dose):
            y = cpu_runner(x, dose)
            return np.full_like(y, np.nan) if broken else y

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    monkeypatch.setattr(trt_mod, "probe", lambda device=None, **kw: GPU)
    monkeypatch.setattr(trt_mod, "TensorRTRunner", FakeEngineRunner)
    monkeypatch.setattr(torch_backend, "Runner", lambda model, device, precision: cpu_runner)
    cases = val_mod.make_cases(64, views=96)
    monkeypatch.setattr(val_mod, "make_cases", lambda size, device=None: cases)
    out = tmp_path / "tiny.engine"
    code, stdout, err = run(capsys, tiny, "--out", out, "--shape", "64x64", "--batch", "1:2:4")
    if broken:
        assert code == 2 and "NaN/inf values" in err and "and its sidecar were removed" in err
        assert not out.exists() and not sc.sidecar_path(out).exists()
    else:
        assert code == 0, err
        assert "validating against torch fp32 on a simulated 64x64 abdomen phantom" in stdout
        assert "validation (fp16): worst agreement inf dB, ok" in stdout and out.exists()
    assert torch.backends.cudnn.allow_tf32  # restored
