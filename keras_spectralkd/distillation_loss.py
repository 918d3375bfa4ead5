"""SpectralKD's pair loss as a `keras.distillation.DistillationLoss`, for Keras' own Distiller.

    distiller = keras.distillation.Distiller(
        teacher, student,
        distillation_losses=[
            keras.distillation.LogitsDistillation(temperature=1.0, loss=keras.losses.KLDivergence()),
            SpectralDistillation(teacher_layer_name="blocks_23", student_layer_name="blocks_11"),
        ],
        distillation_loss_weights=[1.0, 2.0],
    )

`SpectralDistillation` computes SPEC.md 2's loss of ONE (student, teacher) pair (channel pooling,
float32 orthonormal rfft2, MSE over real and imaginary parts) by calling
`keras_spectralkd.spectral.spectral_pair_loss`; several pairs are several losses, whose weights
`SpectralDistillation.for_layer_pairs` sets so that their sum is our `Distiller`'s mean over pairs.

Keras' Distiller hands a feature loss the outputs of the two named layers. Transformer blocks
output token sequences, (B, prefix + h*w, C) (DeiT's blocks carry the class token first), not
maps: the loss lays them out on the (h, w) grid after dropping the leading prefix tokens. The grid
comes from the `grid` argument, or, for this package's backbones, from the model's `feature_info`
(looked up when the Distiller validates the loss, so naming the layers is enough).

When to use which Distiller: docs/ecosystem.md.
"""

import keras

from keras_spectralkd import spectral

__all__ = ["SpectralDistillation"]


def _check_grid(grid):
    if grid is None:
        return None
    try:
        height, width = (int(g) for g in grid)
        if height < 1 or width < 1 or (height, width) != tuple(grid):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"`grid` must be None or (H, W) with two positive ints; got {grid!r}.") from None
    return height, width


