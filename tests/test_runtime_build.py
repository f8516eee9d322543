"""ctdn.runtime's build plan and loader: which parts a build gets and why, the cache key, the refusals.

Nothing here compiles (tests/test_runtime.py builds the extension once per session).
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from ctdn import runtime
from ctdn.errors import MissingDependencyError
from ctdn.runtime import build


def test_plan_has_the_aoti_kind_and_says_why_parts_are_skipped(monkeypatch):
    monkeypatch.delenv("TENSORRT_ROOT", raising=False)
    monkeypatch.setattr(build, "cuda_home", lambda: None)
    p = build.plan()
    assert p["features"] == ["aoti"]
    assert "src/engine_aoti.cpp" in p["sources"] and "src/hu_cuda.cu" not in p["sources"]
    assert p["skipped"]["cuda"].startswith("CUDA kernels skipped: nvcc not found")
    assert p["skipped"]["tensorrt"] == "TensorRT kind skipped: TENSORRT_ROOT is not set"
    assert any(f.startswith("-D_GLIBCXX_USE_CXX11_ABI=") for f in p["cflags"])
    assert "-ltorch" in p["libs"] and p["ext"].startswith("_runtime")
    with pytest.raises(MissingDependencyError, match="cuda=True but nvcc was not found"):
        build.plan(cuda=True)


@pytest.mark.skipif(build.cuda_home() is None, reason="needs nvcc (a CUDA toolkit)")
def test_plan_with_cuda_compiles_the_kernels_and_links_cudart(monkeypatch, tmp_path):
    p = build.plan(cuda=True)
    assert "cuda" in p["features"] and "src/hu_cuda.cu" in p["sources"]
    assert "-DCTDN_WITH_CUDA" in p["cflags"] and "-lcudart" in p["libs"]
    # TensorRT needs its headers where TENSORRT_ROOT says.
    with pytest.raises(MissingDependencyError, match="has no include/NvInfer.h"):
        build.plan(cuda=True, tensorrt_root=tmp_path)
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "NvInfer.h").write_text("")
    p = build.plan(cuda=True, tensorrt_root=tmp_path)
    assert "tensorrt" in p["features"] and "-DCTDN_WITH_TENSORRT" in p["cflags"] and "-lnvinfer" in p["libs"]


def test_tensorrt_needs_the_cuda_part(monkeypatch, tmp_path):
    monkeypatch.setenv("TENSORRT_ROOT", str(tmp_path))
    p = build.plan(cuda=False)
    assert "tensorrt" not in p["features"] and "needs the CUDA part" in p["skipped"]["tensorrt"]


def test_the_cache_key_follows_the_sources(monkeypatch, tmp_path):
    src = tmp_path / "csrc"
    shutil.copytree(build.csrc_dir(), src)
    monkeypatch.setattr(build, "csrc_dir", lambda: src)
    key = build.plan()["key"]
    assert build.plan()["key"] == key
    (src / "src" / "hu.cpp").write_text((src / "src" / "hu.cpp").read_text() + "\n// changed\n")
    assert build.plan()["key"] != key
    monkeypatch.setenv("CTDN_RUNTIME_DIR", str(tmp_path / "cache"))
    assert build.cache_root() == tmp_path / "cache"


def test_cli_dry_run_prints_the_plan(capsys, monkeypatch):
    monkeypatch.delenv("TENSORRT_ROOT", raising=False)
    assert build.main(["--dry-run", "--no-cuda"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["features"] == ["aoti"] and "turned off" in p["skipped"]["cuda"]


def test_without_a_compiler_the_reason_is_given(monkeypatch):
    monkeypatch.setattr(runtime, "_MODULE", None)
    monkeypatch.delitem(sys.modules, "ctdn._runtime", raising=False)
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: None)
    assert runtime.unavailable() is None  # sources and g++ are here: it can be built on first use
    monkeypatch.setattr(build, "compiler", lambda: None)
    assert "no C++ compiler" in runtime.unavailable()
    with pytest.raises(MissingDependencyError, match="needs a C\\+\\+17 compiler"):
        build.plan()
    assert build.main([]) == 1
    monkeypatch.setattr(build, "csrc_dir", lambda: None)
    assert "sources (csrc/) are not installed" in runtime.unavailable()


def test_no_build_when_told_not_to(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "_MODULE", None)
    monkeypatch.setattr(runtime, "_installed", lambda: None)
    monkeypatch.setenv("CTDN_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("CTDN_NO_RUNTIME_BUILD", "1")
    with pytest.raises(MissingDependencyError, match="CTDN_NO_RUNTIME_BUILD forbids building it"):
        runtime.load()
