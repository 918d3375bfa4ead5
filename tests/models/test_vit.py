"""ViT / DeiT backbone: parity with timm (tiny and real size), protocol, config, saving, dtypes.

Parity tolerance (TOLERANCE): max |ours - timm| / max(1, max |timm|) < 1e-4 for the logits and
every block's map; timm's weights are random and perturbed (see tests/timm_oracle.py).
"""

import keras
import numpy as np
import pytest
from backbone_harness import run_backbone_test
from keras import ops
from timm_oracle import (
    TOLERANCE,
    assert_fit_updates_every_weight,
    build_timm,
    compare_with_timm,
    random_images,
    timm_state_dict,
)

from keras_spectralkd.convert import from_timm
from keras_spectralkd.models import create, list_models, model_defaults, model_family

NAME = "deit_tiny_patch16_224"
# Our override names -> timm's for the same tiny architecture.
TINY = dict(image_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3)
TINY_TIMM = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3)
VIT_NAMES = [name for name in list_models() if model_family(name) == "vit"]


def tiny(**overrides):
    return create(NAME, **{**TINY, "num_classes": 10, **overrides})


def to_numpy(x):
    return ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def tiny_pair():
    """A tiny timm DeiT (random, perturbed) and our converted copy."""
    pytest.importorskip("timm")
    timm_model = build_timm(NAME, num_classes=10, **TINY_TIMM)
    model = from_timm(NAME, timm_state_dict(timm_model), **TINY)
    return timm_model, model


# === Parity with timm ===
def test_tiny_parity_logits_and_every_map(tiny_pair):
    timm_model, model = tiny_pair
    errors = compare_with_timm(model, timm_model, random_images(2, 32))
    assert set(errors) == {"logits", "map_0", "map_1", "map_2"}
    assert max(errors.values()) < TOLERANCE, errors


def test_tiny_parity_rectangular_image():
    pytest.importorskip("timm")
    timm_model = build_timm(NAME, num_classes=5, **dict(TINY_TIMM, img_size=(24, 40)))
    model = from_timm(NAME, timm_state_dict(timm_model), **dict(TINY, image_size=(24, 40)))
    _, maps = model.forward_intermediates(random_images(2, (24, 40)), indices=[0])
    assert tuple(maps[0].shape) == (2, 3, 5, 48)
    errors = compare_with_timm(model, timm_model, random_images(2, (24, 40)))
    assert max(errors.values()) < TOLERANCE, errors


def test_tiny_parity_without_head():
    """num_classes=0: the output is timm's pooled, final-normed class token."""
    pytest.importorskip("timm")
    timm_model = build_timm(NAME, num_classes=0, **TINY_TIMM)
    model = from_timm(NAME, timm_state_dict(timm_model), **TINY)
    assert model.num_classes == 0 and model.output_shape == (None, 48)
    errors = compare_with_timm(model, timm_model, random_images(2, 32))
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.slow
@pytest.mark.parametrize("name", VIT_NAMES)
def test_real_size_parity(name):
    """Every registered DeiT at 224, batch 2: logits and all 12 maps."""
    pytest.importorskip("timm")
    timm_model = build_timm(name)
    model = from_timm(name, timm_state_dict(timm_model))
    errors = compare_with_timm(model, timm_model, random_images(2, 224))
    assert len(errors) == 1 + 12
    print(f"\n{name} [{keras.backend.backend()}] max relative error {max(errors.values()):.2e}")
    assert max(errors.values()) < TOLERANCE, errors


