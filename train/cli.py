"""``ctdn-train``: train a teacher and a distilled student from a named recipe."""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time

from ctdn.errors import CTDNError

from .recipe import RECIPES, VARIANTS, recipe


def _value(s: str):
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError):
        return s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="ctdn-train",
        description="Train the teacher autoencoder (stage 1) and the distilled student (stage 2). "
        "Re-running the same command resumes from the last checkpoint in --out. Several GPUs: "
        "torchrun --nproc_per_node N -m ctdn.train.cli ... (DDP; the recipe's batch is global).",
    )
    p.add_argument("--recipe", default="edge", choices=sorted(RECIPES), help="named recipe (default: edge)")
    p.add_argument(
        "--variant",
        choices=list(VARIANTS),
        help="one of the study's encoders/priors, as changes of the recipe (see docs/study.md)",
    )
    p.add_argument("--out", required=True, help="run folder: checkpoints, logs, TensorBoard, the student")
    p.add_argument(
        "--stage",
        default="all",
        choices=("all", "teacher", "student", "finetune"),
        help="run up to this stage (all: every stage the recipe has; earlier stages resume or are reused)",
    )
    p.add_argument("--data", help="'synthetic' (default of the recipe), 'mayo:PATH' or 'npy:PATH'")
    p.add_argument("--cache", help="folder for cached simulated pairs (synthetic data; reused across runs)")
    p.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present), cpu, cuda, cuda:1 ...; under torchrun cuda is cuda:LOCAL_RANK",
    )
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe fields")
    p.add_argument("--teacher", help="reuse this trained teacher (.safetensors) instead of training stage 1")
    p.add_argument("--export", help="also write the student to this .safetensors path")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    from .loop import train

    try:
        changes = {}
        for kv in a.set:
            k, sep, v = kv.partition("=")
            if not sep:
                raise CTDNError(f"--set takes KEY=VALUE, got {kv!r}")
            changes[k] = _value(v)
        if a.data:
            changes["data"] = a.data
        if a.teacher:
            changes["teacher"] = a.teacher
        r = recipe(a.recipe, a.variant, **changes)
        stages = {
            "all": ("teacher", "student", "finetune"),
            "teacher": ("teacher",),
            "student": ("teacher", "student"),
            "finetune": ("teacher", "student", "finetune"),
        }[a.stage]
        t = time.perf_counter()
        path = train(
            r, a.out, stages=stages, cache=a.cache, device=a.device, progress=not a.quiet, export=a.export
        )
    except CTDNError as exc:
        print(f"ctdn-train{_rank_tag()}: error: {exc}", file=sys.stderr)
        return 2
    if not _rank_tag():
        print(f"ctdn-train: wrote {path} in {time.perf_counter() - t:.0f} s")
    return 0


def _rank_tag() -> str:
    """' (rank N)' for the processes of a torchrun launch but its rank 0, which speaks for the run."""
    world, rank = os.environ.get("WORLD_SIZE", "1"), os.environ.get("RANK", "0")
    return "" if world in ("", "0", "1") or rank in ("", "0") else f" (rank {rank})"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
