"""SpectralDistillation inside Keras' own `keras.distillation.Distiller` (issue 12, item 1).

Tiny functional DeiT <- CaiT backbones (ours). Keras' Distiller with our loss must give the same
spectral term, and with `LogitsDistillation(loss=keras.losses.KLDivergence())` the same whole
objective, as our `Distiller`.
"""

import keras
import numpy as np
import pytest

from keras_spectralkd import Distiller
from keras_spectralkd import SpectralDistillation
from keras_spectralkd import models

TEACHER = dict(patch_size=8, embed_dim=32, depth=4, num_heads=2)
STUDENT = dict(patch_size=8, embed_dim=16, depth=3, num_heads=2)
PAIRS = [(0, 0), (2, 3)]
NUM_CLASSES = 5


@pytest.fixture
def pair_models():
    teacher = models.create("cait_s24_224", num_classes=NUM_CLASSES, image_size=32, **TEACHER)
    student = models.create(
        "deit_tiny_patch16_224", num_classes=NUM_CLASSES, image_size=32, **STUDENT
    )
    return teacher, student


@pytest.fixture
def batch(rng):
    images = rng.normal(size=(3, 32, 32, 3)).astype("float32")
    labels = np.array([0, 4, 2])
    return images, labels


def to_float(x):
    return float(keras.ops.convert_to_numpy(x))


def keras_distiller(teacher, student, losses, weights, student_loss_weight, loss):
    distiller = keras.distillation.Distiller(
        teacher,
        student,
        distillation_losses=losses,
        distillation_loss_weights=weights,
        student_loss_weight=student_loss_weight,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(1e-3), loss=loss)
    return distiller


def test_keras_distiller_gives_our_spectral_term_and_objective(pair_models, batch):
    teacher, student = pair_models
    images, labels = batch
    alpha, beta, w_fft, tau = 0.9, 1.0, 0.2, 2.0
    ours = Distiller(
        teacher, student, layer_pairs=PAIRS, mode="soft", alpha=alpha, beta=beta,
        spectral_weight=w_fft, temperature=tau,
    )
    our_total = to_float(ours.compute_loss(images, labels, ours(images, training=True)))
    our_spectral = to_float(ours.spectral_tracker.result())
    our_pairs = [to_float(tracker.result()) for tracker in ours.pair_trackers]
    assert our_spectral > 0

    # The spectral term alone: student_loss_weight=0 makes the total the weighted losses.
    losses, weights = SpectralDistillation.for_layer_pairs(teacher, student, PAIRS)
    assert [(l.student_layer_name, l.teacher_layer_name) for l in losses] == [
        ("blocks_0", "blocks_0"),
        ("blocks_2", "blocks_3"),
    ]
    assert weights == [0.5, 0.5]
    spectral_only = keras_distiller(
        teacher, student, losses, weights, 0.0, "sparse_categorical_crossentropy"
    )
    theirs = to_float(spectral_only.compute_loss(images, labels, spectral_only(images)))
    np.testing.assert_allclose(theirs, our_spectral, rtol=1e-5)
    features_t = spectral_only._extract_all_teacher_features(images)
    features_s = spectral_only._extract_all_student_features(images, None)
    for loss, expected in zip(losses, our_pairs):
        value = loss.compute_loss(
            features_t[loss.teacher_layer_name], features_s[loss.student_layer_name]
        )
        np.testing.assert_allclose(to_float(value), expected, rtol=1e-5)

    # The whole objective: (1 - a) CE_ls + a * (KD + sum_i w_i d_i), w_i = beta w_fft / (a P).
    losses, weights = SpectralDistillation.for_layer_pairs(
        teacher, student, PAIRS, spectral_weight=beta * w_fft / alpha
    )
    full = keras_distiller(
        teacher,
        student,
        [keras.distillation.LogitsDistillation(tau, loss=keras.losses.KLDivergence())] + losses,
        [1.0] + weights,
        1.0 - alpha,
        keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
    )
    one_hot = np.eye(NUM_CLASSES, dtype="float32")[labels]
    theirs = to_float(full.compute_loss(images, one_hot, full(images)))
    np.testing.assert_allclose(theirs, our_total, rtol=1e-5)


def test_the_kl_divergence_string_skips_the_softmax(rng):
    """Keras' default `loss="kl_divergence"` resolves to the plain function, which
    LogitsDistillation applies to the tempered LOGITS (no softmax, no tau^2): not soft KD."""
    teacher_logits = rng.normal(size=(4, 6)).astype("float32") * 3
    student_logits = rng.normal(size=(4, 6)).astype("float32") * 3
    tau = 2.0

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_p_t, log_p_s = log_softmax(teacher_logits / tau), log_softmax(student_logits / tau)
    soft_kd = tau**2 * np.mean(np.sum(np.exp(log_p_t) * (log_p_t - log_p_s), axis=-1))
    instance = keras.distillation.LogitsDistillation(tau, loss=keras.losses.KLDivergence())
    np.testing.assert_allclose(
        to_float(instance.compute_loss(teacher_logits, student_logits)), soft_kd, rtol=1e-5
    )
    # The string: KL of the clipped raw logits, sum_k t log(t / s) with t, s clipped to [eps, 1].
    string = keras.distillation.LogitsDistillation(tau)
    t = np.clip(teacher_logits / tau, 1e-7, 1.0)
    s = np.clip(student_logits / tau, 1e-7, 1.0)
    raw = np.mean(np.sum(t * np.log(t / s), axis=-1))
    got = to_float(string.compute_loss(teacher_logits, student_logits))
    np.testing.assert_allclose(got, raw, rtol=1e-4)
    assert abs(got - soft_kd) > 0.1 * soft_kd


