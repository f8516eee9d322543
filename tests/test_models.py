"""Models: the reference NAFBlock, presets, MAC counts and safetensors checkpoints."""

import json

import numpy as np
import pytest
import torch

from ctdn.errors import InputError
from ctdn.models import (
    PRESETS,
    Autoencoder,
    CTDenoiser,
    LayerNorm2d,
    ModelConfig,
    NAFBlock,
    build,
    count_macs,
    load_model,
    preset,
    save_model,
)


def _set(conv, weight, bias):
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weight, dtype=torch.float32).reshape(conv.weight.shape))
        conv.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def test_nafblock_hand_computed_single_channel():
    # One channel: LayerNorm gives its bias everywhere, so every stage is a number worked out by hand.
    b = NAFBlock(1)
    with torch.no_grad():
        b.norm1.bias.fill_(0.5)  # LN1 -> 0.5
        _set(b.conv1, [2.0, 3.0], [0.0, 0.0])  # -> (1.0, 1.5)
        _set(b.conv2, [[0, 0, 0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0]], [0.0, 0.0])  # centre tap
        _set(b.sca[1], [2.0], [0.0])  # SimpleGate 1.0 * 1.5 = 1.5; pool 1.5 -> 3.0; 1.5 * 3 = 4.5
        _set(b.conv3, [1.0], [1.0])  # -> 5.5
        b.beta.fill_(0.1)  # x + 0.55
        b.norm2.bias.fill_(0.25)  # LN2 -> 0.25
        _set(b.conv4, [4.0, 2.0], [0.0, 0.0])  # -> (1.0, 0.5); gate 0.5
        _set(b.conv5, [2.0], [0.0])  # -> 1.0
        b.gamma.fill_(0.2)  # + 0.2
    x = torch.randn(2, 1, 5, 7)
    torch.testing.assert_close(b(x), x + 0.75)


def test_nafblock_starts_as_identity():
    b = NAFBlock(6)
    x = torch.randn(2, 6, 9, 11)
    torch.testing.assert_close(b(x), x)


def _np_layernorm(x, w, bias, eps=1e-6):
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[None, :, None, None] + bias[None, :, None, None]


def _np_conv1x1(x, conv):
    w = conv.weight.detach().numpy()[:, :, 0, 0]
    return np.einsum("oc,nchw->nohw", w, x) + conv.bias.detach().numpy()[None, :, None, None]


def _np_dwconv3(x, conv):
    w = conv.weight.detach().numpy()[:, 0]
    n, c, h, wd = x.shape
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            out += w[None, :, i, j, None, None] * p[:, :, i : i + h, j : j + wd]
    return out + conv.bias.detach().numpy()[None, :, None, None]


@pytest.mark.parametrize("c,h,w", [(3, 5, 7), (4, 1, 1), (5, 8, 3)])
def test_nafblock_matches_numpy_reference(c, h, w):
    torch.manual_seed(c)
    b = NAFBlock(c)
    with torch.no_grad():
        for p in b.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    x = torch.randn(2, c, h, w)
    xn = x.numpy().astype(np.float64)
    g = lambda t: t.detach().numpy().astype(np.float64).reshape(-1)  # noqa: E731
    y = _np_layernorm(xn, g(b.norm1.weight), g(b.norm1.bias))
    y = _np_dwconv3(_np_conv1x1(y, b.conv1), b.conv2)
    y = y[:, :c] * y[:, c:]
    att = _np_conv1x1(y.mean(axis=(2, 3), keepdims=True), b.sca[1])
    y = _np_conv1x1(y * att, b.conv3)
    x1 = xn + y * g(b.beta)[None, :, None, None]
    y = _np_conv1x1(_np_layernorm(x1, g(b.norm2.weight), g(b.norm2.bias)), b.conv4)
    y = _np_conv1x1(y[:, :c] * y[:, c:], b.conv5)
    ref = x1 + y * g(b.gamma)[None, :, None, None]
    np.testing.assert_allclose(b(x).detach().numpy(), ref, rtol=1e-4, atol=1e-4)


def test_layernorm2d_normalises_channels():
    ln = LayerNorm2d(4)
    y = ln(torch.randn(2, 4, 3, 5) * 7 + 3)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 3, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(2, 3, 5), atol=1e-3, rtol=0)


def test_presets_macs():
    x = torch.zeros(1, 1, 512, 512)
    paper = count_macs(build("paper").eval(), x, torch.tensor([0.1])) / 1e9
    edge = count_macs(build("edge").eval(), x, torch.tensor([0.1])) / 1e9
    assert 30 < paper < 40  # the seed's ~18 + 17 GMACs
    assert edge <= 2.0


