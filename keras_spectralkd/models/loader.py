"""`create(name, weights)`: the one way to get a model, with random or loaded weights.

`weights` says where the weights come from:

    None                 random initialisation (`registry.create`)
    "timm"               timm's pretrained weights for `name`, which may carry timm's tag
                         ("cait_s24_224.fb_dist_in1k"): from timm's cache, downloaded if online
                         (`timm.pretrained`), then converted
    "model.keras"        a whole saved model (`keras.saving.load_model`, compile=False); it must
                         be a keras_spectralkd backbone of `name`'s class
    "model.weights.h5"   `name` built, then `load_weights`
    "model.safetensors"  a timm checkpoint (also .pth, .pt, .bin, .pth.tar), converted strictly
                         (`timm.from_timm`)

`num_classes` defaults ("auto") to 1000 (timm's ImageNet head) for random weights and to the
weights' own head size for loaded ones; 0 or None means no head. Given with loaded weights, it
must equal their head size.
"""

import os

from keras_spectralkd.models import registry
from keras_spectralkd.models.timm import from_timm, pretrained
from keras_spectralkd.models.timm.weight_map import (
    CHECKPOINT_SUFFIXES,
    ConversionError,
    infer_num_classes,
    load_state_dict,
    read_checkpoint,
)

KERAS_SUFFIXES = (".keras", ".weights.h5")
WEIGHTS_SUFFIXES = KERAS_SUFFIXES + CHECKPOINT_SUFFIXES
RANDOM_NUM_CLASSES = 1000


