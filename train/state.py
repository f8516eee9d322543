"""Resumable training state in safetensors + JSON (no pickles): model, optimizer, scheduler, step."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ctdn._atomic import atomic_path
from ctdn.errors import InputError

__all__ = ["save_state", "load_state"]


def save_state(path: Path, *, model, optimizer, scheduler, scaler, step: int, meta: dict) -> None:
    """Everything needed to continue a stage exactly, written atomically."""
    import safetensors.torch as st

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, s in opt["state"].items():
        for name, v in s.items():
            tensors[f"opt.{pid}.{name}"] = torch.as_tensor(v).detach().cpu().contiguous()
    info = {
        **meta,
        "step": step,
        "param_groups": opt["param_groups"],
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }
    with atomic_path(path) as tmp:
        st.save_file(tensors, str(tmp), metadata={"ctdn-train": json.dumps(info)})


def load_state(path: Path, *, model, optimizer, scheduler, scaler) -> dict:
    """Restore what :func:`save_state` wrote; returns its metadata (``step`` included)."""
    import safetensors.torch as st
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads(f.metadata()["ctdn-train"])
        tensors = st.load_file(str(path))
    except Exception as exc:
        raise InputError(f"cannot resume from {path}: {exc}; delete it to start the stage over") from exc
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    scheduler.load_state_dict(info["scheduler"])
    if scaler is not None and info.get("scaler"):
        scaler.load_state_dict(info["scaler"])
    return info
