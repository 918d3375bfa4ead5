"""The recipe table: the paper's settings (SPEC.md 4 and 7) with a `tiny` preset each, and the
Fashion-MNIST miniature that the demo and the study run.

The paper's three share ImageNet-1k at 224x224, global batch 512, AdamW lr 5e-4 x batch/512,
wd 0.05, soft KD (alpha 0.9, tau 1) + the spectral loss, EMA 0.99996 per step (the
`RunConfig` defaults). What differs is below.
"""

import os

from keras_spectralkd.analysis.selection import DEIT_FROM_CAIT_S24_PAIRS, SWIN_STAGE_PAIRS
from keras_spectralkd.recipes.config import Recipe, RunConfig
from keras_spectralkd.recipes.runner import timm_weights_hint, tiny_preset

CAIT_S24_SOURCE = timm_weights_hint("cait_s24_224.fb_dist_in1k", "cait_s24_224.pth")
# Tiny CaiT teacher of the DeiT presets, and the paper's pattern (first units, last units)
# on 4 <- 6 units.
_TINY_CAIT = dict(patch_size=4, embed_dim=64, depth=6, num_heads=4)
_TINY_DEIT_PAIRS = [(0, 0), (1, 1), (2, 4), (3, 5)]


def _deit(name, student, epochs, student_overrides):
    return Recipe(
        name=name,
        description=f"{student} <- cait_s24_224 with SpectralKD (SPEC.md 4, 7).",
        paper=RunConfig(
            student=student,
            teacher="cait_s24_224",
            layer_pairs=list(DEIT_FROM_CAIT_S24_PAIRS),
            spectral_weight=0.2,
            epochs=epochs,
            warmup_epochs=5,
        ),
        presets={"tiny": tiny_preset(student_overrides, _TINY_CAIT, _TINY_DEIT_PAIRS)},
        teacher_source=CAIT_S24_SOURCE,
    )


RECIPES = {
    # The paper's headline run: student blocks 0 1 6..11 <- teacher blocks 0 1 18..23.
    "deit_tiny": _deit("deit_tiny", "deit_tiny_patch16_224", 400,
                       dict(patch_size=4, embed_dim=32, depth=4, num_heads=2)),
    # DeiT-Small's 384 channels match CaiT-S24's.
    "deit_small": _deit("deit_small", "deit_small_patch16_224", 500,
                        dict(patch_size=4, embed_dim=48, depth=4, num_heads=3)),
    # Swin-Tiny <- Swin-Small: the 4 stages, stage i <- stage i; 20 warmup epochs.
    "swin_tiny": Recipe(
        name="swin_tiny",
        description="swin_tiny_patch4_window7_224 <- swin_small_patch4_window7_224 with "
                    "SpectralKD (SPEC.md 4, 7).",
        paper=RunConfig(
            student="swin_tiny_patch4_window7_224",
            teacher="swin_small_patch4_window7_224",
            layer_pairs=list(SWIN_STAGE_PAIRS),
            spectral_weight=0.05,
            epochs=500,
            warmup_epochs=20,
        ),
        presets={
            "tiny": tiny_preset(
                student_overrides=dict(patch_size=2, embed_dim=16, depths=(1, 1, 1, 1),
                                       num_heads=(1, 2, 2, 4), window_size=2),
                teacher_overrides=dict(patch_size=2, embed_dim=16, depths=(1, 1, 2, 1),
                                       num_heads=(1, 2, 2, 4), window_size=2),
                layer_pairs=[(0, 0), (1, 1), (2, 2), (3, 3)],
            ),
        },
        teacher_source=timm_weights_hint("swin_small_patch4_window7_224.ms_in1k",
                                         "swin_small_patch4_window7_224.pth"),
    ),
}

