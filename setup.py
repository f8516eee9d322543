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
        "ctdn.kernels",
        "ctdn.train",
    ],
    package_dir={
        "ctdn": "ctdn",
        "ctdn.kernels": "kernels",
        "ctdn.train": "train",
    },
)
