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
      (`analysis.compare.profile_correlation`);
    - `spectral/level_distance`: mean over layer pairs of |L(F_s) - L(pool(F_t))|, the gap
      between the intensity levels of each student map and its channel-pooled teacher map (the
      same width, so no 1/sqrt(C) offset; SPEC.md 5);
    - `spectral/spectrum/student_SS_teacher_TT`: per layer pair, an image of three panels: the
      2D spectrum magnitude of the student map, that of the channel-pooled teacher map (the two
      on one log colour scale), and the magnitude of their difference, i.e. what the spectral
      loss squares (SPEC.md 2): |rfft2| over (H, W), averaged over probe images and channels,
      zero frequency centred on the vertical axis (`pair_spectra`, `render_pair_spectra`; the
      colour ranges are in the image's description);
    - once, a custom-scalars layout (TensorBoard's "Custom Scalars" tab) grouping the per-pair
      losses (probe and training), the level distance and the profile correlation.

    On a plain backbone (a model with `forward_intermediates`), it logs that model's profile
    alone: `spectral/intensity_profile` and `spectral/model/intensity/unit_XX`; on a Distiller
    without a teacher (mode "none", a control run), the student's alone, under
    `spectral/student/...`.

    Events go to `os.path.join(log_dir, "spectral")`, a run of its own next to the `train` and
    `validation` runs of `keras.callbacks.TensorBoard(log_dir)`. Works on every backend (the
    summaries are written with `tf.summary` from numpy values). In a multi-process run only the
    chief (TF: `should_checkpoint`; JAX: process 0; torch: rank 0) writes; on JAX every process
    computes (the probe's forward runs on arrays that span every process's devices, so all must
    take part, or the chief waits for the others forever): add the callback on every process.

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
        self._layout_written = False
        # tag -> (student, teacher, difference) magnitudes of the last `log_spectra` call.
        self.last_spectra = {}

    @property
    def event_dir(self):
        """Where the event files are written: `log_dir/spectral`."""
        return os.path.join(self.log_dir, "spectral")

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs == 0 and (is_chief() or _computes_on_every_process()):
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
        images = {}
        if student is not None and getattr(model, "teacher", None) is not None:
            scalars, figure, images = self._distiller_summaries(model, step)
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
        images["spectral/intensity_profile"] = (_figure_to_rgb(_fixed_margins(figure)), None)
        if is_chief():
            self._write(step, scalars, images)
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
        images = {}
        self.last_spectra = {}
        if pairs:
            losses, level_gaps = [], []
            for student_unit, teacher_unit in pairs:
                name = f"student_{student_unit:02d}_teacher_{teacher_unit:02d}"
                student_map, teacher_map = student_maps[student_unit], teacher_maps[teacher_unit]
                loss = float(
                    keras.ops.convert_to_numpy(
                        spectral.spectral_pair_loss(student_map, teacher_map)
                    )
                )
                scalars[f"spectral/pair_loss/{name}"] = loss
                losses.append(loss)
                pooled = spectral.pool_channels(teacher_map, student_map.shape[-1])
                level_gaps.append(
                    abs(
                        float(keras.ops.convert_to_numpy(spectral.frequency_intensity(student_map)))
                        - float(keras.ops.convert_to_numpy(spectral.frequency_intensity(pooled)))
                    )
                )
                magnitudes = pair_spectra(student_map, teacher_map)
                self.last_spectra[f"spectral/spectrum/{name}"] = magnitudes
                image, ranges = render_pair_spectra(*magnitudes)
                images[f"spectral/spectrum/{name}"] = (image, spectra_description(ranges))
            scalars["spectral/pair_loss/mean"] = float(np.mean(losses))
            scalars["spectral/level_distance"] = float(np.mean(level_gaps))
        scalars["spectral/profile_correlation"] = compare.profile_correlation(
            teacher_profile, student_profile
        )
        figure = plots.plot_intensity(
            [teacher_profile, student_profile],
            [f"teacher: {_label(teacher, 'teacher')}", f"student: {_label(student, 'student')}"],
            layer_pairs=pairs or None,
            title=f"Frequency intensity, epoch {step + 1}",
        )
        return scalars, figure, images

    def _profile_and_maps(self, model, role):
        with no_grad():
            _, maps = model.forward_intermediates(self.probe_images, indices=None, training=False)
        maps = [to_float_array(m) for m in maps]
        profile = profile_maps(maps, name=_label(model, role), entropy=False)
        return profile, maps

    def _write(self, step, scalars, images):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.event_dir)
        with self._writer.as_default(step=int(step)):
            # The layout groups a Distiller's series; a lone backbone has none of them.
            if not self._layout_written and "spectral/profile_correlation" in scalars:
                from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary

                tf.summary.experimental.write_raw_pb(
                    custom_scalar_summary.pb(custom_scalars_layout()).SerializeToString(),
                    step=int(step),
                )
                self._layout_written = True
            for tag, (image, description) in images.items():
                tf.summary.image(tag, image[None], max_outputs=1, description=description)
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value)
        self._writer.flush()


