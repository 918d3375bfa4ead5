"""The recipe table: the paper's settings (SPEC.md 4 and 7) and a `tiny` preset per recipe.

Shared by all three: ImageNet-1k at 224x224, global batch 512, AdamW lr 5e-4 x batch/512,
wd 0.05, soft KD (alpha 0.9, tau 1) + the spectral loss, EMA 0.99996 per step (the
`RunConfig` defaults). What differs is below.
"""

from keras_spectralkd.analysis.selection import DEIT_FROM_CAIT_S24_PAIRS, SWIN_STAGE_PAIRS
from keras_spectralkd.recipes.runner import Recipe, RunConfig, timm_weights_hint, tiny_preset

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
