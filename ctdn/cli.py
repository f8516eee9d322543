"""The ``ctdn`` command line.

- ``ctdn demo``: a phantom simulated at 10/25/50/70 % dose, noise figures printed, a PNG panel.
- ``ctdn simulate INPUT OUTPUT --dose D``: lower the dose of a DICOM series or .npy volume
  (noise insertion for real scans, full simulation for clean images); writes a new output.
- ``ctdn cache OUT``: build (or resume) a cache of simulated training pairs.
- ``ctdn info``: versions and devices.

Every user error prints one line ``ctdn: error: ...`` and exits with status 2; inputs are never
modified and existing outputs are never overwritten without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from ._atomic import atomic_path
from .errors import CTDNError, InputError

DEMO_DOSES = (0.7, 0.5, 0.25, 0.1)


def _parse_geometry(items: list[str] | None) -> dict:
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--geometry takes key=value pairs, got {item!r}")
        key, value = item.split("=", 1)
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from . import metrics, phantoms
    from .sim import Simulator
    from .viz import panel

    t0 = time.perf_counter()
    ph = phantoms.generate(args.kind, seed=args.seed, size=args.size)
    sim = Simulator(pixel_size_mm=ph.pixel_size_mm, device=args.device)
    clean = sim.noiseless(ph.hu)
    noisy = sim.simulate_doses(ph.hu, args.doses, seed=args.seed)
    elapsed = time.perf_counter() - t0
    print(
        f"ctdn {__version__} demo: {args.kind} phantom (seed {args.seed}), {args.size}x{args.size} at "
        f"{ph.pixel_size_mm:.3f} mm; {sim.geometry.kind}-beam, {sim.geometry.n_views} views x "
        f"{sim.geometry.detectors} channels, {sim.geometry.filter} filter, device {sim.device.type}"
    )
    print("Noise std is measured in the phantom's uniform region against the noise-free reconstruction;")
    print("'30 cm ref' is the calibration: 10 HU at full dose in a 30 cm soft-tissue cylinder, / sqrt(dose);")
    print("PSNR/SSIM on the [-1000, 1000] HU window against the noise-free reconstruction.\n")
    cols = ("noise std", "30 cm ref", "mean shift", "RMSE", "PSNR", "SSIM")
    print(f"{'dose':>6} " + " ".join(f"{c:>{w}}" for c, w in zip(cols, (10, 11, 11, 8, 7, 7), strict=True)))
    print(f"{'':>6} {'(HU)':>10} {'(HU)':>11} {'(HU)':>11} {'(HU)':>8} {'(dB)':>7} {'':>7}")
    for d in sorted(noisy, reverse=True):
        img = noisy[d]
        shift = float((img - clean)[ph.uniform].mean())
        print(
            f"{d * 100:>5.0f}% {metrics.noise_std(img, clean, ph.uniform):>10.1f} {10 / np.sqrt(d):>11.1f} "
            f"{shift:>+11.2f} {metrics.rmse_hu(img, clean):>8.1f} {metrics.psnr(img, clean):>7.2f} "
            f"{metrics.ssim(img, clean):>7.3f}"
        )
    out = Path(args.out)
    doses = sorted(noisy, reverse=True)
    images = [ph.hu, clean] + [noisy[d] for d in doses]
    titles = ["phantom", "noise-free recon"] + [f"{d * 100:.0f}% dose" for d in doses]
    level, width = (40.0, 80.0) if args.kind == "head" else (40.0, 400.0)
    path = panel(images, titles, out / f"{args.kind}_doses.png", level=level, width=width, columns=3)
    print(f"\nwrote {path} (window level {level:g}, width {width:g}); simulation took {elapsed:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------
def _check_output(path: Path, overwrite: bool, inputs: list[Path]) -> None:
    resolved = path.resolve()
    for src in inputs:
        src = src.resolve()
        if resolved == src or (src.is_dir() and src in resolved.parents):
            raise InputError(f"output {path} would write into the input {src}; choose another output")
    if path.exists() and not overwrite:
        raise InputError(f"output {path} already exists; pass --overwrite to replace it")


def cmd_simulate(args: argparse.Namespace) -> int:
    from .sim import Geometry, Simulator

    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise InputError(f"input {src} does not exist")
    _check_output(dst, args.overwrite, [src])
    geometry = Geometry.from_kwargs(**_parse_geometry(args.geometry))
    is_npy = src.suffix == ".npy"
    if is_npy:
        try:
            hu = np.load(src, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read {src} as a .npy array: {exc}") from exc
        pixel = args.pixel_size
        like = None
    else:
        from .io import read_dicom

        like = read_dicom(src, series_uid=args.series_uid)
        hu = like.hu
        dy, dx = like.spacing[1], like.spacing[2]
        if args.pixel_size is None and abs(dy - dx) > 0.01 * dx:
            raise InputError(
                f"non-square pixels ({dy} x {dx} mm): the simulator needs square pixels; "
                "pass --pixel-size to treat them as square"
            )
        pixel = args.pixel_size or dx
    sim = Simulator(geometry, pixel_size_mm=pixel, device=args.device)
    t0 = time.perf_counter()
    if args.mode == "insert":
        out = sim.insert_noise(hu, args.dose, seed=args.seed, ndct_dose=args.ndct_dose, progress=True)
    else:
        out = sim.simulate(hu, args.dose, seed=args.seed, progress=True)
    seconds = time.perf_counter() - t0
    if like is None:
        if dst.suffix != ".npy":
            raise InputError(f"a .npy input needs a .npy output, got {dst}")
        with atomic_path(dst) as tmp:
            np.save(tmp, out.astype(np.float32))
    else:
        from .io import write_dicom

        what = "noise inserted" if args.mode == "insert" else "simulated"
        write_dicom(
            out,
            like,
            dst,
            description=f"ctdn {args.dose * 100:g}% dose",
            derivation=(
                f"ctdn {__version__}: low dose {what} in the projection domain, dose fraction "
                f"{args.dose:g} of the original, seed {args.seed}"
            ),
            overwrite=args.overwrite,
        )
    n = 1 if out.ndim == 2 else len(out)
    print(f"wrote {dst}: {n} slice(s) at {args.dose * 100:g}% dose ({args.mode}) in {seconds:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------
def cmd_cache(args: argparse.Namespace) -> int:
    from .datasets import SyntheticDataset, build_cache

    ds = SyntheticDataset(
        n_patients=args.patients,
        slices_per_patient=args.slices,
        kinds=tuple(args.kinds),
        doses=tuple(args.doses),
        size=args.size,
        seed=args.seed,
        target=args.target,
        geometry=_parse_geometry(args.geometry) or None,
        vary=args.vary,
        cache_dir=args.out,
        device=args.device,
    )
    stats = build_cache(ds, progress=True)
    print(
        f"cache {args.out}: {stats['simulated']} slice(s) simulated, {stats['reused']} reused, "
        f"{stats['seconds']:.1f} s"
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    print(f"ctdn {__version__}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, torch {torch.__version__}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            print(f"cuda:{i} {torch.cuda.get_device_name(i)}")
    else:
        print(f"no CUDA device; CPU threads: {torch.get_num_threads()}")
    return 0


# ---------------------------------------------------------------------------------------------
def _dose(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dose must be a number in (0, 1], got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctdn", description="Anatomy-aware low-dose CT denoising.")
    p.add_argument("--version", action="version", version=f"ctdn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="simulate a phantom at 70/50/25/10 %% dose and write a PNG panel")
    d.add_argument("--kind", default="abdomen", choices=("abdomen", "thorax", "head"))
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--size", type=int, default=512)
    d.add_argument("--doses", type=_dose, nargs="+", default=list(DEMO_DOSES))
    d.add_argument("--out", default="ctdn-demo", help="folder for the PNG (default ./ctdn-demo)")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("simulate", help="lower the dose of a DICOM series or .npy volume")
    s.add_argument("input", help="DICOM series folder/file or .npy (H, W) / (N, H, W) in HU")
    s.add_argument("output", help="new folder for the derived DICOM series, or a .npy path")
    s.add_argument("--dose", type=_dose, required=True, help="target dose fraction in (0, 1]")
    s.add_argument(
        "--mode",
        choices=("insert", "simulate"),
        default="insert",
        help="insert: add noise to a real scan (default); simulate: re-scan a clean image",
    )
    s.add_argument("--ndct-dose", type=_dose, default=1.0, help="dose of the input scan (insert mode)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--pixel-size", type=float, default=None, help="mm; default from DICOM or 360 mm FOV")
    s.add_argument("--series-uid", default=None, help="pick one series from a folder holding several")
    s.add_argument("--geometry", nargs="*", metavar="KEY=VALUE", help="e.g. kind=parallel filter=ramp")
    s.add_argument("--device", default=None)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_simulate)

    c = sub.add_parser("cache", help="build or resume a cache of simulated training pairs")
    c.add_argument("out", help="cache folder")
    c.add_argument("--patients", type=int, default=8)
    c.add_argument("--slices", type=int, default=4, help="slices per patient")
    c.add_argument("--kinds", nargs="+", default=["abdomen", "thorax", "head"])
    c.add_argument("--doses", type=_dose, nargs="+", default=[0.1, 0.25, 0.5, 0.7])
    c.add_argument("--size", type=int, default=512)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--target", choices=("ndct", "noiseless", "phantom"), default="ndct")
    c.add_argument("--geometry", nargs="*", metavar="KEY=VALUE")
    c.add_argument("--vary", action="store_true", help="vary geometry, filter, I0, noise and dose")
    c.add_argument("--device", default="cpu")
    c.set_defaults(func=cmd_cache)

    i = sub.add_parser("info", help="versions and devices")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CTDNError as exc:
        print(f"ctdn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctdn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
