"""Training stages: teacher autoencoder on NDCT, the distilled dose-conditioned student, optional fine-tune.

1. ``teacher``: encoder + decoder on NDCT alone, L1 + alpha * (1 - SSIM).
2. ``student``: a dose-conditioned encoder on LDCT; teacher encoder and decoder frozen; loss
   lambda_lat * sum of per-stage feature MSE against the teacher + lambda_rec * L1(decoded, NDCT).
3. ``finetune`` (only when ``finetune_steps`` > 0): student encoder and decoder trained together on
   LDCT -> NDCT from stage 2's weights. Not part of the published method; see docs/models.md.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1) every stage runs under DistributedDataParallel: the
recipe's batch is the global batch, each process trains on its share of it, and rank 0 alone logs,
validates and writes files (see :class:`_Dist`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ctdn import metrics
from ctdn._version import __version__
from ctdn.errors import InputError
from ctdn.hu import hu_to_unit, unit_to_hu
from ctdn.inference import pad_to_multiple, parse_device
from ctdn.models import Autoencoder, CTDenoiser, preset, save_model
from ctdn.viz import panel

from . import losses, prior
from .data import PairBank, datasets_for
from .recipe import Recipe
from .state import load_state, save_state

__all__ = ["train", "device_name", "pick_device"]


def pick_device(device=None) -> torch.device:
    """``"auto"`` or None: CUDA when present; otherwise the named device, checked."""
    return parse_device(None if device == "auto" else device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


class _Dist:
    """This process's place in a ``torchrun`` launch; one process is rank 0 of 1, with no process group.

    torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; ``WORLD_SIZE`` > 1 makes the run
    distributed: nccl with one GPU per process (``cuda:LOCAL_RANK``) on CUDA, gloo on the CPU.
    Rank 0 alone logs, validates and writes files; the others train their share of each batch.
    """

    def __init__(self) -> None:
        try:
            self.world = int(os.environ.get("WORLD_SIZE") or 1)
            self.rank = int(os.environ.get("RANK") or 0) if self.world > 1 else 0
            self.local_rank = int(os.environ.get("LOCAL_RANK") or 0) if self.world > 1 else 0
        except ValueError as exc:
            msg = f"WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them): {exc}"
            raise InputError(msg) from exc
        self.backend: str | None = None
        self._owned = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device) -> torch.device:
        """The device of this process: under torchrun ``auto``/``cuda`` mean ``cuda:LOCAL_RANK``."""
        dev = pick_device(device)
        if self.world == 1 or dev.type != "cuda":
            return dev
        if dev.index is not None:
            raise InputError(
                f"under torchrun each process uses cuda:LOCAL_RANK, so --device {device} is ambiguous; "
                "pass --device cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES"
            )
        if self.local_rank >= torch.cuda.device_count():
            raise InputError(
                f"LOCAL_RANK {self.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                "start at most one process per GPU"
            )
        return torch.device("cuda", self.local_rank)

    def start(self, device: torch.device) -> None:
        """Join the process group (made here unless the caller already made one)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        if not dist.is_available():
            raise InputError("this torch build has no torch.distributed: run ctdn-train without torchrun")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self._owned = True
        self.backend = dist.get_backend()

    def close(self) -> None:
        if self._owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owned = False

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    @contextlib.contextmanager
    def rank0_first(self, on: bool = True):
        """Rank 0 runs the block first (e.g. fills a cache), the others after it (e.g. read it)."""
        if on and not self.main:
            self.barrier()
        yield
        if on and self.main:
            self.barrier()

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` under DDP (itself for one process); its forward must compute all the loss needs.

        DDP registers only the parameters that require grad, so frozen ones (the student's decoder,
        the teacher, which is not even inside) are left out and never reduced. Every registered
        parameter gets a gradient each step, so ``find_unused_parameters`` stays False (it would
        walk the graph every step); a forward that skipped a trainable parameter would make DDP
        raise at the next step rather than silently train wrong.
        """
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        # Depthwise conv weights (C, 1, k, k) get gradients whose size-1 dim has another stride
        # than DDP's bucket view; DDP copies them (a performance hint, not an error): not shown.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    def mean(self, terms: dict) -> dict[str, float]:
        """The loss terms averaged over the processes: the global batch's (its shares are equal)."""
        t = torch.stack([v.detach().float() for v in terms.values()])
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
            t /= self.world
        return dict(zip(terms, t.tolist(), strict=True))


class _Distil(nn.Module):
    """Stage 2's forward as one module (DDP reduces only what its own forward ran): the student's
    encoder features, for the feature loss, and the frozen decoder's image made from them."""

    def __init__(self, student: CTDenoiser) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor, dose: torch.Tensor):
        fs = self.student.features(x, dose)
        return fs, self.student.decoder(fs)


class _Log:
    """JSON lines always; TensorBoard too when it is installed. ``out`` None: writes nothing (ranks > 0)."""

    def __init__(self, out: Path | None) -> None:
        self.file = self.tb = None
        if out is None:
            return
        self.file = (out / "log.jsonl").open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))
        except ImportError:
            self.tb = None
            self.write({"note": "tensorboard is not installed: logging to log.jsonl only"})

    def write(self, rec: dict) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()

    def scalars(self, stage: str, step: int, values: dict) -> None:
        if self.file is None:
            return
        self.write({"stage": stage, "step": step, **values})
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{stage}/{k}", v, step)

    def image(self, stage: str, step: int, tag: str, img01: np.ndarray) -> None:
        if self.tb is not None:
            self.tb.add_image(f"{stage}/{tag}", img01[None], step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def _schedule(opt, total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


@torch.no_grad()
def _validate(model, items, stage: str, device, m: int) -> tuple[dict, list]:
    model.eval()
    rows, shown = [], []
    for it in items:
        src = it["ndct"] if stage == "teacher" else it["ldct"]
        h, w = src.shape
        x = torch.from_numpy(pad_to_multiple(hu_to_unit(src.astype(np.float32))[None, None], m)).to(device)
        d = torch.tensor([float(it["dose"])], device=device)
        y = model(x, d)[..., :h, :w].float().cpu().numpy()[0, 0]
        out = unit_to_hu(y)
        rows.append(
            {
                "dose": float(it["dose"]),
                "psnr": metrics.psnr(out, it["ndct"]),
                "ssim": metrics.ssim(out, it["ndct"]),
                "psnr_in": metrics.psnr(src, it["ndct"]),
            }
        )
        if not shown:
            shown = [src, out, it["ndct"]]
    model.train()
    res = {
        "val_psnr": float(np.mean([r["psnr"] for r in rows])),
        "val_ssim": float(np.mean([r["ssim"] for r in rows])),
        "val_psnr_in": float(np.mean([r["psnr_in"] for r in rows])),
    }
    for d in sorted({r["dose"] for r in rows}):
        res[f"val_psnr_{d:g}"] = float(np.mean([r["psnr"] for r in rows if r["dose"] == d]))
    return res, shown


def _recon(r: Recipe, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The student's reconstruction L1, weighted by tissue class when the recipe has the anatomy prior."""
    if r.tissue_weights is not None:
        return prior.tissue_l1(out, y, r.tissue_weights)
    return F.l1_loss(out.float(), y)


def _optional_terms(r: Recipe, out: torch.Tensor, y: torch.Tensor, loss, terms: dict, perc=None):
    """Add the student's optional SSIM, gradient and perceptual terms to ``loss`` (and ``terms``)."""
    if perc is not None:
        pl = perc(out, y)
        loss = loss + r.lambda_perc * pl
        terms["perceptual"] = pl
    if r.student_ssim:
        ss = losses.ssim(out, y)
        loss = loss + r.student_ssim * (1 - ss)
        terms["ssim"] = ss
    if r.lambda_grad:
        g = losses.gradient_l1(out.float(), y)
        loss = loss + r.lambda_grad * g
        terms["grad_l1"] = g
    terms["loss"] = loss
    return loss


def _stage(
    stage: str,
    r: Recipe,
    out: Path,
    bank: PairBank,
    val_items,
    device,
    log: _Log,
    progress: bool,
    ddp: _Dist,
    teacher: Autoencoder | None = None,
    init: CTDenoiser | None = None,
):
    cfg = preset(r.model, **r.model_changes)
    torch.manual_seed(r.seed + {"teacher": 0, "student": 1, "finetune": 2}[stage])
    lr = r.lr
    if stage == "finetune":
        model = CTDenoiser(cfg).to(device)
        model.load_state_dict(init.state_dict())
        if cfg.residual and not init.config.residual:
            # The decoder's last conv drew the image; a residual model needs a correction, so it
            # starts at zero (the model starts as the identity) while every feature is kept.
            nn.init.zeros_(model.decoder.tail.weight)
            nn.init.zeros_(model.decoder.tail.bias)
        params = list(model.parameters())
        total, lr = r.finetune_steps, r.finetune_lr
    elif stage == "teacher":
        model = Autoencoder(cfg).to(device)
        params = list(model.parameters())
        total = r.teacher_steps or r.teacher_epochs * math.ceil(len(bank) / r.batch)
    else:
        # Stage 2 is the published method: the frozen decoder reconstructs the image, so the
        # student it trains is never residual (a residual config applies from stage 3 on).
        model = CTDenoiser(cfg.replace(residual=False)).to(device)
        model.decoder.load_state_dict(teacher.decoder.state_dict())
        model.decoder.requires_grad_(False)
        if r.student_init == "teacher":  # same encoder shapes; the dose scale/shift starts as identity
            missing = model.encoder.load_state_dict(teacher.encoder.state_dict(), strict=False)
            assert not missing.unexpected_keys, missing
        params = [p for n, p in model.named_parameters() if not n.startswith("decoder.")]
        total = r.student_steps or r.student_epochs * math.ceil(len(bank) / r.batch)
        teacher.requires_grad_(False).eval()
    # The seed's RadImageNet prior: a frozen ResNet-50 from the user's file, outside the DDP wrapper.
    perc = prior.PerceptualLoss(r.perceptual).to(device) if r.lambda_perc and stage != "teacher" else None
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=r.weight_decay)
    sched = _schedule(opt, total, r.warmup_steps)
    amp_dtype = None
    if r.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    state_file = out / f"{stage}-state.safetensors"
    step, elapsed = 0, 0.0
    ddp.barrier()  # every process decides on resuming before rank 0 can write this stage's state
    if state_file.exists():
        info = load_state(state_file, model=model, optimizer=opt, scheduler=sched, scaler=scaler)
        if _stage_keys(info.get("recipe") or {}, stage) != _stage_keys(r.to_dict(), stage):
            raise InputError(f"{state_file} was made by another recipe; use another --out or delete it")
        step, elapsed = int(info["step"]), float(info.get("elapsed_s", 0.0))
        log.write({"stage": stage, "resumed_at": step})
    m = cfg.multiple
    net = ddp.wrap(_Distil(model) if stage == "student" else model, device)
    bar = tqdm(total=total, initial=step, desc=stage, unit="step", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter() - elapsed
    net.train()
    while step < total:
        b = bank.batch(r.seed, stage, step, r.batch, r.patch, rank=ddp.rank, world=ddp.world)
        x, y, d = b["ldct"].to(device), b["ndct"].to(device), b["dose"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            if stage == "teacher":
                out_ = net(y)
                l1 = F.l1_loss(out_.float(), y)
                ss = losses.ssim(out_, y)
                loss = l1 + r.alpha_ssim * (1 - ss)
                terms = {"loss": loss, "l1": l1, "ssim": ss}
            elif stage == "finetune":
                out_ = net(x, d)
                l1 = _recon(r, out_, y)
                loss = l1
                terms = {"l1": l1}
                loss = _optional_terms(r, out_, y, loss, terms, perc)
            else:
                with torch.no_grad():
                    ft = teacher.features(y)
                fs, out_ = net(x, d)
                lat = losses.feature_mse(fs, ft)
                l1 = _recon(r, out_, y)
                loss = r.lambda_lat * lat + r.lambda_rec * l1
                terms = {"loss": loss, "feat_mse": lat, "l1": l1}
                loss = _optional_terms(r, out_, y, loss, terms, perc)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{stage} loss became {loss.item()} at step {step}; lower the lr or disable amp"
            )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        step += 1
        bar.update(1)
        if step % r.log_every == 0 or step == total:
            vals = ddp.mean(terms)
            vals.update(lr=sched.get_last_lr()[0], elapsed_s=time.perf_counter() - t0)
            log.scalars(stage, step, vals)
            bar.set_postfix(loss=f"{vals['loss']:.4f}")
        if ddp.main and (step % r.val_every == 0 or step == total):
            res, shown = _validate(model, val_items, stage, device, m)
            res["elapsed_s"] = time.perf_counter() - t0
            log.scalars(stage, step, res)
            for tag, img in zip(("input", "output", "target"), shown, strict=True):
                log.image(stage, step, tag, np.clip((img + 160) / 400, 0, 1).astype(np.float32))
            panel(shown, ["input", "output", "target"], out / f"{stage}-val.png", level=40, width=400)
        if ddp.main and (step % r.ckpt_every == 0 or step == total):
            save_state(
                state_file,
                model=model,
                optimizer=opt,
                scheduler=sched,
                scaler=scaler,
                step=step,
                meta={"recipe": r.to_dict(), "elapsed_s": time.perf_counter() - t0},
            )
    bar.close()
    model.eval()
    res = _validate(model, val_items, stage, device, m)[0] if ddp.main else {}
    return model, res, time.perf_counter() - t0, total


_LATER = {
    "teacher": ("student_", "lambda_", "finetune_", "tissue_weights", "perceptual", "teacher"),
    "student": ("finetune_",),
    "finetune": (),
}
_LABELS = {"ckpt_every", "val_every", "log_every", "val_slices", "variant"}


def _stage_keys(recipe: dict, stage: str) -> dict:
    """The recipe fields that decide ``stage``'s result (a resume must match them, not later stages')."""
    return {k: v for k, v in recipe.items() if k not in _LABELS and not k.startswith(_LATER[stage])}


STAGES = ("teacher", "student", "finetune")


def train(r: Recipe, out, *, stages=STAGES, cache=None, device=None, progress=True, export=None) -> Path:
    """Run the recipe's stages into ``out`` (resuming what is there); returns the final model file.

    Stage 3 (``finetune``) runs only when the recipe has ``finetune_steps`` > 0. Under torchrun
    (``WORLD_SIZE`` > 1) every process calls this and trains with DDP: ``r.batch`` is the global
    batch, divided among the processes, and rank 0 writes every file (all return the same path).
    """
    out = Path(out)
    ddp = _Dist()
    device = ddp.device(device)
    if r.batch % ddp.world:
        raise InputError(
            f"the batch ({r.batch}) is global and must divide evenly among the {ddp.world} processes; "
            "change it (--set batch=N) or the number of processes"
        )
    ddp.start(device)
    try:
        path = _train(r, out, stages, cache, device, progress and ddp.main, export, ddp)
        ddp.barrier()  # no process ends before rank 0 has written every file
        return path
    finally:
        ddp.close()


def _train(r: Recipe, out: Path, stages, cache, device, progress: bool, export, ddp: _Dist) -> Path:
    _check_priors(r)  # before hours of teacher training, not after
    out.mkdir(parents=True, exist_ok=True)
    cached = cache is not None  # rank 0 simulates the pairs into the cache, then the others read them
    with ddp.rank0_first(cached):
        train_ds, val_ds, desc = datasets_for(r, None if cache is None else Path(cache))
    log = _Log(out if ddp.main else None)
    where = device_name(device)
    dist_info = {"world_size": ddp.world, "backend": ddp.backend}
    log.write(
        {
            "start": time.strftime("%Y-%m-%d %H:%M:%S"),
            "device": where,
            "distributed": dist_info,
            "torch": torch.__version__,
            "ctdn": __version__,
            "recipe": r.to_dict(),
        }
    )
    try:
        with ddp.rank0_first(cached):
            bank = PairBank(train_ds, progress=progress, what="training pairs")
            n_val = min(len(val_ds), r.val_slices * len(r.doses)) if ddp.main else 0  # rank 0 validates
            val_items = [val_ds[i] for i in range(n_val)]
        summary = {
            "device": where,
            "distributed": dist_info,
            "torch": torch.__version__,
            "ctdn": __version__,
            "recipe": r.to_dict(),
            "data": desc,
            "train_pairs": len(bank),
            "doses": bank.doses,
        }
        run_file = out / "run.json"
        if ddp.main and run_file.exists():
            now = {k: summary[k] for k in ("device", "distributed", "torch")}
            summary = {**json.loads(run_file.read_text()), **now}
        if r.finetune_init == "scratch":
            return _scratch(r, out, bank, val_items, device, log, progress, summary, desc, where, export, ddp)
        teacher_file = out / "teacher.safetensors"
        teacher = None
        if r.teacher:  # a teacher trained elsewhere (e.g. shared by the study's NAFNet variants)
            teacher_file = Path(r.teacher)
            if not teacher_file.is_file():
                raise InputError(f"teacher file {teacher_file} not found (recipe field 'teacher')")
            teacher = _load_teacher(teacher_file, r, device)
            summary["teacher"] = {"from": str(teacher_file.resolve()), "sha256": _sha256(teacher_file)}
        elif "teacher" in stages or not teacher_file.exists():
            # Every process keeps the teacher it trained (DDP keeps the copies equal); rank 0 saves it.
            teacher, res, secs, steps = _stage("teacher", r, out, bank, val_items, device, log, progress, ddp)
            summary["teacher"] = {"steps": steps, "seconds": secs, "val": res, "device": where}
            if ddp.main:
                save_model(teacher.cpu(), teacher_file)
                teacher.to(device)
                run_file.write_text(json.dumps(summary, indent=2))
        if "student" not in stages:
            return teacher_file
        if teacher is None:
            teacher = _load_teacher(teacher_file, r, device)
        student, res, secs, steps = _stage(
            "student", r, out, bank, val_items, device, log, progress, ddp, teacher
        )
        summary["student"] = {"steps": steps, "seconds": secs, "val": res, "device": where}
        meta = _model_meta(r, desc, bank, summary, ["teacher", "student"], res)
        path = out / "student.safetensors"
        if ddp.main:
            run_file.write_text(json.dumps(summary, indent=2))
            save_model(student.cpu(), path, meta)
        final = student
        if r.finetune_steps > 0 and "finetune" in stages:
            tuned, res, secs, steps = _stage(
                "finetune", r, out, bank, val_items, device, log, progress, ddp, init=student.to(device)
            )
            summary["finetune"] = {"steps": steps, "seconds": secs, "val": res, "device": where}
            meta = _model_meta(r, desc, bank, summary, ["teacher", "student", "finetune"], res)
            path = out / "finetuned.safetensors"
            if ddp.main:
                run_file.write_text(json.dumps(summary, indent=2))
                save_model(tuned.cpu(), path, meta)
            final = tuned
        if export is not None and ddp.main:
            save_model(final.cpu(), export, meta)
        return path
    finally:
        log.close()


def _check_priors(r: Recipe) -> None:
    if r.tissue_weights is not None:
        prior.check_tissue_weights(r.tissue_weights)
    if r.lambda_perc:
        prior.load_backbone(r.perceptual)  # a missing or wrong weights file fails now


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_meta(r: Recipe, desc: dict, bank: PairBank, summary: dict, stages: list[str], res: dict) -> dict:
    """What a trained model's checkpoint says about how it was made."""
    return {
        "name": r.variant or r.model,
        "data": desc,
        "doses_seen": bank.doses,
        "dose_semantics": "fraction of a routine full dose (about 10 HU soft-tissue noise at 1.0)",
        "recipe": r.to_dict(),
        "training": {k: summary[k] for k in stages},
        "stages": stages,
        "val_metrics": res,
    }


def _scratch(r, out, bank, val_items, device, log, progress, summary, desc, where, export, ddp) -> Path:
    """The ablation: the final network trained end to end from random weights, no teacher."""
    init = CTDenoiser(preset(r.model, **r.model_changes).replace(residual=False))
    model, res, secs, steps = _stage(
        "finetune", r, out, bank, val_items, device, log, progress, ddp, init=init
    )
    summary["finetune"] = {"steps": steps, "seconds": secs, "val": res, "device": where, "init": "scratch"}
    meta = {**_model_meta(r, desc, bank, summary, ["finetune"], res), "stages": ["scratch"]}
    path = out / "scratch.safetensors"
    if ddp.main:
        (out / "run.json").write_text(json.dumps(summary, indent=2))
        save_model(model.cpu(), path, meta)
        if export is not None:
            save_model(model, export, meta)
    return path


# Fields a teacher does not use (it has no dose conditioning and is never residual).
_STUDENT_ONLY = {"dose", "dose_dim", "film", "residual"}


def _load_teacher(path: Path, r: Recipe, device) -> Autoencoder:
    """The trained teacher in ``path``, checked against the recipe's model before its weights."""
    import safetensors.torch as st

    from ctdn.models import ModelConfig
    from ctdn.models.checkpoint import read_any_meta

    cfg = preset(r.model, **r.model_changes)
    meta = read_any_meta(path)
    if meta.get("kind") != "teacher":
        raise InputError(
            f"{path} holds a {meta.get('kind')!r} model, not a teacher: pass the teacher.safetensors "
            "of a ctdn-train run"
        )
    theirs, ours = ModelConfig.from_dict(meta["config"]).to_dict(), cfg.to_dict()
    differ = [k for k in ours if k not in _STUDENT_ONLY and theirs.get(k) != ours[k]]
    if differ:
        what = "; ".join(f"{k} {theirs.get(k)} (this recipe: {ours[k]})" for k in differ[:4])
        raise InputError(
            f"{path} does not hold this recipe's teacher: its model differs in {what}; "
            f"train the teacher stage or pass a teacher of model {r.model!r}"
        )
    model = Autoencoder(cfg)
    try:
        model.load_state_dict(st.load_file(str(path)))
    except (RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[:2]
        raise InputError(f"{path}: its weights do not fit this recipe's teacher ({' '.join(first)})") from exc
    return model.to(device).eval()
