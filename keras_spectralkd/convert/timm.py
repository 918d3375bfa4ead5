"""timm checkpoints -> our models: `from_timm(name, state_dict)`.

The loading and the strict bookkeeping live here; each family (`timm_vit.py`, `timm_cait.py`,
`timm_swin.py`) only says which timm tensor goes into which Keras variable and how it is laid
out. Conversion is strict: every source tensor must be used, every Keras weight set, every shape
must match; a `ConversionError` lists everything that is wrong at once.
"""

import os

import numpy as np

from keras_spectralkd.models import registry


class ConversionError(ValueError):
    """A checkpoint does not fit the model; the message lists missing/extra/mis-shaped tensors."""


# === Layout helpers (torch -> Keras) ===
def linear_kernel(weight):
    """torch Linear weight (out, in) -> Dense kernel (in, out)."""
    return np.ascontiguousarray(np.transpose(weight))


def conv_kernel(weight):
    """torch Conv2d weight (O, I, kh, kw) -> Keras Conv2D kernel (kh, kw, I, O)."""
    return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)))


def load_state_dict(source):
    """A dict of numpy arrays from a dict (numpy or torch tensors) or a checkpoint path.

    Paths: `.safetensors` (needs `safetensors`), `.pth`/`.pt`/`.bin` (needs torch). A checkpoint
    that wraps its weights (`{"model": ...}`, `{"state_dict": ...}`, EMA variants) is unwrapped.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Checkpoint {path!r} does not exist.")
        if path.endswith(".safetensors"):
            try:
                from safetensors.numpy import load_file
            except ImportError as error:  # pragma: no cover - depends on the environment
                raise ImportError(
                    f"Reading {path!r} needs `safetensors` (pip install safetensors)."
                ) from error
            source = load_file(path)
        elif path.endswith((".pth", ".pt", ".bin", ".pth.tar")):
            try:
                import torch
            except ImportError as error:  # pragma: no cover - depends on the environment
                raise ImportError(
                    f"Reading {path!r} needs PyTorch; convert it to .safetensors elsewhere or "
                    "install torch."
                ) from error
            source = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ValueError(
                f"Unsupported checkpoint file {path!r}; expected .safetensors, .pth, .pt or .bin."
            )
    if not isinstance(source, dict):
        raise TypeError(f"Expected a state dict or a path; got {type(source).__name__}.")
    for wrapper in ("model_ema", "state_dict_ema", "model", "state_dict"):
        if wrapper in source and isinstance(source[wrapper], dict):
            source = source[wrapper]
            break
    state = {}
    for key, value in source.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().float().numpy() if value.is_floating_point() else (
                value.detach().cpu().numpy()
            )
        state[key.removeprefix("module.")] = np.asarray(value)
    return state


# === Strict assignment ===
class WeightMap:
    """Collects (Keras variable <- timm tensors) assignments, then checks and applies them."""

    def __init__(self, model, state_dict):
        self.model = model
        self.state_dict = state_dict
        self._used = set()
        self._assigned = {}
        self._errors = []

    def get(self, key):
        """The source tensor `key` (marked used); records an error if it is missing."""
        if key not in self.state_dict:
            self._errors.append(f"missing in checkpoint: {key}")
            return None
        self._used.add(key)
        return self.state_dict[key]

    def skip(self, key):
        """Marks `key` as deliberately unused (a buffer we recompute, e.g. an index table)."""
        if key in self.state_dict:
            self._used.add(key)

    def set(self, variable, value):
        """Assigns `value` (a numpy array, or None after a missing `get`) to `variable`."""
        path = variable.path
        if path in self._assigned:
            self._errors.append(f"assigned twice: {path}")
            return
        self._assigned[path] = (variable, value)
        if value is not None and tuple(value.shape) != tuple(variable.shape):
            self._errors.append(
                f"shape mismatch for {path}: model {tuple(variable.shape)}, checkpoint "
                f"{tuple(value.shape)}"
            )

    def copy(self, variable, key, transform=None):
        """`variable <- transform(state_dict[key])`."""
        value = self.get(key)
        if value is not None and transform is not None:
            value = transform(value)
        self.set(variable, value)

    def finish(self):
        """Raises `ConversionError` listing every problem, else writes all values to the model."""
        errors = list(self._errors)
        for variable in self.model.weights:
            if variable.path not in self._assigned:
                errors.append(f"not set from the checkpoint: {variable.path} {tuple(variable.shape)}")
        for key in sorted(self.state_dict):
            if key not in self._used:
                errors.append(f"unused checkpoint tensor: {key} {tuple(self.state_dict[key].shape)}")
        if errors:
            raise ConversionError(
                f"Checkpoint does not fit model {self.model.name!r} ({len(errors)} problems):\n  "
                + "\n  ".join(errors)
            )
        for variable, value in self._assigned.values():
            variable.assign(value.astype(variable.dtype))
        return self.model


_FAMILY_CONVERTERS = {}


def register_converter(family):
    """Decorator: `fn(weight_map, model)` fills a WeightMap for models of `family`."""

    def decorator(fn):
        _FAMILY_CONVERTERS[family] = fn
        return fn

    return decorator


def infer_num_classes(state_dict):
    """Head size from `head.weight` (timm's name), 0 if the checkpoint has no head."""
    head = state_dict.get("head.weight", state_dict.get("head.fc.weight"))
    return 0 if head is None else int(head.shape[0])


def from_timm(name, state_dict=None, model=None, **create_kwargs):
    """Builds model `name` and loads a timm checkpoint into it, strictly.

    Args:
        name: a registered timm name, e.g. "cait_s24_224", optionally with timm's pretrained
            tag ("swin_small_patch4_window7_224.ms_in1k").
        state_dict: dict of timm parameter names -> arrays (numpy or torch), or a path to a
            `.safetensors`, `.pth` or `.bin` file. None: timm's pretrained weights for `name`
            (from timm's cache, downloaded if the host answers; offline it fails at once with
            `convert.pretrained.PretrainedWeightsUnavailable` naming the file to fetch).
        model: an already built model to fill instead of creating one.
        **create_kwargs: forwarded to `models.create` (e.g. `dtype`, `image_size`, overrides);
            `num_classes` defaults to the checkpoint's head size.
    Returns:
        the Keras model with the checkpoint's weights.
    """
    # Importing the family modules registers their converters.
    from keras_spectralkd.convert import timm_cait, timm_swin, timm_vit  # noqa: F401

    if state_dict is None:
        from keras_spectralkd.convert import pretrained

        state_dict = pretrained.load_pretrained_state_dict(name)
    name = name.partition(".")[0]  # timm's "arch.tag": the tag names weights, not a model
    state = load_state_dict(state_dict)
    family = registry.model_family(name)
    if model is None:
        create_kwargs.setdefault("num_classes", infer_num_classes(state))
        model = registry.create(name, **create_kwargs)
    weight_map = WeightMap(model, state)
    _FAMILY_CONVERTERS[family](weight_map, model)
    return weight_map.finish()
