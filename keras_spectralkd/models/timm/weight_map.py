"""The machinery every timm converter uses: loading, strict assignment, torch -> Keras layouts.

Imports nothing else of this folder; the family converters (`convert_vit`, `convert_cait`,
`convert_swin`) stand on it, the folder's `__init__.py` registers them with `register_converter`,
and `convert.from_timm` looks them up with `converter_for`.

Conversion is strict: every source tensor must be used, every Keras weight set, every shape must
match; a `ConversionError` lists everything that is wrong at once.
"""

import os

import numpy as np

from keras_spectralkd import _keras_internals


# The files `load_state_dict` reads (timm's and the reference code's formats).
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".pth.tar")


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

    Paths: `.safetensors` (needs `safetensors`), `.pth`/`.pt`/`.bin`/`.pth.tar` (needs torch). A
    checkpoint that wraps its weights (`{"model": ...}`, `{"state_dict": ...}`, EMA variants) is
    unwrapped.
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
            source = read_checkpoint(path, load_file)
        elif path.endswith(CHECKPOINT_SUFFIXES):
            try:
                import torch
            except ImportError as error:  # pragma: no cover - depends on the environment
                raise ImportError(
                    f"Reading {path!r} needs PyTorch; convert it to .safetensors elsewhere or "
                    "install torch."
                ) from error
            source = read_checkpoint(
                path, lambda p: torch.load(p, map_location="cpu", weights_only=True)
            )
        else:
            raise ValueError(
                f"Unsupported checkpoint file {path!r}; expected {', '.join(CHECKPOINT_SUFFIXES)}."
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


def read_checkpoint(path, read, what="Checkpoint"):
    """`read(path)`, with a truncated or corrupt file reported as one clear ValueError that
    calls the file `what` (`models.create` reads Keras' files through it too)."""
    try:
        return read(path)
    except (MemoryError, PermissionError, IsADirectoryError):
        raise
    except Exception as error:  # noqa: BLE001 - safetensors/torch/pickle/h5py raise many types
        detail = " ".join(str(error).split())[:200]
        raise ValueError(
            f"{what} {path!r} ({os.path.getsize(path)} bytes) cannot be read: it is "
            f"truncated or corrupt ({type(error).__name__}: {detail}); download or save it "
            "again."
        ) from None


# Tensors only one family's checkpoints have (timm names), to name a wrong architecture at once:
# Swin's relative-position tables; CaiT's talking-heads projections (present also without
# class-attention blocks) or its class-attention queries; ViT's fused qkv (CaiT has one too, so
# it is looked at last).
FAMILY_SIGNATURES = {
    "swin": ("layers.0.blocks.0.attn.relative_position_bias_table",),
    "cait": ("blocks.0.attn.proj_l.weight", "blocks_token_only.0.attn.q.weight"),
    "vit": ("blocks.0.attn.qkv.weight",),
}


def checkpoint_family(state_dict):
    """The model family a timm state dict belongs to ("vit", "cait", "swin"), or None; with the
    tensor that gave it away."""
    for family, keys in FAMILY_SIGNATURES.items():  # cait before vit: both have blocks.*
        for key in keys:
            if key in state_dict:
                return family, key
    return None, None


# === Strict assignment ===
class WeightMap:
    """Collects (Keras variable <- timm tensors) assignments, then checks and applies them."""

    def __init__(self, model, state_dict, deferred=None):
        """`deferred`: the `_keras_internals.DeferredVariables` of a `model` built without
        initial values (see `from_timm`); each of its variables is then initialised from its
        array as soon as the converter sets it (such a model is thrown away if the conversion
        fails, so nothing half-written is ever seen), and each converted array (e.g. a
        transposed kernel) is freed before the next is made. Without it, `finish` assigns every
        value after the checks, and `model` is untouched if they fail."""
        self.model = model
        self.state_dict = state_dict
        self.deferred = deferred
        self._used = set()
        self._assigned = {}
        self.sources = {}  # variable path -> timm key: the converter's name map
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

    def set(self, variable, value, fresh=False):
        """Assigns `value` (a numpy array, or None after a missing `get`) to `variable`.

        `fresh`: nothing else holds `value` (the converter made it), so the variable may take it
        as its storage; otherwise it gets a copy (a caller's state dict is never aliased)."""
        path = variable.path
        if path in self._assigned:
            self._errors.append(f"assigned twice: {path}")
            return
        if value is not None and tuple(value.shape) != tuple(variable.shape):
            self._errors.append(
                f"shape mismatch for {path}: model {tuple(variable.shape)}, checkpoint "
                f"{tuple(value.shape)}"
            )
            value = None
        if value is not None and self.deferred is not None and self.deferred.variables:
            _keras_internals.give_values(
                self.deferred, [(variable, _owned(variable, value, fresh))], complete=False
            )
            value = fresh = None  # written: nothing kept
        self._assigned[path] = (variable, value, fresh)

    def copy(self, variable, key, transform=None):
        """`variable <- transform(state_dict[key])`; records `key` as the variable's source."""
        self.sources.setdefault(variable.path, key)
        source = self.get(key)
        value = source
        if source is not None and transform is not None:
            value = transform(source)
        fresh = value is not source and not np.may_share_memory(value, source)
        self.set(variable, value, fresh)

    def finish(self):
        """Raises `ConversionError` listing every problem, else writes all values to the model
        (those not written yet: see `deferred`) and returns it."""
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
        assigned, self._assigned = self._assigned, {}

        def values():  # each array dropped once written
            while assigned:
                variable, value, fresh = assigned.pop(next(iter(assigned)))
                if value is not None:
                    yield variable, _owned(variable, value, fresh)

        _keras_internals.give_values(
            self.deferred or _keras_internals.DeferredVariables(), values()
        )
        return self.model


def _owned(variable, value, fresh):
    """`value` in the variable's dtype, as an array no caller holds (a copy unless `fresh`)."""
    return value.astype(variable.dtype, copy=not fresh)


# === Copy helpers shared by the families ===
def copy_dense(weight_map, dense, prefix):
    """torch Linear `prefix.{weight,bias}` -> Keras Dense (bias only if the layer has one)."""
    weight_map.copy(dense.kernel, f"{prefix}.weight", linear_kernel)
    if dense.use_bias:
        weight_map.copy(dense.bias, f"{prefix}.bias")


def copy_layer_norm(weight_map, norm, prefix):
    """torch LayerNorm `prefix.{weight,bias}` -> Keras LayerNormalization gamma/beta."""
    weight_map.copy(norm.gamma, f"{prefix}.weight")
    weight_map.copy(norm.beta, f"{prefix}.bias")


def copy_mlp(weight_map, mlp, prefix):
    """timm's `Mlp` `prefix.fc{1,2}` -> our `Mlp`."""
    copy_dense(weight_map, mlp.fc1, f"{prefix}.fc1")
    copy_dense(weight_map, mlp.fc2, f"{prefix}.fc2")


def copy_patch_embed(weight_map, patch_embed, prefix="patch_embed"):
    """timm's `PatchEmbed` (conv `proj`, optional `norm`) -> our `PatchEmbedding`."""
    weight_map.copy(patch_embed.proj.kernel, f"{prefix}.proj.weight", conv_kernel)
    weight_map.copy(patch_embed.proj.bias, f"{prefix}.proj.bias")
    if patch_embed.norm is not None:
        copy_layer_norm(weight_map, patch_embed.norm, f"{prefix}.norm")


def copy_block(weight_map, block, prefix, attention_names):
    """One pre-norm block: norms, the attention's Dense layers named `attention_names`, the MLP
    and, when the block has LayerScale, `gamma_1` / `gamma_2` (timm's names everywhere)."""
    copy_layer_norm(weight_map, block.norm1, f"{prefix}.norm1")
    for name in attention_names:
        copy_dense(weight_map, getattr(block.attn, name), f"{prefix}.attn.{name}")
    copy_layer_norm(weight_map, block.norm2, f"{prefix}.norm2")
    copy_mlp(weight_map, block.mlp, f"{prefix}.mlp")
    for name in ("gamma_1", "gamma_2"):
        layer_scale = getattr(block, name, None)
        if layer_scale is not None:
            weight_map.copy(layer_scale.gamma, f"{prefix}.{name}")


def copy_norm_and_head(weight_map, model, head="head"):
    """Final norm and (if the model has one) the classification head, timm's `head` name."""
    copy_layer_norm(weight_map, model.get_layer("norm"), "norm")
    if model.num_classes:
        copy_dense(weight_map, model.get_layer("head"), head)


# === Registry of the family converters ===
_CONVERTERS = {}


def register_converter(family, converter):
    """Registers `converter(weight_map, model)`, which fills a WeightMap for `family`'s models."""
    if family in _CONVERTERS and _CONVERTERS[family] is not converter:
        raise ValueError(f"A converter for family {family!r} is already registered.")
    _CONVERTERS[family] = converter


def converter_for(family):
    """The converter registered for `family`; a clear error if there is none."""
    if family not in _CONVERTERS:
        raise ValueError(
            f"No timm converter for model family {family!r}; registered: {sorted(_CONVERTERS)}."
        )
    return _CONVERTERS[family]


def infer_num_classes(state_dict):
    """Head size from `head.weight` (timm's name), 0 if the checkpoint has no head."""
    head = state_dict.get("head.weight", state_dict.get("head.fc.weight"))
    return 0 if head is None else int(head.shape[0])
