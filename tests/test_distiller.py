"""Distiller: SPEC.md 3's objective by hand, training, serialization, bad input."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch

import torch_objective as ref  # tests/torch_objective.py: the PyTorch oracle
from keras_spectralkd import Distiller
from tiny_backbone import TinyBackbone

PAIRS = [(0, 0), (2, 3)]
HERE = os.path.dirname(__file__)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture
def models():
    teacher = TinyBackbone(width=12, depth=4, name="teacher")
    student = TinyBackbone(width=6, depth=3, name="student")
    return teacher, student


@pytest.fixture
def batch(rng):
    x = rng.standard_normal((6, 8, 8, 3)).astype("float32")
    y = np.array([0, 1, 2, 3, 1, 2])
    return x, y


def tracked_terms(distiller):
    """The tracked loss terms; a term the mode does not use is untracked and counts as 0."""
    trackers = {"ce": distiller.ce_tracker, "kd": distiller.kd_tracker,
                "spectral": distiller.spectral_tracker}
    return {name: 0.0 if tracker is None else float(numpy(tracker.result()))
            for name, tracker in trackers.items()}


@pytest.mark.parametrize("mode", ["soft", "hard", "fft", "none"])
def test_total_equals_spec_objective(models, batch, mode):
    teacher, student = models
    x, y = batch
    pairs = [] if mode == "none" else PAIRS
    settings = dict(alpha=0.7, beta=1.5, spectral_weight=0.2, temperature=2.0, label_smoothing=0.1)
    distiller = Distiller(teacher, student, layer_pairs=pairs, mode=mode, **settings)
    total = distiller.compute_loss(x, y, distiller(x, training=True), training=True)

    s_logits, s_maps = student.forward_intermediates(x, [p[0] for p in pairs])
    t_logits, t_maps = teacher.forward_intermediates(x, [p[1] for p in pairs])
    expected = ref.objective(
        torch.tensor(numpy(s_logits)),
        torch.tensor(numpy(t_logits)),
        y,
        [ref.to_nchw(numpy(m)) for m in s_maps],
        [ref.to_nchw(numpy(m)) for m in t_maps],
        mode=mode,
        **settings,
    )
    np.testing.assert_allclose(float(numpy(total)), expected["total"].item(), rtol=1e-5)
    terms = tracked_terms(distiller)
    for name in ("ce", "kd", "spectral"):
        np.testing.assert_allclose(terms[name], expected[name].item(), rtol=1e-5, atol=1e-7)
    if mode in ("soft", "hard"):
        assert terms["kd"] > 0
    if mode in ("soft", "hard", "fft"):
        assert terms["spectral"] > 0


def test_training_call_carries_the_teachers_outputs(models, batch):
    """One pass of each model: the training call returns the teacher's logits and maps (run
    before the student's forward), and compute_loss gives the same total when handed a y_pred
    without them (it then runs the teacher itself)."""
    teacher, student = models
    x, y = batch
    distiller = Distiller(teacher, student, layer_pairs=PAIRS, mode="soft")
    outputs = distiller(x, training=True)
    assert set(outputs) == {"logits", "maps", "teacher_logits", "teacher_maps"}
    t_logits, t_maps = teacher.forward_intermediates(x, [p[1] for p in PAIRS])
    np.testing.assert_allclose(numpy(outputs["teacher_logits"]), numpy(t_logits), rtol=1e-6)
    for got, want in zip(outputs["teacher_maps"], t_maps):
        np.testing.assert_allclose(numpy(got), numpy(want), rtol=1e-6)
    with_teacher = distiller.compute_loss(x, y, outputs)
    student_only = {"logits": outputs["logits"], "maps": outputs["maps"]}
    without_teacher = distiller.compute_loss(x, y, student_only)
    np.testing.assert_allclose(float(numpy(with_teacher)), float(numpy(without_teacher)), rtol=1e-6)
    assert "teacher_logits" not in Distiller(None, student, mode="none")(x, training=True)


def test_soft_kd_without_pairs_and_one_hot_labels(models, batch):
    teacher, student = models
    x, y = batch
    distiller = Distiller(teacher, student, layer_pairs=None, mode="soft")
    one_hot = np.eye(4, dtype="float32")[y]
    total_ids = float(numpy(distiller.compute_loss(x, y, distiller(x, training=True))))
    total_one_hot = float(numpy(distiller.compute_loss(x, one_hot, distiller(x, training=True))))
    expected = ref.objective(
        torch.tensor(numpy(student(x))), torch.tensor(numpy(teacher(x))), y, mode="soft"
    )
    np.testing.assert_allclose(total_ids, expected["total"].item(), rtol=1e-5)
    np.testing.assert_allclose(total_one_hot, total_ids, rtol=1e-6)


@pytest.mark.parametrize("mode", ["soft", "fft", "none"])
def test_fit_lowers_the_loss(models, rng, mode):
    teacher, student = models
    x = rng.standard_normal((32, 8, 8, 3)).astype("float32")
    y = np.arange(32) % 4
    pairs = None if mode == "none" else PAIRS
    distiller = Distiller(teacher, student, layer_pairs=pairs, mode=mode)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=8, epochs=6, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    # Only the terms of the mode are logged (no all-zero columns).
    expected_keys = {"loss", "accuracy", "ce_loss"}
    if mode == "soft":
        expected_keys |= {"kd_loss"}
    if mode != "none":
        expected_keys |= {"spectral_loss", "spectral_loss_pair_0", "spectral_loss_pair_1"}
    assert set(history) == expected_keys
    # The teacher is frozen: only the student trains.
    assert len(distiller.trainable_weights) == len(student.trainable_weights)


def test_teacher_is_not_updated(models, rng):
    teacher, student = models
    before = [numpy(w).copy() for w in teacher.weights]
    distiller = Distiller(teacher, student, layer_pairs=PAIRS)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = rng.standard_normal((8, 8, 8, 3)).astype("float32")
    distiller.fit(x, np.arange(8) % 4, batch_size=4, epochs=1, verbose=0)
    for old, new in zip(before, teacher.weights):
        np.testing.assert_array_equal(old, numpy(new))


def test_evaluate_and_predict_use_the_student_only(models, batch):
    teacher, student = models
    x, y = batch
    distiller = Distiller(teacher, student, layer_pairs=PAIRS)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    np.testing.assert_allclose(distiller.predict(x, verbose=0), numpy(student(x)), rtol=1e-6)
    results = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert set(results) == {"loss", "accuracy"}
    logits = torch.tensor(numpy(student(x)))
    plain_ce = torch.nn.functional.cross_entropy(logits, torch.tensor(y)).item()
    np.testing.assert_allclose(results["loss"], plain_ce, rtol=1e-5)


@pytest.mark.parametrize("mode", ["none", "soft", "hard"])
def test_plain_classifiers_work_without_pairs(rng, mode):
    def classifier(name):
        return keras.Sequential(
            [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)], name=name
        )

    distiller = Distiller(classifier("teacher"), classifier("student"), mode=mode)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = rng.standard_normal((16, 8, 8, 3)).astype("float32")
    history = distiller.fit(x, np.arange(16) % 4, batch_size=8, epochs=3, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]


def test_config_round_trip(models):
    teacher, student = models
    distiller = Distiller(teacher, student, layer_pairs=PAIRS, mode="hard", alpha=0.5,
                          spectral_weight=0.05, temperature=3.0)
    clone = Distiller.from_config(distiller.get_config())
    for key in ("mode", "alpha", "beta", "spectral_weight", "temperature", "label_smoothing"):
        assert getattr(clone, key) == getattr(distiller, key)
    assert clone.layer_pairs == PAIRS
    assert isinstance(clone.student, TinyBackbone) and clone.student.depth == 3


def test_student_saves_alone_and_reloads(models, batch, tmp_path):
    teacher, student = models
    x, y = batch
    distiller = Distiller(teacher, student, layer_pairs=PAIRS)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    distiller.fit(x, y, batch_size=3, epochs=1, verbose=0)
    path = str(tmp_path / "student.keras")
    distiller.student.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(numpy(reloaded(x)), numpy(student(x)), rtol=1e-6, atol=1e-6)
    _, maps = reloaded.forward_intermediates(x, [2])
    _, original = student.forward_intermediates(x, [2])
    np.testing.assert_allclose(numpy(maps[0]), numpy(original[0]), rtol=1e-6, atol=1e-6)


# === bad input ===
@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(mode="kl"), "Unknown mode 'kl'"),
        (dict(alpha=1.5), r"`alpha` must be in \[0.0, 1.0\]; got 1.5"),
        (dict(alpha=-0.1), "got -0.1"),
        (dict(beta=-1.0), "`beta` must be >= 0.0; got -1.0"),
        (dict(spectral_weight=-0.2), "`spectral_weight` must be >= 0.0; got -0.2"),
        (dict(temperature=0.0), "`temperature` must be > 0.0; got 0.0"),
        (dict(temperature=-2.0), "got -2.0"),
        (dict(label_smoothing=1.0), r"`label_smoothing` must be in \[0.0, 1.0\); got 1.0"),
        (dict(alpha=float("nan")), r"`alpha` must be a finite number in \[0.0, 1.0\]; got nan"),
        (dict(beta=float("inf")), "`beta` must be a finite number >= 0.0; got inf"),
        (dict(spectral_weight=float("-inf")), "`spectral_weight` must be a finite number"),
        (dict(temperature=float("nan")), "`temperature` must be a finite number > 0.0; got nan"),
        (dict(label_smoothing=float("nan")), "`label_smoothing` must be a finite number"),
        (dict(alpha=True), r"`alpha` must be a number in \[0.0, 1.0\]; got True \(a bool\)"),
        (dict(temperature="2"), r"got '2' \(a str\)"),
        (dict(beta=None), "`beta` must be a number >= 0.0; got None"),
        (dict(layer_pairs=[(0, 0), (0, 0)]), r"Duplicated student units \[0\]"),
        (dict(layer_pairs=[(0, 1.0)]), "a unit index \\(int\\) or a layer name"),
        (dict(layer_pairs=[(0, float("inf"))]), "a unit index \\(int\\) or a layer name"),
        (dict(layer_pairs=[(True, 1)]), "a unit index \\(int\\) or a layer name"),
        (dict(layer_pairs=[(0, 1, 2)]), "a unit index \\(int\\) or a layer name"),
        (dict(layer_pairs=3), "must be a list of"),
        (dict(layer_pairs=(0, 0)), r"one pair not in a list \(write \[\(0, 0\)\]\)"),
        (dict(layer_pairs=[(2, 3), (0, 0)]), "not increasing"),
        (dict(layer_pairs=[(0, 1), (0, 2)]), "Duplicated student units"),
        (dict(layer_pairs=[(0, 1), (1, 1)]), "Duplicated teacher units"),
        (dict(layer_pairs=[(3, 0)]), "student unit 3 is out of range; the student has 3 units"),
        (dict(layer_pairs=[(0, 4)]), "teacher unit 4 is out of range; the teacher has 4 units"),
        (dict(layer_pairs=[(0, 1.5)]), "a unit index \\(int\\) or a layer name"),
        (dict(layer_pairs=[(0, -1)]), "non-negative"),
        (dict(layer_pairs="0:0"), "got the string"),
        (dict(mode="fft", layer_pairs=[]), "needs at least one layer pair"),
        (dict(mode="none", layer_pairs=[(0, 0)]), "cross-entropy only"),
    ],
)
def test_bad_arguments_raise_at_construction(models, kwargs, message):
    teacher, student = models
    kwargs.setdefault("layer_pairs", PAIRS)
    with pytest.raises(ValueError, match=message):
        Distiller(teacher, student, **kwargs)


def test_wider_student_and_grid_mismatch_raise_at_construction():
    wide_student = TinyBackbone(width=16, depth=2, name="wide")
    teacher = TinyBackbone(width=12, depth=2, name="teacher")
    with pytest.raises(ValueError, match="wider than the teacher"):
        Distiller(teacher, wide_student, layer_pairs=[(0, 0)])
    coarse = TinyBackbone(width=6, depth=2, patch_size=4, name="coarse")
    with pytest.raises(ValueError, match=r"Spatial grids differ for layer pair \(0, 0\)"):
        Distiller(teacher, coarse, layer_pairs=[(0, 0)])


def test_pairs_need_feature_maps(rng):
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="has no `forward_intermediates`"):
        Distiller(plain, TinyBackbone(), layer_pairs=[(0, 0)])
    with pytest.raises(ValueError, match="needs a teacher"):
        Distiller(None, TinyBackbone(), mode="soft")


def classifier(num_classes, name):
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes)], name=name)


class Subclassed(keras.Model):
    """A classifier whose head size is unknown until it runs (no output shape before)."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.flatten, self.head = keras.layers.Flatten(), keras.layers.Dense(num_classes)

    def call(self, images, training=False):
        return self.head(self.flatten(images))


