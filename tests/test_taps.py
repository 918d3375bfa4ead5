"""taps.FeatureTap: any functional model's named layers as (B, h, w, C) maps, from one forward."""

import keras
import numpy as np
import pytest

from keras_spectralkd import taps


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def layer_outputs(model, names, images):
    """The named layers' raw outputs, each from a separate model: the tap's independent oracle."""
    return [numpy(keras.Model(model.inputs[0], model.get_layer(name).output)(images))
            for name in names]


def small_cnn(data_format="channels_last", name="cnn"):
    """Two conv stages (8x8x4 and 4x4x8 on 8x8 inputs) and a 3-class head."""
    shape = (3, 8, 8) if data_format == "channels_first" else (8, 8, 3)
    images = keras.Input(shape, name="images")
    x = keras.layers.Conv2D(4, 3, padding="same", data_format=data_format, name="stage_0")(images)
    x = keras.layers.Activation("relu", name="stage_0_act")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", data_format=data_format,
                            name="stage_1")(x)
    x = keras.layers.GlobalAveragePooling2D(data_format=data_format, name="pool")(x)
    return keras.Model(images, keras.layers.Dense(3, name="head")(x), name=name)


def token_model(prefix, grid=(2, 4), image=(16, 32), width=6, name="vit"):
    """Patchify to `grid`, prepend `prefix` learned tokens, a Dense, pool, head: a ViT's layout."""
    patch = image[0] // grid[0]
    images = keras.Input(image + (3,), name="images")
    x = keras.layers.Conv2D(width, patch, strides=patch, name="patch_embed")(images)
    x = keras.layers.Reshape((grid[0] * grid[1], width), name="flatten")(x)
    if prefix:
        tokens = keras.layers.Dense(width * prefix, name="prefix_source")(
            keras.layers.GlobalAveragePooling1D(name="prefix_pool")(x))
        tokens = keras.layers.Reshape((prefix, width), name="prefix")(tokens)
        x = keras.layers.Concatenate(axis=1, name="with_prefix")([tokens, x])
    x = keras.layers.Dense(width, name="block_0")(x)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(images, keras.layers.Dense(3, name="head")(pooled), name=name)


def test_channels_last_maps_are_the_layer_outputs_from_one_forward(rng):
    model = small_cnn()
    images = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    tap = taps.FeatureTap(model, ["stage_1", "stage_0_act"])
    logits, maps = tap(images)
    assert [layout.layout for layout in tap.layouts] == ["channels_last"] * 2
    assert tap.map_shapes == [(None, 4, 4, 8), (None, 8, 8, 4)]
    np.testing.assert_allclose(numpy(logits), numpy(model(images)), rtol=1e-6, atol=1e-6)
    for got, expected in zip(maps, layer_outputs(model, ["stage_1", "stage_0_act"], images)):
        np.testing.assert_allclose(numpy(got), expected, rtol=1e-6, atol=1e-6)
    # One forward: the tap is one model with the logits and both maps as outputs.
    assert len(tap.model.outputs) == 3


def test_channels_first_maps_are_transposed_to_channels_last(rng):
    model = small_cnn("channels_first")
    images = rng.standard_normal((2, 3, 8, 8)).astype("float32")
    tap = taps.FeatureTap(model, ["stage_0_act", "stage_1"])
    _, maps = tap(images)
    # stage_0_act (an Activation) has no data_format of its own: the model's first conv's counts.
    assert [layout.layout for layout in tap.layouts] == ["channels_first"] * 2
    assert tap.map_shapes == [(None, 8, 8, 4), (None, 4, 4, 8)]
    for got, raw in zip(maps, layer_outputs(model, ["stage_0_act", "stage_1"], images)):
        np.testing.assert_array_equal(numpy(got), raw.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("prefix", [0, 1, 5])  # none, a class token, class + 4 register tokens
def test_token_sequences_are_laid_out_on_the_largest_grid_of_the_inputs_aspect(rng, prefix):
    model = token_model(prefix)  # 16x32 images, a 2x4 grid: not square
    images = rng.standard_normal((2, 16, 32, 3)).astype("float32")
    tap = taps.FeatureTap(model, ["block_0"])
    assert tap.layouts == [taps.MapLayout("tokens", (2, 4), 6, prefix)]
    _, (feature_map,) = tap(images)
    (raw,) = layer_outputs(model, ["block_0"], images)
    expected = raw[:, prefix:, :].reshape(2, 2, 4, 6)  # prefix first, then row-major
    np.testing.assert_array_equal(numpy(feature_map), expected)


@pytest.mark.parametrize(
    "tokens, image, expected",
    [
        (197, (224, 224), (14, 14, 1)),  # DeiT: class token
        (198, (224, 224), (14, 14, 2)),  # DeiT distilled: class + distillation tokens
        (201, (224, 224), (14, 14, 5)),  # class + 4 registers
        (49, (224, 224), (7, 7, 0)),  # Swin's last stage, flattened
        (261, (224, 224), (16, 16, 5)),  # the largest grid: 16x16 + 5 (patch 14)
        (10, (224, 224), None),  # 3x3 + 1: 224 is not a whole number of 3-cell patches
        (1, (224, 224), None),  # a pooled token: no grid
        (33, (16, 32), (4, 8, 1)),
    ],
)
def test_token_grid_rule(tokens, image, expected):
    assert taps.token_grid(tokens, image) == expected


def test_a_subclassed_model_is_refused_with_the_way_out():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="custom")
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="Layer names \\('dense'\\) need a functional or "
                                         "Sequential student; 'custom' is a Subclassed without "
                                         "symbolic inputs"):
        taps.FeatureTap(Subclassed(), ["dense"], "student")


