"""What a backbone's forward keeps alive (issue 13 section 2, memory).

- The backbones run their functional graph with `backbone.ReleasingGraph`, which drops each
  intermediate tensor once its last reader has run; it must give exactly what Keras' own runner
  gives (and that runner is used where Keras' private graph fields are missing).
- `forward_intermediates` returns the requested units only, so on an eager backend the others
  are freed as the forward goes: on torch, a 6-block CaiT asked for unit 0 holds at most a few
  block outputs at once, and its talking-heads attention at most two (B, heads, N, N) tensors
  (timm holds two as well).
"""


import keras
import numpy as np
import pytest
from keras import ops
from timm_oracle import random_images

from keras_spectralkd.models import backbone, registry

TINY = {
    "deit_tiny_patch16_224": dict(image_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3),
    "cait_s24_224": dict(image_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=4),
    "swin_tiny_patch4_window7_224": dict(image_size=16, patch_size=2, embed_dim=16, depths=(2, 2),
                                         num_heads=(1, 2), window_size=2),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_releasing_runner_gives_what_keras_runner_gives(name, monkeypatch):
    model = registry.create(name, num_classes=5, **TINY[name])
    images = random_images(2, TINY[name]["image_size"], seed=2)
    assert backbone._keras_graph_internals_known(model)
    logits, maps = model.forward_intermediates(images, [1, 0])
    plain_logits = model(images)
    monkeypatch.setattr(backbone, "_keras_graph_internals_known", lambda model: False)
    keras_logits, keras_maps = model.forward_intermediates(images, [1, 0])
    for ours, theirs in [(logits, keras_logits), (plain_logits, model(images))] + list(
        zip(maps, keras_maps)
    ):
        np.testing.assert_array_equal(ops.convert_to_numpy(ours), ops.convert_to_numpy(theirs))


def test_forward_intermediates_in_any_order_and_with_repeats():
    model = registry.create("deit_tiny_patch16_224", num_classes=5,
                            **TINY["deit_tiny_patch16_224"])
    images = random_images(2, 32, seed=3)
    _, every = model.forward_intermediates(images)
    logits, maps = model.forward_intermediates(images, [2, 0, 2])
    for got, index in zip(maps, [2, 0, 2]):
        np.testing.assert_array_equal(ops.convert_to_numpy(got), ops.convert_to_numpy(every[index]))
    np.testing.assert_array_equal(ops.convert_to_numpy(logits), ops.convert_to_numpy(model(images)))
    no_logits, no_maps = model.forward_intermediates(images, [])
    assert no_maps == []
    np.testing.assert_array_equal(ops.convert_to_numpy(no_logits), ops.convert_to_numpy(logits))


def _most_alive_at_once(run, groups):
    """Runs `run()` under a torch dispatch mode; returns, for each group of `groups` (a name ->
    set of shapes), the most tensors of those shapes that were alive at the same time (of the
    storages created during the run)."""
    import torch
    from torch_storages import NewStorages

    live, most = {}, dict.fromkeys(groups, 0)

    def new(key, tensor, nbytes):
        live[key] = tuple(tensor.shape)
        for name, shapes in groups.items():
            alive = sum(shape in shapes for shape in live.values())
            most[name] = max(most[name], alive)

    with torch.no_grad(), NewStorages(new, lambda key: live.pop(key, None)):
        result = run()
    del result
    return most


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="eager memory: torch backend")
@pytest.mark.parametrize("depth", [6, 12])
def test_frozen_cait_forward_frees_blocks_and_attention_as_it_goes(depth, monkeypatch):
    batch, heads, tokens, width = 2, 4, 16, 48
    model = registry.create("cait_s24_224", num_classes=5, image_size=16, patch_size=4,
                            embed_dim=width, depth=depth, num_heads=heads)
    images = ops.convert_to_tensor(random_images(batch, 16, seed=4))
    groups = {
        "tokens": {(batch, tokens, width)},  # block outputs and a block's own temporaries
        # attention logits / weights, or their (B, heads, N * N) matmul views
        "attention": {(batch, heads, tokens, tokens), (batch, heads, tokens * tokens)},
    }
    most = _most_alive_at_once(lambda: model.forward_intermediates(images, [0]), groups)
    # The same whatever the depth: one block's worth of (B, N, C) tensors plus unit 0; Keras'
    # runner keeps every block's output to the end (measured: 11 at depth 6, 17 at depth 12).
    assert most["tokens"] <= 7, most
    assert most["attention"] <= 2, most  # timm's TalkingHeadAttn: 2 as well
    monkeypatch.setattr(backbone, "_keras_graph_internals_known", lambda model: False)
    keras_most = _most_alive_at_once(lambda: model.forward_intermediates(images, [0]), groups)
    assert keras_most["tokens"] >= depth + 4, keras_most  # what the releasing runner saves


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="TensorFlow is the backend")
def test_a_backbones_config_does_not_import_tensorflow():
    """Keras' serializer imports TensorFlow (~500 MB) whatever the backend; a backbone's config
    (read by `Distiller(teacher_dtype=...)` to rebuild the teacher) does without it."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, keras\n"
        "from keras_spectralkd import models\n"
        "m = models.create('deit_tiny_patch16_224', image_size=32, patch_size=8, embed_dim=48,"
        " depth=1, num_heads=3)\n"
        "c = m.get_config()\n"
        "assert 'tensorflow' not in sys.modules, 'imported'\n"
        "type(m).from_config(c)\n"
        "assert 'tensorflow' not in sys.modules, 'imported by from_config'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=dict(os.environ),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "bfloat16"])
def test_backbone_config_dtype_is_what_keras_serializer_writes(policy):
    policy = keras.DTypePolicy(policy)
    assert backbone._serialize_policy(policy) == keras.dtype_policies.serialize(policy)
