"""The study's encoders (conv baseline, ResNet, U-Net) and how variants are configured."""

from __future__ import annotations

import pytest
import torch
from ctdn.train.recipe import VARIANTS, recipe
from torch import nn

from ctdn.errors import InputError
from ctdn.models import PRESETS, Autoencoder, ConvBlock, CTDenoiser, ResBlock, build, preset


def test_paper_conv_is_the_seeds_baseline_autoencoder():
    m = build("paper-conv")
    convs = [c for c in m.encoder.modules() if isinstance(c, nn.Conv2d)]
    chans = [convs[0].in_channels] + [c.out_channels for c in convs if c.kernel_size == (3, 3)]
    assert chans[:6] == [1, 64, 128, 256, 512, 512]  # conv blocks 1->64->128->256->512->512
    assert sum(isinstance(c, nn.MaxPool2d) for c in m.encoder.modules()) == 4
    tconvs = [c for c in m.decoder.modules() if isinstance(c, nn.ConvTranspose2d)]
    assert [c.out_channels for c in tconvs] == [64, 128, 256, 512]  # indexed by level, applied top-down
    assert m.decoder.tail.in_channels == 64 and m.decoder.tail.out_channels == 1
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        y = m(x, torch.tensor([0.25]))
    assert y.shape == x.shape and y.abs().max() < 1  # tanh


@pytest.mark.parametrize(
    "name,block", [("study-resnet", ResBlock), ("study-unet", ConvBlock), ("paper-conv", ConvBlock)]
)
def test_blocks_follow_the_arch(name, block):
    m = build(name)
    blocks = [b for b in m.modules() if isinstance(b, (ResBlock, ConvBlock))]
    assert blocks and all(isinstance(b, block) for b in blocks)
    assert any(isinstance(b, nn.ReLU) for b in m.encoder.head.modules())


def test_unet_concatenates_and_its_skips_are_distilled_features():
    m = build("study-unet").eval()
    assert sorted(m.decoder.merges) == ["0", "1", "2"]
    assert m.decoder.merges["0"][0].in_channels == 2 * m.config.widths[0]
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    d = torch.tensor([0.1])
    with torch.no_grad():
        feats = m.features(x, d)
        base = m.decoder(feats)
        # each skip level's features reach the output
        for lv in (0, 1, 2):
            changed = list(feats)
            changed[lv] = changed[lv] + 1
            assert not torch.allclose(m.decoder(changed), base)
    # the features the student is distilled on include every level a skip carries
    assert len(feats) == len(m.config.widths) + 1
    assert [f.shape[1] for f in feats[:3]] == list(m.config.widths[:3])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_teacher_encoder_loads_into_the_student(name):
    cfg = preset(name)
    t, s = Autoencoder(cfg), CTDenoiser(cfg)
    assert t.decoder.state_dict().keys() == s.decoder.state_dict().keys()
    res = s.encoder.load_state_dict(t.encoder.state_dict(), strict=False)
    assert not res.unexpected_keys and all(".film." in k for k in res.missing_keys)


def test_dose_needs_a_conditioned_block():
    with pytest.raises(InputError, match="carry the dose"):
        preset("paper-conv", mid_blocks=0)
    preset("paper-conv", mid_blocks=0, dose=False)  # fine without dose
    with pytest.raises(InputError, match="merge"):
        preset("study-unet", merge="mul")
    with pytest.raises(InputError, match="arch"):
        preset("study", arch="vit")


@pytest.mark.parametrize("base", ["paper", "study"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_is_a_valid_configuration(base, variant):
    r = recipe(base, variant=variant)
    assert r.variant == variant
    cfg = preset(r.model, **r.model_changes)
    assert cfg.dose == (variant != "nafnet-nodose")
    want_arch = {"baseline": "conv", "unet": "conv", "resnet": "resnet"}.get(variant, "nafnet")
    assert cfg.arch == want_arch
    assert (cfg.merge == "concat") == (variant == "unet")
    assert (r.tissue_weights is not None) == (variant == "nafnet-prior")
    # the NAFNet variants share the teacher: the same encoder/decoder shapes
    if want_arch == "nafnet":
        assert Autoencoder(cfg).state_dict().keys() == Autoencoder(preset(base)).state_dict().keys()


def test_variant_errors():
    with pytest.raises(InputError, match="unknown variant"):
        recipe("study", variant="vgg")
    with pytest.raises(InputError, match="edge-resnet"):
        recipe("edge", variant="resnet")
    r = recipe("study", variant="nafnet-nodose", model_changes={"latent": 64})
    assert r.model_changes == {"latent": 64}  # explicit changes win over the variant's


def test_study_commands_share_the_nafnet_teacher_and_evaluate_every_variant():
    from ctdn.train.study import STUDY, commands

    cmds = commands("runs/s", cache="cache", report="rep")
    train, ev = cmds[:-1], cmds[-1]
    assert [c[c.index("--variant") + 1] for c in train] == list(STUDY)
    teacher = "runs/s/nafnet/teacher.safetensors"
    flag = lambda c, f: c[c.index(f) + 1] if f in c else None  # noqa: E731
    shared = {flag(c, "--variant") for c in train if flag(c, "--teacher") == teacher}
    assert shared == {"nafnet-prior", "nafnet-nodose"}
    assert ev[0] == "ctdn-evaluate" and ev.count("--model") == 2 * len(STUDY)  # distilled and fine-tuned
    assert "unet-ft=runs/s/unet/finetuned.safetensors" in ev
    assert [ev[i + 1] for i, a in enumerate(ev) if a == "--paired"] == ["nafnet", "nafnet-ft"]
    assert ev[ev.index("--size") + 1] == "256"  # the study recipe's slice size
    with pytest.raises(InputError, match="perceptual"):
        commands("runs/s", variants=["nafnet-radimagenet"])
    with_perc = commands("runs/s", perceptual="r50.pth")
    assert any("perceptual=r50.pth" in c for c in with_perc[-2])


def test_study_commands_on_real_data_split_patients_like_training():
    from ctdn.train.recipe import RECIPES
    from ctdn.train.study import commands

    cmds = commands("runs/p", base="paper", data="mayo:/data/mayo", variants=["nafnet", "unet"])
    assert all(c[c.index("--data") + 1] == "mayo:/data/mayo" for c in cmds)
    ev = cmds[-1]
    assert ev[ev.index("--seed") + 1] == str(RECIPES["paper"].seed)
    assert [c[c.index("--recipe") + 1] for c in cmds[:-1]] == ["paper", "paper"]


def test_study_edge_applies_the_nafnet_variants_to_the_shipped_architecture():
    for v in ("nafnet", "nafnet-prior", "nafnet-nodose"):
        r = recipe("study-edge", variant=v)
        assert r.model == "edge" and r.patch == recipe("study").patch
    with pytest.raises(InputError, match="edge-conv"):
        recipe("study-edge", variant="baseline")
