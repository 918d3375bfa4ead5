"""Feature taps: the logits and the outputs of named layers of any functional Keras model, from
ONE forward pass, each laid out as a (B, h, w, C) map (SPEC.md 1 and 2.1).

Our backbones expose their units through `forward_intermediates`; any other functional or
Sequential model (a `keras.applications` CNN, a keras-hub backbone, a user's own graph) exposes
its layers by name. `FeatureTap(model, layer_names)` builds, once, a functional model sharing
every layer and weight with `model` whose outputs are the model's first output (the logits) and
the named layers' outputs; `tap(images, training)` runs it and returns `(logits, maps)`, the
same contract as `forward_intermediates`, so the Distiller and the analysis treat both alike.

How a layer's output becomes a (B, h, w, C) map (`MapLayout`, found at construction):
- rank 4: a map. (B, H, W, C) unless the layer, or else the model, is `channels_first` (the
  `data_format` of the layer, else of the model's first layer that has one, else
  `keras.config.image_data_format()`); (B, C, H, W) maps are transposed to channels-last.
- rank 3: a token sequence (B, N, C). Its grid is the LARGEST grid (h, w) with the model's
  input aspect ratio (h * W_in == w * H_in) that fits in N tokens, with a whole number of input
  pixels per cell (H_in % h == 0 and W_in % w == 0); the N - h*w tokens left over are prefix
  tokens (class, distillation, register tokens), which timm and keras-hub place FIRST, and are
  dropped; the rest is laid out row-major. Largest-grid is unambiguous as long as there are
  fewer prefix tokens than one more ring of cells would hold (2h + 1 for a square grid: 29 at
  14x14). A sequence of fewer than 2 grid cells, or whose grid the rule cannot find (an unknown
  input size, a count that no grid of the input's aspect fits), is refused.
- any other rank (a pooled (B, C) vector, a 5-D video tensor): refused, "no spatial grid".

Every refusal is a ValueError at construction that names the layer and lists the model's layers
with a spatial output (the first 20, and how many there are).
"""

import dataclasses
import math

import keras
from keras import ops

__all__ = ["FeatureTap", "MapLayout", "check_functional", "spatial_layer_names"]

LAYOUTS = ("channels_last", "channels_first", "tokens")
# Separates the layers of a path into nested models: "backbone/block_3".
PATH_SEPARATOR = "/"
# How many layer names an error lists before "... (N in all)".
LISTED_NAMES = 20


# === Layouts ===
@dataclasses.dataclass(frozen=True)
class MapLayout:
    """How one layer's output is turned into a (B, h, w, C) map.

    Attributes:
        layout: "channels_last" (B, h, w, C), "channels_first" (B, C, h, w) or "tokens"
            (B, prefix_tokens + h * w, C).
        grid: (h, w) of the map.
        channels: C.
        prefix_tokens: leading tokens dropped from a token sequence (0 for maps).
    """

    layout: str
    grid: tuple
    channels: int
    prefix_tokens: int = 0

    @property
    def map_shape(self):
        """(None, h, w, C): the static shape of the map `to_map` returns."""
        return (None,) + tuple(self.grid) + (self.channels,)

    def to_map(self, x):
        """`x` (this layout) as a channels-last (B, h, w, C) map, in `x`'s dtype."""
        if self.layout == "channels_first":
            return ops.transpose(x, (0, 2, 3, 1))
        if self.layout == "tokens":
            if self.prefix_tokens:
                x = x[:, self.prefix_tokens:, :]
            return ops.reshape(x, (-1,) + tuple(self.grid) + (self.channels,))
        return x


