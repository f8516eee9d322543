"""Build script for ctdn.

``kernels/`` and ``train/`` live at the top of the repository (the layout the project asked for) but
install as ``ctdn.kernels`` and ``ctdn.train``, so installing ctdn never claims a generic top-level
import name. ``csrc/`` (the C++ runtime) installs as data under ``ctdn/_csrc``, so an installed ctdn
can compile its runtime on first use (``ctdn.runtime``).

The C++ runtime extension ``ctdn._runtime`` is built at install time only when asked for, because it
compiles against the installed torch, which an isolated build environment does not have (and would
fetch as a multi-GB CUDA build):

    CTDN_BUILD_RUNTIME=1 pip install --no-build-isolation .

Otherwise the first use of the ``aoti``/``tensorrt`` backends builds it into a cache folder (see
``csrc/README.md``); nothing else in ctdn needs it.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CSRC_DATA = [
    "README.md",
    "CMakeLists.txt",
    "include/ctdn/*.hpp",
    "src/*.cpp",
    "src/*.hpp",
    "src/*.cu",
    "python/*.cpp",
    "examples/*.cpp",
]


class BuildPyWithRuntime(build_py):
    """build_py, plus ``ctdn._runtime`` compiled into the build when CTDN_BUILD_RUNTIME=1."""

    def run(self):
        super().run()
        if os.environ.get("CTDN_BUILD_RUNTIME", "") not in ("1", "true", "yes"):
            return
        try:
            import torch  # noqa: F401
        except ImportError:
            sys.exit(
                "CTDN_BUILD_RUNTIME=1 compiles against the installed torch, which this build cannot "
                "import: install torch first and build with pip install --no-build-isolation"
            )
        sys.path.insert(0, str(HERE))
        from ctdn.runtime import build as rb  # the checkout's copy: the same code the package runs

        cuda = {"1": True, "0": False}.get(os.environ.get("CTDN_BUILD_CUDA", ""))
        with tempfile.TemporaryDirectory() as tmp:  # build.json etc. stay out of the package
            try:
                ext = rb.build(tmp, cuda=cuda, verbose=self.verbose > 1)
            except rb.CTDNError as exc:
                sys.exit(f"ctdn: building the C++ runtime failed: {exc}")
            shutil.copy2(ext, Path(self.build_lib) / "ctdn" / ext.name)
        print(f"ctdn: built {ext.name} into the package")


setup(
    packages=[
        "ctdn",
        "ctdn.sim",
        "ctdn.io",
        "ctdn.iq",
        "ctdn.dose",
        "ctdn.augment",
        "ctdn.datasets",
        "ctdn.models",
        "ctdn.backends",
        "ctdn.deploy",
        "ctdn.runtime",
        "ctdn.kernels",
        "ctdn.train",
        "ctdn._csrc",
    ],
    package_dir={
        "ctdn": "ctdn",
        "ctdn.kernels": "kernels",
        "ctdn.train": "train",
        "ctdn._csrc": "csrc",
    },
    # The shipped default model (a few MB) and its model card travel inside the package; so do the
    # C++ runtime's sources.
    package_data={
        "ctdn": ["weights/*.safetensors", "weights/*.json", "weights/*.md"],
        "ctdn._csrc": CSRC_DATA,
    },
    include_package_data=False,  # package_data is the whole list (csrc's folders are not packages)
    cmdclass={"build_py": BuildPyWithRuntime},
)
