"""Training recipes as data: one dataclass, named presets, overridable from the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ctdn.errors import InputError

__all__ = ["Recipe", "RECIPES", "VARIANTS", "recipe"]


@dataclass
class Recipe:
    """Everything that decides a training run (saved in its checkpoints and logs).

    Stage lengths: ``*_steps`` when set, else ``*_epochs`` passes over the training pairs.
    ``finetune_steps`` > 0 adds stage 3: the distilled student's encoder and decoder trained
    together on (LDCT -> NDCT), starting from stage 2 (0: the pure teacher-student method).
    ``finetune_init="scratch"`` skips stages 1-2 and trains the same network from random weights
    for ``finetune_steps`` (the ablation that measures what distillation is worth).
    Data: ``data`` is ``"synthetic"``, ``"mayo:PATH"`` or ``"npy:PATH"``; ``synthetic`` holds the
    :class:`ctdn.datasets.SyntheticDataset` keywords used when it is synthetic.

    The study's variants (:data:`VARIANTS`) are changes of these fields. Anatomy priors, in the
    student (and fine-tune) stages' reconstruction loss only, so variants can share a teacher:
    ``tissue_weights`` weighs the L1 per pixel by the target's tissue class (air, lung, fat, soft
    tissue, bone; :func:`ctdn.hu.tissue_classes`); ``perceptual`` is the path of a ResNet-50
    weights file (e.g. RadImageNet's, which ctdn cannot ship) whose layers 1-3 feature MSE is added
    with weight ``lambda_perc``. ``teacher``: the path of a trained teacher to reuse instead of
    training stage 1 (it must have the model's encoder/decoder shapes).
    """

    model: str = "paper"
    model_changes: dict = field(default_factory=dict)
    data: str = "synthetic"
    synthetic: dict = field(
        default_factory=lambda: {
            "n_patients": 40,
            "slices_per_patient": 3,
            "vary": True,
            "target": "noiseless",
        }
    )
    val_synthetic: dict = field(
        default_factory=lambda: {
            "n_patients": 3,
            "slices_per_patient": 1,
            "vary": False,
            "target": "noiseless",
        }
    )
    mayo_dose: float = 0.25
    doses: tuple[float, ...] = (0.1, 0.25, 0.5, 0.7)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    patch: int = 128
    batch: int = 8
    lr: float = 2e-4
    weight_decay: float = 0.0
    teacher_epochs: int = 100
    student_epochs: int = 150
    teacher_steps: int | None = None
    student_steps: int | None = None
    warmup_steps: int = 0
    alpha_ssim: float = 0.2
    lambda_lat: float = 1.0
    lambda_rec: float = 1.0
    student_ssim: float = 0.0
    student_init: str = "fresh"
    finetune_steps: int = 0
    finetune_lr: float = 2e-4
    finetune_init: str = "student"
    lambda_grad: float = 0.0
    tissue_weights: tuple[float, ...] | None = None
    perceptual: str = ""
    lambda_perc: float = 0.0
    teacher: str = ""
    variant: str = ""
    seed: int = 0
    amp: bool = True
    ckpt_every: int = 500
    val_every: int = 500
    log_every: int = 20
    val_slices: int = 4

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise InputError(f"unknown recipe keys {bad}")
        r = cls(**d)
        r.doses, r.split = tuple(r.doses), tuple(r.split)
        if r.tissue_weights is not None:
            r.tissue_weights = tuple(float(w) for w in r.tissue_weights)
        return r


# The six-model study on this project's 2-core CPU (docs/study.md): 256x256 synthetic slices,
# the CPU-sized "study*" models, the same schedule for every variant.
_STUDY = Recipe(
    model="study",
    synthetic={
        "n_patients": 30,
        "slices_per_patient": 2,
        "size": 256,
        "vary": True,
        "target": "noiseless",
    },
    val_synthetic={
        "n_patients": 3,
        "slices_per_patient": 1,
        "size": 256,
        "vary": False,
        "target": "noiseless",
    },
    patch=96,
    lr=1e-3,
    warmup_steps=100,
    teacher_steps=1500,
    student_steps=1500,
    student_init="teacher",
    # Stage 3 too, so the study reports the published method (stage 2: the student is bounded
    # by the frozen decoder) and what the same network reaches fine-tuned end to end.
    finetune_steps=1500,
    finetune_lr=1e-3,
    ckpt_every=250,
    val_every=500,
    log_every=25,
    seed=2,
)


RECIPES: dict[str, Recipe] = {
    # The seed's schedule (100 + 150 epochs, batch 8, Adam 2e-4) on the seed's model.
    "paper": Recipe(),
    # The shipped default model: trained on this project's 2-core CPU from synthetic pairs.
    "edge": Recipe(
        model="edge",
        patch=128,
        lr=1e-3,
        teacher_steps=2000,
        student_steps=2000,
        finetune_steps=8000,
        finetune_lr=1e-3,
        warmup_steps=200,
        student_init="teacher",
        ckpt_every=250,
        val_every=500,
        log_every=25,
        seed=1,
    ),
    "study": _STUDY,
    # The priors and dose conditioning on the shipped NAFNet (skips, residual fine-tune) with the
    # study's data and schedule: only the variants without another encoder apply.
    "study-edge": Recipe.from_dict({**_STUDY.to_dict(), "model": "edge"}),
    # Tests: a few steps of the tiny model on a handful of small synthetic slices.
    "smoke": Recipe(
        model="tiny",
        synthetic={
            "n_patients": 2,
            "slices_per_patient": 1,
            "size": 64,
            "vary": False,
            "target": "noiseless",
            "kinds": ["head"],
        },
        val_synthetic={
            "n_patients": 1,
            "slices_per_patient": 1,
            "size": 64,
            "vary": False,
            "target": "noiseless",
            "kinds": ["head"],
        },
        doses=(0.1, 0.5),
        patch=32,
        batch=2,
        teacher_steps=3,
        student_steps=3,
        ckpt_every=2,
        val_every=3,
        log_every=1,
        val_slices=1,
    ),
}


# The study's six encoders as changes of a recipe: "arch" is appended to the recipe's model preset
# ("paper" -> "paper-resnet", "study" -> "study-resnet"); the rest are recipe fields.
VARIANTS: dict[str, dict] = {
    "baseline": {"arch": "conv"},  # the seed's conv autoencoder
    "nafnet": {},  # the seed's method as is
    # The built-in anatomy prior: soft tissue (where low-contrast lesions are) weighs 3x, air 0.2x.
    "nafnet-prior": {"tissue_weights": (0.2, 1.0, 1.0, 3.0, 1.0)},
    # The seed's RadImageNet prior: needs --set perceptual=PATH (a ResNet-50 weights file).
    "nafnet-radimagenet": {"lambda_perc": 0.1},
    "resnet": {"arch": "resnet"},
    "unet": {"arch": "unet"},
    "nafnet-nodose": {"model_changes": {"dose": False}},
}


def recipe(name: str, variant: str | None = None, **changes) -> Recipe:
    """A named recipe, as a study variant (see :data:`VARIANTS`), with fields changed."""
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    r = Recipe.from_dict(RECIPES[name].to_dict())
    if variant:
        if variant not in VARIANTS:
            raise InputError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        v = dict(VARIANTS[variant])
        if "arch" in v:
            from ctdn.models import PRESETS

            model = f"{r.model}-{v.pop('arch')}"
            if model not in PRESETS:
                raise InputError(
                    f"variant {variant!r} needs the model preset {model!r}, which does not exist: use "
                    f"a recipe whose model has one (paper, study)"
                )
            r.model = model
        for k, val in v.items():
            setattr(r, k, {**r.model_changes, **val} if k == "model_changes" else val)
        r.variant = variant
    for k, v in changes.items():
        if not hasattr(r, k):
            raise InputError(f"unknown recipe field {k!r}")
        setattr(r, k, v)
    return r
