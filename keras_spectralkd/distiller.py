"""`Distiller`: trains a student from a frozen teacher with SpectralKD (SPEC.md section 3).

    L = (1 - alpha) * CE_ls(z_s, y) + alpha * KD(z_s, z_t) + beta * spectral_weight * L_spectral

It is a `keras.Model`: compile it, `fit` it, and every Keras feature keeps working (callbacks,
metrics, `tf.distribute`, `keras.distribution`, all three backends), because only `call`,
`compute_loss` and `compute_metrics` are overridden, never `train_step`.

Feature maps come one of two ways, chosen per model by how `layer_pairs` names its side:
- unit indices (ints): the backbone protocol (SPEC.md 1, `keras_spectralkd.models.backbone`),
  `forward_intermediates(images, indices, training) -> (logits, maps)` with (B, h, w, C) maps in
  the order of `indices`, and preferably `feature_info` (a list of dicts with `num_chs` and
  `grid`), which lets the Distiller check the layer pairs when it is built instead of failing
  inside a step;
- layer names (strs): any functional or Sequential model (a `keras.applications` CNN, a keras-hub
  backbone, ours): `keras_spectralkd.taps.FeatureTap` builds once a functional model whose
  outputs are the logits and the named layers' outputs, and lays each out as a (B, h, w, C) map
  ((B, C, H, W) maps and (B, N, C) token sequences included; the rules are in `taps`).
Either way each model runs ONCE per step. For modes `"none"`, `"soft"` and `"hard"` without layer
pairs any classifier that maps images to logits works; `"soft"` and `"hard"` compare the two
models' logits class by class, so their heads must have the same number of classes.
"""

import math
import operator

import keras
from keras import ops

from keras_spectralkd import _low_precision, spectral, taps

MODES = ("soft", "hard", "fft", "none")


def _scale_for_replicas(value):
    """Divides by the replica count under `tf.distribute` (SPEC.md 9), else the identity.

    Each replica's gradient is summed across replicas by `tf.distribute`; a per-replica mean loss
    divided by the replica count makes that sum the global mean.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            return value / float(replicas)
    return value


def _check_number(name, value, low=None, high=None, low_open=False, high_open=False):
    """`value` as a float, or a ValueError naming `name`, the value and the range expected.

    Booleans and strings are refused (`alpha=True` or `"0.9"` is a slip, not a weight), and so are
    NaN and infinities, which no comparison against a bound catches.
    """
    if high is not None:
        bound = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        bound = f" > {low}" if low_open else f" >= {low}"
    else:
        bound = ""
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(
            f"`{name}` must be a number{bound}; got {value!r} (a {type(value).__name__})."
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number{bound}; got {value!r}.") from None
    if not math.isfinite(number):
        raise ValueError(f"`{name}` must be a finite number{bound}; got {number!r}.")
    if (low is not None and (number < low or (low_open and number == low))) or (
        high is not None and (number > high or (high_open and number == high))
    ):
        raise ValueError(f"`{name}` must be{bound}; got {number!r}.")
    return number


def _unit_index(unit):
    """`unit` as an int if it is one (Python or NumPy), else None: 1.0, 1.5, "1", True are not."""
    if isinstance(unit, bool):
        return None
    try:
        return operator.index(unit)
    except TypeError:
        return None


def _unit(unit):
    """A pair's entry as an int unit index or a layer name (a non-empty str), else None."""
    if isinstance(unit, str):
        return unit if unit else None
    return _unit_index(unit)