# === Spectra of a layer pair ===
def pair_spectra(student_map, teacher_map):
    """What the spectral loss compares, for pictures: mean 2D spectrum magnitudes of one pair.

    Args:
        student_map: (B, H, W, C_s) map.
        teacher_map: (B, H, W, C_t) map, C_t >= C_s; its channels are pooled down to C_s as in
            the loss (SPEC.md 2.2).
    Returns:
        `(student, teacher, difference)`, each (H, W//2 + 1) float64 numpy: |rfft2(F_s)|,
        |rfft2(pool(F_t))| and |rfft2(F_s) - rfft2(pool(F_t))| (orthonormal rfft2 over (H, W)),
        averaged over images and channels, rows `fftshift`ed so the zero frequency sits in the
        middle of the vertical axis (columns run from 0 to the Nyquist frequency).
    """
    student_map = keras.ops.convert_to_tensor(student_map)
    pooled = spectral.pool_channels(teacher_map, student_map.shape[-1])
    s_real, s_imag = spectral.rfft2(student_map)
    t_real, t_imag = spectral.rfft2(pooled)

    def mean_magnitude(real, imag):
        real = np.asarray(keras.ops.convert_to_numpy(real), dtype=np.float64)
        imag = np.asarray(keras.ops.convert_to_numpy(imag), dtype=np.float64)
        return np.fft.fftshift(np.hypot(real, imag).mean(axis=(0, 3)), axes=0)

    return (
        mean_magnitude(s_real, s_imag),
        mean_magnitude(t_real, t_imag),
        mean_magnitude(s_real - t_real, s_imag - t_imag),
    )


PANEL_MIN_SIDE = 192  # pixels: a 4x3 spectrum is drawn as 192x144 in cells of solid colour
PANEL_GAP = 8
_LOG_FLOOR = 1e-12  # an exactly zero bin would break the log scale


