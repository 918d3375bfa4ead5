"""AdamW with timm's no-decay set: the rule, its effect on an update, the set itself against
timm's own parameter groups (name by name through the converter's name map, and by size on the
real backbones), and a declaration that names no variable."""

import fnmatch

import keras
import numpy as np
import pytest
from training_helpers import tiny_vit

from keras_spectralkd.convert import timm_name_map
from keras_spectralkd.models import create
from keras_spectralkd.training import optimizer as optim

# Small models of each family, ours -> timm's arguments.
FAMILIES = {
    "deit_tiny_patch16_224": (dict(image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3),
                              dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)),
    "cait_s24_224": (dict(image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4),
                     dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4)),
    "swin_tiny_patch4_window7_224": (
        dict(image_size=32, patch_size=2, embed_dim=16, depths=(2, 2, 2, 2),
             num_heads=(1, 2, 2, 4), window_size=2),
        dict(img_size=32, patch_size=2, embed_dim=16, depths=(2, 2, 2, 2),
             num_heads=(1, 2, 2, 4), window_size=2)),
}


def test_no_decay_rule_on_a_vit():
    model = tiny_vit()
    names = {v.path for v in optim.no_weight_decay_variables(model)}
    decayed = {v.path for v in model.trainable_variables} - names
    assert any("pos_embed" in n for n in names) and any("cls_token" in n for n in names)
    assert all(len(v.shape) >= 2 for v in model.trainable_variables if v.path in decayed)
    assert all("kernel" in n for n in decayed)  # only Dense/Conv kernels are decayed
    assert all(
        len(v.shape) <= 1 or "pos_embed" in v.path or "cls_token" in v.path
        for v in model.trainable_variables if v.path in names
    )


def test_decay_applies_only_outside_the_no_decay_set():
    """Zero gradients: Adam's step is 0, so only the decoupled decay moves a weight."""
    model = tiny_vit()
    lr, wd = 0.1, 0.5
    opt = optim.create_optimizer(lr, model=model, weight_decay=wd)
    variables = model.trainable_variables
    before = [keras.ops.convert_to_numpy(v) for v in variables]
    opt.apply([keras.ops.zeros(v.shape, v.dtype) for v in variables], variables)
    for variable, old in zip(variables, before):
        new = keras.ops.convert_to_numpy(variable)
        if optim.is_no_decay_variable(variable, model):
            np.testing.assert_array_equal(new, old, err_msg=variable.path)
        else:
            np.testing.assert_allclose(new, old * (1 - lr * wd), rtol=1e-5, atol=1e-7,
                                       err_msg=variable.path)


def test_loss_scaling_and_precision():
    model = tiny_vit()
    opt = optim.create_optimizer(1e-3, model=model, loss_scale=True)
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
    assert isinstance(opt.inner_optimizer, keras.optimizers.AdamW)
    assert optim.set_precision("mixed_float16") is True
    assert keras.config.dtype_policy().name == "mixed_float16"
    assert optim.set_precision("mixed_bfloat16") is False
    with pytest.raises(ValueError, match="precision"):
        optim.set_precision("float8")


def test_unbuilt_model_is_an_error():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="built"):
        optim.create_optimizer(1e-3, model=model)


def _timm_group_sizes(model):
    from timm.optim import param_groups_weight_decay

    groups = param_groups_weight_decay(
        model, weight_decay=0.05, no_weight_decay_list=model.no_weight_decay()
    )
    sizes = {group["weight_decay"]: sum(p.numel() for p in group["params"]) for group in groups}
    return sizes[0.0], sizes[0.05]


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="variable paths, hence the no-decay set, do not depend on the "
                    "backend; building the full-size models once is enough")
@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "cait_s24_224",
                                  "swin_tiny_patch4_window7_224"])
def test_no_decay_set_matches_timm_on_real_backbones(name):
    """The decayed and exempt parameter counts equal timm's `param_groups_weight_decay` (the
    reference's optimizer setup) on the full-size models."""
    timm = pytest.importorskip("timm")
    ours = create(name)
    no_decay = sum(int(np.prod(v.shape)) for v in optim.no_weight_decay_variables(ours))
    total = sum(int(np.prod(v.shape)) for v in ours.trainable_variables)
    reference = timm.create_model(name, pretrained=False)
    timm_no_decay, timm_decay = _timm_group_sizes(reference)
    assert (no_decay, total - no_decay) == (timm_no_decay, timm_decay)


def _timm_no_decay_names(model):
    """The parameter names timm's `param_groups_weight_decay` puts in the no-decay group."""
    patterns = model.no_weight_decay()  # timm matches them with fnmatch
    return {
        name for name, parameter in model.named_parameters()
        if parameter.ndim <= 1 or name.endswith(".bias")
        or any(fnmatch.fnmatch(name, pattern) for pattern in patterns)
    }


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_no_decay_set_is_timms_name_by_name(name):
    """Every exempt variable maps (through the converter's name map) to a parameter timm exempts,
    and every parameter timm exempts is exempt here."""
    timm = pytest.importorskip("timm")
    ours_kwargs, timm_kwargs = FAMILIES[name]
    ours = create(name, num_classes=5, **ours_kwargs)
    reference = timm.create_model(name, pretrained=False, num_classes=5, **timm_kwargs)
    state = {key: value.detach().numpy() for key, value in reference.state_dict().items()}
    names = timm_name_map(name, ours, state)
    assert {v.path for v in ours.trainable_variables} <= set(names)
    exempt = {names[v.path] for v in optim.no_weight_decay_variables(ours)}
    assert exempt == _timm_no_decay_names(reference)
    assert ours.no_weight_decay()  # the declared part is not empty: tokens or tables


def test_a_declared_name_that_is_no_variable_is_an_error():
    """Renaming a layer must not silently change the optimiser: a stale declaration raises."""
    model = tiny_vit()

    class Renamed(type(model)):
        def no_weight_decay(self):
            return {"pos_embedding/embedding"}

    model.__class__ = Renamed
    with pytest.raises(ValueError, match=r"pos_embedding/embedding.*not trainable variables"):
        optim.create_optimizer(1e-3, model=model)
