"""Build TensorRT engines from ctdn's ONNX export (TensorRT 10 Python API), in the style of Polygraphy.

Everything that does not need TensorRT is plain Python and tested on any machine:
:class:`BuildOptions` (checked options), :func:`plan_build` (what to ask TensorRT for), the timing
cache path, the rebuild command and the sidecar. :func:`run_builder` is the thin part: it makes the
TensorRT calls in the order the documentation gives, importing ``tensorrt`` only then, and copes
with a TensorRT that lacks a feature the way Polygraphy's ``CreateConfig`` does (``getattr`` on the
enum; a feature the user asked for fails with a message naming it, a default one is skipped with a
warning).

The TensorRT calls follow the TensorRT 10 Python API reference (docs.nvidia.com/deeplearning/tensorrt/
latest/_static/python-api/..., pages named in the comments) and were checked against the bindings'
source, NVIDIA/TensorRT python/src/infer/pyCore.cpp and python/src/parsers/pyOnnx.cpp (release/10.16).

fp16 is built as a *strongly typed* network by default: the ONNX graph carries the types
(:mod:`ctdn.deploy.onnx_precision`: fp16 image path, LayerNormalization, global pooling and the dose
MLP in fp32), so TensorRT cannot move the normalisation to fp16, where NAFNet's LayerNorm overflows.
``strongly_typed=False`` uses the older route (precision builder flags, with the LayerNorm layers
pinned to fp32 by precision constraints; deprecated since TensorRT 10.12). bf16 takes that route by
default (ONNX allows bf16 convolutions only from opset 22, past the parser's documented range).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._atomic import atomic_path
from ..errors import EngineError, InputError, MissingDependencyError
from . import timing_cache as tc
from .onnx_precision import KEEP_FP32
from .sidecar import HARDWARE, PRECISIONS, Environment, device_slug, make_sidecar, probe, write_sidecar
from .timing_cache import timing_cache_path

__all__ = [
    "BuildOptions",
    "BuildPlan",
    "import_tensorrt",
    "plan_build",
    "run_builder",
    "build_engine",
    "timing_cache_path",
    "rebuild_command",
    "parse_range",
    "TensorRTRunner",
]

log = logging.getLogger("ctdn")

OPT_LEVELS = range(0, 6)  # IBuilderConfig.builder_optimization_level: 0..5, TensorRT's default 3
DEFAULT_OPT_LEVEL = 3
_HW_ENUM = {"ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
INSTALL_HINT = (
    "install TensorRT 10 on the GPU machine that will run the engine (pip install tensorrt, or "
    "NVIDIA's packages)"
)


def import_tensorrt():
    """The ``tensorrt`` module, or MissingDependencyError saying what to do."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - heavy and optional
    except ImportError as exc:
        raise MissingDependencyError(f"TensorRT is not installed: {INSTALL_HINT}") from exc
    return trt


def parse_range(text: str, name: str) -> tuple[int, int, int]:
    """``"1:4:16"`` -> (1, 4, 16); ``"512"`` -> (512, 512, 512); ``"256:512"`` -> (256, 512, 512)."""
    parts = str(text).split(":")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"{name} must be MIN:OPT:MAX integers (or one integer), got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 3
    elif len(vals) == 2:
        vals = [vals[0], vals[1], vals[1]]
    elif len(vals) != 3:
        raise InputError(f"{name} must be MIN:OPT:MAX integers (or one integer), got {text!r}")
    return tuple(vals)  # type: ignore[return-value]


