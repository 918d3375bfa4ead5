"""Exact resume on the real ImageNet pipeline: the tiny DeiT recipe on JPEG photographs, with
the recipes' default parallel per-image map, interrupted mid-epoch and run again on the same
output folder without `teacher_weights`: it resumes from the checkpoint, rebuilds the teacher
from the file the checkpoint recorded, trains on exactly the batches of an uninterrupted run (a
hash of every batch at every (epoch, position)) and ends with its weights; a third run on the
finished folder reads no training batch and changes nothing. Both layouts of `data_dir`: an
image folder, and TFDS `imagenet2012` prepared by TFDS from tars in ImageNet's manual-download
layout (no mock data)."""

import dataclasses
import hashlib
import importlib.util
import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from interrupt import Killed, KillAt
from recipe_helpers import ROOT

from keras_spectralkd.data import imagenet
from keras_spectralkd.models import create
from keras_spectralkd.recipes import RECIPES
from keras_spectralkd.recipes import runner


def _data_test_module(name):
    """tests/data/<name>.py (the data tests' folder is not on the recipe tests' path)."""
    data_tests = os.path.join(ROOT, "tests", "data")
    if data_tests not in sys.path:  # test_tfds_from_tars imports data_helpers by name
        sys.path.append(data_tests)
    spec = importlib.util.spec_from_file_location(f"{name}_for_recipes",
                                                  os.path.join(data_tests, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _photographs(tmp_path):
    """An image folder of 4 classes x 8 training JPEGs: (data_dir, class count)."""
    return _data_test_module("data_helpers").write_photograph_folder(tmp_path / "photos"), 4


def _tfds_from_tars(tmp_path):
    """TFDS imagenet2012 prepared from tars of 4 classes x 8 training JPEGs, as a user's first
    run would prepare it: (data_dir, class count: ImageNet's 1000)."""
    pytest.importorskip("tensorflow_datasets")
    tars = _data_test_module("test_tfds_from_tars")
    labels = os.path.join(os.path.dirname(tars.tfds.__file__), "datasets", "imagenet2012",
                          "labels.txt")
    manual = tars._write_manual_dir(tmp_path / "manual", open(labels).read().split()[:4])
    data_dir = str(tmp_path / "tfds")
    imagenet.tfds_builder(data_dir, manual)
    return data_dir, 1000


LAYOUTS = {"image_folder": _photographs, "tfds_from_tars": _tfds_from_tars}


def _recording(data, record):
    """`data` whose training batches add `(epoch, position) -> sha256` to `record` as the
    pipeline produces them (a batch produced twice must hash the same)."""
    def train(epoch, skip_batches=0):
        dataset = data.train(epoch, skip_batches)

        def note(position, batch):
            images, labels = batch

            def add(e, i, x, y):
                key = (int(e), int(i))
                digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
                assert record.setdefault(key, digest) == digest, f"batch {key} changed"
                return np.int64(0)

            done = tf.py_function(add, [epoch, position, images, labels], tf.int64)
            with tf.control_dependencies([done]):
                return tf.identity(images), tf.identity(labels)

        return dataset.enumerate(start=skip_batches).map(note)

    return dataclasses.replace(data, train=train)


def _student_weights(output_dir):
    student = keras.saving.load_model(os.path.join(output_dir, "student.keras"), compile=False)
    return [np.asarray(w) for w in student.get_weights()]


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_interrupted_recipe_resumes_on_the_same_batches_and_ends_as_an_uninterrupted_run(
        tmp_path, layout):
    recipe = RECIPES["deit_tiny"]
    folder, num_classes = LAYOUTS[layout](tmp_path)
    base = recipe.config("tiny")
    teacher = create(base.teacher, num_classes=num_classes, image_size=base.image_size,
                     **base.teacher_overrides)
    teacher_path = str(tmp_path / "teacher.weights.h5")
    teacher.save_weights(teacher_path)
    # The recipes' default map (parallel), 2 epochs of 4 steps, a checkpoint every step.
    # No XLA: compiling costs more than these few tiny steps.
    settings = dict(data_dir=folder, epochs=2, save_every_steps=1, deterministic=False,
                    tensorboard=False, verbose=0, ema_decay=0.0, jit_compile=False)
    assert not recipe.config("paper").deterministic

    def config(output_dir, **changes):
        return recipe.config("tiny", output_dir=str(output_dir), **settings, **changes)

    reference_batches = {}
    uninterrupted = config(tmp_path / "uninterrupted", teacher_weights=teacher_path)
    data = runner.load_data(uninterrupted)
    assert data.steps_per_epoch == 4
    assert data.description.startswith("TFDS" if layout == "tfds_from_tars" else "image folders")
    runner.run(recipe, uninterrupted, data=_recording(data, reference_batches))
    assert sorted(reference_batches) == [(e, i) for e in range(2) for i in range(4)]

    # Interrupted after 6 steps (epoch 1, position 2): the checkpoint of step 5 is kept.
    resumed_dir = tmp_path / "resumed"
    batches = {}
    first = config(resumed_dir, teacher_weights=teacher_path)
    with pytest.raises(Killed):
        runner.run(recipe, first, data=_recording(runner.load_data(first), batches),
                   callbacks=[KillAt(6)])
    # Run again, as a restarted job would: no teacher_weights, fresh data objects.
    second = config(resumed_dir)
    assert second.teacher_weights is None
    summary = runner.run(recipe, second, data=_recording(runner.load_data(second), batches))
    resumed_from = summary["resumed_from"]
    assert resumed_from["global_step"] == 5
    assert (resumed_from["epoch"], resumed_from["step_in_epoch"]) == (1, 1)
    recorded = json.load(open(resumed_dir / "config.json"))
    assert recorded["teacher_weights"] == os.path.abspath(teacher_path)
    assert summary["final"]["global_step"] == 8

    # Every batch either attempt produced is the uninterrupted run's batch at that place.
    for key, digest in batches.items():
        assert reference_batches.get(key) == digest, key
    assert set(reference_batches) <= set(batches)
    final_weights = _student_weights(resumed_dir)
    for ours, theirs in zip(final_weights, _student_weights(tmp_path / "uninterrupted"),
                            strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)

    # A third run on the finished folder reads no training batch and keeps the weights.
    third = {}
    again = runner.run(recipe, config(resumed_dir), data=_recording(runner.load_data(second),
                                                                    third))
    assert again["final"]["global_step"] == 8
    assert third == {}
    for ours, before in zip(_student_weights(resumed_dir), final_weights, strict=True):
        np.testing.assert_array_equal(ours, before)
