"""Swin-Tiny <- Swin-Small (ImageNet-1k weights) with SpectralKD (SPEC.md 4 and 7).

Paper setting (the defaults): 500 epochs on ImageNet-1k at 224x224, global batch 512, AdamW
lr 5e-4 x batch/512, wd 0.05, 20 warmup epochs, soft KD + spectral loss (w_fft 0.05) on the
4 stages, stage i <- stage i.

    KERAS_BACKEND=jax python recipes/swin_tiny.py --data_dir=/data/imagenet \
        --teacher_weights=swin_small_patch4_window7_224.pth --output_dir=runs/swin_tiny

Re-running with the same --output_dir resumes from the last complete checkpoint (the
teacher is rebuilt from the file the checkpoint names); see docs/training.md.
The settings live in keras_spectralkd/recipes/table.py; `--help` lists the flags.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_spectralkd.recipes import RECIPES, main  # noqa: E402

RECIPE = RECIPES["swin_tiny"]

if __name__ == "__main__":
    sys.exit(main(RECIPE))