def _triple(value, name: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        value = parse_range(value, name)
    elif isinstance(value, int) and not isinstance(value, bool):
        value = (value, value, value)  # one fixed size
    if not (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise InputError(f"{name} must be (min, opt, max) integers, got {value!r}")
    lo, opt, hi = value
    if lo < 1:
        raise InputError(f"{name} min must be at least 1, got {lo}")
    if not lo <= opt <= hi:
        raise InputError(f"{name} must satisfy min <= opt <= max, got {lo}:{opt}:{hi}")
    return (lo, opt, hi)


@dataclass(frozen=True)
class BuildOptions:
    """How to build an engine; :meth:`checked` validates every field (InputError naming it).

    - ``precision``: fp32 (IEEE, TF32 off), fp16 (default) or bf16 (Ampere and newer).
    - ``strongly_typed``: None (default) means yes for fp32/fp16, no for bf16 (see the module doc).
    - ``batch``, ``height``, ``width``: the optimisation profile, (min, opt, max) (or one integer,
      or ``"MIN:OPT:MAX"``); sizes must be
      multiples of the model's ``multiple``. Narrow by default (1..16 x 512 x 512, opt batch 4):
      TensorRT picks kernels for ``opt`` and a narrow range keeps them fast.
    - ``opt_level``: builder optimisation level 0..5 (TensorRT's default 3; 5 builds slowest).
    - ``workspace``: workspace memory pool limit in bytes (None: TensorRT's default, the device's).
    - ``timing_cache``: ``"auto"`` (``<engine_dir>/timing/<gpu>-trt<version>.cache``, reused by every
      build on the same GPU and TensorRT), a path, or None for none. A cache file that fails its
      checks (:mod:`ctdn.deploy.timing_cache`) is ignored with a warning and replaced.
    - ``hardware_compat``: none | ampere_plus | same_compute_capability; ``version_compat``: engines
      that later TensorRT 10.x runtimes can load (slower; both are TensorRT builder settings).
    - ``validate``: compare the engine with the reference on a phantom after building.
    - ``fp32_ops``: ONNX ops kept in fp32 in low-precision graphs (and pinned on the flag route).
    """

    precision: str = "fp16"
    strongly_typed: bool | None = None
    batch: tuple[int, int, int] = (1, 4, 16)
    height: tuple[int, int, int] = (512, 512, 512)
    width: tuple[int, int, int] = (512, 512, 512)
    opt_level: int = DEFAULT_OPT_LEVEL
    workspace: int | None = None
    timing_cache: str | Path | None = "auto"
    hardware_compat: str = "none"
    version_compat: bool = False
    validate: bool = True
    fp32_ops: tuple[str, ...] = field(default=KEEP_FP32)

    @property
    def typed(self) -> bool:
        """Whether the network is built strongly typed (the default resolved)."""
        return self.precision != "bf16" if self.strongly_typed is None else bool(self.strongly_typed)

    def checked(self, multiple: int | None = None) -> BuildOptions:
        """A validated copy (tuples normalised); ``multiple``: the model's, which sizes must divide by."""
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.strongly_typed not in (None, True, False):
            raise InputError(f"strongly_typed must be True, False or None, got {self.strongly_typed!r}")
        batch = _triple(self.batch, "batch")
        height = _triple(self.height, "height")
        width = _triple(self.width, "width")
        if multiple is not None:
            for name, vals in (("height", height), ("width", width)):
                bad = [v for v in vals if v % multiple]
                if bad:
                    raise InputError(
                        f"{name} {':'.join(map(str, vals))} must be multiples of the model's multiple "
                        f"({multiple}); e.g. {bad[0] // multiple * multiple or multiple} or "
                        f"{-(-bad[0] // multiple) * multiple} instead of {bad[0]}"
                    )
        if (
            not isinstance(self.opt_level, int)
            or isinstance(self.opt_level, bool)
            or self.opt_level not in OPT_LEVELS
        ):
            raise InputError(
                f"opt_level must be an integer 0..5 (TensorRT's default 3), got {self.opt_level!r}"
            )
        if self.workspace is not None and not (
            isinstance(self.workspace, int) and not isinstance(self.workspace, bool) and self.workspace > 0
        ):
            raise InputError(
                f"workspace must be a positive number of bytes (or None), got {self.workspace!r}"
            )
        if self.hardware_compat not in HARDWARE:
            raise InputError(
                f"hardware_compat must be one of {', '.join(HARDWARE)}, got {self.hardware_compat!r}"
            )
        if not isinstance(self.version_compat, bool):
            raise InputError(f"version_compat must be True or False, got {self.version_compat!r}")
        if not isinstance(self.validate, bool):
            raise InputError(f"validate must be True or False, got {self.validate!r}")
        tc = self.timing_cache
        if tc is not None and not isinstance(tc, (str, Path)):
            raise InputError(f"timing_cache must be 'auto', a path or None, got {tc!r}")
        return dataclasses.replace(
            self, batch=batch, height=height, width=width, fp32_ops=tuple(self.fp32_ops)
        )

    def shapes(self) -> dict:
        """The profile as the sidecar records it."""
        return {"batch": list(self.batch), "height": list(self.height), "width": list(self.width)}


def parse_workspace(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1073741824"`` -> bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in units else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        raise InputError(f"workspace must be bytes like 4G, 512M or 1073741824, got {text!r}") from None
    if not value > 0:
        raise InputError(f"workspace must be positive, got {text!r}")
    return int(value * units[unit])


def rebuild_command(model: str, options: BuildOptions, out) -> str:
    """The ``ctdn-build-engine`` command line that rebuilds an engine with ``options`` at ``out``."""
    o = options
    args = ["ctdn-build-engine", str(model), "--precision", o.precision]
    args += ["--batch", ":".join(map(str, o.batch))]
    args += ["--height", ":".join(map(str, o.height)), "--width", ":".join(map(str, o.width))]
    if o.opt_level != DEFAULT_OPT_LEVEL:
        args += ["--opt-level", str(o.opt_level)]
    if o.workspace is not None:
        args += ["--workspace", str(o.workspace)]
    if o.strongly_typed is False and o.precision != "bf16":
        args.append("--no-strongly-typed")
    if o.strongly_typed is True and o.precision == "bf16":
        args.append("--strongly-typed")
    if o.hardware_compat != "none":
        args += ["--hardware-compat", o.hardware_compat]
    if o.version_compat:
        args.append("--version-compat")
    args += ["--out", str(out)]
    return shlex.join(args)


@dataclass(frozen=True)
class BuildPlan:
    """Everything :func:`run_builder` asks TensorRT for, decided without TensorRT."""

    onnx_path: Path
    strongly_typed: bool
    set_flags: tuple[str, ...]  # trt.BuilderFlag names to set
    clear_flags: tuple[str, ...]  # ... and to clear
    pin_fp32: tuple[str, ...]  # weakly typed low precision: layer types to pin to fp32
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    opt_level: int
    opt_level_required: bool  # asked for explicitly (fail if this TensorRT cannot set it)
    workspace: int | None
    timing_cache: Path | None
    hardware: str | None  # trt.HardwareCompatibilityLevel name, None for none
    timing_cache_for: dict | None = None  # the TensorRT and GPU the cache file must belong to


def plan_build(
    onnx_path, options: BuildOptions, timing_cache: Path | None = None, cache_for: dict | None = None
) -> BuildPlan:
    """The TensorRT requests for ``options`` (checked) on the ONNX file ``onnx_path``.

    ``cache_for``: :func:`ctdn.deploy.timing_cache.identity` of this machine, which the timing cache
    file must match to be used."""
    o = options
    set_flags: list[str] = []
    clear_flags: list[str] = []
    pin: tuple[str, ...] = ()
    if o.precision == "fp32":
        clear_flags.append("TF32")  # fp32 means IEEE fp32; TF32 (on by default) rounds conv inputs
    elif not o.typed:
        set_flags.append({"fp16": "FP16", "bf16": "BF16"}[o.precision])
        set_flags.append("OBEY_PRECISION_CONSTRAINTS")
        pin = ("NORMALIZATION",) if "LayerNormalization" in o.fp32_ops else ()
    if o.version_compat:
        set_flags.append("VERSION_COMPATIBLE")
    b, h, w = o.batch, o.height, o.width
    profile = {
        "x": tuple((b[i], 1, h[i], w[i]) for i in range(3)),
        "dose": tuple((b[i],) for i in range(3)),
    }
    return BuildPlan(
        onnx_path=Path(onnx_path),
        strongly_typed=o.typed,
        set_flags=tuple(set_flags),
        clear_flags=tuple(clear_flags),
        pin_fp32=pin,
        profile=profile,  # type: ignore[arg-type]
        opt_level=o.opt_level,
        opt_level_required=o.opt_level != DEFAULT_OPT_LEVEL,
        workspace=o.workspace,
        timing_cache=timing_cache,
        hardware=_HW_ENUM.get(o.hardware_compat),
        timing_cache_for=cache_for,
    )


def _version(trt) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def _missing(trt, feature: str, hint: str = "") -> EngineError:
    return EngineError(
        f"TensorRT {_version(trt)} has no {feature}{'; ' + hint if hint else ''} (ctdn-build-engine targets "
        "TensorRT 10)"
    )


def _flag(trt, name: str):
    flag = getattr(getattr(trt, "BuilderFlag", None), name, None)
    if flag is None:
        hints = {
            "FP16": "weak typing is gone from this TensorRT: build strongly typed (drop --no-strongly-typed)",
            "BF16": "build fp16 instead (--precision fp16)",
            "VERSION_COMPATIBLE": "drop --version-compat",
        }
        raise _missing(trt, f"BuilderFlag.{name}", hints.get(name, ""))
    return flag


def run_builder(trt, plan: BuildPlan) -> bytes:
    """Build the serialized engine (the plan) with TensorRT module ``trt``; EngineError on failure."""
    # Builder and network: Python API "Core/Builder" (tensorrt.Builder, NetworkDefinitionCreationFlag,
    # create_network(flags) with 1 << int(flag)).
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed:
        typed = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
        if typed is None:
            raise _missing(
                trt, "strongly typed networks", "pass --no-strongly-typed (the builder-flag route)"
            )
        flags |= 1 << int(typed)
    network = builder.create_network(flags)
    if network is None:
        raise EngineError("TensorRT could not create a network definition (see its log above)")

    # ONNX parser: "Parsers/Onnx/pyOnnx" (OnnxParser(network, logger), parse_from_file keeps the
    # file's folder for external weights, num_errors / get_error(i)).
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(plan.onnx_path))
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    if not ok or errors:
        detail = "; ".join(errors) or "no parser error recorded"
        raise EngineError(f"TensorRT's ONNX parser rejected {plan.onnx_path.name}: {detail}")

    if plan.pin_fp32:
        # Weak typing: keep LayerNorm in fp32 (ILayer.precision / set_output_type with
        # OBEY_PRECISION_CONSTRAINTS; "Graph/Layers" page; deprecated in 10.12 for strong typing).
        kinds = [getattr(trt.LayerType, t) for t in plan.pin_fp32 if hasattr(trt.LayerType, t)]
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type in kinds:
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)

    # Builder configuration: "Core/BuilderConfig" (IBuilderConfig).
    config = builder.create_builder_config()
    for name in plan.set_flags:
        config.set_flag(_flag(trt, name))
    for name in plan.clear_flags:
        flag = getattr(getattr(trt, "BuilderFlag", None), name, None)
        if flag is not None:  # nothing to clear on a TensorRT without it
            config.clear_flag(flag)

    # Optimization profile: "Core/OptimizationProfile" (set_shape(input, min, opt, max)).
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in plan.profile.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)

    if plan.workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace)
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = plan.opt_level
    elif plan.opt_level_required:
        raise _missing(trt, "builder_optimization_level", "drop --opt-level")
    else:
        log.warning("ctdn: TensorRT %s has no builder optimization level; using its default", _version(trt))
    if plan.hardware is not None:
        level = getattr(getattr(trt, "HardwareCompatibilityLevel", None), plan.hardware, None)
        if level is None or not hasattr(config, "hardware_compatibility_level"):
            raise _missing(trt, f"hardware compatibility level {plan.hardware}", "drop --hardware-compat")
        config.hardware_compatibility_level = level

    # Timing cache: "Optimizing Builder Performance" (create_timing_cache(blob), set_timing_cache(cache,
    # ignore_mismatch), get_timing_cache(), ITimingCache.combine / serialize); as Polygraphy does.
    cache = None
    if plan.timing_cache is not None:
        if not hasattr(config, "create_timing_cache"):
            log.warning("ctdn: TensorRT %s has no timing cache API; building without one", _version(trt))
        else:
            cache = config.create_timing_cache(tc.load(plan.timing_cache, plan.timing_cache_for))
            if cache is None:  # a corrupt or foreign file
                log.warning("ctdn: timing cache %s is unusable; starting an empty one", plan.timing_cache)
                cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)

    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise EngineError(
            "TensorRT could not build the engine (build_serialized_network returned None; its log above "
            "says why: often the workspace limit or an unsupported precision on this GPU)"
        )

    if cache is not None:
        tc.save(config, plan.timing_cache, plan.timing_cache_for)
    return bytes(memoryview(engine))


