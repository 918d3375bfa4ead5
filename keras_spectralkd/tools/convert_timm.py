"""Converts a timm checkpoint into one of our Keras models and saves it.

    spectralkd-convert --model=cait_s24_224 --checkpoint=cait_s24_224.safetensors \
        --output=cait_s24_224.keras
    (or: python -m keras_spectralkd.tools.convert_timm ..., python tools/convert_timm.py ...)

`--checkpoint` is a timm state dict as `.safetensors`, `.pth`/`.pt` or `.bin` (the last ones need
torch); `--output` ends in `.keras` (the whole model: config and weights) or `.weights.h5`
(weights only; rebuild with `keras_spectralkd.models.create(name, ...)` and `load_weights`), in
an existing folder. Works for every name of `keras_spectralkd.models.list_models()`. The head
size is read from the checkpoint (`head.weight`); a checkpoint without a head gives a model
without one.

The conversion is strict: a tensor missing, left over or of the wrong shape stops it (the Python
`convert` function lists them all; the command line prints the first ones), and a checkpoint of
another family is named as such. The output is written to a temporary file and renamed, so a
failed conversion leaves no half-written file. `--check_timm` also builds timm's model from the
same checkpoint and prints the max relative difference of the logits on random images (needs
timm and torch). Exit status: 0 done, 2 usage error, 1 failure (keras_spectralkd.tools.cli).
"""

import os
import sys
import time

from keras_spectralkd.tools import cli

PROG = "spectralkd-convert"


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
        raise cli.UsageError(f"--output={output!r} must end in .keras or .weights.h5.")
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"--output={output!r} exists; pass --overwrite to replace it.")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"The folder {directory!r} of --output={output!r} does not exist; create it first."
        )
    if check_timm:
        # timm pulls in triton through torchvision, and triton imported after TensorFlow
        # segfaults (tests/conftest.py); this package has loaded TensorFlow already, so make
        # triton unavailable (torch and torchvision treat it as optional).
        sys.modules.setdefault("triton", None)
        import timm  # noqa: F401

    from keras_spectralkd.convert import ConversionError, from_timm, load_state_dict, pretrained
    from keras_spectralkd.models import model_family

    cli.check_model_name("model", model_name)
    started = time.perf_counter()
    if pretrained.is_timm_pretrained_name(checkpoint):  # timm's weights: "cait_s24_224.fb_dist_in1k"
        if pretrained.split_name(checkpoint)[0] != model_name:
            raise cli.UsageError(
                f"--checkpoint={checkpoint!r} names timm weights of another model than "
                f"--model={model_name!r}."
            )
        log(f"fetching timm's pretrained weights {checkpoint} ...")
        state = pretrained.load_pretrained_state_dict(checkpoint)
    else:
        if not os.path.exists(checkpoint):
            raise FileNotFoundError(f"--checkpoint={checkpoint!r} does not exist.")
        log(f"reading {checkpoint} ...")
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
    try:
        model = from_timm(model_name, state, **create_kwargs)
    except ConversionError as error:
        raise ConversionError(_first_problems(error)) from None
    log(f"converted: {model.count_params() / 1e6:.1f}M parameters, "
        f"{getattr(model, 'num_classes', None) or 'no'} classes, {model.num_units} units "
        f"({time.perf_counter() - started:.1f} s)")

    if check_timm:
        error = _compare_with_timm(model_name, state, model, model_kwargs)
        log(f"timm check: max |ours - timm| / max(1, max |timm|) = {error:.2e} on the logits")

    log(f"saving to {output} ...")
    _save_atomically(model, output)
    log(f"done: {output} ({os.path.getsize(output) / 1e6:.1f} MB, "
        f"{time.perf_counter() - started:.1f} s in all)")
    return model


def _first_problems(error, count=3):
    """A ConversionError's first line and its first `count` problems (the CLI prints one line;
    `from_timm` in Python gives the full list)."""
    lines = str(error).splitlines()
    problems = [line.strip() for line in lines[1:]]
    shown = "; ".join(problems[:count])
    more = f"; ... and {len(problems) - count} more" if len(problems) > count else ""
    return f"{lines[0]} {shown}{more}" if problems else lines[0]


def _save_atomically(model, output):
    """Saves to a temporary file beside `output` and renames it into place, so a failed or
    interrupted save never leaves a half-written `output` (nor replaces a good one)."""
    suffix = ".weights.h5" if output.endswith(".weights.h5") else ".keras"
    tmp = f"{output[: -len(suffix)]}.tmp-{os.getpid()}{suffix}"
    try:
        if suffix == ".weights.h5":
            model.save_weights(tmp, overwrite=True)
        else:
            model.save(tmp, overwrite=True)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


def build_parser():
    parser = cli.parser(PROG, __doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="A registered (timm) model name, e.g. cait_s24_224.")
    parser.add_argument("--checkpoint", required=True,
                        help="timm state dict (.safetensors, .pth, .pt or .bin), or a timm "
                        "name[.tag] (e.g. cait_s24_224.fb_dist_in1k): timm's pretrained weights "
                        "from its cache, downloaded if online.")
    parser.add_argument("--output", required=True,
                        help="Where to save: PATH.keras or PATH.weights.h5 (existing folder).")
    parser.add_argument("--image_size", type=int, default=None,
                        help="Input side; default: the preset's.")
    parser.add_argument("--model_kwargs", type=cli.json_object, default=None,
                        help='JSON constructor overrides for a custom-sized checkpoint, e.g. '
                             '\'{"depth": 4}\'.')
    parser.add_argument("--dtype", default=None,
                        help="Dtype policy of the model, e.g. mixed_bfloat16.")
    parser.add_argument("--check_timm", action="store_true",
                        help="Compare the logits with timm's model on random images.")
    parser.add_argument("--overwrite", action="store_true", help="Replace --output if it exists.")
    return parser


def main(argv=None):
    """The `spectralkd-convert` command; returns the exit status."""

    def body(args):
        convert(args.model, args.checkpoint, args.output, image_size=args.image_size,
                dtype=args.dtype, model_kwargs=args.model_kwargs, check_timm=args.check_timm,
                overwrite=args.overwrite)

    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
