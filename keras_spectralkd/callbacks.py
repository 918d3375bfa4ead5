"""Callbacks: SpectralKD's spectral view of training in TensorBoard."""

import os

import keras
import numpy as np

from keras_spectralkd import spectral
from keras_spectralkd.analysis import compare
from keras_spectralkd.analysis import plots
from keras_spectralkd.analysis.profile import no_grad
from keras_spectralkd.analysis.profile import profile_maps
from keras_spectralkd.analysis.profile import to_float_array


class SpectralTensorBoard(keras.callbacks.Callback):
    """Logs spectral profiles of a fixed probe batch to TensorBoard every few epochs.

    During `Distiller` training (the model has `student` and `teacher`), at the end of every
    `every_n_epochs`-th epoch it runs the student (and, once, the frozen teacher: its maps on the
    fixed probe cannot change, so they are cached) over `probe_images` in inference mode and logs,
    at step = epoch (0-based, as Keras' own TensorBoard callback):

    - `spectral/intensity_profile`: an image of the student's intensity profile against the
      teacher's over relative depth, layer pairs marked (`analysis.plot_intensity`);
    - `spectral/student/intensity/unit_XX` and `spectral/teacher/intensity/unit_XX`: L(X) of each
      unit (SPEC.md 5);
    - `spectral/pair_loss/student_SS_teacher_TT`: `spectral_pair_loss` of each layer pair on the
      probe, and `spectral/pair_loss/mean` (the spectral loss on the probe, SPEC.md 2);
    - `spectral/profile_correlation`: Pearson r of the depth-aligned intensity profiles
      (`analysis.compare.profile_correlation`).

    On a plain backbone (a model with `forward_intermediates`), it logs that model's profile
    alone: `spectral/intensity_profile` and `spectral/model/intensity/unit_XX`; on a Distiller
    without a teacher (mode "none", a control run), the student's alone, under
    `spectral/student/...`.

    Events go to `os.path.join(log_dir, "spectral")`, a run of its own next to the `train` and
    `validation` runs of `keras.callbacks.TensorBoard(log_dir)`. Works on every backend (the
    summaries are written with `tf.summary` from numpy values).

    Args:
        log_dir: the TensorBoard log directory.
        probe_images: (B, H, W, 3) preprocessed images, channels-last (a handful: the probe runs
            eagerly, outside the compiled train step).
        every_n_epochs: log every n epochs (>= 1).
    """

    def __init__(self, log_dir, probe_images, every_n_epochs=1):
        super().__init__()
        probe = np.asarray(keras.ops.convert_to_numpy(probe_images), dtype=np.float32)
        if probe.ndim != 4 or probe.shape[0] < 1:
            raise ValueError(
                "`probe_images` must be a non-empty (B, H, W, C) batch of images; got shape "
                f"{probe.shape}."
            )
        if (
            isinstance(every_n_epochs, bool)
            or int(every_n_epochs) != every_n_epochs
            or (every_n_epochs < 1)
        ):
            raise ValueError(f"`every_n_epochs` must be an int >= 1; got {every_n_epochs!r}.")
        self.log_dir = os.fspath(log_dir)
        self.probe_images = probe
        self.every_n_epochs = int(every_n_epochs)
        self._writer = None
        self._teacher_cache = None  # (teacher object, profile, maps)

    @property
    def event_dir(self):
        """Where the event files are written: `log_dir/spectral`."""
        return os.path.join(self.log_dir, "spectral")

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs == 0:
            self.log_spectra(epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # === Logging ===
    def log_spectra(self, step):
        """Computes and writes every summary for `self.model` at `step`; returns the values.

        Returns:
            Dict tag -> float for the scalars written (handy in notebooks and tests).
        """
        model = self.model
        student = getattr(model, "student", None)
        if student is not None and getattr(model, "teacher", None) is not None:
            scalars, figure = self._distiller_summaries(model, step)
        elif student is not None or hasattr(model, "forward_intermediates"):
            # A Distiller without teacher (mode "none"), or a plain backbone: profile it alone.
            role, backbone = ("student", student) if student is not None else ("model", model)
            profile = self._profile_and_maps(backbone, role)[0]
            scalars = _intensity_scalars(role, profile)
            figure = plots.plot_intensity(
                [profile],
                [_label(backbone, role)],
                title=f"Frequency intensity, epoch {step + 1}",
            )
        else:
            raise ValueError(
                f"SpectralTensorBoard needs a Distiller (with `student` and `teacher`) or a "
                f"backbone with `forward_intermediates`; got {type(model).__name__}."
            )
        self._write(step, scalars, _figure_to_rgb(figure))
        return scalars

    def _distiller_summaries(self, distiller, step):
        student, teacher = distiller.student, distiller.teacher
        pairs = [tuple(pair) for pair in getattr(distiller, "layer_pairs", [])]
        for role, model in (("student", student), ("teacher", teacher)):
            if not hasattr(model, "forward_intermediates"):
                raise ValueError(
                    f"SpectralTensorBoard needs feature maps, but the {role} "
                    f"{getattr(model, 'name', model)!r} has no `forward_intermediates`."
                )
        student_profile, student_maps = self._profile_and_maps(student, "student")
        if self._teacher_cache is None or self._teacher_cache[0] is not teacher:
            teacher_profile, teacher_maps = self._profile_and_maps(teacher, "teacher")
            self._teacher_cache = (teacher, teacher_profile, teacher_maps)
        _, teacher_profile, teacher_maps = self._teacher_cache

        scalars = _intensity_scalars("student", student_profile)
        scalars.update(_intensity_scalars("teacher", teacher_profile))
        if pairs:
            losses = []
            for student_unit, teacher_unit in pairs:
                loss = float(
                    keras.ops.convert_to_numpy(
                        spectral.spectral_pair_loss(
                            student_maps[student_unit], teacher_maps[teacher_unit]
                        )
                    )
                )
                scalars[
                    f"spectral/pair_loss/student_{student_unit:02d}_teacher_{teacher_unit:02d}"
                ] = loss
                losses.append(loss)
            scalars["spectral/pair_loss/mean"] = float(np.mean(losses))
        scalars["spectral/profile_correlation"] = compare.profile_correlation(
            teacher_profile, student_profile
        )
        figure = plots.plot_intensity(
            [teacher_profile, student_profile],
            [f"teacher: {_label(teacher, 'teacher')}", f"student: {_label(student, 'student')}"],
            layer_pairs=pairs or None,
            title=f"Frequency intensity, epoch {step + 1}",
        )
        return scalars, figure

    def _profile_and_maps(self, model, role):
        with no_grad():
            _, maps = model.forward_intermediates(self.probe_images, indices=None, training=False)
        maps = [to_float_array(m) for m in maps]
        profile = profile_maps(maps, name=_label(model, role), entropy=False)
        return profile, maps

    def _write(self, step, scalars, image):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.event_dir)
        with self._writer.as_default(step=int(step)):
            tf.summary.image("spectral/intensity_profile", image[None], max_outputs=1)
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value)
        self._writer.flush()


def _intensity_scalars(role, profile):
    return {
        f"spectral/{role}/intensity/unit_{unit:02d}": float(value)
        for unit, value in zip(profile.units, profile.intensity)
    }


def _label(model, role):
    return getattr(model, "name", None) or role


def _figure_to_rgb(figure):
    """Renders a matplotlib Figure to a (H, W, 3) uint8 array (no PNG round trip)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