CLASSES_DIFFER = r"the teacher '{}' has 7 classes and the student '{}' has 10"


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_logit_kd_between_heads_of_different_sizes_raises_at_construction(mode):
    with pytest.raises(ValueError, match=CLASSES_DIFFER.format("teacher", "student")):
        Distiller(classifier(7, "teacher"), classifier(10, "student"), mode=mode)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_logit_kd_between_unbuilt_heads_of_different_sizes_raises_in_fit(rng, mode):
    distiller = Distiller(Subclassed(7, name="teacher"), Subclassed(10, name="student"), mode=mode)
    distiller.compile(optimizer="sgd")
    x = rng.standard_normal((4, 8, 8, 3)).astype("float32")
    with pytest.raises(ValueError, match=CLASSES_DIFFER.format("teacher", "student")):
        distiller.fit(x, np.arange(4) % 7, batch_size=4, epochs=1, verbose=0)


def test_spectral_only_and_plain_modes_allow_heads_of_different_sizes(rng):
    teacher = TinyBackbone(width=12, depth=4, num_classes=7, name="teacher")
    student = TinyBackbone(width=6, depth=3, num_classes=10, name="student")
    distiller = Distiller(teacher, student, layer_pairs=PAIRS, mode="fft")
    distiller.compile(optimizer="sgd")
    x = rng.standard_normal((4, 8, 8, 3)).astype("float32")
    history = distiller.fit(x, np.arange(4), batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    Distiller(teacher, TinyBackbone(width=6, depth=3, num_classes=10), mode="none")


def test_unbuilt_subclassed_models_train(rng):
    """`Distiller.build` creates both models' weights before the first step (JAX's stateless step
    fails on a teacher whose weights do not exist yet)."""
    distiller = Distiller(Subclassed(4, name="teacher"), Subclassed(4, name="student"))
    distiller.compile(optimizer="sgd")
    x = rng.standard_normal((8, 8, 8, 3)).astype("float32")
    history = distiller.fit(x, np.arange(8) % 4, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["kd_loss"][0] > 0


def test_models_must_be_keras_models_and_distinct():
    with pytest.raises(ValueError, match=r"`student` must be a Keras model .* got 'deit_tiny"):
        Distiller(TinyBackbone(), "deit_tiny_patch16_224")
    with pytest.raises(ValueError, match="`teacher` must be a Keras model"):
        Distiller(lambda images: images, TinyBackbone())
    model = TinyBackbone(name="both")
    with pytest.raises(ValueError, match="the same model 'both'"):
        Distiller(model, model)


def test_bad_labels_are_reported(models, batch):
    teacher, student = models
    x, _ = batch
    distiller = Distiller(teacher, student, layer_pairs=PAIRS)
    with pytest.raises(ValueError, match=r"targets \(B, 4\); got shape \(6, 7\)"):
        distiller.compute_loss(x, np.zeros((6, 7), "float32"), distiller(x, training=True))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute is TF-only")
def test_mirrored_strategy_matches_single_replica():
    """Two logical CPU devices: the reported loss and the update equal one device's."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=HERE + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "distribute_check.py")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "MATCH" in result.stdout, result.stdout[-3000:]
