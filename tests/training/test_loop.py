"""The training loop: one `fit` per run (Keras callbacks keep their state), exact resume after a
kill, durable checkpoints with a fallback, logs, best epoch, NaN guard, run identity."""

import glob
import json
import os

import h5py
import keras
import numpy as np
import pytest
from interrupt import Killed, KillAt
from training_helpers import tiny_stream, tiny_vit

from keras_spectralkd import Distiller
from keras_spectralkd.training import NonFiniteLossError, create_optimizer, train
from keras_spectralkd.training.checkpoint import CheckpointManager, atomic_write_json
from keras_spectralkd.training.loop import _all_epochs


class Counter(keras.callbacks.Callback):
    """A stateful user callback: counts what it is told."""

    def __init__(self):
        super().__init__()
        self.calls = {"train_begin": 0, "train_end": 0, "epoch_end": 0, "batch_end": 0}

    def on_train_begin(self, logs=None):
        self.calls["train_begin"] += 1

    def on_train_end(self, logs=None):
        self.calls["train_end"] += 1

    def on_epoch_end(self, epoch, logs=None):
        self.calls["epoch_end"] += 1

    def on_train_batch_end(self, batch, logs=None):
        self.calls["batch_end"] += 1


def _distiller(seed=0, optimizer=None, ema_momentum=0.9):
    """The teacher is always the same (a resumed run rebuilds it from where it came from);
    the student's initial weights depend on `seed`."""
    keras.utils.set_random_seed(0)
    teacher = tiny_vit(embed_dim=16, depth=3)
    keras.utils.set_random_seed(seed)
    student = tiny_vit(embed_dim=8, depth=2)
    distiller = Distiller(teacher, student, layer_pairs=[(0, 0), (1, 2)], mode="soft")
    distiller.compile(
        optimizer=optimizer or create_optimizer(1e-2, model=student, ema_momentum=ema_momentum),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return distiller


def _weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_one_fit_keras_callbacks_keep_their_state(tmp_path):
    """EarlyStopping and ReduceLROnPlateau act on a stalled metric; a user callback sees one
    train_begin; TensorBoard writes one event file per folder."""
    train_data, validation, steps = tiny_stream()
    # A learning rate so small that validation accuracy cannot move: the metric stalls.
    distiller = _distiller(optimizer=keras.optimizers.SGD(1e-7))
    counter = Counter()
    log_dir = str(tmp_path / "tb")
    callbacks = [
        counter,
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=1),
        keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", patience=1,
                                          factor=0.5),
        keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False),
    ]
    result = train(distiller, train_data, epochs=5, steps_per_epoch=steps,
                   validation_data=validation, output_dir=str(tmp_path / "run"),
                   callbacks=callbacks, verbose=0)
    # Epoch 1 sets the best, epoch 2 does not improve: patience 1 stops after epoch 2.
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.history[0]["val_accuracy"] == result.history[1]["val_accuracy"]
    assert counter.calls == {"train_begin": 1, "train_end": 1, "epoch_end": 2,
                             "batch_end": 2 * steps}
    lr = float(keras.ops.convert_to_numpy(distiller.optimizer.learning_rate))
    np.testing.assert_allclose(lr, 0.5e-7, rtol=1e-6)
    # The logged rate is the one each epoch trained with; the plateau lowered it afterwards.
    assert [row["learning_rate"] for row in result.history] == pytest.approx([1e-7, 1e-7])
    for folder in ("train", "validation"):
        assert len(glob.glob(os.path.join(log_dir, folder, "events.out.tfevents.*"))) == 1


