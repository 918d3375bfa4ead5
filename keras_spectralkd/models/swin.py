"""Swin Transformer (timm >= 0.9 layout) with every stage's feature map (SPEC.md 1, 8).

Numerically equal to `timm.models.swin_transformer.SwinTransformer` given converted weights
(`keras_spectralkd.convert.from_timm`), written with `keras.ops` only:

- patch embedding: Conv2D(kernel = stride = patch) then LayerNorm, kept as a (B, h, w, C) grid;
- stages 1..3 START with patch merging (timm's layout; the original Microsoft code and keras-hub
  merge at the END of a stage): the 2x2 neighbourhood concatenated in timm's order, LayerNorm(4C),
  Linear(4C -> 2C, no bias);
- blocks of window attention with a relative position bias, every odd block shifting its windows by
  window // 2 (cyclic roll plus an attention mask), each stage keeping timm's rule that a window
  covering the whole grid is clipped to the grid and never shifted;
- final LayerNorm, global average pool, linear head. LayerNorm epsilon 1e-5 (timm's Swin).

The units of SpectralKD are the stages: unit i's map is the output of stage i, (B, h, w, C),
before the final norm (56x56x96, 28x28x192, 14x14x384, 7x7x768 for Swin-T/S at 224).

Window partition and reverse are reshapes/transposes with static shapes (no python loop over the
batch); the attention mask and the relative position index are numpy constants computed when a
block is created, never loaded from a checkpoint (timm keeps them as non-persistent buffers).
"""

import math

import keras
import numpy as np
from keras import layers, ops

from keras_spectralkd.models import registry
from keras_spectralkd.models.attention import Attention
from keras_spectralkd.models.backbone import Backbone
from keras_spectralkd.models.layers import (
    TIMM_INIT_STD,
    DropPath,
    Mlp,
    PatchEmbedding,
    TimmTruncatedNormal,
    check_block_arguments,
    check_heads_divide,
    check_image_size,
    check_positive_int,
    linear_drop_path_rates,
    timm_dense,
)

LAYER_NORM_EPSILON = 1e-5  # timm's Swin uses torch's default LayerNorm epsilon.
MASK_VALUE = -100.0  # timm's additive mask for token pairs from different shifted regions.


def _pair(value, what):
    """An int or a 2-sequence of ints -> (h, w) tuple, validated positive."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"`{what}` must be an int or a (height, width) pair; got {value!r}.")
        pair = tuple(int(v) for v in value)
    else:
        pair = (int(value), int(value))
    if min(pair) <= 0:
        raise ValueError(f"`{what}` must be positive; got {value!r}.")
    return pair


# === Constants (numpy, computed once per block) ===
def relative_position_index(window_size):
    """Index into the (2*wh-1)*(2*ww-1) bias table for every (query, key) pair of a window.

    Args:
        window_size: (wh, ww).
    Returns:
        int32 array (wh*ww, wh*ww), as timm's `get_relative_position_index`.
    """
    win_h, win_w = window_size
    coords = np.stack(np.meshgrid(np.arange(win_h), np.arange(win_w), indexing="ij"))
    coords = coords.reshape(2, -1)  # (2, N), row-major over the window
    relative = coords[:, :, None] - coords[:, None, :]  # (2, N, N): query minus key
    relative = relative.transpose(1, 2, 0).copy()
    relative[:, :, 0] += win_h - 1  # shift offsets to start at 0
    relative[:, :, 1] += win_w - 1
    relative[:, :, 0] *= 2 * win_w - 1
    return relative.sum(-1).astype("int32")


def window_partition(x, window_size):
    """(B, H, W, C) -> (B, num_windows, wh*ww, C), windows row-major, tokens row-major.

    H and W must be static multiples of the window size.
    """
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    win_h, win_w = window_size
    rows, cols = height // win_h, width // win_w
    x = ops.reshape(x, (-1, rows, win_h, cols, win_w, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, rows * cols, win_h * win_w, channels))


def window_reverse(windows, window_size, grid_size):
    """Inverse of `window_partition`: (B, num_windows, wh*ww, C) -> (B, H, W, C)."""
    win_h, win_w = window_size
    height, width = grid_size
    rows, cols = height // win_h, width // win_w
    channels = windows.shape[-1]
    x = ops.reshape(windows, (-1, rows, cols, win_h, win_w, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height, width, channels))


def shifted_window_mask(padded_size, window_size, shift_size):
    """timm's attention mask for shifted windows, or None when there is no shift.

    After the cyclic roll, a window at the bottom/right edge holds tokens from up to four image
    regions that were not neighbours; attention between tokens of different regions is masked.

    Args:
        padded_size: (Hp, Wp), the grid after padding to whole windows.
        window_size: (wh, ww).
        shift_size: (sh, sw); all zero means no mask.
    Returns:
        float32 array (num_windows, wh*ww, wh*ww) of 0 / MASK_VALUE, or None.
    """
    if not any(shift_size):
        return None
    height, width = padded_size
    (win_h, win_w), (shift_h, shift_w) = window_size, shift_size
    region = np.zeros((height, width), "float32")
    count = 0
    for h_start, h_stop in ((0, -win_h), (-win_h, -shift_h), (-shift_h, None)):
        for w_start, w_stop in ((0, -win_w), (-win_w, -shift_w), (-shift_w, None)):
            # A zero shift gives empty or full slices exactly as timm's (`-0` is `0`).
            region[h_start:h_stop, w_start:w_stop] = count
            count += 1
    windows = region.reshape(height // win_h, win_h, width // win_w, win_w)
    windows = windows.transpose(0, 2, 1, 3).reshape(-1, win_h * win_w)  # (nW, N)
    different = windows[:, None, :] != windows[:, :, None]
    return np.where(different, MASK_VALUE, 0.0).astype("float32")


def effective_window_and_shift(grid_size, window_size, shift_size):
    """timm's rule: a window larger than the grid shrinks to the grid and is not shifted."""
    window = tuple(min(g, w) for g, w in zip(grid_size, window_size))
    shift = tuple(0 if g <= w else s for g, w, s in zip(grid_size, window, shift_size))
    return window, shift


