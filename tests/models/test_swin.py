"""Swin backbone: structure, feature maps, config/saving, mixed precision, stochastic depth.

Numerical parity with timm lives in tests/convert/test_timm_swin.py (it needs the converter).
"""

import re

import numpy as np
import pytest
from backbone_harness import run_backbone_test
from keras import ops

from keras_spectralkd.models import create, model_defaults, model_family
from keras_spectralkd.models.swin import (
    MASK_VALUE,
    SwinPatchMerging,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

# Grids 16, 8, 4, 2 with window 2: stages 0..2 run shifted windows with a mask on their odd
# blocks; stage 3's window covers its whole 2x2 grid, so timm's rule turns its shift off.
TINY = dict(
    image_size=32,
    patch_size=2,
    embed_dim=24,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 3, 4),
    window_size=2,
    num_classes=10,
)
TINY_GRIDS = [(16, 16), (8, 8), (4, 4), (2, 2)]
TINY_CHANNELS = [24, 48, 96, 192]


def tiny(**overrides):
    return create("swin_tiny_patch4_window7_224", **{**TINY, **overrides})


def images(batch=2, size=32, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def tiny_model():
    return tiny()


# === Feature maps ===
def test_forward_intermediates_shapes_and_order(tiny_model):
    x = images()
    logits, maps = tiny_model.forward_intermediates(x)
    assert tuple(logits.shape) == (2, 10)
    assert [tuple(m.shape) for m in maps] == [
        (2, h, w, c) for (h, w), c in zip(TINY_GRIDS, TINY_CHANNELS)
    ]
    # One forward pass: the logits equal the plain call, and a subset comes back in the
    # requested order, equal to the full list's entries.
    np.testing.assert_allclose(
        ops.convert_to_numpy(logits), ops.convert_to_numpy(tiny_model(x)), atol=1e-6
    )
    _, picked = tiny_model.forward_intermediates(x, indices=[3, 0])
    np.testing.assert_allclose(ops.convert_to_numpy(picked[0]), ops.convert_to_numpy(maps[3]))
    np.testing.assert_allclose(ops.convert_to_numpy(picked[1]), ops.convert_to_numpy(maps[0]))
    _, last_two = tiny_model.forward_intermediates(x, indices=2)
    assert [tuple(m.shape)[1:3] for m in last_two] == TINY_GRIDS[2:]


def test_feature_info(tiny_model):
    info = tiny_model.feature_info
    assert tiny_model.num_units == 4
    assert [i["num_chs"] for i in info] == TINY_CHANNELS
    assert [i["reduction"] for i in info] == [2, 4, 8, 16]
    assert [tuple(i["grid"]) for i in info] == TINY_GRIDS
    for i in info:  # the named layer ends the unit
        assert tiny_model.get_layer(i["module"]) is not None


@pytest.mark.slow
def test_real_size_feature_info_matches_spec():
    # SPEC.md 1: 56x56x96, 28x28x192, 14x14x384, 7x7x768 for Swin-T at 224.
    model = create("swin_tiny_patch4_window7_224")
    assert [(tuple(i["grid"]), i["num_chs"]) for i in model.feature_info] == [
        ((56, 56), 96),
        ((28, 28), 192),
        ((14, 14), 384),
        ((7, 7), 768),
    ]
    assert model.count_params() == 28_288_354  # timm's swin_tiny_patch4_window7_224
    block = model.get_layer("layers_3_blocks_1")  # 7x7 grid, window 7: no shift (timm's rule)
    assert block.window_size == (7, 7) and block.shift_size == (0, 0)
    block = model.get_layer("layers_2_blocks_1")
    assert block.window_size == (7, 7) and block.shift_size == (3, 3)


def test_presets():
    expected = {
        "swin_tiny_patch4_window7_224": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
        "swin_small_patch4_window7_224": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
        "swin_base_patch4_window7_224": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    }
    for name, (embed_dim, depths, heads) in expected.items():
        defaults = model_defaults(name)
        assert model_family(name) == "swin"
        assert defaults["embed_dim"] == embed_dim
        assert tuple(defaults["depths"]) == depths
        assert tuple(defaults["num_heads"]) == heads
        assert (defaults["patch_size"], defaults["window_size"], defaults["image_size"]) == (
            4,
            7,
            224,
        )


def test_no_head_gives_pooled_features():
    model = tiny(num_classes=0)
    assert tuple(model(images()).shape) == (2, 192)


# === Window helpers ===
def test_window_partition_round_trip_and_layout():
    x = np.arange(2 * 4 * 6 * 3, dtype="float32").reshape(2, 4, 6, 3)
    windows = ops.convert_to_numpy(window_partition(ops.convert_to_tensor(x), (2, 3)))
    assert windows.shape == (2, 4, 6, 3)  # (B, windows, tokens, C)
    # Window 1 is the top-right 2x3 block, tokens row-major inside it.
    np.testing.assert_array_equal(windows[1, 1].reshape(2, 3, 3), x[1, 0:2, 3:6])
    back = window_reverse(ops.convert_to_tensor(windows), (2, 3), (4, 6))
    np.testing.assert_array_equal(ops.convert_to_numpy(back), x)


def test_relative_position_index_against_brute_force():
    win_h, win_w = 3, 4
    index = relative_position_index((win_h, win_w))
    coords = [(r, c) for r in range(win_h) for c in range(win_w)]
    for i, (qr, qc) in enumerate(coords):
        for j, (kr, kc) in enumerate(coords):
            assert index[i, j] == (qr - kr + win_h - 1) * (2 * win_w - 1) + (qc - kc + win_w - 1)
    assert index.max() == (2 * win_h - 1) * (2 * win_w - 1) - 1


def test_shifted_window_mask_semantics():
    assert shifted_window_mask((4, 4), (2, 2), (0, 0)) is None
    mask = shifted_window_mask((4, 4), (2, 2), (1, 1))
    assert mask.shape == (4, 4, 4)
    # Top-left window holds one contiguous region: nothing masked.
    assert not mask[0].any()
    # Bottom-right window after the roll: four tokens from four regions, each sees only itself.
    np.testing.assert_array_equal(mask[3], np.where(np.eye(4) > 0, 0.0, MASK_VALUE))
    # Top-right window: columns 2 (region b) and 3 (wrapped region c) split it in two.
    expected = np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]) * MASK_VALUE
    np.testing.assert_array_equal(mask[1], expected)


