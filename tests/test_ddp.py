"""DDP through torchrun, on the CPU with gloo and 2 processes: the same weights as one process,
rank 0 alone writes, a re-run resumes, a batch that does not divide among the processes is refused."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import safetensors.torch as st
import torch
from ctdn.train.cli import main as train_main
from ctdn.train.data import PairBank

from ctdn.errors import InputError

# batch 4 = 2 pairs per process; every stage, the fine-tune too, takes a few real steps.
SET = ["--set", "batch=4", "teacher_steps=4", "student_steps=4", "finetune_steps=2"]


def _args(out, cache, *extra):
    where = ["--out", str(out), "--cache", str(cache)]
    return ["--recipe", "smoke", *where, "--device", "cpu", "--quiet", *extra]


def _torchrun(*args, nproc=2):
    """``torchrun --standalone`` (a free port of its own) with ``nproc`` CPU processes."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "ctdn.train.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _logs(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_two_processes_train_what_one_does_rank0_writes_and_a_rerun_resumes(tmp_path):
    cache = tmp_path / "cache"  # filled by rank 0 of the DDP run, then read by rank 1 and by B
    a, b = tmp_path / "A", tmp_path / "B"
    res = _torchrun(*_args(a, cache, *SET))
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.count("ctdn-train: wrote") == 1  # rank 0 speaks for the run
    assert train_main(_args(b, cache, *SET)) == 0

    # DDP averages the two processes' gradients of their halves of the global batch: the gradient
    # of the whole batch, so only the float reduction order differs (measured max 2e-8).
    for name in ("teacher", "student", "finetuned"):
        wa, wb = st.load_file(str(a / f"{name}.safetensors")), st.load_file(str(b / f"{name}.safetensors"))
        assert wa.keys() == wb.keys()
        diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        assert diff <= 1e-6, (name, diff)

    assert json.loads((a / "run.json").read_text())["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert json.loads((b / "run.json").read_text())["distributed"] == {"world_size": 1, "backend": None}
    logs = _logs(a)
    assert sum("start" in r for r in logs) == 1 and logs[-1]["stage"] == "finetune"
    records = [(r["stage"], r["step"], tuple(sorted(r))) for r in logs if "step" in r]
    assert len(records) == len(set(records))  # no line written twice
    # The logged loss is the global batch's (the mean over the processes), as one process logs it.
    loss_a = {(r["stage"], r["step"]): r["loss"] for r in logs if "loss" in r}
    loss_b = {(r["stage"], r["step"]): r["loss"] for r in _logs(b) if "loss" in r}
    assert loss_a.keys() == loss_b.keys() and len(loss_a) == 10
    assert all(abs(loss_a[k] - loss_b[k]) <= 1e-5 for k in loss_a), (loss_a, loss_b)
    assert all((a / f"{s}-val.png").is_file() for s in ("teacher", "student", "finetune"))

    # The same command again resumes every finished stage at its end: nothing is trained again.
    before = st.load_file(str(a / "finetuned.safetensors"))
    res = _torchrun(*_args(a, cache, *SET))
    assert res.returncode == 0, res.stderr[-4000:]
    logs = _logs(a)
    assert sum("start" in r for r in logs) == 2
    assert {r["stage"]: r["resumed_at"] for r in logs if "resumed_at" in r} == {
        "teacher": 4,
        "student": 4,
        "finetune": 2,
    }
    assert sum("loss" in r for r in logs) == 10
    after = st.load_file(str(a / "finetuned.safetensors"))
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_a_batch_that_does_not_divide_among_the_processes_is_refused(tmp_path):
    res = _torchrun(*_args(tmp_path / "run", tmp_path / "cache", "--set", "batch=3"))
    assert res.returncode != 0
    assert "the batch (3) is global and must divide evenly among the 2 processes" in res.stderr
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_torchrun_gpus_come_from_local_rank_not_from_device(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert train_main(_args(tmp_path / "run", tmp_path / "cache", "--device", "cuda:1")) == 2
    err = capsys.readouterr().err
    assert "ctdn-train (rank 1): error:" in err and "cuda:LOCAL_RANK" in err


def test_the_process_shares_make_up_the_single_process_batch():
    rng = np.random.default_rng(0)
    pairs = [
        {"ldct": rng.normal(0, 100, (24, 24)), "ndct": rng.normal(0, 100, (24, 24)), "dose": d}
        for d in (0.1, 0.25, 0.5, 0.7, 0.1)
    ]
    bank = PairBank(pairs, progress=False)
    for step in (0, 1, 7):  # 7 crosses an epoch boundary (5 pairs, 4 a batch)
        whole = bank.batch(3, "student", step, 4, 16)
        shares = [bank.batch(3, "student", step, 4, 16, rank=r, world=2) for r in (0, 1)]
        for k, v in whole.items():
            assert torch.equal(torch.cat([s[k] for s in shares]), v)
    with pytest.raises(InputError, match="must divide evenly among the 4 processes"):
        bank.batch(3, "student", 0, 6, 16, rank=0, world=4)
