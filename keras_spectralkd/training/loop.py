"""`train`: ONE Keras `fit` for the whole run, with checkpoints, exact resume, logs and EMA.

Data: `train_data(epoch, skip_batches)` builds epoch `epoch`'s batches from `(seed, epoch)`
alone (shuffle and augmentation), so a resumed run sees exactly the batches an uninterrupted
run sees. `train` chains the epochs into one dataset, `Dataset.range(first, epochs).flat_map(
lambda e: train_data(e, 0).take(steps_per_epoch))` (traced once, each epoch's pipeline built
when the epoch starts; a `train_data` that cannot take a tensor epoch, e.g. one that calls
`int(epoch)`, is chained epoch by epoch instead), and calls `fit(initial_epoch=first,
epochs=epochs, steps_per_epoch=...)` once, so every callback (EarlyStopping,
ReduceLROnPlateau, TensorBoard, ...) sees one `on_train_begin` and keeps its state across
epochs. Training itself stays Keras' own `fit` (the Distiller overrides `compute_loss` only),
so callbacks, `tf.distribute` and `keras.distribution` keep working.

Resume mid-epoch (after a kill between epoch-end checkpoints, with `save_every_steps`): Keras'
`fit` runs the same number of steps in every epoch, so the rest of the interrupted epoch
(`train_data(epoch, skip_batches=steps done)`) is trained first by `train_on_batch`, with the
loop's own callbacks (NaN guard, step checkpoints, validation, EMA evaluation, logs, best
epoch, epoch checkpoint) but not the caller's; `fit` then starts at the next epoch.
"""

import dataclasses
import json
import os

import keras
import tensorflow as tf

from keras_spectralkd.training.callbacks import (
    BestEpochTracker,
    EpochRecord,
    LearningRateLogger,
    StopOnNonFiniteLoss,
)
from keras_spectralkd.training.checkpoint import (
    CheckpointCallback,
    CheckpointManager,
    StepCounter,
    read_state,
    trained_model,
)
from keras_spectralkd.training.distribute import keras_multi_worker_fixes
from keras_spectralkd.training.ema import EMAEvaluation, uses_ema


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


def _epoch_data(train_data, epoch, skip_batches):
    """Epoch `epoch`'s batches, the first `skip_batches` left out."""
    if callable(train_data):
        return train_data(epoch, skip_batches)
    if skip_batches:
        if not isinstance(train_data, tf.data.Dataset):
            raise ValueError(
                "Resuming mid-epoch needs `train_data` to be a callable (epoch, skip_batches) -> "
                "dataset or a tf.data.Dataset; got "
                f"{type(train_data).__name__}."
            )
        return train_data.skip(skip_batches)
    return train_data


def _all_epochs(train_data, first, epochs, steps_per_epoch):
    """One dataset of epochs `first`..`epochs - 1`, `steps_per_epoch` batches each."""
    if isinstance(train_data, tf.data.Dataset):
        return train_data.take(steps_per_epoch).repeat(epochs - first)
    if not callable(train_data):
        return train_data  # e.g. a PyDataset: Keras iterates it `steps_per_epoch` at a time
    try:
        data = tf.data.Dataset.range(first, epochs).flat_map(
            lambda epoch: train_data(epoch, 0).take(steps_per_epoch)
        )
    except Exception:  # noqa: BLE001 - not traceable with a tensor epoch: chain eagerly
        data = None
        for epoch in range(first, epochs):
            one = train_data(epoch, 0).take(steps_per_epoch)
            data = one if data is None else data.concatenate(one)
    return data.prefetch(tf.data.AUTOTUNE)


def check_run_info(restored, run_info, output_dir):
    """Raises ValueError when checkpoint state `restored` was written with another `run_info`."""
    saved = restored.get("run_info")
    if run_info is None or saved is None:
        return
    run_info = json.loads(json.dumps(run_info))  # tuples -> lists, as saved
    # Keys the checkpoint does not record (written by an older version) are not compared.
    changed = {k: (saved[k], v) for k, v in run_info.items() if k in saved and saved[k] != v}
    if changed:
        details = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise ValueError(
            f"{output_dir!r} holds a run of another setting ({details}); refusing to resume "
            "it. Use a new --output_dir, or the settings it was written with."
        )


