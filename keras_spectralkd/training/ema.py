"""The student's exponential moving average (EMA), kept by the optimizer, evaluated beside it.

The EMA is Keras' own: `create_optimizer(..., ema_momentum=0.99996)` makes the optimizer keep
`ema = m * ema + (1 - m) * w` over the trainable weights inside its compiled update, once per
optimizer step (the paper's decay is per step, SPEC.md 7), on every backend; the average is an
optimizer variable, so checkpoints hold it. This module adds what Keras leaves out:

- `EMAEvaluation`: evaluates the averaged weights at each epoch end, beside the raw ones that
  `fit` validates, logging `ema_val_*` next to `val_*` (`keras.callbacks.SwapEMAWeights` alone
  would validate only the average);
- `ema_weights(model)`: a context in which the model holds the average (to save or evaluate it).

Two differences from timm's `ModelEma` (the reference keeps one, never evaluated): Keras starts
the average at the weights after the first step, timm at the initial weights (the two then
differ by `m**n * (w_1 - w_0)` after n steps: 1/e of one step's change after 25k steps at
m = 0.99996, nothing by the end of a 400-epoch run); and Keras averages the trainable weights
only (our backbones have no other state that training changes).
"""

import contextlib

import keras

EMA_DECAY = 0.99996  # SPEC.md 7, per optimizer step


def classification_metrics(num_classes):
    """`accuracy` (top-1) and, when there are more than 5 classes, `top5` (top-5)."""
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if num_classes is not None and num_classes > 5:
        metrics.append(TopKAccuracy(k=5, name="top5"))
    return metrics


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class TopKAccuracy(keras.metrics.SparseTopKCategoricalAccuracy):
    """Keras' sparse top-k accuracy, on float32 logits: TensorFlow's `in_top_k` takes float32
    only, so a float16 head (`mixed_float16`) would fail at the first step."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, keras.ops.cast(y_pred, "float32"), sample_weight)


def uses_ema(model):
    """Whether `model`'s optimizer keeps an EMA of the weights (`use_ema=True`)."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    return bool(getattr(optimizer, "use_ema", False))


@contextlib.contextmanager
def ema_weights(model):
    """Within the block, `model` (compiled, its optimizer keeping an EMA) holds the averaged
    weights; on exit its own weights are back. Uses `keras.callbacks.SwapEMAWeights`' swap."""
    if not uses_ema(model):
        raise ValueError(
            f"Model {model.name!r}'s optimizer keeps no EMA; create it with "
            "`create_optimizer(..., ema_momentum=...)` (Keras' use_ema=True)."
        )
    swap = keras.callbacks.SwapEMAWeights()
    swap.set_model(model)
    # On TensorFlow the swap adds and subtracts (a + b, then differences), which changes the
    # raw weights by about one float32 ulp per swap: keep them and put them back exactly.
    raw = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    swap.on_test_begin()  # swaps the average in
    try:
        yield model
    finally:
        swap.on_test_end()  # and back
        for variable, value in zip(model.trainable_variables, raw):
            variable.assign(value)


class EMAEvaluation(keras.callbacks.Callback):
    """Evaluates the optimizer's EMA of the weights at each epoch end, beside the raw weights.

    Args:
        validation_data: the data `fit` validates on (labels as class ids).
        evaluate_every: evaluate after every this many epochs.
        evaluate_at: or after these 1-based epochs only (overrides `evaluate_every`).
    Logs (added to the epoch logs, so put this callback before loggers and checkpointers):
        `ema_val_<metric>` for each of the model's evaluation results (`ema_val_loss`,
        `ema_val_accuracy`, ...).
    """

    def __init__(self, validation_data, evaluate_every=1, evaluate_at=None):
        super().__init__()
        if evaluate_every < 1:
            raise ValueError(f"evaluate_every must be >= 1; got {evaluate_every!r}.")
        self.validation_data = validation_data
        self.evaluate_every = int(evaluate_every)
        # 1-based epochs to evaluate (the loop's validation epochs), instead of every N-th.
        self.evaluate_at = None if evaluate_at is None else set(evaluate_at)

    def evaluate(self):
        """Evaluates the averaged weights; returns `{"ema_val_<metric>": value}`."""
        with ema_weights(self.model):
            results = self.model.evaluate(self.validation_data, verbose=0, return_dict=True)
        return {f"ema_val_{name}": float(value) for name, value in results.items()}

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.validation_data is None:
            return
        due = (epoch + 1 in self.evaluate_at if self.evaluate_at is not None
               else (epoch + 1) % self.evaluate_every == 0)
        if not due:
            return
        logs.update(self.evaluate())
