"""Example fidelity slices as a PNG (the figure of docs/data.md).

    python -m ctdn.augment.examples docs/figures/fidelity-examples.png

Top row: four noise-free 512x512 fidelity slices with the outline of every inserted lesion; bottom
row: the same slices simulated at 5 % dose (default scanner, electronic noise sigma_e = 5), where
the wide bodies, dense bone and metal starve rays of photons and leave streaks.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import ndimage

from ..sim import Simulator
from ..viz import panel
from .fidelity import FidelityConfig, generate_fidelity

SOFT, LUNG, BRAIN = (40.0, 400.0), (-600.0, 1500.0), (40.0, 120.0)
# (kind, seed, config, window of the phantom, window of the low-dose scan): an abdomen, a pelvis
# with a hip prosthesis, shoulders (lungs, then the streaks in the soft-tissue window), a head.
EXAMPLES = (
    ("abdomen", 2, FidelityConfig(metal=0.0), SOFT, SOFT),
    ("abdomen", 0, FidelityConfig(metal=1.0), SOFT, SOFT),
    ("thorax", 0, FidelityConfig(metal=0.0), LUNG, SOFT),
    ("head", 2, FidelityConfig(metal=0.0), BRAIN, BRAIN),
)


def _outlined(hu: np.ndarray, ids: np.ndarray, value: float) -> np.ndarray:
    """``hu`` with the outline of every lesion support set to ``value``."""
    support = ids > 0
    edge = support & ~ndimage.binary_erosion(support)
    return np.where(ndimage.binary_dilation(edge) & ~support, value, hu).astype(np.float32)


def make(path, *, size: int = 512, dose: float = 0.05, tile: int = 224, seed: int = 0):
    """Write the figure to ``path``; returns the path."""
    top, bottom, titles_top, titles_bottom, windows, low_windows = [], [], [], [], [], []
    for kind, s, cfg, window, low_window in EXAMPLES:
        ph = generate_fidelity(kind, seed=s, size=size, config=cfg)
        sim = Simulator(pixel_size_mm=ph.pixel_size_mm, device="cpu")
        top.append(_outlined(ph.hu, ph.lesion_ids, window[0] + window[1]))
        bottom.append(sim.simulate(ph.hu, dose, seed=seed))
        metal = ", metal" if ph.metal else ""
        titles_top.append(f"{ph.region}, {ph.body_width_mm / 10:.0f} cm{metal}, {len(ph.inserted)} lesions")
        titles_bottom.append(f"{dose:.0%} dose")
        windows.append(window)
        low_windows.append(low_window)
    titles = titles_top + titles_bottom
    return panel(top + bottom, titles, path, columns=len(top), tile=tile, windows=windows + low_windows)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ctdn.augment.examples OUT.png", file=sys.stderr)
        return 2
    print(make(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
