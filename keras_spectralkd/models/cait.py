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
from keras import layers, ops

from keras_spectralkd.models import registry
from keras_spectralkd.models.backbone import Backbone, tokens_to_grid
from keras_spectralkd.models.layers import (
    LAYER_NORM_EPSILON,
    ClassToken,
    DropPath,
    LayerScale,
    Mlp,
    PatchEmbedding,
    PositionEmbedding,
    check_image_size,
    timm_dense_initializer,
)
from keras_spectralkd.models.vit import _check_common, _check_positive_int


def _dense(units, dtype, name, use_bias=True):
    return layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=timm_dense_initializer(),
        dtype=dtype,
        name=name,
    )


# === Layers ===
@keras.saving.register_keras_serializable(package="keras_spectralkd")
class TalkingHeadsAttention(layers.Layer):
    """timm's `TalkingHeadAttn` (Shazeer et al. 2020): heads mixed before and after softmax.

    With logits[b, h, n, m] = scale * <q[b, h, n], k[b, h, m]>:
        logits'[b, g, n, m]  = sum_h proj_l[h, g] logits[b, h, n, m] + proj_l_bias[g]
        weights              = softmax over the keys m of logits'
        weights'[b, g, n, m] = sum_h proj_w[h, g] weights[b, h, n, m] + proj_w_bias[g]
        out[b, n, g, :]      = sum_m weights'[b, g, n, m] v[b, g, m, :]
    `proj_l` and `proj_w` are Dense layers over the head axis (timm's `nn.Linear(heads,
    heads)`), applied here as one (heads x heads) @ (heads x N*M) matmul per image so the
    (B, heads, N, M) tensors are never transposed (the fastest form on all three backends).

    Args:
        num_heads: heads; must divide the input width C.
        qkv_bias: bias on the fused qkv projection.
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
        policy = self.dtype_policy
        self.qkv = _dense(3 * dim, policy, "qkv", use_bias=self.qkv_bias)
        self.proj_l = _dense(self.num_heads, policy, "proj_l")
        self.proj_w = _dense(self.num_heads, policy, "proj_w")
        self.proj = _dense(dim, policy, "proj")
        self.qkv.build(input_shape)
        self.proj.build(input_shape)
        self.proj_l.build((None, self.num_heads))
        self.proj_w.build((None, self.num_heads))

    def _mix_heads(self, dense, x):
        """(B, heads, N, M) -> (B, heads, N, M) through `dense` acting on the head axis."""
        _, heads, queries, keys = x.shape
        kernel = ops.cast(ops.transpose(dense.kernel), x.dtype)  # (out, in)
        bias = ops.cast(dense.bias, x.dtype)[:, None]
        mixed = ops.matmul(kernel, ops.reshape(x, (-1, heads, queries * keys))) + bias
        return ops.reshape(mixed, (-1, heads, queries, keys))

    def call(self, x):
        num_tokens, dim = x.shape[1], x.shape[2]
        qkv = ops.reshape(self.qkv(x), (-1, num_tokens, 3, self.num_heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, B, heads, N, head_dim)
        query = qkv[0] * ops.cast(self.head_dim**-0.5, x.dtype)
        key, value = qkv[1], qkv[2]
        logits = self._mix_heads(self.proj_l, ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))))
        # Softmax in float32 whatever the policy: bf16 sums over ~200 keys lose too much.
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), x.dtype)
        x = ops.matmul(self._mix_heads(self.proj_w, weights), value)  # (B, heads, N, head_dim)
        x = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, num_tokens, dim))
        return self.proj(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, qkv_bias=self.qkv_bias)
        return config


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class LayerScaleBlock(layers.Layer):
    """timm's CaiT `LayerScaleBlock`: x + DropPath(gamma_1 * attn(norm1(x))), then the MLP.

    Args:
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / C.
        qkv_bias: bias on the qkv projection.
        drop_path_rate: stochastic-depth rate of both branches.
        init_values: initial LayerScale value (1e-5 for the 24-block CaiTs).
        layer_norm_epsilon: LayerNorm epsilon.
    Shapes: (B, N, C) -> (B, N, C).
    """

    def __init__(
        self,
        num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.0,
        init_values=1e-5,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.drop_path_rate = float(drop_path_rate)
        self.init_values = float(init_values)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        policy = self.dtype_policy
        self.norm1 = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm1"
        )
        self.attn = TalkingHeadsAttention(
            self.num_heads, qkv_bias=self.qkv_bias, dtype=policy, name="attn"
        )
        self.gamma_1 = LayerScale(self.init_values, dtype=policy, name="gamma_1")
        self.norm2 = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm2"
        )
        self.gamma_2 = LayerScale(self.init_values, dtype=policy, name="gamma_2")
        self.drop_path = DropPath(self.drop_path_rate, dtype=policy, name="drop_path")

    def build(self, input_shape):
        self.mlp = Mlp(
            int(input_shape[-1] * self.mlp_ratio),
            kernel_initializer=timm_dense_initializer(),
            dtype=self.dtype_policy,
            name="mlp",
        )
        for layer in (self.norm1, self.attn, self.gamma_1, self.norm2, self.mlp, self.gamma_2):
            layer.build(input_shape)

    def call(self, x, training=False):
        branch = self.gamma_1(self.attn(self.norm1(x)))
        x = x + self.drop_path(branch, training=training)
        branch = self.gamma_2(self.mlp(self.norm2(x), training=training))
        return x + self.drop_path(branch, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias,
            drop_path_rate=self.drop_path_rate,
            init_values=self.init_values,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class ClassAttention(layers.Layer):
    """timm's `ClassAttn`: the class token (query) attends to [class token, patch tokens].

    Call with the normed token sequence u (B, 1 + N, C) whose token 0 is the class token;
    returns the class token's update (B, 1, C). Separate q, k, v projections as timm's.

    Args:
        num_heads: heads; must divide C.
        qkv_bias: bias on q, k and v.
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
        policy = self.dtype_policy
        self.q = _dense(dim, policy, "q", use_bias=self.qkv_bias)
        self.k = _dense(dim, policy, "k", use_bias=self.qkv_bias)
        self.v = _dense(dim, policy, "v", use_bias=self.qkv_bias)
        self.proj = _dense(dim, policy, "proj")
        for layer in (self.q, self.k, self.v, self.proj):
            layer.build(input_shape)

    def call(self, tokens):
        num_tokens, dim = tokens.shape[1], tokens.shape[2]
        heads = (self.num_heads, self.head_dim)
        query = ops.reshape(self.q(tokens[:, :1]), (-1, 1) + heads)
        key = ops.reshape(self.k(tokens), (-1, num_tokens) + heads)
        value = ops.reshape(self.v(tokens), (-1, num_tokens) + heads)
        x = ops.dot_product_attention(query, key, value, scale=self.head_dim**-0.5)
        return self.proj(ops.reshape(x, (-1, 1, dim)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, qkv_bias=self.qkv_bias)
        return config


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class ClassAttentionBlock(layers.Layer):
    """timm's `LayerScaleBlockClassAttn`: updates the class token only.

    `call([patch_tokens, class_token])` with patch tokens (B, N, C) and class token (B, 1, C);
    returns the new class token (B, 1, C):
        u = norm1([cls, x]);  cls += gamma_1 * class_attn(u);  cls += gamma_2 * mlp(norm2(cls)).

    Args: as `LayerScaleBlock`, without stochastic depth (timm uses none here).
    """

    def __init__(
        self,
        num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        init_values=1e-5,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.init_values = float(init_values)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        policy = self.dtype_policy
        self.norm1 = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm1"
        )
        self.attn = ClassAttention(
            self.num_heads, qkv_bias=self.qkv_bias, dtype=policy, name="attn"
        )
        self.gamma_1 = LayerScale(self.init_values, dtype=policy, name="gamma_1")
        self.norm2 = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm2"
        )
        self.gamma_2 = LayerScale(self.init_values, dtype=policy, name="gamma_2")

    def build(self, input_shape):
        tokens_shape, cls_shape = input_shape
        self.mlp = Mlp(
            int(tokens_shape[-1] * self.mlp_ratio),
            kernel_initializer=timm_dense_initializer(),
            dtype=self.dtype_policy,
            name="mlp",
        )
        all_tokens = (tokens_shape[0], None, tokens_shape[-1])
        self.norm1.build(all_tokens)
        self.attn.build(all_tokens)
        for layer in (self.gamma_1, self.norm2, self.mlp, self.gamma_2):
            layer.build(cls_shape)

    def call(self, inputs, training=False):
        tokens, cls_token = inputs
        normed = self.norm1(ops.concatenate([cls_token, tokens], axis=1))
        cls_token = cls_token + self.gamma_1(self.attn(normed))
        return cls_token + self.gamma_2(self.mlp(self.norm2(cls_token), training=training))

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias,
            init_values=self.init_values,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