def normalize_layer_pairs(layer_pairs):
    """Checks `[(student, teacher), ...]`; returns a list of tuples of ints or layer names.

    Each side is either unit indices (ints, of a backbone with `forward_intermediates`) or layer
    names (strs, of a functional model), the same kind throughout that side. Unit indices must be
    strictly increasing (the reference sorts each list and pairs them by position; we take
    explicit pairs and reject anything that sorting would silently reorder); names, which no
    one sorts, may come in any order. Nothing may be paired twice.
    """
    if layer_pairs is None:
        return []
    if isinstance(layer_pairs, str):
        raise ValueError(
            f"`layer_pairs` must be a list of (student_unit, teacher_unit) pairs; got the string "
            f"{layer_pairs!r} (parse flag values with "
            "keras_spectralkd.analysis.parse_layer_pairs)."
        )
    try:
        given = list(layer_pairs)
    except TypeError:
        raise ValueError(
            f"`layer_pairs` must be a list of (student_unit, teacher_unit) pairs; got "
            f"{layer_pairs!r}."
        ) from None
    if len(given) == 2 and all(_unit(unit) is not None for unit in given):
        raise ValueError(
            f"`layer_pairs` must be a list of (student_unit, teacher_unit) pairs; got "
            f"{layer_pairs!r}, one pair not in a list (write [{tuple(given)!r}])."
        )
    pairs = []
    for pair in given:
        try:
            student_unit, teacher_unit = pair
        except (TypeError, ValueError):
            student_unit = teacher_unit = None
        student_unit, teacher_unit = _unit(student_unit), _unit(teacher_unit)
        if student_unit is None or teacher_unit is None:
            raise ValueError(
                f"Each layer pair must be (student, teacher), each a unit index (int) or a layer "
                f"name (non-empty str); got {pair!r} in layer_pairs={given!r}."
            )
        if any(isinstance(unit, int) and unit < 0 for unit in (student_unit, teacher_unit)):
            raise ValueError(
                f"Layer pair {(student_unit, teacher_unit)} in layer_pairs={given!r}: unit "
                "indices are 0-based and non-negative."
            )
        pairs.append((student_unit, teacher_unit))
    for side, position in (("student", 0), ("teacher", 1)):
        units = [pair[position] for pair in pairs]
        kinds = {type(unit) for unit in units}
        if len(kinds) > 1:
            raise ValueError(
                f"The {side} side of layer_pairs={pairs} mixes unit indices and layer names; "
                "give one kind per side (names for a functional model, indices for a backbone "
                "with forward_intermediates)."
            )
        repeated = sorted({unit for unit in units if units.count(unit) > 1})
        if repeated:
            raise ValueError(
                f"Duplicated {side} units {repeated} in layer_pairs={pairs}; each unit pairs once."
            )
        if kinds == {int} and units != sorted(units):
            raise ValueError(
                f"The {side} units of layer_pairs={pairs} are not increasing; list the pairs in "
                "order, with both student and teacher units increasing."
            )
    return pairs


def _named(units):
    """Whether one side of normalised layer pairs names layers (else it indexes units)."""
    return bool(units) and isinstance(units[0], str)


def _num_units(model, info):
    """How many indexable units `model` has (from `feature_info`, else `num_units`), or None."""
    if info is not None:
        return len(info)
    count = getattr(model, "num_units", None)
    return count if isinstance(count, int) else None


def _check_input_keys(inputs):
    """ValueError for a dict input without images or with keys the Distiller does not take."""
    keys = set(inputs)
    if "images" not in keys or keys - {"images", "teacher_logits", "teacher_maps"}:
        raise ValueError(
            "A dict input must hold 'images' and, for cached teacher outputs, 'teacher_logits' "
            f"and 'teacher_maps'; got keys {sorted(keys)}.")


def _check_model(role, model):
    """A teacher or student that is not a Keras model (a model name, a path, a function) fails
    here instead of with an AttributeError inside Keras."""
    if model is None or isinstance(model, keras.layers.Layer):
        return
    hint = ""
    if isinstance(model, str):
        hint = (f" (build one with keras_spectralkd.models.create({model!r}) or load one with "
                "keras.saving.load_model)")
    raise ValueError(
        f"`{role}` must be a Keras model mapping (B, H, W, C) images to logits; got "
        f"{model!r}, a {type(model).__name__}{hint}."
    )