# === The Fashion-MNIST miniature (the demo, the study) ===
# A 6-block CaiT teacher (plus CaiT's 2 class-attention blocks) and a 4-block DeiT student at
# 28x28 with 7x7 patches (a 4x4 token grid: about 3.5x cheaper than 4x4 patches on a CPU).
# CaiT's paper sets LayerScale to 0.1 for networks up to 18 blocks (1e-5 is for 24).
MINI_TEACHER = dict(patch_size=7, embed_dim=128, depth=6, num_heads=4, init_values=0.1)
MINI_STUDENT = dict(patch_size=7, embed_dim=48, depth=4, num_heads=3)
# AdamW 1e-3 at batch 128, one warmup epoch, no EMA and no augmentation: in runs of a few epochs
# random shifts and flips slow learning more than they help.
_MINI = dict(dataset="fashion_mnist", image_size=28, batch_size=128, eval_batch_size=256,
             lr=1e-3, lr_batch_size=128, warmup_epochs=1, epochs=8, train_size=10_000,
             ema_decay=0.0, repeated_augmentation=1, rand_augment=False, random_erasing=0.0,
             precision="float32")
# Tests' sizes: a few hundred images, small models, no XLA compile (its cost outweighs 4 steps).
_MINI_QUICK = dict(epochs=1, warmup_epochs=0, train_size=256, validation_size=128,
                   batch_size=64, eval_batch_size=64, jit_compile=False)
_QUICK_TEACHER = dict(patch_size=7, embed_dim=32, depth=3, num_heads=2, init_values=0.1)
_QUICK_STUDENT = dict(patch_size=7, embed_dim=16, depth=2, num_heads=2)
# The study (tools/study.py, docs/results.md): the paper's conditions in miniature. 4x4 patches
# give 7x7 token maps at every pair. The teacher is trained once on all 12000 embedded images
# and shipped (`STUDY_TEACHER_PATH`); the students see a 3000-image subset of them, so the
# teacher is clearly stronger, as CaiT-S24 is over DeiT-Tiny. Students train 16 epochs,
# validated every 4th, with the teacher's outputs cached (no augmentation: one forward per image
# for the whole study).
STUDY_TEACHER = dict(patch_size=4, embed_dim=96, depth=6, num_heads=4, init_values=0.1)
STUDY_STUDENT = dict(patch_size=4, embed_dim=48, depth=4, num_heads=3)
_STUDY_TEACHER_RUN = dict(student_overrides=dict(STUDY_TEACHER), train_size=None, epochs=4)
_STUDY_STUDENT_RUN = dict(student_overrides=dict(STUDY_STUDENT),
                          teacher_overrides=dict(STUDY_TEACHER), train_size=3_000, epochs=16,
                          validation_every=4, cache_teacher=True)
STUDY_TEACHER_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "data", "fashion_mnist_teacher", "teacher.keras")
MINI_TEACHER_SOURCE = ("Train it first: spectralkd-train --recipe=fashion_mnist_teacher "
                       "--set output_dir=runs/fm_teacher, then pass "
                       "--set teacher_weights=runs/fm_teacher/student.keras.")

RECIPES["fashion_mnist_teacher"] = Recipe(
    name="fashion_mnist_teacher",
    description="The miniature's CaiT teacher on Fashion-MNIST, cross-entropy only (mode none).",
    paper=RunConfig(student="cait_s24_224", student_overrides=dict(MINI_TEACHER), mode="none",
                    **_MINI),
    presets={"quick": dict(_MINI_QUICK, student_overrides=dict(_QUICK_TEACHER)),
             "study": _STUDY_TEACHER_RUN},
)
RECIPES["fashion_mnist"] = Recipe(
    name="fashion_mnist",
    description="The miniature: a DeiT student <- the fashion_mnist_teacher CaiT with "
                "SpectralKD on Fashion-MNIST (pairs: the guideline's on its profile).",
    paper=RunConfig(student="deit_tiny_patch16_224", student_overrides=dict(MINI_STUDENT),
                    teacher="cait_s24_224", teacher_overrides=dict(MINI_TEACHER),
                    layer_pairs=[(0, 0), (1, 1), (2, 4), (3, 5)], spectral_weight=0.2, **_MINI),
    presets={"quick": dict(_MINI_QUICK, student_overrides=dict(_QUICK_STUDENT),
                           teacher_overrides=dict(_QUICK_TEACHER),
                           layer_pairs=[(0, 0), (1, 2)]),
             "study": _STUDY_STUDENT_RUN},
    teacher_source=MINI_TEACHER_SOURCE,
)