# === Layers ===
@keras.saving.register_keras_serializable(package="keras_spectralkd")
class SwinWindowAttention(Attention):
    """Multi-head self-attention inside windows, with a learned relative position bias.

    Input and output: (B, num_windows, N, C) with N = wh*ww tokens per window. An optional
    additive `attention_mask` (num_windows, N, N) is broadcast over the batch and the heads.
    The projections are `Attention`'s (fused qkv, `proj`); the bias table starts as timm's,
    trunc-normal std 0.02.

    Args:
        dim: channels C.
        num_heads: attention heads; must divide `dim`.
        window_size: (wh, ww), the window this layer's bias table is sized for.
        qkv_bias: whether the qkv projection has a bias (timm: True).
    """

    def __init__(self, dim, num_heads, window_size, qkv_bias=True, **kwargs):
        super().__init__(num_heads, qkv_bias=qkv_bias, **kwargs)
        self.dim = int(dim)
        self.window_size = _pair(window_size, "window_size")
        check_heads_divide(self.dim, self.num_heads, "dim")
        win_h, win_w = self.window_size
        self.window_area = win_h * win_w
        self.num_relative_positions = (2 * win_h - 1) * (2 * win_w - 1)
        # Flattened (N*N,) so that one `take` gathers the whole (N, N, heads) bias.
        self._relative_position_index = relative_position_index(self.window_size).reshape(-1)

    def build(self, input_shape):
        self.relative_position_bias_table = self.add_weight(
            name="relative_position_bias_table",
            shape=(self.num_relative_positions, self.num_heads),
            initializer=TimmTruncatedNormal(stddev=TIMM_INIT_STD),
        )
        super().build(tuple(input_shape[:-1]) + (self.dim,))

    def relative_position_bias(self):
        """(heads, N, N) bias added to the attention logits of every window."""
        bias = ops.take(self.relative_position_bias_table, self._relative_position_index, axis=0)
        bias = ops.reshape(bias, (self.window_area, self.window_area, self.num_heads))
        return ops.transpose(bias, (2, 0, 1))

    def call(self, x, attention_mask=None):
        # (B, nW, heads, N, head_dim) each; qkv channels ordered (q|k|v, head, head_dim) as timm.
        query, key, value = (ops.swapaxes(t, 2, 3) for t in self.fused_qkv(x))
        logits = ops.matmul(query * ops.cast(self.scale, query.dtype), ops.swapaxes(key, -1, -2))
        # Bias, mask and softmax in float32: mixed precision then only rounds the matmuls.
        logits = ops.cast(logits, "float32")
        logits = logits + ops.cast(self.relative_position_bias(), "float32")
        if attention_mask is not None:
            mask = ops.cast(attention_mask, "float32")
            logits = logits + ops.expand_dims(mask, 1)  # (nW, 1, N, N): over batch and heads
        weights = ops.cast(ops.softmax(logits, axis=-1), value.dtype)
        return self.merge_heads(ops.swapaxes(ops.matmul(weights, value), 2, 3))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.dim,)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, window_size=self.window_size)
        return config


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class SwinTransformerBlock(layers.Layer):
    """One Swin block on a (B, H, W, C) grid: (shifted) window attention, then an MLP.

        x = x + DropPath(WindowAttention(LN(x)))   # with roll / pad / partition around it
        x = x + DropPath(Mlp(LN(x)))

    As timm's block (not `always_partition`): a window larger than the grid is clipped to the
    grid and then never shifted; a grid that is not a multiple of the window is zero-padded at
    the bottom/right after the roll (the padded tokens take part in attention, as in timm).

    Args:
        dim: channels C.
        num_heads: attention heads.
        input_resolution: (H, W), the static grid this block runs on.
        window_size: requested window side (int or (wh, ww)), before clipping to the grid.
        shift_size: requested shift (int or (sh, sw)); 0 for a plain (W-MSA) block.
        mlp_ratio: MLP hidden width / C.
        qkv_bias: whether the qkv projection has a bias.
        drop_path_rate: stochastic-depth rate of both residual branches.
        layer_norm_epsilon: LayerNorm epsilon.
    """

    def __init__(
        self,
        dim,
        num_heads,
        input_resolution,
        window_size=7,
        shift_size=0,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.0,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.input_resolution = _pair(input_resolution, "input_resolution")
        self.requested_window_size = _pair(window_size, "window_size")
        shift = shift_size if isinstance(shift_size, (tuple, list)) else (shift_size, shift_size)
        self.requested_shift_size = tuple(int(s) for s in shift)
        if len(self.requested_shift_size) != 2 or min(self.requested_shift_size) < 0 or any(
            s >= w for s, w in zip(self.requested_shift_size, self.requested_window_size)
        ):
            raise ValueError(
                f"shift_size={shift_size!r} must be 0 or smaller than window_size="
                f"{window_size!r} on each axis."
            )
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)

        self.window_size, self.shift_size = effective_window_and_shift(
            self.input_resolution, self.requested_window_size, self.requested_shift_size
        )
        self.padded_size = tuple(
            math.ceil(g / w) * w for g, w in zip(self.input_resolution, self.window_size)
        )
        self._attention_mask = shifted_window_mask(
            self.padded_size, self.window_size, self.shift_size
        )

        self.norm1 = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm1"
        )
        self.attn = SwinWindowAttention(
            self.dim,
            self.num_heads,
            self.window_size,
            qkv_bias=self.qkv_bias,
            dtype=self.dtype_policy,
            name="attn",
        )
        self.drop_path1 = DropPath(self.drop_path_rate, dtype=self.dtype_policy, name="drop_path1")
        self.norm2 = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm2"
        )
        self.mlp = Mlp(int(self.dim * self.mlp_ratio), dtype=self.dtype_policy, name="mlp")
        self.drop_path2 = DropPath(self.drop_path_rate, dtype=self.dtype_policy, name="drop_path2")

    def build(self, input_shape):
        expected = (*self.input_resolution, self.dim)
        if tuple(input_shape[1:]) != expected:
            raise ValueError(
                f"{self.name} was built for inputs (B, {expected[0]}, {expected[1]}, "
                f"{expected[2]}); got {tuple(input_shape)}."
            )
        self.norm1.build(input_shape)
        num_windows = (self.padded_size[0] // self.window_size[0]) * (
            self.padded_size[1] // self.window_size[1]
        )
        window_area = self.window_size[0] * self.window_size[1]
        self.attn.build((input_shape[0], num_windows, window_area, self.dim))
        self.norm2.build(input_shape)
        self.mlp.build(input_shape)

    def _window_attention(self, x):
        """(Shifted) window attention on the normalised (B, H, W, C) grid."""
        height, width = self.input_resolution
        shifted = any(self.shift_size)
        if shifted:
            x = ops.roll(x, shift=(-self.shift_size[0], -self.shift_size[1]), axis=(1, 2))
        pad_h, pad_w = self.padded_size[0] - height, self.padded_size[1] - width
        if pad_h or pad_w:
            x = ops.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        windows = window_partition(x, self.window_size)
        windows = self.attn(windows, attention_mask=self._attention_mask)
        x = window_reverse(windows, self.window_size, self.padded_size)
        if pad_h or pad_w:
            x = x[:, :height, :width, :]
        if shifted:
            x = ops.roll(x, shift=self.shift_size, axis=(1, 2))
        return x

    def call(self, x, training=False):
        x = x + self.drop_path1(self._window_attention(self.norm1(x)), training=training)
        x = x + self.drop_path2(self.mlp(self.norm2(x), training=training), training=training)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim,
            num_heads=self.num_heads,
            input_resolution=self.input_resolution,
            window_size=self.requested_window_size,
            shift_size=self.requested_shift_size,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias,
            drop_path_rate=self.drop_path_rate,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class SwinPatchMerging(layers.Layer):
    """timm's patch merging: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), output_dim).

    An odd side is zero-padded at the bottom/right. Each 2x2 neighbourhood is concatenated
    channel-wise in timm's order (top-left, bottom-left, top-right, bottom-right, i.e. the
    original x0, x1, x2, x3), then LayerNorm(4C) and Linear(4C -> output_dim, no bias).

    Args:
        dim: input channels C.
        output_dim: output channels (default 2C).
        layer_norm_epsilon: LayerNorm epsilon.
    """

    def __init__(self, dim, output_dim=None, layer_norm_epsilon=LAYER_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.output_dim = int(output_dim) if output_dim else 2 * self.dim
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.norm = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )
        self.reduction = timm_dense(
            self.output_dim, "reduction", self.dtype_policy, use_bias=False
        )

    def build(self, input_shape):
        merged = (input_shape[0], None, None, 4 * self.dim)
        self.norm.build(merged)
        self.reduction.build(merged)

    def call(self, x):
        height, width = x.shape[1], x.shape[2]
        if height % 2 or width % 2:
            x = ops.pad(x, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))
            height, width = height + height % 2, width + width % 2
        x = ops.reshape(x, (-1, height // 2, 2, width // 2, 2, self.dim))
        # (B, h, dy, w, dx, C) -> (B, h, w, dx, dy, C): the column offset is the slower index.
        x = ops.transpose(x, (0, 1, 3, 4, 2, 5))
        x = ops.reshape(x, (-1, height // 2, width // 2, 4 * self.dim))
        return self.reduction(self.norm(x))

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        return (
            input_shape[0],
            None if height is None else (height + 1) // 2,
            None if width is None else (width + 1) // 2,
            self.output_dim,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim, output_dim=self.output_dim, layer_norm_epsilon=self.layer_norm_epsilon
        )
        return config


# === Functional Model ===
@keras.saving.register_keras_serializable(package="keras_spectralkd")
class SwinTransformer(Backbone):
    """Swin Transformer backbone, timm >= 0.9 layout, channels-last.

    Input: images (B, H, W, 3). Output: logits (B, num_classes), or the pooled (B, C_last)
    features when `num_classes` is 0/None. `forward_intermediates` gives the 4 stage maps.

    Layer names mirror timm's module paths with `_` for `.` (`layers_1_downsample`,
    `layers_2_blocks_5`, `norm`, `head`), which the timm converter relies on.

    Args:
        image_size: input side (int) or (height, width); each side a multiple of `patch_size`.
        patch_size: side of the square patches of the stem.
        embed_dim: channels of stage 0; stage i has `embed_dim * 2**i`.
        depths: blocks per stage.
        num_heads: attention heads per stage; each must divide its stage's channels.
        window_size: attention window side (clipped per stage to the grid, as timm).
        mlp_ratio: MLP hidden width / channels.
        qkv_bias: whether the qkv projections have a bias.
        num_classes: classes of the head; 0 or None for no head.
        drop_path_rate: stochastic depth, rising linearly from 0 over ALL blocks to this value
            (timm's rule); the identity in inference.
        layer_norm_epsilon: epsilon of every LayerNorm (1e-5 as timm's Swin).
        **kwargs: `name`, `dtype` (a dtype policy such as "mixed_bfloat16"), `trainable`.
    """

    def __init__(
        self,
        image_size=224,
        patch_size=4,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        mlp_ratio=4.0,
        qkv_bias=True,
        num_classes=1000,
        drop_path_rate=0.0,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        **kwargs,
    ):
        # === Validation ===
        check_positive_int(patch_size=patch_size, embed_dim=embed_dim)
        depths = tuple(depths)
        num_heads = tuple(num_heads)
        if not depths:
            raise ValueError(f"`depths` must be a non-empty sequence of ints >= 1; got {depths!r}.")
        check_positive_int(**{f"depths[{stage}]": depth for stage, depth in enumerate(depths)})
        if len(num_heads) != len(depths):
            raise ValueError(
                f"num_heads={num_heads!r} must give one head count per stage of depths="
                f"{depths!r} ({len(depths)} stages)."
            )
        stage_dims = [embed_dim * 2**i for i in range(len(depths))]
        for stage, (dim, heads) in enumerate(zip(stage_dims, num_heads)):
            check_heads_divide(dim, heads, f"stage {stage}'s width (embed_dim * 2**{stage})")
        window = _pair(window_size, "window_size")
        num_classes = check_block_arguments(mlp_ratio, num_classes, drop_path_rate)
        # timm accepts any multiple of the patch size: windows that do not tile a stage's grid
        # are padded, odd grids are padded before merging. A non-multiple would silently drop
        # pixels in the stem, so it is refused.
        image_hw = check_image_size(
            image_size, patch_size, f"patch_size={patch_size} must tile the image"
        )
        dtype = kwargs.pop("dtype", None)

        # === Layers and functional model ===
        images = keras.Input(shape=(*image_hw, 3), name="images")
        x = PatchEmbedding(
            patch_size,
            embed_dim,
            norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name="patch_embed",
        )(images)
        grid = (image_hw[0] // patch_size, image_hw[1] // patch_size)
        rates = linear_drop_path_rates(float(drop_path_rate), sum(depths))
        shift = tuple(w // 2 for w in window)
        unit_outputs, feature_info = [], []
        block_index = 0
        for stage, (depth, heads, dim) in enumerate(zip(depths, num_heads, stage_dims)):
            if stage > 0:
                x = SwinPatchMerging(
                    stage_dims[stage - 1],
                    dim,
                    layer_norm_epsilon=layer_norm_epsilon,
                    dtype=dtype,
                    name=f"layers_{stage}_downsample",
                )(x)
                grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
            for block in range(depth):
                x = SwinTransformerBlock(
                    dim,
                    heads,
                    input_resolution=grid,
                    window_size=window,
                    shift_size=0 if block % 2 == 0 else shift,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path_rate=rates[block_index],
                    layer_norm_epsilon=layer_norm_epsilon,
                    dtype=dtype,
                    name=f"layers_{stage}_blocks_{block}",
                )(x)
                block_index += 1
            unit_outputs.append(x)
            feature_info.append(
                {
                    "module": f"layers_{stage}_blocks_{depth - 1}",
                    "num_chs": dim,
                    "reduction": patch_size * 2**stage,
                    "grid": grid,
                }
            )
        x = layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="norm")(x)
        x = layers.GlobalAveragePooling2D(dtype=dtype, name="pool")(x)
        if num_classes:
            x = timm_dense(num_classes, "head", dtype)(x)
        super().__init__(
            inputs=images,
            outputs=x,
            unit_outputs=unit_outputs,
            feature_info=feature_info,
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        image_size = image_size if isinstance(image_size, int) else tuple(image_hw)
        window_size = window_size if isinstance(window_size, int) else window
        self.store_arguments(locals())

    def no_weight_decay(self):
        """timm's `no_weight_decay()`: every block's relative-position table (by path)."""
        return {
            layer.attn.relative_position_bias_table.path
            for layer in self.layers
            if isinstance(layer, SwinTransformerBlock)
        }


# === Presets (timm's names and numbers; SPEC.md 8) ===
_SWIN_PRESETS = {
    "swin_tiny_patch4_window7_224": dict(
        embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)
    ),
    "swin_small_patch4_window7_224": dict(
        embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)
    ),
    "swin_base_patch4_window7_224": dict(
        embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)
    ),
}
for _name, _arch in _SWIN_PRESETS.items():
    registry.register(
        _name, SwinTransformer, "swin", image_size=224, patch_size=4, window_size=7, **_arch
    )