def test_patch_merging_order():
    # timm concatenates (top-left, bottom-left, top-right, bottom-right) of each 2x2 block.
    layer = SwinPatchMerging(1, output_dim=4)
    layer.build((None, 2, 2, 1))
    layer.norm.set_weights([np.ones(4), np.zeros(4)])
    layer.reduction.set_weights([np.eye(4, dtype="float32")])
    x = np.array([[1.0, 2.0], [3.0, 4.0]], "float32").reshape(1, 2, 2, 1)  # tl, tr, bl, br
    out = ops.convert_to_numpy(layer(x))[0, 0, 0]
    normed = (np.array([1.0, 3.0, 2.0, 4.0]) - 2.5) / np.sqrt(1.25 + 1e-5)
    np.testing.assert_allclose(out, normed, rtol=1e-5)
    assert tuple(layer(np.zeros((1, 5, 3, 1), "float32")).shape) == (1, 3, 2, 4)  # odd: padded


# === Config, saving, mixed precision (the shared harness) ===
def test_backbone_harness(tmp_path):
    run_backbone_test(
        lambda **overrides: tiny(drop_path_rate=0.1, **overrides), images(), (2, 10),
        [(2, h, w, c) for (h, w), c in zip(TINY_GRIDS, TINY_CHANNELS)], tmp_path,
    )
    assert tiny().get_config()["depths"] == (2, 2, 2, 2)


def test_compiled_predict_matches_eager(tiny_model):
    # predict runs under tf.function / jax.jit: the static-shape window code must trace.
    x = images()
    np.testing.assert_allclose(
        tiny_model.predict(x, batch_size=2, verbose=0),
        ops.convert_to_numpy(tiny_model(x)),
        atol=1e-5,
    )


# === Mixed precision ===
def test_mixed_bfloat16_keeps_float32_weights():
    block = tiny(dtype="mixed_bfloat16").get_layer("layers_0_blocks_1")
    assert block.compute_dtype == "bfloat16" and block.attn.qkv.kernel.dtype == "float32"


# === Stochastic depth ===
def test_drop_path_rates_rise_linearly_over_all_blocks():
    model = tiny(drop_path_rate=0.35)
    rates = [
        model.get_layer(f"layers_{s}_blocks_{b}").drop_path_rate for s in range(4) for b in range(2)
    ]
    np.testing.assert_allclose(rates, np.linspace(0.0, 0.35, 8))  # timm: linspace over sum(depths)


def test_drop_path_identity_in_eval_and_random_in_training(tiny_model):
    model = tiny(drop_path_rate=0.5)
    model.set_weights(tiny_model.get_weights())
    x = images()
    eval_out = ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(eval_out, ops.convert_to_numpy(tiny_model(x)), atol=1e-6)
    train_a = ops.convert_to_numpy(model(x, training=True))
    train_b = ops.convert_to_numpy(model(x, training=True))
    assert np.abs(train_a - eval_out).max() > 1e-3
    assert np.abs(train_a - train_b).max() > 1e-3


# === Validation ===
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_size=33), "image_size=33"),
        (dict(image_size=(32, 30), patch_size=4), "image_size=(32, 30)"),
        (dict(num_heads=(1, 2, 3)), "num_heads"),
        (
            dict(num_heads=(1, 2, 5, 4)),
            "stage 2's width (embed_dim * 2**2)=96 must be divisible by num_heads=5",
        ),
        (dict(depths=()), "depths"),
        (dict(depths=(2, 0, 2, 2)), "depths"),
        (dict(window_size=0), "window_size"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
        (dict(patch_size=0), "patch_size"),
    ],
)
def test_invalid_arguments_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tiny(**overrides)
