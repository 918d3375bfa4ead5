"""Swin-Tiny <- Swin-Small (ImageNet-1k weights) with SpectralKD (SPEC.md 4 and 7).

Paper setting (the defaults): 500 epochs on ImageNet-1k at 224x224, global batch 512, AdamW
lr 5e-4 x batch/512, wd 0.05, 20 warmup epochs, soft KD + spectral loss (w_fft 0.05) on the
4 stages, stage i <- stage i.

    KERAS_BACKEND=jax python recipes/swin_tiny.py --data_dir=/data/imagenet \
        --teacher_weights=swin_small_patch4_window7_224.pth --output_dir=runs/swin_tiny

Re-running with the same --output_dir resumes from the last complete checkpoint (the
teacher is rebuilt from the file the checkpoint names); see docs/training.md.
The settings live in keras_spectralkd/recipes/table.py; `--help` lists every one with its
default. This is `spectralkd-train --recipe=swin_tiny` with the same flags (`--name=value` or
`--set name=value`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":  # a command line: TensorFlow's start-up lines kept off the console
    from keras_spectralkd import _startup

    _startup.quiet_console()

from keras_spectralkd.recipes import RECIPES  # noqa: E402
from keras_spectralkd.tools import train  # noqa: E402

RECIPE = RECIPES["swin_tiny"]

if __name__ == "__main__":
    sys.exit(train.main(recipe_name=RECIPE.name))
