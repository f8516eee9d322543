"""(LDCT, NDCT, dose) pairs from Mayo/TCIA DICOM, the seed's .npy layout, or synthetic phantoms.

Every dataset yields dicts ``{"ldct", "ndct", "dose", "patient", "slice"}`` (HU, float32) and
knows its patients, so splits are made by patient (:func:`split_by_patient`), never by slice.
"""

from .base import PairDataset, split_by_patient
from .mayo import MayoDataset
from .npy import NpyDataset
from .synthetic import SyntheticDataset, build_cache

__all__ = ["PairDataset", "MayoDataset", "NpyDataset", "SyntheticDataset", "split_by_patient", "build_cache"]