def token_grid(num_tokens, image_size):
    """(h, w, prefix_tokens) of a (B, N, C) token sequence by the module's rule, or None.

    Args:
        num_tokens: N.
        image_size: the model's input (H_in, W_in).
    """
    height, width = (int(v) for v in image_size)
    divisor = math.gcd(height, width)
    aspect_h, aspect_w = height // divisor, width // divisor
    # Cells of the grid k * (aspect_h, aspect_w): the largest k whose grid fits in N tokens.
    scale = math.isqrt(num_tokens // (aspect_h * aspect_w))
    if scale < 1:
        return None
    grid_h, grid_w = scale * aspect_h, scale * aspect_w
    if grid_h * grid_w < 2 or height % grid_h or width % grid_w:
        return None
    return grid_h, grid_w, num_tokens - grid_h * grid_w


def model_data_format(model):
    """The image layout of `model`: the `data_format` of its first layer that has one, else
    Keras' global `image_data_format()`."""
    for layer in _flat_layers(model):
        data_format = getattr(layer, "data_format", None)
        if data_format in ("channels_last", "channels_first"):
            return data_format
    return keras.config.image_data_format()


def model_image_size(model, data_format=None):
    """The input (H, W) of a functional image model, or None when not static."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        return None
    data_format = data_format or model_data_format(model)
    shape = tuple(inputs[0].shape)
    size = shape[2:4] if data_format == "channels_first" else shape[1:3]
    return None if None in size else tuple(int(v) for v in size)


def infer_layout(shape, data_format, image_size):
    """The `MapLayout` of an output of static `shape`, or a reason (str) why there is none."""
    shape = tuple(shape)
    if len(shape) == 4:
        if data_format == "channels_first":
            channels, grid = shape[1], shape[2:4]
        else:
            grid, channels = shape[1:3], shape[3]
        if None in grid or channels is None:
            return (f"its spatial size {shape} is not static; build the model with a fixed "
                    "input shape")
        return MapLayout(data_format, tuple(int(g) for g in grid), int(channels))
    if len(shape) == 3:
        if shape[1] is None or shape[2] is None:
            return f"its token count {shape} is not static; build the model with a fixed input"
        if image_size is None:
            return ("it is a token sequence and the model's input size, which gives the grid, "
                    "is not static")
        found = token_grid(int(shape[1]), image_size)
        if found is None:
            return (f"it is a sequence of {shape[1]} tokens and no grid with the input's aspect "
                    f"{image_size[0]}x{image_size[1]} (and whole pixels per cell, at least 2 "
                    "cells) fits in it")
        grid_h, grid_w, prefix = found
        return MapLayout("tokens", (grid_h, grid_w), int(shape[2]), prefix)
    return f"it has rank {len(shape)} ({shape}), no spatial grid"


# === Layers ===
def _flat_layers(model):
    return list(getattr(model, "layers", None) or [])


def _single_output(layer):
    """The layer's only symbolic output, or None (several outputs, or called several times)."""
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    return output if isinstance(output, keras.KerasTensor) else None


def spatial_layer_names(model):
    """Names of `model`'s layers whose output the tap can lay out as a map, in graph order."""
    data_format = model_data_format(model)
    image_size = model_image_size(model, data_format)
    names = []
    for layer in _flat_layers(model):
        output = _single_output(layer)
        if output is not None and isinstance(
            infer_layout(output.shape, data_format, image_size), MapLayout
        ):
            names.append(layer.name)
    return names


def _listing(model):
    names = spatial_layer_names(model)
    shown = ", ".join(names[:LISTED_NAMES])
    more = f", ... ({len(names)} in all)" if len(names) > LISTED_NAMES else f" ({len(names)})"
    nested = [layer.name for layer in _flat_layers(model)
              if isinstance(layer, keras.Model) and getattr(layer, "inputs", None)]
    inside = (f"; its layers inside nested models are named by path, e.g. "
              f"'{nested[0]}/<layer>' (nested: {', '.join(nested)})" if nested else "")
    return f"its layers with a spatial output are: {shown}{more}{inside}"


def check_functional(model, role, layer_names):
    """A clear ValueError unless `model` is a functional or Sequential model with one input."""
    try:
        inputs = model.inputs if isinstance(model, keras.Model) else None
    except (AttributeError, ValueError):  # a Sequential model not built yet has none
        inputs = None
    if inputs:
        return
    kind = type(model).__name__
    raise ValueError(
        f"Layer names ({', '.join(map(repr, layer_names))}) need a functional or "
        f"Sequential {role}; {getattr(model, 'name', model)!r} is a {kind} without symbolic "
        "inputs (a subclassed model, or a Sequential one without keras.Input). Build it "
        "functionally, or give its layers as unit indices of a backbone with "
        "`forward_intermediates`."
    )


# === Nested models ===
def _nested_tap_model(model, layer_names):
    """The tap model when names reach into nested functional models ("backbone/block_3", e.g. a
    keras-hub task model's backbone): `model`'s graph is replayed on new inputs with the SAME
    layers (`keras.models.clone_model` with an identity `clone_function`, so every weight is
    shared), each nested model being called through a tap of its own whose extra outputs are
    collected on the way."""
    wanted = {}
    for position, name in enumerate(layer_names):
        head, _, rest = name.partition(PATH_SEPARATOR)
        wanted.setdefault(head, []).append((position, rest))
    collected = {}

    def call(layer, *args, **kwargs):
        requests = wanted.get(layer.name, [])
        inner = [(position, rest) for position, rest in requests if rest]
        if not inner:
            outputs = layer(*args, **kwargs)
        else:
            # The nested model's own tap: its output and the inner layers', one call.
            results = FeatureTap(layer, [rest for _, rest in inner]).model(*args, **kwargs)
            outputs = results[0]
            for (position, _), tensor in zip(inner, results[1:]):
                collected[position] = tensor
        for position, rest in requests:
            if not rest:
                collected[position] = outputs
        return outputs

    replay = keras.models.clone_model(model, clone_function=lambda layer: layer,
                                      call_function=call)
    return keras.Model(replay.inputs[0] if len(replay.inputs) == 1 else replay.inputs,
                       [replay.outputs[0]] + [collected[i] for i in range(len(layer_names))],
                       name=f"{model.name}_taps")


# === The tap ===
class FeatureTap:
    """The logits and named layers' maps of a functional model, from one forward pass.

    Args:
        model: a functional or Sequential `keras.Model` with one image input; its first output
            is taken as the logits.
        layer_names: names of layers of `model` (in any order; maps come back in this order);
            a path "outer/inner" names a layer inside a nested functional model (a keras-hub
            task model's `backbone`, a backbone used as a layer of a classifier).
        role: "teacher", "student" or "model", for the error messages.

    Attributes:
        layouts: one `MapLayout` per name.
        model: the multi-output functional model (shares every layer and weight with `model`;
            not a sublayer of anything, so nothing is saved twice).
    """

    def __init__(self, model, layer_names, role="model"):
        layer_names = list(layer_names)
        check_functional(model, role, layer_names)
        self.source = model
        self.layer_names = layer_names
        self.role = role
        data_format = model_data_format(model)
        image_size = model_image_size(model, data_format)
        tensors, layouts = [], []
        for name in layer_names:
            tensor, layout = self._resolve(model, name, data_format, image_size)
            tensors.append(tensor)
            layouts.append(layout)
        self.layouts = layouts
        if any(PATH_SEPARATOR in name for name in layer_names):
            self.model = _nested_tap_model(model, layer_names)
        else:
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            self.model = keras.Model(
                inputs=inputs, outputs=[model.outputs[0]] + tensors, name=f"{model.name}_taps"
            )

    def _resolve(self, model, name, data_format, image_size):
        owner, path = model, name.split(PATH_SEPARATOR)
        for step, part in enumerate(path):
            try:
                layer = owner.get_layer(name=part)
            except (ValueError, AttributeError):
                where = "" if not step else f" (in {PATH_SEPARATOR.join(path[:step])!r})"
                raise ValueError(
                    f"The {self.role} {model.name!r} has no layer named {name!r}{where}; "
                    f"{_listing(owner)}."
                ) from None
            if step < len(path) - 1:
                if not (isinstance(layer, keras.Model) and getattr(layer, "inputs", None)
                        and len(layer.outputs) == 1):
                    raise ValueError(
                        f"Layer path {name!r} of the {self.role} {model.name!r} goes through "
                        f"{part!r}, which is not a functional model with one output."
                    )
                owner = layer
        output = _single_output(layer)
        if output is None:
            raise ValueError(
                f"Layer {name!r} of the {self.role} {model.name!r} has no single output (it has "
                f"several, or is called more than once); {_listing(owner)}."
            )
        own_format = getattr(layer, "data_format", None)
        layout = infer_layout(
            output.shape, own_format if own_format in LAYOUTS[:2] else data_format, image_size
        )
        if not isinstance(layout, MapLayout):
            raise ValueError(
                f"Layer {name!r} of the {self.role} {model.name!r} cannot be used as a feature "
                f"map: {layout}; {_listing(owner)}."
            )
        return output, layout

    @property
    def map_shapes(self):
        """(None, h, w, C) of each map, in the order of `layer_names`."""
        return [layout.map_shape for layout in self.layouts]

    def __call__(self, images, training=False):
        """Runs the model once; returns `(logits, maps)`, maps (B, h, w, C) in name order."""
        outputs = self.model(images, training=training)
        logits, raws = outputs[0], outputs[1:]
        return logits, [layout.to_map(raw) for layout, raw in zip(self.layouts, raws)]
