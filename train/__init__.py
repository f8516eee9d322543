"""Teacher and student training (installed as ``ctdn.train``; command ``ctdn-train``).

- :mod:`ctdn.train.recipe` — recipes as data (``paper``, ``edge``, ``smoke``).
- :mod:`ctdn.train.data` — pairs in memory and seeded patch batches (exact resume).
- :mod:`ctdn.train.losses` — SSIM, gradient and layer-wise feature-distillation losses.
- :mod:`ctdn.train.loop` — the two stages, checkpoints, validation, TensorBoard.
"""

from .recipe import RECIPES, Recipe, recipe

__all__ = ["Recipe", "RECIPES", "recipe", "train"]


def train(*args, **kwargs):
    """See :func:`ctdn.train.loop.train`."""
    from .loop import train as _train

    return _train(*args, **kwargs)
