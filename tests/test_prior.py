"""Anatomy priors: the tissue-weighted L1 and the user-supplied ResNet-50 perceptual loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ctdn.train.prior import PerceptualLoss, ResNet50Trunk, load_backbone, tissue_l1

from ctdn.errors import InputError
from ctdn.hu import hu_to_unit, tissue_classes


def _pair():
    g = torch.Generator().manual_seed(0)
    hu = torch.empty(2, 1, 24, 24).uniform_(-1000, 1000, generator=g)
    tgt = hu_to_unit(hu)
    out = tgt + torch.randn(tgt.shape, generator=g) * 0.05
    return out, tgt, hu


def test_tissue_l1_with_equal_weights_is_l1():
    out, tgt, _ = _pair()
    torch.testing.assert_close(tissue_l1(out, tgt, (2.0,) * 5), F.l1_loss(out, tgt))


def test_tissue_l1_weighs_each_class():
    out, tgt, hu = _pair()
    w = torch.tensor([0.2, 1.0, 1.5, 3.0, 0.5])
    cls = tissue_classes(hu)
    assert set(cls.unique().tolist()) == {0, 1, 2, 3, 4}
    per_image = [(w[c] * (o - t).abs()).sum() / w[c].sum() for o, t, c in zip(out, tgt, cls, strict=True)]
    want = torch.stack(per_image).mean()
    torch.testing.assert_close(tissue_l1(out, tgt, w.tolist()), want)
    # a mean over the batch: the halves of a batch average to the whole (what DDP's shares do)
    halves = (tissue_l1(out[:1], tgt[:1], w.tolist()) + tissue_l1(out[1:], tgt[1:], w.tolist())) / 2
    torch.testing.assert_close(halves, want)
    # errors in soft tissue cost more than the same errors in air
    soft = out.clone()
    soft[cls == 3] = tgt[cls == 3]
    air = out.clone()
    air[cls == 0] = tgt[cls == 0]
    assert tissue_l1(soft, tgt, w.tolist()) < tissue_l1(air, tgt, w.tolist())


def test_tissue_l1_needs_one_weight_per_class():
    out, tgt, _ = _pair()
    with pytest.raises(InputError, match="5 values"):
        tissue_l1(out, tgt, (1.0, 2.0))


@pytest.fixture(scope="module")
def trunk_state():
    torch.manual_seed(0)
    net = ResNet50Trunk()
    with torch.no_grad():
        for m in net.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.state_dict()


def test_loads_torchvision_names_with_prefixes_and_extra_layers(tmp_path, trunk_state):
    sd = {f"module.{k}": v for k, v in trunk_state.items()}
    sd["module.fc.weight"] = torch.zeros(10, 2048)  # a classifier head and layer4 are ignored
    sd["module.layer4.0.conv1.weight"] = torch.zeros(512, 1024, 1, 1)
    torch.save({"state_dict": sd}, tmp_path / "r50.pth")
    net = load_backbone(tmp_path / "r50.pth")
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, trunk_state[k])


def test_loads_sequential_layout_from_safetensors(tmp_path, trunk_state):
    import safetensors.torch as st

    names = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6"}
    sd = {}
    for k, v in trunk_state.items():
        head, _, rest = k.partition(".")
        sd[f"backbone.{names[head]}.{rest}"] = v.contiguous()
    st.save_file(sd, str(tmp_path / "r50.safetensors"))
    net = load_backbone(tmp_path / "r50.safetensors")
    torch.testing.assert_close(net.layer3[5].conv3.weight, trunk_state["layer3.5.conv3.weight"])


def test_backbone_errors(tmp_path, trunk_state):
    with pytest.raises(InputError, match="not found.*nothing is downloaded"):
        load_backbone(tmp_path / "radimagenet.pth")
    with pytest.raises(InputError, match="perceptual=PATH"):
        load_backbone("")
    (tmp_path / "r.h5").write_bytes(b"\x89HDF\r\n")
    with pytest.raises(InputError, match="Keras"):
        load_backbone(tmp_path / "r.h5")
    from ctdn.models import build, save_model

    save_model(build("tiny"), tmp_path / "tiny.safetensors")
    with pytest.raises(InputError, match="not a ResNet-50"):
        load_backbone(tmp_path / "tiny.safetensors")
    bad = dict(trunk_state)
    bad["layer2.0.conv1.weight"] = torch.zeros(64, 256, 1, 1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(InputError, match=r"shapes: layer2\.0\.conv1\.weight"):
        load_backbone(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="cannot read"):
        load_backbone(tmp_path / "junk.pt")


def test_perceptual_loss(tmp_path, trunk_state):
    torch.save(trunk_state, tmp_path / "r50.pt")
    loss = PerceptualLoss(tmp_path / "r50.pt").train()
    assert not loss.net.training  # BatchNorm stays in eval mode
    out, tgt, _ = _pair()
    out = out.clone().requires_grad_(True)
    assert loss(tgt, tgt).item() == 0
    val = loss(out, tgt)
    assert val.item() > 0
    val.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.net.parameters())