@contextlib.contextmanager
def network_onnx(onnx_path, options: BuildOptions) -> Iterator[Path]:
    """The ONNX file TensorRT should parse: ``onnx_path`` itself, or its fp16/bf16 graph (a temporary file)
    when the network is strongly typed in low precision and the file is the fp32 export."""
    import onnx

    from .onnx_precision import convert, precision_of

    onnx_path = Path(onnx_path)
    proto = onnx.load(str(onnx_path), load_external_data=False)
    have = precision_of(proto)
    want = options.precision if options.typed else "fp32"
    if have == want:
        yield onnx_path
        return
    if have != "fp32":
        raise InputError(
            f"{onnx_path.name} is a {have} graph; a {options.precision} "
            f"{'strongly typed' if options.typed else 'builder-flag'} build needs the fp32 export"
        )
    proto = onnx.load(str(onnx_path))
    with tempfile.TemporaryDirectory(prefix="ctdn-trt-") as tmp:
        path = Path(tmp) / f"{onnx_path.stem}.{want}.onnx"
        onnx.save(convert(proto, want, keep_fp32=options.fp32_ops), str(path))
        yield path


def check_io(onnx_path) -> None:
    """The graph has the ctdn contract's inputs x, dose and output y (float32)."""
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    ins = [i.name for i in g.input if i.name not in {t.name for t in g.initializer}]
    outs = [o.name for o in g.output]
    if ins != ["x", "dose"] or outs != ["y"]:
        raise InputError(
            f"{Path(onnx_path).name} has inputs {ins} and outputs {outs}; ctdn engines need inputs "
            "['x', 'dose'] and output ['y'] (export it with ctdn.export.to_onnx)"
        )


