"""The analysis on any functional Keras model, its layers given by name (keras_spectralkd.taps)."""

import keras
import numpy as np
import pytest

from keras_spectralkd import Distiller, analysis, models


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def cnn(name="cnn", width=4, data_format="channels_last"):
    """Three conv stages on 8x8 images: 8x8xW, 4x4x2W, 2x2x4W maps."""
    shape = (3, 8, 8) if data_format == "channels_first" else (8, 8, 3)
    images = keras.Input(shape, name="images")
    x = images
    for i, (channels, stride) in enumerate(((width, 1), (2 * width, 2), (4 * width, 2))):
        x = keras.layers.Conv2D(channels, 3, strides=stride, padding="same", activation="tanh",
                                data_format=data_format, name=f"stage_{i}")(x)
    pooled = keras.layers.GlobalAveragePooling2D(data_format=data_format, name="pool")(x)
    return keras.Model(images, keras.layers.Dense(3, name="head")(pooled), name=name)


NAMES = ["stage_0", "stage_1", "stage_2"]


@pytest.fixture
def images(rng):
    return rng.standard_normal((6, 8, 8, 3)).astype("float32")


def test_a_profile_by_names_is_the_profile_of_those_layers_outputs(images):
    model = cnn()
    profile = analysis.profile_model(model, images, layer_names=NAMES, batch_size=4, verbose=0)
    maps = [numpy(keras.Model(model.inputs[0], model.get_layer(n).output)(images)) for n in NAMES]
    expected = analysis.profile_maps(maps, name="cnn")
    assert profile.layer_names == NAMES and profile.units == [0, 1, 2] and profile.depth == 3
    assert profile.grids == [(8, 8), (4, 4), (2, 2)] and profile.num_channels == [4, 8, 16]
    np.testing.assert_allclose(profile.intensity, expected.intensity, rtol=1e-6)
    np.testing.assert_allclose(profile.magnitude, expected.magnitude, rtol=1e-6)
    np.testing.assert_allclose(profile.entropy, expected.entropy, rtol=1e-6)


def test_channels_first_maps_are_profiled_channels_last(images):
    first = cnn(data_format="channels_first")
    profile = analysis.profile_model(first, images.transpose(0, 3, 1, 2), layer_names=NAMES,
                                     entropy=False, verbose=0)
    raw = [numpy(keras.Model(first.inputs[0], first.get_layer(n).output)(
        images.transpose(0, 3, 1, 2))) for n in NAMES]
    expected = analysis.profile_maps([m.transpose(0, 2, 3, 1) for m in raw], entropy=False)
    assert profile.grids == [(8, 8), (4, 4), (2, 2)]
    np.testing.assert_allclose(profile.intensity, expected.intensity, rtol=1e-6)


def test_names_on_our_backbone_give_its_unit_profile(rng):
    model = models.create("deit_tiny_patch16_224", image_size=16, patch_size=4, embed_dim=8,
                          depth=3, num_heads=2, num_classes=3)
    images = rng.standard_normal((2, 16, 16, 3)).astype("float32")
    by_unit = analysis.profile_model(model, images, verbose=0)
    by_name = analysis.profile_model(
        model, images, layer_names=[info["module"] for info in model.feature_info], verbose=0)
    assert by_name.grids == by_unit.grids == [(4, 4)] * 3  # class token dropped, 4x4 grid
    np.testing.assert_allclose(by_name.intensity, by_unit.intensity, rtol=1e-6)
    np.testing.assert_allclose(by_name.entropy, by_unit.entropy, rtol=1e-6)


def test_named_profiles_select_named_pairs_the_distiller_takes(images):
    teacher, student = cnn("teacher", width=4), cnn("student", width=2)
    teacher_profile = analysis.profile_model(teacher, images, layer_names=NAMES, verbose=0)
    student_profile = analysis.profile_model(student, images, layer_names=NAMES[::2], verbose=0)
    pairs = analysis.select_layer_pairs(teacher_profile, student_profile)
    assert pairs == [("stage_0", "stage_0"), ("stage_2", "stage_2")]
    # A list of names in place of a student profile; an int depth keeps the student's indices.
    assert analysis.select_layer_pairs(teacher_profile, ["stage_0", "stage_2"]) == pairs
    assert analysis.select_layer_pairs(teacher_profile, 2) == [(0, "stage_0"), (1, "stage_2")]
    Distiller(teacher, student, layer_pairs=pairs, mode="fft")
    comparison = analysis.compare_profiles(teacher_profile, student_profile, pairs=pairs)
    assert comparison.pairs == [(0, 0), (1, 2)]  # (student position, teacher position)
    with pytest.raises(ValueError, match="'stage_9' is not a layer of the profile of 'teacher'; "
                                         "its layers: stage_0, stage_1, stage_2"):
        analysis.compare_profiles(teacher_profile, student_profile, pairs=[("stage_0", "stage_9")])


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_layer_names_survive_saving(tmp_path, images, suffix):
    profile = analysis.profile_model(cnn(), images, layer_names=NAMES, entropy=False, verbose=0)
    loaded = analysis.Profile.load(profile.save(tmp_path / f"profile{suffix}"))
    assert loaded.layer_names == NAMES
    np.testing.assert_array_equal(loaded.intensity, profile.intensity)


def test_bad_requests(images):
    model = cnn()
    with pytest.raises(ValueError, match=r"Pass `indices` \(units of a backbone\) or "
                                         r"`layer_names`"):
        analysis.profile_model(model, images, indices=[0], layer_names=NAMES)
    with pytest.raises(ValueError, match=r"Functional 'cnn' has no `forward_intermediates`; .* or "
                                         r"name its layers with `layer_names` \(its layers with a "
                                         r"spatial output: images, stage_0, stage_1, stage_2; 4 "
                                         r"in all\)"):
        analysis.profile_model(model, images)
    with pytest.raises(ValueError, match="The model 'cnn' has no layer named 'stage_3'"):
        analysis.profile_model(model, images, layer_names=["stage_3"])
