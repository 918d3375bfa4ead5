"""ViT / DeiT (timm's `VisionTransformer` as used by `deit_*_patch16_224`), channels-last.

Numerically equal to timm given converted weights (`keras_spectralkd.convert.from_timm`):
pre-norm blocks, LayerNorm eps 1e-6, fused qkv with bias, exact GELU, a class token and a
learned position embedding over the 1 + N tokens, final LayerNorm, head on the class token.

Units (SPEC.md section 1): the `depth` blocks; unit i's map is the residual stream after block
i, before the final norm, class token removed, (B, H/p, W/p, C) row-major.
"""

import keras
from keras import layers, ops

from keras_spectralkd.models import registry
from keras_spectralkd.models.backbone import Backbone, tokens_to_grid
from keras_spectralkd.models.layers import (
    LAYER_NORM_EPSILON,
    ClassToken,
    DropPath,
    Mlp,
    PatchEmbedding,
    PositionEmbedding,
    check_image_size,
    linear_drop_path_rates,
    timm_dense_initializer,
)


# === Layers ===
@keras.saving.register_keras_serializable(package="keras_spectralkd")
class MultiHeadSelfAttention(layers.Layer):
    """timm's `Attention`: one fused qkv Dense, scaled dot-product attention, output Dense.

    The qkv output is laid out as timm's: (3, heads, head_dim) along its last axis, so a timm
    `qkv.weight` (3C, C) converts by a plain transpose.

    Args:
        num_heads: number of heads; must divide the input width C.
        qkv_bias: whether the qkv projection has a bias (timm ViT/CaiT: True).
    Shapes: (B, N, C) -> (B, N, C).
    """

    def __init__(self, num_heads, qkv_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.qkv_bias = bool(qkv_bias)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(
                f"Attention width {dim} is not divisible by num_heads={self.num_heads}."
            )
        self.head_dim = dim // self.num_heads
        self.qkv = layers.Dense(
            3 * dim,
            use_bias=self.qkv_bias,
            kernel_initializer=timm_dense_initializer(),
            dtype=self.dtype_policy,
            name="qkv",
        )
        self.proj = layers.Dense(
            dim, kernel_initializer=timm_dense_initializer(), dtype=self.dtype_policy, name="proj"
        )
        self.qkv.build(input_shape)
        self.proj.build(input_shape)

    def call(self, x):
        num_tokens, dim = x.shape[1], x.shape[2]
        qkv = ops.reshape(self.qkv(x), (-1, num_tokens, 3, self.num_heads, self.head_dim))
        # (B, N, heads, head_dim) each: the layout `dot_product_attention` wants, which maps to
        # torch's fused SDPA on the torch backend (what timm itself runs).
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        x = ops.dot_product_attention(query, key, value, scale=self.head_dim**-0.5)
        x = ops.reshape(x, (-1, num_tokens, dim))
        return self.proj(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, qkv_bias=self.qkv_bias)
        return config


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class TransformerBlock(layers.Layer):
    """timm's pre-norm ViT `Block`: x + DropPath(attn(norm1(x))), then the same with the MLP.

    Args:
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / C (hidden width is `int(C * mlp_ratio)`, as timm).
        qkv_bias: bias on the qkv projection.
        drop_path_rate: stochastic-depth rate of both residual branches.
        layer_norm_epsilon: LayerNorm epsilon (1e-6 in timm's ViT).
    Shapes: (B, N, C) -> (B, N, C).
    """

    def __init__(
        self,
        num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.0,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.norm1 = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm1"
        )
        self.attn = MultiHeadSelfAttention(
            self.num_heads, qkv_bias=self.qkv_bias, dtype=self.dtype_policy, name="attn"
        )
        self.norm2 = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm2"
        )
        self.drop_path = DropPath(self.drop_path_rate, dtype=self.dtype_policy, name="drop_path")

    def build(self, input_shape):
        dim = input_shape[-1]
        self.mlp = Mlp(
            int(dim * self.mlp_ratio),
            kernel_initializer=timm_dense_initializer(),
            dtype=self.dtype_policy,
            name="mlp",
        )
        for layer in (self.norm1, self.attn, self.norm2, self.mlp):
            layer.build(input_shape)

    def call(self, x, training=False):
        x = x + self.drop_path(self.attn(self.norm1(x)), training=training)
        x = x + self.drop_path(self.mlp(self.norm2(x), training=training), training=training)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias,
            drop_path_rate=self.drop_path_rate,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