def _num_classes(model):
    """The size of the model's logits when its output shape is known (a functional or built
    model with one output), else None."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(shape, tuple) and len(shape) >= 2 and isinstance(shape[-1], int):
        return shape[-1]
    return None


def _last_dim(logits):
    """The static size of the last axis of `logits` (a tensor), else None."""
    shape = getattr(logits, "shape", None)
    return shape[-1] if shape else None


def _input_shape(model):
    """The model's image shape (H, W, C) when it declares one, else None."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    return tuple(inputs[0].shape[1:])


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class Distiller(keras.Model):
    """SpectralKD distillation of `student` from a frozen `teacher`.

    Args:
        teacher: the teacher model (frozen here, run in inference mode, no gradient). May be None
            only for `mode="none"`. For `"soft"` and `"hard"` its head has the student's classes.
        student: the student model (another object than the teacher); the only trainable part.
        layer_pairs: `[(student, teacher), ...]`, the maps aligned by the spectral loss; None or
            [] for no spectral term. Each side is either unit indices of a backbone (0-based,
            increasing; SPEC.md 4 lists the paper's pairs,
            `keras_spectralkd.analysis.select_layer_pairs` derives them) or layer names of a
            functional model, e.g. `[("conv3_block4_out", "conv4_block6_out")]`.
        mode: `"soft"` (CE + soft KD + spectral), `"hard"` (CE + hard KD + spectral), `"fft"`
            ((1 - alpha) CE + spectral, no logit KD) or `"none"` (CE only, full weight).
        alpha: weight of the logit KD term, in [0, 1]; CE gets (1 - alpha).
        beta: global weight of the spectral term (>= 0).
        spectral_weight: `w_fft`, the spectral term's weight (>= 0); 0.2 for DeiT students, 0.05
            for Swin (SPEC.md 4).
        temperature: soft-KD temperature tau (> 0).
        label_smoothing: label smoothing of the CE term, in [0, 1).
        teacher_dtype: None (the teacher as given) or "bfloat16" / "float16": the frozen teacher
            then runs as a copy whose weights and computations are in that dtype (a cheaper
            forward where the hardware has fast low-precision units, half the teacher's weight
            memory); `self.teacher` is that copy, so drop your own float32 teacher to free it.
            The student keeps its policy; the KD and spectral terms are still formed in float32.
        grid_alignment: what a pair of maps on different spatial grids does (SPEC.md 2.1):
            "equal" (a ValueError at construction: the paper's setting), "low_band" (compare the
            frequencies of the common grid (min H, min W)), or None: "equal" when every pair
            is given by unit indices, "low_band" when a side names layers (a CNN's 7x7 stage
            against a ViT's 14x14 block is then the expected case, not a mistake).

    Soft KD is `tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau))` summed over classes and
    averaged over the batch (PyTorch `reduction="batchmean"`, as the SpectralKD reference). DeiT's
    own code divides by batch * classes instead, i.e. its KD term is `num_classes` times smaller.

    Labels may be integer class ids (B,) or one-hot / soft targets (B, K) (e.g. from MixUp);
    smoothing is applied to both: `(1 - ls) * y + ls / K`.

    Logged metrics: `loss` (total), `ce_loss`, and only where the mode uses them `kd_loss`
    (modes "soft", "hard"), `spectral_loss` and one `spectral_loss_pair_{i}` per pair (in the
    order of `layer_pairs`), plus compiled metrics on the student's logits. The trackers of
    unused terms are None. `evaluate` and `predict` use the student only; the evaluation loss is
    the plain cross-entropy (no smoothing), as the reference evaluates.
    """

    def __init__(
        self,
        teacher,
        student,
        layer_pairs=None,
        mode="soft",
        alpha=0.9,
        beta=1.0,
        spectral_weight=0.2,
        temperature=1.0,
        label_smoothing=0.1,
        teacher_dtype=None,
        grid_alignment=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; expected one of {MODES}.")
        self.mode = mode
        self.alpha = _check_number("alpha", alpha, 0.0, 1.0)
        self.beta = _check_number("beta", beta, 0.0)
        self.spectral_weight = _check_number("spectral_weight", spectral_weight, 0.0)
        self.temperature = _check_number("temperature", temperature, 0.0, low_open=True)
        self.label_smoothing = _check_number("label_smoothing", label_smoothing, 0.0, 1.0,
                                             high_open=True)
        if student is None:
            raise ValueError("`student` is required; got None.")
        if teacher is None and mode != "none":
            raise ValueError(f"mode={mode!r} needs a teacher; got teacher=None.")
        for role, model in (("teacher", teacher), ("student", student)):
            _check_model(role, model)
        if teacher is student:
            raise ValueError(
                f"The teacher and the student are the same model {student.name!r}; the teacher "
                "is frozen, so nothing would train. Pass a separate student (e.g. "
                "keras.models.clone_model(teacher) for self-distillation)."
            )
        if mode in ("soft", "hard"):
            self._check_class_counts(teacher, student, _num_classes(teacher),
                                     _num_classes(student))
        self.layer_pairs = normalize_layer_pairs(layer_pairs)
        if mode == "none" and self.layer_pairs:
            raise ValueError(
                f"mode='none' trains with cross-entropy only, but layer_pairs={self.layer_pairs} "
                "were given; drop them or pick mode 'fft', 'soft' or 'hard'."
            )
        if mode == "fft" and not self.layer_pairs:
            raise ValueError("mode='fft' needs at least one layer pair; got layer_pairs=[].")
        if grid_alignment is not None:
            spectral.check_grid_alignment(grid_alignment)
        self.grid_alignment = grid_alignment
        named = _named(self.student_units) or _named(self.teacher_units)
        self._alignment = grid_alignment or ("low_band" if named else "equal")
        self.teacher_dtype = _low_precision.check_teacher_dtype(teacher_dtype)
        # The maps of named layers: one multi-output functional model per side, built once here
        # (after the teacher's low-precision copy, which it must share weights with). Stored
        # outside Keras' tracking: they share every layer with the models, which are tracked.
        object.__setattr__(self, "_taps", {})
        if self.layer_pairs:
            if _named(self.student_units):
                self._taps["student"] = taps.FeatureTap(student, self.student_units, "student")
            if _named(self.teacher_units):
                self._taps["teacher"] = taps.FeatureTap(teacher, self.teacher_units, "teacher")
            self._check_pairs_against_models(teacher, student)
        if teacher is not None and self.teacher_dtype:
            teacher = _low_precision.in_dtype(teacher, self.teacher_dtype)
            if "teacher" in self._taps:
                self._taps["teacher"] = taps.FeatureTap(teacher, self.teacher_units, "teacher")
        self.teacher = teacher
        self.student = student
        if teacher is not None:
            teacher.trainable = False

        # Only the terms this mode uses are tracked: no all-zero columns in the logs.
        uses_kd = mode in ("soft", "hard")
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.kd_tracker = keras.metrics.Mean(name="kd_loss") if uses_kd else None
        self.spectral_tracker = (
            keras.metrics.Mean(name="spectral_loss") if self.layer_pairs else None
        )
        self.pair_trackers = [
            keras.metrics.Mean(name=f"spectral_loss_pair_{i}") for i in range(len(self.layer_pairs))
        ]

    # === Validation ===
    def _check_class_counts(self, teacher, student, teacher_classes, student_classes):
        """Logit KD compares the two heads class by class: refuse heads of different sizes here,
        before a backend op fails on the shapes (or `hard` silently one-hots out of range)."""
        if teacher_classes is None or student_classes is None:
            return
        if int(teacher_classes) == int(student_classes):
            return
        raise ValueError(
            f"mode={self.mode!r} distils the teacher's logits into the student's, so both heads "
            f"need the same classes; the teacher {teacher.name!r} has {int(teacher_classes)} "
            f"classes and the student {student.name!r} has {int(student_classes)}. Give both the "
            "dataset's num_classes, or use mode='fft' (spectral term only) or 'none'."
        )

    def _check_pairs_against_models(self, teacher, student):
        """Checks each pair's maps where their shapes are known before a step: from the taps
        (named layers) or `feature_info` (unit indices)."""
        shapes = {}
        for role, model, units in (("teacher", teacher, self.teacher_units),
                                   ("student", student, self.student_units)):
            if role in self._taps:
                shapes[role] = self._taps[role].map_shapes
            else:
                shapes[role] = self._unit_shapes(role, model, units)
        for index, pair in enumerate(self.layer_pairs):
            student_shape, teacher_shape = shapes["student"][index], shapes["teacher"][index]
            if student_shape is None or teacher_shape is None:
                continue
            spectral.check_pair_shapes(student_shape, teacher_shape, pair, self._alignment)

    def _unit_shapes(self, role, model, units):
        """(None, h, w, C) of each unit from `feature_info` (None per unit where unknown), after
        checking that the model has `forward_intermediates` and that the units are in range."""
        if not hasattr(model, "forward_intermediates"):
            raise ValueError(
                f"layer_pairs={self.layer_pairs} need feature maps, but the {role} "
                f"{getattr(model, 'name', model)!r} has no `forward_intermediates`; use a "
                "keras_spectralkd backbone, name its layers (a functional model), or drop the "
                "pairs."
            )
        info = getattr(model, "feature_info", None)
        count = _num_units(model, info)
        for pair, unit in zip(self.layer_pairs, units):
            if count is not None and unit >= count:
                raise ValueError(
                    f"Layer pair {pair}: {role} unit {unit} is out of range; the {role} has "
                    f"{count} units (0..{count - 1})."
                )
        if info is None:
            return [None] * len(units)
        return [(None,) + tuple(info[unit].get("grid", (None, None))) + (info[unit].get("num_chs"),)
                for unit in units]

    # === Forward ===
    def build(self, input_shape):
        """Builds a teacher or student that is not built yet (a subclassed model makes its weights
        on its first call) with one symbolic call, so every weight exists before the first step
        (JAX's stateless step needs them)."""
        if isinstance(input_shape, dict):  # images with cached teacher outputs
            _check_input_keys(input_shape)
            input_shape = input_shape["images"]
        images = keras.KerasTensor(tuple(input_shape))
        for model in (self.teacher, self.student):
            if model is not None and not model.built:
                model(images)
        self.built = True

    @property
    def student_units(self):
        return [pair[0] for pair in self.layer_pairs]

    @property
    def teacher_units(self):
        return [pair[1] for pair in self.layer_pairs]

    def call(self, inputs, training=False):
        """The student's logits; in training, a dict from ONE forward pass of each model:
        `logits` and `maps` (the student units of `layer_pairs`), plus, in every mode but
        "none", the frozen teacher's `teacher_logits` and `teacher_maps`.

        `inputs`: images, or a dict `{"images", "teacher_logits", "teacher_maps"}` whose teacher
        outputs were computed beforehand (`keras_spectralkd.TeacherCache`; the maps in the order
        of the teacher's side of `layer_pairs`): then the teacher does not run.

        The teacher runs first: its transient buffers are freed before the student's forward
        starts keeping activations for the backward pass, instead of being allocated on top of
        them (a lower peak memory on the eager torch backend; docs/performance.md)."""
        inputs, cached = self._split_inputs(inputs)
        self._check_images(inputs)
        if not training:
            return self.student(inputs, training=False)
        outputs = {}
        if self.mode != "none":
            outputs["teacher_logits"], outputs["teacher_maps"] = (
                cached if cached is not None else self._teacher_outputs(inputs))
        if self.layer_pairs:
            logits, maps = self._intermediates("student", inputs, training=True)
            outputs.update(logits=logits, maps=maps)
        else:
            outputs.update(logits=self.student(inputs, training=True), maps=[])
        if self.mode in ("soft", "hard"):
            # Heads unknown at construction (not built, no output shape) are checked here, on
            # the static shapes of the first step's logits.
            self._check_class_counts(self.teacher, self.student,
                                     _last_dim(outputs["teacher_logits"]),
                                     _last_dim(outputs["logits"]))
        return outputs

    def _split_inputs(self, inputs):
        """(images, None), or (images, (teacher_logits, teacher_maps)) for a dict of images
        with cached teacher outputs (checked: the keys, one map per layer pair, 4-D maps)."""
        if not isinstance(inputs, dict):
            return inputs, None
        _check_input_keys(inputs)
        if "teacher_logits" not in inputs:
            return inputs["images"], None
        maps = inputs.get("teacher_maps")
        maps = [] if maps is None else maps
        if not isinstance(maps, (list, tuple)):
            raise ValueError(
                "'teacher_maps' must be a list or tuple of (B, h, w, C) maps, one per layer pair; "
                f"got one array of shape {tuple(getattr(maps, 'shape', ()))} (a tf.data map "
                "function turns a returned list into one tensor: return a tuple).")
        if self.mode == "none":
            raise ValueError("mode='none' uses no teacher; got cached teacher outputs.")
        if len(maps) != len(self.layer_pairs):
            raise ValueError(
                f"Cached teacher outputs hold {len(maps)} map(s), but layer_pairs="
                f"{self.layer_pairs} needs one per pair, in the order of the teacher units "
                f"{self.teacher_units}.")
        for unit, feature_map in zip(self.teacher_units, maps):
            if len(feature_map.shape) != 4:
                raise ValueError(
                    f"The cached teacher map of unit {unit!r} must be (B, h, w, C); got shape "
                    f"{tuple(feature_map.shape)}.")
        return inputs["images"], (ops.stop_gradient(inputs["teacher_logits"]),
                                  [ops.stop_gradient(m) for m in maps])

    def _check_images(self, images):
        """Images whose static (H, W, C) contradicts a model's input: a clear error now instead
        of a shape error deep inside a layer."""
        shape = tuple(getattr(images, "shape", ()))[1:]
        for role, model in (("student", self.student), ("teacher", self.teacher)):
            expected = _input_shape(model) if model is not None else None
            if expected is None:
                continue
            if len(shape) != len(expected):
                raise ValueError(
                    f"Images must be a (B, H, W, C) batch like the {role}'s input "
                    f"{(None,) + expected}; got shape {tuple(images.shape)}."
                )
            if any(d is not None and e is not None and int(d) != int(e)
                   for d, e in zip(shape, expected)):
                got = tuple(None if d is None else int(d) for d in shape)
                raise ValueError(
                    f"Images of shape {got} (H, W, C) do not fit the {role}, which takes "
                    f"{expected}; resize the images or build the models with that image_size."
                )

    def _intermediates(self, role, x, training):
        """The logits and maps of the student or teacher at its side of `layer_pairs`, from one
        forward: the tap of named layers, or `forward_intermediates` of unit indices (with
        out-of-range units of a backbone without `feature_info` and maps that are not
        (B, H, W, C) reported as ValueErrors at the first step)."""
        if role in self._taps:
            return self._taps[role](x, training=training)
        model = self.student if role == "student" else self.teacher
        units = self.student_units if role == "student" else self.teacher_units
        try:
            logits, maps = model.forward_intermediates(x, indices=units, training=training)
        except (KeyError, IndexError) as error:
            raise ValueError(
                f"The {role} {model.name!r} failed to return the maps of units {units} of "
                f"layer_pairs={self.layer_pairs} ({type(error).__name__}: {error}); a unit is "
                f"probably out of range (the {role} has no `feature_info` or `num_units` to "
                "check the pairs against at construction)."
            ) from None
        maps = list(maps)
        if len(maps) != len(units):
            raise ValueError(
                f"The {role} {model.name!r} returned {len(maps)} maps for units {units}; "
                f"forward_intermediates must return one map per requested unit."
            )
        for unit, feature_map in zip(units, maps):
            if len(feature_map.shape) != 4:
                raise ValueError(
                    f"The {role} {model.name!r} returned a map of shape "
                    f"{tuple(feature_map.shape)} for unit {unit}; the Distiller needs (B, H, W, C) "
                    "maps from forward_intermediates (lay (B, N, C) tokens out on their grid)."
                )
        return logits, maps

    def _teacher_outputs(self, x):
        if self.layer_pairs:
            logits, maps = self._intermediates("teacher", x, training=False)
        else:
            logits, maps = self.teacher(x, training=False), []
        return ops.stop_gradient(logits), [ops.stop_gradient(m) for m in maps]

    # === Loss ===
    def _targets(self, y, num_classes, smoothing):
        y = ops.convert_to_tensor(y)
        if len(y.shape) == 1 or (len(y.shape) == 2 and y.shape[-1] == 1):
            ids = ops.cast(ops.reshape(y, (-1,)), "int32")
            # A class id outside [0, num_classes) would one-hot to all zeros and train silently
            # on a wrong target; inside a compiled step it cannot raise, so its target row is
            # NaN: the loss turns NaN and `training.StopOnNonFiniteLoss` stops the run, naming
            # this cause (docs/errors.md D13).
            valid = ops.logical_and(ids >= 0, ids < num_classes)
            y = ops.where(ops.expand_dims(valid, -1),
                          ops.one_hot(ops.clip(ids, 0, num_classes - 1), num_classes,
                                      dtype="float32"), float("nan"))
        elif len(y.shape) != 2 or y.shape[-1] != num_classes:
            raise ValueError(
                f"Labels must be class ids (B,) or targets (B, {num_classes}); got shape "
                f"{tuple(y.shape)}."
            )
        y = ops.cast(y, "float32")
        if smoothing:
            y = (1.0 - smoothing) * y + smoothing / num_classes
        return y

    @staticmethod
    def _cross_entropy(targets, logits):
        return ops.mean(-ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1))

    def _kd_loss(self, student_logits, teacher_logits):
        if self.mode == "hard":
            teacher_labels = ops.one_hot(ops.argmax(teacher_logits, axis=-1), student_logits.shape[-1])
            return self._cross_entropy(ops.cast(teacher_labels, "float32"), student_logits)
        tau = self.temperature
        teacher_log_probs = ops.log_softmax(teacher_logits / tau, axis=-1)
        student_log_probs = ops.log_softmax(student_logits / tau, axis=-1)
        kl = ops.sum(ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
        return (tau * tau) * ops.mean(kl)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if sample_weight is not None:
            raise ValueError(
                "Distiller does not support sample_weight (the reference has none); got one."
            )
        if y is None:
            raise ValueError("Distiller needs labels: fit/evaluate it on (images, labels) data.")
        if y_pred is None:
            y_pred = self(x, training=training)
        if not isinstance(y_pred, dict):  # inference: the student alone, plain CE
            logits = ops.cast(y_pred, "float32")
            loss = self._cross_entropy(self._targets(y, logits.shape[-1], 0.0), logits)
            return _scale_for_replicas(loss)

        logits = ops.cast(y_pred["logits"], "float32")
        targets = self._targets(y, logits.shape[-1], self.label_smoothing)
        ce = self._cross_entropy(targets, logits)
        zero = ops.zeros((), "float32")
        kd, spectral_loss, pair_losses = zero, zero, []
        if self.mode == "none":
            total = ce
        else:
            if "teacher_logits" in y_pred:
                teacher_logits, teacher_maps = y_pred["teacher_logits"], y_pred["teacher_maps"]
            else:  # a y_pred made without the teacher (e.g. by the caller)
                images, cached = self._split_inputs(x)
                teacher_logits, teacher_maps = (
                    cached if cached is not None else self._teacher_outputs(images))
            total = (1.0 - self.alpha) * ce
            if self.mode in ("soft", "hard"):
                kd = self._kd_loss(logits, ops.cast(teacher_logits, "float32"))
                total = total + self.alpha * kd
            if self.layer_pairs:
                spectral_loss, pair_losses = spectral.spectral_alignment_loss(
                    y_pred["maps"], teacher_maps, return_pair_losses=True,
                    grid_alignment=self._alignment,
                )
                total = total + (self.beta * self.spectral_weight) * spectral_loss
        batch = ops.shape(logits)[0]
        self.ce_tracker.update_state(ce, sample_weight=batch)
        if self.kd_tracker is not None:
            self.kd_tracker.update_state(kd, sample_weight=batch)
        if self.spectral_tracker is not None:
            self.spectral_tracker.update_state(spectral_loss, sample_weight=batch)
        for tracker, value in zip(self.pair_trackers, pair_losses):
            tracker.update_state(value, sample_weight=batch)
        return _scale_for_replicas(total)

    # === Metrics ===
    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        training = isinstance(y_pred, dict)
        logits = y_pred["logits"] if training else y_pred
        results = super().compute_metrics(x, y, logits, sample_weight=sample_weight)
        terms = [self.ce_tracker, self.kd_tracker, self.spectral_tracker] + self.pair_trackers
        terms = [tracker for tracker in terms if tracker is not None]
        if not training:  # evaluation runs the student alone: the KD terms mean nothing there
            for tracker in terms:
                results.pop(tracker.name, None)
        return results

    # === Config ===
    def get_config(self):
        config = super().get_config()
        config.update(
            teacher=None if self.teacher is None else keras.saving.serialize_keras_object(self.teacher),
            student=keras.saving.serialize_keras_object(self.student),
            layer_pairs=[list(pair) for pair in self.layer_pairs],
            mode=self.mode,
            alpha=self.alpha,
            beta=self.beta,
            spectral_weight=self.spectral_weight,
            temperature=self.temperature,
            label_smoothing=self.label_smoothing,
            teacher_dtype=self.teacher_dtype,
            grid_alignment=self.grid_alignment,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
