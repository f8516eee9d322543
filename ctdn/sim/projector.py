"""Fan- and parallel-beam forward projection and filtered back-projection in torch.

Why torch and not a tomography toolbox: the same code runs batched on the CPU (CI, laptops) and on
CUDA (on-the-fly simulation during training), it needs no extra multi-hundred-MB install, and it is
checked against analytic line integrals and scikit-image in the tests.

Conventions: images are (B, H, W) tensors of linear attenuation in 1/mm; pixel (i, j) has its centre
at x = (j - (W-1)/2) * px, y = (i - (H-1)/2) * px. Sinograms are (B, views, detectors) line
integrals (unitless).

- Forward projection is ray-driven: each ray is sampled every ``step`` pixels with bilinear
  interpolation (``grid_sample``), Joseph-style. Samples cover the image's circumscribed circle.
- FBP is pixel-driven: filter each view (ramp times an apodisation window, in the Fourier domain
  on a zero-padded signal), then for every pixel interpolate linearly between detector channels
  and weight by 1/L^2 (fan beam, equiangular detector; Kak & Slaney ch. 3).

Work is done in chunks of views so memory stays bounded (about 100-300 MB at 512x512).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .geometry import Geometry

__all__ = ["forward_project", "fbp", "filter_sinogram", "ramp_kernel"]

# Elements per chunk of views. On a CPU, chunks that stay in cache win (measured on a 2-core EPYC
# with ~2.4 GB/s of memory bandwidth: 1M was 3-10x faster than 12M); a GPU wants large launches.
_CHUNK = {"cpu": 1_000_000, "cuda": 64_000_000}


def _chunk(device: torch.device) -> int:
    return _CHUNK.get(torch.device(device).type, _CHUNK["cuda"])


def _pixel_coords(h: int, w: int, px: float, device, dtype):
    ys = (torch.arange(h, device=device, dtype=dtype) - (h - 1) / 2) * px
    xs = (torch.arange(w, device=device, dtype=dtype) - (w - 1) / 2) * px
    return ys, xs


def _view_angles(geom: Geometry, device, dtype) -> torch.Tensor:
    v = geom.n_views
    return torch.arange(v, device=device, dtype=torch.float64).mul(geom.arc / v).to(dtype)


def _detector_positions(geom: Geometry, device, dtype) -> torch.Tensor:
    """Fan angle (radians) or lateral offset (mm) of each channel's centre."""
    k = torch.arange(geom.detectors, device=device, dtype=dtype) - (geom.detectors - 1) / 2
    return k * (geom.dgamma if geom.kind == "fan" else geom.spacing)


def _n_sym(geom: Geometry, h: int, w: int) -> int:
    """How many quarter-turn-related view groups share one sampling grid (1 = no symmetry).

    Views a quarter turn apart see the same rays through ``rot90(image)``; on a square image with a
    view count divisible by the number of quarter turns in the arc, one grid (its construction is
    most of the memory traffic) serves 4 views (fan, 360 degrees) or 2 (parallel, 180 degrees).
    """
    n = 4 if geom.kind == "fan" else 2
    return n if (h == w and geom.n_views % n == 0) else 1


