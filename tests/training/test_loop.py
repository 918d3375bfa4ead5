"""The training loop: atomic checkpoints, resume after a kill, logs, best epoch, NaN guard."""

import json
import os

import keras
import numpy as np
import pytest
from training_helpers import tiny_stream, tiny_vit

from keras_spectralkd import Distiller
from keras_spectralkd.training import NonFiniteLossError, train
from keras_spectralkd.training.checkpoint import CheckpointManager, atomic_write_json
from keras_spectralkd.training.ema import ModelEMA


class Killed(Exception):
    pass


class KillAt(keras.callbacks.Callback):
    """Stands for a killed process: raises after `step` steps of this process."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise Killed()


def _distiller(seed=0):
    keras.utils.set_random_seed(seed)
    teacher = tiny_vit(embed_dim=16, depth=3)
    student = tiny_vit(embed_dim=8, depth=2)
    distiller = Distiller(teacher, student, layer_pairs=[(0, 0), (1, 2)], mode="soft")
    distiller.compile(
        optimizer=keras.optimizers.AdamW(1e-2),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return distiller


def _weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_resume_after_a_kill_reaches_the_uninterrupted_weights(tmp_path):
    train_data, validation, steps = tiny_stream()
    epochs = 2

    reference = _distiller()
    ema = ModelEMA(reference.student, decay=0.9, validation_data=validation)
    result = train(reference, train_data, epochs=epochs, steps_per_epoch=steps,
                   validation_data=validation, output_dir=str(tmp_path / "a"), ema=ema,
                   verbose=0)
    assert [row["epoch"] for row in result.history] == [1, 2]
    _check_outputs(str(tmp_path / "a"), result, steps)

    # Killed at step 9 (epoch 2, step 3); the last checkpoint is the one of step 8.
    interrupted = _distiller()
    with pytest.raises(Killed):
        train(interrupted, train_data, epochs=epochs, steps_per_epoch=steps,
              validation_data=validation, output_dir=str(tmp_path / "b"),
              ema=ModelEMA(interrupted.student, decay=0.9), save_every_steps=4,
              callbacks=[KillAt(9)], verbose=0)
    # A new process: other initial weights (another seed), everything comes from the checkpoint.
    resumed = _distiller(seed=1)
    resumed_ema = ModelEMA(resumed.student, decay=0.9)
    result_b = train(resumed, train_data, epochs=epochs, steps_per_epoch=steps,
                     validation_data=validation, output_dir=str(tmp_path / "b"),
                     ema=resumed_ema, verbose=0)
    assert result_b.resumed_from["global_step"] == 8
    assert (result_b.resumed_from["epoch"], result_b.resumed_from["step_in_epoch"]) == (1, 2)
    assert result_b.state["global_step"] == epochs * steps
    for a, b in zip(_weights(reference), _weights(resumed)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for a, b in zip(_weights(ema.ema_model), _weights(resumed_ema.ema_model)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(resumed.optimizer.iterations), epochs * steps
    )
    # The history survives the kill: epoch 1 from before, epoch 2 (partial) after.
    assert [row["epoch"] for row in result_b.history] == [1, 2]


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
    names = os.listdir(os.path.join(out, "checkpoints"))
    assert sorted(names) == [f"ckpt-{steps:09d}", f"ckpt-{2 * steps:09d}", "latest.json"]
    # Running again with the same output dir resumes a finished run: no more steps.
    again = train(_distiller(seed=3), tiny_stream()[0], epochs=2, steps_per_epoch=steps,
                  output_dir=out, verbose=0)
    assert again.resumed_from["global_step"] == 2 * steps and len(again.history) == 2


def test_non_finite_loss_stops_with_a_clear_message(tmp_path):
    train_data, validation, steps = tiny_stream(nan=True)
    with pytest.raises(NonFiniteLossError, match=r"became nan at epoch 1, step 1 .*ce_loss"):
        train(_distiller(), train_data, epochs=1, steps_per_epoch=steps,
              validation_data=validation, output_dir=str(tmp_path), verbose=0)


def test_checkpoint_manager_is_atomic_and_detects_a_changed_run(tmp_path):
    distiller = _distiller()
    train_data, validation, steps = tiny_stream()
    manager = CheckpointManager(str(tmp_path), distiller, keep=1)
    assert manager.restore() is None
    manager.save({"global_step": 1, "epoch": 0, "step_in_epoch": 1, "steps_per_epoch": steps})
    # A write killed half-way leaves only a hidden temporary folder: ignored, then cleaned.
    os.makedirs(tmp_path / ".tmp-ckpt-000000002-999999")
    state = CheckpointManager(str(tmp_path), _distiller(seed=5)).restore()
    assert state["global_step"] == 1
    manager.save({"global_step": 2, "epoch": 0, "step_in_epoch": 2, "steps_per_epoch": steps})
    assert sorted(os.listdir(tmp_path)) == ["ckpt-000000002", "latest.json"]
    atomic_write_json(os.path.join(tmp_path, "latest.json"), {"checkpoint": "ckpt-000000099"})
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        manager.restore()
    # A run with another batch size or dataset must not resume this one.
    atomic_write_json(os.path.join(tmp_path, "latest.json"), {"checkpoint": "ckpt-000000002"})
    run_dir = tmp_path / "run"
    os.makedirs(run_dir)
    os.rename(tmp_path / "ckpt-000000002", tmp_path / "run_ckpt")
    os.makedirs(run_dir / "checkpoints")
    os.rename(tmp_path / "run_ckpt", run_dir / "checkpoints" / "ckpt-000000002")
    os.rename(tmp_path / "latest.json", run_dir / "checkpoints" / "latest.json")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train(_distiller(), train_data, epochs=1, steps_per_epoch=steps - 1,
              output_dir=str(run_dir), verbose=0)
