"""`SpectralTracker`: how far a student's spectra are from its teacher's, logged every epoch.

A Keras callback for any training of a backbone (with or without distillation: a control run
is measured against the same teacher). At each epoch's end it profiles the student on fixed
images and adds to the epoch's logs (so they reach the progress bar, log.csv and the history):

- `level_distance`: `compare.level_distance`, the RMS difference of the student's and the
  teacher's L(X) over relative depth;
- `profile_r`: `compare.profile_correlation`, Pearson r of the same two curves (shape only);
- `spectral_gap`: the spectral alignment loss (SPEC.md 2) between the student's and the
  teacher's maps at the layer pairs on those images: what SpectralKD minimises.

The teacher's profile and maps are computed once (it is frozen); `profile` holds the student's
latest profile.
"""

import keras

from keras_spectralkd.analysis import compare
from keras_spectralkd.analysis.profile import profile_model
from keras_spectralkd.spectral import spectral_alignment_loss


class SpectralTracker(keras.callbacks.Callback):
    """Adds `level_distance`, `profile_r` and `spectral_gap` to every epoch's logs.

    Args:
        student: the backbone being trained; None: the trained model's `student` (a
            Distiller's), else the trained model itself.
        teacher: the frozen teacher backbone.
        images: (N, H, W, 3) preprocessed images (e.g. the first test images).
        layer_pairs: `[(student_unit, teacher_unit), ...]` for `spectral_gap`.
        teacher_profile: the teacher's `Profile` on `images` if already computed.
    """

    def __init__(self, student, teacher, images, layer_pairs, teacher_profile=None):
        super().__init__()
        self.student = student
        self.images = images
        self.layer_pairs = [tuple(p) for p in layer_pairs]
        if not self.layer_pairs:
            raise ValueError("SpectralTracker needs at least one layer pair for spectral_gap.")
        self.teacher_profile = teacher_profile or self._profile(teacher, "teacher")
        _, self.teacher_maps = teacher.forward_intermediates(
            images, [t for _, t in self.layer_pairs], training=False
        )
        self.profile = None

    def _profile(self, model, name):
        return profile_model(model, self.images, entropy=False, name=name, verbose=0)

    def measure(self):
        """The three numbers for the student's current weights (also sets `profile`)."""
        student = self.student or getattr(self.model, "student", self.model)
        self.profile = self._profile(student, "student")
        _, student_maps = student.forward_intermediates(
            self.images, [s for s, _ in self.layer_pairs], training=False
        )
        gap = spectral_alignment_loss(student_maps, self.teacher_maps)
        return {
            "level_distance": compare.level_distance(self.teacher_profile, self.profile),
            "profile_r": compare.profile_correlation(self.teacher_profile, self.profile),
            "spectral_gap": float(keras.ops.convert_to_numpy(gap)),
        }

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.measure())
