"""timm as the numerical oracle of our backbones (generic: any family with a timm twin).

    timm_model = build_timm("deit_tiny_patch16_224", img_size=32, depth=2, ...)
    model = from_timm(name, timm_state_dict(timm_model), image_size=32, depth=2, ...)
    errors = compare_with_timm(model, timm_model, images)   # relative max abs errors
    assert max(errors.values()) < TOLERANCE

Weights are random (`pretrained=False`, nothing is downloaded) and then moved away from timm's
init by `randomize_`: LayerNorm weights of exactly 1, biases of exactly 0 and LayerScale gammas
of 1e-5 (which shrink every residual branch to nothing) would hide a swapped, transposed or
skipped tensor.

Error measure: max |ours - timm| / max(1, max |timm|), per output (logits, each map).
"""

import numpy as np

TOLERANCE = 1e-4

# Our registered names that timm lacks, and the timm model with that architecture
# (timm has `cait_xs24_384` only; at img_size=224 it is `cait_xs24_224`).
TIMM_TWINS = {"cait_xs24_224": "cait_xs24_384"}


def build_timm(name, seed=0, randomize=True, **kwargs):
    """timm's model `name` in eval mode with random weights; `kwargs` go to `create_model`."""
    import timm
    import torch

    torch.manual_seed(seed)
    kwargs.setdefault("img_size", 224)
    model = timm.create_model(TIMM_TWINS.get(name, name), pretrained=False, **kwargs).eval()
    if randomize:
        randomize_(model, seed)
    return model


def randomize_(model, seed=0, scale=0.05):
    """Perturbs every parameter in place so no weight keeps a trivially symmetric init value.

    Linear/conv weights get `scale`-sized noise on top of timm's init; 1-D tensors (norm
    weights and biases, LayerScale gammas) are redrawn around 1 (weights, gammas) or 0 (biases)
    with spread 0.1-0.5, so each residual branch contributes at O(1).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("gamma") or (parameter.ndim == 1 and "norm" in name and
                                            leaf == "weight"):
                parameter.copy_(1.0 + 0.2 * noise)
            elif parameter.ndim == 1:
                parameter.copy_(0.1 * noise)
            else:
                parameter.add_(scale * noise)
    return model


def timm_state_dict(model):
    """timm state dict as float32 numpy arrays (what `from_timm` takes)."""
    return {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()}


def random_images(batch=2, size=224, seed=0):
    """(B, H, W, 3) float32 standard-normal images; `size` is an int or (H, W)."""
    height, width = (size, size) if isinstance(size, int) else size
    return np.random.default_rng(seed).normal(size=(batch, height, width, 3)).astype("float32")


def timm_outputs(timm_model, images, indices=None):
    """timm's logits and intermediate maps for NHWC numpy `images`, maps returned NHWC.

    Maps come from timm's own `forward_intermediates(..., output_fmt="NCHW")` (SPEC.md 1's
    definition); the logits from `forward_head` of the same pass (what `forward` computes,
    without running the network twice).
    """
    import torch

    inputs = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with torch.inference_mode():
        features, maps = timm_model.forward_intermediates(inputs, indices=indices,
                                                          output_fmt="NCHW")
        logits = timm_model.forward_head(features).numpy()
    return logits, [m.numpy().transpose(0, 2, 3, 1) for m in maps]


def relative_error(ours, reference):
    """max |ours - reference| / max(1, max |reference|)."""
    ours = np.asarray(ours, dtype="float64")
    reference = np.asarray(reference, dtype="float64")
    if ours.shape != reference.shape:
        raise AssertionError(f"shape mismatch: ours {ours.shape}, timm {reference.shape}")
    return float(np.abs(ours - reference).max() / max(1.0, np.abs(reference).max()))


def compare_with_timm(model, timm_model, images, indices=None):
    """Relative errors {"logits": e, "map_0": e, ...} of our `model` against timm's.

    `indices` (None: every unit) is passed to both models' `forward_intermediates`.
    """
    from keras import ops

    from keras_spectralkd.models.backbone import normalize_indices

    reference_logits, reference_maps = timm_outputs(timm_model, images, indices)
    logits, maps = model.forward_intermediates(images, indices=indices)
    if len(maps) != len(reference_maps):
        raise AssertionError(f"ours gave {len(maps)} maps, timm {len(reference_maps)}")
    errors = {"logits": relative_error(ops.convert_to_numpy(logits), reference_logits)}
    wanted = normalize_indices(indices, len(model.feature_info))
    for index, ours, reference in zip(wanted, maps, reference_maps, strict=True):
        errors[f"map_{index}"] = relative_error(ops.convert_to_numpy(ours), reference)
    return errors


def assert_fit_updates_every_weight(model, num_classes=10):
    """`fit` (jitted where the backend jits) on 8 random 32x32 images gives finite losses and
    moves every trainable weight. With Adam any nonzero gradient moves a weight by ~lr, so
    "changed" means "the gradient reached it"."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {w.path: np.array(w) for w in model.trainable_weights}
    labels = np.arange(8) % num_classes
    history = model.fit(random_images(8, 32), labels, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    unchanged = [w.path for w in model.trainable_weights if np.array_equal(before[w.path], w)]
    assert not unchanged, unchanged