def _check_prefix(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be None or an int >= 0; got {value!r}.")
    return value


def _grid_from_feature_info(model, layer_name):
    """(h, w) of the unit that `layer_name` ends, from `model.feature_info`; None if unknown."""
    for info in getattr(model, "feature_info", None) or []:
        if info.get("module") == layer_name and info.get("grid") is not None:
            return tuple(int(g) for g in info["grid"])
    return None


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class SpectralDistillation(keras.distillation.DistillationLoss):
    """SpectralKD pair loss between a named teacher layer and a named student layer.

    The loss is `spectral_pair_loss(student_map, teacher_map)` (SPEC.md 2.1-2.4): the teacher's
    channels are average-pooled down to the student's, both maps go through the float32
    orthonormal 2D real FFT over their spatial axes, and the mean squared difference of real and
    imaginary parts is returned. Phase is kept. The teacher gets no gradient (Keras' Distiller
    freezes it).

    Layer outputs may be (B, H, W, C) maps (Swin stages) or token sequences (B, N, C) (ViT, DeiT,
    CaiT blocks). A sequence is laid out row-major on the (H, W) grid after dropping its leading
    prefix tokens (class and distillation tokens, which timm places first); the prefix count
    defaults to `N - H * W`.

    Args:
        teacher_layer_name: name of the teacher layer whose output is aligned (e.g. "blocks_23").
        student_layer_name: name of the student layer (e.g. "blocks_11").
        grid: (H, W) of the token grid, the same for both maps (SPEC.md 2.1). None: taken from
            the models' `feature_info` when Keras' Distiller validates this loss; required for
            token outputs of other models.
        teacher_prefix_tokens: leading tokens to drop from the teacher's sequence; None: N - H*W.
        student_prefix_tokens: the same for the student.

    Keras' Distiller runs the student a second time through a feature-extraction model to get
    the named layer's output; our `keras_spectralkd.Distiller` gets logits and every map from one
    forward pass (docs/ecosystem.md).
    """

    def __init__(
        self,
        teacher_layer_name,
        student_layer_name,
        grid=None,
        teacher_prefix_tokens=None,
        student_prefix_tokens=None,
    ):
        for argument, value in (
            ("teacher_layer_name", teacher_layer_name),
            ("student_layer_name", student_layer_name),
        ):
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"`{argument}` must be a layer name (a non-empty string); got {value!r}."
                )
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.grid = _check_grid(grid)
        self.teacher_prefix_tokens = _check_prefix("teacher_prefix_tokens", teacher_prefix_tokens)
        self.student_prefix_tokens = _check_prefix("student_prefix_tokens", student_prefix_tokens)
        self._resolved_grid = self.grid

    # === Construction helpers ===
    @classmethod
    def for_layer_pairs(cls, teacher, student, layer_pairs, spectral_weight=1.0):
        """One loss per `(student_unit, teacher_unit)` pair of two keras_spectralkd backbones.

        Unit indices are mapped to layer names through each model's `feature_info`, so the pairs
        of SPEC.md 4 (or `analysis.select_layer_pairs`) carry over unchanged.

        Args:
            teacher, student: backbones with `feature_info`.
            layer_pairs: `[(student_unit, teacher_unit), ...]`, 0-based.
            spectral_weight: the weight of the whole spectral term (`beta * w_fft` in SPEC.md 3).
        Returns:
            `(losses, weights)`: P losses and P weights `spectral_weight / P`, so that the
            weighted sum is `spectral_weight` times the mean over pairs, as in our Distiller.
        """
        from keras_spectralkd.distiller import normalize_layer_pairs

        pairs = normalize_layer_pairs(layer_pairs)
        if not pairs:
            raise ValueError("`layer_pairs` must name at least one (student, teacher) pair; got [].")
        names = {}
        for role, model in (("teacher", teacher), ("student", student)):
            info = getattr(model, "feature_info", None)
            if info is None:
                raise ValueError(
                    f"for_layer_pairs maps unit indices to layer names through `feature_info`, "
                    f"which the {role} {getattr(model, 'name', model)!r} lacks; build the "
                    "losses with SpectralDistillation(teacher_layer_name=..., "
                    "student_layer_name=...) instead."
                )
            names[role] = [entry["module"] for entry in info]
        losses = []
        for student_unit, teacher_unit in pairs:
            for role, unit in (("student", student_unit), ("teacher", teacher_unit)):
                if unit >= len(names[role]):
                    raise ValueError(
                        f"Layer pair {(student_unit, teacher_unit)}: {role} unit {unit} is out "
                        f"of range; the {role} has {len(names[role])} units "
                        f"(0..{len(names[role]) - 1})."
                    )
            losses.append(
                cls(
                    teacher_layer_name=names["teacher"][teacher_unit],
                    student_layer_name=names["student"][student_unit],
                )
            )
        weight = float(spectral_weight) / len(losses)
        return losses, [weight] * len(losses)

    # === DistillationLoss API ===
    def validate_model_compatibility(self, teacher, student):
        """Checks both layers exist in functional models, resolves the grid, checks the shapes.

        Called by Keras' Distiller at construction, so a missing layer, a grid mismatch or a
        student wider than the teacher fails there, not inside the first step.
        """
        outputs = {}
        for role, model, layer_name in (
            ("teacher", teacher, self.teacher_layer_name),
            ("student", student, self.student_layer_name),
        ):
            if getattr(model, "inputs", None) is None:
                raise ValueError(
                    f"SpectralDistillation reads the output of layer {layer_name!r}, which needs "
                    f"a functional or Sequential {role}; {getattr(model, 'name', model)!r} is "
                    "subclassed (no symbolic inputs). Use keras_spectralkd.Distiller, which "
                    "works through `forward_intermediates`, instead."
                )
            try:
                layer = model.get_layer(name=layer_name)
            except ValueError:
                names = [layer.name for layer in model.layers]
                raise ValueError(
                    f"The {role} {model.name!r} has no layer named {layer_name!r}; its layers "
                    f"are: {', '.join(names)}."
                ) from None
            outputs[role] = tuple(layer.output.shape)
        if self.grid is None:
            teacher_grid = _grid_from_feature_info(teacher, self.teacher_layer_name)
            student_grid = _grid_from_feature_info(student, self.student_layer_name)
            grids = {teacher_grid, student_grid} - {None}
            if len(grids) > 1:
                raise ValueError(
                    f"Spatial grids differ: teacher layer {self.teacher_layer_name!r} has grid "
                    f"{teacher_grid}, student layer {self.student_layer_name!r} has "
                    f"{student_grid}; the spectral loss needs equal (H, W)."
                )
            self._resolved_grid = grids.pop() if grids else None
        spectral.check_pair_shapes(
            self._map_shape(outputs["student"], "student"),
            self._map_shape(outputs["teacher"], "teacher"),
            (self.student_layer_name, self.teacher_layer_name),
        )

    def validate_outputs(self, teacher_outputs, student_outputs):
        for role, value in (("teacher", teacher_outputs), ("student", student_outputs)):
            if isinstance(value, (list, tuple, dict)):
                raise ValueError(
                    f"SpectralDistillation takes one tensor per model; the {role} layer gave a "
                    f"{type(value).__name__}."
                )

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """SPEC.md 2's pair loss of the two layer outputs; a float32 scalar."""
        teacher_map = self._to_map(teacher_outputs, self.teacher_prefix_tokens, "teacher")
        student_map = self._to_map(student_outputs, self.student_prefix_tokens, "student")
        return spectral.spectral_pair_loss(student_map, teacher_map)

    # === Token sequences -> maps ===
    def _map_shape(self, shape, role):
        if len(shape) == 4:
            return shape
        grid = self._require_grid(shape, role)
        return (shape[0],) + grid + (shape[-1],)

    def _require_grid(self, shape, role):
        if len(shape) != 3:
            raise ValueError(
                f"The {role} layer output must be a (B, H, W, C) map or a (B, N, C) token "
                f"sequence; got shape {shape}."
            )
        if self._resolved_grid is None:
            raise ValueError(
                f"The {role} layer gives tokens of shape {shape}; pass grid=(H, W) to "
                "SpectralDistillation to lay them out (found no `feature_info` to read it from)."
            )
        height, width = self._resolved_grid
        tokens = shape[1]
        if tokens is not None and tokens < height * width:
            raise ValueError(
                f"The {role} layer gives {tokens} tokens (shape {shape}), fewer than the "
                f"grid {self._resolved_grid} holds ({height * width})."
            )
        return self._resolved_grid

    def _to_map(self, x, prefix, role):
        shape = tuple(x.shape)
        if len(shape) == 4:
            return x
        height, width = self._require_grid(shape, role)
        if prefix is None:
            prefix = shape[1] - height * width
        if prefix:
            x = x[:, prefix:, :]
        return spectral.as_feature_map(x, (height, width), f"{role} map")

    # === Config ===
    def get_config(self):
        return {
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            "grid": None if self.grid is None else list(self.grid),
            "teacher_prefix_tokens": self.teacher_prefix_tokens,
            "student_prefix_tokens": self.student_prefix_tokens,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
