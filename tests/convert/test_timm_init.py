"""A model trained from scratch starts where timm's does: every weight's initial distribution.

For every registered name (moderate sizes: the real ones are slow to build three times over),
ours (`models.create`) and timm's (`timm.create_model(..., pretrained=False)`) are paired
weight by weight through the converter's name map (`convert.timm_name_map`), and:
- a tensor timm starts constant (biases, LayerNorm, LayerScale) is exactly that constant in ours;
- a random tensor of >= 1,000 elements has mean and std within 5% of timm's std of timm's.
  The sizes are chosen so that every such tensor has >= 8,000 elements: the sampling error of
  the difference of two such estimates is then under 1.6% of the std (mean) and 1.1% (std), so
  5% is a real test, not a coin toss;
- the few random tensors under 1,000 elements (class tokens, conv biases, talking-heads mixes,
  relative-position tables) are pooled per kind of tensor (their timm name with the indices
  dropped) and must agree within four standard errors of the difference of the two estimates,
  4 * sqrt(2 / n) of timm's std for n pooled values (n = 16..700: this tells a 3x wrong scale,
  e.g. Glorot's or a zero init, from timm's, not a 10% one).
"""

import re

import numpy as np
import pytest
from keras import ops

from keras_spectralkd.convert import timm_name_map
from keras_spectralkd.models import create, list_models, model_family

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

# Our overrides -> timm's for the same architecture, per family.
SIZES = {
    "vit": (dict(image_size=64, patch_size=8, embed_dim=128, depth=2, num_heads=4),
            dict(img_size=64, patch_size=8, embed_dim=128, depth=2, num_heads=4)),
    "cait": (dict(image_size=64, patch_size=8, embed_dim=128, depth=2, num_heads=4),
             dict(img_size=64, patch_size=8, embed_dim=128, depth=2, num_heads=4)),
    "swin": (dict(image_size=128, patch_size=8, embed_dim=64, depths=(1, 1, 1, 1),
                  num_heads=(2, 4, 8, 16), window_size=4),
             dict(img_size=128, patch_size=8, embed_dim=64, depths=(1, 1, 1, 1),
                  num_heads=(2, 4, 8, 16), window_size=4)),
}
TIMM_TWINS = {"cait_xs24_224": "cait_xs24_384"}  # timm's name for that architecture
LARGE = 1000
TOLERANCE = 0.05


def _pairs(name):
    """[(timm name, ours as numpy, timm's as numpy)] for every weight of model `name`."""
    ours_kwargs, timm_kwargs = SIZES[model_family(name)]
    model = create(name, num_classes=1000, **ours_kwargs)
    torch.manual_seed(0)
    reference = timm.create_model(TIMM_TWINS.get(name, name), pretrained=False, num_classes=1000,
                                  **timm_kwargs)
    state = {key: value.detach().numpy() for key, value in reference.state_dict().items()}
    names = timm_name_map(name, model, state)
    assert len(names) == len(model.weights)
    return [(names[v.path], ops.convert_to_numpy(v), state[names[v.path]]) for v in model.weights]


def _within(ours, theirs, tolerance):
    scale = theirs.std()
    return (abs(ours.mean() - theirs.mean()) <= tolerance * scale
            and abs(ours.std() - scale) <= tolerance * scale)


@pytest.mark.parametrize("name", list_models())
def test_initialisation_matches_timm_in_distribution(name):
    constants, large, small_pools = 0, 0, {}
    for key, ours, theirs in _pairs(name):
        if theirs.size and np.all(theirs == theirs.flat[0]):
            np.testing.assert_array_equal(ours, np.full(ours.shape, theirs.flat[0]), err_msg=key)
            constants += 1
        elif theirs.size >= LARGE:
            assert _within(ours, theirs, TOLERANCE), (
                f"{key}: ours mean {ours.mean():.3g} std {ours.std():.3g}, timm's mean "
                f"{theirs.mean():.3g} std {theirs.std():.3g}"
            )
            large += 1
        else:
            pool = small_pools.setdefault(re.sub(r"\.\d+\.", ".*.", key), ([], []))
            pool[0].append(ours.ravel())
            pool[1].append(theirs.ravel())
    for kind, (ours, theirs) in small_pools.items():
        ours, theirs = np.concatenate(ours), np.concatenate(theirs)
        assert _within(ours, theirs, 4 * np.sqrt(2 / theirs.size)), (
            f"{kind} ({ours.size} values): ours mean {ours.mean():.3g} std {ours.std():.3g}, "
            f"timm's mean {theirs.mean():.3g} std {theirs.std():.3g}"
        )
    assert constants and large  # both kinds were checked
