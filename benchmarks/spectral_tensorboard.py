"""What SpectralTensorBoard costs next to an epoch of the demo (recipes/demo.py's default sizes).

Builds the demo's CaiT teacher and DeiT student (28x28 images, 7x7 patches, 10k training images,
batch 128), trains the spectral-KD student for `--epochs` epochs with the callback logging every
epoch, and prints the mean epoch time without the callback's work, the mean time of one
`log_spectra` (intensity image + one spectrum image per pair + scalars), their ratio, and where a
log's time goes: the student's probe (forward and pair math), the intensity figure (matplotlib),
writing the summaries (PNG encoding included) and the rest (profiles, spectrum panels, scalars).

    KERAS_BACKEND=tensorflow python benchmarks/spectral_tensorboard.py --epochs 3

Random images stand in for Fashion-MNIST (the cost does not depend on the pixels).
"""

import argparse
import os
import sys
import tempfile
import time

sys.modules.setdefault("triton", None)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_spectralkd import Distiller  # noqa: E402
from keras_spectralkd.callbacks import SpectralTensorBoard  # noqa: E402
from keras_spectralkd.models import create  # noqa: E402


class TimedSpectralTensorBoard(SpectralTensorBoard):
    """Records the wall time of each `log_spectra`, of its parts, and of each epoch without it."""

    PARTS = ("teacher forward", "student probe", "intensity figure", "writing")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_times, self.epoch_times = [], []
        self.part_times = []  # per log: part -> seconds

    def _timed(self, part, function, *args, wait=False):
        started = time.perf_counter()
        result = function(*args)
        if wait:  # JAX dispatches asynchronously: wait for the values, so the time lands here
            keras.tree.map_structure(keras.ops.convert_to_numpy, result)
        self.part_times[-1][part] += time.perf_counter() - started
        return result

    def _profile_and_maps(self, *args):
        return self._timed("teacher forward", super()._profile_and_maps, *args)

    def _student_probe(self, *args):
        probe = super()._student_probe(*args)
        return lambda *inputs: self._timed("student probe", probe, *inputs, wait=True)

    def _intensity_image(self, *args):
        return self._timed("intensity figure", super()._intensity_image, *args)

    def _write(self, *args):
        return self._timed("writing", super()._write, *args)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_times.append(time.perf_counter() - self._epoch_start)
        self.part_times.append(dict.fromkeys(self.PARTS, 0.0))
        started = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        self.log_times.append(time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train_size", type=int, default=10_000)
    args = parser.parse_args()

    common = dict(num_classes=10, image_size=28, patch_size=7)
    teacher = create("cait_s24_224", **common, embed_dim=128, depth=6, num_heads=4, init_values=0.1)
    student = create("deit_tiny_patch16_224", **common, embed_dim=48, depth=4, num_heads=3)
    pairs = [(0, 0), (1, 1), (2, 4), (3, 5)]  # what the demo's guideline picks: 2 first + 2 last
    rng = np.random.default_rng(0)
    images = rng.normal(size=(args.train_size, 28, 28, 3)).astype("float32")
    labels = rng.integers(0, 10, size=args.train_size)
    distiller = Distiller(teacher, student, layer_pairs=pairs, mode="soft")
    distiller.compile(optimizer=keras.optimizers.AdamW(1e-3))
    with tempfile.TemporaryDirectory() as log_dir:
        callback = TimedSpectralTensorBoard(log_dir, images[:8])
        distiller.fit(images, labels, batch_size=128, epochs=args.epochs, verbose=0,
                      callbacks=[callback])
    # The first epoch compiles the step; the first log runs the teacher and compiles the probe.
    epoch = np.mean(callback.epoch_times[1:]) if args.epochs > 1 else callback.epoch_times[0]
    later = np.mean(callback.log_times[1:]) if args.epochs > 1 else callback.log_times[0]
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPUs, {len(pairs)} pairs")
    print(f"epoch (steady, without the callback): {epoch:.2f} s")
    print(f"log_spectra: first {callback.log_times[0]:.3f} s, later {later:.3f} s")
    print(f"cost per epoch: {100 * later / epoch:.2f}% (first epoch: "
          f"{100 * callback.log_times[0] / callback.epoch_times[0]:.2f}%)")
    for name, logs in (("first log", callback.part_times[:1]),
                       ("later logs", callback.part_times[1:] or callback.part_times[:1])):
        parts = {part: np.mean([log[part] for log in logs]) for part in callback.PARTS}
        total = callback.log_times[0] if name == "first log" else later
        parts["the rest"] = total - sum(parts.values())
        print(f"{name}: " + ", ".join(f"{part} {1000 * seconds:.0f} ms"
                                      for part, seconds in parts.items()))


if __name__ == "__main__":
    main()
