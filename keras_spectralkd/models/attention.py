"""The attention layers a `TransformerBlock` is given (timm's `attn_block=`), one projection code.

`Attention` holds what every variant shares: the head count and width checks, the scale, the
fused qkv projection laid out as timm's (q|k|v, head, head_dim along the last axis, so a timm
`qkv.weight` (3C, C) converts by a plain transpose), the split into heads and the output
projection `proj`. The variants only say how queries meet keys:

- `MultiHeadSelfAttention`: timm's ViT `Attention`, scaled dot-product attention;
- `TalkingHeadsAttention`: timm's CaiT `TalkingHeadAttn`, heads mixed before and after softmax;
- `ClassAttention`: timm's CaiT `ClassAttn`, the class token alone queries every token (its own
  q, k, v projections, as timm's);
- `models.swin.SwinWindowAttention` adds a relative-position bias and a window mask.

Every Dense starts as timm's Linear (trunc-normal std 0.02, zero bias).
"""

import keras
from keras import layers, ops

from keras_spectralkd.models.layers import check_heads_divide, timm_dense


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class Attention(layers.Layer):
    """Base of the attention layers: fused qkv in, heads split, `proj` out.

    Subclasses implement `attend(x)`; they may override `build_projections(input_shape)` to
    create other input projections than the fused `qkv` (created before `proj`, so the weight
    order stays input projections first).

    Args:
        num_heads: number of heads; must divide the input width C.
        qkv_bias: whether the q/k/v projections have a bias (timm's ViT/CaiT/Swin: True).
    Shapes: (B, ..., N, C) -> (B, ..., N, C) (subclasses may return fewer tokens).
    """

    def __init__(self, num_heads, qkv_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.qkv_bias = bool(qkv_bias)

    def build(self, input_shape):
        dim = input_shape[-1]
        check_heads_divide(dim, self.num_heads, "Attention width")
        self.head_dim = dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.build_projections(input_shape)
        self.proj = timm_dense(dim, "proj", self.dtype_policy)
        self.proj.build(tuple(input_shape[:-1]) + (dim,))

    def build_projections(self, input_shape):
        """Creates the fused qkv projection (override for other input projections)."""
        self.qkv = timm_dense(3 * input_shape[-1], "qkv", self.dtype_policy, self.qkv_bias)
        self.qkv.build(input_shape)

    def split_heads(self, x):
        """(B, ..., heads * head_dim) -> (B, ..., heads, head_dim); static inner dims."""
        return ops.reshape(x, (-1,) + tuple(x.shape[1:-1]) + (self.num_heads, self.head_dim))

    def fused_qkv(self, x):
        """q, k, v from the fused projection, each (B, ..., N, heads, head_dim)."""
        qkv = ops.reshape(
            self.qkv(x), (-1,) + tuple(x.shape[1:-1]) + (3, self.num_heads, self.head_dim)
        )
        # One unstack, not three slices: on torch, each slice's gradient is a zero-filled
        # tensor of qkv's full size; unstack's is a single stack.
        return tuple(ops.unstack(qkv, num=3, axis=-3))

    def merge_heads(self, x):
        """(B, ..., N, heads, head_dim) -> (B, ..., N, C), then the output projection."""
        width = self.num_heads * self.head_dim
        return self.proj(ops.reshape(x, (-1,) + tuple(x.shape[1:-2]) + (width,)))

    def attend(self, x):
        raise NotImplementedError

    def call(self, x):
        return self.attend(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, qkv_bias=self.qkv_bias)
        return config


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class MultiHeadSelfAttention(Attention):
    """timm's ViT `Attention`: fused qkv, scaled dot-product attention, output Dense.

    Shapes: (B, N, C) -> (B, N, C).
    """

    def attend(self, x):
        # (B, N, heads, head_dim) each: the layout `dot_product_attention` wants, which maps to
        # torch's fused SDPA on the torch backend (what timm itself runs).
        query, key, value = self.fused_qkv(x)
        return self.merge_heads(ops.dot_product_attention(query, key, value, scale=self.scale))


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class TalkingHeadsAttention(Attention):
    """timm's `TalkingHeadAttn` (Shazeer et al. 2020): heads mixed before and after softmax.

    With logits[b, h, n, m] = scale * <q[b, h, n], k[b, h, m]>:
        logits'[b, g, n, m]  = sum_h proj_l[h, g] logits[b, h, n, m] + proj_l_bias[g]
        weights              = softmax over the keys m of logits'
        weights'[b, g, n, m] = sum_h proj_w[h, g] weights[b, h, n, m] + proj_w_bias[g]
        out[b, n, g, :]      = sum_m weights'[b, g, n, m] v[b, g, m, :]
    `proj_l` and `proj_w` are Dense layers over the head axis (timm's `nn.Linear(heads,
    heads)`), applied here as one (heads x heads) @ (heads x N*M) matmul per image so the
    (B, heads, N, M) tensors are never transposed (the fastest form on all three backends).

    Memory (eager backends, e.g. torch): at most two (B, heads, N, M) tensors are alive at once,
    as in timm: each is handed on as a temporary, never kept under a name past its use, and
    `proj_w`'s bias is added after the product with v (sum_m (w + b) v = sum_m w v + b sum_m v,
    a (B, heads, 1, head_dim) term) instead of as one more (B, heads, N, M) tensor. The
    result equals timm's to float rounding (tests/models/test_cait.py).

    Shapes: (B, N, C) -> (B, N, C).
    """

    def build_projections(self, input_shape):
        super().build_projections(input_shape)
        self.proj_l = timm_dense(self.num_heads, "proj_l", self.dtype_policy)
        self.proj_w = timm_dense(self.num_heads, "proj_w", self.dtype_policy)
        self.proj_l.build((None, self.num_heads))
        self.proj_w.build((None, self.num_heads))

    def _mix_heads(self, dense, x):
        """(B, heads, N, M) -> (B, heads, N, M) through `dense`'s kernel on the head axis (its
        bias is the caller's: see the class docstring). Pass `x` as a temporary: the caller's
        own reference would keep it alive next to the result."""
        _, heads, queries, keys = x.shape
        kernel = ops.cast(ops.transpose(dense.kernel), x.dtype)  # (out, in)
        mixed = ops.matmul(kernel, ops.reshape(x, (-1, heads, queries * keys)))
        return ops.reshape(mixed, (-1, heads, queries, keys))

    def _head_bias(self, dense, x):
        """`dense`'s bias, (heads, 1, 1), in `x`'s dtype."""
        return ops.reshape(ops.cast(dense.bias, x.dtype), (self.num_heads, 1, 1))

    def attend(self, x):
        # (B, heads, N, head_dim) each.
        query, key, value = (ops.swapaxes(t, 1, 2) for t in self.fused_qkv(x))
        query = query * ops.cast(self.scale, x.dtype)
        # Logits, mixed logits and their softmax are temporaries of one expression: each is
        # freed as soon as the next exists (two (B, heads, N, N) tensors at most, see above).
        # Softmax in float32 whatever the policy: bf16 sums over ~200 keys lose too much.
        weights = ops.cast(
            ops.softmax(
                ops.cast(
                    self._mix_heads(self.proj_l, ops.matmul(query, ops.swapaxes(key, 2, 3)))
                    + self._head_bias(self.proj_l, x),
                    "float32",
                ),
                axis=-1,
            ),
            x.dtype,
        )
        x = ops.matmul(self._mix_heads(self.proj_w, weights), value)  # (B, heads, N, head_dim)
        x = x + self._head_bias(self.proj_w, x) * ops.sum(value, axis=2, keepdims=True)
        return self.merge_heads(ops.swapaxes(x, 1, 2))


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class ClassAttention(Attention):
    """timm's `ClassAttn`: the class token (query) attends to [class token, patch tokens].

    Call with the normed token sequence u (B, 1 + N, C) whose token 0 is the class token;
    returns the class token's update (B, 1, C). Separate q, k, v projections as timm's.
    """

    def build_projections(self, input_shape):
        dim = input_shape[-1]
        self.q = timm_dense(dim, "q", self.dtype_policy, self.qkv_bias)
        self.k = timm_dense(dim, "k", self.dtype_policy, self.qkv_bias)
        self.v = timm_dense(dim, "v", self.dtype_policy, self.qkv_bias)
        for layer in (self.q, self.k, self.v):
            layer.build(input_shape)

    def attend(self, tokens):
        query = self.split_heads(self.q(tokens[:, :1]))
        key, value = self.split_heads(self.k(tokens)), self.split_heads(self.v(tokens))
        return self.merge_heads(ops.dot_product_attention(query, key, value, scale=self.scale))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, input_shape[-1])
