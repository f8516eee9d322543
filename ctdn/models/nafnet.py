"""Encoder, shared decoder, the teacher autoencoder and the dose-conditioned student.

One skeleton for every encoder of the study (NAFNet, ResNet, conv baseline, U-Net): the block
type comes from ``config.arch`` through :data:`BLOCKS`, the rest (widths, depths, skips, down/up
convs) from the other config fields.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .layers import ConvBlock, DoseEmbedding, DoseFiLM, NAFBlock, ResBlock, init_conv_

__all__ = ["BLOCKS", "CondBlock", "Encoder", "Decoder", "Autoencoder", "CTDenoiser"]

BLOCKS: dict[str, type[nn.Module]] = {"nafnet": NAFBlock, "resnet": ResBlock, "conv": ConvBlock}


class CondBlock(nn.Module):
    """A block with an optional dose scale/shift in front (with a NAFBlock: what ``ctdn.kernels`` fuses)."""

    def __init__(self, c: int, dose_dim: int | None, block: type[nn.Module] = NAFBlock) -> None:
        super().__init__()
        self.film = DoseFiLM(c, dose_dim) if dose_dim else None
        self.block = block(c)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        if self.film is not None:
            x = self.film(x, emb)
        return self.block(x)


def _act(cfg: ModelConfig, conv: nn.Module) -> nn.Module:
    """``conv`` followed by a ReLU for the ReLU families (NAFNet has none between its convs)."""
    return conv if cfg.arch == "nafnet" else nn.Sequential(conv, nn.ReLU())


def _down(cfg: ModelConfig, cin: int, cout: int) -> nn.Module:
    if cfg.down == "conv3":
        conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
    elif cfg.down == "conv2":
        conv = nn.Conv2d(cin, cout, 2, stride=2)
    else:
        conv = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(cin, cout, 3, padding=1))
    return _act(cfg, conv)


def _up(cfg: ModelConfig, cin: int, cout: int) -> nn.Module:
    if cfg.up == "tconv3":
        conv = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
    else:
        conv = nn.ConvTranspose2d(cin, cout, 2, stride=2)
    return _act(cfg, conv)


class Encoder(nn.Module):
    """Image in [-1, 1] -> feature maps, one per level (before the bottleneck blocks) plus the latent.

    ``features[l]`` for ``l < L - 1`` is level ``l`` after its blocks (what a skip carries);
    ``features[L - 1]`` is the last downsampling's output; ``features[-1]`` the latent.
    """

    def __init__(self, cfg: ModelConfig, dose: bool) -> None:
        super().__init__()
        w, s = cfg.widths, cfg.shuffle
        film_all = dose and cfg.film == "all"
        dim, blk = cfg.dose_dim, BLOCKS[cfg.arch]
        self.unshuffle = nn.PixelUnshuffle(s) if s > 1 else nn.Identity()
        self.head = _act(cfg, nn.Conv2d(s * s, w[0], 3, padding=1))
        self.levels = nn.ModuleList(
            nn.ModuleList(
                CondBlock(w[lv], dim if film_all else None, blk) for _ in range(cfg.enc_blocks[lv])
            )
            for lv in range(len(w) - 1)
        )
        self.downs = nn.ModuleList(_down(cfg, w[lv], w[lv + 1]) for lv in range(len(w) - 1))
        self.mid = nn.ModuleList(CondBlock(w[-1], dim if dose else None, blk) for _ in range(cfg.mid_blocks))
        self.proj = nn.Conv2d(w[-1], cfg.latent, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> list[torch.Tensor]:
        feats = []
        x = self.head(self.unshuffle(x))
        for blocks, down in zip(self.levels, self.downs, strict=True):
            for b in blocks:
                x = b(x, emb)
            feats.append(x)
            x = down(x)
        feats.append(x)
        for b in self.mid:
            x = b(x, emb)
        feats.append(self.proj(x))
        return feats


class Decoder(nn.Module):
    """Latent (and skip features) -> image in [-1, 1]: 1x1, blocks, transposed-conv ups, conv + Tanh."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w, s, blk = cfg.widths, cfg.shuffle, BLOCKS[cfg.arch]
        self.skips = tuple(cfg.skips)
        self.inp = nn.Conv2d(cfg.latent, w[-1], 1)
        self.mid = nn.Sequential(*(blk(w[-1]) for _ in range(cfg.dec_mid_blocks)))
        # ups[l] and levels[l] bring level l + 1 up to level l (index by level, applied top-down).
        self.ups = nn.ModuleList(_up(cfg, w[lv + 1], w[lv]) for lv in range(len(w) - 1))
        self.levels = nn.ModuleList(
            nn.Sequential(*(blk(w[lv]) for _ in range(cfg.dec_blocks[lv]))) for lv in range(len(w) - 1)
        )
        # U-Net's merge: concatenate the skip and conv back to the level's width.
        self.merges = nn.ModuleDict(
            {str(lv): _act(cfg, nn.Conv2d(2 * w[lv], w[lv], 3, padding=1)) for lv in self.skips}
            if cfg.merge == "concat"
            else {}
        )
        self.tail = nn.Conv2d(w[0], s * s, 3, padding=1)
        self.shuffle = nn.PixelShuffle(s) if s > 1 else nn.Identity()
        self.out = cfg.out

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.mid(self.inp(feats[-1]))
        for lv in reversed(range(len(self.ups))):
            x = self.ups[lv](x)
            if str(lv) in self.merges:
                x = self.merges[str(lv)](torch.cat([x, feats[lv]], dim=1))
            elif lv in self.skips:
                x = x + feats[lv]
            x = self.levels[lv](x)
        y = self.shuffle(self.tail(x))
        return torch.tanh(y) if self.out == "tanh" else y.clamp(-1.0, 1.0)


class Autoencoder(nn.Module):
    """The teacher: encoder (no dose) + decoder, trained on NDCT alone, then frozen."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg, dose=False)
        self.decoder = Decoder(cfg)
        self.apply(init_conv_)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class CTDenoiser(nn.Module):
    """The inference model: student encoder (dose-conditioned) + the teacher's decoder.

    ``forward(x, dose)``: x is (N, 1, H, W) in [-1, 1] (the HU window), H and W multiples of
    ``config.multiple``; dose is (N,) fractions of full dose (ignored without dose conditioning).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.dose_embed = DoseEmbedding(cfg.dose_dim) if cfg.dose else None
        self.encoder = Encoder(cfg, dose=cfg.dose)
        self.decoder = Decoder(cfg)
        self.apply(init_conv_)

    def embed(self, dose: torch.Tensor | None, n: int, device) -> torch.Tensor | None:
        if self.dose_embed is None:
            return None
        if dose is None:
            raise ValueError("this model is dose-conditioned: pass dose, a fraction of full dose in (0, 1]")
        dose = torch.as_tensor(dose, dtype=torch.float32, device=device).reshape(-1)
        return self.dose_embed(dose.expand(n) if dose.numel() == 1 else dose)

    def features(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> list[torch.Tensor]:
        return self.encoder(x, self.embed(dose, x.shape[0], x.device))

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        y = self.decoder(self.features(x, dose))
        return (x + y).clamp(-1.0, 1.0) if self.config.residual else y
