"""Layers shared by the ViT/DeiT, CaiT and Swin families (timm's semantics, Keras layouts).

Every layer creates its sublayers in `__init__`, passes `dtype=self.dtype_policy` down (so mixed
precision works), uses `keras.ops` only and returns its constructor arguments in `get_config`.
"""

import math

import keras
import numpy as np
from keras import layers, ops

LAYER_NORM_EPSILON = 1e-6  # timm's ViT/CaiT use 1e-6; Swin uses 1e-5 (passed explicitly).
TIMM_INIT_STD = 0.02  # timm's std for Linear weights, position tables and CaiT's class token.


# === timm's initialisers ===
@keras.saving.register_keras_serializable(package="keras_spectralkd")
class TimmTruncatedNormal(keras.initializers.RandomNormal):
    """timm's `trunc_normal_(mean, std, a, b)`: a normal cut at ABSOLUTE bounds `[a, b]`.

    Keras' `TruncatedNormal(stddev=s)` cuts at +-2 * s (its std is 0.88 s); timm cuts at the
    absolute values a=-2, b=2, so with std 0.02 (100 standard deviations) it is a plain normal of
    std 0.02. Sampled as timm does: a uniform draw between the normal CDF at the two bounds,
    mapped back through the inverse CDF (`erfinv`), then clipped to the bounds.

    Args:
        mean: mean of the normal before truncation.
        stddev: its standard deviation.
        minval: lower bound `a` (absolute, not in standard deviations).
        maxval: upper bound `b`.
        seed: as Keras' random initializers (None: a fresh seed per instance).
    """

    def __init__(self, mean=0.0, stddev=TIMM_INIT_STD, minval=-2.0, maxval=2.0, seed=None):
        if not minval < maxval:
            raise ValueError(
                f"TimmTruncatedNormal needs minval < maxval; got {minval!r}, {maxval!r}."
            )
        if not stddev > 0:
            raise ValueError(f"TimmTruncatedNormal needs stddev > 0; got {stddev!r}.")
        super().__init__(mean=mean, stddev=stddev, seed=seed)
        self.minval = float(minval)
        self.maxval = float(maxval)

    def __call__(self, shape, dtype=None):
        def normal_cdf(value):
            return 0.5 * (1.0 + math.erf((value - self.mean) / (self.stddev * math.sqrt(2.0))))

        low, high = 2 * normal_cdf(self.minval) - 1, 2 * normal_cdf(self.maxval) - 1
        uniform = keras.random.uniform(shape, minval=low, maxval=high, seed=self.seed)
        # A float32 draw of exactly -1 (about one in 2**23 values) has erfinv -inf, which the
        # clip below would turn into the bound itself, 100 std away for std 0.02; kept inside
        # (-1, 1), the draw lands at most ~5.3 std out, as a float32 normal sample would.
        inside = 1.0 - 2.0**-23
        uniform = ops.clip(uniform, max(low, -inside), min(high, inside))
        values = ops.erfinv(uniform) * (self.stddev * math.sqrt(2.0)) + self.mean
        return ops.cast(ops.clip(values, self.minval, self.maxval), dtype or "float32")

    def get_config(self):
        config = super().get_config()
        config.update(minval=self.minval, maxval=self.maxval)
        return config


def timm_dense_initializer():
    """timm's Linear init (`trunc_normal_(std=0.02)`), a fresh unseeded instance per layer."""
    return TimmTruncatedNormal(stddev=TIMM_INIT_STD)


def timm_dense(units, name, dtype=None, use_bias=True):
    """A Dense layer initialised as timm's Linear: trunc-normal(0.02) kernel, zero bias."""
    return layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=timm_dense_initializer(),
        bias_initializer="zeros",
        dtype=dtype,
        name=name,
    )


def torch_default_bound(fan_in):
    """torch's default Linear/Conv init bound, 1 / sqrt(fan_in), for weights and biases alike.

    (`kaiming_uniform_(a=sqrt(5))` for the weight and `uniform(-bound, bound)` for the bias,
    which timm keeps for the patch-embedding conv of ViT, CaiT and Swin: its init functions only
    touch Linear and LayerNorm modules.)
    """
    return 1.0 / math.sqrt(fan_in)


