"""ViT / DeiT (timm's `VisionTransformer` as used by `deit_*_patch16_224`), channels-last.

Numerically equal to timm given converted weights (`keras_spectralkd.convert.from_timm`):
pre-norm blocks, LayerNorm eps 1e-6, fused qkv with bias, exact GELU, a class token and a
learned position embedding over the 1 + N tokens, final LayerNorm, head on the class token.

Units (SPEC.md section 1): the `depth` blocks; unit i's map is the residual stream after block
i, before the final norm, class token removed, (B, H/p, W/p, C) row-major.
"""

import keras
from keras import layers

from keras_spectralkd.models import registry
from keras_spectralkd.models.attention import MultiHeadSelfAttention
from keras_spectralkd.models.backbone import Backbone, tokens_to_grid
from keras_spectralkd.models.blocks import TransformerBlock
from keras_spectralkd.models.layers import (
    LAYER_NORM_EPSILON,
    ClassToken,
    PatchEmbedding,
    PositionEmbedding,
    check_block_arguments,
    check_heads_divide,
    check_image_size,
    check_positive_int,
    linear_drop_path_rates,
    timm_dense,
)

__all__ = ["MultiHeadSelfAttention", "TransformerBlock", "VisionTransformer"]


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
        check_positive_int(patch_size=patch_size, embed_dim=embed_dim, depth=depth)
        check_heads_divide(embed_dim, num_heads)
        num_classes = check_block_arguments(mlp_ratio, num_classes, drop_path_rate)
        height, width = check_image_size(image_size, patch_size, f"patch_size={patch_size}")
        grid = (height // patch_size, width // patch_size)

        # === Functional Model ===
        images = keras.Input(shape=(height, width, 3), name="images")
        x = patch_tokens(images, patch_size, embed_dim, grid, dtype)
        # timm initialises the ViT class token with normal(std=1e-6).
        cls_token = ClassToken(
            keras.initializers.RandomNormal(stddev=1e-6), dtype=dtype, name="cls_token"
        )(x)
        x = layers.Concatenate(axis=1, dtype=dtype, name="prepend_cls_token")([cls_token, x])
        x = PositionEmbedding(dtype=dtype, name="pos_embed")(x)
        unit_outputs = []
        for index, rate in enumerate(linear_drop_path_rates(drop_path_rate, depth)):
            x = TransformerBlock(
                MultiHeadSelfAttention(num_heads, qkv_bias=qkv_bias, dtype=dtype, name="attn"),
                mlp_ratio=mlp_ratio,
                drop_path_rate=rate,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name=f"blocks_{index}",
            )(x)
            unit_outputs.append(x)
        # The final norm is per token, so norming only the class token equals timm's
        # norm-then-take-token-0, for a fraction of the work.
        logits = norm_and_head(x[:, 0], layer_norm_epsilon, num_classes, dtype)
        super().__init__(
            inputs=images,
            outputs=logits,
            unit_outputs=unit_outputs,
            feature_info=block_feature_info(depth, embed_dim, patch_size, grid),
            dtype=dtype,
            name=name,
            **kwargs,
        )

        # === Config ===
        self.store_arguments(locals())
        self.grid = grid
        self.num_prefix_tokens = 1

    def unit_to_map(self, raw, index):
        return tokens_to_grid(raw, self.grid, self.num_prefix_tokens)

    def no_weight_decay(self):
        """timm's `no_weight_decay()`: the class token and the position table (by path)."""
        return {
            self.get_layer("cls_token").token.path,
            self.get_layer("pos_embed").embedding.path,
        }


# === Parts shared with CaiT ===
def patch_tokens(images, patch_size, embed_dim, grid, dtype):
    """timm's `patch_embed` as tokens: (B, H, W, 3) -> (B, h*w, C), row-major."""
    x = PatchEmbedding(patch_size, embed_dim, dtype=dtype, name="patch_embed")(images)
    return layers.Reshape((grid[0] * grid[1], embed_dim), dtype=dtype, name="patch_tokens")(x)


def norm_and_head(class_token, layer_norm_epsilon, num_classes, dtype):
    """Final `norm` of the (B, C) class token, then the `head` (none when num_classes is 0)."""
    x = layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="norm")(
        class_token
    )
    return timm_dense(num_classes, "head", dtype)(x) if num_classes else x


def block_feature_info(depth, embed_dim, patch_size, grid):
    """`feature_info` of `depth` token blocks `blocks_{i}` on one (h, w) grid."""
    return [
        {"module": f"blocks_{i}", "num_chs": embed_dim, "reduction": patch_size, "grid": grid}
        for i in range(depth)
    ]


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
