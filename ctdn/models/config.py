"""Model configuration as data: a frozen dataclass saved inside every checkpoint, with named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import InputError, InputTypeError

__all__ = ["ModelConfig", "PRESETS", "preset"]

_DOWN = ("conv3", "conv2")
_UP = ("tconv3", "tconv2")
_FILM = ("mid", "all")
_OUT = ("tanh", "clamp")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a NAFNet encoder/decoder pair.

    Level 0 is the input resolution (divided by ``shuffle`` when the input is pixel-unshuffled
    first); each further level halves it through a stride-2 conv. ``widths[l]`` is the channel
    count at level ``l``, the last level is the bottleneck.

    - ``enc_blocks[l]`` / ``dec_blocks[l]``: NAFBlocks at level ``l`` above the bottleneck, in the
      encoder (before its downsampling) and in the decoder (after the upsampling and skip).
    - ``mid_blocks`` / ``dec_mid_blocks``: NAFBlocks at the bottleneck in the encoder / decoder.
    - ``skips``: levels whose encoder features the decoder adds after upsampling (the seed: none).
    - ``dose``: dose conditioning in the student (False is the "without dose" ablation);
      ``down`` / ``up``: stride-2 3x3 convs and 3x3 transposed convs (the seed) or 2x2 ones;
      ``film``: which student blocks get the dose scale/shift, ``"mid"`` (bottleneck, the seed)
      or ``"all"`` (every encoder block).
    - ``out``: the final activation, ``"tanh"`` (the seed) or ``"clamp"`` to [-1, 1] (linear inside
      the window, so an identity-like path needs no large weights to reach air at -1).
    - ``residual``: the student's output is ``clamp(input + decoder(...))``, a correction to the
      input rather than the image itself (the teacher always reconstructs the image). Only the
      fine-tune stage can train such a student: see docs/models.md.
    """

    arch: str = "nafnet"
    widths: tuple[int, ...] = (32, 64, 128, 256)
    shuffle: int = 1
    enc_blocks: tuple[int, ...] = (0, 0, 0)
    mid_blocks: int = 8
    latent: int = 512
    dec_mid_blocks: int = 8
    dec_blocks: tuple[int, ...] = (0, 0, 0)
    skips: tuple[int, ...] = ()
    down: str = "conv3"
    up: str = "tconv3"
    dose: bool = True
    dose_dim: int = 64
    film: str = "mid"
    out: str = "tanh"
    residual: bool = False
    hu_window: tuple[float, float] = field(default=(-1000.0, 1000.0))

    def __post_init__(self) -> None:
        for name in ("widths", "enc_blocks", "dec_blocks", "skips", "hu_window"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.arch != "nafnet":
            raise InputError(f"unknown model arch {self.arch!r}; this version builds 'nafnet'")
        n = len(self.widths)
        if n < 1 or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise InputError(f"widths must be positive integers, got {self.widths}")
        for name in ("enc_blocks", "dec_blocks"):
            v = getattr(self, name)
            if len(v) != n - 1 or any(not isinstance(b, int) or b < 0 for b in v):
                raise InputError(
                    f"{name} needs {n - 1} non-negative integers (one per level above the "
                    f"bottleneck), got {v}"
                )
        if any(s not in range(n - 1) for s in self.skips):
            raise InputError(f"skips must be levels 0..{n - 2}, got {self.skips}")
        if self.shuffle not in (1, 2, 4):
            raise InputError(f"shuffle must be 1, 2 or 4, got {self.shuffle}")
        if self.down not in _DOWN:
            raise InputError(f"down must be one of {_DOWN}, got {self.down!r}")
        if self.up not in _UP:
            raise InputError(f"up must be one of {_UP}, got {self.up!r}")
        if self.out not in _OUT:
            raise InputError(f"out must be one of {_OUT}, got {self.out!r}")
        if self.film not in _FILM:
            raise InputError(f"film must be one of {_FILM}, got {self.film!r}")
        lo, hi = self.hu_window
        if not lo < hi:
            raise InputError(f"hu_window must be (low, high) with low < high, got {self.hu_window}")

    @property
    def multiple(self) -> int:
        """Height and width the network needs to be divisible by."""
        return self.shuffle * 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise InputTypeError(f"a model config must be a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown model config keys {unknown} (made by a newer ctdn?)")
        return cls(**d)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    # The seed's NAFNet: 3x3 head to 32 ch, three stride-2 3x3 convs to 64/128/256, 8 NAFBlocks at 1/8,
    # 1x1 to a 512-ch latent; decoder 1x1, 8 NAFBlocks, three transposed convs, conv + Tanh.
    "paper": ModelConfig(),
    # The shipped default (see docs/models.md for how it was chosen): the input is pixel-unshuffled
    # by 2 so no conv runs at full resolution, the decoder takes skip features from every level, and
    # the output is a clamped correction added to the input (residual).
    "edge": ModelConfig(
        widths=(16, 32, 64, 128),
        shuffle=2,
        enc_blocks=(1, 2, 2),
        mid_blocks=2,
        latent=128,
        dec_mid_blocks=1,
        dec_blocks=(1, 1, 1),
        skips=(0, 1, 2),
        out="clamp",
        residual=True,
        down="conv2",
        up="tconv2",
        film="all",
    ),
    # For tests and smoke runs only.
    "tiny": ModelConfig(
        widths=(8, 16),
        shuffle=1,
        enc_blocks=(1,),
        mid_blocks=1,
        latent=16,
        dec_mid_blocks=1,
        dec_blocks=(1,),
        skips=(0,),
        down="conv2",
        up="tconv2",
        dose_dim=16,
        film="all",
    ),
}


def preset(name: str, **changes) -> ModelConfig:
    """A named preset, optionally with fields changed (e.g. ``preset("paper", dose=False)``)."""
    if name not in PRESETS:
        raise InputError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
