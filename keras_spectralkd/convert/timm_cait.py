"""timm `Cait` state dicts -> `models.cait.CaiT` weights.

timm name -> our variable (torch Linear weights transposed, see `timm_vit` for the shared parts):

    cls_token, pos_embed (1,N,C), patch_embed.proj.*     as in ViT (pos table on patches only)
    blocks.{i}.norm{1,2}.*                               blocks_{i}.norm{1,2}.{gamma,beta}
    blocks.{i}.attn.{qkv,proj,proj_l,proj_w}.*           blocks_{i}.attn.{...}.{kernel,bias}
    blocks.{i}.gamma_{1,2} (C,)                          blocks_{i}.gamma_{1,2}.gamma
    blocks.{i}.mlp.fc{1,2}.*                             blocks_{i}.mlp.fc{1,2}.*
    blocks_token_only.{j}.attn.{q,k,v,proj}.*            blocks_token_only_{j}.attn.{q,k,v,proj}
    blocks_token_only.{j}.{norm1,norm2,gamma_1,gamma_2,mlp}   same, as above
    norm.*, head.*                                       norm, head
"""

from keras_spectralkd.convert.timm import register_converter
from keras_spectralkd.convert.timm_vit import (
    copy_dense,
    copy_head,
    copy_layer_norm,
    copy_mlp,
    copy_stem,
)


def _copy_block(weight_map, block, prefix, attention_names):
    """One pre-norm LayerScale block; `attention_names` are its attention's Dense layers."""
    copy_layer_norm(weight_map, block.norm1, f"{prefix}.norm1")
    for name in attention_names:
        copy_dense(weight_map, getattr(block.attn, name), f"{prefix}.attn.{name}")
    copy_layer_norm(weight_map, block.norm2, f"{prefix}.norm2")
    copy_mlp(weight_map, block.mlp, f"{prefix}.mlp")
    weight_map.copy(block.gamma_1.gamma, f"{prefix}.gamma_1")
    weight_map.copy(block.gamma_2.gamma, f"{prefix}.gamma_2")


@register_converter("cait")
def convert_cait(weight_map, model):
    copy_stem(weight_map, model)
    for index in range(model.depth):
        # Talking-heads self-attention blocks.
        _copy_block(weight_map, model.get_layer(f"blocks_{index}"), f"blocks.{index}",
                    ("qkv", "proj", "proj_l", "proj_w"))
    for index in range(model.depth_token_only):
        # Class-attention blocks.
        _copy_block(weight_map, model.get_layer(f"blocks_token_only_{index}"),
                    f"blocks_token_only.{index}", ("q", "k", "v", "proj"))
    copy_head(weight_map, model)
