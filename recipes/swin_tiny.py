"""Swin-Tiny <- Swin-Small (ImageNet-1k weights) with SpectralKD (SPEC.md 4 and 7).

Paper setting (the defaults): 500 epochs on ImageNet-1k at 224x224, global batch 512, AdamW
lr 5e-4 x batch/512, wd 0.05, 20 warmup epochs, soft KD + spectral loss (w_fft 0.05) on the
4 stages, stage i <- stage i.

    KERAS_BACKEND=jax python recipes/swin_tiny.py --data_dir=/data/imagenet \
        --teacher_weights=swin_small_patch4_window7_224.pth --output_dir=runs/swin_tiny

Re-running with the same --output_dir resumes from the last checkpoint.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_spectralkd.analysis.selection import SWIN_STAGE_PAIRS  # noqa: E402
from keras_spectralkd.training import runner  # noqa: E402


RECIPE = runner.Recipe(
    name="swin_tiny",
    description="Swin-Tiny <- Swin-Small with SpectralKD (SPEC.md 4, 7).",
    paper=runner.RunConfig(
        student="swin_tiny_patch4_window7_224",
        teacher="swin_small_patch4_window7_224",
        layer_pairs=list(SWIN_STAGE_PAIRS),
        spectral_weight=0.05,
        epochs=500,
        warmup_epochs=20,
    ),
    presets={
        "tiny": runner.tiny_preset(
            student_overrides=dict(
                patch_size=2, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
                window_size=2,
            ),
            teacher_overrides=dict(
                patch_size=2, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                window_size=2,
            ),
            layer_pairs=[(0, 0), (1, 1), (2, 2), (3, 3)],
        ),
    },
    teacher_source=runner.timm_weights_hint(
        "swin_small_patch4_window7_224.ms_in1k", "swin_small_patch4_window7_224.pth"
    ),
)

if __name__ == "__main__":
    from absl import app

    runner.define_flags(RECIPE)
    app.run(runner.main(RECIPE))
