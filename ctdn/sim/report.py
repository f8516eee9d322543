"""Reproduce the figures quoted in docs/simulation.md and docs/data.md.

    python -m ctdn.sim.report            # about a minute on a 2-core CPU

Prints: the I0 calibration, noise versus dose with and without electronic noise, the ramp/Hann
noise ratio, the resolution limit on a cylinder and on the anatomical phantoms, noise insertion on
a real CT slice (needs pydicom-data), and the phantoms' lesion-contrast spread.
"""

from __future__ import annotations

import importlib.util

import numpy as np
from scipy import ndimage

from .. import phantoms
from .geometry import Geometry
from .simulator import DEFAULT_I0, Simulator, calibrate_i0, insert_noise, noiseless

DOSES = (1.0, 0.7, 0.5, 0.25, 0.1)


def _cylinder_noise(sigma_e: float | None, **geometry) -> tuple[dict, dict]:
    ph = phantoms.cylinder()
    kw = {} if sigma_e is None else {"sigma_e": sigma_e}
    sim = Simulator(Geometry(**geometry), pixel_size_mm=ph.pixel_size_mm, **kw)
    clean = sim.noiseless(ph.hu)
    out = sim.simulate_doses(ph.hu, DOSES, seed=0)
    std = {d: float((v - clean)[ph.uniform].std()) for d, v in out.items()}
    bias = {d: float((v - clean)[ph.uniform].mean()) for d, v in out.items()}
    return std, bias


def main() -> None:
    i0, measured = calibrate_i0()
    print(f"calibration: std at DEFAULT_I0={DEFAULT_I0:.3g} is {measured:.2f} HU; I0 for 10 HU: {i0:.3g}")

    print("\nnoise in the 300 mm cylinder centre (HU), ratio to 1/sqrt(dose), bias (HU):")
    for label, se in (("sigma_e=0", 0.0), ("sigma_e=default", None), ("sigma_e=10", 10.0)):
        std, bias = _cylinder_noise(se)
        row = "  ".join(
            f"{d:.0%}: {std[d]:.2f} ({std[d] / std[1.0] * np.sqrt(d):.3f}, {bias[d]:+.2f})" for d in DOSES
        )
        print(f"  {label:16s} {row}")

    ramp, _ = _cylinder_noise(0.0, filter="ramp")
    hann, _ = _cylinder_noise(0.0)
    print(f"\nramp / hann noise at full dose: {ramp[1.0] / hann[1.0]:.2f}")

    cyl = phantoms.cylinder()
    rec = noiseless(cyl.hu, pixel_size_mm=cyl.pixel_size_mm)
    c = (np.arange(512) - 255.5) * cyl.pixel_size_mm
    r = np.hypot(c[None, :], c[:, None])
    band = 2 * cyl.pixel_size_mm
    err = rec - cyl.hu
    inside = np.sqrt((err[r < 150 - band] ** 2).mean())
    air = np.sqrt((err[(r > 150 + band) & (r < Geometry().fov_radius_mm - 12)] ** 2).mean())
    print(f"\ncylinder, noise-free, 2 px from the edge: {inside:.2f} HU RMS inside, {air:.2f} HU RMS in air")

    print("anatomical phantoms (seed 0), noise-free, > 3 px from any 50 HU edge:")
    for kind in phantoms.KINDS:
        ph = phantoms.generate(kind, seed=0)
        rec = noiseless(ph.hu, pixel_size_mm=ph.pixel_size_mm)
        edge = (ndimage.maximum_filter(ph.hu, 3) - ndimage.minimum_filter(ph.hu, 3)) > 50.0
        away = (ph.labels > 0) & (ndimage.distance_transform_edt(~edge) > 3)
        e = rec - ph.hu
        rms = np.sqrt((e[away] ** 2).mean())
        print(f"  {kind:8s} {rms:.2f} HU RMS; uniform mean {e[ph.uniform].mean():+.2f} HU")

    if importlib.util.find_spec("data_store") is not None:
        from pydicom.data import get_testdata_file

        from ..io import read_dicom

        vol = read_dicom(get_testdata_file("693_UNCI.dcm"))
        hu = vol.hu[0]
        body = hu > -500
        print("\nreal slice 693_UNCI.dcm, noise inserted (inside the body):")
        for d in (0.5, 0.25, 0.1):
            diff = insert_noise(hu, d, seed=0, pixel_size_mm=vol.spacing[2]) - hu
            print(f"  {d:.0%}: mean {diff[body].mean():+.3f} HU, std {diff[body].std():.2f} HU")
    else:
        print("\nreal slice: skipped (pip install pydicom-data)")

    worst, n = 0.0, 0
    for kind in ("abdomen", "head"):
        for seed in range(40):
            ph = phantoms.generate(kind, seed=seed)
            for i, les in enumerate(ph.lesions):
                worst = max(worst, abs(ph.lesion_contrast(ph.hu, i) - les.contrast_hu))
                n += 1
    print(f"\nlesion contrast, measured vs intended: worst {worst:.2f} HU over {n} lesions of 80 phantoms")


if __name__ == "__main__":
    main()
