"""timm's pre-norm transformer block, once, with the attention layer injected.

ViT's `Block`, CaiT's `LayerScaleBlock` and CaiT's `LayerScaleBlockClassAttn` are one structure:

    x = x + DropPath(gamma_1 * attn(norm1(x)))
    x = x + DropPath(gamma_2 * mlp(norm2(x)))

with LayerScale (`gamma_*`) only when `init_values` is given and the attention layer passed in
(timm's `attn_block=`): `MultiHeadSelfAttention` (ViT), `TalkingHeadsAttention` (CaiT),
`ClassAttention` (CaiT's class-attention blocks). A class-attention block is called on
`[tokens, class_token]`: `norm1` sees the class token in front of the tokens and only the class
token is updated (timm's `u = cat(x_cls, x)`).
"""

import keras
from keras import layers, ops

from keras_spectralkd.models.attention import Attention
from keras_spectralkd.models.layers import LAYER_NORM_EPSILON, DropPath, LayerScale, Mlp


@keras.saving.register_keras_serializable(package="keras_spectralkd")
class TransformerBlock(layers.Layer):
    """Pre-norm residual block: attention then MLP, optional LayerScale and stochastic depth.

    Args:
        attention: the attention layer (an `Attention` instance, named "attn" by convention, or
            its serialised config). It must take the normed tokens and return the update of the
            residual stream.
        mlp_ratio: MLP hidden width / C (hidden width `int(C * mlp_ratio)`, as timm).
        drop_path_rate: stochastic-depth rate of both residual branches.
        init_values: initial LayerScale value; None (the default) means no LayerScale.
        layer_norm_epsilon: LayerNorm epsilon (1e-6 in timm's ViT and CaiT).
    Shapes: (B, N, C) -> (B, N, C); or `[tokens (B, N, C), class_token (B, 1, C)]` -> the new
        class token (B, 1, C) for class attention.
    """

    def __init__(
        self,
        attention,
        mlp_ratio=4.0,
        drop_path_rate=0.0,
        init_values=None,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(attention, dict):
            attention = keras.saving.deserialize_keras_object(attention)
        if not isinstance(attention, Attention):
            raise TypeError(
                f"`attention` must be an Attention layer (or its config); got {attention!r}."
            )
        self.mlp_ratio = float(mlp_ratio)
        self.drop_path_rate = float(drop_path_rate)
        self.init_values = None if init_values is None else float(init_values)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        policy = self.dtype_policy
        self.norm1 = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm1"
        )
        self.attn = attention
        self.gamma_1 = self._layer_scale("gamma_1")
        self.norm2 = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm2"
        )
        self.gamma_2 = self._layer_scale("gamma_2")
        self.drop_path = DropPath(self.drop_path_rate, dtype=policy, name="drop_path")

    def _layer_scale(self, name):
        if self.init_values is None:
            return None
        return LayerScale(self.init_values, dtype=self.dtype_policy, name=name)

    def build(self, input_shape):
        class_attention = isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple)
        )
        tokens_shape = input_shape[0] if class_attention else input_shape
        stream_shape = input_shape[1] if class_attention else input_shape
        self.mlp = Mlp(
            int(tokens_shape[-1] * self.mlp_ratio), dtype=self.dtype_policy, name="mlp"
        )
        attention_shape = (tokens_shape[0], None, tokens_shape[-1]) if class_attention else (
            tokens_shape
        )
        self.norm1.build(attention_shape)
        self.attn.build(attention_shape)
        for layer in (self.gamma_1, self.norm2, self.mlp, self.gamma_2):
            if layer is not None:
                layer.build(stream_shape)

    def _branch(self, gamma, update, training):
        if gamma is not None:
            update = gamma(update)
        return self.drop_path(update, training=training)

    def call(self, inputs, training=False):
        if isinstance(inputs, (list, tuple)):
            tokens, x = inputs
            normed = self.norm1(ops.concatenate([x, tokens], axis=1))
        else:
            x = inputs
            normed = self.norm1(x)
        x = x + self._branch(self.gamma_1, self.attn(normed), training)
        update = self.mlp(self.norm2(x), training=training)
        return x + self._branch(self.gamma_2, update, training)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            return input_shape[1]
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            attention=keras.saving.serialize_keras_object(self.attn),
            mlp_ratio=self.mlp_ratio,
            drop_path_rate=self.drop_path_rate,
            init_values=self.init_values,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config
