"""timm Swin Transformer state dict -> `keras_spectralkd.models.swin.SwinTransformer`.

timm names (>= 0.9 layout, merging at the START of stages 1..3):

    patch_embed.proj.{weight,bias}            -> patch_embed/proj (Conv2D)
    patch_embed.norm.{weight,bias}            -> patch_embed/norm
    layers.{i}.downsample.norm.{weight,bias}  -> layers_{i}_downsample/norm      (i >= 1)
    layers.{i}.downsample.reduction.weight    -> layers_{i}_downsample/reduction (no bias)
    layers.{i}.blocks.{j}.norm1 / norm2       -> layers_{i}_blocks_{j}/norm1, norm2
    layers.{i}.blocks.{j}.attn.qkv / proj     -> .../attn/qkv, proj
    layers.{i}.blocks.{j}.attn.relative_position_bias_table -> same layout ((2w-1)^2, heads)
    layers.{i}.blocks.{j}.mlp.fc1 / fc2       -> .../mlp/fc1, fc2
    norm.{weight,bias}, head.fc.{weight,bias} -> norm, head

`relative_position_index` and `attn_mask` are non-persistent buffers in timm (absent from its
state dicts) that we recompute; older checkpoints that still carry them have them skipped.
Checkpoints in the original Microsoft layout (merging at the END of stages 0..2, `head.weight`)
are renamed to timm's layout first, as timm's own `checkpoint_filter_fn` does.
"""

import re

from keras_spectralkd.models.timm.weight_map import (
    copy_block,
    copy_dense,
    copy_layer_norm,
    copy_norm_and_head,
    copy_patch_embed,
)

_RECOMPUTED_BUFFERS = ("relative_position_index", "attn_mask")


def _to_timm_layout(state_dict):
    """Renames a Microsoft-layout checkpoint (downsample at the end of a stage) to timm's."""
    if "layers.0.downsample.reduction.weight" not in state_dict:
        return state_dict
    renamed = {}
    for key, value in state_dict.items():
        key = re.sub(
            r"^layers\.(\d+)\.downsample",
            lambda match: f"layers.{int(match.group(1)) + 1}.downsample",
            key,
        )
        if key.startswith("head.") and not key.startswith("head.fc."):
            key = "head.fc." + key[len("head.") :]
        renamed[key] = value
    return renamed


def convert_swin(weight_map, model):
    """Fills `weight_map` for a `SwinTransformer` from timm's Swin state dict."""
    weight_map.state_dict = _to_timm_layout(weight_map.state_dict)
    for key in weight_map.state_dict:
        if key.rsplit(".", 1)[-1] in _RECOMPUTED_BUFFERS:
            weight_map.skip(key)

    copy_patch_embed(weight_map, model.get_layer("patch_embed"))
    for stage, depth in enumerate(model.depths):
        if stage > 0:
            merging = model.get_layer(f"layers_{stage}_downsample")
            prefix = f"layers.{stage}.downsample"
            copy_layer_norm(weight_map, merging.norm, f"{prefix}.norm")
            copy_dense(weight_map, merging.reduction, f"{prefix}.reduction")
        for index in range(depth):
            block = model.get_layer(f"layers_{stage}_blocks_{index}")
            prefix = f"layers.{stage}.blocks.{index}"
            weight_map.copy(
                block.attn.relative_position_bias_table,
                f"{prefix}.attn.relative_position_bias_table",
            )
            copy_block(weight_map, block, prefix, ("qkv", "proj"))
    copy_norm_and_head(weight_map, model, head="head.fc")
