"""CaiT (timm's `Cait`: `cait_xxs24_224`, `cait_xs24_224`, `cait_s24_224`), channels-last.

Numerically equal to timm given converted weights (`keras_spectralkd.convert.from_timm`):
- patch tokens + a learned position table over the N patch tokens only (no class token yet);
- `depth` LayerScale blocks with talking-heads attention: a linear mix over the head axis of
  the attention logits before the softmax (`proj_l`) and of the probabilities after it
  (`proj_w`);
- `depth_token_only` class-attention blocks: only the class token is updated, attending to
  itself and the (frozen) patch tokens;
- final LayerNorm and the head on the class token.

Units (SPEC.md section 1): the `depth` self-attention blocks; unit i's map is the residual
stream after block i, (B, H/p, W/p, C) row-major. The class-attention blocks are not units.

Stochastic depth follows timm's CaiT (and the CaiT paper's code), which differs from ViT: the
SAME rate `drop_path_rate` in every self-attention block, none in the class-attention blocks.
"""

import keras
from keras import layers

from keras_spectralkd.models import registry
from keras_spectralkd.models.attention import ClassAttention, TalkingHeadsAttention
from keras_spectralkd.models.backbone import Backbone, tokens_to_grid
from keras_spectralkd.models.blocks import TransformerBlock
from keras_spectralkd.models.layers import (
    LAYER_NORM_EPSILON,
    TIMM_INIT_STD,
    ClassToken,
    PositionEmbedding,
    TimmTruncatedNormal,
    check_block_arguments,
    check_heads_divide,
    check_image_size,
    check_positive_int,
)
from keras_spectralkd.models.vit import block_feature_info, norm_and_head, patch_tokens

__all__ = ["CaiT", "ClassAttention", "ClassAttentionBlock", "LayerScaleBlock",
           "TalkingHeadsAttention"]


# === Blocks ===
# One implementation (`TransformerBlock`); the two subclasses only give CaiT's blocks their own
# class names, because Keras names the weights in a `.keras` file after the layer classes: files
# saved before the blocks were unified keep loading.
@keras.saving.register_keras_serializable(package="keras_spectralkd")
class LayerScaleBlock(TransformerBlock):
    """timm's CaiT `LayerScaleBlock`: a `TransformerBlock` with talking-heads attention and
    LayerScale."""


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class ClassAttentionBlock(TransformerBlock):
    """timm's `LayerScaleBlockClassAttn`: a `TransformerBlock` with class attention and
    LayerScale, called on `[tokens, class_token]`."""


