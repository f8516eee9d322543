"""Building blocks: LayerNorm2d, SimpleGate, the reference NAFBlock and dose conditioning.

Channels first everywhere (N, C, H, W). The NAFBlock here is the numerical reference that the
Triton kernels (``ctdn.kernels``) and exported engines are tested against, so it stays plain:
no fusion, no in-place tricks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LayerNorm2d",
    "SimpleGate",
    "NAFBlock",
    "ResBlock",
    "ConvBlock",
    "DoseEmbedding",
    "DoseFiLM",
    "dose_feature",
]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (NAFNet's, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.shape = (channels,)  # a constant, not x.shape[1]: the ONNX tracer keeps it static

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # permute + layer_norm (not a hand-written mean/var) so ONNX export (opset >= 17) emits one
        # LayerNormalization node, which TensorRT keeps in fp32 inside fp16 engines.
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block (Chen et al. 2022), exactly as published, without dropout.

    x -> LN -> 1x1 (c->2c) -> dw3x3 (2c) -> SimpleGate -> SCA -> 1x1 (c->c) -> x + beta*y
      -> LN -> 1x1 (c->2c) -> SimpleGate -> 1x1 (c->c) -> + gamma*y. beta, gamma start at zero.
    """

    def __init__(self, c: int) -> None:
        super().__init__()
        dw = 2 * c
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.sg = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.conv3 = nn.Conv2d(c, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.sg(self.conv2(self.conv1(self.norm1(x))))
        y = self.conv3(y * self.sca(y))
        x = x + y * self.beta
        y = self.conv5(self.sg(self.conv4(self.norm2(x))))
        return x + y * self.gamma


class ResBlock(nn.Module):
    """ResNet basic block without normalisation: x -> ReLU(x + conv3x3(ReLU(conv3x3(x)))).

    No BatchNorm: batch statistics would differ between the teacher's NDCT and the student's LDCT
    batches and between training (batch 8) and inference (batch 1).
    """

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class ConvBlock(nn.Module):
    """conv3x3 + ReLU: the unit of the seed's baseline autoencoder and of U-Net's double convs."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


def dose_feature(dose: torch.Tensor) -> torch.Tensor:
    """What the dose MLP sees: 1/sqrt(dose), proportional to the quantum noise std (1 at full dose).

    Noise std, not the dose itself, so the ReLU MLP extrapolates linearly in noise outside the
    doses it was trained on.
    """
    return dose.clamp_min(1e-4).rsqrt()


class DoseEmbedding(nn.Module):
    """Dose MLP: 1/sqrt(dose) -> Linear(1, d) -> ReLU -> Linear(d, d) -> ReLU (the seed's, d = 64)."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(1, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, dose: torch.Tensor) -> torch.Tensor:
        return self.mlp(dose_feature(dose.reshape(-1, 1).float()))


class DoseFiLM(nn.Module):
    """Per-block scale/shift from the dose embedding: x * (1 + scale) + shift.

    ``scale, shift = SiLU(Linear(emb))`` as in the seed; the Linear starts at zero so a fresh
    block is the identity and conditioning is learnt from there.
    """

    def __init__(self, c: int, dim: int = 64) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * c)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = F.silu(self.proj(emb)).chunk(2, dim=1)
        return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


def init_conv_(m: nn.Module) -> None:
    """Kaiming-uniform convs with small biases (torch's default, made explicit for reproducibility)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
