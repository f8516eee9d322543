"""Training: both stages run, the student is distilled from a frozen teacher, resume is exact."""

import json

import pytest
import torch
from ctdn.train import losses, recipe
from ctdn.train.cli import main as train_main
from ctdn.train.data import PairBank
from ctdn.train.loop import train

from ctdn.errors import InputError
from ctdn.models import load_model


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    path = train(recipe("smoke"), out, cache=out / "cache", device="cpu", progress=False)
    return out, path


def test_both_stages_write_a_loadable_student(smoke_run):
    out, path = smoke_run
    m = load_model(path)
    meta = m.meta
    assert meta["doses_seen"] == [0.1, 0.5] and meta["hu_window"] == [-1000.0, 1000.0]
    assert meta["data"]["source"] == "synthetic" and meta["recipe"]["model"] == "tiny"
    assert set(meta["training"]) == {"teacher", "student"} and "val_psnr" in meta["val_metrics"]
    run = json.loads((out / "run.json").read_text())
    assert run["teacher"]["steps"] == 3 and run["student"]["steps"] == 3 and run["device"]
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {r.get("stage") for r in logs} >= {"teacher", "student"}
    assert any("feat_mse" in r for r in logs) and any(
        "ssim" in r for r in logs if r.get("stage") == "teacher"
    )
    assert (out / "student-val.png").is_file()


def test_student_decoder_is_the_frozen_teacher_decoder(smoke_run):
    import safetensors.torch as st

    out, path = smoke_run
    teacher = st.load_file(str(out / "teacher.safetensors"))
    student = load_model(path).state_dict()
    dec = [k for k in student if k.startswith("decoder.")]
    assert dec
    for k in dec:
        torch.testing.assert_close(student[k], teacher[k])
    # ... while the student encoder moved away from the teacher's.
    enc = [k for k in teacher if k.startswith("encoder.") and k in student]
    assert any(not torch.equal(student[k], teacher[k]) for k in enc)


def test_finetune_stage_trains_the_decoder_too(tmp_path):
    import safetensors.torch as st

    r = recipe("smoke", finetune_steps=2)
    path = train(r, tmp_path, cache=tmp_path / "cache", device="cpu", progress=False)
    assert path.name == "finetuned.safetensors"
    m = load_model(path)
    assert m.meta["stages"] == ["teacher", "student", "finetune"]
    student = st.load_file(str(tmp_path / "student.safetensors"))
    tuned = m.state_dict()
    dec = [k for k in student if k.startswith("decoder.")]
    assert any(not torch.equal(tuned[k], student[k]) for k in dec)


def test_residual_fine_tune_starts_from_the_pure_distilled_student(tmp_path):
    changes = {"residual": True, "out": "clamp"}
    r = recipe("smoke", finetune_steps=2, model_changes=changes)
    path = train(r, tmp_path, cache=tmp_path / "cache", device="cpu", progress=False)
    assert load_model(path).config.residual
    assert not load_model(tmp_path / "student.safetensors").config.residual  # stage 2 is the method


def test_scratch_ablation_skips_the_teacher(tmp_path):
    r = recipe("smoke", finetune_steps=2, finetune_init="scratch")
    path = train(r, tmp_path, cache=tmp_path / "cache", device="cpu", progress=False)
    assert path.name == "scratch.safetensors" and not (tmp_path / "teacher.safetensors").exists()
    assert load_model(path).meta["stages"] == ["scratch"]


def test_resume_continues_exactly(tmp_path, monkeypatch):
    r = recipe("smoke", student_steps=4, ckpt_every=2, val_every=100)
    cache = tmp_path / "cache"
    full = load_model(train(r, tmp_path / "full", cache=cache, device="cpu", progress=False)).state_dict()

    real = PairBank.batch

    def crash_after_two_student_steps(self, seed, stage, step, *a, **k):
        if stage == "student" and step == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(self, seed, stage, step, *a, **k)

    monkeypatch.setattr(PairBank, "batch", crash_after_two_student_steps)
    with pytest.raises(KeyboardInterrupt):
        train(r, tmp_path / "part", cache=cache, device="cpu", progress=False)
    monkeypatch.setattr(PairBank, "batch", real)
    resumed = load_model(train(r, tmp_path / "part", cache=cache, device="cpu", progress=False)).state_dict()
    logs = (tmp_path / "part" / "log.jsonl").read_text()
    assert '"resumed_at": 2' in logs
    for k, v in full.items():
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=0)


def test_resume_refuses_another_recipe(tmp_path):
    cache = tmp_path / "cache"
    train(recipe("smoke"), tmp_path / "run", cache=cache, device="cpu", progress=False)
    with pytest.raises(InputError, match="another recipe"):
        train(
            recipe("smoke", lr=1e-3, student_steps=5),
            tmp_path / "run",
            stages=("student",),
            cache=cache,
            device="cpu",
            progress=False,
        )


def test_batches_are_a_function_of_seed_and_step(smoke_run, tmp_path):
    from ctdn.datasets import SyntheticDataset

    r = recipe("smoke")
    ds = SyntheticDataset(doses=r.doses, **{**r.synthetic, "seed": 0})
    bank = PairBank(ds, progress=False)
    a = bank.batch(0, "student", 5, 2, 16)
    b = bank.batch(0, "student", 5, 2, 16)
    c = bank.batch(0, "student", 6, 2, 16)
    assert torch.equal(a["ldct"], b["ldct"]) and not torch.equal(a["ldct"], c["ldct"])
    assert a["ldct"].shape == (2, 1, 16, 16) and a["ldct"].abs().max() <= 1
    with pytest.raises(InputError, match="patch"):
        bank.batch(0, "teacher", 0, 2, 1000)


def test_losses():
    x = torch.rand(2, 1, 24, 24) * 2 - 1
    assert abs(float(losses.ssim(x, x)) - 1) < 1e-5
    assert float(losses.ssim(x, -x)) < 0.5
    assert float(losses.gradient_l1(x, x)) == 0
    f = [torch.ones(1, 2, 4, 4), torch.zeros(1, 3, 2, 2)]
    assert float(losses.feature_mse(f, [torch.zeros_like(t) for t in f])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="feature maps"):
        losses.feature_mse(f, f[:1])


def test_ssim_loss_matches_the_metric():
    from ctdn import metrics

    torch.manual_seed(0)
    a, b = torch.rand(1, 1, 40, 40) * 2 - 1, torch.rand(1, 1, 40, 40) * 2 - 1
    ref = metrics.ssim(a[0, 0].numpy() * 1000, b[0, 0].numpy() * 1000)
    assert float(losses.ssim(a, b)) == pytest.approx(ref, abs=1e-4)


def test_cli_errors(tmp_path, capsys):
    assert train_main(["--out", str(tmp_path / "x"), "--recipe", "smoke", "--set", "nonsense=1"]) == 2
    assert "unknown recipe field" in capsys.readouterr().err
    assert train_main(["--out", str(tmp_path / "x"), "--recipe", "smoke", "--data", "dicom:/nowhere"]) == 2
    assert "mayo:PATH" in capsys.readouterr().err
