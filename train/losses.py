"""Training losses: differentiable SSIM, gradient L1 and the layer-wise feature distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ssim", "gradient_l1", "feature_mse"]

_WINDOWS: dict = {}


def _window(device, dtype) -> torch.Tensor:
    key = (device, dtype)
    if key not in _WINDOWS:
        r = torch.arange(11, dtype=torch.float64) - 5
        g = torch.exp(-(r**2) / (2 * 1.5**2))
        g = (g / g.sum()).to(device=device, dtype=dtype)
        _WINDOWS[key] = g
    return _WINDOWS[key]


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of NCHW images in [-1, 1] on the [0, 1] scale (Gaussian 11x11, sigma 1.5, valid region)."""
    a, b = (a.float() + 1) / 2, (b.float() + 1) / 2
    g = _window(a.device, a.dtype)
    c = a.shape[1]

    def blur(t):
        t = F.conv2d(t, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(t, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a**2
    sbb = blur(b * b) - mu_b**2
    sab = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.mean()


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the finite-difference gradients of two NCHW images (keeps edges sharp)."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(a), dx(b)) + F.l1_loss(dy(a), dy(b))


def feature_mse(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Sum over encoder stages of the MSE between student and teacher feature maps."""
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student feature maps against {len(teacher)} teacher ones")
    return sum(F.mse_loss(s.float(), t.float()) for s, t in zip(student, teacher, strict=True))
