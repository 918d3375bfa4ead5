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

from keras_spectralkd.convert.timm import conv_kernel, linear_kernel, register_converter


def copy_dense(weight_map, dense, prefix):
    """torch Linear `prefix.{weight,bias}` -> Keras Dense (bias only if the layer has one)."""
    weight_map.copy(dense.kernel, f"{prefix}.weight", linear_kernel)
    if dense.use_bias:
        weight_map.copy(dense.bias, f"{prefix}.bias")


def copy_layer_norm(weight_map, norm, prefix):
    """torch LayerNorm `prefix.{weight,bias}` -> Keras LayerNormalization gamma/beta."""
    weight_map.copy(norm.gamma, f"{prefix}.weight")
    weight_map.copy(norm.beta, f"{prefix}.bias")


def copy_mlp(weight_map, mlp, prefix):
    copy_dense(weight_map, mlp.fc1, f"{prefix}.fc1")
    copy_dense(weight_map, mlp.fc2, f"{prefix}.fc2")


def copy_stem(weight_map, model):
    """Patch embedding, class token and position table (same names in ViT and CaiT)."""
    patch_embed = model.get_layer("patch_embed")
    weight_map.copy(patch_embed.proj.kernel, "patch_embed.proj.weight", conv_kernel)
    weight_map.copy(patch_embed.proj.bias, "patch_embed.proj.bias")
    weight_map.copy(model.get_layer("cls_token").token, "cls_token")
    weight_map.copy(model.get_layer("pos_embed").embedding, "pos_embed")


def copy_head(weight_map, model):
    """Final norm and (if the model has one) the classification head."""
    copy_layer_norm(weight_map, model.get_layer("norm"), "norm")
    if model.num_classes:
        copy_dense(weight_map, model.get_layer("head"), "head")


@register_converter("vit")
def convert_vit(weight_map, model):
    copy_stem(weight_map, model)
    for index in range(model.depth):
        block = model.get_layer(f"blocks_{index}")
        prefix = f"blocks.{index}"
        copy_layer_norm(weight_map, block.norm1, f"{prefix}.norm1")
        copy_dense(weight_map, block.attn.qkv, f"{prefix}.attn.qkv")
        copy_dense(weight_map, block.attn.proj, f"{prefix}.attn.proj")
        copy_layer_norm(weight_map, block.norm2, f"{prefix}.norm2")
        copy_mlp(weight_map, block.mlp, f"{prefix}.mlp")
    copy_head(weight_map, model)
