"""Model configuration as data: a frozen dataclass saved inside every checkpoint, with named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import InputError, InputTypeError

__all__ = ["ModelConfig", "PRESETS", "preset", "check_hu_window", "HU_WINDOW_LIMITS"]

ARCHS = ("nafnet", "resnet", "conv")
_DOWN = ("conv3", "conv2", "maxpool")
_UP = ("tconv3", "tconv2")
_FILM = ("mid", "all")
_OUT = ("tanh", "clamp")
_MERGE = ("add", "concat")
# Every value a 16-bit CT pixel at unit rescale slope can hold (int16 down to -32768, uint16 up to
# 65535): a model's HU window outside it is not a CT window but a corrupt or mistyped one.
HU_WINDOW_LIMITS = (-32768.0, 65535.0)
# The narrowest window: below 1 HU the normalisation divides by almost nothing.
_MIN_WINDOW_WIDTH = 1.0
_INTS = {"shuffle": 1, "mid_blocks": 0, "latent": 1, "dec_mid_blocks": 0, "dose_dim": 1}  # name: minimum
_BOOLS = ("dose", "residual")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_hu_window(window) -> tuple[float, float]:
    """``window`` as (low, high) floats, or an InputError: two real numbers, low < high, inside
    :data:`HU_WINDOW_LIMITS`, at least 1 HU apart (NaN, inf and overflowing values fail the bounds)."""
    lo_lim, hi_lim = HU_WINDOW_LIMITS
    if not isinstance(window, (list, tuple)) or len(window) != 2 or not all(map(_is_real, window)):
        raise InputError(f"hu_window must be two numbers (low, high), got {window!r}")
    lo, hi = window
    if not (lo_lim <= lo <= hi_lim and lo_lim <= hi <= hi_lim):  # comparisons: no float overflow
        raise InputError(f"hu_window {list(window)} is outside the CT range [{lo_lim:g}, {hi_lim:g}] HU")
    if not hi - lo >= _MIN_WINDOW_WIDTH:
        raise InputError(
            f"hu_window must be (low, high) with low < high by at least {_MIN_WINDOW_WIDTH:g} HU, "
            f"got {list(window)}"
        )
    return float(lo), float(hi)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an encoder/decoder pair: one skeleton, the block type set by ``arch``.

    - ``arch``: the block every level is built from: ``"nafnet"`` (NAFBlock, no activation
      between convs), ``"resnet"`` (ResNet basic blocks) or ``"conv"`` (conv3x3 + ReLU: the seed's
      baseline autoencoder, and U-Net with ``skips`` at every level and ``merge="concat"``). With
      ``resnet`` and ``conv`` the head, downsampling, upsampling and merge convs are followed by
      a ReLU.

    Level 0 is the input resolution (divided by ``shuffle`` when the input is pixel-unshuffled
    first); each further level halves it through a stride-2 conv. ``widths[l]`` is the channel
    count at level ``l``, the last level is the bottleneck.

    - ``enc_blocks[l]`` / ``dec_blocks[l]``: NAFBlocks at level ``l`` above the bottleneck, in the
      encoder (before its downsampling) and in the decoder (after the upsampling and skip).
    - ``mid_blocks`` / ``dec_mid_blocks``: NAFBlocks at the bottleneck in the encoder / decoder.
    - ``skips``: levels whose encoder features the decoder merges after upsampling (the seed: none);
      ``merge``: ``"add"`` them, or ``"concat"`` and a 3x3 conv back to the level's width (U-Net).
    - ``dose``: dose conditioning in the student (False is the "without dose" ablation);
      ``down`` / ``up``: stride-2 3x3 convs and 3x3 transposed convs (the seed) or 2x2 ones;
      ``down="maxpool"`` is a 2x2 max-pool then a 3x3 conv to the next width (baseline, U-Net);
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
    merge: str = "add"
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
            v = getattr(self, name)
            if isinstance(v, (str, bytes, dict)) or not hasattr(v, "__iter__"):
                raise InputError(f"{name} must be a list of numbers, got {v!r}")
            object.__setattr__(self, name, tuple(v))
        if self.arch not in ARCHS:
            raise InputError(f"unknown model arch {self.arch!r}; this version builds {', '.join(ARCHS)}")
        self._check_scalars()
        n = len(self.widths)
        if n < 1 or any(not _is_int(w) or w < 1 for w in self.widths):
            raise InputError(f"widths must be positive integers, got {self.widths}")
        for name in ("enc_blocks", "dec_blocks"):
            v = getattr(self, name)
            if len(v) != n - 1 or any(not _is_int(b) or b < 0 for b in v):
                raise InputError(
                    f"{name} needs {n - 1} non-negative integers (one per level above the "
                    f"bottleneck), got {v}"
                )
        if any(not _is_int(s) or s not in range(n - 1) for s in self.skips):
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
        if self.merge not in _MERGE:
            raise InputError(f"merge must be one of {_MERGE}, got {self.merge!r}")
        conditioned = self.mid_blocks + (sum(self.enc_blocks) if self.film == "all" else 0)
        if self.dose and conditioned == 0:
            raise InputError(
                f"a dose-conditioned model needs a block to carry the dose scale/shift: mid_blocks is 0"
                f"{' and enc_blocks are all 0' if self.film == 'all' else ' (film=mid)'}; add a block "
                "or set dose=False"
            )
        check_hu_window(self.hu_window)

    def _check_scalars(self) -> None:
        for name, least in _INTS.items():
            v = getattr(self, name)
            if not _is_int(v) or v < least:
                raise InputError(f"{name} must be an integer >= {least}, got {v!r}")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def multiple(self) -> int:
        """Height and width the network needs to be divisible by."""
        return self.shuffle * 2 ** (len(self.widths) - 1)

    def blocks_per_level(self) -> tuple[int, ...]:
        """Blocks of ``arch`` at each level, encoder and decoder together (the bottleneck's last)."""
        above = tuple(e + d for e, d in zip(self.enc_blocks, self.dec_blocks, strict=True))
        return (*above, self.mid_blocks + self.dec_mid_blocks)

    def block_levels(self, size: int) -> list[tuple[int, int, int, int]]:
        """(level, width, side, blocks) of each level with blocks, for a ``size`` x ``size`` input."""
        levels = zip(self.widths, self.blocks_per_level(), strict=True)
        return [(lv, c, size // (self.shuffle * 2**lv), n) for lv, (c, n) in enumerate(levels) if n]

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
    # The other encoders of the seed's comparison, at its scale (each with its own teacher).
    # The seed's baseline autoencoder: conv blocks 1->64->128->256->512->512 with 4 max-pools, a
    # mirrored decoder of transposed convs, 64->1 conv + Tanh; one 512-ch block carries the dose.
    "paper-conv": ModelConfig(
        arch="conv",
        widths=(64, 128, 256, 512, 512),
        enc_blocks=(0, 0, 0, 0),
        mid_blocks=1,
        latent=512,
        dec_mid_blocks=0,
        dec_blocks=(0, 0, 0, 0),
        down="maxpool",
        up="tconv2",
    ),
    # NAFNet's skeleton with ResNet basic blocks (two per level in the encoder, four at 1/8).
    "paper-resnet": ModelConfig(
        arch="resnet", enc_blocks=(1, 1, 1), mid_blocks=4, dec_mid_blocks=4, dec_blocks=(1, 1, 1)
    ),
    # U-Net: double 3x3 convs per level (the down conv + one block), max-pools, transposed-conv ups,
    # every level's features concatenated into the decoder (and distilled: they are encoder features).
    "paper-unet": ModelConfig(
        arch="conv",
        widths=(64, 128, 256, 512),
        enc_blocks=(1, 1, 1),
        mid_blocks=1,
        latent=512,
        dec_mid_blocks=1,
        dec_blocks=(1, 1, 1),
        skips=(0, 1, 2),
        merge="concat",
        down="maxpool",
        up="tconv2",
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


# The six-model study on a 2-core CPU (docs/study.md): each of the paper's encoders at about 1/4
# of its widths, so that a teacher + student takes minutes, not days.
_SMALL = {"latent": 128, "dose_dim": 32}
PRESETS["study"] = PRESETS["paper"].replace(
    widths=(16, 32, 64, 128), mid_blocks=4, dec_mid_blocks=4, **_SMALL
)
PRESETS["study-conv"] = PRESETS["paper-conv"].replace(widths=(16, 32, 64, 128, 128), **_SMALL)
PRESETS["study-resnet"] = PRESETS["paper-resnet"].replace(
    widths=(16, 32, 64, 128), mid_blocks=1, dec_mid_blocks=1, dec_blocks=(0, 0, 0), **_SMALL
)
PRESETS["study-unet"] = PRESETS["paper-unet"].replace(widths=(16, 32, 64, 128), **_SMALL)


def preset(name: str, **changes) -> ModelConfig:
    """A named preset, optionally with fields changed (e.g. ``preset("paper", dose=False)``)."""
    if name not in PRESETS:
        raise InputError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