def forward_project(
    mu: torch.Tensor, geom: Geometry, pixel_size_mm: float, *, use_symmetry: bool = True
) -> torch.Tensor:
    """Line integrals of ``mu`` (B, H, W) in 1/mm -> sinogram (B, views, detectors)."""
    b, h, w = mu.shape
    device, dtype = mu.device, mu.dtype
    n_sym = _n_sym(geom, h, w) if use_symmetry else 1
    n_det, n_views = geom.detectors, geom.n_views
    per_group = n_views // n_sym
    radius = 0.5 * math.hypot(h, w) * pixel_size_mm  # circumscribed circle, mm
    n_samples = max(2, math.ceil(2 * radius / (geom.step * pixel_size_mm)))
    dt = 2 * radius / n_samples
    # float32 and cache-sized chunks: on a bandwidth-starved CPU the grid tensor's traffic, not the
    # arithmetic, sets the speed (float64 grids in 100 MB chunks were 7x slower here).
    angles = _view_angles(geom, device, dtype)[:per_group]
    dets = _detector_positions(geom, device, dtype)
    chunk = max(1, _chunk(device) // (n_det * n_samples))
    # grid_sample with align_corners=False maps [-1, 1] to the outer pixel edges.
    sx, sy = 2.0 / (w * pixel_size_mm), 2.0 / (h * pixel_size_mm)
    t = (torch.arange(n_samples, device=device, dtype=dtype) + 0.5) * dt - radius
    # Batch and rotated copies ride in channels, so one grid serves them all.
    image = torch.cat([torch.rot90(mu, q, dims=(1, 2)) for q in range(n_sym)], dim=0).unsqueeze(0)
    out = torch.empty(b, n_views, n_det, device=device, dtype=dtype)
    for v0 in range(0, per_group, chunk):
        a = angles[v0 : v0 + chunk, None]  # (Vc, 1)
        ca, sa = torch.cos(a), torch.sin(a)
        if geom.kind == "fan":
            # Source at R(cos a, sin a); the central ray points at the isocenter.
            cx, cy = -ca, -sa
            cg, sg = torch.cos(dets), torch.sin(dets)
            dx = cx * cg - cy * sg
            dy = cx * sg + cy * cg
            # Origin of t: the ray's closest point to the isocenter.
            ox = geom.sid_mm * (ca + dx * cg)
            oy = geom.sid_mm * (sa + dy * cg)
        else:
            dx = (-sa).expand(-1, n_det)
            dy = ca.expand(-1, n_det)
            ox = dets * ca
            oy = dets * sa
        vc = dx.shape[0]
        grid = torch.empty(1, vc * n_det, n_samples, 2, device=device, dtype=dtype)
        g4 = grid.view(vc, n_det, n_samples, 2)
        torch.addcmul((ox * sx)[..., None], (dx * sx)[..., None], t, out=g4[..., 0])
        torch.addcmul((oy * sy)[..., None], (dy * sy)[..., None], t, out=g4[..., 1])
        samples = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sums = samples.sum(-1).mul_(dt).view(n_sym, b, vc, n_det)
        for q in range(n_sym):
            out[:, q * per_group + v0 : q * per_group + v0 + vc] = sums[q]
    return out


def ramp_kernel(n: int, tau: float, *, fan: bool, device=None, dtype=torch.float32) -> torch.Tensor:
    """Band-limited ramp (Ram-Lak) impulse response on offsets -n+1..n-1, times tau.

    ``tau`` is the channel spacing (mm, parallel) or channel angle (radians, fan). For the fan
    beam the kernel carries the equiangular factor 0.5 * (gamma / sin gamma)^2.
    """
    k = torch.arange(-(n - 1), n, device=device, dtype=torch.float64)
    h = torch.zeros_like(k)
    h[k == 0] = 1.0 / (4 * tau * tau)
    odd = (k.abs() % 2) == 1
    h[odd] = -1.0 / (math.pi * math.pi * tau * tau * k[odd] ** 2)
    if fan:
        g = k * tau
        ratio = torch.ones_like(g)
        nz = g != 0
        ratio[nz] = g[nz] / torch.sin(g[nz])
        h = 0.5 * ratio**2 * h
    return (h * tau).to(dtype)


def _window(name: str, freqs: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Apodisation window on normalised frequencies in [0, 0.5] (0.5 = detector Nyquist)."""
    f = freqs / (0.5 * cutoff)  # 1 at the cutoff
    if name == "ramp":
        win = torch.ones_like(f)
    elif name == "shepp-logan":
        win = torch.special.sinc(f / 2)
    elif name == "cosine":
        win = torch.cos(math.pi * f / 2)
    elif name == "hamming":
        win = 0.54 + 0.46 * torch.cos(math.pi * f)
    elif name == "hann":
        win = 0.5 + 0.5 * torch.cos(math.pi * f)
    else:  # pragma: no cover - Geometry validates the name
        raise ValueError(name)
    return torch.where(f <= 1.0, win, torch.zeros_like(win))


def filter_sinogram(sino: torch.Tensor, geom: Geometry) -> torch.Tensor:
    """Apply the FBP filter along detectors (fan: with the cos-gamma pre-weight)."""
    n = geom.detectors
    fan = geom.kind == "fan"
    if fan:
        gam = _detector_positions(geom, sino.device, sino.dtype)
        sino = sino * (geom.sid_mm * torch.cos(gam))
    tau = geom.dgamma if fan else geom.spacing
    kernel = ramp_kernel(n, tau, fan=fan, device=sino.device, dtype=torch.float64)
    size = 1 << (2 * n - 1).bit_length()  # linear (not circular) convolution
    # Kernel with offset 0 at index 0, negative offsets wrapped to the end.
    kpad = torch.zeros(size, device=sino.device, dtype=torch.float64)
    kpad[:n] = kernel[n - 1 :]
    kpad[size - (n - 1) :] = kernel[: n - 1]
    spectrum = torch.fft.rfft(kpad).real  # the kernel is symmetric, so its spectrum is real
    spectrum = spectrum * _window(
        geom.filter, torch.fft.rfftfreq(size, device=sino.device), geom.filter_cutoff
    )
    filtered = torch.fft.irfft(torch.fft.rfft(sino.double(), n=size) * spectrum, n=size)[..., :n]
    return filtered.to(sino.dtype)


def fbp(
    sino: torch.Tensor,
    geom: Geometry,
    shape: tuple[int, int],
    pixel_size_mm: float,
    *,
    use_symmetry: bool = True,
) -> torch.Tensor:
    """Filtered back-projection of (B, views, detectors) -> (B, H, W) attenuation in 1/mm."""
    b, n_views, n_det = sino.shape
    if n_views != geom.n_views or n_det != geom.detectors:
        raise ValueError(f"sinogram {tuple(sino.shape)} does not match geometry {geom}")
    h, w = shape
    device, dtype = sino.device, sino.dtype
    n_sym = _n_sym(geom, h, w) if use_symmetry else 1
    per_group = n_views // n_sym
    q = filter_sinogram(sino, geom)
    ys, xs = _pixel_coords(h, w, pixel_size_mm, device, dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    xx, yy = xx.reshape(1, -1), yy.reshape(1, -1)
    angles = _view_angles(geom, device, dtype)[:per_group]
    chunk = max(1, _chunk(device) // (h * w))
    # Each view is its own 1-row "image" (the grid_sample batch): no interpolation across views.
    # Channels hold the batch for each quarter-turn group, which shares the view's geometry.
    rows = q.view(b, n_sym, per_group, n_det).permute(2, 1, 0, 3).reshape(per_group, n_sym * b, 1, n_det)
    acc = torch.zeros(n_sym * b, h * w, device=device, dtype=dtype)
    for v0 in range(0, per_group, chunk):
        a = angles[v0 : v0 + chunk, None]
        ca, sa = torch.cos(a), torch.sin(a)
        if geom.kind == "fan":
            along = geom.sid_mm - (xx * ca + yy * sa)  # distance along the central ray
            across = xx * sa - yy * ca
            gx = torch.atan2(across, along).mul_(2.0 / (geom.dgamma * (n_det - 1)))
            weight = (along * along).add_(across * across).reciprocal_()
        else:
            gx = (xx * ca + yy * sa).mul_(2.0 / (geom.spacing * (n_det - 1)))
            weight = None
        vc = gx.shape[0]
        grid = torch.stack((gx, torch.zeros_like(gx)), dim=-1).unsqueeze(1)  # (Vc, 1, HW, 2)
        vals = F.grid_sample(
            rows[v0 : v0 + vc], grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        vals = vals[:, :, 0, :]  # (Vc, n_sym * B, HW)
        if weight is not None:
            vals = vals * weight[:, None, :]
        acc += vals.sum(0)
    acc = acc.view(n_sym, b, h, w)
    out = acc[0].clone()
    for k in range(1, n_sym):
        out += torch.rot90(acc[k], -k, dims=(1, 2))
    # Fan beam over 2*pi: the 1/2 is inside the kernel and D inside the cos-gamma pre-weight,
    # leaving 1/L^2 here (Kak & Slaney eq. 3.100). Parallel over pi: nothing more.
    return out.mul_(geom.arc / n_views)
