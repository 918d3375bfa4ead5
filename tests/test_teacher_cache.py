"""`TeacherCache`: the Distiller fed precomputed teacher outputs trains exactly as with the
online teacher (loss terms and gradients, on backbones by unit and on functional models by
layer name). The runner's `cache_teacher`: tests/recipes/test_cache_teacher.py.

Gradients are compared through one SGD step at learning rate 1 (no momentum, no decay): the
change of every student weight IS minus its gradient, taken by each backend's own `fit`
machinery.
"""

import dataclasses
import os

import keras
import numpy as np
import pytest
from timm_oracle import random_images

from keras_spectralkd import Distiller, TeacherCache
from keras_spectralkd.models import create

PAIRS = [(0, 0), (1, 2)]


def _student(seed=1):
    keras.utils.set_random_seed(seed)
    return create("deit_tiny_patch16_224", image_size=16, patch_size=4, embed_dim=16, depth=2,
                  num_heads=2, num_classes=10)


@pytest.fixture(scope="module")
def teacher():
    keras.utils.set_random_seed(0)
    model = create("cait_s24_224", image_size=16, patch_size=4, embed_dim=24, depth=3,
                   num_heads=2, num_classes=10, init_values=0.1)
    model.trainable = False
    return model


def _one_sgd_step(distiller, x, y):
    """The logs and the student's weight changes (= -gradient) of one SGD step at lr 1."""
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), jit_compile=False)
    before = [np.array(w) for w in distiller.student.get_weights()]
    logs = distiller.train_on_batch(x, y, return_dict=True)
    after = distiller.student.get_weights()
    return logs, [a - b for a, b in zip(after, before)]


def _compare_online_and_cached(teacher, make_student, pairs, mode, images, labels):
    online = Distiller(teacher, make_student(), layer_pairs=pairs, mode=mode)
    cache = TeacherCache.compute(teacher, images, units=[t for _, t in pairs], batch_size=3)
    cached = Distiller(teacher, make_student(), layer_pairs=pairs, mode=mode)
    logs_online, steps_online = _one_sgd_step(online, images, labels)
    logs_cached, steps_cached = _one_sgd_step(
        cached, cache.inputs(images, [t for _, t in pairs]), labels)
    for key in ("loss", "ce_loss", "kd_loss", "spectral_loss"):
        if key in logs_online:
            np.testing.assert_allclose(logs_cached[key], logs_online[key], rtol=1e-5, atol=1e-7,
                                       err_msg=key)
    assert any(np.abs(s).max() > 0 for s in steps_online)
    for a, b in zip(steps_cached, steps_online):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    return logs_online


@pytest.mark.parametrize("mode", ["soft", "hard", "fft"])
def test_cached_teacher_trains_as_the_online_teacher(teacher, mode):
    images = random_images(8, 16, seed=2)
    labels = np.arange(8) % 10
    logs = _compare_online_and_cached(teacher, _student, PAIRS, mode, images, labels)
    assert logs["spectral_loss"] > 0


def test_cached_logits_only_for_logit_kd(teacher):
    images = random_images(8, 16, seed=4)
    labels = np.arange(8) % 10
    logs = _compare_online_and_cached(teacher, _student, [], "soft", images, labels)
    assert logs["kd_loss"] > 0


def test_cached_named_layers_of_a_functional_teacher():
    """A functional CNN teacher by layer name into a functional student: same loss, same step."""
    def cnn(seed, width):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv1")(inputs)
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu",
                                name="conv2")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(10, name="head")(x))

    teacher = cnn(0, 12)
    teacher.trainable = False
    images = random_images(6, 16, seed=5)
    labels = np.arange(6) % 10
    pairs = [("conv1", "conv1"), ("conv2", "conv2")]
    _compare_online_and_cached(teacher, lambda: cnn(1, 8), pairs, "soft", images, labels)


def test_cache_errors_name_the_problem(teacher, tmp_path):
    images = random_images(4, 16, seed=6)
    cache = TeacherCache.compute(teacher, images, units=[0, 2])
    assert cache.units == [0, 2] and len(cache) == 4
    with pytest.raises(ValueError, match=r"no maps of units \[1\].*holds \[0, 2\]"):
        cache.inputs(images, [0, 1])
    with pytest.raises(ValueError, match="holds 4 images' outputs; got 3"):
        cache.inputs(images[:3], [0])
    distiller = Distiller(teacher, _student(), layer_pairs=PAIRS, mode="soft")
    with pytest.raises(ValueError, match=r"hold 1 map\(s\), but layer_pairs=.*one per pair"):
        distiller(cache.inputs(images, [0]), training=True)
    with pytest.raises(ValueError, match=r"got keys \['image'\]"):
        distiller({"image": images}, training=True)
    none = Distiller(None, _student(), mode="none")
    with pytest.raises(ValueError, match="mode='none' uses no teacher"):
        none(cache.inputs(images, []), training=True)
    # Saved and loaded (atomically, no pickle): the same arrays.
    path = str(tmp_path / "cache.npz")
    cache.save(path)
    loaded = TeacherCache.load(path)
    assert loaded.units == [0, 2] and not [f for f in os.listdir(tmp_path) if "tmp" in f]
    np.testing.assert_array_equal(loaded.logits, cache.logits)
    np.testing.assert_array_equal(loaded.maps[2], cache.maps[2])


def test_cache_teacher_is_refused_with_augmentation():
    from keras_spectralkd.recipes import sweep

    _, config = sweep.miniature(quick=True)
    with pytest.raises(ValueError, match="cache_teacher=true needs the same image.*augment=True"):
        dataclasses.replace(config, cache_teacher=True, augment=True).check()
