"""timm `Cait` state dicts -> `models.cait.CaiT` weights.

timm name -> our variable (torch Linear weights transposed, `convert_vit` has the shared parts):

    cls_token, pos_embed (1,N,C), patch_embed.proj.*     as in ViT (pos table on patches only)
    blocks.{i}.norm{1,2}.*                               blocks_{i}.norm{1,2}.{gamma,beta}
    blocks.{i}.attn.{qkv,proj,proj_l,proj_w}.*           blocks_{i}.attn.{...}.{kernel,bias}
    blocks.{i}.gamma_{1,2} (C,)                          blocks_{i}.gamma_{1,2}.gamma
    blocks.{i}.mlp.fc{1,2}.*                             blocks_{i}.mlp.fc{1,2}.*
    blocks_token_only.{j}.attn.{q,k,v,proj}.*            blocks_token_only_{j}.attn.{q,k,v,proj}
    blocks_token_only.{j}.{norm1,norm2,gamma_1,gamma_2,mlp}   same, as above
    norm.*, head.*                                       norm, head
"""

from keras_spectralkd.models.timm.convert_vit import copy_stem
from keras_spectralkd.models.timm.weight_map import copy_block, copy_norm_and_head

TALKING_HEADS_ATTENTION = ("qkv", "proj", "proj_l", "proj_w")
CLASS_ATTENTION = ("q", "k", "v", "proj")


def convert_cait(weight_map, model):
    """Fills `weight_map` for a `CaiT` from timm's Cait state dict."""
    copy_stem(weight_map, model)
    for index in range(model.depth):
        copy_block(weight_map, model.get_layer(f"blocks_{index}"), f"blocks.{index}",
                   TALKING_HEADS_ATTENTION)
    for index in range(model.depth_token_only):
        copy_block(weight_map, model.get_layer(f"blocks_token_only_{index}"),
                   f"blocks_token_only.{index}", CLASS_ATTENTION)
    copy_norm_and_head(weight_map, model)
