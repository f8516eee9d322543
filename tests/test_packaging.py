"""Every third-party module imported at module level by the package is a declared core dependency.

The test extras install more (scipy, scikit-image, ...), so a missing core dependency would pass
CI and fail the README's main command on a fresh machine; this catches it.
"""

import ast
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
DIST = {"PIL": "pillow", "skimage": "scikit-image", "yaml": "pyyaml"}
# Modules that import an optional dependency at module level because they are themselves imported only
# behind a check that says how to install it (ctdn.kernels.fuse -> kernels/nafblock.py): file -> extra.
OPTIONAL_MODULES = {"kernels/nafblock.py": "triton"}


def _names(requirements) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in requirements}


def _declared() -> set[str]:
    return _names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def _third_party(names: set[str]) -> set[str]:
    """Distribution names of the non-stdlib, non-ctdn modules in ``names``."""
    skip = ("ctdn", "__future__")
    return {DIST.get(n, n).lower() for n in names if n not in sys.stdlib_module_names and n not in skip}


def _module_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:  # top-level statements only: lazy imports are optional
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_module_level_imports_are_declared_dependencies():
    files = [*(ROOT / "ctdn").rglob("*.py"), *(ROOT / "train").glob("*.py"), *(ROOT / "kernels").glob("*.py")]
    files = [f for f in files if str(f.relative_to(ROOT)) not in OPTIONAL_MODULES]
    used = set().union(*(_module_level_imports(f) for f in files))
    missing = _third_party(used) - _declared()
    assert not missing, f"imported at module level but not in [project] dependencies: {sorted(missing)}"


def test_optional_modules_import_only_their_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for path, extra in OPTIONAL_MODULES.items():
        assert _third_party(_module_level_imports(ROOT / path)) <= _declared() | _names(extras[extra]), path


def test_an_installed_package_carries_the_runtime_sources_and_the_weights(tmp_path):
    """setup.py's package data: ctdn/_csrc has every file the runtime build compiles (same sources key)."""
    import os
    import subprocess

    from ctdn.runtime import build

    env = {k: v for k, v in os.environ.items() if k != "CTDN_BUILD_RUNTIME"}
    r = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    installed = tmp_path / "ctdn" / "_csrc"
    assert (installed / "CMakeLists.txt").is_file() and (installed / "examples" / "denoise_raw.cpp").is_file()
    assert build.sources_key(installed) == build.sources_key(ROOT / "csrc")
    assert (tmp_path / "ctdn" / "weights" / "edge.safetensors").is_file()
    assert not list(tmp_path.rglob("_runtime*")), "the extension is built only with CTDN_BUILD_RUNTIME=1"


def test_every_subpackage_is_in_setup_py():
    """setup.py lists its packages: a new folder under ctdn/ left out of it is missing from wheels."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    listed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "packages":
            listed = {ast.literal_eval(e) for e in node.value.elts}
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ctdn").rglob("__init__.py")}
    assert found <= listed, f"packages not in setup.py: {sorted(found - listed)}"
