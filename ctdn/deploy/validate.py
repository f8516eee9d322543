"""Check a deployed runner against a reference on a simulated phantom, at each dose, before trusting it.

A runner is anything with the backend Runner contract (:mod:`ctdn.backends`): ``runner(x, dose)``
with ``x`` (N, 1, H, W) float32 in the model's unit space and ``dose`` (N,) float32, returning the
network output like ``x``. :func:`validate` runs the runner and a reference (the torch model, or
ONNX Runtime on the fp32 export) on one phantom slice simulated once at doses 0.1, 0.25, 0.5, 0.7 and
reports, per dose:

- ``agreement_db``: PSNR between the two outputs (HU window [-1000, 1000] mapped to [0, 1], the
  metrics' convention), i.e. how far the runner is from the reference;
- ``gain_db`` / ``ref_gain_db``: the denoising PSNR change against the noise-free reconstruction,
  output PSNR minus input PSNR, for the runner and the reference.

It refuses (EngineError, the table in the message) a runner that returns NaN/inf (the fp16 LayerNorm
overflow NAFNet engines are known for), agrees worse than the precision's threshold, or loses more
than ``max_gain_drop_db`` of denoising gain at any dose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EngineError, InputError

__all__ = ["DOSES", "MIN_AGREEMENT_DB", "Cases", "Row", "Report", "make_cases", "validate", "OrtRunner"]

DOSES = (0.1, 0.25, 0.5, 0.7)
# Runner vs reference PSNR (dB) below which a build is refused, by precision. 45 dB is an RMSE of
# 0.56 % of the window (11 HU over [-1000, 1000]): far above what a sound fp16 engine gives (60+ dB)
# and far below what a broken one does (NaN, or a LayerNorm overflow: under 30 dB).
MIN_AGREEMENT_DB = {"fp32": 60.0, "fp16": 45.0, "bf16": 38.0}
MAX_GAIN_DROP_DB = 0.5


@dataclass(frozen=True)
class Cases:
    """One phantom slice: its noise-free reconstruction and a simulated scan per dose (HU, H x W)."""

    clean: np.ndarray
    low: dict[float, np.ndarray]
    kind: str = "abdomen"
    seed: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.clean.shape  # type: ignore[return-value]


def make_cases(
    size: int | tuple[int, int] = 512,
    doses=DOSES,
    *,
    kind: str = "abdomen",
    seed: int = 0,
    views: int | None = None,
    device=None,
) -> Cases:
    """Simulate the validation slice once: ``kind`` phantom at ``size`` (or (H, W), cropped from a
    square phantom), scanned at each dose. ``views``: fewer projection views for a faster simulation
    (tests); None is the simulator's clinical default."""
    from .. import phantoms
    from ..sim import Geometry, Simulator

    h, w = (size, size) if isinstance(size, int) else size
    side = max(h, w, 64)
    ph = phantoms.generate(kind, seed=seed, size=side)
    sim = Simulator(Geometry(views=views), pixel_size_mm=ph.pixel_size_mm, device=device)
    top, left = (side - h) // 2, (side - w) // 2
    crop = (slice(top, top + h), slice(left, left + w))
    clean = sim.noiseless(ph.hu)[crop]
    low = {float(d): img[crop] for d, img in sim.simulate_doses(ph.hu, list(doses), seed=seed).items()}
    return Cases(
        np.ascontiguousarray(clean), {d: np.ascontiguousarray(v) for d, v in low.items()}, kind, seed
    )


@dataclass(frozen=True)
class Row:
    dose: float
    agreement_db: float  # runner vs reference
    max_abs_hu: float  # largest |runner - reference| in HU
    gain_db: float  # runner's denoising PSNR change vs the clean slice
    ref_gain_db: float  # the reference's


@dataclass
class Report:
    precision: str
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        lines = [
            "dose   agreement   max |diff|   gain (runner)   gain (reference)",
            *(
                f"{r.dose:<6} {r.agreement_db:7.1f} dB {r.max_abs_hu:8.2f} HU {r.gain_db:+10.2f} dB "
                f"{r.ref_gain_db:+12.2f} dB"
                for r in self.rows
            ),
        ]
        return "\n".join(lines)


def _run(runner, unit: np.ndarray, doses: np.ndarray, batch: int) -> np.ndarray:
    out = []
    for s in range(0, len(unit), batch):
        y = np.asarray(runner(unit[s : s + batch], doses[s : s + batch]), dtype=np.float32)
        if y.shape != unit[s : s + batch].shape:
            raise EngineError(f"the runner returned shape {y.shape} for input {unit[s : s + batch].shape}")
        out.append(y)
    return np.concatenate(out)


