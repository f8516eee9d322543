"""Organ ids of the fidelity phantoms: a finer map than the five tissue labels.

A phantom layer tagged with an organ name (``_Scene.paint(..., organ)``) gets that organ; an
untagged one gets the organ of its tissue label (air, lung, fat, soft tissue), bone split by HU
into trabecular (< 750 HU: marrow, diploe) and cortical bone (the phantoms draw 200-700 and
800-2000 HU). Metal is tagged "metal".
"""

from __future__ import annotations

from ..phantoms import AIR, BONE, FAT, LUNG, SOFT

__all__ = ["ORGANS", "organ_id", "layer_organs"]

ORGANS = (
    "air",
    "lung",
    "fat",
    "soft",  # soft tissue with no finer name: bowel, vessels, pancreas, scalp, sulci, ...
    "liver",
    "spleen",
    "kidney",
    "muscle",
    "heart",
    "grey",  # cortical grey matter
    "white",
    "deep_grey",  # basal ganglia and thalami
    "fluid",  # CSF, bile, urine
    "lung_vessel",
    "trabecular",
    "cortical",
    "metal",
)
_BY_LABEL = {AIR: "air", LUNG: "lung", FAT: "fat", SOFT: "soft"}
_TRABECULAR_BELOW_HU = 750.0


def organ_id(name: str) -> int:
    """The id of organ ``name`` (its index in ORGANS)."""
    return ORGANS.index(name)


def layer_organs(layers) -> list[int]:
    """The organ id of every layer of a phantom scene."""
    out = []
    for layer in layers:
        if layer.organ:
            name = layer.organ
        elif layer.label == BONE:
            name = "trabecular" if layer.hu < _TRABECULAR_BELOW_HU else "cortical"
        else:
            name = _BY_LABEL[layer.label]
        out.append(organ_id(name))
    return out
