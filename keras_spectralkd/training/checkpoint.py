"""Checkpoints that survive a kill: atomic writes, and a resume at the exact step.

Layout of a checkpoint directory:

    ckpt-000012345/           one complete checkpoint (12345 = global step)
        model.weights.h5      the trained model (for a Distiller: student, teacher, optimizer)
        <name>.weights.h5     extra models (e.g. `ema.weights.h5`)
        state.json            epoch, step in epoch, global step, best epoch, history, ...
    latest.json               which checkpoint is the newest complete one

A checkpoint is written into a hidden temporary directory and renamed into place with
`os.replace` (atomic on POSIX), then `latest.json` is replaced atomically; a run killed at any
moment leaves the previous checkpoint intact and `latest.json` pointing at it.
"""

import json
import os
import shutil

import keras

LATEST = "latest.json"
MODEL_FILE = "model.weights.h5"
STATE_FILE = "state.json"


def atomic_write_text(path, text):
    """Writes `text` to `path` via a temporary file and `os.replace`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default))


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def atomic_save_weights(model, path):
    """`model.save_weights(path)` through a temporary file and `os.replace`."""
    if not path.endswith(".weights.h5"):
        raise ValueError(f"Weights files must end in '.weights.h5'; got {path!r}.")
    tmp = path[: -len(".weights.h5")] + f".tmp-{os.getpid()}.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)


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
    """Creates the optimizer's variables so that `load_weights` can fill them."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


class CheckpointManager:
    """Saves and restores a model, extra models and a JSON state, atomically.

    Args:
        directory: where checkpoints live (created if needed).
        model: the model being trained (compiled; its optimizer state is saved with it).
        extra_models: `{name: model}` saved beside it (e.g. `{"ema": ema_model}`).
        keep: how many complete checkpoints to keep (the newest ones).
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
        _build_optimizer(self.model)  # an unbuilt optimizer would save no slots to restore
        self.model.save_weights(os.path.join(tmp, MODEL_FILE))
        for key, extra in self.extra_models.items():
            extra.save_weights(os.path.join(tmp, f"{key}.weights.h5"))
        atomic_write_json(os.path.join(tmp, STATE_FILE), state)
        if os.path.exists(final):  # the same step saved twice (e.g. step- then epoch-save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_json(os.path.join(self.directory, LATEST), {"checkpoint": name})
        self._prune(keep_name=name)
        return final

    def _checkpoints(self):
        names = [
            n for n in os.listdir(self.directory)
            if n.startswith("ckpt-") and os.path.isdir(os.path.join(self.directory, n))
        ]
        return sorted(names)

    def _prune(self, keep_name):
        for name in self._checkpoints()[: -self.keep]:
            if name != keep_name:
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        for name in os.listdir(self.directory):  # leftovers of killed writes
            if name.startswith(".tmp-") and not name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    # === Restoring ===
    def latest(self):
        """The directory of the newest complete checkpoint, or None."""
        path = os.path.join(self.directory, LATEST)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            name = json.load(f)["checkpoint"]
        checkpoint = os.path.join(self.directory, name)
        if not os.path.exists(os.path.join(checkpoint, STATE_FILE)):
            raise FileNotFoundError(
                f"{path} points at {checkpoint!r}, which is missing or incomplete; delete "
                f"{path} to start over or restore the checkpoint directory."
            )
        return checkpoint

    def restore(self):
        """Loads the newest checkpoint into the models; returns its state, or None if none."""
        checkpoint = self.latest()
        if checkpoint is None:
            return None
        _ensure_built(self.model)
        _build_optimizer(self.model)
        self.model.load_weights(os.path.join(checkpoint, MODEL_FILE))
        for key, extra in self.extra_models.items():
            path = os.path.join(checkpoint, f"{key}.weights.h5")
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"Checkpoint {checkpoint!r} has no {key!r} weights ({path}); it was written "
                    f"without them. Resume with the same settings, or start a new output dir."
                )
            extra.load_weights(path)
        with open(os.path.join(checkpoint, STATE_FILE)) as f:
            return json.load(f)


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
