"""The dose of a CT scan without being told: from its noise, and from its DICOM header where there is one.

>>> from ctdn.dose import estimate_dose
>>> est = estimate_dose(volume_hu, pixel_size_mm=0.7)          # (N, H, W) or (H, W) in HU
>>> est.dose, est.interval, est.method                          # e.g. 0.24, (0.17, 0.34), 'image'
>>> print(est)                                                  # one readable line; est.notes for the rest

``dose`` is a fraction of a routine full dose, in the simulator's sense (:mod:`ctdn.sim`): dose 1
gives about 10 HU of noise in the centre of a 30 cm water-like body with the default Hann kernel.
See docs/dose.md for the method, its calibration and its measured accuracy.
"""

from .calibration import kernel_gain
from .estimate import DISAGREEMENT, SUPPORTED_DOSE_RANGE, DoseEstimate, DoseEstimateError, estimate_dose
from .header import MGY_PER_MAS, REFERENCE_CTDIVOL

__all__ = [
    "estimate_dose",
    "DoseEstimate",
    "DoseEstimateError",
    "SUPPORTED_DOSE_RANGE",
    "DISAGREEMENT",
    "REFERENCE_CTDIVOL",
    "MGY_PER_MAS",
    "kernel_gain",
]
