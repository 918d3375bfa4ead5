"""What the teacher-output cache saves: the study's SpectralKD student step with the teacher
online against the same step fed cached teacher outputs (`keras_spectralkd.TeacherCache`).

Both arms train the study preset's student (`--preset`, default "study": DeiT 48x4 at 28x28 with
4x4 patches <- CaiT 96x6, the guideline's kind of pairs) through `model.fit` on the same batches,
with the same compiled step settings as the runner; the cached arm also pays for computing the
cache once (reported apart). Prints, per arm, seconds per step (median of `--repeats` timed
fits of `--steps` steps after one warm-up fit) and the speed-up.

    KERAS_BACKEND=jax python benchmarks/teacher_cache.py
    KERAS_BACKEND=tensorflow python benchmarks/teacher_cache.py --batch 128 --steps 20
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_spectralkd import Distiller, TeacherCache  # noqa: E402
from keras_spectralkd.models import create  # noqa: E402
from keras_spectralkd.recipes.table import RECIPES  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="study", help="fashion_mnist preset (study, paper)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=23, help="steps per timed fit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", default="0:0,3:5")
    args = parser.parse_args()

    config = RECIPES["fashion_mnist"].config(args.preset)
    pairs = [tuple(int(u) for u in p.split(":")) for p in args.pairs.split(",")]
    size = config.image_size
    count = args.batch * args.steps
    rng = np.random.default_rng(0)
    images = rng.normal(size=(count, size, size, 3)).astype("float32")
    labels = rng.integers(0, 10, count)
    keras.utils.set_random_seed(0)
    teacher = create(config.teacher, image_size=size, num_classes=10, **config.teacher_overrides)
    teacher.trainable = False

    started = time.perf_counter()
    cache = TeacherCache.compute(teacher, images, [t for _, t in pairs], batch_size=256)
    cache_s = time.perf_counter() - started
    inputs = {"online": images, "cached": cache.inputs(images, [t for _, t in pairs])}
    per_step = {}
    for arm in ("online", "cached"):
        keras.utils.set_random_seed(1)
        student = create(config.student, image_size=size, num_classes=10,
                         **config.student_overrides)
        distiller = Distiller(teacher, student, layer_pairs=pairs, mode="soft")
        distiller.compile(optimizer=keras.optimizers.AdamW(1e-3), jit_compile="auto")
        fit = dict(x=inputs[arm], y=labels, batch_size=args.batch, epochs=1, shuffle=False,
                   verbose=0)
        distiller.fit(**fit)  # compile
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            distiller.fit(**fit)
            times.append((time.perf_counter() - started) / args.steps)
        per_step[arm] = statistics.median(times)

    print(f"backend {keras.backend.backend()}, preset {args.preset}, batch {args.batch}, "
          f"pairs {args.pairs}, {args.steps} steps x {args.repeats} fits")
    print("| teacher | s/step | speed-up |")
    print("|---|---|---|")
    for arm in ("online", "cached"):
        print(f"| {arm} | {per_step[arm]:.4f} | {per_step['online'] / per_step[arm]:.2f}x |")
    print(f"cache: {count} images computed once in {cache_s:.1f} s "
          f"({cache_s / args.steps:.3f} s per step of this epoch; amortised over every epoch, "
          "seed and arm of a study)")


if __name__ == "__main__":
    main()
