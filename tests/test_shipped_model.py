"""The shipped default model: loads, is small, carries its provenance, and really denoises."""

import re

import pytest

import ctdn
from ctdn import metrics, phantoms
from ctdn.cli import main
from ctdn.models import load_model, preset
from ctdn.models.checkpoint import WEIGHTS_DIR
from ctdn.sim import Simulator


def test_shipped_model_file_and_metadata():
    path = WEIGHTS_DIR / "edge.safetensors"
    assert path.stat().st_size < 5e6
    m = load_model("edge", expect=preset("edge"))
    meta = m.meta
    assert meta["doses_seen"] == [0.1, 0.25, 0.5, 0.7]
    assert meta["hu_window"] == [-1000.0, 1000.0] and meta["data"]["source"] == "synthetic"
    assert meta["training"]["student"]["steps"] > 0 and meta["training"]["student"]["device"]
    assert (WEIGHTS_DIR / "edge.json").is_file() and (WEIGHTS_DIR / "edge.md").is_file()


@pytest.fixture(scope="module")
def case():
    # A phantom seed no training or quality run uses.
    ph = phantoms.generate("thorax", seed=777, size=512)
    sim = Simulator(pixel_size_mm=ph.pixel_size_mm)
    return ph, sim.noiseless(ph.hu), {d: sim.simulate(ph.hu, d, seed=5) for d in (0.1, 0.7)}


@pytest.mark.parametrize("dose", [0.1, 0.7])
def test_shipped_model_improves_a_new_phantom(case, dose):
    ph, clean, noisy = case
    out = ctdn.denoise(noisy[dose], dose)
    assert metrics.psnr(out, clean) > metrics.psnr(noisy[dose], clean) + 1.0
    assert metrics.ssim(out, clean) > metrics.ssim(noisy[dose], clean)
    assert metrics.noise_std(out, clean, ph.uniform) < 0.7 * metrics.noise_std(noisy[dose], clean, ph.uniform)
    assert abs(float((out - clean)[ph.uniform].mean())) < 3.0


def test_demo_prints_a_real_improvement(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\s*(input|denoised)\s+[\d.]+\s+[\d.]+\s+([\d.]+)", out, flags=re.M))
    assert float(rows["denoised"]) > float(rows["input"]) + 1.0
    kept = re.search(r"lesion contrast kept .*: LDCT ([\d.]+), denoised ([\d.]+)", out)
    ratio = re.search(r"f_avg ratio ([\d.]+)", out)
    assert kept and ratio, out  # what a reader looks for is printed beside PSNR
    assert all(0.0 < float(v) < 2.0 for v in (*kept.groups(), ratio.group(1)))
    png = tmp_path / "abdomen_denoised.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