@pytest.mark.parametrize("name", [n for n in sorted(PRESETS) if PRESETS[n].arch == "nafnet"])
def test_blocks_per_level_counts_the_built_nafblocks_by_width(name):
    cfg = PRESETS[name]
    built = [m.conv1.in_channels for m in build(name).modules() if isinstance(m, NAFBlock)]
    expected = {}
    for c, n in zip(cfg.widths, cfg.blocks_per_level(), strict=True):
        expected[c] = expected.get(c, 0) + n
    assert {c: built.count(c) for c in expected} == expected and len(built) == sum(expected.values())
    levels = cfg.block_levels(512)
    assert [n for *_, n in levels] == [n for n in cfg.blocks_per_level() if n]
    assert all(side == 512 // (cfg.shuffle * 2**lv) for lv, _, side, _ in levels)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_model_shapes_and_range(name):
    m = build(name).eval()
    k = m.config.multiple
    x = torch.rand(2, 1, 2 * k, 3 * k) * 2 - 1
    with torch.no_grad():
        y = m(x, torch.tensor([0.1, 0.7]))
        feats = m.features(x, torch.tensor([0.1, 0.7]))
    assert y.shape == x.shape and y.abs().max() <= 1
    assert len(feats) == len(m.config.widths) + 1


def test_residual_and_clamp_output():
    torch.manual_seed(0)
    m = build("tiny", residual=True, out="clamp").eval()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    d = torch.tensor([0.1, 0.5])
    with torch.no_grad():
        for p in m.decoder.tail.parameters():
            p.zero_()
        torch.testing.assert_close(m(x, d), x)  # a zero correction is the identity
        for p in m.decoder.tail.parameters():
            p.normal_()
        corr = m.decoder(m.features(x, d))
        torch.testing.assert_close(m(x, d), (x + corr).clamp(-1, 1))
        assert corr.abs().max() <= 1 and (corr.abs() == 1).any()  # clamped, not tanh-squashed
        assert m(x, d).abs().max() <= 1


def test_teacher_and_student_share_decoder_layout():
    cfg = preset("tiny")
    t, s = Autoencoder(cfg), CTDenoiser(cfg)
    assert t.decoder.state_dict().keys() == s.decoder.state_dict().keys()
    enc_t, enc_s = set(t.encoder.state_dict()), set(s.encoder.state_dict())
    assert enc_t < enc_s and all(".film." in k for k in enc_s - enc_t)


def test_dose_conditioning_changes_output_and_ablation_ignores_it():
    torch.manual_seed(0)
    m = build("tiny").eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.rand(1, 1, 16, 16) * 2 - 1
        assert not torch.allclose(m(x, torch.tensor([0.1])), m(x, torch.tensor([0.9])))
        nd = build("tiny", dose=False).eval()
        assert nd.dose_embed is None
        torch.testing.assert_close(nd(x), nd(x, torch.tensor([0.3])))
    with pytest.raises(ValueError, match="dose"):
        m(x)


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"widths": (8, 16), "enc_blocks": (1, 1)}, "enc_blocks"),
        ({"skips": (3,)}, "skips"),
        ({"down": "pool"}, "down"),
        ({"hu_window": (1000, -1000)}, "hu_window"),
        ({"shuffle": 3}, "shuffle"),
    ],
)
def test_config_validation(changes, match):
    with pytest.raises(InputError, match=match):
        preset("tiny", **changes)


def test_config_roundtrip_and_unknown_keys():
    cfg = preset("edge")
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(InputError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "attention": True})
    with pytest.raises(InputError, match="unknown model preset"):
        preset("huge")


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(1)
    m = build("tiny")
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    path = save_model(m, tmp_path / "m.safetensors", {"doses_seen": [0.1, 0.5], "metrics": {"psnr": 1.0}})
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["config"] == m.config.to_dict() and side["hu_window"] == [-1000.0, 1000.0]
    assert side["doses_seen"] == [0.1, 0.5] and "ctdn_version" in side
    back = load_model(path)
    assert back.config == m.config and not back.training
    for k, v in m.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(back(x, torch.tensor([0.2])), m.eval()(x, torch.tensor([0.2])))
    assert back.meta["doses_seen"] == [0.1, 0.5]


def test_written_files_get_normal_permissions(tmp_path):
    from ctdn import _atomic

    path = save_model(build("tiny"), tmp_path / "m.safetensors")
    want = 0o666 & ~_atomic._UMASK  # what open() gives under this process's umask
    assert path.stat().st_mode & 0o777 == want  # not mkstemp's private 0600
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == want


def test_checkpoint_refusals(tmp_path):
    import safetensors.torch as st

    m = build("tiny")
    good = save_model(m, tmp_path / "good.safetensors")
    with pytest.raises(InputError, match="different model than expected"):
        load_model(good, expect=preset("edge"))
    # Weights of another architecture under this config.
    meta = json.loads((tmp_path / "good.json").read_text())
    st.save_file(
        {k: v.contiguous() for k, v in build("edge").state_dict().items()},
        str(tmp_path / "x.safetensors"),
        metadata={"ctdn": json.dumps(meta)},
    )
    with pytest.raises(InputError, match="do not match its config"):
        load_model(tmp_path / "x.safetensors")
    # A teacher checkpoint, a foreign safetensors file, a corrupt file, another HU window, a missing file.
    st.save_file(
        {"a": torch.zeros(1)},
        str(tmp_path / "t.safetensors"),
        metadata={"ctdn": json.dumps({**meta, "kind": "teacher"})},
    )
    with pytest.raises(InputError, match="teacher"):
        load_model(tmp_path / "t.safetensors")
    st.save_file({"a": torch.zeros(1)}, str(tmp_path / "f.safetensors"))
    with pytest.raises(InputError, match="no ctdn metadata"):
        load_model(tmp_path / "f.safetensors")
    (tmp_path / "c.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="not a readable safetensors"):
        load_model(tmp_path / "c.safetensors")
    st.save_file(
        {"a": torch.zeros(1)},
        str(tmp_path / "w.safetensors"),
        metadata={"ctdn": json.dumps({**meta, "hu_window": [-160, 240]})},
    )
    with pytest.raises(InputError, match="HU window"):
        load_model(tmp_path / "w.safetensors")
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(InputError, match="no shipped model named"):
        load_model("nonexistent")