def create(name, weights=None, *, num_classes="auto", image_size=None, drop_path_rate=0.0,
           dtype=None, **overrides):
    """Builds model `name` (a timm name, e.g. `deit_tiny_patch16_224`) with `weights`.

    Args:
        name: a registered model name (see `list_models()`); with `weights="timm"` it may carry
            timm's tag ("cait_s24_224.fb_dist_in1k"), which names the weights.
        weights: None (random initialisation), "timm" (timm's pretrained weights for `name`)
            or a path: a `.keras` model, a `.weights.h5` file of `name`, or a timm checkpoint
            (`.safetensors`, `.pth`, `.pt`, `.bin`, `.pth.tar`).
        num_classes: size of the classification head, 0 or None for none (pooled features
            out). "auto": 1000 for random weights, the weights' head size for loaded ones.
        image_size: input side in pixels; defaults to the preset's (224) or the weights'.
        drop_path_rate: stochastic-depth rate, linearly increasing over depth as in timm.
        dtype: a dtype policy name (e.g. "mixed_bfloat16") or None for the global policy.
        **overrides: any other constructor argument of the family (depth, embed_dim, num_heads,
            patch_size, window_size, ...), for small custom models. A `.keras` file holds its
            own architecture: arguments given with it are checked against it.

    Raises:
        FileNotFoundError: `weights` is a path that does not exist.
        ValueError: `weights` is neither None, "timm" nor a path with a suffix above; the file
            cannot be read, or holds another model than `name` as configured; `num_classes`
            differs from the weights' head size. Each names the file and what was expected.
    """
    config = dict(overrides)  # the arguments given: a `.keras` file is checked against them
    if image_size is not None:
        config["image_size"] = image_size
    if drop_path_rate:
        config["drop_path_rate"] = drop_path_rate
    if dtype is not None:
        config["dtype"] = dtype
    if weights is None:
        classes = RANDOM_NUM_CLASSES if num_classes == "auto" else num_classes
        return registry.create(name, num_classes=classes, **config)
    if weights == "timm":  # timm reads the tag itself; our constructors know the architecture
        state = pretrained.load_pretrained_state_dict(name)
        return _convert(name, state, f"timm's pretrained weights {name!r}", num_classes, config)
    path = os.path.expanduser(os.fspath(weights))
    if not path.endswith(WEIGHTS_SUFFIXES):
        raise ValueError(
            f"Unsupported weights {path!r}; expected None, 'timm' (timm's pretrained weights "
            f"for the name) or a file ending in {', '.join(WEIGHTS_SUFFIXES)}."
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file {path!r} does not exist.")
    if path.endswith(".keras"):
        return _load_keras_model(name, path, num_classes, config)
    if path.endswith(".weights.h5"):
        return _load_keras_weights(name, path, num_classes, config)
    return _convert(name, load_state_dict(path), f"Weights file {path!r}", num_classes, config)


# === Loaders ===
def _convert(name, state, source, num_classes, config):
    """A timm state dict converted into `name` (timm.from_timm)."""
    classes = _head_size(source, infer_num_classes(state), num_classes)
    try:
        return from_timm(name, state, num_classes=classes, **config)
    except ConversionError as error:  # it says what does not fit; this says where it came from
        raise ConversionError(f"{source}: {error}") from None


def _load_keras_weights(name, path, num_classes, config):
    """`name` built with the file's head size, then the file's weights loaded into it."""
    found = read_checkpoint(path, _h5_head_size, what="Keras weights file (HDF5)")
    classes = _head_size(f"Weights file {path!r}", found, num_classes)
    model = registry.create(name, num_classes=classes, **config)
    try:
        model.load_weights(path)
    except ValueError as error:
        detail = " ".join(str(error).split())[:300]
        raise ValueError(
            f"Weights file {path!r} does not hold the weights of {name!r} built with "
            f"{_arguments(config, num_classes=classes)}: {detail}"
        ) from None
    return model


def _h5_head_size(path):
    """The head size a `.weights.h5` file holds, read without building a model.

    Keras keys a functional model's layers in the file by class name, and the head is the only
    Dense at the top of every keras_spectralkd backbone (checked against Keras 3.15).
    """
    import h5py

    with h5py.File(path, "r") as file:
        kernel = file.get("layers/dense/vars/0")
        return 0 if kernel is None else int(kernel.shape[-1])


def _load_keras_model(name, path, num_classes, config):
    """A saved `.keras` backbone, checked to be `name`'s class with the given arguments."""
    import keras

    model = read_checkpoint(path, lambda p: keras.saving.load_model(p, compile=False),
                            what="Saved Keras model (.keras zip)")
    expected = registry.model_class(name)
    if not isinstance(model, expected):
        raise ValueError(
            f"Weights file {path!r} holds a {type(model).__name__}; expected a keras_spectralkd "
            f"{expected.__name__} ({name!r})."
        )
    _head_size(f"Weights file {path!r}", model.num_classes, num_classes)
    saved = dict(model.get_config(), dtype=model.dtype_policy.name)
    wrong = [key for key, value in config.items() if _plain(saved.get(key)) != _plain(value)]
    if wrong:
        raise ValueError(
            f"Weights file {path!r} holds a model built with "
            f"{_arguments({key: saved.get(key) for key in wrong})}, not "
            f"{_arguments({key: config[key] for key in wrong})}; leave these arguments out to "
            "take the file's."
        )
    return model


# === Checks ===
def _head_size(source, found, num_classes):
    """The head size to build: the weights' (`found`), which a given `num_classes` must equal."""
    if num_classes == "auto" or (num_classes or 0) == found:
        return found
    raise ValueError(
        f"{source} has {_head(found)}, but num_classes={num_classes} asks for "
        f"{_head(num_classes or 0)}; pass num_classes={found} (or leave it out) to use these "
        "weights."
    )


def _head(num_classes):
    return f"a {num_classes}-class head" if num_classes else "no head"


def _plain(value):
    """Tuples as lists: a `.keras` config comes back from JSON with lists."""
    return list(value) if isinstance(value, tuple) else value


def _arguments(config, **more):
    return ", ".join(f"{key}={value!r}" for key, value in {**config, **more}.items())
