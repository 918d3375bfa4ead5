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

from keras_spectralkd import _keras_internals


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


class ReleasingGraph:
    """Mixin for functional models: each intermediate tensor is dropped once its last consumer
    has run, instead of when the whole graph has (Keras' runner keeps every node's output
    until the end). Under eager execution (the torch backend) this is what keeps a frozen
    teacher's forward from holding all of its block outputs at once (docs/performance.md).
    Traced backends (JAX, TensorFlow) see no difference: XLA frees by liveness anyway.

    Private Keras API (`_keras_internals`): where it is off, Keras' own runner runs, after one
    `KerasPrivateAPIWarning`."""

    def _run_through_graph(self, inputs, operation_fn=lambda op: op, call_fn=None):
        if call_fn is None and _keras_graph_internals_known(self):
            return _run_graph_releasing(self, inputs, operation_fn)
        return super()._run_through_graph(inputs, operation_fn=operation_fn, call_fn=call_fn)


def _keras_graph_internals_known(model):
    """Whether `_run_graph_releasing` may run `model`: the installed Keras is the one it was
    checked against and the private names it reads are there (else one warning, and Keras' own
    runner)."""
    return _keras_internals.private_api_usable(
        "freeing a backbone's intermediate tensors as its graph runs (models.backbone)",
        lambda: _missing_graph_internals(model),
        "Keras' own graph runner keeps every intermediate tensor until the forward ends, which "
        "costs memory on the torch backend",
    )


def _missing_graph_internals(model):
    """What of the private Keras names `_run_graph_releasing` reads `model` lacks, or None."""
    nodes = [node for depth in getattr(model, "_nodes_by_depth", {}).values() for node in depth]
    if not nodes:
        return "Functional._nodes_by_depth"
    if not hasattr(model, "_outputs_struct"):
        return "Functional._outputs_struct"
    fields = ("operation", "is_input", "input_tensors", "outputs", "arguments")
    absent = [name for name in fields if not hasattr(nodes[0], name)]
    if absent:
        return f"the Node fields {absent}"
    if not hasattr(nodes[0].arguments, "fill_in"):
        return "Node.arguments.fill_in"
    return None


def _run_graph_releasing(model, inputs, operation_fn):
    """Keras' `Function._run_through_graph` (keras/src/ops/function.py) for eager calls, plus
    one thing: a tensor is dropped from the table of computed tensors once every
    node that reads it has run (unless it is an output). Private Keras API, used here only:
    `_nodes_by_depth`, `_outputs_struct`, `_get_operation_for_node` and `Node`'s fields."""
    from keras import tree

    table = {id(x): y for x, y in zip(model.inputs, tree.flatten(inputs))}
    nodes = [
        node
        for depth in sorted(model._nodes_by_depth, reverse=True)
        for node in model._nodes_by_depth[depth]
        if node.operation and not node.is_input
    ]
    readers = {}
    for node in nodes:
        for x in node.input_tensors:
            readers[id(x)] = readers.get(id(x), 0) + 1
    outputs = {id(x) for x in model.outputs}
    operation_for = getattr(model, "_get_operation_for_node", lambda node: node.operation)
    for node in nodes:
        if any(id(x) not in table for x in node.input_tensors):
            continue  # not computable from these inputs (as Keras' runner)
        args, kwargs = node.arguments.fill_in(table)
        results = operation_fn(operation_for(node))(*args, **kwargs)
        del args, kwargs
        for x in node.input_tensors:
            readers[id(x)] -= 1
            if not readers[id(x)] and id(x) not in outputs:
                table.pop(id(x), None)
        for x, y in zip(node.outputs, tree.flatten(results)):
            table[id(x)] = y
        del results
    missing = [i for i, x in enumerate(model.outputs) if id(x) not in table]
    if missing:
        raise ValueError(f"Outputs {missing} of {model.name!r} are not connected to its inputs.")
    return tree.pack_sequence_as(model._outputs_struct, [table[id(x)] for x in model.outputs])


class _FeatureModel(ReleasingGraph, keras.Model):
    """A backbone's logits and some of its units' raw outputs (`forward_intermediates`)."""


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class Backbone(ReleasingGraph, keras.Model):
    """Base class of the functional backbones: logits out, every unit's feature map on demand.

    Subclasses build their graph in `__init__` and finish with

        super().__init__(inputs=images, outputs=logits, unit_outputs=[...], feature_info=[...])

    where `unit_outputs` are the symbolic outputs of the layers that end each unit (the raw
    block/stage outputs, e.g. (B, 1 + N, C) tokens for ViT) and `feature_info` describes the maps.
    They override `unit_to_map(raw, index)` to turn a raw unit output into a (B, h, w, C) map
    and keep their constructor arguments with `self.store_arguments(locals())`, which
    `get_config` returns (`from_config` calls `cls(**config)`, which rebuilds the graph:
    keras-hub's pattern).
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
        object.__setattr__(self, "_feature_models", {})
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
        if not wanted:
            return self(images, training=training), []
        units = tuple(sorted(set(wanted)))
        # One feature model per set of units, whose outputs are the logits and those units
        # only: an eager backend (torch) then keeps no other unit's output alive to return it.
        model = self._feature_models.get(units)
        if model is None:
            inputs = self.inputs[0] if len(self.inputs) == 1 else self.inputs
            model = _FeatureModel(
                inputs=inputs,
                outputs=[self.outputs[0]] + [self._unit_outputs[i] for i in units],
                name=f"{self.name}_features",
            )
            self._feature_models[units] = model
        outputs = model(images, training=training)
        logits, raws = outputs[0], dict(zip(units, outputs[1:]))
        del outputs
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
            config["dtype"] = _serialize_policy(self.dtype_policy)
        for argument in self._constructor_arguments():
            config[argument] = getattr(self, argument)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "dtype" in config and isinstance(config["dtype"], dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


def _serialize_policy(policy):
    """`keras.dtype_policies.serialize(policy)`, written out for a plain `DTypePolicy` (the same
    dict): Keras' serializer imports TensorFlow on its first call, whatever the backend (to
    recognise `tf.TensorShape`s), a large import under JAX or torch for nothing here (e.g.
    `Distiller(teacher_dtype=...)` reads the teacher's config)."""
    if type(policy) is keras.DTypePolicy:
        return {"module": "keras", "class_name": "DTypePolicy", "config": policy.get_config(),
                "registered_name": None}
    return keras.dtype_policies.serialize(policy)


def tokens_to_grid(tokens, grid, num_prefix_tokens=0):
    """(B, prefix + h*w, C) tokens -> (B, h, w, C), dropping the prefix tokens (row-major)."""
    height, width = grid
    if num_prefix_tokens:
        tokens = tokens[:, num_prefix_tokens:, :]
    channels = tokens.shape[-1]
    return ops.reshape(tokens, (-1, height, width, channels))
