"""timm Swin -> ours: numerical parity (logits and every stage map) and strict conversion.

timm is the oracle: random weights (`pretrained=False`, nothing downloaded), eval mode. Every
parameter is perturbed away from timm's init (LayerNorm weights of exactly 1 and biases of exactly
0 would hide a swapped or skipped tensor) and the relative position tables get a large spread, so
a wrong index or window layout shows up far above the tolerance.

Tolerance (TOLERANCE): max |ours - timm| / max(1, max |timm|) < 1e-4, for the logits and each map.
"""

import re

import numpy as np
import pytest
from keras import ops

from keras_spectralkd.convert import ConversionError, from_timm

# (tests/conftest.py keeps triton out: importing it after TensorFlow segfaults.)
torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

TOLERANCE = 1e-4
NAME = "swin_tiny_patch4_window7_224"  # any swin preset; tiny tests override its architecture

# timm constructor arguments of the tiny parity models, with what each one exercises.
TINY_CONFIGS = {
    # Grids 16, 8, 4, 2, window 2: masked shifted windows in stages 0..2; stage 3's window
    # covers the grid, so no shift there.
    "shifted": dict(img_size=32, patch_size=2, embed_dim=24, depths=(2, 2, 2, 2),
                    num_heads=(1, 2, 3, 4), window_size=2),
    # Rectangular 24x40 image, window 4. Grids (12, 20), (6, 10), (3, 5), (2, 3): stage 0 shifts
    # with a mask; stage 1 pads its grid to whole windows (8, 12) after the shift; stage 2
    # clips the window to (3, 4) and shifts along the width only; its odd grid is padded before
    # merging; stage 3's window covers the whole grid: no shift.
    "padded": dict(img_size=(24, 40), patch_size=2, embed_dim=16, depths=(2, 2, 2, 2),
                   num_heads=(1, 2, 2, 4), window_size=4),
}