def render_pair_spectra(student, teacher, difference, cmap="magma"):
    """Draws `pair_spectra`'s three magnitudes side by side as one RGB image, without matplotlib.

    Each panel is log10 of the magnitudes through `cmap` (dark low, bright high), every bin an
    integer-upscaled block of one colour (bins stay visible, nothing is interpolated). Student
    and teacher share one colour range; the difference has its own. Rows are the vertical
    frequency (zero in the middle), columns the horizontal one (0 to Nyquist, left to right).
    A figure with axes and colorbars costs about 1 s per pair on a loaded 2-core CPU; this costs
    milliseconds, so logging every epoch stays a small part of an epoch (docs/ecosystem.md).

    Returns:
        `(image, ranges)`: (h, w, 3) uint8, and `{"shared": (lo, hi), "difference": (lo, hi)}`,
        the log10 colour ranges.
    """
    from matplotlib import colormaps

    colormap = colormaps[cmap]
    logs = [np.log10(np.maximum(np.asarray(m, dtype=np.float64), _LOG_FLOOR))
            for m in (student, teacher, difference)]
    shared = (float(min(logs[0].min(), logs[1].min())), float(max(logs[0].max(), logs[1].max())))
    own = (float(logs[2].min()), float(logs[2].max()))
    height, width = logs[0].shape
    scale = max(1, -(-PANEL_MIN_SIDE // height))
    panels = []
    for values, (low, high) in zip(logs, (shared, shared, own)):
        unit = (values - low) / (high - low) if high > low else np.zeros_like(values)
        rgb = (colormap(unit)[..., :3] * 255).round().astype(np.uint8)
        # Row 0 is the lowest vertical frequency: flip so it is drawn at the bottom.
        panels.append(np.kron(rgb[::-1], np.ones((scale, scale, 1), dtype=np.uint8)))
    gap = np.full((height * scale, PANEL_GAP, 3), 255, dtype=np.uint8)
    image = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    return image, {"shared": shared, "difference": own}


def spectra_description(ranges):
    """The markdown TensorBoard shows under a spectrum image: what the three panels are."""
    return (
        "Left: student map |F(S)|. Middle: channel-pooled teacher map |F(T)|. Both on one log10 "
        f"colour range [{ranges['shared'][0]:.2f}, {ranges['shared'][1]:.2f}]. Right: "
        f"|F(S) - F(T)|, what the spectral loss squares, log10 range "
        f"[{ranges['difference'][0]:.2f}, {ranges['difference'][1]:.2f}]. F: orthonormal rfft2 "
        "over (H, W), magnitude averaged over probe images and channels; colour map magma "
        "(dark = low, bright = high). Rows: vertical frequency, zero in the middle, positive "
        "up; columns: horizontal frequency 0 (left) to Nyquist (right)."
    )


def custom_scalars_layout():
    """TensorBoard's custom-scalars layout: SpectralKD's series grouped on one page."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    def chart(title, *regexes):
        return layout_pb2.Chart(
            title=title, multiline=layout_pb2.MultilineChartContent(tag=list(regexes))
        )

    return layout_pb2.Layout(
        category=[
            layout_pb2.Category(
                title="SpectralKD",
                chart=[
                    chart("spectral loss per layer pair (probe)", r"spectral/pair_loss/.*"),
                    chart(
                        "spectral loss per layer pair (training)",
                        r"epoch_spectral_loss(_pair_\d+)?$",
                    ),
                    chart("level distance |L(student) - L(pooled teacher)|",
                          r"spectral/level_distance$"),
                    chart("profile correlation (teacher vs student)",
                          r"spectral/profile_correlation$"),
                ],
            )
        ]
    )


def _computes_on_every_process():
    """True in a multi-process JAX run, where computations on the model need every process."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.process_count() > 1


def is_chief():
    """True unless this process is a non-chief worker of a multi-process run."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.process_index() == 0
    if backend == "torch":
        import torch.distributed

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank() == 0
        return True
    import tensorflow as tf

    return bool(getattr(tf.distribute.get_strategy().extended, "should_checkpoint", True))


def _intensity_scalars(role, profile):
    return {
        f"spectral/{role}/intensity/unit_{unit:02d}": float(value)
        for unit, value in zip(profile.units, profile.intensity)
    }


def _label(model, role):
    return getattr(model, "name", None) or role


def _fixed_margins(figure):
    """Fixed margins instead of constrained layout, whose text measuring is most of the cost of
    drawing the one-axis intensity figure (about 0.2 of 0.5 s on a loaded 2-core CPU), at 100 dpi.
    """
    figure.set_layout_engine("none")
    figure.set_dpi(100)  # 1000x640 -> 500x320 pixels: a quarter of the rasterising and PNG work
    # (subplots_adjust is ignored after a constrained layout: place the axes directly.)
    for axis in figure.get_axes():
        axis.set_position([0.14, 0.17, 0.83, 0.71])  # left, bottom, width, height
    return figure


def _figure_to_rgb(figure):
    """Renders a matplotlib Figure to a (H, W, 3) uint8 array (no PNG round trip)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
