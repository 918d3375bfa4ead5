"""Callbacks: SpectralKD's spectral view of training, in TensorBoard (`SpectralTensorBoard`) and
in every epoch's logs (`SpectralTracker`)."""

import functools
import io
import os

import keras
import numpy as np

from keras_spectralkd import spectral, taps
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
    - `spectral/pair_level_gap`: mean over layer pairs of |L(F_s) - L(pool(F_t))|, the gap
      between the intensity levels of each student map and its channel-pooled teacher map (the
      same width, so no 1/sqrt(C) offset; SPEC.md 5);
    - `spectral/spectrum/student_SS_teacher_TT`: per layer pair, an image of three panels: the
      2D spectrum magnitude of the student map, that of the channel-pooled teacher map (the two
      on one log colour scale), and the magnitude of their difference, i.e. what the spectral
      loss squares (SPEC.md 2): |rfft2| over (H, W), averaged over probe images and channels,
      zero frequency centred on the vertical axis (`render_pair_spectra`; the
      colour ranges are in the image's description);
    - once, a custom-scalars layout (TensorBoard's "Custom Scalars" tab) grouping the per-pair
      losses (probe and training), the level distance and the profile correlation.

    Layer pairs given by name (any functional model: a `keras.applications` CNN, a keras-hub
    backbone) are read through `taps.FeatureTap`, the maps the Distiller aligns, on the
    Distiller's grid rule (`grid_alignment`, SPEC.md 2.1). A side given by names is profiled at
    its named layers, in the order of `layer_pairs` (list them shallow to deep: the profile's
    relative depth is their position), and its tags carry the layer names instead of `unit_XX`
    (`spectral/teacher/intensity/conv2_block1_out`, `spectral/pair_loss/student_03_teacher_
    conv2_block1_out`). Where a pair's grids differ, its spectrum panels show the common low band
    the loss compares.

    On a plain backbone (a model with `forward_intermediates`), it logs that model's profile
    alone: `spectral/intensity_profile` and `spectral/model/intensity/unit_XX`; on a Distiller
    without a teacher (mode "none", a control run), or with a teacher that has no units to
    profile and no layer pairs (logit KD from any Keras model), the student's alone, under
    `spectral/student/...`.

    What is the same at every log is done once: the teacher's maps and pooled spectra, the
    student's probe computation compiled into one function (a `tf.function` on TensorFlow, a
    `jax.jit` on JAX, both reading the current weights; eager on torch), and the intensity figure,
    whose values are replaced each time (`analysis.plots.IntensityPlot`); what a log costs is in
    docs/ecosystem.md.

    Events go to `os.path.join(log_dir, "spectral")`, a run of its own next to the `train` and
    `validation` runs of `keras.callbacks.TensorBoard(log_dir)`. Works on every backend (the
    summaries are written with `tf.summary` from numpy values). In a multi-process run only the
    chief (TF: `should_checkpoint`; JAX: process 0; torch: rank 0) writes; on JAX every process
    computes (the probe's forward runs on arrays that span every process's devices, so all must
    take part, or the chief waits for the others forever): add the callback on every process.

    Args:
        log_dir: the TensorBoard log directory.
        probe_images: (B, H, W, 3) preprocessed images, channels-last (a handful: the probe runs
            outside the train step, on the whole batch at once).
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
        whole = not isinstance(every_n_epochs, bool) and int(every_n_epochs) == every_n_epochs
        if not whole or every_n_epochs < 1:
            raise ValueError(f"`every_n_epochs` must be an int >= 1; got {every_n_epochs!r}.")
        self.log_dir = os.fspath(log_dir)
        self.probe_images = probe
        self.every_n_epochs = int(every_n_epochs)
        self._writer = None
        # (teacher object, its named layers or None, profile, maps, {(position, channels):
        # pooled map's L and rfft2}): the frozen teacher's share of a log, once per teacher.
        self._teacher_cache = None
        self._probe = None  # (student object, layer pairs, alignment, compiled probe function)
        self._intensity_plot = None  # (labels, layer pairs, IntensityPlot, canvas)
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
        teacher = getattr(model, "teacher", None)
        if student is not None and teacher is not None and (
                getattr(model, "layer_pairs", None) or hasattr(teacher, "forward_intermediates")):
            scalars, intensity, images = self._distiller_summaries(model, step)
        elif student is not None or hasattr(model, "forward_intermediates"):
            # A Distiller without teacher (mode "none") or whose teacher has neither pairs nor
            # units to profile (logit KD from any Keras model), or a plain backbone: alone.
            role, backbone = ("student", student) if student is not None else ("model", model)
            maps, _ = self._student_probe(backbone, (), "equal")(self.probe_images, [])
            label = _label(backbone, role)
            profile = profile_maps(maps, name=label, entropy=False)
            scalars = _intensity_scalars(role, profile)
            intensity = self._intensity_image(
                [profile], [label], (), f"Frequency intensity, epoch {step + 1}"
            )
        else:
            raise ValueError(
                f"SpectralTensorBoard needs a Distiller (with `student` and `teacher`) or a "
                f"backbone with `forward_intermediates`; got {type(model).__name__}."
            )
        images["spectral/intensity_profile"] = (intensity, None)
        if is_chief():
            self._write(step, scalars, images)
        return scalars

    def _distiller_summaries(self, distiller, step):
        student, teacher = distiller.student, distiller.teacher
        pairs = [tuple(pair) for pair in getattr(distiller, "layer_pairs", [])]
        student_units, teacher_units = [s for s, _ in pairs], [t for _, t in pairs]
        alignment = grid_alignment_of(pairs, getattr(distiller, "grid_alignment", None))
        teacher_names = tuple(teacher_units) if _named(teacher_units) else None
        cached = self._teacher_cache
        if cached is None or cached[0] is not teacher or cached[1] != teacher_names:
            teacher_profile, teacher_maps = _profile_and_maps(
                teacher, self.probe_images, _label(teacher, "teacher"), teacher_names)
            self._teacher_cache = (teacher, teacher_names, teacher_profile, teacher_maps, {})
        _, _, teacher_profile, teacher_maps, _ = self._teacher_cache
        # Where each pair's map sits in the maps and profile of its side.
        student_at, teacher_at = _positions(student_units), _positions(teacher_units)
        student_maps, pair_outputs = self._student_probe(student, pairs, alignment)(
            self.probe_images, [teacher_maps[position] for position in teacher_at]
        )
        student_profile = _profile(student_maps, _label(student, "student"),
                                   student_units if _named(student_units) else None)

        scalars = _intensity_scalars("student", student_profile)
        scalars.update(_intensity_scalars("teacher", teacher_profile))
        images = {}
        self.last_spectra = {}
        if pairs:
            losses, level_gaps = [], []
            for (student_unit, teacher_unit), s_at, t_at, outputs in zip(
                    pairs, student_at, teacher_at, pair_outputs):
                name = f"student_{_unit_tag(student_unit)}_teacher_{_unit_tag(teacher_unit)}"
                loss, student_fft = outputs
                pooled_level, pooled_fft = self._pooled_teacher(
                    t_at, student_maps[s_at].shape[-1]
                )
                loss = float(keras.ops.convert_to_numpy(loss))
                scalars[f"spectral/pair_loss/{name}"] = loss
                losses.append(loss)
                # L(F_s) is the student's profile entry (float64, the same definition).
                student_level = student_profile.intensity[s_at]
                level_gaps.append(abs(float(student_level) - pooled_level))
                magnitudes = _mean_magnitudes(
                    *_common_band(student_fft, pooled_fft, student_maps[s_at].shape[1:3],
                                  teacher_maps[t_at].shape[1:3]))
                self.last_spectra[f"spectral/spectrum/{name}"] = magnitudes
                image, ranges = render_pair_spectra(*magnitudes)
                images[f"spectral/spectrum/{name}"] = (image, spectra_description(ranges))
            scalars["spectral/pair_loss/mean"] = float(np.mean(losses))
            scalars["spectral/pair_level_gap"] = float(np.mean(level_gaps))
        scalars["spectral/profile_correlation"] = compare.profile_correlation(
            teacher_profile, student_profile
        )
        intensity = self._intensity_image(
            [teacher_profile, student_profile],
            [f"teacher: {_label(teacher, 'teacher')}", f"student: {_label(student, 'student')}"],
            list(zip(student_at, teacher_at)),
            f"Frequency intensity, epoch {step + 1}",
        )
        return scalars, intensity, images

    def _pooled_teacher(self, teacher_position, channels):
        """L(pool(F_t)) and rfft2(pool(F_t)) as (real, imag) of the cached teacher's map at
        `teacher_position` (its unit, or its place among the named layers) pooled to `channels`:
        constants of the frozen teacher, computed once.

        In float64 numpy, like the profiles (a handful of eager backend ops would cost more:
        JAX compiles each on first use): the loss's pooling matrix (SPEC.md 2.2), the
        orthonormal rfft2 over (H, W) that `spectral.rfft2` equals, and L from `profile_maps`,
        as for the student's maps.
        """
        _, _, _, teacher_maps, pooled = self._teacher_cache
        key = (teacher_position, int(channels))
        if key not in pooled:
            teacher_map = np.asarray(teacher_maps[teacher_position], dtype=np.float64)
            matrix = spectral.channel_pooling_matrix(teacher_map.shape[-1], int(channels))
            pooled_map = teacher_map @ matrix.astype(np.float64)
            transform = np.fft.rfft2(pooled_map, axes=(1, 2), norm="ortho")
            level = float(profile_maps([pooled_map], entropy=False).intensity[0])
            pooled[key] = (level, (transform.real, transform.imag))
        return pooled[key]

    def _student_probe(self, student, pairs, alignment):
        """`_probe_function(student, pairs, alignment)` compiled, built once per student, layer
        pairs and grid rule."""
        pairs = tuple(pairs)
        cached = self._probe
        if cached is None or cached[0] is not student or cached[1:3] != (pairs, alignment):
            probe = _compile_reading(_probe_function(student, pairs, alignment), student)
            self._probe = (student, pairs, alignment, probe)
        return self._probe[3]

    def _intensity_image(self, profiles, labels, pairs, title):
        """The intensity figure as (h, w, 3) uint8: built once, then its values replaced."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        key = (tuple(labels), tuple(pairs))
        cached = self._intensity_plot
        if cached is not None and cached[0] == key and cached[1].fits(profiles):
            plot, canvas = cached[1:]
            plot.update(profiles, title=title)
        else:
            plot = plots.IntensityPlot(profiles, labels, layer_pairs=pairs or None, title=title)
            canvas = FigureCanvasAgg(_fixed_margins(plot.figure))
            self._intensity_plot = (key, plot, canvas)
        return _canvas_to_rgb(canvas)

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
            tf.summary.experimental.write_raw_pb(
                _summary(scalars, images).SerializeToString(), step=int(step)
            )
        self._writer.flush()


def _mean_magnitudes(student_fft, pooled_fft):
    """What the spectral loss compares, for pictures, from the (real, imag) orthonormal rfft2
    over (H, W) of a student map and its channel-pooled teacher map (SPEC.md 2.2).

    Returns:
        `(student, teacher, difference)`, each (H, W//2 + 1) float64 numpy: |F_s|, |F_t| and
        |F_s - F_t|, averaged over images and channels, rows `fftshift`ed so the zero frequency
        sits in the middle of the vertical axis (columns run from 0 to the Nyquist frequency).
    """
    s_real, s_imag, t_real, t_imag = (
        np.asarray(keras.ops.convert_to_numpy(part), dtype=np.float64)
        for part in (*student_fft, *pooled_fft)
    )

    def mean_magnitude(real, imag):
        return np.fft.fftshift(np.hypot(real, imag).mean(axis=(0, 3)), axes=0)

    return (
        mean_magnitude(s_real, s_imag),
        mean_magnitude(t_real, t_imag),
        mean_magnitude(s_real - t_real, s_imag - t_imag),
    )


def _common_band(student_fft, pooled_fft, student_grid, teacher_grid):
    """The two (real, imag) orthonormal rfft2s of a pair as numpy, cut to what the loss compares:
    on equal grids the whole transforms; on different grids the bins of the common grid (min H,
    min W) on its orthonormal scale (SPEC.md 2.1, `spectral._low_band_channels_first`'s rule):
    rows `fftfreq(h) * h`, columns 0..w//2, scaled by sqrt(hw / HW)."""
    transforms = [[np.asarray(keras.ops.convert_to_numpy(part), dtype=np.float64)
                   for part in fft] for fft in (student_fft, pooled_fft)]
    student_grid = tuple(int(v) for v in student_grid)
    teacher_grid = tuple(int(v) for v in teacher_grid)
    if student_grid == teacher_grid:
        return transforms
    grid_h, grid_w = (min(a, b) for a, b in zip(student_grid, teacher_grid))
    band = []
    for (height, width), parts in zip((student_grid, teacher_grid), transforms):
        rows = (np.fft.fftfreq(grid_h) * grid_h).astype(int) % height
        scale = np.sqrt(grid_h * grid_w / (height * width))
        band.append([part[:, rows][:, :, : grid_w // 2 + 1] * scale for part in parts])
    return band


# === Where maps come from ===
def _named(units):
    """Whether one side of layer pairs names layers (else it indexes a backbone's units)."""
    return bool(units) and isinstance(units[0], str)


def grid_alignment_of(pairs, grid_alignment=None):
    """The grid rule of the Distiller for these pairs (SPEC.md 2.1): `grid_alignment` if given,
    else "low_band" as soon as a side names layers, "equal" for unit indices."""
    pairs = [tuple(pair) for pair in pairs]
    if grid_alignment is not None:
        return spectral.check_grid_alignment(grid_alignment)
    named = _named([s for s, _ in pairs]) or _named([t for _, t in pairs])
    return "low_band" if named else "equal"


def _positions(units):
    """Where each unit's map sits in its side's maps: the unit index itself (a backbone gives
    every unit), or the place of the name among the named layers (a tap gives those alone)."""
    return list(range(len(units))) if _named(units) else [int(unit) for unit in units]


def _map_forward(model, units, role):
    """`forward(images) -> maps` of `model` in inference mode: the named layers' maps through a
    `taps.FeatureTap` (built here, once; the same layout rule as the Distiller's), else every
    unit of a backbone with `forward_intermediates`."""
    if _named(units):
        tap = taps.FeatureTap(model, list(units), role)
        return lambda images: tap(images, training=False)[1]
    if not hasattr(model, "forward_intermediates"):
        raise ValueError(
            f"The spectral callbacks need feature maps, but the {role} "
            f"{getattr(model, 'name', model)!r} has no `forward_intermediates`; give its side of "
            "layer_pairs as layer names (any functional Keras model)."
        )
    return lambda images: model.forward_intermediates(images, indices=None, training=False)[1]


def _profile(maps, label, layer_names=None):
    """The profile of a side's maps (every unit, or the named layers with their names)."""
    profile = profile_maps(maps, name=label, entropy=False)
    if layer_names is not None:
        profile.layer_names = list(layer_names)
    return profile


# === The probe, compiled ===
def _probe_function(student, pairs, alignment="equal"):
    """The student's share of a log, as one function of `(images, teacher_maps)`, keras.ops only.

    Args:
        student: a backbone with `forward_intermediates`, or any functional model when the
            student side of `pairs` names layers.
        pairs: (student, teacher) layer pairs, unit indices or layer names; `teacher_maps` holds
            the teacher's map of each pair, in order (the frozen teacher's maps are computed
            once, elsewhere).
        alignment: the Distiller's grid rule, "equal" or "low_band" (`grid_alignment_of`).
    Returns:
        `probe(images, teacher_maps) -> (maps, pair_outputs)`: the student's (B, h, w, C) maps
        in inference mode (every unit of a backbone, or the named layers in pair order) and,
        per pair, `(spectral_pair_loss, rfft2(F_s))`, the rfft2 as (real, imag).
    """
    pairs = tuple(pairs)
    student_units = [s for s, _ in pairs]
    forward = _map_forward(student, student_units, "student")
    positions = _positions(student_units)

    def probe(images, teacher_maps):
        maps = forward(images)
        pair_outputs = []
        for position, teacher_map in zip(positions, teacher_maps):
            student_map = maps[position]
            pair_outputs.append((
                spectral.spectral_pair_loss(student_map, teacher_map, grid_alignment=alignment),
                spectral.rfft2(student_map),
            ))
        return maps, pair_outputs

    return probe


def _compile_reading(function, model):
    """`function` compiled once for the backend, reading `model`'s weights as they are at each call.

    Run eagerly, the probe's forward pass and pair math spend far longer dispatching hundreds of
    small ops than computing. TensorFlow: a `tf.function` (it reads the variables themselves).
    JAX: `jax.jit` of a stateless version that takes the model's variable values as arguments
    (a plain jit would bake the first call's weights in as constants). torch: eager, without
    autograd (torch.compile would need a compiler toolchain at run time).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # A partial has no __code__: TensorFlow's frequent-retracing warning then counts this
        # model's function alone, not every model's probe of a sweep (one trace each, by design).
        return tf.function(functools.partial(function), autograph=False)
    if backend == "jax":
        import jax

        variables = list(model.variables)

        @jax.jit
        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return function(*args)

        return lambda *args: stateless([variable.value for variable in variables], *args)

    def eager(*args):
        with no_grad():
            return function(*args)

    return eager


def _profile_and_maps(model, images, label, layer_names=None):
    """One inference pass of `model` (a frozen teacher's, once): its profile and maps as float
    numpy, kept for every later log: every unit of a backbone, or the `layer_names` (a tap).

    Eager on TensorFlow and torch. JAX compiles each op of an eager pass on its first use, so
    there one jit of the whole pass is faster even for a single call.
    """
    forward = _map_forward(model, layer_names or [], "teacher")
    if keras.backend.backend() == "jax":
        forward = _compile_reading(forward, model)
    with no_grad():
        maps = [to_float_array(m) for m in forward(images)]
    return _profile(maps, label, layer_names), maps


class SpectralTracker(keras.callbacks.Callback):
    """Adds how far the student's spectra are from its teacher's to every epoch's logs.

    For any training of a backbone, with or without distillation (a control run is measured
    against the same teacher). At each epoch's end one compiled inference pass of the student
    over `images` adds, so they reach the progress bar, log.csv and the history:

    - `level_distance`: `compare.level_distance`, the RMS difference of the student's and the
      teacher's L(X) over relative depth;
    - `profile_r`: `compare.profile_correlation`, Pearson r of the same two curves (shape only);
    - `spectral_gap`: the spectral alignment loss (SPEC.md 2) at `layer_pairs` on `images`,
      what SpectralKD minimises.

    Either side of `layer_pairs` may name layers of a functional model (a `keras.applications`
    or a user's CNN teacher), as in the Distiller: those maps come through `taps.FeatureTap`,
    the pair loss follows the Distiller's grid rule, and that side's profile is its named
    layers, in pair order (its relative depth is their position: list them shallow to deep).

    Args:
        teacher: the frozen teacher (profiled once): a backbone with `forward_intermediates`,
            or any functional model when its side of `layer_pairs` names layers.
        images: (N, H, W, 3) preprocessed images, run as one batch (a few hundred small ones).
        layer_pairs: `[(student, teacher), ...]` unit indices or layer names, for
            `spectral_gap`.
        student: the model to measure; None: the trained model's `student` (a Distiller's),
            else the trained model itself.
        grid_alignment: the Distiller's `grid_alignment` for maps on different grids; None: its
            default ("low_band" when a side names layers, else "equal"; SPEC.md 2.1).
    """

    def __init__(self, teacher, images, layer_pairs, student=None, grid_alignment=None):
        super().__init__()
        self.layer_pairs = tuple(tuple(pair) for pair in layer_pairs)
        if not self.layer_pairs:
            raise ValueError("SpectralTracker needs at least one layer pair for spectral_gap.")
        self.grid_alignment = grid_alignment_of(self.layer_pairs, grid_alignment)
        self.images = np.asarray(keras.ops.convert_to_numpy(images), dtype=np.float32)
        self.student = student
        teacher_units = [t for _, t in self.layer_pairs]
        self.teacher_profile, maps = _profile_and_maps(
            teacher, self.images, "teacher", teacher_units if _named(teacher_units) else None)
        self._teacher_maps = [maps[position] for position in _positions(teacher_units)]
        self._probe = None  # (student object, its compiled probe)
        self.profile = None  # the student's latest profile

    def measure(self):
        """The three numbers for the student's current weights (also sets `profile`)."""
        student = self.student or getattr(self.model, "student", self.model)
        if self._probe is None or self._probe[0] is not student:
            probe = _probe_function(student, self.layer_pairs, self.grid_alignment)
            self._probe = (student, _compile_reading(probe, student))
        maps, pair_outputs = self._probe[1](self.images, self._teacher_maps)
        student_units = [s for s, _ in self.layer_pairs]
        self.profile = _profile(maps, "student",
                                student_units if _named(student_units) else None)
        return {
            "level_distance": compare.level_distance(self.teacher_profile, self.profile),
            "profile_r": compare.profile_correlation(self.teacher_profile, self.profile),
            "spectral_gap": float(np.mean([keras.ops.convert_to_numpy(loss)
                                           for loss, _ in pair_outputs])),
        }

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.measure())


PANEL_MIN_SIDE = 192  # pixels: a 4x3 spectrum is drawn as 192x144 in cells of solid colour
PANEL_GAP = 8
_LOG_FLOOR = 1e-12  # an exactly zero bin would break the log scale


def render_pair_spectra(student, teacher, difference, cmap="magma"):
    """Draws `_mean_magnitudes`' three magnitudes side by side as one RGB image, without matplotlib.

    Each panel is log10 of the magnitudes through `cmap` (dark low, bright high), every bin an
    integer-upscaled block of one colour (bins stay visible, nothing is interpolated). Student
    and teacher share one colour range; the difference has its own. Rows are the vertical
    frequency (zero in the middle), columns the horizontal one (0 to Nyquist, left to right).
    Plain numpy, not a matplotlib figure, so logging every epoch stays cheap (docs/ecosystem.md).

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
        panels.append(np.repeat(np.repeat(rgb[::-1], scale, axis=0), scale, axis=1))
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
                    chart("pair level gap |L(student) - L(pooled teacher)|",
                          r"spectral/pair_level_gap$"),
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
    units = getattr(profile, "layer_names", None) or profile.units
    return {
        f"spectral/{role}/intensity/{_unit_tag(unit, 'unit_')}": float(value)
        for unit, value in zip(units, profile.intensity)
    }


def _unit_tag(unit, prefix=""):
    """A unit in a tag: `prefix` and two digits for an index, the name itself for a layer."""
    return unit if isinstance(unit, str) else f"{prefix}{unit:02d}"


def _label(model, role):
    return getattr(model, "name", None) or role


def _fixed_margins(figure):
    """Fixed margins instead of constrained layout, whose text measuring is most of the cost of
    drawing the one-axis intensity figure, at 100 dpi."""
    figure.set_layout_engine("none")
    figure.set_dpi(100)  # 1000x640 -> 500x320 pixels: a quarter of the rasterising and PNG work
    # (subplots_adjust is ignored after a constrained layout: place the axes directly.)
    for axis in figure.get_axes():
        axis.set_position([0.14, 0.17, 0.83, 0.71])  # left, bottom, width, height
    return figure


def _canvas_to_rgb(canvas):
    """Draws a matplotlib Agg canvas into a (H, W, 3) uint8 array (no PNG round trip)."""
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _summary(scalars, images):
    """One `Summary` proto of what `tf.summary.scalar` and `tf.summary.image` would write.

    Written at once (`write_raw_pb`), where those run several eager TensorFlow ops per value
    (checks, casts, PNG encoding, shape strings), which cost more than the work itself. Images are
    PNG-encoded by Pillow at its fastest zlib level (large blocks of one colour, a white figure:
    the files stay small).

    Args:
        scalars: tag -> float.
        images: tag -> ((h, w, 3) uint8 image, markdown description or None).
    """
    from PIL import Image
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.image import metadata as image_metadata
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.util import tensor_util

    summary = summary_pb2.Summary()
    for tag, (image, description) in images.items():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="png", compress_level=1)
        height, width = image.shape[:2]
        # tf.summary.image's layout: a string tensor [width, height, PNG bytes].
        encoded = np.array([str(width).encode(), str(height).encode(), buffer.getvalue()],
                           dtype=object)
        summary.value.add(
            tag=tag,
            tensor=tensor_util.make_tensor_proto(encoded),
            metadata=image_metadata.create_summary_metadata(None, description),
        )
    for tag, value in scalars.items():
        summary.value.add(
            tag=tag,
            tensor=tensor_util.make_tensor_proto(np.float32(value)),
            metadata=scalar_metadata.create_summary_metadata(None, None),
        )
    return summary