# === Helpers ===
def randomize_(model, seed=0):
    """Moves every timm parameter away from its init (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "relative_position_bias_table" in name:
                parameter.copy_(noise * 0.5)
            elif parameter.ndim == 1:
                parameter.add_(noise * 0.1)
    return model.eval()


def state_dict_of(model):
    return {key: value.detach().numpy() for key, value in model.state_dict().items()}


def our_config(timm_kwargs):
    return dict(
        image_size=timm_kwargs["img_size"],
        patch_size=timm_kwargs["patch_size"],
        embed_dim=timm_kwargs["embed_dim"],
        depths=timm_kwargs["depths"],
        num_heads=timm_kwargs["num_heads"],
        window_size=timm_kwargs["window_size"],
    )


def image_batch(image_size, batch=2, seed=0):
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, height, width, 3)).astype("float32")


def relative_error(ours, reference):
    ours = ops.convert_to_numpy(ops.cast(ours, "float32"))
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float(np.abs(ours - reference).max() / max(1.0, np.abs(reference).max()))


def parity_errors(timm_model, model, images):
    """Errors of the logits and of each stage map (timm's NCHW maps moved to NHWC)."""
    with torch.no_grad():
        final, timm_maps = timm_model.forward_intermediates(
            torch.from_numpy(images).permute(0, 3, 1, 2)
        )
        timm_logits = timm_model.forward_head(final).numpy()
    logits, maps = model.forward_intermediates(images)
    errors = {"logits": relative_error(logits, timm_logits)}
    assert len(maps) == len(timm_maps)
    for index, (ours, theirs) in enumerate(zip(maps, timm_maps)):
        errors[f"stage_{index}"] = relative_error(ours, theirs.permute(0, 2, 3, 1).numpy())
    return errors


def tiny_timm(config, num_classes=10, seed=0):
    torch.manual_seed(seed)
    model = timm.models.swin_transformer.SwinTransformer(num_classes=num_classes, **config)
    return randomize_(model, seed)


@pytest.fixture(scope="module")
def shifted_timm():
    return tiny_timm(TINY_CONFIGS["shifted"])


# === Tiny parity ===
@pytest.mark.parametrize("config_name", sorted(TINY_CONFIGS))
def test_tiny_parity(config_name):
    config = TINY_CONFIGS[config_name]
    timm_model = tiny_timm(config)
    model = from_timm(NAME, state_dict_of(timm_model), **our_config(config))
    assert model.num_classes == 10  # inferred from head.fc.weight
    errors = parity_errors(timm_model, model, image_batch(config["img_size"]))
    print(f"swin tiny-{config_name} errors: {errors}")
    assert max(errors.values()) < TOLERANCE, errors


def test_headless_checkpoint(shifted_timm):
    config = TINY_CONFIGS["shifted"]
    timm_model = tiny_timm(config, num_classes=0)
    model = from_timm(NAME, state_dict_of(timm_model), **our_config(config))
    images = image_batch(32)
    with torch.no_grad():
        expected = timm_model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    assert relative_error(model(images), expected) < TOLERANCE  # pooled features


def test_recomputed_buffers_are_skipped(shifted_timm):
    # Older timm versions saved these buffers; they must be accepted and ignored.
    state = state_dict_of(shifted_timm)
    state["layers.0.blocks.0.attn.relative_position_index"] = np.zeros((4, 4), "int64")
    state["layers.0.blocks.1.attn_mask"] = np.zeros((64, 4, 4), "float32")
    model = from_timm(NAME, state, **our_config(TINY_CONFIGS["shifted"]))
    assert max(parity_errors(shifted_timm, model, image_batch(32)).values()) < TOLERANCE


def test_microsoft_layout_checkpoint(shifted_timm):
    # The original Swin code merges at the END of stages 0..2 and names the head `head`.
    state = {}
    for key, value in state_dict_of(shifted_timm).items():
        key = re.sub(
            r"^layers\.(\d+)\.downsample",
            lambda match: f"layers.{int(match.group(1)) - 1}.downsample",
            key,
        )
        state[key.replace("head.fc.", "head.")] = value
    assert "layers.0.downsample.reduction.weight" in state
    model = from_timm(NAME, state, **our_config(TINY_CONFIGS["shifted"]))
    assert max(parity_errors(shifted_timm, model, image_batch(32)).values()) < TOLERANCE


def test_safetensors_file(shifted_timm, tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = str(tmp_path / "swin.safetensors")
    safetensors_numpy.save_file(state_dict_of(shifted_timm), path)
    model = from_timm(NAME, path, **our_config(TINY_CONFIGS["shifted"]))
    assert max(parity_errors(shifted_timm, model, image_batch(32)).values()) < TOLERANCE


# === Strictness ===
def _conversion_error(state):
    with pytest.raises(ConversionError) as info:
        from_timm(NAME, state, **our_config(TINY_CONFIGS["shifted"]))
    return str(info.value)


def test_missing_tensor_is_reported(shifted_timm):
    state = state_dict_of(shifted_timm)
    del state["layers.2.blocks.1.attn.relative_position_bias_table"]
    del state["layers.1.downsample.reduction.weight"]
    message = _conversion_error(state)
    assert "missing in checkpoint: layers.2.blocks.1.attn.relative_position_bias_table" in message
    assert "missing in checkpoint: layers.1.downsample.reduction.weight" in message


def test_extra_tensor_is_reported(shifted_timm):
    state = state_dict_of(shifted_timm)
    state["layers.1.downsample.reduction.bias"] = np.zeros(48, "float32")
    message = _conversion_error(state)
    assert "unused checkpoint tensor: layers.1.downsample.reduction.bias" in message


def test_misshaped_tensor_is_reported(shifted_timm):
    state = state_dict_of(shifted_timm)
    # A table sized for window 3 ((2*3-1)^2 = 25 rows) does not fit window 2 (9 rows).
    state["layers.0.blocks.0.attn.relative_position_bias_table"] = np.zeros((25, 1), "float32")
    state["layers.3.blocks.0.mlp.fc1.weight"] = np.zeros((10, 192), "float32")
    message = _conversion_error(state)
    assert "shape mismatch" in message
    assert "(25, 1)" in message and "(9, 1)" in message
    assert message.count("shape mismatch") == 2


def test_architecture_mismatch_is_reported(shifted_timm):
    # A checkpoint with 2 blocks in stage 2 loaded into a model with 1: extra tensors listed.
    config = dict(our_config(TINY_CONFIGS["shifted"]), depths=(2, 2, 1, 2))
    with pytest.raises(ConversionError, match=r"unused checkpoint tensor: layers\.2\.blocks\.1\."):
        from_timm(NAME, state_dict_of(shifted_timm), **config)


# === Real size (timm's presets at 224, batch 2) ===
@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "swin_tiny_patch4_window7_224",
        "swin_small_patch4_window7_224",
        "swin_base_patch4_window7_224",
    ],
)
def test_real_size_parity(name):
    timm_model = randomize_(timm.create_model(name, pretrained=False))
    model = from_timm(name, state_dict_of(timm_model))
    assert model.count_params() == sum(p.numel() for p in timm_model.parameters())
    errors = parity_errors(timm_model, model, image_batch(224))
    print(f"{name} errors: {errors}")
    assert max(errors.values()) < TOLERANCE, errors
