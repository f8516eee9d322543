"""Models: the reference NAFBlock, the NAFNet encoder/decoder, the teacher and the student.

- :class:`NAFBlock`, :class:`LayerNorm2d` — reference layers (``ctdn.kernels`` is tested against them).
- :class:`ModelConfig`, :data:`PRESETS` — configuration as data (``paper``, ``edge``, ``tiny``, the
  study's ``paper-conv``/``paper-resnet``/``paper-unet`` and their CPU-sized ``study*`` versions).
- :class:`Autoencoder` (teacher) and :class:`CTDenoiser` (student encoder + shared decoder).
- :func:`build`, :func:`load_model`, :func:`save_model` — construction and safetensors checkpoints.
"""

from .checkpoint import load_model, model_path, save_model
from .config import PRESETS, ModelConfig, preset
from .layers import ConvBlock, DoseEmbedding, DoseFiLM, LayerNorm2d, NAFBlock, ResBlock, SimpleGate
from .macs import count_macs
from .nafnet import BLOCKS, Autoencoder, CondBlock, CTDenoiser, Decoder, Encoder

__all__ = [
    "NAFBlock",
    "ResBlock",
    "ConvBlock",
    "BLOCKS",
    "LayerNorm2d",
    "SimpleGate",
    "DoseEmbedding",
    "DoseFiLM",
    "CondBlock",
    "Encoder",
    "Decoder",
    "Autoencoder",
    "CTDenoiser",
    "ModelConfig",
    "PRESETS",
    "preset",
    "build",
    "count_macs",
    "load_model",
    "save_model",
    "model_path",
]


def build(config: ModelConfig | str = "edge", **changes) -> CTDenoiser:
    """A freshly initialised student model from a config or a preset name."""
    cfg = preset(config, **changes) if isinstance(config, str) else config.replace(**changes)
    return CTDenoiser(cfg)