def validate(
    runner,
    reference,
    *,
    hu_window=(-1000.0, 1000.0),
    multiple: int = 1,
    precision: str = "fp16",
    cases: Cases | None = None,
    size: int | tuple[int, int] = 512,
    batch: int = 4,
    min_agreement_db: float | None = None,
    max_gain_drop_db: float = MAX_GAIN_DROP_DB,
    raise_on_failure: bool = True,
) -> Report:
    """Compare ``runner`` with ``reference`` at each dose (see the module doc); returns the :class:`Report`.

    ``cases``: a slice from :func:`make_cases` (simulated here at ``size`` when None); its H and W
    must be multiples of ``multiple``. ``batch``: slices per runner call (the doses go in together,
    so per-item doses are exercised). Raises EngineError when the runner fails a check.
    """
    from ..hu import hu_to_unit, unit_to_hu
    from ..inference import passthrough_weight
    from ..metrics import psnr

    if precision not in MIN_AGREEMENT_DB:
        raise InputError(f"precision must be one of {', '.join(MIN_AGREEMENT_DB)}, got {precision!r}")
    threshold = MIN_AGREEMENT_DB[precision] if min_agreement_db is None else float(min_agreement_db)
    cases = cases or make_cases(size)
    h, w = cases.shape
    if h % multiple or w % multiple:
        raise InputError(f"the validation slice is {h}x{w}; it must be a multiple of {multiple}")
    lo, hi = map(float, hu_window)
    keys = sorted(cases.low)
    doses = np.array(keys, dtype=np.float32)
    low = np.stack([cases.low[d] for d in keys]).astype(np.float32)
    unit = hu_to_unit(low, lo, hi).astype(np.float32)[:, None]
    y_run = _run(runner, unit, doses, batch)
    y_ref = _run(reference, unit, doses, batch)
    report = Report(precision)
    bad = ~np.isfinite(y_run)
    if bad.any():
        which = [k for k, b in zip(keys, bad.reshape(len(keys), -1).any(axis=1), strict=True) if b]
        report.problems.append(
            f"the runner returned {int(bad.sum())} NaN/inf values (doses {which}): typically an fp16 "
            "overflow (NAFNet's LayerNorm must run in fp32); rebuild strongly typed or with --precision fp32"
        )
    if not np.isfinite(y_ref).all():
        raise EngineError("the reference returned NaN/inf: the model itself is broken, not the engine")
    wgt = passthrough_weight(low, (lo, hi))

    def to_hu(y: np.ndarray) -> np.ndarray:
        yh = unit_to_hu(np.nan_to_num(y[:, 0], nan=0.0, posinf=1.0, neginf=-1.0), lo, hi)
        return yh + wgt * (low - yh)

    hu_run, hu_ref = to_hu(y_run), to_hu(y_ref)
    for i, dose in enumerate(keys):
        before = psnr(low[i], cases.clean)
        row = Row(
            dose=dose,
            agreement_db=psnr(hu_run[i], hu_ref[i]),
            max_abs_hu=float(np.abs(hu_run[i] - hu_ref[i]).max()),
            gain_db=psnr(hu_run[i], cases.clean) - before,
            ref_gain_db=psnr(hu_ref[i], cases.clean) - before,
        )
        report.rows.append(row)
        if not bad.any():
            if row.agreement_db < threshold:
                report.problems.append(
                    f"dose {row.dose}: agreement {row.agreement_db:.1f} dB with the reference is below "
                    f"{threshold:.0f} dB for {precision}"
                )
            if row.ref_gain_db - row.gain_db > max_gain_drop_db:
                report.problems.append(
                    f"dose {row.dose}: denoising gain {row.gain_db:+.2f} dB is "
                    f"{row.ref_gain_db - row.gain_db:.2f} "
                    f"dB below the reference's {row.ref_gain_db:+.2f} dB (allowed {max_gain_drop_db} dB)"
                )
    if report.problems and raise_on_failure:
        raise EngineError("validation failed: " + "; ".join(report.problems) + "\n" + report.table())
    return report


class OrtRunner:
    """The fp32 ONNX export in ONNX Runtime as a Runner (the reference when only an .onnx is at hand)."""

    def __init__(self, onnx_path, device="cpu") -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            from ..errors import MissingDependencyError

            raise MissingDependencyError(
                "the ONNX Runtime reference needs onnxruntime: pip install 'ctdn[onnx]'"
            ) from exc
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(Path(onnx_path)), providers=providers)

    def __call__(self, x: np.ndarray, dose: np.ndarray) -> np.ndarray:
        feed = {"x": np.ascontiguousarray(x, np.float32), "dose": np.ascontiguousarray(dose, np.float32)}
        return self.session.run(["y"], feed)[0]


def summary(report: Report) -> str:
    """One paragraph for a log: the table and the verdict."""
    worst = min((r.agreement_db for r in report.rows), default=math.nan)
    verdict = "ok" if report.ok else "FAILED: " + "; ".join(report.problems)
    return f"validation ({report.precision}): worst agreement {worst:.1f} dB, {verdict}\n{report.table()}"
