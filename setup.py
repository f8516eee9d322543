"""Build script for ctdn.

``kernels/`` and ``train/`` live at the top of the repository (the layout the project asked for) but
install as ``ctdn.kernels`` and ``ctdn.train``, so installing ctdn never claims a generic top-level
import name.
"""

from setuptools import setup

setup(
    packages=[
        "ctdn",
        "ctdn.sim",
        "ctdn.io",
        "ctdn.datasets",
        "ctdn.models",
        "ctdn.backends",
        "ctdn.kernels",
        "ctdn.train",
    ],
    package_dir={
        "ctdn": "ctdn",
        "ctdn.kernels": "kernels",
        "ctdn.train": "train",
    },
    # The shipped default model (a few MB) and its model card travel inside the package.
    package_data={"ctdn": ["weights/*.safetensors", "weights/*.json", "weights/*.md"]},
)
