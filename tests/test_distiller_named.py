"""Distiller with layers given by name (any functional model): the same loss as unit indices on
our backbones, SPEC.md 2.1's common-band rule across grids, one forward per model, training."""

import keras
import numpy as np
import pytest
import torch

import torch_objective as ref  # tests/torch_objective.py: the PyTorch oracle
from band_oracle import band_pair_loss  # tests/band_oracle.py: the common-band rule in numpy
from keras_spectralkd import Distiller, models
from tiny_backbone import TinyBackbone

SETTINGS = dict(alpha=0.7, beta=1.5, spectral_weight=0.2, temperature=2.0, label_smoothing=0.1)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def total_and_pairs(distiller, x, y):
    total = distiller.compute_loss(x, y, distiller(x, training=True), training=True)
    return float(numpy(total)), [float(numpy(t.result())) for t in distiller.pair_trackers]


# === Models ===
def cnn_teacher(size=16, name="cnn_teacher"):
    """Two conv stages: (size/2)^2 x 16 and (size/4)^2 x 32 maps, batch norm, 4 classes."""
    images = keras.Input((size, size, 3), name="images")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="stage_0_conv")(images)
    x = keras.layers.BatchNormalization(name="stage_0_bn")(x)
    x = keras.layers.Activation("relu", name="stage_0")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="stage_1")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, keras.layers.Dense(4, name="head")(pooled), name=name)


def vit_student(size=16, patch=4, width=8, name="vit_student"):
    """A class token and two residual token-MLP blocks on a (size/patch)^2 grid, 4 classes."""
    images = keras.Input((size, size, 3), name="images")
    grid = size // patch
    x = keras.layers.Conv2D(width, patch, strides=patch, name="patch_embed")(images)
    x = keras.layers.Reshape((grid * grid, width), name="tokens")(x)
    cls = keras.layers.Reshape((1, width), name="cls_token")(
        keras.layers.Dense(width, name="cls_source")(
            keras.layers.GlobalAveragePooling1D(name="cls_pool")(x)))
    x = keras.layers.Concatenate(axis=1, name="with_cls")([cls, x])
    for i in range(2):
        x = keras.layers.Add(name=f"block_{i}")(
            [x, keras.layers.Dense(width, activation="tanh", name=f"block_{i}_mlp")(x)])
    cls_out = keras.layers.Flatten(name="cls_out")(
        keras.layers.Cropping1D((0, grid * grid), name="cls_read")(x))
    logits = keras.layers.Dense(4, name="head")(cls_out)
    return keras.Model(images, logits, name=name)


def our_pair(family):
    """(teacher, student, index pairs) of two small keras_spectralkd backbones."""
    if family == "tiny":
        return (TinyBackbone(width=12, depth=4, name="teacher"),
                TinyBackbone(width=6, depth=3, name="student"), [(0, 0), (2, 3)])
    if family == "cait_to_deit":
        tiny = dict(image_size=32, patch_size=8, num_heads=2, num_classes=4)
        return (models.create("cait_s24_224", embed_dim=16, depth=4, **tiny),
                models.create("deit_tiny_patch16_224", embed_dim=8, depth=3, **tiny),
                [(0, 0), (1, 2), (2, 3)])
    tiny = dict(image_size=56, embed_dim=8, num_heads=(1, 1, 1, 1), depths=(1, 1, 1, 1),
                num_classes=4)
    return (models.create("swin_small_patch4_window7_224", **tiny),
            models.create("swin_tiny_patch4_window7_224", **tiny),
            [(0, 0), (1, 1), (2, 2), (3, 3)])


# === Named layers == unit indices on our backbones ===
# Every mode forms the spectral term alike; "fft" (no logit term) once, on the cheapest pair.
@pytest.mark.parametrize("family, mode", [("tiny", "soft"), ("tiny", "fft"),
                                          ("cait_to_deit", "soft"), ("swin", "soft")])
def test_named_layers_give_the_loss_of_unit_indices(family, mode, rng):
    teacher, student, pairs = our_pair(family)
    size = teacher.inputs[0].shape[1]
    x = rng.standard_normal((3, size, size, 3)).astype("float32")
    y = np.array([0, 1, 3])
    by_index = Distiller(teacher, student, layer_pairs=pairs, mode=mode, **SETTINGS)
    student_names = [student.feature_info[s]["module"] for s, _ in pairs]
    teacher_names = [teacher.feature_info[t]["module"] for _, t in pairs]
    by_name = Distiller(teacher, student, layer_pairs=list(zip(student_names, teacher_names)),
                        mode=mode, **SETTINGS)
    assert not by_index._taps and set(by_name._taps) == {"student", "teacher"}
    index_total, index_pairs = total_and_pairs(by_index, x, y)
    name_total, name_pairs = total_and_pairs(by_name, x, y)
    assert min(index_pairs) > 0
    np.testing.assert_allclose(name_total, index_total, rtol=0, atol=1e-6)
    np.testing.assert_allclose(name_pairs, index_pairs, rtol=0, atol=1e-6)


