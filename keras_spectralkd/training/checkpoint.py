"""Checkpoints that survive a kill at any instant: durable writes, a fallback, an exact resume.

Layout of a checkpoint directory:

    ckpt-000012345/           one complete checkpoint (12345 = global step)
        model.weights.h5      the trained weights: a Distiller's student only (the frozen
                              teacher is rebuilt from where it came from, recorded in the
                              state), any other model whole
        optimizer.npz         every optimizer variable (moments, step count, loss scale, and
                              the EMA of the weights when the optimizer keeps one)
        <name>.weights.h5     extra models, if any
        state.json            epoch, step in epoch, global step, best epoch, history, run info
    latest.json               which checkpoint is the newest complete one

How a save stays safe: every file is written into a hidden temporary folder and fsynced, the
folder is fsynced and renamed into place (`os.replace`, atomic on POSIX), the parent folder is
fsynced, and only then is `latest.json` replaced (again temporary file, fsync, rename). Older
checkpoints are pruned last. A process killed at any instant therefore leaves `latest.json`
pointing at a complete checkpoint. If the newest checkpoint is nevertheless unreadable (a
truncated file, a disk error), `restore` says so and falls back to the previous good one.

`keras.callbacks.BackupAndRestore` does not do this job: it keeps one backup overwritten in
place, restarts an interrupted epoch from its first batch with mid-epoch weights (the batches
before the kill are trained twice), and does not hold the loop's state (best epoch, history).
"""

import json
import os
import shutil
import sys

import keras
import numpy as np

LATEST = "latest.json"
MODEL_FILE = "model.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"
STATE_FILE = "state.json"

# Called with a stage name between the steps of a save ("model", "optimizer", "state",
# "renamed", "latest"); tests set it to slow the write down or to kill the process mid-write.
write_hook = None


def _hook(stage):
    if write_hook is not None:
        write_hook(stage)


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path, text):
    """Writes `text` to `path` durably: temporary file, fsync, `os.replace`, fsync the folder."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(os.path.dirname(os.path.abspath(path)))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default))


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def atomic_save_weights(model, path):
    """`model.save_weights(path)` through a temporary file, fsync and `os.replace`."""
    if not path.endswith(".weights.h5"):
        raise ValueError(f"Weights files must end in '.weights.h5'; got {path!r}.")
    tmp = path[: -len(".weights.h5")] + f".tmp-{os.getpid()}.weights.h5"
    model.save_weights(tmp)
    _fsync_path(tmp)
    os.replace(tmp, path)
    _fsync_path(os.path.dirname(os.path.abspath(path)))


def trained_model(model):
    """What a checkpoint holds of `model`: a Distiller's student (its teacher is frozen and
    rebuilt on resume), or `model` itself."""
    student = getattr(model, "student", None)
    if student is not None and hasattr(model, "teacher"):
        return student
    return model


def _ensure_built(model):
    """Builds a subclassed model (e.g. the Distiller) so that its weights can be loaded."""
    if model.built:
        return
    student = getattr(model, "student", None)
    inputs = getattr(student, "inputs", None)
    if not inputs:
        raise ValueError(
            f"Model {model.name!r} is not built, so a checkpoint cannot be loaded into it; call "
            "it once on a batch (or `build` it) before resuming."
        )
    shape = (1,) + tuple(inputs[0].shape[1:])
    model(keras.ops.zeros(shape, dtype="float32"), training=False)


def _build_optimizer(model):
    """Creates the optimizer's variables so that they can be saved and filled."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return optimizer


