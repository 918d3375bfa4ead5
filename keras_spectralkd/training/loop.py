"""`train`: Keras `fit`, epoch by epoch, with checkpoints, resume, logs, EMA and best epoch.

The loop calls `model.fit` once per epoch on that epoch's data, `train_data(epoch,
skip_batches)`. Building each epoch's pipeline from the epoch number (shuffle and augmentation
seeds included) is what makes a resumed run see the same data as an uninterrupted one; a run
killed mid-epoch resumes with a partial epoch that skips the batches already trained on.
Training itself stays Keras' own `fit` (the Distiller overrides `compute_loss` only), so
callbacks, `tf.distribute` and `keras.distribution` keep working.
"""

import dataclasses
import os

import keras

from keras_spectralkd.training.callbacks import (
    BestEpochTracker,
    LearningRateLogger,
    MetricsLogger,
    StopOnNonFiniteLoss,
)
from keras_spectralkd.training.checkpoint import (
    CheckpointCallback,
    CheckpointManager,
    StepCounter,
)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        history: one dict of logs per epoch (all epochs, including those before a resume).
        best: the best epoch's record (`epoch`, `monitor`, `value`, `logs`) or None.
        state: the final loop state (epoch, global_step, ...).
        resumed_from: the state the run resumed from, or None for a fresh run.
    """

    history: list
    best: dict
    state: dict
    resumed_from: dict = None


class _StopAfterOneEpoch(keras.callbacks.Callback):
    """Ends `fit` after one epoch (the loop calls `fit` once per epoch); remembers whether
    another callback had asked to stop."""

    def __init__(self):
        super().__init__()
        self.stopped_by_other = False

    def on_epoch_begin(self, epoch, logs=None):
        self.stopped_by_other = False

    def on_epoch_end(self, epoch, logs=None):
        self.stopped_by_other = bool(self.model.stop_training)
        self.model.stop_training = True


def _epoch_data(train_data, epoch, skip_batches):
    if callable(train_data):
        return train_data(epoch, skip_batches)
    if skip_batches:
        if not hasattr(train_data, "skip"):
            raise ValueError(
                "Resuming mid-epoch needs `train_data` to be a callable (epoch, skip_batches) -> "
                "dataset or a tf.data.Dataset; got "
                f"{type(train_data).__name__}."
            )
        return train_data.skip(skip_batches)
    return train_data


def train(
    model,
    train_data,
    *,
    epochs,
    steps_per_epoch,
    validation_data=None,
    output_dir=None,
    callbacks=(),
    ema=None,
    best_model=None,
    monitor="val_accuracy",
    save_every_steps=None,
    keep_checkpoints=2,
    resume=True,
    verbose="auto",
):
    """Trains `model` (compiled) for `epochs` epochs, resuming from `output_dir` if possible.

    Args:
        model: a compiled Keras model (e.g. a `Distiller`).
        train_data: a callable `(epoch, skip_batches) -> dataset` giving epoch `epoch`'s batches
            with the first `skip_batches` left out (preferred: it makes resume exact), or one
            dataset used for every epoch.
        epochs: total number of epochs.
        steps_per_epoch: optimizer steps per epoch.
        validation_data: evaluated at each epoch end by `fit` (`val_*` logs).
        output_dir: where checkpoints (`checkpoints/`), logs (`log.csv`, `log.jsonl`), the best
            weights (`best.weights.h5`, `best.json`) go; None: nothing is written.
        callbacks: more Keras callbacks (e.g. TensorBoard); they run after the EMA callback, so
            they see its `ema_val_*` logs.
        ema: a `ModelEMA` callback, or None; its averaged model is checkpointed too.
        best_model: whose weights to save at the best epoch (the student); default `model`.
        monitor: the log that decides the best epoch (`val_accuracy` by default).
        save_every_steps: also checkpoint every this many steps (None: at epoch ends only).
        keep_checkpoints: how many checkpoints to keep.
        resume: restore the newest checkpoint in `output_dir` when there is one.
        verbose: passed to `fit`.
    Returns:
        a `TrainResult`.
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer; got {epochs!r}.")
    if steps_per_epoch is None or int(steps_per_epoch) != steps_per_epoch or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be a positive integer; got {steps_per_epoch!r}.")
    state = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "steps_per_epoch": int(steps_per_epoch),
        "history": [],
        "best": None,
    }
    manager = None
    resumed_from = None
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        extra = {"ema": ema.ema_model} if ema is not None else {}
        manager = CheckpointManager(
            os.path.join(output_dir, "checkpoints"), model, extra_models=extra,
            keep=keep_checkpoints,
        )
        if resume:
            restored = manager.restore()
            if restored is not None:
                if restored.get("steps_per_epoch") != steps_per_epoch:
                    raise ValueError(
                        f"The checkpoint in {output_dir!r} was written with steps_per_epoch="
                        f"{restored.get('steps_per_epoch')}, but this run has "
                        f"{steps_per_epoch} (a different batch size or dataset?); resume with "
                        "the same settings or use a new output dir."
                    )
                state.update(restored)
                resumed_from = dict(restored)
                if verbose:
                    print(
                        f"Resuming from {manager.latest()}: epoch {state['epoch'] + 1}, step "
                        f"{state['step_in_epoch']} of {steps_per_epoch} (global step "
                        f"{state['global_step']})."
                    )

    all_callbacks = [StopOnNonFiniteLoss(state)]
    if ema is not None:
        all_callbacks.append(ema)
    all_callbacks.append(LearningRateLogger())
    all_callbacks.extend(callbacks)
    best_tracker = BestEpochTracker(
        monitor=monitor,
        model=best_model if best_model is not None else model,
        weights_path=None if output_dir is None else os.path.join(output_dir, "best.weights.h5"),
        summary_path=None if output_dir is None else os.path.join(output_dir, "best.json"),
        state=state,
    )
    all_callbacks.append(best_tracker)
    all_callbacks.append(
        MetricsLogger(
            csv_path=None if output_dir is None else os.path.join(output_dir, "log.csv"),
            jsonl_path=None if output_dir is None else os.path.join(output_dir, "log.jsonl"),
            state=state,
        )
    )
    all_callbacks.append(StepCounter(state))
    if manager is not None:
        all_callbacks.append(CheckpointCallback(manager, state, save_every_steps))

    one_epoch = _StopAfterOneEpoch()
    all_callbacks.append(one_epoch)
    while state["epoch"] < epochs:
        epoch, skip = state["epoch"], state["step_in_epoch"]
        data = _epoch_data(train_data, epoch, skip)
        # `epochs` is the run's total, so progress bars and callbacks see "epoch 3/400";
        # `one_epoch` ends the call after this epoch.
        model.fit(
            data,
            initial_epoch=epoch,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch - skip,
            validation_data=validation_data,
            callbacks=all_callbacks,
            verbose=verbose,
            shuffle=False,  # each epoch's data arrive shuffled by the pipeline
        )
        # Another callback asked to stop (e.g. early stopping), or the epoch did not finish.
        if one_epoch.stopped_by_other or state["epoch"] == epoch:
            break
    return TrainResult(
        history=list(state["history"]), best=state["best"], state=state,
        resumed_from=resumed_from,
    )