def test_one_side_by_index_the_other_by_name(rng):
    teacher, student, pairs = our_pair("tiny")
    x = rng.standard_normal((3, 8, 8, 3)).astype("float32")
    y = np.array([0, 1, 3])
    mixed = [(s, teacher.feature_info[t]["module"]) for s, t in pairs]
    expected, _ = total_and_pairs(Distiller(teacher, student, layer_pairs=pairs), x, y)
    distiller = Distiller(teacher, student, layer_pairs=mixed)
    assert set(distiller._taps) == {"teacher"}
    np.testing.assert_allclose(total_and_pairs(distiller, x, y)[0], expected, atol=1e-6)


# === Across architectures: a CNN teacher, a ViT-like student ===
PAIRS = [("block_0", "stage_0"), ("block_1", "stage_1")]  # 4x4x8 <- 8x8x16, 4x4x8 <- 4x4x32


@pytest.mark.parametrize("mode", ["soft", "hard", "fft"])
def test_cnn_teacher_vit_student_matches_the_oracle(mode, rng):
    teacher, student = cnn_teacher(), vit_student()
    x = rng.standard_normal((4, 16, 16, 3)).astype("float32")
    y = np.array([0, 1, 2, 3])
    distiller = Distiller(teacher, student, layer_pairs=PAIRS, mode=mode, **SETTINGS)
    assert distiller._alignment == "low_band"  # named layers: grids may differ
    total, pair_losses = total_and_pairs(distiller, x, y)

    def outputs(model, names):
        tapped = keras.Model(model.inputs[0], [model.outputs[0]]
                             + [model.get_layer(n).output for n in names])
        return [numpy(t) for t in tapped(x, training=False)]

    s_logits, *s_raw = outputs(student, [s for s, _ in PAIRS])
    t_logits, *t_maps = outputs(teacher, [t for _, t in PAIRS])
    s_maps = [raw[:, 1:].reshape(4, 4, 4, 8) for raw in s_raw]  # class token first, 4x4 grid
    expected_pairs = [band_pair_loss(s, t) for s, t in zip(s_maps, t_maps)]
    terms = ref.objective(torch.tensor(s_logits), torch.tensor(t_logits), y, mode=mode, **SETTINGS)
    spectral = SETTINGS["beta"] * SETTINGS["spectral_weight"] * np.mean(expected_pairs)
    np.testing.assert_allclose(pair_losses, expected_pairs, rtol=1e-5)
    # The equal-grid pair is SPEC.md 2's loss itself: the PyTorch reference's.
    np.testing.assert_allclose(
        pair_losses[1],
        ref.spectral_pair_loss(ref.to_nchw(s_maps[1]), ref.to_nchw(t_maps[1])).item(), rtol=1e-5)
    np.testing.assert_allclose(total, terms["total"].item() + spectral, rtol=1e-5)


def test_each_model_runs_once_per_step(rng, monkeypatch):
    """The training call runs the two taps and nothing else: calling either model itself fails."""
    teacher, student = cnn_teacher(), vit_student()
    distiller = Distiller(teacher, student, layer_pairs=PAIRS)
    for model in (teacher, student):
        monkeypatch.setattr(model, "call", lambda *a, **k: pytest.fail("a second forward"))
    calls = []
    for role, tap in distiller._taps.items():
        original = tap.model.call
        monkeypatch.setattr(tap.model, "call",
                            lambda *a, _o=original, _r=role, **k: calls.append(_r) or _o(*a, **k))
    outputs = distiller(rng.standard_normal((2, 16, 16, 3)).astype("float32"), training=True)
    assert calls == ["teacher", "student"]
    assert [tuple(m.shape) for m in outputs["maps"]] == [(2, 4, 4, 8)] * 2
    assert [tuple(m.shape) for m in outputs["teacher_maps"]] == [(2, 8, 8, 16), (2, 4, 4, 32)]


