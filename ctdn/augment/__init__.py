"""Training-data fidelity: inserted lesions with masks, anatomical texture, photon-starving bodies.

See docs/data.md ("Fidelity training data") and :func:`generate_fidelity`; ``SyntheticDataset(...,
fidelity=True)`` serves such slices with their lesion masks.
"""

from .body import MAX_WIDTH_MM, REGIONS
from .fidelity import (
    FIDELITY_DOSES,
    FIDELITY_VERSION,
    PURPOSES,
    FidelityConfig,
    FidelityPhantom,
    generate_fidelity,
)
from .lesions import LESION_FIELDS, LESION_KINDS, SITES, InsertedLesion, from_table, to_table
from .organs import ORGANS
from .texture import TEXTURE

__all__ = [
    "FIDELITY_DOSES",
    "FIDELITY_VERSION",
    "LESION_FIELDS",
    "LESION_KINDS",
    "MAX_WIDTH_MM",
    "ORGANS",
    "PURPOSES",
    "REGIONS",
    "SITES",
    "TEXTURE",
    "FidelityConfig",
    "FidelityPhantom",
    "InsertedLesion",
    "from_table",
    "generate_fidelity",
    "to_table",
]
