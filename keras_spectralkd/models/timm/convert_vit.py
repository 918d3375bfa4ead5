"""timm `VisionTransformer` (deit_*) state dicts -> `models.vit.VisionTransformer` weights.

timm name -> our variable (torch layouts are transposed by `linear_kernel` / `conv_kernel`):

    cls_token (1,1,C)                  cls_token.token
    pos_embed (1,1+N,C)                pos_embed.embedding
    patch_embed.proj.{weight,bias}     patch_embed.proj.{kernel,bias}
    blocks.{i}.norm{1,2}.{weight,bias} blocks_{i}.norm{1,2}.{gamma,beta}
    blocks.{i}.attn.qkv / attn.proj    blocks_{i}.attn.qkv / attn.proj (qkv kept fused)
    blocks.{i}.mlp.fc{1,2}             blocks_{i}.mlp.fc{1,2}
    norm.{weight,bias}                 norm.{gamma,beta}
    head.{weight,bias}                 head.{kernel,bias} (absent when num_classes is 0)
"""

from keras_spectralkd.models.timm.weight_map import copy_block, copy_norm_and_head, copy_patch_embed

VIT_ATTENTION = ("qkv", "proj")


def copy_stem(weight_map, model):
    """Patch embedding, class token and position table (same names in ViT and CaiT)."""
    copy_patch_embed(weight_map, model.get_layer("patch_embed"))
    weight_map.copy(model.get_layer("cls_token").token, "cls_token")
    weight_map.copy(model.get_layer("pos_embed").embedding, "pos_embed")


def convert_vit(weight_map, model):
    """Fills `weight_map` for a `VisionTransformer` from timm's ViT/DeiT state dict."""
    copy_stem(weight_map, model)
    for index in range(model.depth):
        copy_block(weight_map, model.get_layer(f"blocks_{index}"), f"blocks.{index}", VIT_ATTENTION)
    copy_norm_and_head(weight_map, model)
