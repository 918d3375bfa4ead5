"""Training-loop callbacks: non-finite loss guard, epoch records, best-epoch tracking.

All of them take the training loop's shared `state` dict where they keep what must survive a
resume (the history, the best epoch), so that `CheckpointCallback` saves it with the weights.

Keras' own callbacks are used where they do the job (`keras.callbacks.CSVLogger(append=True)`
writes `log.csv`, `SwapEMAWeights` swaps the EMA in, see `ema.py`). Where they do not, the
class says what they lack: `TerminateOnNaN` and `ModelCheckpoint(save_best_only=True)` below,
`BackupAndRestore` in `checkpoint.py`.
"""

import json
import math
import time

import keras

from keras_spectralkd.training.checkpoint import atomic_save_weights, atomic_write_json


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training was stopped."""


def _to_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with a clear `NonFiniteLossError` as soon as the loss is NaN or infinite.

    The message names the epoch and step and every logged loss term (so one can see whether
    the cross-entropy, the KD or the spectral term blew up) and the checkpoint that is kept.
    Put it first in the callback list: nothing after it (checkpoints, best epoch) then sees the
    broken step. `keras.callbacks.TerminateOnNaN(raise_error=True)` stops the same way but
    names only the batch index within the epoch, not the run's step, the loss terms or the
    checkpoint to resume from; with `raise_error=False` it lets the epoch end, so an epoch-end
    checkpoint would save the broken weights.
    """

    def __init__(self, state=None, manager=None):
        super().__init__()
        self.state = state
        self.manager = manager

    def on_train_batch_end(self, batch, logs=None):
        loss = _to_float((logs or {}).get("loss"))
        if loss is None or math.isfinite(loss):
            return
        self.model.stop_training = True
        terms = ", ".join(
            f"{key}={_to_float(value)}" for key, value in sorted(logs.items()) if "loss" in key
        )
        where = f"batch {batch}"
        if self.state is not None:
            where = (
                f"epoch {self.state['epoch'] + 1}, step {self.state['step_in_epoch'] + 1} "
                f"(global step {self.state['global_step'] + 1})"
            )
        kept = "No checkpoint was written before it."
        latest = self.manager.latest() if self.manager is not None else None
        if latest is not None:
            kept = f"The last good checkpoint, {latest}, is kept."
        elif self.manager is None:
            kept = "The last checkpoint was written before this step and is intact."
        raise NonFiniteLossError(
            f"The training loss became {loss} at {where}; training stopped. Logged terms "
            f"(running means over the epoch): {terms}. {kept} Usual causes: a learning rate "
            "too high for the batch size, float16 overflow (try --precision=mixed_bfloat16 or "
            "float32), a teacher whose weights did not load (check its accuracy), or class ids "
            "outside [0, num_classes) in the labels (they make the cross-entropy NaN)."
        )


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current `learning_rate` to the epoch logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.model.optimizer is None:
            return
        logs["learning_rate"] = _to_float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate
        ))


class EpochRecord(keras.callbacks.Callback):
    """Completes each epoch's logs and keeps them: adds `global_step` and `time_s` (wall time
    of the epoch) to the logs (so a `CSVLogger` placed after it writes them), appends the row,
    with `epoch` 1-based, to `state["history"]` (it survives a resume) and to a JSONL file.
    """

    def __init__(self, jsonl_path=None, state=None):
        super().__init__()
        self.jsonl_path = jsonl_path
        self.state = state
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if self.state is not None:
            logs["global_step"] = self.state["global_step"]
        if self._epoch_start is not None:
            logs["time_s"] = round(time.time() - self._epoch_start, 3)
        row = {"epoch": epoch + 1}
        for key, value in sorted(logs.items()):
            value = _to_float(value)
            if value is not None:
                row[key] = value
        if self.state is not None:
            self.state.setdefault("history", []).append(row)
        if self.jsonl_path:
            with open(self.jsonl_path, "a") as f:
                f.write(json.dumps(row) + "\n")


class BestEpochTracker(keras.callbacks.Callback):
    """Tracks the best epoch by `monitor` and saves that epoch's weights of `model`.

    `keras.callbacks.ModelCheckpoint(save_best_only=True)` saves the model `fit` trains, which
    for a `Distiller` is student AND frozen teacher, and forgets its best value on a resume (the
    first epoch after it would overwrite a better file); this one saves the student, keeps the
    best in the checkpointed state and writes atomically.

    Args:
        monitor: the log to compare (e.g. `"val_accuracy"`, or `"ema_val_accuracy"`).
        mode: `"max"` or `"min"`.
        model: the model whose weights are saved at a new best (the student); None: none saved.
        weights_path: where to save them (`.weights.h5`, written atomically).
        summary_path: a JSON file rewritten at each new best (epoch and every log).
        state: the loop's shared state; the best so far lives in `state["best"]`.
    """

    def __init__(self, monitor="val_accuracy", mode="max", model=None, weights_path=None,
                 summary_path=None, state=None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'; got {mode!r}.")
        self.monitor = monitor
        self.mode = mode
        self.target_model = model
        self.weights_path = weights_path
        self.summary_path = summary_path
        self.state = state if state is not None else {}

    @property
    def best(self):
        return self.state.get("best")

    def on_epoch_end(self, epoch, logs=None):
        value = _to_float((logs or {}).get(self.monitor))
        if value is None or not math.isfinite(value):
            return
        best = self.best
        better = best is None or (
            value > best["value"] if self.mode == "max" else value < best["value"]
        )
        if not better:
            return
        record = {"epoch": epoch + 1, "monitor": self.monitor, "value": value}
        record["logs"] = {k: _to_float(v) for k, v in (logs or {}).items()}
        self.state["best"] = record
        if self.target_model is not None and self.weights_path:
            _ = self.model  # syncs the JAX trainer's state into the variables
            atomic_save_weights(self.target_model, self.weights_path)
        if self.summary_path:
            atomic_write_json(self.summary_path, record)