# === Backbone ===
@keras.saving.register_keras_serializable(package="keras_spectralkd")
class CaiT(Backbone):
    """CaiT backbone (timm's `Cait`, class-token pooling), channels-last.

    Input: images (B, H, W, 3). Output: logits (B, num_classes), or the final-normed class token
    (B, embed_dim) when `num_classes` is 0. `forward_intermediates` gives each self-attention
    block's (B, H/patch, W/patch, embed_dim) map (SPEC.md 1).

    Layer names follow timm's modules (`patch_embed`, `pos_embed`, `blocks_{i}`, `cls_token`,
    `blocks_token_only_{j}`, `norm`, `head`). Every block is a `TransformerBlock` with
    LayerScale: talking-heads attention in `blocks_{i}` (`LayerScaleBlock`), class attention in
    `blocks_token_only_{j}` (`ClassAttentionBlock`).

    Args:
        image_size: input side (int) or (height, width); each a multiple of `patch_size`.
        patch_size: patch side in pixels.
        embed_dim: token width C.
        depth: number of self-attention (talking-heads) blocks, the units.
        num_heads: attention heads; must divide `embed_dim`.
        mlp_ratio: MLP hidden width / C (also used by the class-attention blocks).
        qkv_bias: bias on the q/k/v projections.
        depth_token_only: number of class-attention blocks (2 in every CaiT).
        init_values: initial LayerScale value (1e-5 for the 24-block models).
        num_classes: head size; 0 (or None) for no head.
        drop_path_rate: stochastic-depth rate, the SAME in every self-attention block (timm's
            CaiT rule, not ViT's linear one); the class-attention blocks have none.
        layer_norm_epsilon: LayerNorm epsilon.
        dtype: dtype policy (e.g. "mixed_bfloat16") or None for the global one.
        name: model name.
    """

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        embed_dim=384,
        depth=24,
        num_heads=8,
        mlp_ratio=4.0,
        qkv_bias=True,
        depth_token_only=2,
        init_values=1e-5,
        num_classes=1000,
        drop_path_rate=0.0,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        dtype=None,
        name="cait",
        **kwargs,
    ):
        # === Validation ===
        check_positive_int(patch_size=patch_size, embed_dim=embed_dim, depth=depth)
        check_heads_divide(embed_dim, num_heads)
        num_classes = check_block_arguments(mlp_ratio, num_classes, drop_path_rate)
        if isinstance(depth_token_only, bool) or not isinstance(depth_token_only, int) or (
            depth_token_only < 0
        ):
            raise ValueError(f"`depth_token_only` must be an int >= 0; got {depth_token_only!r}.")
        height, width = check_image_size(image_size, patch_size, f"patch_size={patch_size}")
        grid = (height // patch_size, width // patch_size)

        # === Functional Model ===
        images = keras.Input(shape=(height, width, 3), name="images")
        x = patch_tokens(images, patch_size, embed_dim, grid, dtype)
        x = PositionEmbedding(dtype=dtype, name="pos_embed")(x)

        def block(block_class, attention, name, drop_path=0.0):
            """A LayerScale block around `attention` (its class, timm's `attn_block`)."""
            return block_class(
                attention(num_heads, qkv_bias=qkv_bias, dtype=dtype, name="attn"),
                mlp_ratio=mlp_ratio,
                drop_path_rate=drop_path,
                init_values=init_values,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name=name,
            )

        unit_outputs = []
        for index in range(depth):
            x = block(LayerScaleBlock, TalkingHeadsAttention, f"blocks_{index}", drop_path_rate)(x)
            unit_outputs.append(x)
        cls_token = ClassToken(
            TimmTruncatedNormal(stddev=TIMM_INIT_STD), dtype=dtype, name="cls_token"
        )(x)
        for index in range(depth_token_only):
            cls_token = block(ClassAttentionBlock, ClassAttention, f"blocks_token_only_{index}")(
                [x, cls_token]
            )
        # timm norms [cls, patches] and pools token 0; the norm is per token, so norming the
        # class token alone is the same.
        x = layers.Reshape((embed_dim,), dtype=dtype, name="pool_cls_token")(cls_token)
        logits = norm_and_head(x, layer_norm_epsilon, num_classes, dtype)
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

    def unit_to_map(self, raw, index):
        return tokens_to_grid(raw, self.grid)

    def no_weight_decay(self):
        """timm's `no_weight_decay()`: the position table and the class token (by path)."""
        return {
            self.get_layer("pos_embed").embedding.path,
            self.get_layer("cls_token").token.path,
        }


# === Presets (timm's names and arguments; timm has no `cait_xs24_224`, only the 384 one, whose
# architecture at 224 this is) ===
registry.register(
    "cait_xxs24_224", CaiT, "cait",
    image_size=224, patch_size=16, embed_dim=192, depth=24, num_heads=4, init_values=1e-5,
)
registry.register(
    "cait_xs24_224", CaiT, "cait",
    image_size=224, patch_size=16, embed_dim=288, depth=24, num_heads=6, init_values=1e-5,
)
registry.register(
    "cait_s24_224", CaiT, "cait",
    image_size=224, patch_size=16, embed_dim=384, depth=24, num_heads=8, init_values=1e-5,
)