def train(
    model,
    train_data,
    *,
    epochs,
    steps_per_epoch,
    validation_data=None,
    validation_every=1,
    output_dir=None,
    callbacks=(),
    ema=None,
    best_model=None,
    monitor="val_accuracy",
    save_every_steps=None,
    keep_checkpoints=2,
    resume=True,
    verbose="auto",
    run_info=None,
):
    """Trains `model` (compiled) for `epochs` epochs in one `fit`, resuming from `output_dir`.

    Args:
        model: a compiled Keras model (e.g. a `Distiller`).
        train_data: a callable `(epoch, skip_batches) -> tf.data.Dataset` giving epoch
            `epoch`'s batches with the first `skip_batches` left out (preferred: it makes
            resume exact; `epoch` is a scalar int64 tensor when traced, see the module
            docstring), or one tf.data.Dataset used for every epoch.
        epochs: total number of epochs.
        steps_per_epoch: optimizer steps per epoch.
        validation_data: evaluated at each epoch end by `fit` (`val_*` logs).
        validation_every: evaluate every this many epochs and after the last one only (the
            other epochs' logs have no `val_*`).
        output_dir: where checkpoints (`checkpoints/`), logs (`log.csv` from
            `keras.callbacks.CSVLogger`, epoch 0-based; `log.jsonl`, epoch 1-based), the best
            weights (`best.weights.h5`, `best.json`) go; None: nothing is written.
        callbacks: more Keras callbacks (e.g. TensorBoard, EarlyStopping); they run after the
            EMA evaluation, so they see its `ema_val_*` logs.
        ema: evaluate the optimizer's EMA of the weights beside the raw weights at each epoch
            end (`ema_val_*` logs): None evaluates it when the optimizer keeps one
            (`create_optimizer(..., ema_momentum=...)`), False never.
        best_model: whose weights to save at the best epoch (the student); default: the
            trained model (a Distiller's student).
        monitor: the log that decides the best epoch (`val_accuracy` by default).
        save_every_steps: also checkpoint every this many steps (None: at epoch ends only).
        keep_checkpoints: how many checkpoints to keep (the default 2 keeps a fallback).
        resume: restore the newest checkpoint in `output_dir` when there is one.
        verbose: passed to `fit`.
        run_info: a JSON-able dict naming the run (models, mode, ...), stored in every
            checkpoint; resuming a checkpoint whose `run_info` differs raises ValueError
            before anything is loaded.
    Returns:
        a `TrainResult`. The model holds the final RAW weights, even when the optimizer keeps
        an EMA (Keras' `fit` would leave the average in them); use `ema.ema_weights(model)`
        for the average.
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer; got {epochs!r}.")
    if steps_per_epoch is None or int(steps_per_epoch) != steps_per_epoch or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be a positive integer; got {steps_per_epoch!r}.")
    if ema not in (None, True, False):
        raise TypeError(
            f"ema must be None, True or False (the EMA is kept by the optimizer: "
            f"create_optimizer(..., ema_momentum=...)); got {type(ema).__name__}."
        )
    epochs, steps_per_epoch = int(epochs), int(steps_per_epoch)
    validated = validation_epochs(epochs, validation_every)
    state = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "steps_per_epoch": steps_per_epoch,
        "history": [],
        "best": None,
    }
    if run_info is not None:
        state["run_info"] = run_info
    manager = None
    resumed_from = None
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        manager = CheckpointManager(
            os.path.join(output_dir, "checkpoints"), model, keep=keep_checkpoints
        )
        if resume:
            peek = read_state(manager.directory)
            if peek is not None:
                check_run_info(peek, run_info, output_dir)
                if peek.get("steps_per_epoch") != steps_per_epoch:
                    raise ValueError(
                        f"The checkpoint in {output_dir!r} was written with steps_per_epoch="
                        f"{peek.get('steps_per_epoch')}, but this run has "
                        f"{steps_per_epoch} (a different batch size or dataset?); resume with "
                        "the same settings or use a new output dir."
                    )
            restored = manager.restore()
            if restored is not None:
                checkpoint = restored.pop("checkpoint")
                check_run_info(restored, run_info, output_dir)
                state.update(restored)
                if run_info is not None:
                    state["run_info"] = run_info
                resumed_from = dict(restored)
                if verbose:
                    print(
                        f"Resuming from {checkpoint}: epoch {state['epoch'] + 1}, step "
                        f"{state['step_in_epoch']} of {steps_per_epoch} (global step "
                        f"{state['global_step']}).", flush=True,
                    )

    # The order matters: the NaN guard first (nothing sees a broken step), the EMA evaluation
    # before the caller's callbacks (they see `ema_val_*`), the records, then the step counter,
    # then the checkpoint (it saves the advanced state).
    guard = [StopOnNonFiniteLoss(state, manager)]
    if ema is not False and uses_ema(model) and validation_data is not None:
        guard.append(EMAEvaluation(validation_data, evaluate_at=validated))
    guard.append(LearningRateLogger())
    records = [
        BestEpochTracker(
            monitor=monitor,
            model=best_model if best_model is not None else trained_model(model),
            weights_path=None if output_dir is None else os.path.join(output_dir,
                                                                      "best.weights.h5"),
            summary_path=None if output_dir is None else os.path.join(output_dir, "best.json"),
            state=state,
        ),
        EpochRecord(
            jsonl_path=None if output_dir is None else os.path.join(output_dir, "log.jsonl"),
            state=state,
        ),
    ]
    if output_dir is not None:
        records.append(keras.callbacks.CSVLogger(os.path.join(output_dir, "log.csv"),
                                                 append=True))
    records.append(StepCounter(state))
    if manager is not None:
        records.append(CheckpointCallback(manager, state, save_every_steps))
    raw_keeper = _KeepRawWeights()

    with keras_multi_worker_fixes(model):  # a no-op unless under a multi-worker strategy
        if state["step_in_epoch"] and state["epoch"] < epochs:
            _finish_interrupted_epoch(
                model, train_data, state,
                validation_data if state["epoch"] + 1 in validated else None,
                guard + records, verbose)
        if state["epoch"] < epochs and not getattr(model, "stop_training", False):
            first = state["epoch"]
            model.fit(
                _all_epochs(train_data, first, epochs, steps_per_epoch),
                initial_epoch=first,
                epochs=epochs,
                steps_per_epoch=steps_per_epoch,
                validation_data=validation_data,
                validation_freq=validated,
                callbacks=guard + list(callbacks) + records + [raw_keeper],
                verbose=verbose,
                shuffle=False,  # each epoch's data arrive shuffled by the pipeline
            )
            raw_keeper.restore(model)
    return TrainResult(
        history=list(state["history"]), best=state["best"], state=state,
        resumed_from=resumed_from,
    )


class _KeepRawWeights(keras.callbacks.Callback):
    """Keeps the raw weights at each epoch end, so that `train` can undo `fit`'s final
    `optimizer.finalize_variable_values`, which overwrites them with the EMA."""

    def __init__(self):
        super().__init__()
        self.values = None

    def on_epoch_end(self, epoch, logs=None):
        if uses_ema(self.model):
            self.values = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]

    def restore(self, model):
        if self.values is not None:
            for variable, value in zip(model.trainable_variables, self.values):
                variable.assign(value)
            self.values = None


def validation_epochs(epochs, every):
    """The 1-based epochs that are evaluated: every `every`-th and the last (Keras'
    `validation_freq` as a list)."""
    if int(every) != every or every < 1:
        raise ValueError(f"validation_every must be a positive integer; got {every!r}.")
    return [e for e in range(1, epochs + 1) if e % every == 0 or e == epochs]


def _finish_interrupted_epoch(model, train_data, state, validation_data, callbacks, verbose):
    """Trains the rest of the epoch a killed run was in (see the module docstring)."""
    epoch, skip, steps = state["epoch"], state["step_in_epoch"], state["steps_per_epoch"]
    if verbose:
        print(f"Finishing epoch {epoch + 1}: steps {skip + 1}..{steps}.", flush=True)
    callback_list = keras.callbacks.CallbackList(
        callbacks, model=model, add_history=False, add_progbar=False,
        epochs=epoch + 1, steps=steps, verbose=0,
    )
    model.stop_training = False
    model.reset_metrics()
    callback_list.on_train_begin()
    callback_list.on_epoch_begin(epoch)
    logs = {}
    data = _epoch_data(train_data, epoch, skip).take(steps - skip)
    for index, batch in enumerate(data):
        batch = keras.tree.map_structure(keras.ops.convert_to_numpy, tuple(batch))
        callback_list.on_train_batch_begin(skip + index)
        logs = model.train_on_batch(*batch, return_dict=True)  # metrics accumulate
        callback_list.on_train_batch_end(skip + index, logs)
        if model.stop_training:
            break
    logs = dict(logs)
    if validation_data is not None:
        results = model.evaluate(validation_data, verbose=0, return_dict=True)
        logs.update({f"val_{name}": value for name, value in results.items()})
    callback_list.on_epoch_end(epoch, logs)
    callback_list.on_train_end(logs)