# === Backbone ===
@keras.saving.register_keras_serializable(package="keras_spectralkd")
class VisionTransformer(Backbone):
    """ViT / DeiT backbone (timm's `VisionTransformer`, class-token pooling), channels-last.

    Input: images (B, H, W, 3). Output: logits (B, num_classes), or the final-normed class token
    (B, embed_dim) when `num_classes` is 0. `forward_intermediates` gives each block's
    (B, H/patch, W/patch, embed_dim) map (SPEC.md 1).

    Layer names follow timm's modules (`patch_embed`, `cls_token`, `pos_embed`, `blocks_{i}`,
    `norm`, `head`) so the weight converter can map `blocks.{i}.*` one to one.

    Args:
        image_size: input side (int) or (height, width); each a multiple of `patch_size`.
        patch_size: patch side in pixels.
        embed_dim: token width C.
        depth: number of transformer blocks.
        num_heads: attention heads; must divide `embed_dim`.
        mlp_ratio: MLP hidden width / C.
        qkv_bias: bias on the qkv projections.
        num_classes: head size; 0 (or None) for no head.
        drop_path_rate: stochastic depth, rising linearly over the blocks from 0 (timm's rule).
        layer_norm_epsilon: LayerNorm epsilon.
        dtype: dtype policy (e.g. "mixed_bfloat16") or None for the global one.
        name: model name.
    """

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        qkv_bias=True,
        num_classes=1000,
        drop_path_rate=0.0,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        dtype=None,
        name="vision_transformer",
        **kwargs,
    ):
        # === Validation ===
        num_classes = 0 if num_classes is None else int(num_classes)
        _check_positive_int(patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                            num_heads=num_heads)
        height, width = check_image_size(image_size, patch_size, f"patch_size={patch_size}")
        _check_common(embed_dim, num_heads, mlp_ratio, num_classes, drop_path_rate)
        grid = (height // patch_size, width // patch_size)

        # === Functional Model ===
        images = keras.Input(shape=(height, width, 3), name="images")
        x = PatchEmbedding(patch_size, embed_dim, dtype=dtype, name="patch_embed")(images)
        x = layers.Reshape((grid[0] * grid[1], embed_dim), dtype=dtype, name="patch_tokens")(x)
        # timm initialises the ViT class token with normal(std=1e-6).
        cls_token = ClassToken(
            keras.initializers.RandomNormal(stddev=1e-6), dtype=dtype, name="cls_token"
        )(x)
        x = layers.Concatenate(axis=1, dtype=dtype, name="prepend_cls_token")([cls_token, x])
        x = PositionEmbedding(dtype=dtype, name="pos_embed")(x)
        unit_outputs = []
        for index, rate in enumerate(linear_drop_path_rates(drop_path_rate, depth)):
            x = TransformerBlock(
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path_rate=rate,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name=f"blocks_{index}",
            )(x)
            unit_outputs.append(x)
        # The final norm is per token, so norming only the class token equals timm's
        # norm-then-take-token-0, for a fraction of the work.
        x = layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="norm")(
            x[:, 0]
        )
        if num_classes:
            x = layers.Dense(
                num_classes, kernel_initializer=timm_dense_initializer(), dtype=dtype, name="head"
            )(x)
        feature_info = [
            {"module": f"blocks_{i}", "num_chs": embed_dim, "reduction": patch_size, "grid": grid}
            for i in range(depth)
        ]
        super().__init__(
            inputs=images,
            outputs=x,
            unit_outputs=unit_outputs,
            feature_info=feature_info,
            dtype=dtype,
            name=name,
            **kwargs,
        )

        # === Config ===
        self.image_size = image_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.num_classes = num_classes
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.grid = grid
        self.num_prefix_tokens = 1

    def unit_to_map(self, raw, index):
        return tokens_to_grid(raw, self.grid, self.num_prefix_tokens)

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            patch_size=self.patch_size,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias,
            num_classes=self.num_classes,
            drop_path_rate=self.drop_path_rate,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


# === Argument checks shared with CaiT ===
def _check_positive_int(**values):
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{key}` must be a positive int; got {value!r}.")


def _check_common(embed_dim, num_heads, mlp_ratio, num_classes, drop_path_rate):
    if embed_dim % num_heads:
        raise ValueError(
            f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}."
        )
    if not mlp_ratio > 0:
        raise ValueError(f"`mlp_ratio` must be > 0; got {mlp_ratio!r}.")
    if num_classes < 0:
        raise ValueError(f"`num_classes` must be >= 0 (0: no head); got {num_classes!r}.")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"`drop_path_rate` must be in [0, 1); got {drop_path_rate!r}.")


# === Presets (timm's names and arguments) ===
registry.register(
    "deit_tiny_patch16_224", VisionTransformer, "vit",
    image_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3,
)
registry.register(
    "deit_small_patch16_224", VisionTransformer, "vit",
    image_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6,
)
registry.register(
    "deit_base_patch16_224", VisionTransformer, "vit",
    image_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
)