def build_engine(
    onnx_path,
    out_path=None,
    options: BuildOptions | None = None,
    *,
    device=0,
    model_arg: str | None = None,
    env: Environment | None = None,
    trt=None,
) -> Path:
    """Build a TensorRT engine from a ctdn ONNX export and write it (atomically) with its sidecar.

    ``out_path``: default :func:`ctdn.export.engine_path` for this model, GPU and precision.
    ``model_arg``: what the rebuild command names (default the ONNX path). ``env`` / ``trt``: this
    machine and the tensorrt module (default: probed and imported; tests pass fakes).
    Validation against a reference is the caller's step (:mod:`ctdn.deploy.validate`; the CLI does it).
    """
    from ..export import engine_path, onnx_meta

    meta = onnx_meta(onnx_path)
    options = (options or BuildOptions()).checked(meta["multiple"])
    check_io(onnx_path)
    trt = trt or import_tensorrt()
    env = env or probe(device)
    env = env.replace(tensorrt=_version(trt))
    if env.compute_capability is None:
        raise EngineError("building a TensorRT engine needs a CUDA GPU, and none is visible here")
    if out_path is None:
        out_path = engine_path(
            meta["name"], meta["fingerprint"], "tensorrt", device_slug("cuda", env), options.precision
        )
    out_path = Path(out_path)
    if options.timing_cache == "auto":
        cache = timing_cache_path(env)
    else:
        cache = None if options.timing_cache is None else Path(options.timing_cache)
    if options.strongly_typed is None and options.typed:
        if getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None) is None:
            log.warning(
                "ctdn: TensorRT %s has no strongly typed networks; building %s with builder flags",
                _version(trt), options.precision,
            )  # fmt: skip
            options = dataclasses.replace(options, strongly_typed=False)
    rebuild = rebuild_command(model_arg or str(onnx_path), options, out_path)
    with network_onnx(onnx_path, options) as net_path:
        plan = plan_build(net_path, options, cache, tc.identity(env))
        log.info(
            "ctdn: building %s (%s, TensorRT %s on %s)",
            out_path.name,
            options.precision,
            env.tensorrt,
            env.gpu_name,
        )
        blob = run_builder(trt, plan)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(blob)
    sidecar = make_sidecar(
        kind="tensorrt",
        model=meta,
        shapes=options.shapes(),
        precision=options.precision,
        device=f"cuda:{device}" if isinstance(device, int) else device,
        rebuild=rebuild,
        compatibility={"hardware": options.hardware_compat, "version_compatible": options.version_compat},
        env=env,
    )
    write_sidecar(out_path, sidecar)
    return out_path


