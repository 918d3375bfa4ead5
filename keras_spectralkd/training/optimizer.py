"""AdamW of the paper's recipe with timm's no-weight-decay set, and mixed-precision helpers.

SPEC.md 7: AdamW, weight decay 0.05, eps 1e-8, no gradient clipping. timm's rule
(`param_groups_weight_decay` with the model's `no_weight_decay()` names) exempts from decay:
- every 1-D weight: biases, LayerNorm scales and offsets, CaiT's LayerScale gammas;
- position embeddings, class (and distillation) tokens, and Swin's relative-position tables,
  whatever their rank.
Keras' AdamW applies decoupled decay `w -= lr * wd * w` as torch's `AdamW` does.
"""

import keras

# Variable-path fragments of timm's `no_weight_decay()` names, as our backbones name them.
NO_DECAY_NAME_FRAGMENTS = (
    "pos_embed",
    "position_embedding",
    "cls_token",
    "class_token",
    "dist_token",
    "relative_position_bias_table",
    "absolute_pos_embed",
)

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def is_no_decay_variable(variable):
    """timm's rule: 1-D weights, position embeddings, tokens and relative-position tables."""
    if len(variable.shape) <= 1:
        return True
    path = variable.path
    return any(fragment in path for fragment in NO_DECAY_NAME_FRAGMENTS)


def no_weight_decay_variables(model):
    """The trainable variables of `model` that AdamW must not decay (timm's rule)."""
    return [v for v in model.trainable_variables if is_no_decay_variable(v)]


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
        the optimizer (`AdamW`, or `LossScaleOptimizer` around it).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}.")
    if ema_momentum is not None and not 0.0 <= ema_momentum < 1.0:
        raise ValueError(f"ema_momentum must be in [0, 1) or None; got {ema_momentum!r}.")
    optimizer = keras.optimizers.AdamW(
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
