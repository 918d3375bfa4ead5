"""DeiT-Tiny <- CaiT-S24 with SpectralKD: the paper's headline run (SPEC.md 4 and 7).

Paper setting (the defaults): 400 epochs on ImageNet-1k at 224x224, global batch 512, AdamW
lr 5e-4 x batch/512, wd 0.05, 5 warmup epochs, soft KD (alpha 0.9, tau 1) + spectral loss
(w_fft 0.2) on student blocks 0 1 6..11 <- teacher blocks 0 1 18..23, EMA 0.99996.

    # all local GPUs (MirroredStrategy on TensorFlow, DataParallel on JAX):
    KERAS_BACKEND=jax python recipes/deit_tiny.py --data_dir=/data/imagenet \
        --teacher_weights=cait_s24_224.pth --output_dir=runs/deit_tiny

    # a 2-minute smoke run on tiny models and your own small image folder:
    python recipes/deit_tiny.py --preset=tiny --data_dir=DIR --teacher_weights=T.weights.h5 \
        --output_dir=/tmp/deit_tiny_smoke

Re-running with the same --output_dir resumes from the last complete checkpoint (the
teacher is rebuilt from the file the checkpoint names); see docs/training.md.
The settings live in keras_spectralkd/recipes/table.py; `--help` lists every one with its
default. This is `spectralkd-train --recipe=deit_tiny` with the same flags (`--name=value` or
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

RECIPE = RECIPES["deit_tiny"]

if __name__ == "__main__":
    sys.exit(train.main(recipe_name=RECIPE.name))