def test_fit_trains_the_student_and_leaves_the_teacher(rng):
    teacher, student = cnn_teacher(), vit_student()
    distiller = Distiller(teacher, student, layer_pairs=PAIRS, mode="soft")
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    x = rng.standard_normal((8, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 4, 8)
    teacher_before = [numpy(v) for v in teacher.variables]  # BN moving statistics included
    student_before = [numpy(v) for v in student.trainable_variables]
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for name in ("loss", "spectral_loss", "spectral_loss_pair_0", "spectral_loss_pair_1"):
        assert np.isfinite(history.history[name][0]) and history.history[name][0] > 0
    for before, variable in zip(teacher_before, teacher.variables):
        np.testing.assert_array_equal(before, numpy(variable))
    changed = [not np.array_equal(b, numpy(v))
               for b, v in zip(student_before, student.trainable_variables)]
    assert all(changed), "every student weight, the named blocks' too, gets a gradient"


def test_config_round_trip_keeps_the_names_and_the_loss(rng):
    distiller = Distiller(cnn_teacher(), vit_student(), layer_pairs=PAIRS, mode="fft")
    config = distiller.get_config()
    assert config["layer_pairs"] == [list(p) for p in PAIRS] and config["grid_alignment"] is None
    clone = Distiller.from_config(config)
    clone.set_weights(distiller.get_weights())
    x = rng.standard_normal((2, 16, 16, 3)).astype("float32")
    y = np.array([0, 3])
    np.testing.assert_allclose(total_and_pairs(clone, x, y)[0], total_and_pairs(distiller, x, y)[0],
                               rtol=1e-6)


def test_a_low_precision_teacher_is_tapped_through_its_copy(rng):
    teacher, student, _ = our_pair("cait_to_deit")
    distiller = Distiller(teacher, student, layer_pairs=[(0, "blocks_0"), (2, "blocks_3")],
                          mode="fft", teacher_dtype="bfloat16")
    assert distiller.teacher is not teacher
    assert distiller._taps["teacher"].source is distiller.teacher
    outputs = distiller(rng.standard_normal((2, 32, 32, 3)).astype("float32"), training=True)
    assert [keras.backend.standardize_dtype(m.dtype) for m in outputs["teacher_maps"]] == [
        "bfloat16", "bfloat16"]


def test_grid_alignment_equal_refuses_named_layers_on_different_grids():
    with pytest.raises(ValueError, match=r"Spatial grids differ for layer pair \('block_0', "
                                         r"'stage_0'\): student map \(None, 4, 4, 8\) vs teacher "
                                         r"map \(None, 8, 8, 16\)"):
        Distiller(cnn_teacher(), vit_student(), layer_pairs=PAIRS, grid_alignment="equal")
    with pytest.raises(ValueError, match=r"`grid_alignment` must be one of \('equal', "
                                         r"'low_band'\); got 'resize'"):
        Distiller(cnn_teacher(), vit_student(), layer_pairs=PAIRS, grid_alignment="resize")


def test_index_pairs_on_different_grids_opt_into_the_low_band(rng):
    teacher = TinyBackbone(width=12, depth=2, patch_size=4, name="teacher")  # 2x2 grid
    student = TinyBackbone(width=6, depth=2, name="student")  # 4x4 grid
    x = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    y = np.array([0, 1])
    distiller = Distiller(teacher, student, layer_pairs=[(1, 1)], mode="fft",
                          grid_alignment="low_band")
    _, (pair_loss,) = total_and_pairs(distiller, x, y)
    _, (s_map,) = student.forward_intermediates(x, [1])
    _, (t_map,) = teacher.forward_intermediates(x, [1])
    np.testing.assert_allclose(pair_loss, band_pair_loss(numpy(s_map), numpy(t_map)), rtol=1e-5)


def test_a_layer_inside_a_nested_backbone_trains(rng):
    """A path ("backbone/stage_1") into a backbone used as one layer of the student, as keras-hub
    task models are built: the tapped backbone's weights get the spectral gradient."""
    inner = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="stage_0")(inner)
    x = keras.layers.Conv2D(8, 3, padding="same", name="stage_1")(x)
    backbone = keras.Model(inner, x, name="backbone")
    images = keras.Input((16, 16, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(images))
    student = keras.Model(images, keras.layers.Dense(4)(pooled), name="task_student")
    distiller = Distiller(cnn_teacher(), student, layer_pairs=[("backbone/stage_1", "stage_1")],
                          mode="fft", alpha=1.0, spectral_weight=1.0)  # no CE: spectral only
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    x = rng.standard_normal((4, 16, 16, 3)).astype("float32")
    before = numpy(backbone.get_layer("stage_1").kernel)
    logs = distiller.train_on_batch(x, np.array([0, 1, 2, 3]), return_dict=True)
    assert logs["spectral_loss_pair_0"] > 0
    assert not np.array_equal(before, numpy(backbone.get_layer("stage_1").kernel))
