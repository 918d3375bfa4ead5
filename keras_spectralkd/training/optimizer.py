"""AdamW of the paper's recipe with timm's no-weight-decay set, and mixed-precision helpers.

SPEC.md 7: AdamW, weight decay 0.05, eps 1e-8, no gradient clipping. timm's rule
(`param_groups_weight_decay` with the model's `no_weight_decay()` names) exempts from decay:
- every 1-D weight: biases, LayerNorm scales and offsets, CaiT's LayerScale gammas;
- what the model itself declares in `no_weight_decay()` (our backbones, as timm's: position
  embeddings, class tokens, Swin's relative-position tables), whatever their rank.
The declared names are variable paths taken from the layers that own them, so renaming a layer
cannot silently change what is decayed; a declared path that is not one of the model's trainable
variables is an error. Keras' AdamW applies decoupled decay `w -= lr * wd * w` as torch's
`AdamW` does; its epsilon sits elsewhere, which `PyTorchAdamW` corrects (see there).
"""

import keras
from keras import ops

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class PyTorchAdamW(keras.optimizers.AdamW):
    """Keras' `AdamW` with PyTorch's epsilon placement, so training follows the reference's.

    PyTorch (and the reference, through timm) divides by `sqrt(v_hat) + eps`, the bias-corrected
    second moment plus epsilon (Algorithm 1 of Kingma and Ba). Keras adds epsilon to the raw
    `sqrt(v)` ("epsilon hat"), which equals an epsilon of `eps / sqrt(1 - beta_2^t)`: 31.6 times
    larger at step 1, still 3 times at step 100. For weights whose gradients are small (at
    initialisation, e.g. the query and key projections of attention) that damps the first
    hundreds of updates, and a 50-step run ends up to several percent away from PyTorch's
    (tests/training/test_trajectory.py). Everything else, variables included, is Keras' `AdamW`,
    so checkpoints of either load into the other.
    """

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        local_step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            self.assign(v_hat, ops.maximum(v_hat, v))
            v = v_hat
        # PyTorch's step: lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + eps).
        step_size = lr / (1 - beta_1_power)
        denominator = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(1 - beta_2_power)), self.epsilon)
        self.assign_sub(variable, ops.divide(ops.multiply(m, step_size), denominator))


def declared_no_decay_paths(model):
    """The paths `model.no_weight_decay()` declares (empty for a model without the method)."""
    declare = getattr(model, "no_weight_decay", None)
    if declare is None:
        return set()
    paths = set(declare())
    known = {variable.path for variable in model.trainable_variables}
    unknown = sorted(paths - known)
    if unknown:
        raise ValueError(
            f"{type(model).__name__}.no_weight_decay() names {unknown}, which are not trainable "
            f"variables of model {model.name!r}; expected variable paths such as "
            f"{sorted(known)[:3]}."
        )
    return paths


def _exempt(variable, declared_paths):
    """timm's rule: a 1-D weight, or one the model declares in `no_weight_decay()`."""
    return len(variable.shape) <= 1 or variable.path in declared_paths


def is_no_decay_variable(variable, model):
    """timm's rule for one variable of `model`: 1-D, or declared by `model.no_weight_decay()`."""
    return _exempt(variable, declared_no_decay_paths(model))


def no_weight_decay_variables(model):
    """The trainable variables of `model` that AdamW must not decay (timm's rule)."""
    declared = declared_no_decay_paths(model)
    return [variable for variable in model.trainable_variables if _exempt(variable, declared)]


def create_optimizer(
    learning_rate,
    model=None,
    weight_decay=0.05,
    epsilon=1e-8,
    beta_1=0.9,
    beta_2=0.999,
    loss_scale=False,
    ema_momentum=None,
):
    """AdamW (SPEC.md 7) with timm's no-decay set taken from `model`.

    Args:
        learning_rate: a float or a `LearningRateSchedule` (e.g. `WarmupCosineDecay`).
        model: the model being trained (the student, not the Distiller); its no-decay variables
            are excluded from weight decay. Must be built. None: every variable is decayed.
        weight_decay: decoupled weight decay (0.05 in the paper).
        epsilon: Adam's epsilon (1e-8).
        beta_1, beta_2: Adam's betas (0.9, 0.999: torch's defaults, the reference's).
        loss_scale: wrap in `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling), needed
            for float16 training.
        ema_momentum: keep an exponential moving average of the weights with this decay per
            optimizer step (Keras' `use_ema=True`; 0.99996 in the paper, `ema.EMA_DECAY`);
            None: no average. See `training/ema.py`.
    Returns:
        the optimizer (`PyTorchAdamW`, or `LossScaleOptimizer` around it).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}.")
    if ema_momentum is not None and not 0.0 <= ema_momentum < 1.0:
        raise ValueError(f"ema_momentum must be in [0, 1) or None; got {ema_momentum!r}.")
    optimizer = PyTorchAdamW(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        use_ema=ema_momentum is not None,
        ema_momentum=0.99 if ema_momentum is None else float(ema_momentum),
    )
    if model is not None:
        if not model.built:
            raise ValueError(
                f"Model {model.name!r} must be built before the optimizer is made (its "
                "variables decide the no-decay set)."
            )
        # By identity, not by name: Keras matches `var_names` against the short variable name
        # ("kernel", "bias"), which cannot tell a position embedding from a Dense kernel.
        optimizer.exclude_from_weight_decay(var_list=no_weight_decay_variables(model))
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def set_precision(precision):
    """Sets Keras' global dtype policy; build the models after calling it.

    `"mixed_bfloat16"` and `"mixed_float16"` compute in 16 bits with float32 variables; the
    spectral loss is computed in float32 regardless (the Distiller casts the maps). float16 also
    needs loss scaling: `create_optimizer(..., loss_scale=True)`.
    Returns whether loss scaling is needed.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; expected one of {PRECISIONS}.")
    keras.config.set_dtype_policy(precision)
    return precision == "mixed_float16"
