"""timm ViT/DeiT and CaiT state dicts -> ours: strictness, file formats, head handling.

Numerical parity of converted models is tested in tests/models/test_vit.py and test_cait.py;
here: every tensor is accounted for, and every kind of mismatch is reported by name.
"""

import numpy as np
import pytest
from keras import ops
from timm_oracle import TOLERANCE, build_timm, random_images, relative_error, timm_state_dict

from keras_spectralkd.convert import ConversionError, from_timm, load_state_dict

CASES = {
    "vit": ("deit_tiny_patch16_224",
            dict(image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3),
            dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)),
    "cait": ("cait_s24_224",
             dict(image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4),
             dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    """(name, our overrides, timm model, its state dict) for one family."""
    pytest.importorskip("timm")
    name, ours, theirs = CASES[request.param]
    timm_model = build_timm(name, num_classes=5, **theirs)
    return name, ours, timm_model, timm_state_dict(timm_model)


def timm_logits(timm_model, images):
    import torch

    with torch.inference_mode():
        return timm_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def assert_same_as_timm(model, timm_model):
    images = random_images(2, 32)
    error = relative_error(ops.convert_to_numpy(model(images)), timm_logits(timm_model, images))
    assert error < TOLERANCE


# === Strictness ===
def test_every_tensor_is_used_and_every_weight_set(case):
    name, ours, timm_model, state = case
    model = from_timm(name, state, **ours)
    assert model.num_classes == 5  # read from head.weight
    assert_same_as_timm(model, timm_model)


def test_missing_tensor_is_named(case):
    name, ours, _, state = case
    state = dict(state)
    del state["blocks.1.mlp.fc2.weight"]
    with pytest.raises(ConversionError) as error:
        from_timm(name, state, **ours)
    assert "missing in checkpoint: blocks.1.mlp.fc2.weight" in str(error.value)


def test_extra_tensor_is_named(case):
    name, ours, _, state = case
    state = dict(state, **{"blocks.0.attn.unexpected": np.zeros((3,), "float32")})
    with pytest.raises(ConversionError, match=r"unused checkpoint tensor: blocks.0.attn.unexp"):
        from_timm(name, state, **ours)


def test_mis_shaped_tensor_is_named(case):
    name, ours, _, state = case
    state = dict(state)
    state["pos_embed"] = state["pos_embed"][:, :-1]
    with pytest.raises(ConversionError, match=r"shape mismatch for pos_embed/embedding"):
        from_timm(name, state, **ours)


def test_a_checkpoint_of_another_size_lists_every_problem(case):
    """A deeper checkpoint than the model: all the extra blocks' tensors are reported at once."""
    name, ours, _, state = case
    with pytest.raises(ConversionError) as error:
        from_timm(name, state, **dict(ours, depth=1))
    assert "unused checkpoint tensor: blocks.1.norm1.weight" in str(error.value)
    assert "unused checkpoint tensor: blocks.1.mlp.fc2.bias" in str(error.value)


def test_nothing_is_written_when_conversion_fails(case):
    name, ours, _, state = case
    from keras_spectralkd.models import create

    model = create(name, num_classes=5, **ours)
    before = [np.array(w) for w in model.get_weights()]
    state = {k: v for k, v in state.items() if k != "norm.weight"}
    with pytest.raises(ConversionError):
        from_timm(name, state, model=model)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


# === Heads ===
def test_checkpoint_without_head_gives_headless_model(case):
    name, ours, timm_model, state = case
    headless = {k: v for k, v in state.items() if not k.startswith("head.")}
    model = from_timm(name, headless, **ours)
    assert model.num_classes == 0 and model.output_shape == (None, 48)


def test_head_can_be_forced_to_a_different_size_and_fails(case):
    name, ours, _, state = case
    with pytest.raises(ConversionError, match="shape mismatch for head/kernel"):
        from_timm(name, state, num_classes=7, **ours)


# === File formats ===
def test_loads_safetensors(case, tmp_path):
    from safetensors.numpy import save_file

    name, ours, timm_model, state = case
    path = str(tmp_path / "model.safetensors")
    save_file(state, path)
    assert_same_as_timm(from_timm(name, path, **ours), timm_model)


def test_loads_pth_with_wrapper_and_module_prefix(case, tmp_path):
    """The DeiT/CaiT release files wrap the state dict in {"model": ...}; DDP adds `module.`."""
    import torch

    name, ours, timm_model, _ = case
    path = str(tmp_path / "model.pth")
    wrapped = {f"module.{k}": v for k, v in timm_model.state_dict().items()}
    torch.save({"model": wrapped, "epoch": 3}, path)
    assert_same_as_timm(from_timm(name, path, **ours), timm_model)
    assert set(load_state_dict(path)) == set(timm_model.state_dict())


def test_unknown_file_type_is_rejected(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="Unsupported checkpoint file"):
        load_state_dict(str(path))