# === Backbone ===
@keras.saving.register_keras_serializable(package="keras_spectralkd")
class CaiT(Backbone):
    """CaiT backbone (timm's `Cait`, class-token pooling), channels-last.

    Input: images (B, H, W, 3). Output: logits (B, num_classes), or the final-normed class token
    (B, embed_dim) when `num_classes` is 0. `forward_intermediates` gives each self-attention
    block's (B, H/patch, W/patch, embed_dim) map (SPEC.md 1).

    Layer names follow timm's modules (`patch_embed`, `pos_embed`, `blocks_{i}`, `cls_token`,
    `blocks_token_only_{j}`, `norm`, `head`).

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
        num_classes = 0 if num_classes is None else int(num_classes)
        _check_positive_int(patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                            num_heads=num_heads)
        if isinstance(depth_token_only, bool) or not isinstance(depth_token_only, int) or (
            depth_token_only < 0
        ):
            raise ValueError(f"`depth_token_only` must be an int >= 0; got {depth_token_only!r}.")
        height, width = check_image_size(image_size, patch_size, f"patch_size={patch_size}")
        _check_common(embed_dim, num_heads, mlp_ratio, num_classes, drop_path_rate)
        grid = (height // patch_size, width // patch_size)

        # === Functional Model ===
        images = keras.Input(shape=(height, width, 3), name="images")
        x = PatchEmbedding(patch_size, embed_dim, dtype=dtype, name="patch_embed")(images)
        x = layers.Reshape((grid[0] * grid[1], embed_dim), dtype=dtype, name="patch_tokens")(x)
        x = PositionEmbedding(dtype=dtype, name="pos_embed")(x)
        unit_outputs = []
        for index in range(depth):
            x = LayerScaleBlock(
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path_rate=drop_path_rate,
                init_values=init_values,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name=f"blocks_{index}",
            )(x)
            unit_outputs.append(x)
        cls_token = ClassToken(timm_dense_initializer(), dtype=dtype, name="cls_token")(x)
        for index in range(depth_token_only):
            cls_token = ClassAttentionBlock(
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                init_values=init_values,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name=f"blocks_token_only_{index}",
            )([x, cls_token])
        # timm norms [cls, patches] and pools token 0; the norm is per token, so norming the
        # class token alone is the same.
        x = layers.Reshape((embed_dim,), dtype=dtype, name="pool_cls_token")(cls_token)
        x = layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="norm")(x)
        if num_classes:
            x = _dense(num_classes, dtype, "head")(x)
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
        self.depth_token_only = depth_token_only
        self.init_values = init_values
        self.num_classes = num_classes
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.grid = grid

    def unit_to_map(self, raw, index):
        return tokens_to_grid(raw, self.grid)

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
            depth_token_only=self.depth_token_only,
            init_values=self.init_values,
            num_classes=self.num_classes,
            drop_path_rate=self.drop_path_rate,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


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