def _fresh(initializer):
    """A copy of `initializer`, so two layers never share one (seeded) instance."""
    return initializer.__class__.from_config(initializer.get_config())


def linear_drop_path_rates(drop_path_rate, depth):
    """timm's stochastic-depth schedule: rates rising linearly from 0 to `drop_path_rate`."""
    if depth <= 1:
        return [0.0] * depth
    return [drop_path_rate * i / (depth - 1) for i in range(depth)]


# === Argument checks shared by the families ===
def check_positive_int(**values):
    """Raises a clear ValueError unless every keyword value is an int > 0 (bools refused)."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{key}` must be a positive int; got {value!r}.")


def check_heads_divide(dim, num_heads, what="embed_dim"):
    """Raises unless `num_heads` is positive and divides the width `dim` (`what` names it)."""
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"`num_heads` must be a positive int; got {num_heads!r}.")
    if dim % num_heads:
        raise ValueError(f"{what}={dim} must be divisible by num_heads={num_heads}.")


def check_block_arguments(mlp_ratio, num_classes, drop_path_rate):
    """The checks every family makes of the block and head arguments; returns num_classes."""
    if not mlp_ratio > 0:
        raise ValueError(f"`mlp_ratio` must be > 0; got {mlp_ratio!r}.")
    num_classes = 0 if num_classes is None else int(num_classes)
    if num_classes < 0:
        raise ValueError(f"`num_classes` must be an int >= 0 (0: no head); got {num_classes!r}.")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"`drop_path_rate` must be in [0, 1); got {drop_path_rate!r}.")
    return num_classes


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class DropPath(layers.Layer):
    """Stochastic depth: drops the whole residual branch per sample with probability `rate`.

    As timm's `DropPath(scale_by_keep=True)`: kept samples are scaled by 1 / (1 - rate) in
    training; the identity in inference.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1); got {rate!r}.")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, x, training=False):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        noise = keras.random.uniform(shape, seed=self.seed_generator)
        mask = ops.cast(noise < keep, x.dtype)
        return x * mask / ops.cast(keep, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class LayerScale(layers.Layer):
    """Per-channel learnable scale `gamma * x` (CaiT; timm's `gamma_1`/`gamma_2`)."""

    def __init__(self, init_value=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value),
        )

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(init_value=self.init_value)
        return config


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class Mlp(layers.Layer):
    """timm's `Mlp`: Dense(hidden) -> exact (erf) GELU -> dropout -> Dense(out) -> dropout.

    Args:
        hidden_dim: width of the hidden layer.
        output_dim: output width; None keeps the input width.
        dropout_rate: dropout after the activation and after `fc2`.
        kernel_initializer: initializer of both Dense kernels; None (the default) is timm's
            (`timm_dense_initializer`). Biases start at zero, as timm's.
    Shapes: (..., C) -> (..., output_dim or C).
    """

    def __init__(
        self,
        hidden_dim,
        output_dim=None,
        dropout_rate=0.0,
        kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = output_dim
        self.dropout_rate = float(dropout_rate)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or timm_dense_initializer()
        )
        self.fc1 = layers.Dense(
            self.hidden_dim,
            kernel_initializer=_fresh(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="fc1",
        )
        self.dropout = layers.Dropout(self.dropout_rate, dtype=self.dtype_policy, name="drop")

    def build(self, input_shape):
        output_dim = self.output_dim or input_shape[-1]
        self.fc2 = layers.Dense(
            output_dim,
            kernel_initializer=_fresh(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="fc2",
        )
        self.fc1.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.hidden_dim,))

    def call(self, x, training=False):
        x = self.fc1(x)
        x = ops.gelu(x, approximate=False)
        x = self.dropout(x, training=training)
        x = self.fc2(x)
        return self.dropout(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            output_dim=self.output_dim,
            dropout_rate=self.dropout_rate,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class PatchEmbedding(layers.Layer):
    """Non-overlapping patch embedding: Conv2D(kernel = stride = patch) -> (B, h, w, C).

    Returns the channels-last grid; ViT/CaiT flatten it to tokens, Swin keeps it. An optional
    LayerNorm (Swin's `patch_embed.norm`) follows when `norm_epsilon` is given.

    The conv starts as timm's `PatchEmbed` does: timm's init functions skip convs, so it keeps
    torch's default, kernel and bias uniform in +-1/sqrt(fan_in) (fan_in = 3 * patch**2).
    """

    def __init__(self, patch_size, embed_dim, norm_epsilon=None, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.embed_dim = int(embed_dim)
        self.norm_epsilon = norm_epsilon
        self.proj = layers.Conv2D(
            self.embed_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            # torch's kaiming_uniform(a=sqrt(5)): uniform, variance 1 / (3 fan_in).
            kernel_initializer=keras.initializers.VarianceScaling(
                1.0 / 3.0, mode="fan_in", distribution="uniform"
            ),
            dtype=self.dtype_policy,
            name="proj",
        )
        self.norm = (
            layers.LayerNormalization(epsilon=norm_epsilon, dtype=self.dtype_policy, name="norm")
            if norm_epsilon is not None
            else None
        )

    def build(self, input_shape):
        # torch's default conv bias: uniform in +-1/sqrt(fan_in); fan_in needs the input channels.
        bound = torch_default_bound(input_shape[-1] * self.patch_size**2)
        self.proj.bias_initializer = keras.initializers.RandomUniform(-bound, bound)
        self.proj.build(input_shape)
        if self.norm is not None:
            self.norm.build((None, None, None, self.embed_dim))

    def call(self, images):
        x = self.proj(images)
        if self.norm is not None:
            x = self.norm(x)
        return x

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[0], input_shape[1], input_shape[2]
        grid_h = None if height is None else height // self.patch_size
        grid_w = None if width is None else width // self.patch_size
        return (batch, grid_h, grid_w, self.embed_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            patch_size=self.patch_size, embed_dim=self.embed_dim, norm_epsilon=self.norm_epsilon
        )
        return config


def _is_int(value):
    """An integral number that is not a bool (numpy ints count; 224.0 does not)."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_image_size(image_size, multiple, what):
    """Raises a clear ValueError unless `image_size` is a positive multiple of `multiple`."""
    sides = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size,) * 2
    if len(sides) != 2 or not all(_is_int(side) for side in sides):
        raise ValueError(
            f"image_size={image_size!r} must be an int or a (height, width) pair of ints, each "
            f"a positive multiple of {multiple} ({what})."
        )
    sizes = tuple(int(side) for side in sides)
    for size in sizes:
        if size <= 0 or size % multiple:
            raise ValueError(
                f"image_size={image_size!r} cannot be taken by this model: each side must be a "
                f"positive multiple of {multiple} ({what})."
            )
    return sizes


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class ClassToken(layers.Layer):
    """A learned class token, broadcast over the batch: (B, N, C) -> (B, 1, C).

    The input only supplies the batch size (and C, at build time); callers concatenate the
    token in front of the patch tokens (ViT) or feed it to class-attention blocks (CaiT).
    The variable is timm's `cls_token`, shape (1, 1, C).

    Args:
        initializer: initializer of the token (timm: normal(1e-6) for ViT, trunc-normal(0.02)
            for CaiT).
    """

    def __init__(self, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token", shape=(1, 1, input_shape[-1]), initializer=self.initializer
        )

    def call(self, x):
        token = ops.cast(self.token, self.compute_dtype)
        return ops.broadcast_to(token, (ops.shape(x)[0], 1, ops.shape(token)[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(initializer=keras.initializers.serialize(self.initializer))
        return config


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class PositionEmbedding(layers.Layer):
    """Adds a learned position table to a token sequence: (B, N, C) -> (B, N, C).

    The table is timm's `pos_embed`, shape (1, N, C), with N fixed at build time (no
    interpolation: a model built for one image size only takes that size).
    """

    def __init__(self, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer or timm_dense_initializer())

    def build(self, input_shape):
        if input_shape[1] is None:
            raise ValueError(
                f"PositionEmbedding needs a static token count; got input shape {input_shape}."
            )
        self.embedding = self.add_weight(
            name="embedding",
            shape=(1, input_shape[1], input_shape[2]),
            initializer=self.initializer,
        )

    def call(self, x):
        return x + ops.cast(self.embedding, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(initializer=keras.initializers.serialize(self.initializer))
        return config