def test_errors_list_the_spatial_layers_first_20_and_a_count():
    images = keras.Input((8, 8, 3))
    x = images
    for i in range(25):
        x = keras.layers.Conv2D(2, 1, name=f"conv_{i}")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(images, keras.layers.Dense(3, name="head")(pooled), name="deep")
    names = taps.spatial_layer_names(model)
    assert names[0] == model.layers[0].name and len(names) == 26  # the input, 25 convs
    expected_list = ", ".join(names[:20]) + ", ... (26 in all)"
    with pytest.raises(ValueError) as missing:
        taps.FeatureTap(model, ["conv_99"], "teacher")
    assert str(missing.value) == (
        f"The teacher 'deep' has no layer named 'conv_99'; its layers with a spatial output "
        f"are: {expected_list}."
    )
    with pytest.raises(ValueError) as flat:
        taps.FeatureTap(model, ["pool"], "teacher")
    assert str(flat.value) == (
        "Layer 'pool' of the teacher 'deep' cannot be used as a feature map: it has rank 2 "
        f"((None, 2)), no spatial grid; its layers with a spatial output are: {expected_list}."
    )


def test_a_token_count_no_grid_fits_is_refused():
    images = keras.Input((12, 12, 3))
    tokens = keras.layers.Reshape((27, 16), name="tokens")(images)
    x = keras.layers.Dense(4, name="block")(tokens)
    model = keras.Model(images, keras.layers.Dense(2)(keras.layers.Flatten()(x)), name="seq")
    # 27 tokens on 12x12 images: the largest square grid is 5x5 (+2), and 12 is no multiple of 5.
    with pytest.raises(ValueError, match=r"Layer 'block' of the model 'seq' cannot be used as a "
                                         r"feature map: it is a sequence of 27 tokens and no grid "
                                         r"with the input's aspect 12x12"):
        taps.FeatureTap(model, ["block"])


def nested_classifier():
    """A functional backbone used as ONE layer of a classifier (keras-hub task models' shape)."""
    inner = keras.Input((8, 8, 3), name="backbone_images")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stage_0")(inner)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stage_1")(x)
    backbone = keras.Model(inner, x, name="backbone")
    images = keras.Input((8, 8, 3), name="images")
    x = keras.layers.Conv2D(8, 1, name="neck")(backbone(images))
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, keras.layers.Dense(3, name="head")(pooled), name="classifier")


def test_paths_reach_layers_of_nested_models_in_one_forward(rng):
    model = nested_classifier()
    images = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    names = ["backbone/stage_1", "neck", "backbone/stage_0"]
    tap = taps.FeatureTap(model, names)
    logits, maps = tap(images)
    backbone = model.get_layer("backbone")
    expected = [layer_outputs(backbone, ["stage_1"], images)[0],
                layer_outputs(model, ["neck"], images)[0],
                layer_outputs(backbone, ["stage_0"], images)[0]]
    assert tap.map_shapes == [(None, 4, 4, 8), (None, 4, 4, 8), (None, 8, 8, 4)]
    np.testing.assert_allclose(numpy(logits), numpy(model(images)), rtol=1e-6, atol=1e-6)
    for got, want in zip(maps, expected):
        np.testing.assert_allclose(numpy(got), want, rtol=1e-6, atol=1e-6)
    # The same weights, not copies: nothing is added by tapping.
    assert {id(v) for v in tap.model.weights} == {id(v) for v in model.weights}
    with pytest.raises(ValueError, match=r"has no layer named 'stage_1'; .* its layers inside "
                                         r"nested models are named by path, e.g. "
                                         r"'backbone/<layer>'"):
        taps.FeatureTap(model, ["stage_1"])
    with pytest.raises(ValueError, match=r"has no layer named 'backbone/stage_9' \(in "
                                         r"'backbone'\); its layers with a spatial output are: "
                                         r"backbone_images, stage_0, stage_1 \(3\)"):
        taps.FeatureTap(model, ["backbone/stage_9"])
