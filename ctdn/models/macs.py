"""Count multiply-accumulates of a model by running it once with hooks (convolutions and linears)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_macs"]


def count_macs(model: nn.Module, *args, **kwargs) -> int:
    """MACs of one forward call with the given inputs: every Conv2d, ConvTranspose2d and Linear.

    Elementwise work (norms, gates, activations) is not counted, as is usual for GMAC figures.
    """
    total = 0

    def conv(m: nn.Conv2d, inp, out) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() * k

    def tconv(m: nn.ConvTranspose2d, inp, out) -> None:
        nonlocal total
        total += inp[0].numel() * m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def linear(m: nn.Linear, inp, out) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(tconv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return total
