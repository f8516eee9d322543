"""Build ctdn's C++ runtime extension (``ctdn._runtime``) from ``csrc/`` with g++ (and nvcc) directly.

No CMake, no ``torch.utils.cpp_extension`` (whose ``CUDAExtension`` refuses a CPU build of torch):
the flags come from the installed torch (headers, libraries, C++ ABI). Parts, each skipped with a
logged reason when its toolchain is missing:

- the AOTInductor kind and the CPU HU pre/post: always (g++ and torch's headers);
- the CUDA HU kernels (``hu_cuda.cu``, ``-DCTDN_WITH_CUDA``): when nvcc is found and torch has CUDA
  (or ``cuda=True``: then nvcc is required, torch's CUDA libraries are linked only if it has them);
- the TensorRT kind (``engine_trt.cpp``, ``-DCTDN_WITH_TENSORRT``): when ``TENSORRT_ROOT`` is set.

Builds are cached by a hash of the sources, torch's version and the flags: ``$CTDN_RUNTIME_DIR/<hash>/``
or ``~/.cache/ctdn/runtime/<hash>/``. A cached module is reused only when its ``build.json`` (format
``BUILD_FORMAT``) names this hash and the module has the size and sha256 recorded there; anything
else (an interrupted or damaged build, a file replaced by hand) is built again.
CLI: ``python -m ctdn.runtime.build --help``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from .._atomic import atomic_path
from .._cache import sha256_file
from ..errors import CTDNError, MissingDependencyError

__all__ = ["build", "plan", "cache_root", "cached", "csrc_dir", "BuildError", "EXT_NAME"]

log = logging.getLogger("ctdn")

EXT_NAME = "_runtime"
CORE = [
    "src/json.cpp",
    "src/sidecar.cpp",
    "src/hu.cpp",
    "src/runtime.cpp",
    "src/engine_aoti.cpp",
    "src/engine_trt.cpp",  # without CTDN_WITH_TENSORRT: a stub that says how to rebuild
    "python/bindings.cpp",
]
CUDA_SOURCES = ["src/hu_cuda.cu"]
TORCH_SOURCES = ("src/engine_aoti.cpp",)  # include torch's headers: compiled with torch's C++ standard
JOBS = 2  # the machines this was written on have 2 cores shared by several people
BUILD_FORMAT = "ctdn-runtime-build/1"  # build.json's format: what cached() checks


class BuildError(CTDNError, RuntimeError):
    """The C++ runtime failed to compile or link (the message has the compiler's output)."""


def csrc_dir() -> Path | None:
    """The C++ sources: ``csrc/`` beside the package (a checkout) or ``ctdn/_csrc`` (an installed copy)."""
    pkg = Path(__file__).resolve().parents[1]
    for d in (pkg.parent / "csrc", pkg / "_csrc"):
        if (d / "include" / "ctdn" / "runtime.hpp").is_file():
            return d
    return None


def cache_root() -> Path:
    """``$CTDN_RUNTIME_DIR`` or ``~/.cache/ctdn/runtime``; each build lives in a ``<hash>/`` below it."""
    env = os.environ.get("CTDN_RUNTIME_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ctdn" / "runtime"


def ext_filename() -> str:
    return EXT_NAME + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def compiler() -> str | None:
    """The C++ compiler: ``$CXX`` or g++ / c++ on PATH."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx) or (cxx if os.path.isfile(cxx) else None)
    return shutil.which("g++") or shutil.which("c++")


def cuda_home() -> Path | None:
    """The CUDA toolkit with nvcc: $CUDA_HOME / $CUDA_PATH, /usr/local/cuda, or nvcc's folder on PATH."""
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(str(Path(nvcc).resolve().parent.parent))
    for c in cands:
        if (
            c
            and (Path(c) / "bin" / "nvcc").is_file()
            and (Path(c) / "include" / "cuda_runtime_api.h").is_file()
        ):
            return Path(c)
    return None


def _torch_info() -> dict:
    import torch

    root = Path(torch.__file__).resolve().parent
    return {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "abi": int(torch._C._GLIBCXX_USE_CXX11_ABI),
        "include": [str(root / "include"), str(root / "include" / "torch" / "csrc" / "api" / "include")],
        "lib": str(root / "lib"),
        # torch >= 2.10's headers need C++20 (its cpp_extension passes -std=c++20); the rest is C++17.
        "std": "c++20" if "-std=c++20" in (root / "utils" / "cpp_extension.py").read_text() else "c++17",
    }


def plan(*, cuda: bool | None = None, tensorrt_root=None) -> dict:
    """What a build would contain here: sources, flags, features and why parts are skipped (no compiling)."""
    src = csrc_dir()
    if src is None:
        raise MissingDependencyError(
            "the C++ runtime's sources (csrc/) are not here: build it from a ctdn checkout "
            "(git clone ...; pip install -e .) or install a ctdn that ships them"
        )
    cxx = compiler()
    if cxx is None:
        raise MissingDependencyError(
            "building ctdn's C++ runtime needs a C++17 compiler: install g++ (or set CXX)"
        )
    t = _torch_info()
    features, skipped = ["aoti"], {}
    defines = ["-DCTDN_WITH_AOTI", f"-D_GLIBCXX_USE_CXX11_ABI={t['abi']}"]
    libs = ["-ltorch", "-ltorch_cpu", "-lc10"]
    lib_dirs = [t["lib"]]
    includes = [str(src / "include"), str(src / "src"), *t["include"], sysconfig.get_paths()["include"]]
    sources = list(CORE)

    home = cuda_home()
    if cuda is False:
        skipped["cuda"] = "CUDA kernels skipped: turned off (cuda=False / --no-cuda)"
    elif home is None:
        if cuda:
            raise MissingDependencyError(
                "cuda=True but nvcc was not found (set CUDA_HOME or put nvcc on PATH)"
            )
        skipped["cuda"] = "CUDA kernels skipped: nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    elif t["cuda"] is None and not cuda:
        skipped["cuda"] = (
            f"CUDA kernels skipped: torch {t['version']} is a CPU build "
            "(cuda=True / --cuda compiles them anyway)"
        )
    elif not (src / CUDA_SOURCES[0]).is_file():
        if cuda:
            raise MissingDependencyError(f"cuda=True but {src / CUDA_SOURCES[0]} is missing")
        skipped["cuda"] = f"CUDA kernels skipped: {src / CUDA_SOURCES[0]} is missing"
    else:
        features.append("cuda")
        defines.append("-DCTDN_WITH_CUDA")
        includes.append(str(home / "include"))
        sources += CUDA_SOURCES
        lib_dirs.append(str(home / "lib64"))
        libs += (["-ltorch_cuda", "-lc10_cuda"] if t["cuda"] else []) + ["-lcudart"]

    trt = tensorrt_root or os.environ.get("TENSORRT_ROOT")
    if not trt:
        skipped["tensorrt"] = "TensorRT kind skipped: TENSORRT_ROOT is not set"
    elif "cuda" not in features:
        skipped["tensorrt"] = f"TensorRT kind skipped: it needs the CUDA part ({skipped['cuda']})"
    elif not (Path(trt) / "include" / "NvInfer.h").is_file():
        raise MissingDependencyError(f"TENSORRT_ROOT={trt} has no include/NvInfer.h")
    else:
        features.append("tensorrt")
        defines.append("-DCTDN_WITH_TENSORRT")
        includes.append(str(Path(trt) / "include"))
        lib_dirs.append(str(Path(trt) / "lib"))
        libs.append("-lnvinfer")

    cflags = [
        "-O2",
        "-fPIC",
        "-fvisibility=hidden",
        "-ffp-contract=off",
        "-Wall",
        *defines,
        f'-DCTDN_TORCH_VERSION="{t["version"]}"',
        # The module says which sources it was built from: ctdn.runtime ignores an installed stale one.
        f'-DCTDN_SOURCES_KEY="{sources_key(src)}"',
    ]
    p = {
        "csrc": str(src),
        "cxx": cxx,
        "nvcc": str(home / "bin" / "nvcc") if "cuda" in features else None,
        "sources": sources,
        "includes": includes,
        "cflags": cflags,
        "lib_dirs": lib_dirs,
        "libs": libs,
        "features": features,
        "skipped": skipped,
        "torch": t["version"],
        "python": sys.version.split()[0],
        "ext": ext_filename(),
        "torch_std": t["std"],
    }
    p["key"] = _key(p)
    return p


def sources_key(src: Path) -> str:
    """16 hex digits of sha256 over the files a build compiles (include/, src/, python/ under ``src``)."""
    h = hashlib.sha256()
    for d in ("include", "src", "python"):
        for f in sorted((src / d).rglob("*")):
            if f.is_file() and f.suffix in (".cpp", ".hpp", ".h", ".cu", ".cuh"):
                h.update(str(f.relative_to(src)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _key(p: dict) -> str:
    h = hashlib.sha256()
    skip = ("skipped", "csrc")  # the reasons and the checkout's location change nothing in the binary
    h.update(json.dumps({k: v for k, v in p.items() if k not in skip}, sort_keys=True).encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


_NO_MODULE, _UNFINISHED = "no module", "no build.json (an unfinished build)"


def _check_build(out: Path, p: dict) -> str | None:
    """Why the build in ``out`` must not be reused for plan ``p`` (None: it is complete and intact)."""
    target = out / p["ext"]
    if not target.is_file():
        return _NO_MODULE
    try:
        info = json.loads((out / "build.json").read_text())
    except FileNotFoundError:
        return _UNFINISHED
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"build.json is unreadable ({exc})"
    if not isinstance(info, dict):
        return "build.json is not a JSON object"
    for field, want in (("format", BUILD_FORMAT), ("key", p["key"]), ("ext", p["ext"])):
        if info.get(field) != want:
            return f"build.json has {field} {info.get(field)!r}, {want!r} expected"
    size = target.stat().st_size
    if info.get("bytes") != size:
        return f"{p['ext']} has {size} bytes, build.json says {info.get('bytes')!r}"
    if info.get("sha256") != sha256_file(target):
        return f"{p['ext']} does not match the sha256 in build.json (damaged or replaced)"
    return None


def cached(p: dict, *, warn: bool = True) -> Path | None:
    """The cached module for plan ``p`` if its build is complete and intact, else None.

    ``warn``: log why a damaged build is not reused (an absent or unfinished one is not worth a word).
    """
    out = cache_root() / p["key"]
    why = _check_build(out, p)
    if why is None:
        return out / p["ext"]
    if warn and why not in (_NO_MODULE, _UNFINISHED):
        log.warning("ctdn.runtime: not reusing the cached build in %s (%s); building it again", out, why)
    return None


def _run(cmd: list[str], verbose: bool) -> None:
    if verbose:
        print(" ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        out = (r.stdout + r.stderr).strip()
        raise BuildError(f"building ctdn's C++ runtime failed:\n{' '.join(cmd)}\n{out[-6000:]}")
    if verbose and (r.stdout or r.stderr):
        print((r.stdout + r.stderr).strip(), flush=True)


def _compile_cmd(p: dict, name: str, obj: Path, cuda_arch: str) -> list[str]:
    inc = [f"-I{d}" for d in p["includes"]]
    source = Path(p["csrc"]) / name
    if source.suffix == ".cu":
        defines = [
            f
            for f in p["cflags"]
            if f.startswith("-D") and not f.startswith(("-DCTDN_TORCH", "-DCTDN_SOURCES"))
        ]
        return [
            p["nvcc"],
            "-std=c++17",
            "-O2",
            "-Xcompiler",
            "-fPIC",
            f"-arch={cuda_arch}",
            "-ccbin",
            p["cxx"],
            *defines,
            f"-I{Path(p['csrc']) / 'include'}",
            f"-I{Path(p['csrc']) / 'src'}",
            "-c",
            str(source),
            "-o",
            str(obj),
        ]
    std = p["torch_std"] if name in TORCH_SOURCES else "c++17"
    return [p["cxx"], f"-std={std}", *p["cflags"], *inc, "-c", str(source), "-o", str(obj)]


def build(out_dir=None, *, cuda: bool | None = None, tensorrt_root=None, verbose: bool = False) -> Path:
    """Compile ``ctdn._runtime`` and return the path of the extension module.

    ``out_dir``: where the module goes (``setup.py``'s build folder, e.g.); None: the cache folder for
    this build's hash, reused when it already holds the module. ``cuda``: None decides from the
    toolchain, True requires nvcc, False leaves CUDA out. ``tensorrt_root``: TensorRT's install folder
    (default ``$TENSORRT_ROOT``). Compiles 2 translation units at a time (``$CTDN_BUILD_JOBS``).
    """
    p = plan(cuda=cuda, tensorrt_root=tensorrt_root)
    for why in p["skipped"].values():
        log.info("ctdn.runtime: %s", why)
    out = Path(out_dir) if out_dir is not None else cache_root() / p["key"]
    target = out / p["ext"]
    if out_dir is None and (hit := cached(p, warn=False)) is not None:
        return hit
    out.mkdir(parents=True, exist_ok=True)
    # Gone before the module changes, so no reader takes the new module for the old record.
    (out / "build.json").unlink(missing_ok=True)
    arch = os.environ.get("CTDN_CUDA_ARCH", "all-major")
    jobs = max(1, int(os.environ.get("CTDN_BUILD_JOBS", JOBS)))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ctdn-runtime-") as tmp:
        objs, cmds = [], []
        for s in p["sources"]:
            obj = Path(tmp) / (s.replace("/", "_") + ".o")
            objs.append(obj)
            cmds.append(_compile_cmd(p, s, obj, arch))
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for f in [pool.submit(_run, c, verbose) for c in cmds]:
                f.result()
        rpaths = [f"-Wl,-rpath,{d}" for d in p["lib_dirs"]]
        tmp_target = Path(tmp) / p["ext"]
        _run(
            [
                p["cxx"],
                "-shared",
                *map(str, objs),
                "-o",
                str(tmp_target),
                *(f"-L{d}" for d in p["lib_dirs"]),
                *rpaths,
                *p["libs"],
            ],
            verbose,
        )
        # Into place atomically: another process may be importing an older build of the same name.
        part = out / f".{p['ext']}.{os.getpid()}"
        shutil.copyfile(tmp_target, part)
        os.replace(part, target)
    info = {"format": BUILD_FORMAT, "ext": p["ext"], "bytes": target.stat().st_size}
    info["sha256"] = sha256_file(target)
    info.update(
        {k: p[k] for k in ("key", "features", "skipped", "torch", "python", "sources", "cflags", "libs")}
    )
    info["seconds"] = round(time.perf_counter() - t0, 1)
    with atomic_path(out / "build.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    log.info("ctdn.runtime: built %s (%s) in %.0f s", target, ", ".join(p["features"]), info["seconds"])
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m ctdn.runtime.build",
        description="Compile ctdn's C++ runtime (the ctdn._runtime extension) against the installed torch.",
    )
    ap.add_argument(
        "--out",
        help="folder for the module (default: the cache, $CTDN_RUNTIME_DIR or ~/.cache/ctdn/runtime/<hash>)",
    )
    g = ap.add_mutually_exclusive_group()
    g.add_argument(
        "--cuda",
        dest="cuda",
        action="store_true",
        default=None,
        help="compile the CUDA kernels (needs nvcc; default: when nvcc is found and torch has CUDA)",
    )
    g.add_argument("--no-cuda", dest="cuda", action="store_false", help="leave the CUDA kernels out")
    ap.add_argument(
        "--tensorrt-root", help="TensorRT install folder (default $TENSORRT_ROOT; unset: no TensorRT)"
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="print what would be built and why parts are skipped"
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="print the compiler commands")
    a = ap.parse_args(argv)
    try:
        if a.dry_run:
            print(json.dumps(plan(cuda=a.cuda, tensorrt_root=a.tensorrt_root), indent=2))
            return 0
        p = plan(cuda=a.cuda, tensorrt_root=a.tensorrt_root)
        for why in p["skipped"].values():
            print(f"ctdn.runtime: {why}", file=sys.stderr)
        t0 = time.perf_counter()
        path = build(a.out, cuda=a.cuda, tensorrt_root=a.tensorrt_root, verbose=a.verbose)
    except CTDNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path} ({', '.join(p['features'])}; {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
