"""Training the study's other encoders, sharing a teacher, and the anatomy priors in the loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ctdn.train import recipe
from ctdn.train.cli import main as train_main
from ctdn.train.loop import train
from ctdn.train.prior import ResNet50Trunk

from ctdn import Denoiser
from ctdn.errors import InputError
from ctdn.models import load_model


@pytest.fixture(scope="module")
def nafnet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nafnet")
    train(recipe("smoke"), out, cache=out.parent / "cache", device="cpu", progress=False)
    return out


@pytest.mark.parametrize("model", ["study-conv", "study-resnet", "study-unet"])
def test_other_encoders_train_through_the_same_stages(tmp_path, model):
    path = train(
        recipe("smoke", model=model), tmp_path, cache=tmp_path / "cache", device="cpu", progress=False
    )
    m = load_model(path)
    assert m.config.arch == {"study-resnet": "resnet"}.get(model, "conv")
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["teacher"]["steps"] == 3 and run["student"]["steps"] == 3
    logs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any("feat_mse" in r and np.isfinite(r["feat_mse"]) for r in logs)
    out = Denoiser(path, backend="torch", device="cpu")(np.full((40, 56), 40.0, np.float32), 0.25)
    assert out.shape == (40, 56) and np.isfinite(out).all()


def test_a_shared_teacher_is_used_not_retrained(nafnet_run, tmp_path):
    teacher = nafnet_run / "teacher.safetensors"
    r = recipe("smoke", variant=None, teacher=str(teacher), tissue_weights=(0.2, 1, 1, 3, 1))
    path = train(r, tmp_path, cache=nafnet_run.parent / "cache", device="cpu", progress=False)
    assert not (tmp_path / "teacher-state.safetensors").exists()
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["teacher"]["from"] == str(teacher.resolve()) and len(run["teacher"]["sha256"]) == 64
    import safetensors.torch as st

    t = st.load_file(str(teacher))
    s = load_model(path).state_dict()
    dec = [k for k in t if k.startswith("decoder.")]
    assert dec and all(torch.equal(t[k], s[k]) for k in dec)  # the frozen decoder is the shared teacher's
    # the prior changed the student's loss: same seed and batches, other weights than the plain student
    plain = load_model(nafnet_run / "student.safetensors").state_dict()
    assert any(not torch.equal(plain[k], s[k]) for k in s if k.startswith("encoder."))


def test_a_teacher_of_another_model_is_refused(nafnet_run, tmp_path, capsys):
    teacher = nafnet_run / "teacher.safetensors"
    args = ["--recipe", "smoke", "--out", str(tmp_path / "o"), "--quiet", "--device", "cpu"]
    assert train_main([*args, "--teacher", str(teacher), "--set", "model=study-conv"]) == 2
    err = capsys.readouterr().err
    assert "does not hold this recipe's teacher" in err and "arch nafnet (this recipe: conv)" in err
    assert "size mismatch" not in err  # the differing config fields, not torch's key-by-key dump
    assert train_main([*args, "--teacher", str(nafnet_run / "student.safetensors")]) == 2
    assert "holds a 'student' model, not a teacher" in capsys.readouterr().err
    assert train_main([*args, "--teacher", str(tmp_path / "none.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "teacher file" in err and "not found" in err


def test_prior_errors_come_before_any_training(tmp_path, capsys):
    args = ["--recipe", "smoke", "--out", str(tmp_path / "o"), "--quiet", "--device", "cpu"]
    assert train_main([*args, "--variant", "nafnet-radimagenet"]) == 2
    assert "perceptual=PATH" in capsys.readouterr().err
    assert train_main([*args, "--set", "lambda_perc=0.1", f"perceptual={tmp_path / 'r50.pth'}"]) == 2
    assert "nothing is downloaded" in capsys.readouterr().err
    assert train_main([*args, "--set", "tissue_weights=(1,2)"]) == 2
    assert "tissue_weights needs 5" in capsys.readouterr().err
    assert not (tmp_path / "o" / "teacher-state.safetensors").exists()
    assert train_main([*args, "--variant", "resnet"]) == 2  # the smoke recipe's tiny model has no resnet
    assert "tiny-resnet" in capsys.readouterr().err


def test_perceptual_prior_trains_with_a_user_file(nafnet_run, tmp_path):
    torch.manual_seed(0)
    torch.save(ResNet50Trunk().state_dict(), tmp_path / "r50.pth")
    r = recipe(
        "smoke",
        teacher=str(nafnet_run / "teacher.safetensors"),
        lambda_perc=0.1,
        perceptual=str(tmp_path / "r50.pth"),
    )
    train(r, tmp_path / "run", cache=nafnet_run.parent / "cache", device="cpu", progress=False)
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    vals = [r["perceptual"] for r in logs if r.get("stage") == "student" and "perceptual" in r]
    assert vals and all(np.isfinite(v) and v > 0 for v in vals)


def test_recipe_rejects_a_variant_for_the_wrong_base():
    with pytest.raises(InputError, match="tiny-conv"):
        recipe("smoke", variant="baseline")
