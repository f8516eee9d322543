"""The caches ctdn reuses from disk, and where the suite keeps them.

- tests/conftest.py points every cache at a per-session folder under the system temp (xdist workers
  share the controller's; only its creator removes it) and fails a run that writes into HOME;
- the TensorRT timing cache is used only if its header names this TensorRT and GPU and its payload
  has the recorded size and sha256 (a foreign, stale, truncated or altered file is ignored with a
  warning, never handed to TensorRT, and replaced atomically);
- a cached C++ runtime build is reused only if build.json records its key, size and sha256;
- engines and AOTInductor packages carry their sha256 in the sidecar: a cached package that does not
  match is compiled again, an engine that does not match is refused before TensorRT reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path

import conftest
import pytest
import torch

import ctdn.export
import ctdn.runtime
from ctdn import _cache
from ctdn._cache import MAGIC, CacheInvalid, read_checked, write_checked
from ctdn.deploy import sidecar as sc
from ctdn.deploy import timing_cache as tc
from ctdn.errors import EngineError, MissingDependencyError
from ctdn.runtime import build as rbuild

TESTS = Path(__file__).resolve().parent
GPU = sc.Environment(
    torch="2.13.0",
    cuda="13.0",
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability="9.0",
    tensorrt="10.13.0.35",
)
IDENT = tc.identity(GPU)


def _python(code: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _clean_env(**extra) -> dict:
    """os.environ without this session's scratch and worker marks: a fresh session's start."""
    drop = (conftest.SCRATCH_VAR, conftest.OWNER_VAR, "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env | {k: str(v) for k, v in extra.items()}


# --- tests/conftest.py: every cache under the session's temporary folder ---------------------------
def test_every_cache_of_this_session_is_under_the_system_temp_not_home():
    temp, home = Path(tempfile.gettempdir()).resolve(), Path.home().resolve()
    root = conftest.SCRATCH.resolve()
    assert root.is_relative_to(temp) and not root.is_relative_to(home) and root.is_dir()
    for var, sub in conftest.CACHE_VARS.items():
        assert Path(os.environ[var]).resolve() == root / sub, var
    from ctdn.deploy.tensorrt import timing_cache_path

    for where in (ctdn.export.engine_dir(), rbuild.cache_root(), timing_cache_path(GPU)):
        assert where.resolve().is_relative_to(root), where
    import triton
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    for where in (triton.knobs.cache.dir, triton.knobs.cache.dump_dir, cache_dir(), torch.hub.get_dir()):
        assert Path(where).resolve().is_relative_to(root), where


def test_a_worker_shares_the_controllers_folder_and_leaves_it(tmp_path):
    shared = tmp_path / "controller-scratch"
    shared.mkdir()
    env = _clean_env(PYTEST_XDIST_WORKER="gw3", CTDN_TEST_SCRATCH=shared, CTDN_TEST_SCRATCH_OWNER=1)
    code = f"""
        import os, sys; sys.path.insert(0, {str(TESTS)!r}); import conftest
        print(conftest.SCRATCH); print(os.environ["CTDN_ENGINE_DIR"]); print(os.environ["TRITON_CACHE_DIR"])
    """
    r = _python(code, env)
    assert r.returncode == 0, r.stderr
    root, engines, triton_cache = r.stdout.split()
    assert Path(root) == shared and Path(engines) == shared / "ctdn" / "engines"
    assert Path(triton_cache) == shared / "triton" / ".triton" / "cache"
    assert (shared / "ctdn" / "engines").is_dir()  # the worker did not remove the controller's folder


def test_only_the_process_that_made_the_folder_removes_it(tmp_path):
    # A process that is not a worker makes its own folder (an inherited one is another session's);
    # a forked child exits without removing it; the creator removes it at exit.
    stale = tmp_path / "other-session"
    stale.mkdir()
    env = _clean_env(CTDN_TEST_SCRATCH=stale, CTDN_TEST_SCRATCH_OWNER=1)
    code = f"""
        import os, sys; sys.path.insert(0, {str(TESTS)!r}); import conftest
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # runs the atexit handlers in the child
        os.waitpid(pid, 0)
        print(conftest.SCRATCH, conftest.SCRATCH.is_dir())
    """
    r = _python(code, env)
    assert r.returncode == 0, r.stderr
    root, alive_after_child = r.stdout.split()
    assert Path(root) != stale and Path(root).parent == Path(tempfile.gettempdir())
    assert alive_after_child == "True"
    assert not Path(root).exists() and stale.is_dir()


def test_listing_and_leaks_see_writes_into_the_watched_folders(tmp_path):
    home = tmp_path / "home"
    (home / ".cache" / "ctdn" / "engines").mkdir(parents=True)
    (home / ".cache" / "ctdn" / "engines" / "old.engine").write_bytes(b"x")
    (home / ".bashrc").write_text("unwatched")
    before = conftest.listing(home)
    assert conftest.leaks(before, conftest.listing(home)) == []
    (home / ".bashrc").write_text("still unwatched, changed")
    (home / ".triton" / "cache" / "ab").mkdir(parents=True)
    (home / ".triton" / "cache" / "ab" / "k.json").write_text("{}")
    timing = home / ".cache" / "ctdn" / "engines" / "timing"
    timing.mkdir()
    (timing / "sm90-trt10.cache").write_bytes(b"+timed+timed")
    os.utime(home / ".cache" / "ctdn" / "engines" / "old.engine", ns=(1, 1))
    found = conftest.leaks(before, conftest.listing(home))
    assert ".cache/ctdn/engines/timing/sm90-trt10.cache" in found
    assert ".triton/cache/ab/k.json" in found and ".triton" in found  # a new folder too
    assert ".cache/ctdn/engines/old.engine" in found  # touched
    assert not any(".bashrc" in f for f in found)


def test_a_session_that_writes_into_home_fails(tmp_path):
    """A whole pytest run with this conftest and a test that leaks into a fake HOME exits non-zero and
    names the file; the test that checks the variables passes in it; its scratch folder is gone after."""
    home, suite = tmp_path / "home", tmp_path / "suite"
    (home / ".cache" / "ctdn").mkdir(parents=True)
    suite.mkdir()
    (suite / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (suite / "pytest.ini").write_text("[pytest]\n")
    record = tmp_path / "scratch.txt"
    (suite / "test_leak.py").write_text(
        textwrap.dedent(f"""
        import os, tempfile
        from pathlib import Path

        def test_the_caches_point_at_the_scratch():
            Path({str(record)!r}).write_text(os.environ["CTDN_TEST_SCRATCH"])
            assert os.environ["CTDN_ENGINE_DIR"].startswith(tempfile.gettempdir())
            assert not os.environ["CTDN_ENGINE_DIR"].startswith(str(Path.home()))

        def test_that_leaks():
            leak = Path.home() / ".cache" / "ctdn" / "engines" / "timing" / "x.cache"
            leak.parent.mkdir(parents=True)
            leak.write_bytes(b"+timed+timed")
        """)
    )
    env = _clean_env(HOME=home)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", str(suite)]
    r = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "2 passed" in out and f"the tests wrote into {home}" in out, out
    assert ".cache/ctdn/engines/timing/x.cache" in out, out
    scratch = Path(record.read_text())
    assert scratch.parent == Path(tempfile.gettempdir()) and not scratch.exists()


# --- checked cache files (ctdn._cache) -------------------------------------------------------------
def test_a_checked_file_round_trips_and_records_what_it_holds(tmp_path):
    path = write_checked(tmp_path / "c.cache", b"\x00payload\xff", kind="k", identity={"v": "1"})
    assert read_checked(path, kind="k", identity={"v": "1"}) == b"\x00payload\xff"
    first, header, payload = path.read_bytes().split(b"\n", 2)
    assert first + b"\n" == MAGIC and payload == b"\x00payload\xff"
    h = json.loads(header)
    assert h["bytes"] == 9 and h["sha256"] == hashlib.sha256(b"\x00payload\xff").hexdigest() and h["v"] == "1"
    assert read_checked(tmp_path / "absent.cache", kind="k", identity={}) is None
    assert [p.name for p in tmp_path.iterdir()] == ["c.cache"]  # no temporary left


def _variants(good: bytes) -> dict[str, bytes]:
    """Every way a cache file can be wrong: foreign, damaged header, other identity, damaged payload."""
    magic_end = len(MAGIC)
    header_end = good.index(b"\n", magic_end)
    header = json.loads(good[magic_end:header_end])

    def with_header(**changes) -> bytes:
        return MAGIC + json.dumps({**header, **changes}).encode() + good[header_end:]

    flipped = bytearray(good)
    flipped[-3] ^= 0x01
    return {
        "foreign (the old raw cache)": b"+timed+timed",
        "empty": b"",
        "another format": b"ctdn-cache/0\n" + good[magic_end:],
        "header cut": good[: magic_end + 10],
        "header not json": MAGIC + b"{not json\n" + good[header_end + 1 :],
        "header a list": MAGIC + b"[1, 2]\n" + good[header_end + 1 :],
        "header without newline": MAGIC + b"x" * (1 << 17),
        "another kind": with_header(kind="something-else"),
        "another TensorRT": with_header(tensorrt="10.14.1.48"),
        "another GPU": with_header(gpu="NVIDIA A100-SXM4-80GB"),
        "another compute capability": with_header(compute_capability="8.0"),
        "identity missing": MAGIC + json.dumps({"kind": tc.KIND}).encode() + good[header_end:],
        "truncated payload": good[:-5],
        "extended payload": good + b"++",
        "one bit of the payload": bytes(flipped),
        "size edited to match": with_header(bytes=header["bytes"] - 5)[:-5],
        "checksum edited": with_header(sha256="0" * 64),
    }


def _good_timing_cache(path: Path, payload: bytes = b"TRT timing blob " * 64) -> bytes:
    write_checked(path, payload, kind=tc.KIND, identity=IDENT)
    return path.read_bytes()


def test_every_damaged_or_foreign_cache_file_is_refused(tmp_path):
    good = _good_timing_cache(tmp_path / "good.cache")
    assert read_checked(tmp_path / "good.cache", kind=tc.KIND, identity=IDENT) == b"TRT timing blob " * 64
    for case, blob in _variants(good).items():
        path = tmp_path / "bad.cache"
        path.write_bytes(blob)
        with pytest.raises(CacheInvalid):
            read_checked(path, kind=tc.KIND, identity=IDENT)
            pytest.fail(f"{case} was accepted")


def test_the_timing_cache_loader_ignores_bad_files_with_a_warning(tmp_path, caplog):
    good = _good_timing_cache(tmp_path / "good.cache")
    assert tc.load(tmp_path / "good.cache", IDENT) == b"TRT timing blob " * 64
    for i, (case, blob) in enumerate(_variants(good).items()):
        path = tmp_path / f"bad{i}.cache"
        path.write_bytes(blob)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ctdn"):
            assert tc.load(path, IDENT) == b"", case
        assert (
            f"ignoring the timing cache {path}" in caplog.text and "starting an empty one" in caplog.text
        ), case
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ctdn"):
        assert tc.load(tmp_path, IDENT) == b""  # a folder where the file should be
        assert tc.load(tmp_path / "none.cache", IDENT) == b"" and tc.load(None, IDENT) == b""
    assert caplog.text.count("cannot read the timing cache") == 1  # an absent file is not worth a word


def test_a_failed_write_keeps_the_previous_cache(tmp_path, monkeypatch):
    path = tmp_path / "t.cache"
    good = _good_timing_cache(path)

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_checked(path, b"new", kind=tc.KIND, identity=IDENT)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["t.cache"]


# --- the timing cache through build_engine, with the fake tensorrt module --------------------------
@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    pytest.importorskip("onnx")
    from ctdn.export import to_onnx
    from ctdn.models import build

    m = build("tiny")
    m.meta = {"name": "tiny"}
    return to_onnx(m, tmp_path_factory.mktemp("caches") / "tiny.onnx", check=False)


def _build(tiny_onnx, out, trt, **options):
    from ctdn.deploy.tensorrt import BuildOptions, build_engine

    return build_engine(tiny_onnx, out, BuildOptions(height=64, width=64, **options), env=GPU, trt=trt)


def _created(trt) -> list[bytes]:
    return [c[1] for c in trt.calls if c[0] == "create_timing_cache"]


@pytest.mark.parametrize(
    "case", ["foreign (the old raw cache)", "another TensorRT", "one bit of the payload"]
)
def test_a_bad_timing_cache_never_reaches_tensorrt_and_is_replaced(
    tiny_onnx, tmp_path, monkeypatch, caplog, case
):
    from test_deploy_tensorrt import fake_tensorrt

    from ctdn.deploy.tensorrt import timing_cache_path

    monkeypatch.setenv("CTDN_ENGINE_DIR", str(tmp_path / "engines"))
    path = timing_cache_path(GPU)
    path.parent.mkdir(parents=True)
    bad = _variants(_good_timing_cache(path, b"stale timings"))[case]
    path.write_bytes(bad)
    trt = fake_tensorrt()
    with caplog.at_level(logging.WARNING, logger="ctdn"):
        _build(tiny_onnx, tmp_path / "e.engine", trt)
    assert caplog.text.count(f"ignoring the timing cache {path}") == 1, caplog.text
    assert _created(trt) == [b""]  # neither the bad file nor its payload reached TensorRT
    assert not any(c[0] == "cache.combine" for c in trt.calls)
    assert tc.load(path, IDENT) == b"+timed"  # replaced by this build's, checked
    trt2 = fake_tensorrt()
    _build(tiny_onnx, tmp_path / "f.engine", trt2)
    assert _created(trt2) == [b"+timed", b"+timed"]  # reused: loaded before, merged after
    assert tc.load(path, IDENT) == b"+timed+timed"


def test_a_timing_cache_is_kept_per_tensorrt_version_even_at_one_path(tiny_onnx, tmp_path, caplog):
    from test_deploy_tensorrt import fake_tensorrt

    path = tmp_path / "mine.cache"  # --timing-cache PATH: one file, whatever the version
    _build(tiny_onnx, tmp_path / "a.engine", fake_tensorrt(), timing_cache=path)
    newer = fake_tensorrt(version="10.14.1.48")
    with caplog.at_level(logging.WARNING, logger="ctdn"):
        _build(tiny_onnx, tmp_path / "b.engine", newer, timing_cache=path)
    assert "tensorrt is '10.13.0.35' in its header, '10.14.1.48' expected" in caplog.text
    assert _created(newer) == [b""]
    assert read_checked(path, kind=tc.KIND, identity=tc.identity(GPU.replace(tensorrt="10.14.1.48")))


def test_an_unwritable_timing_cache_only_warns(tiny_onnx, tmp_path, caplog):
    from test_deploy_tensorrt import fake_tensorrt

    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="ctdn"):
        out = _build(tiny_onnx, tmp_path / "e.engine", fake_tensorrt(), timing_cache=blocked / "t.cache")
    assert out.is_file() and "cannot write the timing cache" in caplog.text


# --- the C++ runtime's build cache ------------------------------------------------------------------
@pytest.fixture
def fake_compiler(monkeypatch, tmp_path):
    """build() with the compiler and linker stood in for: each writes its -o file; calls are counted."""
    monkeypatch.setenv("CTDN_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.delenv("TENSORRT_ROOT", raising=False)
    calls = []

    def run(cmd, verbose):
        out = Path(cmd[cmd.index("-o") + 1])
        calls.append(out.name)
        out.write_bytes(b"\x7fELF fake " + out.name.encode() + b" %d" % len(calls))

    monkeypatch.setattr(rbuild, "_run", run)
    return calls


def _links(calls) -> int:
    return sum(name.startswith(rbuild.EXT_NAME) for name in calls)


def test_a_runtime_build_records_its_size_and_checksum_and_is_reused(fake_compiler):
    target = rbuild.build(cuda=False)
    info = json.loads((target.parent / "build.json").read_text())
    p = rbuild.plan(cuda=False)
    assert info["format"] == rbuild.BUILD_FORMAT and info["key"] == p["key"] and info["ext"] == p["ext"]
    assert info["bytes"] == target.stat().st_size and info["sha256"] == _cache.sha256_file(target)
    assert rbuild.cached(p) == target
    assert rbuild.build(cuda=False) == target and _links(fake_compiler) == 1  # reused, not rebuilt


def _damage_build(target: Path, case: str) -> None:
    info_path = target.parent / "build.json"
    info = json.loads(info_path.read_text())
    raw = bytearray(target.read_bytes())
    if case == "module bit flipped":
        raw[3] ^= 0x01
        target.write_bytes(bytes(raw))
    elif case == "module truncated":
        target.write_bytes(bytes(raw[:-4]))
    elif case == "no build.json":
        info_path.unlink()
    elif case == "build.json cut":
        info_path.write_text(info_path.read_text()[:40])
    elif case == "build.json a list":
        info_path.write_text("[]")
    else:
        field, value = {"other key": ("key", "0" * 16), "old format": ("format", None)}[case]
        info_path.write_text(json.dumps({**info, field: value}))


DAMAGE = [
    "module bit flipped", "module truncated", "no build.json", "build.json cut", "build.json a list",
    "other key", "old format",
]  # fmt: skip


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_runtime_build_is_built_again(fake_compiler, caplog, case):
    target = rbuild.build(cuda=False)
    _damage_build(target, case)
    p = rbuild.plan(cuda=False)
    with caplog.at_level(logging.WARNING, logger="ctdn"):
        assert rbuild.cached(p) is None
    assert ("not reusing the cached build" in caplog.text) == (case != "no build.json"), caplog.text
    assert rbuild.build(cuda=False) == target and _links(fake_compiler) == 2
    assert rbuild.cached(p) == target  # whole again


@pytest.mark.parametrize("case", ["module bit flipped", "no build.json"])
def test_the_loader_never_imports_a_damaged_build(fake_compiler, monkeypatch, case):
    imported = []
    monkeypatch.setattr(ctdn.runtime, "_MODULE", None)
    monkeypatch.setattr(ctdn.runtime, "_installed", lambda: None)
    monkeypatch.setattr(ctdn.runtime, "_import", lambda path: imported.append(path.read_bytes()) or path)
    target = rbuild.build()
    _damage_build(target, case)
    monkeypatch.setenv("CTDN_NO_RUNTIME_BUILD", "1")
    with pytest.raises(MissingDependencyError, match="not built and CTDN_NO_RUNTIME_BUILD forbids"):
        ctdn.runtime.load()
    monkeypatch.delenv("CTDN_NO_RUNTIME_BUILD")
    assert ctdn.runtime.load() == target and _links(fake_compiler) == 2
    assert imported == [target.read_bytes()] and rbuild.cached(rbuild.plan()) == target


# --- engines and packages: the sidecar's sha256 ------------------------------------------------------
SHAPES = {"batch": [1, 1, 4], "height": [8, 64, 64], "width": [8, 64, 64]}
CPU_ENV = sc.Environment(torch=torch.__version__.split("+")[0])


@pytest.fixture(scope="module")
def tiny():
    from ctdn.models import build

    m = build("tiny")
    m.meta = {"name": "tiny"}
    return m


def _package(model, path: Path, payload: bytes = b"PK package " * 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    sc.write_sidecar(
        path, kind="aoti", model=model, shapes=SHAPES, precision="fp32", device="cpu", rebuild="to_aoti",
        env=CPU_ENV,
    )  # fmt: skip
    return path


def test_the_sidecar_records_the_checksum_and_check_sidecar_verifies_it(tiny, tmp_path):
    path = _package(tiny, tmp_path / "m.pt2")
    data = sc.read_sidecar(path)
    assert data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sc.check_sidecar(path, kind="aoti", device="cpu", env=CPU_ENV)["sha256"] == data["sha256"]
    assert sc.integrity(path) is None
    raw = bytearray(path.read_bytes())
    raw[5] ^= 0x20  # same size: only the checksum can tell
    path.write_bytes(bytes(raw))
    with pytest.raises(
        EngineError, match=r"m.pt2: sha256 is '[0-9a-f]{64}' in its sidecar but '[0-9a-f]{64}' "
    ):
        sc.check_sidecar(path, kind="aoti", device="cpu", env=CPU_ENV)
    assert "does not match the sha256 in its sidecar" in sc.integrity(path)
    path.write_bytes(bytes(raw[:-1]))
    assert "has 549 bytes, its sidecar says 550" in sc.integrity(path)
    # An older ctdn's sidecar has no sha256: loaders check its size; the aoti cache compiles it again.
    old = {k: v for k, v in data.items() if k != "sha256"}
    path.write_bytes(b"PK package " * 50)
    Path(f"{path}.json").write_text(json.dumps(old))
    assert sc.check_sidecar(path, kind="aoti", device="cpu", env=CPU_ENV)
    assert sc.integrity(path) is None
    assert "its sidecar has no sha256" in sc.integrity(path, require_checksum=True)


class _FakeRuntime:
    """ctdn._runtime.Runtime stood in for: records the bytes of each file it opens."""

    opened: list[bytes] = []

    def __init__(self, path, device=0, **kw):
        _FakeRuntime.opened.append(Path(path).read_bytes())
        self.sidecar = sc.read_sidecar(path)


@pytest.fixture
def fake_runtime(monkeypatch, tmp_path):
    monkeypatch.setenv("CTDN_ENGINE_DIR", str(tmp_path / "engines"))
    ext = types.SimpleNamespace(Runtime=_FakeRuntime, build_features=lambda: ["aoti", "cuda", "tensorrt"])
    monkeypatch.setattr(ctdn.runtime, "load", lambda: ext)
    _FakeRuntime.opened = []
    return _FakeRuntime.opened


PACKAGE_DAMAGE = ["bit flipped", "truncated", "no sha256 (older ctdn)", "sidecar unreadable"]


@pytest.mark.parametrize("case", PACKAGE_DAMAGE)
def test_a_cached_package_that_fails_its_checksum_is_compiled_again(
    tiny, fake_runtime, monkeypatch, caplog, case
):
    from ctdn.backends import aoti

    good = b"PK good package " * 40
    compiled = []

    def to_aoti(model, path, device):  # stands in for the compile
        compiled.append(path)
        _package(model, Path(path), good)

    monkeypatch.setattr(ctdn.export, "to_aoti", to_aoti)
    path = aoti.Runner(tiny, torch.device("cpu")).path  # first use: compiled
    assert compiled == [path] and fake_runtime == [good]
    aoti.Runner(tiny, torch.device("cpu"))
    assert len(compiled) == 1  # intact: reused
    side = Path(f"{path}.json")
    if case == "bit flipped":
        path.write_bytes(good.replace(b"good", b"gooD", 1))
    elif case == "truncated":
        path.write_bytes(good[:100])
    elif case == "sidecar unreadable":
        side.write_text('{"format": "ctdn-engine/1", ')
    else:
        side.write_text(json.dumps({k: v for k, v in json.loads(side.read_text()).items() if k != "sha256"}))
    with caplog.at_level(logging.WARNING, logger="ctdn"):
        aoti.Runner(tiny, torch.device("cpu"))
    assert f"compiling {path.name} again" in caplog.text
    assert len(compiled) == 2 and fake_runtime == [good, good, good]  # the damaged file was never opened


def test_an_engine_that_fails_its_checksum_is_refused_before_tensorrt(tiny, fake_runtime, monkeypatch):
    from ctdn.backends import tensorrt as trt_backend

    monkeypatch.setattr(ctdn.export, "device_slug", lambda device: "sm90-nvidia-h100-80gb-hbm3")
    path = trt_backend.engine_for(tiny, "fp16", "sm90-nvidia-h100-80gb-hbm3")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00plan\x01" * 16)
    sc.write_sidecar(
        path, kind="tensorrt", model=tiny, shapes=SHAPES, precision="fp16", device="cuda",
        rebuild="ctdn-build-engine tiny --out e.engine", env=GPU,
    )  # fmt: skip
    cuda0 = torch.device("cuda", 0)
    trt_backend.Runner(tiny, cuda0, "fp16")
    assert fake_runtime == [b"\x00plan\x01" * 16]
    path.write_bytes(b"\x00plan\x02" + b"\x00plan\x01" * 15)
    with pytest.raises(
        EngineError, match="does not match the sha256 in its sidecar .*ctdn-build-engine tiny"
    ):
        trt_backend.Runner(tiny, cuda0, "fp16")
    assert len(fake_runtime) == 1  # TensorRT never saw the altered engine
