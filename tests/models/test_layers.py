"""Shared layers: stochastic depth semantics, LayerScale, Mlp, patch/class/position embeddings."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_spectralkd.models.layers import (
    ClassToken,
    DropPath,
    LayerScale,
    Mlp,
    PatchEmbedding,
    PositionEmbedding,
    TimmTruncatedNormal,
    check_image_size,
    linear_drop_path_rates,
)


def to_numpy(x):
    return ops.convert_to_numpy(x)


# === DropPath ===
def test_drop_path_is_identity_in_inference():
    x = np.random.default_rng(0).normal(size=(8, 5, 4)).astype("float32")
    layer = DropPath(0.7, seed=1)
    np.testing.assert_array_equal(to_numpy(layer(x)), x)
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)


def test_drop_path_drops_whole_samples_and_rescales_the_kept_ones():
    x = np.ones((256, 3, 4), "float32")
    out = to_numpy(DropPath(0.25, seed=1)(x, training=True))
    per_sample = out.reshape(256, -1)
    # Every sample is either all zero or all 1 / keep: the branch of a sample goes as a whole.
    assert set(np.unique(per_sample.min(1))) <= {0.0, np.float32(1 / 0.75)}
    np.testing.assert_array_equal(per_sample.min(1), per_sample.max(1))
    kept = (per_sample[:, 0] > 0).mean()
    assert 0.6 < kept < 0.9  # binomial(256, 0.75): 0.75 +- 0.027


def test_drop_path_expectation_equals_input():
    """E[DropPath(x)] = x (timm's scale_by_keep): averaged over many draws."""
    x = np.random.default_rng(0).normal(size=(4000, 2)).astype("float32")
    rate = 0.8
    out = to_numpy(DropPath(rate, seed=3)(x, training=True))
    # Per element: mean over 4000 samples of x*mask/keep has std |x| * sqrt(rate/keep) / sqrt(n).
    kept_fraction = (np.abs(out[:, 0]) > 0).mean()
    assert abs(kept_fraction - (1 - rate)) < 0.03
    ratio = out / np.where(x == 0, 1, x)
    assert abs(ratio.mean() - 1.0) < 0.1  # std of the mean: sqrt(0.8/0.2)/sqrt(8000) ~ 0.02


def test_drop_path_rate_must_be_in_zero_one():
    with pytest.raises(ValueError, match="got 1.0"):
        DropPath(1.0)
    with pytest.raises(ValueError, match="got -0.1"):
        DropPath(-0.1)


def test_linear_drop_path_rates_match_torch_linspace():
    torch = pytest.importorskip("torch")
    for rate, depth in ((0.1, 12), (0.3, 5), (0.2, 1)):
        np.testing.assert_allclose(
            linear_drop_path_rates(rate, depth), torch.linspace(0, rate, depth).tolist(), rtol=1e-6
        )


# === LayerScale, Mlp ===
def test_layer_scale():
    layer = LayerScale(1e-5)
    x = np.ones((2, 3, 4), "float32")
    np.testing.assert_allclose(to_numpy(layer(x)), 1e-5 * x)
    assert tuple(layer.gamma.shape) == (4,)


def test_mlp_is_dense_exact_gelu_dense():
    from math import erf

    rng = np.random.default_rng(0)
    layer = Mlp(6, kernel_initializer=keras.initializers.RandomNormal(stddev=0.5))
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    out = to_numpy(layer(x))
    hidden = x @ to_numpy(layer.fc1.kernel) + to_numpy(layer.fc1.bias)
    gelu = hidden * 0.5 * (1 + np.vectorize(erf)(hidden / np.sqrt(2)))
    expected = gelu @ to_numpy(layer.fc2.kernel) + to_numpy(layer.fc2.bias)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # Each Dense gets its own initializer instance: the two kernels differ.
    assert not np.allclose(to_numpy(layer.fc1.kernel)[:4, :4], to_numpy(layer.fc2.kernel)[:4, :4])
    clone = Mlp.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


# === Embeddings ===
def test_patch_embedding_grid():
    layer = PatchEmbedding(8, 16)
    out = layer(np.zeros((2, 32, 24, 3), "float32"))
    assert tuple(out.shape) == (2, 4, 3, 16)


def test_class_token_broadcasts_over_the_batch():
    layer = ClassToken(keras.initializers.RandomNormal(stddev=1.0))
    out = to_numpy(layer(np.zeros((3, 5, 8), "float32")))
    assert out.shape == (3, 1, 8)
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], to_numpy(layer.token)[0])
    assert ClassToken.from_config(layer.get_config()).get_config() == layer.get_config()


def test_position_embedding_adds_a_table():
    layer = PositionEmbedding()
    x = np.ones((2, 5, 8), "float32")
    out = to_numpy(layer(x))
    assert tuple(layer.embedding.shape) == (1, 5, 8)
    np.testing.assert_allclose(out, x + to_numpy(layer.embedding))


def test_layers_follow_the_mixed_policy():
    policy = keras.dtype_policies.DTypePolicy("mixed_bfloat16")
    x = np.ones((2, 5, 8), "float32")
    for layer in (ClassToken(dtype=policy), PositionEmbedding(dtype=policy), Mlp(4, dtype=policy)):
        out = layer(ops.cast(x, "bfloat16"))
        assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
        assert all(w.dtype == "float32" for w in layer.weights)


def test_check_image_size():
    assert check_image_size(224, 16, "patch") == (224, 224)
    assert check_image_size((32, 48), 16, "patch") == (32, 48)
    with pytest.raises(ValueError, match=r"image_size=230 .* multiple of 16"):
        check_image_size(230, 16, "patch")


# === timm's initialisers ===
def test_timm_truncated_normal_cuts_at_absolute_bounds_like_timm():
    """Same distribution as timm's `trunc_normal_`: with std 0.02 and the +-2 cut it is a plain
    normal of std 0.02 (Keras' TruncatedNormal would give 0.0176); with a cut inside the
    distribution, mean and std equal timm's own samples and no value leaves the bounds."""
    torch = pytest.importorskip("torch")
    from timm.layers import trunc_normal_

    values = to_numpy(TimmTruncatedNormal(stddev=0.02, seed=1)((400, 500)))
    assert abs(values.std() - 0.02) < 0.0002 and abs(values.mean()) < 0.0002  # 5 sigma
    ours = to_numpy(TimmTruncatedNormal(mean=0.5, stddev=1.0, minval=-0.5, maxval=2.0,
                                        seed=2)((200_000,)))
    torch.manual_seed(0)
    theirs = trunc_normal_(torch.empty(200_000), mean=0.5, std=1.0, a=-0.5, b=2.0).numpy()
    assert ours.min() >= -0.5 and ours.max() <= 2.0
    assert abs(ours.mean() - theirs.mean()) < 0.01 and abs(ours.std() - theirs.std()) < 0.01


def test_timm_truncated_normal_is_serialisable():
    initializer = TimmTruncatedNormal(stddev=0.5, minval=-1.0, maxval=1.5, seed=3)
    restored = keras.initializers.deserialize(keras.initializers.serialize(initializer))
    assert isinstance(restored, TimmTruncatedNormal)
    assert restored.get_config() == initializer.get_config()
    np.testing.assert_array_equal(to_numpy(restored((5, 4))), to_numpy(initializer((5, 4))))
    with pytest.raises(ValueError, match="minval < maxval"):
        TimmTruncatedNormal(minval=1.0, maxval=1.0)
