"""CaiT backbone: parity with timm (tiny and real size), talking heads, class attention, config.

Parity tolerance (TOLERANCE): max |ours - timm| / max(1, max |timm|) < 1e-4 for the logits and
every self-attention block's map. timm's LayerScale gammas (1e-5 at init) are redrawn around 1
by tests/timm_oracle.py, otherwise every residual branch would vanish below the tolerance and
hide any bug in attention or MLP.
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
from keras_spectralkd.models.cait import TalkingHeadsAttention

NAME = "cait_s24_224"
TINY = dict(image_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=4)
TINY_TIMM = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=4)
CAIT_NAMES = [name for name in list_models() if model_family(name) == "cait"]


def tiny(**overrides):
    return create(NAME, **{**TINY, "num_classes": 10, **overrides})


def to_numpy(x):
    return ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def tiny_pair():
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


@pytest.mark.parametrize(
    "overrides",
    [
        dict(depth_token_only=1, mlp_ratio=2.0),
        dict(depth_token_only=0, num_classes=0),
        dict(image_size=(24, 40), num_heads=6, qkv_bias=False),
    ],
    ids=["one_class_block", "no_class_block_no_head", "rectangular_six_heads_no_bias"],
)
def test_tiny_parity_variants(overrides):
    pytest.importorskip("timm")
    timm_kwargs = dict(TINY_TIMM, num_classes=overrides.get("num_classes", 7))
    for ours, theirs in (("image_size", "img_size"),):
        if ours in overrides:
            timm_kwargs[theirs] = overrides[ours]
    for key in ("depth_token_only", "mlp_ratio", "num_heads", "qkv_bias"):
        if key in overrides:
            timm_kwargs[key] = overrides[key]
    if "mlp_ratio" in overrides:
        timm_kwargs["mlp_ratio_token_only"] = overrides["mlp_ratio"]
    timm_model = build_timm(NAME, **timm_kwargs)
    model = from_timm(NAME, timm_state_dict(timm_model), **dict(TINY, **overrides))
    size = overrides.get("image_size", 32)
    errors = compare_with_timm(model, timm_model, random_images(2, size))
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.slow
@pytest.mark.parametrize("name", CAIT_NAMES)
def test_real_size_parity(name):
    """Every registered CaiT at 224, batch 2: logits and all 24 self-attention maps."""
    pytest.importorskip("timm")
    timm_model = build_timm(name)
    model = from_timm(name, timm_state_dict(timm_model))
    errors = compare_with_timm(model, timm_model, random_images(2, 224))
    assert len(errors) == 1 + 24
    print(f"\n{name} [{keras.backend.backend()}] max relative error {max(errors.values()):.2e}")
    assert max(errors.values()) < TOLERANCE, errors


# === Talking heads against a direct numpy transcription of the paper's formula ===
def test_talking_heads_attention_matches_numpy():
    rng = np.random.default_rng(1)
    layer = TalkingHeadsAttention(num_heads=4)
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    layer.build(x.shape)
    for variable in layer.weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.3)
    ours = to_numpy(layer(x))

    def dense(layer_, value):
        return value @ to_numpy(layer_.kernel) + to_numpy(layer_.bias)

    qkv = dense(layer.qkv, x).reshape(2, 5, 3, 4, 4)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, heads, N, d)
    logits = q @ k.transpose(0, 1, 3, 2) / 2.0  # head_dim 4 -> scale 1/2
    logits = np.einsum("bhnm,hg->bgnm", logits, to_numpy(layer.proj_l.kernel))
    logits += to_numpy(layer.proj_l.bias)[None, :, None, None]
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    weights = np.einsum("bhnm,hg->bgnm", weights, to_numpy(layer.proj_w.kernel))
    weights += to_numpy(layer.proj_w.bias)[None, :, None, None]
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(2, 5, 16)
    np.testing.assert_allclose(ours, dense(layer.proj, out), atol=1e-5, rtol=1e-5)


# === Protocol (SPEC.md 1) ===
def test_maps_are_self_attention_block_outputs(tiny_pair):
    _, model = tiny_pair
    images = random_images(2, 32)
    logits, maps = model.forward_intermediates(images, indices=[1])
    assert tuple(logits.shape) == (2, 10) and tuple(maps[0].shape) == (2, 4, 4, 48)
    x = ops.reshape(model.get_layer("patch_embed")(images), (2, 16, 48))
    x = model.get_layer("pos_embed")(x)  # no class token in the self-attention blocks
    for index in range(2):
        x = model.get_layer(f"blocks_{index}")(x)
    np.testing.assert_allclose(to_numpy(maps[0]), to_numpy(x).reshape(2, 4, 4, 48), atol=1e-5)
    assert model.num_units == 3  # the class-attention blocks are not units
    assert model.feature_info[2]["module"] == "blocks_2"


def test_presets_match_timm_arguments():
    expected = {
        "cait_xxs24_224": (192, 24, 4),
        "cait_xs24_224": (288, 24, 6),
        "cait_s24_224": (384, 24, 8),
    }
    assert set(CAIT_NAMES) == set(expected)
    for name, (width, depth, heads) in expected.items():
        defaults = model_defaults(name)
        assert (defaults["embed_dim"], defaults["depth"], defaults["num_heads"]) == (
            width, depth, heads
        )
        assert defaults["init_values"] == 1e-5 and defaults["patch_size"] == 16


# === Stochastic depth (timm's CaiT rule: the same rate in every self-attention block) ===
def test_drop_path_rate_is_constant_over_blocks():
    model = tiny(drop_path_rate=0.2)
    assert [model.get_layer(f"blocks_{i}").drop_path.rate for i in range(3)] == [0.2] * 3
    assert not any("drop_path" in v.path for v in model.weights)


def test_stochastic_depth_train_vs_eval():
    model = tiny(drop_path_rate=0.9, init_values=1.0)
    reference = tiny(init_values=1.0)
    reference.set_weights(model.get_weights())
    images = random_images(4, 32)
    eval_maps = model.forward_intermediates(images, indices=[2])[1][0]
    np.testing.assert_allclose(
        to_numpy(eval_maps),
        to_numpy(reference.forward_intermediates(images, indices=[2])[1][0]),
        atol=1e-6,
    )
    train_a = to_numpy(model.forward_intermediates(images, indices=[2], training=True)[1][0])
    train_b = to_numpy(model.forward_intermediates(images, indices=[2], training=True)[1][0])
    assert np.abs(train_a - to_numpy(eval_maps)).max() > 1e-3
    assert np.abs(train_a - train_b).max() > 1e-3


# === Config, saving, dtypes ===
def test_backbone_harness(tmp_path):
    """Shapes, config round trip, `.keras` save/load and mixed precision (one shared harness).

    LayerScale at 1 rather than 1e-5, so that every block contributes to what is compared."""
    run_backbone_test(
        lambda **overrides: tiny(depth_token_only=1, init_values=1.0, drop_path_rate=0.1,
                                 **overrides),
        random_images(2, 32), (2, 10), [(2, 4, 4, 48)] * 3, tmp_path,
    )


# === Argument validation ===
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_size=20), "image_size=20"),
        (dict(embed_dim=50), "embed_dim=50 must be divisible by num_heads=4"),
        (dict(depth_token_only=-1), "`depth_token_only` must be an int >= 0; got -1"),
        (dict(patch_size=0), "`patch_size` must be a positive int; got 0"),
        (dict(drop_path_rate=-0.1), r"got -0.1"),
    ],
)
def test_bad_arguments_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_trains_under_jit_with_stochastic_depth():
    """`fit` compiles (XLA on TF and JAX) with DropPath active and updates every weight."""
    model = tiny(drop_path_rate=0.5, init_values=0.1)
    assert_fit_updates_every_weight(model)