def test_resume_after_a_kill_reaches_the_uninterrupted_weights(tmp_path):
    train_data, validation, steps = tiny_stream()
    epochs = 2

    reference = _distiller()
    result = train(reference, train_data, epochs=epochs, steps_per_epoch=steps,
                   validation_data=validation, output_dir=str(tmp_path / "a"), verbose=0)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert "ema_val_accuracy" in result.history[-1]
    _check_outputs(str(tmp_path / "a"), result, steps)

    # Killed at step 9 (epoch 2, step 3); the last checkpoint is the one of step 8.
    interrupted = _distiller()
    with pytest.raises(Killed):
        train(interrupted, train_data, epochs=epochs, steps_per_epoch=steps,
              validation_data=validation, output_dir=str(tmp_path / "b"), save_every_steps=4,
              callbacks=[KillAt(9)], verbose=0)
    # A new process: another student initialisation, everything comes from the checkpoint.
    resumed = _distiller(seed=1)
    counter = Counter()
    result_b = train(resumed, train_data, epochs=epochs, steps_per_epoch=steps,
                     validation_data=validation, output_dir=str(tmp_path / "b"),
                     callbacks=[counter], verbose=0)
    assert result_b.resumed_from["global_step"] == 8
    assert (result_b.resumed_from["epoch"], result_b.resumed_from["step_in_epoch"]) == (1, 2)
    assert result_b.state["global_step"] == epochs * steps
    # Raw weights, optimizer slots and the optimizer's EMA all equal the uninterrupted run's.
    for a, b in zip(_weights(reference), _weights(resumed)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    for a, b in zip(reference.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a),
                                   rtol=1e-6, atol=1e-7, err_msg=a.path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(resumed.optimizer.iterations), epochs * steps
    )
    # The rest of the interrupted epoch ran before `fit`: the user callback saw nothing of it.
    assert counter.calls["train_begin"] == 0 and counter.calls["batch_end"] == 0
    assert [row["epoch"] for row in result_b.history] == [1, 2]
    np.testing.assert_allclose(result_b.history[1]["val_loss"], result.history[1]["val_loss"],
                               rtol=1e-5)


def _check_outputs(out, result, steps):
    """Logs, best epoch and checkpoints of a finished 2-epoch run in `out`."""
    for name in ("log.csv", "log.jsonl", "best.json", "best.weights.h5",
                 "checkpoints/latest.json"):
        assert os.path.exists(os.path.join(out, name)), name
    with open(os.path.join(out, "log.csv")) as f:
        lines = f.read().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 3 and {"epoch", "loss", "spectral_loss", "val_accuracy",
                                "learning_rate", "global_step", "ema_val_accuracy"} <= set(header)
    rows = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert [r["global_step"] for r in rows] == [steps, 2 * steps]
    best = max(result.history, key=lambda r: r["val_accuracy"])
    assert result.best["value"] == best["val_accuracy"]
    assert json.load(open(os.path.join(out, "best.json")))["epoch"] == result.best["epoch"]
    # Only `keep` checkpoints stay, and no temporary leftovers.
    directory = os.path.join(out, "checkpoints")
    assert sorted(os.listdir(directory)) == [f"ckpt-{steps:09d}", f"ckpt-{2 * steps:09d}",
                                             "latest.json"]
    # A checkpoint holds the student and the optimizer, not the frozen teacher.
    with h5py.File(os.path.join(directory, f"ckpt-{steps:09d}", "model.weights.h5")) as f:
        stored = []
        f.visititems(lambda name, item: stored.append(name)
                     if isinstance(item, h5py.Dataset) else None)
    assert len(stored) == len(tiny_vit(embed_dim=8, depth=2).weights)
    # Running again with the same output dir resumes a finished run: no more steps.
    again = train(_distiller(seed=3), tiny_stream()[0], epochs=2, steps_per_epoch=steps,
                  output_dir=out, verbose=0)
    assert again.resumed_from["global_step"] == 2 * steps and len(again.history) == 2


