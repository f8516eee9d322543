"""Low-dose CT simulation in the projection domain (see :mod:`ctdn.sim.simulator` for the physics).

>>> from ctdn import phantoms, sim
>>> ph = phantoms.generate("abdomen", seed=0)
>>> ldct = sim.simulate(ph.hu, 0.25, seed=1, pixel_size_mm=ph.pixel_size_mm)   # mode (a)
>>> ldct2 = sim.insert_noise(real_ndct_hu, 0.25, seed=1, pixel_size_mm=0.7)     # mode (b)
"""

from .geometry import FILTERS, Geometry
from .projector import fbp, forward_project
from .simulator import (
    DEFAULT_FOV_MM,
    DEFAULT_I0,
    DEFAULT_SIGMA_E,
    Simulator,
    calibrate_i0,
    check_dose,
    insert_noise,
    noiseless,
    simulate,
    simulate_doses,
)

__all__ = [
    "FILTERS",
    "Geometry",
    "fbp",
    "forward_project",
    "DEFAULT_FOV_MM",
    "DEFAULT_I0",
    "DEFAULT_SIGMA_E",
    "Simulator",
    "calibrate_i0",
    "check_dose",
    "insert_noise",
    "noiseless",
    "simulate",
    "simulate_doses",
]
