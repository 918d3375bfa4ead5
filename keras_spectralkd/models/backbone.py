"""The backbone protocol shared by every model family.

SpectralKD needs, besides a model's logits, the spatial feature map of each of its
"units" (transformer blocks for ViT/DeiT and CaiT, stages for Swin; SPEC.md section 1).
Every backbone in this package is a functional `keras.Model` whose output is the logits and
which also offers, named after timm's method:

    logits, maps = model.forward_intermediates(images, indices=None, training=False)

- `images`: (B, H, W, 3), channels-last.
- `indices`: `None` (every unit), an int `n` (the last `n` units, as in timm) or a sequence of
  0-based unit indices; `maps` come back in that order.
- each map is (B, h, w, C), channels-last, with prefix tokens (class/distillation token)
  removed and tokens laid out row-major on the (h, w) grid.

One call runs the network once: logits and maps come from the same forward pass.

`feature_info` describes the units without running anything (used by the Distiller to validate
layer pairs at construction time, and by the analysis): a list of dicts with keys
`"module"` (layer name), `"num_chs"` (C), `"reduction"` (input pixels per map cell) and
`"grid"` ((h, w) at the model's image size).

Any object with `forward_intermediates` (and ideally `feature_info`) works with the Distiller
and the analysis; subclassing `Backbone` is the easy way to get both.
"""

import inspect

import keras
from keras import ops


def normalize_indices(indices, num_units):
    """Turns `None`, an int `n` (last n units) or a sequence into a list of unit indices."""
    if indices is None:
        return list(range(num_units))
    if isinstance(indices, bool):
        raise TypeError(f"`indices` must be None, an int or a sequence of ints; got {indices!r}.")
    if isinstance(indices, int):
        if not 0 < indices <= num_units:
            raise ValueError(
                f"`indices`={indices} asks for the last {indices} units, but the model has "
                f"{num_units} units; expected 1..{num_units}."
            )
        return list(range(num_units - indices, num_units))
    result = []
    for index in indices:
        index = int(index)
        if not 0 <= index < num_units:
            raise ValueError(
                f"Unit index {index} is out of range: the model has {num_units} units "
                f"(valid indices 0..{num_units - 1}); got indices={list(indices)}."
            )
        result.append(index)
    return result


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class Backbone(keras.Model):
    """Base class of the functional backbones: logits out, every unit's feature map on demand.

    Subclasses build their graph in `__init__` and finish with

        super().__init__(inputs=images, outputs=logits, unit_outputs=[...], feature_info=[...])

    where `unit_outputs` are the symbolic outputs of the layers that end each unit (the raw
    block/stage outputs, e.g. (B, 1 + N, C) tokens for ViT) and `feature_info` describes the maps.
    They override `unit_to_map(raw, index)` to turn a raw unit output into a (B, h, w, C) map
    and keep their constructor arguments with `self.store_arguments(locals())`, which
    `get_config` returns (`from_config` calls `cls(**config)`, which rebuilds the graph: keras-hub's pattern).
    """

    def __init__(self, inputs, outputs, unit_outputs=(), feature_info=(), **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        if len(unit_outputs) != len(feature_info):
            raise ValueError(
                f"Got {len(unit_outputs)} unit outputs but {len(feature_info)} feature_info "
                "entries; they must match one to one."
            )
        # Not tracked as a sublayer (object.__setattr__ bypasses Keras' tracking): the
        # feature model shares every layer and weight with `self`; tracking it would duplicate
        # the weights in saved files.
        object.__setattr__(self, "_unit_outputs", list(unit_outputs))
        object.__setattr__(self, "_feature_model", None)
        object.__setattr__(self, "_feature_info", [dict(info) for info in feature_info])

    # === Protocol ===
    @property
    def feature_info(self):
        """One dict per unit: `module`, `num_chs`, `reduction`, `grid` ((h, w))."""
        return [dict(info) for info in self._feature_info]

    @property
    def num_units(self):
        return len(self._feature_info)

    def unit_to_map(self, raw, index):
        """Turns unit `index`'s raw output into a (B, h, w, C) map. Identity by default."""
        return raw

    def no_weight_decay(self):
        """Paths of the weights that must not be decayed besides the 1-D ones (timm's pattern).

        timm's optimizer factory exempts every 1-D parameter (biases, norms, LayerScale) and the
        names a model's `no_weight_decay()` returns (position tables, class tokens, Swin's
        relative-position tables). Subclasses return the `variable.path`s of the latter, taken
        from the layer objects, so that renaming a layer cannot silently change the optimiser.
        """
        return set()

    def forward_intermediates(self, images, indices=None, training=False):
        """Runs the model once; returns `(logits, maps)`, maps in the order of `indices`.

        Args:
            images: (B, H, W, 3) float tensor.
            indices: None (all units), int n (the last n) or a sequence of 0-based indices.
            training: forwarded to the layers (dropout, stochastic depth).
        Returns:
            logits (B, num_classes) and a list of (B, h, w, C) maps.
        """
        wanted = normalize_indices(indices, self.num_units)
        if self._feature_model is None:
            inputs = self.inputs[0] if len(self.inputs) == 1 else self.inputs
            model = keras.Model(
                inputs=inputs,
                outputs=[self.outputs[0]] + self._unit_outputs,
                name=f"{self.name}_features",
            )
            object.__setattr__(self, "_feature_model", model)
        outputs = self._feature_model(images, training=training)
        logits, raws = outputs[0], outputs[1:]
        maps = [self.unit_to_map(raws[i], i) for i in wanted]
        return logits, maps

    # === Config ===
    def _constructor_arguments(self):
        """Names of the subclass' constructor arguments, less those Keras' `Model` keeps."""
        parameters = inspect.signature(type(self).__init__).parameters
        return [
            argument
            for argument, parameter in parameters.items()
            if argument not in ("self", "name", "dtype", "trainable")
            and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
        ]

    def store_arguments(self, values):
        """Keeps every constructor argument as `self.<argument>`, taken from `values` (the
        constructor's `locals()` after validation), for `get_config`."""
        for argument in self._constructor_arguments():
            setattr(self, argument, values[argument])

    def get_config(self):
        """Every constructor argument, read from the attribute of the same name.

        Subclasses store each argument of their `__init__` with `store_arguments(locals())`
        (after validation), so the config can never miss one; `name`, `dtype` and `trainable` come
        from the model itself.
        """
        config = {"name": self.name, "trainable": self.trainable}
        if self.dtype_policy is not None:
            config["dtype"] = keras.dtype_policies.serialize(self.dtype_policy)
        for argument in self._constructor_arguments():
            config[argument] = getattr(self, argument)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "dtype" in config and isinstance(config["dtype"], dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


def tokens_to_grid(tokens, grid, num_prefix_tokens=0):
    """(B, prefix + h*w, C) tokens -> (B, h, w, C), dropping the prefix tokens (row-major)."""
    height, width = grid
    if num_prefix_tokens:
        tokens = tokens[:, num_prefix_tokens:, :]
    channels = tokens.shape[-1]
    return ops.reshape(tokens, (-1, height, width, channels))