def test_non_finite_loss_stops_with_a_clear_message(tmp_path):
    train_data, validation, steps = tiny_stream(nan=True)
    with pytest.raises(NonFiniteLossError,
                       match=r"became nan at epoch 1, step 1 .*ce_loss.*No checkpoint"):
        train(_distiller(), train_data, epochs=1, steps_per_epoch=steps,
              validation_data=validation, output_dir=str(tmp_path), verbose=0)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capfd):
    distiller = _distiller()
    train_data, validation, steps = tiny_stream()
    manager = CheckpointManager(str(tmp_path), distiller, keep=2)
    assert manager.restore() is None
    manager.save({"global_step": 1, "epoch": 0, "step_in_epoch": 1, "steps_per_epoch": steps})
    first = _weights(distiller.student)
    distiller.student.weights[0].assign(distiller.student.weights[0] + 1.0)
    manager.save({"global_step": 2, "epoch": 0, "step_in_epoch": 2, "steps_per_epoch": steps})
    # A write killed half-way leaves only a hidden temporary folder: ignored, then cleaned.
    os.makedirs(tmp_path / ".tmp-ckpt-000000003-999999")
    # The newest checkpoint's weights file is truncated (a disk error): fall back, and say so.
    path = tmp_path / "ckpt-000000002" / "model.weights.h5"
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    capfd.readouterr()
    other = _distiller(seed=5)
    state = CheckpointManager(str(tmp_path), other).restore()
    assert state["global_step"] == 1
    assert "ckpt-000000002" in capfd.readouterr().err
    for a, b in zip(first, _weights(other.student)):
        np.testing.assert_array_equal(a, b)
    # latest.json lost: the highest complete step is used.
    os.remove(tmp_path / "latest.json")
    assert CheckpointManager(str(tmp_path), other).latest().endswith("ckpt-000000002")
    # Nothing readable at all: a clear error, nothing deleted.
    os.remove(tmp_path / "ckpt-000000001" / "optimizer.npz")
    with pytest.raises(ValueError, match="No readable checkpoint.*ckpt-000000001"):
        CheckpointManager(str(tmp_path), other).restore()
    assert os.path.exists(tmp_path / "ckpt-000000001" / "model.weights.h5")


def test_resuming_another_setting_is_refused(tmp_path):
    train_data, validation, steps = tiny_stream()
    out = str(tmp_path / "run")
    train(_distiller(), train_data, epochs=1, steps_per_epoch=steps, output_dir=out,
          run_info={"student": "a", "mode": "soft"}, verbose=0)
    before = sorted(os.listdir(os.path.join(out, "checkpoints")))
    with pytest.raises(ValueError, match=r"another setting \(mode: checkpoint 'soft', now "
                                         r"'fft'\); refusing"):
        train(_distiller(), train_data, epochs=2, steps_per_epoch=steps, output_dir=out,
              run_info={"student": "a", "mode": "fft"}, verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train(_distiller(), train_data, epochs=2, steps_per_epoch=steps - 1, output_dir=out,
              run_info={"student": "a", "mode": "soft"}, verbose=0)
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == before


def test_epochs_are_chained_into_one_dataset():
    """Epochs 1 and 2, `steps` batches each (fewer than the data hold: each epoch restarts at
    its own first batch), whether `train_data` can be traced with a tensor epoch or not."""
    train_data, _, steps = tiny_stream()
    take = steps - 1
    expected = [x.numpy() for e in (1, 2) for x, _ in train_data(e, 0).take(take)]
    traced = [x.numpy() for x, _ in _all_epochs(train_data, 1, 3, take)]
    eager = [x.numpy() for x, _ in _all_epochs(lambda e, s: train_data(int(e), s), 1, 3, take)]
    assert len(expected) == len(traced) == len(eager) == 2 * take
    for a, b, c in zip(expected, traced, eager):
        np.testing.assert_array_equal(b, a)
        np.testing.assert_array_equal(c, a)


def test_validation_every_evaluates_every_nth_epoch_and_the_last(tmp_path):
    """`validation_every=2` over 3 epochs: epochs 2 and 3 have `val_*` and the EMA's
    `ema_val_*`, epoch 1 neither; the best epoch is chosen among the evaluated ones."""
    from keras_spectralkd.training.loop import validation_epochs

    assert validation_epochs(5, 2) == [2, 4, 5] and validation_epochs(4, 1) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="validation_every must be a positive integer"):
        validation_epochs(3, 0)
    train_data, validation, steps = tiny_stream()
    result = train(_distiller(), train_data, epochs=3, steps_per_epoch=steps,
                   validation_data=validation, validation_every=2,
                   output_dir=str(tmp_path / "run"), verbose=0)
    logged = [sorted(k for k in row if "val_" in k) for row in result.history]
    assert logged[0] == [] and "val_accuracy" in logged[1] and "ema_val_accuracy" in logged[2]
    assert result.best["epoch"] in (2, 3)
