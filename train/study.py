"""The six-encoder study in one command: train every variant, then evaluate them together.

``python -m ctdn.train.study --out runs/study --cache cache --report docs/study`` is the same as
running, one after the other (the NAFNet variants reuse the ``nafnet`` run's teacher)::

    ctdn-train --recipe study --variant nafnet --out runs/study/nafnet --cache cache
    ctdn-train --recipe study --variant nafnet-prior --out runs/study/nafnet-prior --cache cache \\
        --teacher runs/study/nafnet/teacher.safetensors
    ...
    ctdn-evaluate --model nafnet=runs/study/nafnet/student.safetensors \
        --model nafnet-ft=runs/study/nafnet/finetuned.safetensors ... --out docs/study

``--print`` shows exactly those commands instead of running them. Re-running resumes: finished
stages are not trained again.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from ctdn.errors import CTDNError, InputError

from .recipe import RECIPES, VARIANTS

__all__ = ["STUDY", "commands", "main"]

# Trained in this order; the NAFNet variants after the first reuse its teacher (same shapes, and
# the priors and dose conditioning only change the student stage).
STUDY = ("nafnet", "nafnet-prior", "nafnet-nodose", "baseline", "resnet", "unet")
_SHARES_NAFNET_TEACHER = {"nafnet-prior", "nafnet-nodose", "nafnet-radimagenet"}


def commands(
    out: str,
    *,
    base: str = "study",
    cache: str | None = None,
    report: str = "docs/study",
    variants=STUDY,
    perceptual: str | None = None,
    device: str | None = None,
    data: str | None = None,
    eval_args: tuple[str, ...] = (),
) -> list[list[str]]:
    """The ``ctdn-train`` and ``ctdn-evaluate`` argument lists of the study, in order."""
    variants = list(variants)
    if perceptual and "nafnet-radimagenet" not in variants:
        variants.append("nafnet-radimagenet")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise InputError(f"unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}")
    if "nafnet-radimagenet" in variants and not perceptual:
        raise InputError("the nafnet-radimagenet variant needs --perceptual PATH (a ResNet-50 weights file)")
    common = [*(["--cache", cache] if cache else []), *(["--device", device] if device else [])]
    common += ["--data", data] if data else []
    teacher = str(Path(out) / "nafnet" / "teacher.safetensors")
    cmds, models = [], []
    for v in variants:
        extra = []
        if v in _SHARES_NAFNET_TEACHER and "nafnet" in variants:
            extra += ["--teacher", teacher]
        if v == "nafnet-radimagenet":
            extra += ["--set", f"perceptual={perceptual}"]
        run = str(Path(out) / v)
        cmd = ["ctdn-train", "--recipe", base, "--variant", v, "--out", run, *common, "--quiet"]
        cmds.append(cmd + extra)
        models += ["--model", f"{v}={Path(run) / 'student.safetensors'}"]
        if RECIPES[base].finetune_steps > 0:
            models += ["--model", f"{v}-ft={Path(run) / 'finetuned.safetensors'}"]
    size = RECIPES[base].synthetic.get("size", 512)
    ev = ["ctdn-evaluate", *models, "--out", report, "--size", str(size)]
    if data:  # real data: the same patient split as training (the recipe's seed)
        ev += ["--data", data, "--seed", str(RECIPES[base].seed)]
    if "nafnet" in variants:  # the seed's NAFNet is what every other variant is compared with
        ev += ["--paired", "nafnet"]
        if RECIPES[base].finetune_steps > 0:
            ev += ["--paired", "nafnet-ft"]
    cmds.append(ev + (["--cache", cache] if cache else []) + list(eval_args))
    return cmds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctdn.train.study", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/study", help="folder of the training runs (one per variant)")
    p.add_argument("--recipe", default="study", choices=sorted(RECIPES), help="base recipe (study or paper)")
    p.add_argument("--cache", help="folder for cached simulated pairs")
    p.add_argument("--report", default="docs/study", help="folder for the ctdn-evaluate report")
    p.add_argument("--variants", nargs="*", default=list(STUDY), help=f"default: {' '.join(STUDY)}")
    p.add_argument("--perceptual", help="ResNet-50 weights file: also trains nafnet-radimagenet")
    p.add_argument("--device", help="training device (default: CUDA when present)")
    p.add_argument("--data", help="mayo:PATH or npy:PATH instead of the recipe's synthetic data")
    p.add_argument("--print", action="store_true", help="print the commands instead of running them")
    p.add_argument("eval_args", nargs=argparse.REMAINDER, help="after --: extra ctdn-evaluate arguments")
    a = p.parse_args(argv)
    extra = tuple(a.eval_args[1:] if a.eval_args[:1] == ["--"] else a.eval_args)
    try:
        cmds = commands(
            a.out,
            base=a.recipe,
            cache=a.cache,
            report=a.report,
            variants=a.variants,
            perceptual=a.perceptual,
            device=a.device,
            data=a.data,
            eval_args=extra,
        )
    except CTDNError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    if a.print:
        print("\n".join(shlex.join(c) for c in cmds))
        return 0
    from . import cli, evaluate

    for c in cmds:
        print("$", shlex.join(c), flush=True)
        t = time.perf_counter()
        rc = (cli.main if c[0] == "ctdn-train" else evaluate.main)(c[1:])
        if rc:
            print(f"study: stopped: {c[0]} exited with {rc}", file=sys.stderr)
            return rc
        print(f"study: {c[0]} took {time.perf_counter() - t:.0f} s", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