class TensorRTRunner:
    """A built engine as a ctdn backend Runner (x, dose -> y, numpy), for validation after a build.

    Checks the sidecar first; buffers are torch CUDA tensors. Follows "Core/Runtime", "Core/Engine" and
    "Core/ExecutionContext" (deserialize_cuda_engine, create_execution_context, set_input_shape,
    set_tensor_address, execute_async_v3). Batches larger than the profile's max are split.
    """

    def __init__(self, path, device="cuda", *, check: bool = True, trt=None) -> None:
        import torch

        from .sidecar import check_sidecar

        self.sidecar = check_sidecar(path, kind="tensorrt", device=device, check=check)
        trt = trt or import_tensorrt()
        self.device = torch.device(device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if self.sidecar["compatibility"].get("version_compatible"):
            # A version-compatible plan embeds TensorRT's lean runtime (host code): trust our own file.
            self.runtime.engine_host_code_allowed = True
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialize {path}; rebuild it: {self.sidecar['rebuild']}")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        self.max_batch = self.sidecar["shapes"]["batch"][2]

    def _check_size(self, h: int, w: int) -> None:
        sh = self.sidecar["shapes"]
        for name, v in (("height", h), ("width", w)):
            lo, _, hi = sh[name]
            if not lo <= v <= hi:
                raise InputError(
                    f"{name} {v} is outside this engine's profile ({lo}..{hi}); rebuild with a wider "
                    f"--{name} or use the onnxruntime/torch backend"
                )

    def __call__(self, x, dose):
        import numpy as np
        import torch

        n, _, h, w = x.shape
        self._check_size(h, w)
        out = np.empty_like(x, dtype=np.float32)
        with torch.cuda.stream(self.stream):
            for s in range(0, n, self.max_batch):
                xs = torch.from_numpy(np.ascontiguousarray(x[s : s + self.max_batch], np.float32)).to(
                    self.device
                )
                ds = torch.from_numpy(np.ascontiguousarray(dose[s : s + self.max_batch], np.float32)).to(
                    self.device
                )
                ys = torch.empty_like(xs)
                self.context.set_input_shape("x", tuple(xs.shape))
                self.context.set_input_shape("dose", tuple(ds.shape))
                for name, t in (("x", xs), ("dose", ds), ("y", ys)):
                    self.context.set_tensor_address(name, t.data_ptr())
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise EngineError("TensorRT failed to run the engine (execute_async_v3 returned False)")
                self.stream.synchronize()
                out[s : s + len(xs)] = ys.cpu().numpy()
        return out