def read_state(directory):
    """The state (`state.json`) of the newest checkpoint in `directory`, without loading any
    weights; None when there is none. Used to check a run's identity before resuming it."""
    if not os.path.isdir(directory):
        return None
    for checkpoint in _candidates(directory):
        try:
            with open(os.path.join(checkpoint, STATE_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            continue
    return None


def _candidates(directory):
    """Checkpoint folders, the one `latest.json` names first, then the others newest first."""
    names = sorted(
        (n for n in os.listdir(directory)
         if n.startswith("ckpt-") and os.path.isdir(os.path.join(directory, n))),
        reverse=True,
    )
    try:
        with open(os.path.join(directory, LATEST)) as f:
            latest = json.load(f)["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        latest = None
    if latest in names:
        names.remove(latest)
        names.insert(0, latest)
    return [os.path.join(directory, n) for n in names]


class CheckpointManager:
    """Saves and restores a model's trained weights, its optimizer and a JSON state.

    Args:
        directory: where checkpoints live (created if needed).
        model: the model being trained (compiled). For a `Distiller` only the student is
            saved: the frozen teacher is not (it would double a checkpoint's size for nothing).
        extra_models: `{name: model}` saved beside it.
        keep: how many complete checkpoints to keep (>= 2 keeps a fallback).
    """

    def __init__(self, directory, model, extra_models=None, keep=2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1; got {keep!r}.")
        self.directory = os.fspath(directory)
        self.model = model
        self.extra_models = dict(extra_models or {})
        self.keep = int(keep)
        os.makedirs(self.directory, exist_ok=True)

    # === Saving ===
    def save(self, state):
        """Writes a checkpoint of the current weights with `state` (a JSON-able dict holding
        at least `global_step`); returns its directory."""
        name = f"ckpt-{int(state['global_step']):09d}"
        final = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, f".tmp-{name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        _ensure_built(self.model)
        optimizer = _build_optimizer(self.model)  # an unbuilt one would save no slots
        path = os.path.join(tmp, MODEL_FILE)
        trained_model(self.model).save_weights(path)
        _fsync_path(path)
        _hook("model")
        if optimizer is not None:
            path = os.path.join(tmp, OPTIMIZER_FILE)
            with open(path, "wb") as f:
                np.savez(f, *[keras.ops.convert_to_numpy(v) for v in optimizer.variables])
                f.flush()
                os.fsync(f.fileno())
            _hook("optimizer")
        for key, extra in self.extra_models.items():
            path = os.path.join(tmp, f"{key}.weights.h5")
            extra.save_weights(path)
            _fsync_path(path)
        atomic_write_json(os.path.join(tmp, STATE_FILE), state)
        _fsync_path(tmp)
        _hook("state")
        if os.path.exists(final):  # the same step saved twice (e.g. after a resume)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_path(self.directory)
        _hook("renamed")
        atomic_write_json(os.path.join(self.directory, LATEST), {"checkpoint": name})
        _hook("latest")
        self._prune(keep_name=name)
        return final

    def _prune(self, keep_name):
        names = sorted(n for n in os.listdir(self.directory) if n.startswith("ckpt-"))
        for name in names[: -self.keep]:
            if name != keep_name:
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        for name in os.listdir(self.directory):  # leftovers of killed writes
            if name.startswith(".tmp-") and not name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    # === Restoring ===
    def latest(self):
        """The directory of the newest checkpoint (`latest.json`'s, else the highest step),
        or None."""
        candidates = _candidates(self.directory)
        return candidates[0] if candidates else None

    def restore(self):
        """Loads the newest readable checkpoint into the models; returns its state, or None if
        there is none. An unreadable newest checkpoint is reported on stderr and the previous
        one is used; if none can be read, raises `ValueError` listing why."""
        problems = []
        for checkpoint in _candidates(self.directory):
            try:
                state = self._load(checkpoint)
            except Exception as error:  # noqa: BLE001 - any unreadable file means "try older"
                problems.append(f"{os.path.basename(checkpoint)}: {type(error).__name__}: "
                                f"{error}")
                continue
            if problems:
                print(
                    f"WARNING: checkpoint(s) unreadable, skipped: {'; '.join(problems)}. "
                    f"Resuming from the previous good one, {checkpoint}.",
                    file=sys.stderr, flush=True,
                )
            state["checkpoint"] = checkpoint
            return state
        if problems:
            raise ValueError(
                f"No readable checkpoint in {self.directory!r}: {'; '.join(problems)}. Delete "
                "the folder to start over."
            )
        return None

    def _load(self, checkpoint):
        with open(os.path.join(checkpoint, STATE_FILE)) as f:
            state = json.load(f)
        _ensure_built(self.model)
        optimizer = _build_optimizer(self.model)
        trained_model(self.model).load_weights(os.path.join(checkpoint, MODEL_FILE))
        if optimizer is not None:
            with np.load(os.path.join(checkpoint, OPTIMIZER_FILE)) as arrays:
                values = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
            variables = optimizer.variables
            if len(values) != len(variables):
                raise ValueError(
                    f"the checkpoint holds {len(values)} optimizer variables, this optimizer "
                    f"has {len(variables)} (another optimizer or EMA setting?)"
                )
            for variable, value in zip(variables, values):
                if tuple(variable.shape) != value.shape:
                    raise ValueError(
                        f"optimizer variable {variable.path} has shape {tuple(variable.shape)}, "
                        f"the checkpoint's {value.shape}"
                    )
            for variable, value in zip(variables, values):
                variable.assign(value)
        for key, extra in self.extra_models.items():
            extra.load_weights(os.path.join(checkpoint, f"{key}.weights.h5"))
        return state


class StepCounter(keras.callbacks.Callback):
    """Advances the loop state: `global_step` and `step_in_epoch` per batch, `epoch` at the end
    of each epoch. Place it after every callback that reads the state of the step or epoch that
    just ended, and before `CheckpointCallback`."""

    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_train_batch_end(self, batch, logs=None):
        self.state["global_step"] += 1
        self.state["step_in_epoch"] += 1

    def on_epoch_end(self, epoch, logs=None):
        self.state["epoch"] = epoch + 1
        self.state["step_in_epoch"] = 0


class CheckpointCallback(keras.callbacks.Callback):
    """Saves a checkpoint of `state` at each epoch end (and every `save_every_steps` steps when
    given), so that a killed run resumes at the right step.

    `state` is the dict shared with the training loop (advanced by `StepCounter`, which must
    come before this callback): `epoch` (the epoch being run, 0-based), `step_in_epoch` (steps
    of it done), `global_step` and `steps_per_epoch`.
    """

    def __init__(self, manager, state, save_every_steps=None):
        super().__init__()
        if save_every_steps is not None and save_every_steps < 1:
            raise ValueError(f"save_every_steps must be >= 1 or None; got {save_every_steps!r}.")
        self.manager = manager
        self.state = state
        self.save_every_steps = save_every_steps

    def on_train_batch_end(self, batch, logs=None):
        if self.save_every_steps and self.state["global_step"] % self.save_every_steps == 0:
            # The epoch-end save covers the last step of an epoch.
            if self.state["step_in_epoch"] < self.state["steps_per_epoch"]:
                _ = self.model  # syncs the JAX trainer's state into the variables
                self.manager.save(self.state)

    def on_epoch_end(self, epoch, logs=None):
        _ = self.model
        self.manager.save(self.state)
