"""DeiT-Small <- CaiT-S24 with SpectralKD (SPEC.md 4 and 7).

Paper setting (the defaults): 500 epochs on ImageNet-1k at 224x224, global batch 512, AdamW
lr 5e-4 x batch/512, wd 0.05, 5 warmup epochs, soft KD + spectral loss (w_fft 0.2) on student
blocks 0 1 6..11 <- teacher blocks 0 1 18..23 (DeiT-Small's 384 channels match CaiT-S24's).

    KERAS_BACKEND=jax python recipes/deit_small.py --data_dir=/data/imagenet \
        --teacher_weights=cait_s24_224.pth --output_dir=runs/deit_small

Re-running with the same --output_dir resumes from the last checkpoint.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_spectralkd.analysis.selection import DEIT_FROM_CAIT_S24_PAIRS  # noqa: E402
from keras_spectralkd.training import runner  # noqa: E402


RECIPE = runner.Recipe(
    name="deit_small",
    description="DeiT-Small <- CaiT-S24 with SpectralKD (SPEC.md 4, 7).",
    paper=runner.RunConfig(
        student="deit_small_patch16_224",
        teacher="cait_s24_224",
        layer_pairs=list(DEIT_FROM_CAIT_S24_PAIRS),
        spectral_weight=0.2,
        epochs=500,
        warmup_epochs=5,
    ),
    presets={
        "tiny": runner.tiny_preset(
            student_overrides=dict(patch_size=4, embed_dim=48, depth=4, num_heads=3),
            teacher_overrides=dict(patch_size=4, embed_dim=64, depth=6, num_heads=4),
            layer_pairs=[(0, 0), (1, 1), (2, 4), (3, 5)],
        ),
    },
    teacher_source=runner.timm_weights_hint("cait_s24_224.fb_dist_in1k", "cait_s24_224.pth"),
)

if __name__ == "__main__":
    from absl import app

    runner.define_flags(RECIPE)
    app.run(runner.main(RECIPE))