# === Protocol (SPEC.md 1) ===
def test_forward_intermediates_maps_are_block_outputs_before_norm(tiny_pair):
    _, model = tiny_pair
    images = random_images(2, 32)
    logits, maps = model.forward_intermediates(images, indices=[2, 0])
    assert tuple(logits.shape) == (2, 10)
    assert [tuple(m.shape) for m in maps] == [(2, 4, 4, 48)] * 2
    # The maps are the raw residual stream: recompute block by block by hand.
    x = model.get_layer("patch_embed")(images)
    x = ops.reshape(x, (2, 16, 48))
    x = ops.concatenate([model.get_layer("cls_token")(x), x], axis=1)
    x = model.get_layer("pos_embed")(x)
    stream = []
    for index in range(3):
        x = model.get_layer(f"blocks_{index}")(x)
        stream.append(to_numpy(x)[:, 1:].reshape(2, 4, 4, 48))  # row-major, class token off
    np.testing.assert_allclose(to_numpy(maps[0]), stream[2], atol=1e-5)
    np.testing.assert_allclose(to_numpy(maps[1]), stream[0], atol=1e-5)
    np.testing.assert_allclose(to_numpy(logits), to_numpy(model(images)), atol=1e-5)


def test_forward_intermediates_index_forms(tiny_pair):
    _, model = tiny_pair
    images = random_images(1, 32)
    _, every = model.forward_intermediates(images)
    _, last_two = model.forward_intermediates(images, indices=2)
    assert len(every) == 3 and len(last_two) == 2
    np.testing.assert_allclose(to_numpy(last_two[0]), to_numpy(every[1]), atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(images, indices=[3])


def test_feature_info(tiny_pair):
    _, model = tiny_pair
    assert model.num_units == 3
    assert model.feature_info[1] == {
        "module": "blocks_1", "num_chs": 48, "reduction": 8, "grid": (4, 4)
    }
    real = model_defaults("deit_small_patch16_224")
    assert (real["embed_dim"], real["depth"], real["num_heads"]) == (384, 12, 6)


# === Stochastic depth ===
def test_drop_path_rates_are_linear_like_timm():
    torch = pytest.importorskip("torch")
    model = tiny(drop_path_rate=0.3, depth=4)
    rates = [model.get_layer(f"blocks_{i}").drop_path.rate for i in range(4)]
    np.testing.assert_allclose(rates, torch.linspace(0, 0.3, 4).tolist(), rtol=1e-6)


def test_stochastic_depth_train_vs_eval():
    model = tiny(drop_path_rate=0.9)
    reference = tiny()
    reference.set_weights(model.get_weights())
    images = random_images(4, 32)
    eval_out = to_numpy(model(images, training=False))
    # Identity in inference: equal to the same weights without stochastic depth.
    np.testing.assert_allclose(eval_out, to_numpy(reference(images)), atol=1e-6)
    np.testing.assert_allclose(eval_out, to_numpy(model(images)), atol=0)
    train_a = to_numpy(model(images, training=True))
    train_b = to_numpy(model(images, training=True))
    assert np.abs(train_a - eval_out).max() > 1e-3
    assert np.abs(train_a - train_b).max() > 1e-3


# === Config, saving, dtypes ===
def test_backbone_harness(tmp_path):
    """Shapes, config round trip, `.keras` save/load and mixed precision (one shared harness)."""
    run_backbone_test(
        lambda **overrides: tiny(drop_path_rate=0.1, mlp_ratio=2.0, qkv_bias=False, **overrides),
        random_images(2, 32), (2, 10), [(2, 4, 4, 48)] * 3, tmp_path,
    )


def test_global_mixed_policy_is_picked_up():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = tiny()
    assert model.get_layer("blocks_0").attn.qkv.compute_dtype == "bfloat16"


# === Argument validation ===
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_size=36), "image_size=36"),
        (dict(image_size=(32, 30)), r"image_size=\(32, 30\)"),
        (dict(embed_dim=50), "embed_dim=50 must be divisible by num_heads=3"),
        (dict(depth=0), "`depth` must be a positive int; got 0"),
        (dict(drop_path_rate=1.0), r"`drop_path_rate` must be in \[0, 1\); got 1.0"),
        (dict(num_classes=-1), "got -1"),
        (dict(mlp_ratio=0), "`mlp_ratio` must be > 0"),
    ],
)
def test_bad_arguments_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_trains_under_jit_with_stochastic_depth():
    """`fit` compiles (XLA on TF and JAX) with DropPath active and updates every weight."""
    model = tiny(drop_path_rate=0.5)
    assert_fit_updates_every_weight(model)
