"""Anatomy priors for the student's reconstruction loss.

- :func:`tissue_l1`: the built-in prior. L1 weighted per pixel by the target's tissue class from
  its HU (air, lung, fat, soft tissue, bone: :func:`ctdn.hu.tissue_classes`), so no labels and no
  download are needed and it works the same on phantoms and real scans.
- :class:`PerceptualLoss`: the seed's prior. Feature MSE of layers 1-3 of a frozen ResNet-50
  (grey image repeated to 3 channels, ImageNet mean/std) whose weights the user gives as a file:
  RadImageNet's ResNet-50 cannot be shipped, and nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ctdn.errors import InputError
from ctdn.hu import TISSUES, tissue_classes, unit_to_hu

__all__ = ["check_tissue_weights", "tissue_l1", "ResNet50Trunk", "load_backbone", "PerceptualLoss"]


def check_tissue_weights(weights) -> None:
    """One weight per class of :data:`ctdn.hu.TISSUES`, none negative, not all zero."""
    w = [float(v) for v in weights]
    if len(w) != len(TISSUES) or min(w) < 0 or max(w) <= 0:
        raise InputError(
            f"tissue_weights needs {len(TISSUES)} values ({', '.join(TISSUES.values())}), non-negative "
            f"and not all zero; got {tuple(weights)}"
        )


def tissue_l1(out: torch.Tensor, target: torch.Tensor, weights) -> torch.Tensor:
    """Per image sum(w * |out - target|) / sum(w), w the weight of each target pixel's tissue class,
    then the mean over the batch.

    ``out`` and ``target`` are NCHW in the model's [-1, 1] window; ``weights`` has one value per
    class of :data:`ctdn.hu.TISSUES`. Normalised by the weights so its scale matches plain L1; per
    image, so it is a mean over the batch like every other term (a DDP run's shares average to the
    same loss as one process's whole batch).
    """
    check_tissue_weights(weights)
    w = target.new_tensor(weights, dtype=torch.float32)[tissue_classes(unit_to_hu(target.float()))]
    num = (w * (out.float() - target.float()).abs()).flatten(1).sum(1)
    return (num / w.flatten(1).sum(1).clamp_min(1e-12)).mean()


class _Bottleneck(nn.Module):
    """ResNet-50's bottleneck block, with torchvision's parameter names."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50Trunk(nn.Module):
    """ResNet-50 up to layer3 (torchvision's layout and names); returns layers 1, 2 and 3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin, layers = 64, []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2)):
            mods = []
            for i in range(blocks):
                mods.append(_Bottleneck(cin, width, stride if i == 0 else 1))
                cin = 4 * width
            layers.append(nn.Sequential(*mods))
        self.layer1, self.layer2, self.layer3 = layers

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


# Other layouts of the same network: torchvision's children in an nn.Sequential ("0." = conv1, ...).
_SEQUENTIAL = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_PREFIXES = ("module.", "backbone.", "encoder.", "model.", "resnet.", "features.")


def _canonical(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    head, dot, rest = key.partition(".")
    return f"{_SEQUENTIAL[head]}{dot}{rest}" if head in _SEQUENTIAL else key


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        import safetensors.torch as st

        return st.load_file(str(path))
    if path.suffix in (".h5", ".hdf5", ".keras"):
        raise InputError(
            f"{path} is a Keras file (RadImageNet's original release): convert it to a PyTorch "
            "state dict (.pt/.pth) or .safetensors with torchvision's ResNet-50 names first"
        )
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for k in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(k), dict):
            obj = obj[k]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path} does not hold a state dict of tensors")
    return obj


def load_backbone(path) -> ResNet50Trunk:
    """A frozen ResNet-50 trunk (eval mode) from a weights file (.pt, .pth or .safetensors).

    Accepts torchvision's names, with or without a ``module.``/``backbone.`` prefix, or its
    children as an ``nn.Sequential`` (``0.weight`` ...); ``fc`` and ``layer4`` are ignored. A missing
    file, another network or a shape mismatch is an InputError that says which.
    """
    if not str(path):
        raise InputError("the perceptual prior needs a ResNet-50 weights file: --set perceptual=PATH")
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"ResNet-50 weights file {path} not found: the perceptual (RadImageNet) prior needs a "
            "local weights file, nothing is downloaded; or use the built-in prior (tissue_weights)"
        )
    try:
        raw = _read_tensors(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read ResNet-50 weights from {path}: {exc}") from exc
    net = ResNet50Trunk()
    want = net.state_dict()
    got = {}
    for k, v in raw.items():
        c = _canonical(k)
        if c in want:
            got[c] = v
    missing = [k for k in want if k not in got and not k.endswith("num_batches_tracked")]
    if missing:
        raise InputError(
            f"{path} is not a ResNet-50 with torchvision's layout: {len(missing)} of {len(want)} "
            f"tensors missing (first: {', '.join(missing[:3])})"
        )
    bad = [
        f"{k} {tuple(v.shape)} != {tuple(want[k].shape)}"
        for k, v in got.items() if v.shape != want[k].shape
    ]
    if bad:
        raise InputError(f"{path} does not match ResNet-50's shapes: {'; '.join(bad[:3])}")
    net.load_state_dict({**want, **got})
    return net.eval().requires_grad_(False)


class PerceptualLoss(nn.Module):
    """Sum over ResNet-50 layers 1-3 of the feature MSE between output and target (both in [-1, 1])."""

    def __init__(self, path) -> None:
        super().__init__()
        self.net = load_backbone(path)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.net.eval()  # BatchNorm keeps the backbone's statistics
        return self

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x.float() + 1) / 2).expand(-1, 3, -1, -1)
        return self.net((x - self.mean) / self.std)

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ft = self._feats(target)
        return sum(F.mse_loss(a, b) for a, b in zip(self._feats(out), ft, strict=True))

