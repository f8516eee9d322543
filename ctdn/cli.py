"""The ``ctdn`` command line.

- ``ctdn demo``: a phantom at 10 % dose denoised by the shipped model, metrics before/after, a PNG panel.
- ``ctdn sim-demo``: a phantom simulated at 10/25/50/70 % dose, noise figures printed, a PNG panel.
- ``ctdn simulate INPUT OUTPUT --dose D``: lower the dose of a DICOM series or .npy volume
  (noise insertion for real scans, full simulation for clean images); writes a new output.
- ``ctdn denoise INPUT OUTPUT --dose D``: denoise a DICOM series, .npy volume or NIfTI image with a
  trained model; writes a new derived DICOM series, .npy or NIfTI file.
- ``ctdn cache OUT``: build (or resume) a cache of simulated training pairs.
- ``ctdn info``: versions, devices, the default model and the inference backends.

Every user error prints one line ``ctdn: error: ...`` and exits with status 2; inputs are never
modified and existing outputs are never overwritten without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import __version__, _hints
from .errors import CTDNError, DoseError, InputError, InputTypeError, MissingDependencyError
from .io.output import check_output, file_output, output_kind

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
    from .inference import Denoiser
    from .quality_demo import demo_panel, demo_quality
    from .sim import Simulator

    ph = phantoms.generate(args.kind, seed=args.seed, size=args.size)
    sim = Simulator(pixel_size_mm=ph.pixel_size_mm)
    t0 = time.perf_counter()
    clean = sim.noiseless(ph.hu)
    noisy = sim.simulate(ph.hu, args.dose, seed=args.seed)
    t_sim = time.perf_counter() - t0
    den = Denoiser(args.model, backend=args.backend, device=args.device)
    den(noisy, args.dose)  # warm-up: the first call pays one-off allocation costs
    t0 = time.perf_counter()
    out = den(noisy, args.dose)
    t_den = time.perf_counter() - t0
    name = getattr(den.model, "meta", {}).get("name", args.model)
    print(
        f"ctdn {__version__} demo: {args.kind} phantom (seed {args.seed}, {args.size}x{args.size}, "
        f"{ph.pixel_size_mm:.3f} mm) simulated at {args.dose:.0%} dose ({t_sim:.1f} s), denoised by model "
        f"{name!r} with backend {den.backend} on {den.device.type} in {t_den:.2f} s"
    )
    print("Against the noise-free reconstruction; PSNR/SSIM on the [-1000, 1000] HU window, noise in the")
    print("phantom's uniform region.\n")
    print(f"{'':>10} {'noise (HU)':>11} {'RMSE (HU)':>10} {'PSNR (dB)':>10} {'SSIM':>7}")
    for label, img in (("input", noisy), ("denoised", out)):
        print(
            f"{label:>10} {metrics.noise_std(img, clean, ph.uniform):>11.1f} "
            f"{metrics.rmse_hu(img, clean):>10.1f} "
            f"{metrics.psnr(img, clean):>10.2f} {metrics.ssim(img, clean):>7.3f}"
        )
    print("\nWhat a reader looks for (PSNR alone rewards painting flat regions; docs/quality):")
    demo_quality(noisy, out, clean, ph)
    level, width = (40.0, 80.0) if args.kind == "head" else (40.0, 160.0)
    path = demo_panel(
        noisy,
        out,
        clean,
        ph,
        Path(args.out) / f"{args.kind}_denoised.png",
        labels=(f"input ({args.dose:.0%} dose)", f"ctdn {name}"),
        level=level,
        width=width,
        title=f"ctdn demo: {args.kind} phantom, {args.dose:.0%} dose, model {name}",
    )
    print(f"\nwrote {path} (full resolution, lesions circled; window level {level:g}, width {width:g})")
    return 0


def cmd_sim_demo(args: argparse.Namespace) -> int:
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
def cmd_simulate(args: argparse.Namespace) -> int:
    from .sim import Geometry, Simulator

    src = Path(args.input)
    if not src.exists():
        raise InputError(f"input {src} does not exist")
    dst_kind = output_kind(args.output)
    if src.suffix == ".npy" and dst_kind != "npy":
        raise InputError(f"a .npy input needs a .npy output, got {args.output}")
    if src.suffix != ".npy" and dst_kind != "dicom":
        raise InputError(f"a DICOM input gives a DICOM series folder, not a {dst_kind} file: {args.output}")
    dst = check_output(args.output, dst_kind, overwrite=args.overwrite, inputs=[src])
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
        from .io.dicom import check_dicom_output

        like = read_dicom(src, series_uid=args.series_uid, allow_non_ct=args.allow_non_ct)
        check_dicom_output(dst, like, overwrite=args.overwrite)  # before the simulation, not after
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
        with file_output(dst, "npy", overwrite=args.overwrite) as tmp:
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
            derivation_code=None,  # noise added, not smoothed: only the contributing equipment is named
        )
    n = 1 if out.ndim == 2 else len(out)
    print(f"wrote {dst}: {n} slice(s) at {args.dose * 100:g}% dose ({args.mode}) in {seconds:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------
NIFTI_AXES = (
    "NIfTI arrays are (X, Y, Z) (nibabel's data[i, j, k]); ctdn denoises the axial slices Z, each "
    "slice being data[:, :, k].T, i.e. rows = Y and columns = X, and writes the result back as "
    "(X, Y, Z) with the input's affine and header (data type float32, no scaling). No flips are "
    "applied, so the slices are seen in voxel order whatever the affine says."
)


def _nibabel():
    try:
        import nibabel
    except ImportError as exc:
        raise MissingDependencyError(
            'NIfTI input and output need nibabel: pip install nibabel (or pip install "ctdn[nifti]")'
        ) from exc
    return nibabel


def _read_npy(src: Path) -> np.ndarray:
    try:
        return np.load(src, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read {src} as a .npy array: {exc}") from exc


def _read_nifti(src: Path):
    """(HU as (N, H, W) or (H, W), the nibabel image); see :data:`NIFTI_AXES`."""
    nib = _nibabel()
    try:
        img = nib.load(str(src))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise TypeError(f"it holds a {type(img).__name__}, not a NIfTI-1/2 image")
        dtype = np.dtype(img.get_data_dtype())
        if dtype.fields is not None or dtype.kind not in "biuf":
            raise TypeError(f"its voxels are {dtype}, not real numbers")
        data = img.get_fdata(dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for damaged files
        raise InputError(f"cannot read {src} as a NIfTI image: {exc}") from exc
    while data.ndim > 3 and data.shape[-1] == 1:  # (X, Y, Z, 1): a single volume
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise InputError(
            f"{src}: expected a 2-D (X, Y) or 3-D (X, Y, Z) NIfTI image, got shape {tuple(img.shape)}"
        )
    return np.ascontiguousarray(data.T), img


def _dicom_affine(vol) -> np.ndarray:
    """The NIfTI (RAS) affine of voxel (column, row, slice) of a :class:`ctdn.io.Volume`."""
    dz, dy, dx = vol.spacing
    aff = np.eye(4)
    if vol.orientation is not None and vol.origin is not None:
        row_dir = np.asarray(vol.orientation[:3], dtype=np.float64)  # along a row: column index grows
        col_dir = np.asarray(vol.orientation[3:], dtype=np.float64)  # down a column: row index grows
        normal = np.cross(row_dir, col_dir)
        aff[:3, 0], aff[:3, 1], aff[:3, 2] = row_dir * dx, col_dir * dy, normal * dz
        aff[:3, 3] = vol.origin
        aff[:2] *= -1  # DICOM LPS -> NIfTI RAS
    else:
        aff[0, 0], aff[1, 1], aff[2, 2] = dx, dy, dz
    return aff


def _write_nifti(
    out: np.ndarray, dst: Path, like_img, affine: np.ndarray | None, description: str, *, overwrite: bool
) -> None:
    nib = _nibabel()
    xyz = np.asarray(out, dtype=np.float32).T
    if like_img is not None:
        img = type(like_img)(xyz, like_img.affine, header=like_img.header)
    else:
        img = nib.Nifti1Image(xyz, np.eye(4) if affine is None else affine)
        if affine is not None:
            img.header.set_qform(affine, code=1)
            img.header.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
    img.set_data_dtype(np.float32)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    data = img.to_bytes()
    if dst.name.lower().endswith(".gz"):
        import gzip

        data = gzip.compress(data, compresslevel=6)
    with file_output(dst, "nifti", overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def _denoise_paths(args: argparse.Namespace) -> tuple[Path, str, Path, str]:
    """(input, its kind, the resolved output, its kind), refused before any work where they cannot work."""
    src = Path(args.input)
    if not src.exists():
        raise InputError(f"input {src} does not exist")
    src_kind, dst_kind = output_kind(src), output_kind(args.output)
    if dst_kind == "dicom" and src_kind != "dicom":
        raise InputError(
            f"a DICOM output needs a DICOM input (its headers are copied); {src} is a "
            f"{'.npy' if src_kind == 'npy' else 'NIfTI'} file: "
            "give an output ending in .npy, .nii or .nii.gz"
        )
    if src_kind != "dicom" and src.is_dir():
        raise InputError(f"input {src} is a folder, not a {src_kind} file")
    dst = check_output(args.output, dst_kind, overwrite=args.overwrite, inputs=[src])
    if dst_kind != "dicom" and dst.is_dir():
        raise InputError(f"output {dst} is an existing folder; a {dst_kind} output is a file")
    if "nifti" in (src_kind, dst_kind):
        _nibabel()  # before any work: a missing nibabel is named now, not after denoising
    return src, src_kind, dst, dst_kind


def _read_input(args, src: Path, src_kind: str, dst: Path, dst_kind: str):
    """(HU, DICOM Volume or None, NIfTI image or None). Memory: a .npy input is memory-mapped and
    a DICOM series is decoded slice by slice into a scratch memmap next to the output, so neither
    is held in memory whole; NIfTI is read whole (docs/robustness.md, memory)."""
    like = like_img = None
    if src_kind == "npy":
        hu = _read_npy(src)
    elif src_kind == "nifti":
        hu, like_img = _read_nifti(src)
    else:
        from .io.stream import read_dicom_mapped

        scratch = dst.parent if dst.parent.is_dir() else None
        like = read_dicom_mapped(
            src, series_uid=args.series_uid, allow_non_ct=args.allow_non_ct, scratch_dir=scratch
        )
        hu = like.hu
        if dst_kind == "dicom":
            from .io.dicom import check_dicom_output

            check_dicom_output(dst, like, overwrite=args.overwrite)  # write_dicom's refusals, before the work
    if hu.ndim not in (2, 3):
        raise InputError(
            f"{src} holds a {hu.ndim}-D array of shape {tuple(hu.shape)}; ctdn denoise takes one slice "
            "(H, W) or a volume (N, H, W) in HU"
        )
    return hu, like, like_img


def cmd_denoise(args: argparse.Namespace) -> int:
    from .inference import Denoiser

    if not (np.isfinite(args.dose) and 0 < args.dose <= 1):
        raise DoseError(f"--dose is the fraction of a routine full dose, in (0, 1]; got {args.dose:g}")
    src, src_kind, dst, dst_kind = _denoise_paths(args)
    den = Denoiser(
        args.model,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
    )
    meta = getattr(den.model, "meta", {}) or {}
    model_name = str(meta.get("name") or Path(str(args.model)).stem)
    hu, like, like_img = _read_input(args, src, src_kind, dst, dst_kind)

    def run(out=None):
        try:
            return den(hu, args.dose, progress=not args.quiet, out=out)
        except (InputError, InputTypeError) as exc:  # bad values or dtype in the input: name the file
            raise type(exc)(f"{src}: {exc}") from exc

    what = f"dose {args.dose:g}, model {model_name}"
    derivation = (
        f"ctdn {__version__}: denoised by the {model_name} model ({Path(str(args.model)).name}) "
        f"for a dose fraction of {args.dose:g} of a routine full dose, backend {den.backend} on {den.device}"
    )
    t0 = time.perf_counter()
    try:
        if dst_kind == "npy":  # a memmap in the output's temporary file, filled batch by batch
            with file_output(dst, "npy", overwrite=args.overwrite) as tmp:
                mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=tuple(hu.shape))
                try:
                    run(mm)
                    mm.flush()
                finally:
                    del mm
            seconds = time.perf_counter() - t0
        elif dst_kind == "dicom":  # into a scratch memmap, then write_dicom converts slice by slice
            from .io import write_dicom
            from .io.stream import scratch_array

            out = run(scratch_array(hu.shape, np.float32, dst.parent if dst.parent.is_dir() else None))
            seconds = time.perf_counter() - t0
            write_dicom(
                out,
                like,
                dst,
                description=f"ctdn denoised ({what})",
                derivation=derivation,
                overwrite=args.overwrite,
                model=model_name,
            )
        else:
            out = run()
            seconds = time.perf_counter() - t0
            affine = _dicom_affine(like) if like is not None else None
            _write_nifti(out, dst, like_img, affine, f"ctdn denoised ({what})", overwrite=args.overwrite)
    except CTDNError:
        raise
    except OSError as exc:
        raise InputError(f"cannot write {dst}: {exc}") from exc
    n = 1 if hu.ndim == 2 else len(hu)
    rate = n / seconds if seconds > 0 else float("inf")
    print(
        f"ctdn: denoised {n} slice{'s' if n != 1 else ''} in {seconds:.1f} s ({rate:.1f} slices/s) with "
        f"backend {den.backend} on {den.device}, model {model_name} -> {dst}"
    )
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


def _config_summary(cfg: dict) -> str:
    """One line describing a model config (a :meth:`ModelConfig.to_dict`)."""

    def seq(v) -> str:
        return "/".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)

    parts = [
        f"{cfg.get('arch', 'nafnet')}",
        f"widths {seq(cfg.get('widths', '?'))}",
        f"pixel-unshuffle {cfg.get('shuffle', 1)}",
        f"blocks enc {seq(cfg.get('enc_blocks', '?'))} mid {cfg.get('mid_blocks', '?')} "
        f"dec-mid {cfg.get('dec_mid_blocks', '?')} dec {seq(cfg.get('dec_blocks', '?'))}",
        f"latent {cfg.get('latent', '?')}",
        f"skips {seq(cfg.get('skips') or []) or 'none'}",
        f"dose FiLM {cfg.get('film', '?') if cfg.get('dose', True) else 'off'}",
    ]
    if "hu_window" in cfg:
        lo, hi = cfg["hu_window"]
        parts.append(f"HU window [{lo:g}, {hi:g}]")
    return ", ".join(parts)


def _default_model_lines(name: str = "edge") -> list[str]:
    import json

    from .models.checkpoint import WEIGHTS_DIR

    card = WEIGHTS_DIR / f"{name}.json"
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    if not card.is_file():
        from .models import PRESETS

        lines = [f"default model: {name}: not shipped yet (no {weights})"]
        if name in PRESETS:
            lines.append(f"  preset {name}: {_config_summary(PRESETS[name].to_dict())}")
        return lines
    try:
        meta = json.loads(card.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return [f"default model: {name}: its card {card} is unreadable ({exc})"]
    state = "" if weights.is_file() else f" (but {weights.name} is missing)"
    lines = [f"default model: {meta.get('name', name)}{state}, {weights}"]
    if isinstance(meta.get("config"), dict):
        lines.append(f"  config: {_config_summary(meta['config'])}")
    extra = []
    if meta.get("ctdn_version"):
        extra.append(f"saved by ctdn {meta['ctdn_version']}")
    doses = meta.get("doses_seen")
    if isinstance(doses, (list, tuple)) and doses:
        try:
            extra.append(f"trained on doses {', '.join(f'{float(d):g}' for d in doses)}")
        except (TypeError, ValueError):
            pass
    if extra:
        lines.append("  " + "; ".join(extra))
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from . import backends

    print(f"ctdn {__version__}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, torch {torch.__version__}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            print(f"cuda:{i} {torch.cuda.get_device_name(i)}")
    else:
        print(f"no CUDA device; CPU threads: {torch.get_num_threads()}")
    for line in _default_model_lines():
        print(line)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        status = backends.available(torch.device(dev))
        ok = [n for n, why in status.items() if why is None]
        try:
            auto = backends.resolve("auto", torch.device(dev))
        except CTDNError:
            auto = "none"
        print(f"backends on {dev}: {', '.join(ok) or 'none'} available; auto picks {auto}")
        for n, why in status.items():
            if why is not None:
                print(f"  {n}: unavailable: {why}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import export

    out = Path(args.output)
    fmt = args.format or {".onnx": "onnx", ".pt2": "aoti"}.get(out.suffix)
    if fmt is None:
        raise InputError(f"cannot tell the format from {out.name!r}: name it .onnx or .pt2, or pass --format")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    t0 = time.perf_counter()
    if fmt == "onnx":
        export.to_onnx(args.model, out, opset=args.opset)
        meta = export.onnx_meta(out)
        what = f"ONNX opset {meta['opset']}, fingerprint {meta['fingerprint']}"
    else:
        export.to_aoti(
            args.model, out, device=args.device or "cpu", max_batch=args.max_batch, max_size=args.max_size
        )
        what = f"AOTInductor package for {args.device or 'cpu'}, sidecar {out}.json"
    print(f"wrote {out} ({what}) in {time.perf_counter() - t0:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------
def _dose(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        hint = ""
        if text.strip().endswith("%"):
            with contextlib.suppress(ValueError):
                hint = f" (for {text.strip()} give {float(text.strip()[:-1]) / 100:g})"
        raise argparse.ArgumentTypeError(
            f"dose must be a fraction of a routine full dose, in (0, 1], got {text!r}{hint}"
        ) from None


class _Parser(argparse.ArgumentParser):
    """argparse with ctdn's one-line errors (and the usage one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ctdn", description="Anatomy-aware low-dose CT denoising.")
    p.add_argument("--version", action="version", version=f"ctdn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="denoise a phantom simulated at 10 %% dose with the shipped model")
    d.add_argument("--kind", default="abdomen", choices=("abdomen", "thorax", "head"))
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--size", type=int, default=512)
    d.add_argument("--dose", type=_dose, default=0.1, help="simulated dose fraction (default 0.1)")
    d.add_argument("--model", default="edge", help="shipped model name or .safetensors path")
    d.add_argument("--backend", default="auto")
    d.add_argument("--device", default=None)
    d.add_argument("--out", default="ctdn-demo", help="folder for the PNG (default ./ctdn-demo)")
    d.set_defaults(func=cmd_demo)

    d = sub.add_parser("sim-demo", help="simulate a phantom at 70/50/25/10 %% dose and write a PNG panel")
    d.add_argument("--kind", default="abdomen", choices=("abdomen", "thorax", "head"))
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--size", type=int, default=512)
    d.add_argument("--doses", type=_dose, nargs="+", default=list(DEMO_DOSES))
    d.add_argument("--out", default="ctdn-demo", help="folder for the PNG (default ./ctdn-demo)")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=cmd_sim_demo)

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
    s.add_argument(
        "--allow-non-ct",
        action="store_true",
        help="read a DICOM series whose Modality is not CT (values as HU)",
    )
    s.add_argument("--geometry", nargs="*", metavar="KEY=VALUE", help="e.g. kind=parallel filter=ramp")
    s.add_argument("--device", default=None)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_simulate)

    n = sub.add_parser(
        "denoise",
        help="denoise a DICOM series, .npy volume or NIfTI image",
        description=(
            "Denoise INPUT with a trained model and write OUTPUT; the input is never modified. "
            "INPUT: a DICOM series folder or file, a .npy (H, W) or (N, H, W) array in HU, or a NIfTI "
            ".nii/.nii.gz image in HU (needs nibabel). OUTPUT: a new folder for a derived DICOM series "
            "(DICOM input only), or a .npy / .nii / .nii.gz file (float32 HU). " + NIFTI_AXES
        ),
    )
    n.add_argument("input", help="DICOM series folder/file, .npy (H, W)/(N, H, W) in HU, or .nii/.nii.gz")
    n.add_argument("output", help="new folder for a derived DICOM series, or a .npy, .nii or .nii.gz path")
    n.add_argument(
        "--dose",
        type=_dose,
        required=True,
        help="dose of the input scan as a fraction of a routine full dose, in (0, 1]",
    )
    n.add_argument("--model", default="edge", help="shipped model name or a .safetensors path (default edge)")
    n.add_argument("--backend", default="auto", help="inference backend (default auto; see ctdn info)")
    n.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default cuda when present)")
    n.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16"), help="default fp32")
    n.add_argument("--batch-size", type=int, default=None, help="slices per batch (default 1 CPU, 8 CUDA)")
    n.add_argument("--series-uid", default=None, help="pick one series from a folder holding several")
    n.add_argument(
        "--allow-non-ct",
        action="store_true",
        help="read a DICOM series whose Modality is not CT (values as HU)",
    )
    n.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    n.add_argument("--quiet", action="store_true", help="no progress bar (the summary line is still printed)")
    n.set_defaults(func=cmd_denoise)

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

    e = sub.add_parser(
        "export",
        help="export a model to ONNX (.onnx) or an AOTInductor package (.pt2)",
        description=(
            "Export the inference network (x: (N, 1, H, W) in the model's [-1, 1] HU window, dose: (N,)) "
            "for deployment. .onnx: ONNX Runtime, OpenVINO, TensorRT (ctdn-build-engine builds engines "
            "from it). .pt2: an AOTInductor package for the C++ runtime (backend aoti), tied to this "
            "torch version and device type, with a JSON sidecar beside it."
        ),
    )
    e.add_argument("output", help="the .onnx or .pt2 file to write")
    e.add_argument("--model", default="edge", help="shipped model name or a .safetensors path (default edge)")
    e.add_argument("--format", choices=("onnx", "aoti"), default=None, help="default: from OUTPUT's suffix")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    e.add_argument("--device", default=None, help="aoti: cpu or cuda (default cpu)")
    e.add_argument("--max-batch", type=int, default=16, help="aoti: largest batch (default 16)")
    e.add_argument("--max-size", type=int, default=1024, help="aoti: largest height/width (default 1024)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("info", help="versions, devices, the default model and the backends")
    i.set_defaults(func=cmd_info)
    return p


def _attach_negative_doses(argv: list[str]) -> list[str]:
    """``--dose -inf`` -> ``--dose=-inf``: argparse takes a value starting with "-" that is not a plain
    negative number for an option ("expected one argument"); attached, the dose gets ctdn's message."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--dose" and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1][1:2] != "-":
            out.append(f"--dose={argv[i + 1]}")
            i += 2
        else:
            out.append(a)
            i += 1
    return out


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` runs and no temporary is left behind."""


def _on_sigterm(signum, frame):
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_negative_doses(sys.argv[1:] if argv is None else argv))
    try:
        with _sigterm_as_interrupt(), _hints.cli():
            return args.func(args)
    except CTDNError as exc:
        print(f"ctdn: error: {exc}", file=sys.stderr)
        return 2
    except _Terminated:
        print("ctdn: terminated (SIGTERM); nothing was written", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("ctdn: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
