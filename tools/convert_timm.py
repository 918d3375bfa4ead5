"""Converts a timm checkpoint into one of our Keras models and saves it.

    python tools/convert_timm.py --model cait_s24_224 \
        --checkpoint cait_s24_224.safetensors --output cait_s24_224.keras

`--checkpoint` is a timm state dict as `.safetensors`, `.pth`/`.pt` or `.bin` (the last ones need
torch); `--output` ends in `.keras` (the whole model: config and weights) or `.weights.h5`
(weights only; rebuild with `keras_spectralkd.models.create(name, ...)` and `load_weights`).
Works for every name of `keras_spectralkd.models.list_models()`. The head size is read from the
checkpoint (`head.weight`); a checkpoint without a head gives a model without one.

The conversion is strict: a tensor missing, left over or of the wrong shape stops it with the
full list. `--check_timm` also builds timm's model from the same checkpoint and prints the max
relative difference of the logits on random images (needs timm and torch).
"""

import json
import os
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """Defined only when run as a script, so tests can import `convert` without absl clashes."""
    flags.DEFINE_string("model", None, "A registered (timm) model name, e.g. cait_s24_224.")
    flags.DEFINE_string("checkpoint", None, "timm state dict: .safetensors, .pth, .pt or .bin; "
                        "or a timm name[.tag] (e.g. cait_s24_224.fb_dist_in1k): timm's pretrained "
                        "weights from its cache, downloaded if online.")
    flags.DEFINE_string("output", None, "Where to save: PATH.keras or PATH.weights.h5.")
    flags.DEFINE_integer("image_size", None, "Input side; default: the preset's.")
    flags.DEFINE_string(
        "model_kwargs", None,
        'JSON constructor overrides for a custom-sized checkpoint, e.g. \'{"depth": 4}\'.',
    )
    flags.DEFINE_string("dtype", None, "Dtype policy of the model, e.g. mixed_bfloat16.")
    flags.DEFINE_boolean(
        "check_timm", False, "Compare the logits with timm's model on random images."
    )
    flags.DEFINE_boolean("overwrite", False, "Replace --output if it exists.")


OUTPUT_SUFFIXES = (".keras", ".weights.h5")


def _log(message):
    print(f"[convert_timm] {message}", flush=True)


def convert(model_name, checkpoint, output, image_size=None, dtype=None, model_kwargs=None,
            check_timm=False, overwrite=False, log=_log):
    """Reads `checkpoint`, converts it into model `model_name` and saves it to `output`.

    Args:
        model_name: a registered name (see `keras_spectralkd.models.list_models()`).
        checkpoint: path of a timm state dict (.safetensors, .pth, .pt, .bin), or a timm name
            with an optional tag ("cait_s24_224.fb_dist_in1k"): timm's pretrained weights.
        output: destination, ending in `.keras` or `.weights.h5`.
        image_size: optional input side (the position table must fit the checkpoint's).
        dtype: optional dtype policy name.
        model_kwargs: optional dict of constructor overrides (depth, embed_dim, ...) for a
            checkpoint of a custom size.
        check_timm: also compare our logits with timm's on 2 random images.
        overwrite: replace an existing `output`.
        log: a function taking one progress line.
    Returns:
        the converted Keras model.
    """
    if not output.endswith(OUTPUT_SUFFIXES):
        raise ValueError(f"--output={output!r} must end in .keras or .weights.h5.")
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"--output={output!r} exists; pass --overwrite to replace it.")
    if check_timm:
        # timm pulls in triton through torchvision, which crashes when TensorFlow was loaded
        # first; importing it before Keras avoids that.
        import timm  # noqa: F401

    from keras_spectralkd.convert import from_timm, load_state_dict, pretrained
    from keras_spectralkd.models import list_models, model_family

    if model_name not in list_models():
        raise ValueError(
            f"--model={model_name!r} is not a registered model; expected one of: "
            f"{', '.join(list_models())}."
        )
    started = time.perf_counter()
    log(f"reading {checkpoint} ...")
    if pretrained.is_timm_pretrained_name(checkpoint):  # timm's weights, e.g. "cait_s24_224.fb_dist_in1k"
        if pretrained.split_name(checkpoint)[0] != model_name:
            raise ValueError(
                f"--checkpoint={checkpoint!r} names timm weights of another model than "
                f"--model={model_name!r}."
            )
        state = pretrained.load_pretrained_state_dict(checkpoint)
    else:
        state = load_state_dict(checkpoint)
    num_values = sum(int(v.size) for v in state.values())
    log(f"read {len(state)} tensors, {num_values / 1e6:.1f}M values "
        f"({time.perf_counter() - started:.1f} s)")

    create_kwargs = dict(model_kwargs or {})
    if image_size is not None:
        create_kwargs["image_size"] = image_size
    if dtype is not None:
        create_kwargs["dtype"] = dtype
    log(f"building {model_name} ({model_family(model_name)} family) and assigning weights ...")
    model = from_timm(model_name, state, **create_kwargs)
    log(f"converted: {model.count_params() / 1e6:.1f}M parameters, "
        f"{getattr(model, 'num_classes', None) or 'no'} classes, {model.num_units} units "
        f"({time.perf_counter() - started:.1f} s)")

    if check_timm:
        error = _compare_with_timm(model_name, state, model, model_kwargs)
        log(f"timm check: max |ours - timm| / max(1, max |timm|) = {error:.2e} on the logits")

    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    log(f"saving to {output} ...")
    if output.endswith(".weights.h5"):
        model.save_weights(output, overwrite=True)
    else:
        model.save(output, overwrite=True)
    log(f"done: {output} ({os.path.getsize(output) / 1e6:.1f} MB, "
        f"{time.perf_counter() - started:.1f} s in all)")
    return model


def _compare_with_timm(model_name, state, model, model_kwargs=None):
    """Max relative logit difference between `model` and timm's model loaded from `state`.

    Our constructor overrides carry timm's argument names, except `image_size` (timm's
    `img_size`, taken from the model's input shape).
    """
    import numpy as np
    import timm
    import torch
    from keras import ops

    timm_name = {"cait_xs24_224": "cait_xs24_384"}.get(model_name, model_name)
    height, width = model.input_shape[1:3]
    timm_kwargs = {k: v for k, v in (model_kwargs or {}).items() if k != "image_size"}
    reference = timm.create_model(
        timm_name,
        pretrained=False,
        **timm_kwargs,
        num_classes=getattr(model, "num_classes", 0) or 0,
        img_size=(height, width),
    ).eval()
    reference.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    images = np.random.default_rng(0).normal(size=(2, height, width, 3)).astype("float32")
    with torch.inference_mode():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    ours = ops.convert_to_numpy(ops.cast(model(images), "float32"))
    return float(np.abs(ours - expected).max() / max(1.0, np.abs(expected).max()))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    for name in ("model", "checkpoint", "output"):
        if not FLAGS[name].value:
            raise app.UsageError(f"--{name} is required.")
    convert(
        FLAGS.model,
        FLAGS.checkpoint,
        FLAGS.output,
        image_size=FLAGS.image_size,
        dtype=FLAGS.dtype,
        model_kwargs=json.loads(FLAGS.model_kwargs) if FLAGS.model_kwargs else None,
        check_timm=FLAGS.check_timm,
        overwrite=FLAGS.overwrite,
    )


if __name__ == "__main__":
    # Running from a checkout without installing: make the package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    define_flags()
    app.run(main)