@pytest.mark.slow
def test_fit_runs_and_the_loss_serialises(pair_models, batch):
    teacher, student = pair_models
    images, labels = batch
    loss = SpectralDistillation(teacher_layer_name="blocks_3", student_layer_name="blocks_2")
    distiller = keras_distiller(
        teacher, student,
        [keras.distillation.LogitsDistillation(1.0, loss=keras.losses.KLDivergence()), loss],
        [1.0, 0.5], 0.5, "sparse_categorical_crossentropy",
    )
    before = keras.ops.convert_to_numpy(student.get_layer("blocks_0").weights[0]).copy()
    history = distiller.fit(images, labels, batch_size=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["distillation_loss"][0])
    after = keras.ops.convert_to_numpy(student.get_layer("blocks_0").weights[0])
    assert not np.array_equal(before, after)

    config = keras.saving.serialize_keras_object(loss)
    assert config["registered_name"] == "keras_spectralkd>SpectralDistillation"
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is SpectralDistillation
    assert restored.get_config() == loss.get_config()
    listed = distiller.get_config()["distillation_losses"][1]
    assert keras.saving.deserialize_keras_object(listed).get_config() == loss.get_config()
    explicit = SpectralDistillation("a", "b", grid=(4, 4), teacher_prefix_tokens=0)
    assert SpectralDistillation.from_config(explicit.get_config()).get_config() == {
        "teacher_layer_name": "a",
        "student_layer_name": "b",
        "grid": [4, 4],
        "teacher_prefix_tokens": 0,
        "student_prefix_tokens": None,
    }


def test_token_maps_and_grids_without_feature_info(rng):
    """Plain functional models: a grid argument lays out tokens; prefix tokens are dropped."""
    def tokens_model(channels, prefix, name):
        images = keras.Input((4, 4, 3))
        x = keras.layers.Reshape((16, 3))(images)
        x = keras.layers.Dense(channels, name=f"{name}_tokens")(x)
        if prefix:
            x = keras.layers.ZeroPadding1D((prefix, 0))(x)
        x = keras.layers.Identity(name="features")(x)
        return keras.Model(images, keras.layers.GlobalAveragePooling1D()(x), name=name)

    teacher, student = tokens_model(8, 0, "teacher"), tokens_model(4, 1, "student")
    loss = SpectralDistillation("features", "features")
    with pytest.raises(ValueError, match=r"pass grid=\(H, W\)"):
        loss.validate_model_compatibility(teacher, student)
    loss = SpectralDistillation("features", "features", grid=(4, 4))
    loss.validate_model_compatibility(teacher, student)
    images = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    t_out = keras.Model(teacher.inputs, teacher.get_layer("features").output)(images)
    s_out = keras.Model(student.inputs, student.get_layer("features").output)(images)
    t = keras.ops.convert_to_numpy(t_out).reshape(2, 4, 4, 4, 2).mean(-1)  # 8 -> 4 channels
    s = keras.ops.convert_to_numpy(s_out)[:, 1:].reshape(2, 4, 4, 4)
    spectrum = np.fft.rfft2((s - t).astype(np.float64), axes=(1, 2), norm="ortho")
    expected = np.mean(np.concatenate([spectrum.real, spectrum.imag]) ** 2)
    np.testing.assert_allclose(to_float(loss.compute_loss(t_out, s_out)), expected, rtol=1e-5)


def test_bad_input_is_named(pair_models):
    teacher, student = pair_models
    with pytest.raises(ValueError, match="has no layer named 'blocks_9'"):
        SpectralDistillation("blocks_9", "blocks_0").validate_model_compatibility(
            teacher, student
        )
    # Roles swapped: a 32-channel "student" against a 16-channel "teacher".
    with pytest.raises(ValueError, match="wider than the teacher"):
        SpectralDistillation("blocks_0", "blocks_0").validate_model_compatibility(
            student, teacher
        )
    with pytest.raises(ValueError, match="teacher unit 7 is out of range"):
        SpectralDistillation.for_layer_pairs(teacher, student, [(0, 7)])
    with pytest.raises(ValueError, match="grid.*got \\(0, 4\\)"):
        SpectralDistillation("a", "b", grid=(0, 4))
    with pytest.raises(ValueError, match="student_layer_name.*got None"):
        SpectralDistillation("a", None)
