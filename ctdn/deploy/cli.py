"""``ctdn-build-engine``: a TensorRT engine (or its ONNX inputs, or a Triton repository) from a ctdn model.

Every user error prints one line ``ctdn-build-engine: error: ...`` and exits with status 2 (no
traceback), including a machine without TensorRT, where ``--onnx-only`` and ``--triton-repo`` with
``--backend onnxruntime`` still work.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from ..errors import CTDNError, EngineError, InputError, MissingDependencyError

PROG = "ctdn-build-engine"
NO_TRT_HINT = "--onnx-only and --triton-repo with --backend onnxruntime work without it"

EPILOG = """\
examples:
  ctdn-build-engine edge                          # fp16 engine for this GPU, 1..16 x 512 x 512
  ctdn-build-engine edge --batch 1:8:32 --height 256:512:1024 --width 256:512:1024
  ctdn-build-engine runs/edge/student.safetensors --precision fp32 --shape 512x512
  ctdn-build-engine edge --onnx-only --out exports/edge.onnx      # no TensorRT needed
  ctdn-build-engine edge --triton-repo /srv/triton                 # engine + config.pbtxt
  ctdn-build-engine edge --triton-repo /srv/triton --backend onnxruntime   # no TensorRT needed

The engine's sidecar (<engine>.json) records the GPU, TensorRT version and profile; loaders refuse
an engine built elsewhere with the command that rebuilds it. See docs/deployment.md.
"""


def build_parser() -> argparse.ArgumentParser:
    from .onnx_precision import KEEP_FP32
    from .sidecar import HARDWARE, PRECISIONS
    from .tensorrt import DEFAULT_OPT_LEVEL, BuildOptions

    d = BuildOptions()
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Build a TensorRT engine for a ctdn model on this GPU, with a JSON sidecar, validated "
        "against the reference on a simulated phantom at doses 0.1, 0.25, 0.5 and 0.7.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        nargs="?",
        help="a shipped model name (e.g. edge), a .safetensors checkpoint, or an .onnx file from "
        "ctdn.export.to_onnx / `ctdn export` (required; or give it as --model)",
    )
    p.add_argument("--model", dest="model_opt", metavar="MODEL", help="the same as the positional MODEL")
    p.add_argument(
        "--out",
        type=Path,
        help="engine file to write (default: <engine dir>/<name>-<fingerprint>-tensorrt-<gpu>-<precision>"
        ".engine, where the tensorrt backend looks; engine dir is $CTDN_ENGINE_DIR or "
        "~/.cache/ctdn/engines). With --onnx-only: the .onnx file to write (default "
        "<engine dir>/<name>-<fingerprint>.onnx)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help=f"engine precision (default: {d.precision}); fp32 is IEEE fp32 (TF32 off), bf16 needs "
        "Ampere or newer",
    )
    p.add_argument(
        "--batch",
        default=":".join(map(str, d.batch)),
        metavar="MIN:OPT:MAX",
        help="batch sizes of the optimisation profile; TensorRT tunes for OPT "
        f"(default: {':'.join(map(str, d.batch))})",
    )
    p.add_argument(
        "--height",
        metavar="MIN:OPT:MAX",
        help="slice heights of the profile, multiples of the model's multiple (8 for edge) "
        f"(default: {':'.join(map(str, d.height))})",
    )
    p.add_argument(
        "--width",
        metavar="MIN:OPT:MAX",
        help=f"slice widths of the profile, likewise (default: {':'.join(map(str, d.width))})",
    )
    p.add_argument(
        "--shape",
        metavar="HxW",
        help="one fixed slice size instead of --height/--width, e.g. 512x512 (default: not set)",
    )
    p.add_argument(
        "--opt-level",
        type=int,
        default=DEFAULT_OPT_LEVEL,
        metavar="0-5",
        help=f"TensorRT builder optimisation level; higher builds longer (default: {DEFAULT_OPT_LEVEL}, "
        "TensorRT's own)",
    )
    p.add_argument(
        "--workspace",
        metavar="SIZE",
        help="workspace memory pool limit, e.g. 2G or 512M (default: TensorRT's, the GPU's memory)",
    )
    p.add_argument(
        "--timing-cache",
        default="auto",
        metavar="PATH|auto|none",
        help="TensorRT timing cache: auto keeps one per GPU and TensorRT version in <engine dir>/timing/ "
        "and reuses it across builds; none builds without one (default: auto)",
    )
    p.add_argument(
        "--hardware-compat",
        choices=HARDWARE,
        default=d.hardware_compat,
        help="build an engine that also runs on other GPUs: ampere_plus (any compute capability >= 8.0) "
        "or same_compute_capability; slower (default: none)",
    )
    p.add_argument(
        "--version-compat",
        action="store_true",
        help="build an engine that later TensorRT 10.x runtimes can load; slower (default: off)",
    )
    typed = p.add_mutually_exclusive_group()
    typed.add_argument(
        "--no-strongly-typed",
        dest="strongly_typed",
        action="store_false",
        default=None,
        help="fp16: use builder precision flags with LayerNorm pinned to fp32 instead of a strongly "
        "typed network built from an fp16 ONNX graph (default: strongly typed for fp32/fp16)",
    )
    typed.add_argument(
        "--strongly-typed",
        dest="strongly_typed",
        action="store_true",
        help="bf16: build strongly typed from a bf16 ONNX graph (opset 22) instead of builder flags "
        "(default: builder flags for bf16)",
    )
    p.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip the check against the reference (torch, or ONNX Runtime for an .onnx model) on a "
        "phantom at each dose (default: validate; a failing engine is removed)",
    )
    p.add_argument(
        "--onnx-only",
        action="store_true",
        help="write the fp32 ONNX export and its low-precision variant (fp16, or bf16 with --precision "
        "bf16) and stop; needs no TensorRT (default: off)",
    )
    p.add_argument(
        "--triton-repo",
        type=Path,
        metavar="DIR",
        help="also write a Triton Inference Server model repository there (config.pbtxt with dynamic "
        "batching, 1/model.plan or 1/model.onnx) (default: none)",
    )
    p.add_argument(
        "--backend",
        choices=("tensorrt", "onnxruntime"),
        default="tensorrt",
        help="what --triton-repo serves: the TensorRT engine, or the ONNX export on Triton's "
        "onnxruntime backend (no TensorRT needed here) (default: tensorrt)",
    )
    p.add_argument(
        "--triton-name",
        metavar="NAME",
        help="model name in the Triton repository (default: the ctdn model's name)",
    )
    p.add_argument(
        "--device", type=int, default=0, metavar="N", help="CUDA device index to build on (default: 0)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing --onnx-only files or a Triton model version (default: refuse; an engine "
        "is always replaced, atomically, so the rebuild command in its sidecar works as printed)",
    )
    p.add_argument(
        "--quiet", "-q", action="store_true", help="print only errors (default: progress and a summary)"
    )
    p.set_defaults(keep_fp32=KEEP_FP32)
    return p


def _options(args):
    from .tensorrt import BuildOptions, parse_range, parse_workspace

    if args.shape and (args.height or args.width):
        raise InputError("--shape sets both height and width: use either --shape or --height/--width")
    d = BuildOptions()
    height, width = args.height or d.height, args.width or d.width
    if args.shape:
        parts = args.shape.lower().split("x")
        if len(parts) != 2:
            raise InputError(f"--shape must be HxW, e.g. 512x512, got {args.shape!r}")
        height, width = parse_range(parts[0], "--shape height"), parse_range(parts[1], "--shape width")
    tc = {"auto": "auto", "none": None}.get(args.timing_cache, args.timing_cache)
    return BuildOptions(
        precision=args.precision,
        strongly_typed=args.strongly_typed,
        batch=parse_range(args.batch, "--batch"),
        height=parse_range(height, "--height") if isinstance(height, str) else height,
        width=parse_range(width, "--width") if isinstance(width, str) else width,
        opt_level=args.opt_level,
        workspace=parse_workspace(args.workspace) if args.workspace else None,
        timing_cache=tc if tc in (None, "auto") else Path(tc),
        hardware_compat=args.hardware_compat,
        version_compat=args.version_compat,
        validate=args.validate,
    )


class _Say:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)


def _load(model_arg: str):
    """(CTDenoiser or None, path of an fp32 ctdn ONNX export or None) for the model argument."""
    from ..models import load_model

    if model_arg.endswith(".onnx"):
        path = Path(model_arg)
        if not path.is_file():
            raise InputError(f"ONNX file not found: {path}")
        return None, path
    return load_model(model_arg), None


def _export(model, onnx_path, dest: Path) -> Path:
    """The fp32 ONNX at ``dest`` (exported from ``model``, or copied from ``onnx_path``)."""
    import shutil

    from ..export import to_onnx

    if onnx_path is not None:
        if Path(onnx_path).resolve() != dest.resolve():
            shutil.copyfile(onnx_path, dest)
        return dest
    return to_onnx(model, dest)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass --overwrite to replace it")


def _onnx_only(args, options, onnx_path: Path, meta: dict, say) -> int:
    from ..export import engine_dir
    from .onnx_precision import convert_file, precision_of

    low = "bf16" if options.precision == "bf16" else "fp16"
    out = args.out or engine_dir() / f"{meta['name']}-{meta['fingerprint']}.onnx"
    if out.suffix != ".onnx":
        raise InputError(f"--out must end in .onnx with --onnx-only, got {out.name}")
    low_out = out.with_name(f"{out.stem}.{low}.onnx")
    for p in (out, low_out):
        _refuse_existing(p, args.overwrite)
    import onnx

    have = precision_of(onnx.load(str(onnx_path), load_external_data=False))
    if have != "fp32":
        raise InputError(f"{onnx_path} is already a {have} graph; pass the fp32 export")
    out.parent.mkdir(parents=True, exist_ok=True)
    _export(None, onnx_path, out)
    convert_file(out, low_out, low)
    say(
        f"{PROG}: wrote {out} (fp32) and {low_out} ({low}; LayerNormalization, GlobalAveragePool "
        "and the dose MLP in fp32)"
    )
    if args.triton_repo:
        return _triton(args, out, say)
    return 0


def _triton(args, model_file: Path, say) -> int:
    from .triton_server import write_repository

    d = write_repository(args.triton_repo, model_file, name=args.triton_name, overwrite=args.overwrite)
    say(
        f"{PROG}: Triton model repository entry {d} "
        f"(config.pbtxt, 1/{'model.onnx' if model_file.suffix == '.onnx' else 'model.plan'})"
    )
    return 0


def _validate(args, options, model, onnx_path: Path, engine: Path, meta: dict, say) -> None:
    import torch

    from ..backends import ieee_fp32
    from .tensorrt import TensorRTRunner
    from .validate import OrtRunner, make_cases, summary, validate

    dev = torch.device("cuda", args.device)
    runner = TensorRTRunner(engine, dev)
    if model is not None:
        from ..backends.pytorch import Runner

        reference, ref_name = Runner(model, dev, "fp32"), "torch fp32"
    else:
        reference, ref_name = OrtRunner(onnx_path, dev), "ONNX Runtime fp32"
    h, w = options.height[1], options.width[1]
    say(f"{PROG}: validating against {ref_name} on a simulated {h}x{w} abdomen phantom ...")
    cases = make_cases((h, w), device=dev)
    try:
        with ieee_fp32():  # the torch reference in IEEE fp32 (cuDNN's default is TF32 convolutions)
            report = validate(
                runner,
                reference,
                hu_window=meta["hu_window"],
                multiple=meta["multiple"],
                precision=options.precision,
                cases=cases,
                batch=min(4, options.batch[2]),
            )
    except CTDNError as exc:
        for p in (engine, engine.with_name(engine.name + ".json")):
            p.unlink(missing_ok=True)
        raise EngineError(
            f"{exc}\n{engine} and its sidecar were removed (--no-validate keeps an engine)"
        ) from exc
    say(summary(report))


def run(args) -> int:
    from ..export import onnx_meta
    from .tensorrt import build_engine, import_tensorrt

    say = _Say(args.quiet)
    if (args.model is None) == (args.model_opt is None):
        raise InputError("give the model once: ctdn-build-engine MODEL ... (or --model MODEL)")
    args.model = args.model or args.model_opt
    options = _options(args).checked()  # option errors first, before TensorRT or the model
    needs_trt = not args.onnx_only and not (args.triton_repo and args.backend == "onnxruntime")
    if args.backend == "onnxruntime" and not args.triton_repo and not args.onnx_only:
        raise InputError("--backend onnxruntime only applies to --triton-repo (ONNX Runtime needs no engine)")
    trt = import_tensorrt() if needs_trt else None  # fails first, in one line, before any export
    model, onnx_path = _load(args.model)
    with tempfile.TemporaryDirectory(prefix="ctdn-build-") as tmp:
        if onnx_path is None:
            say(f"{PROG}: exporting {args.model} to ONNX ...")
            onnx_path = _export(model, None, Path(tmp) / "model.onnx")
        meta = onnx_meta(onnx_path)
        options = options.checked(meta["multiple"])
        if args.onnx_only:
            return _onnx_only(args, options, onnx_path, meta, say)
        if not needs_trt:
            return _triton(args, onnx_path, say)
        say(
            f"{PROG}: building a {options.precision} engine with TensorRT "
            f"{getattr(trt, '__version__', '')} (minutes) ..."
        )
        engine = build_engine(onnx_path, args.out, options, device=args.device, model_arg=args.model, trt=trt)
        say(f"{PROG}: wrote {engine} and {engine.name}.json")
        if options.validate:
            _validate(args, options, model, onnx_path, engine, meta, say)
    if args.triton_repo:
        return _triton(args, engine, say)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # TensorRT's and ctdn's warnings reach the terminal; progress comes from the command's own lines.
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="%(message)s")
    try:
        return run(args)
    except MissingDependencyError as exc:
        msg = str(exc)
        if msg.startswith("TensorRT is not installed"):
            msg = f"{msg}; {NO_TRT_HINT}"
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except CTDNError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
