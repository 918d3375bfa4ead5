"""Spectral analysis of a backbone (and optionally a student): profiles, plots, layer pairs.

Runs SPEC.md 5's protocol: `--num_images` (32) images, resized (shorter side to 256, bicubic),
center-cropped to 224, normalised with the ImageNet mean/std; the model in inference mode.
Writes to `--output_dir`:

    model_profile.json / .csv      the model's (teacher's) Profile
    student_profile.json / .csv    with --student
    comparison.json                with --student: correlation and spectral distance
    intensity.png, spectra.png, entropy_magnitude.png

and prints the suggested layer pairs as the flag the recipes take, e.g.
`--layer_pairs=0:0,1:1,6:18,7:19,8:20,9:21,10:22,11:23` (student:teacher), for the student given
by --student or --student_depth.

Examples:

    # The paper's teacher on 32 ImageNet validation images, pairs for a 12-block DeiT:
    spectralkd-analyze --model=cait_s24_224 --weights=cait_s24_224.safetensors \
        --data=/data/imagenet --student_depth=12 --output_dir=runs/cait_analysis

    # Teacher vs a distilled student (a .keras file saved by the recipes):
    spectralkd-analyze --model=cait_s24_224 --weights=cait.safetensors \
        --student=deit_tiny_patch16_224 --student_weights=runs/deit/student.keras \
        --data=imagenet2012 --data_dir=~/tensorflow_datasets --output_dir=runs/compare

    # Offline, anywhere (built-in Fashion-MNIST, random weights: a smoke test, not science):
    spectralkd-analyze --model=deit_tiny_patch16_224 --output_dir=/tmp/analysis

    # Any Keras model, its layers named (a .keras file, or keras.applications.<Name>):
    spectralkd-analyze --model=keras.applications.ResNet50 --weights=imagenet \
        --layers=conv2_block3_out,conv3_block4_out,conv4_block6_out,conv5_block3_out \
        --student=my_student.keras --student_layers=stage_0,stage_1,stage_2,stage_3 \
        --output_dir=runs/resnet_analysis

Models (`--model`, `--student`): a registered name (its units are profiled, all of them), a
`.keras` file, or `keras.applications.<Name>` (built for `--image_size`, default 224, with
`--weights` passed to Keras: None for random, `imagenet`, or a weights file). The last two are
profiled at the layers `--layers` / `--student_layers` name (keras_spectralkd.taps says how maps,
channels-first maps and token sequences are read), and the suggested pairs then name layers (a
Python list for `Distiller(layer_pairs=...)`). Images get SPEC.md 5's ImageNet normalisation
whatever the model; a `keras.applications` model that expects raw pixels sees normalised ones.

Data (`--data`), read with keras_spectralkd.data's loaders: `fashion_mnist` (built in, offline:
the Debian `dataset-fashion-mnist` files or Keras' cache; test split, first images), a folder of
images (ImageNet layout `<root>/val/<class>/*.JPEG`, `--split` naming another subfolder, or any
tree of .jpg/.jpeg/.png/.bmp/.gif; `--num_images` are drawn from the sorted file list with a
fixed seed, so every class has a chance and reruns see the same images), or a TFDS name read
from `--data_dir` without downloading (`--split`, default `validation`; first images).

A file of the folder that cannot be decoded (a corrupt or mislabelled JPEG) is SKIPPED with a
warning naming it, and the next file of the seeded sample takes its place: one bad file in a
50,000-image validation folder should not stop a 32-image statistic, and the warning says which
file to fix. A source with fewer images than `--num_images` is analysed whole, with a warning
(the profile records the true count). Also `python -m keras_spectralkd.tools.analyze` or
`python tools/analyze.py`. Exit status: 0 done, 2 usage error, 1 failure
(keras_spectralkd.tools.cli).
"""

import json
import os
import sys

import numpy as np

from keras_spectralkd.tools import cli

PROG = "spectralkd-analyze"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


# === Models ===
APPLICATIONS = "keras.applications."


def is_keras_model_spec(name):
    """Whether `--model` names a `.keras` file or a `keras.applications` model (not ours)."""
    return name.startswith(APPLICATIONS) or name.endswith(".keras")


def load_keras_model(spec, weights=None, num_classes=None, image_size=None):
    """A `.keras` file, or `keras.applications.<Name>` built for (image_size, image_size, 3)."""
    import keras

    if spec.endswith(".keras"):
        if not os.path.isfile(os.path.expanduser(spec)):
            raise FileNotFoundError(f"Model file {spec!r} does not exist.")
        return keras.saving.load_model(os.path.expanduser(spec))
    builder = getattr(keras.applications, spec[len(APPLICATIONS):], None)
    if not callable(builder):
        raise ValueError(f"{spec!r} is not a keras.applications model (e.g. "
                         "keras.applications.ResNet50).")
    if weights is None:
        _warn(f"{spec} has RANDOM weights (no --weights given).")
    size = image_size or 224
    return builder(weights=weights, input_shape=(size, size, 3),
                   classes=1000 if num_classes is None else num_classes)


def load_backbone(name, weights=None, model_kwargs=None, num_classes=None, image_size=None):
    """Model `name` with `weights` (see --weights; `models.create`); random weights with a loud
    warning. `num_classes` None: the weights' head size (1000 for random weights). A `.keras`
    file or `keras.applications.<Name>` goes to `load_keras_model`."""
    from keras_spectralkd import models

    if is_keras_model_spec(name):
        return load_keras_model(name, weights, num_classes, image_size)
    if weights is None:
        banner = "!" * 78
        _warn(
            f"\n{banner}\n!!! {name} has RANDOM weights (no --weights given): its spectra "
            "describe an\n!!! untrained network, not the paper's analysis. Pass --weights for "
            f"that.\n{banner}"
        )
    return models.create(
        name, weights, num_classes="auto" if num_classes is None else num_classes,
        image_size=image_size, **(model_kwargs or {}),
    )


def model_image_size(model):
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else None
    if shape is None or shape[1] is None:
        raise ValueError(f"Cannot read the input size of {model.name}; pass --image_size.")
    return int(shape[1])


# === Images (SPEC.md 5 protocol) ===
def load_images(data, num_images, image_size, data_dir=None, split=None, seed=0):
    """`num_images` preprocessed images: (N, image_size, image_size, 3) float32, normalised.

    Eval transform of DeiT (keras_spectralkd.data.transforms.EvalTransform): shorter side to
    image_size / 0.875 (256 for 224), bicubic, center crop, ImageNet mean/std.
    """
    import tensorflow as tf

    from keras_spectralkd.data.transforms import EvalTransform

    if num_images < 1:
        raise ValueError(f"--num_images must be >= 1; got {num_images}.")
    if data == "fashion_mnist":
        raw = _fashion_mnist_test_images(num_images)
        _warn_if_fewer(raw, num_images, "the Fashion-MNIST test split")
    elif os.path.isdir(os.path.expanduser(data)):
        raw = _folder_images(os.path.expanduser(data), num_images, seed, split)
    else:
        raw = _tfds_images(data, num_images, data_dir, split or "validation")
        _warn_if_fewer(raw, num_images, f"TFDS {data!r} split {split or 'validation'!r}")
    transform = EvalTransform(image_size)
    return np.stack([transform(tf.convert_to_tensor(image)).numpy() for image in raw])


def _fashion_mnist_test_images(num_images):
    """The first test images, (28, 28) uint8 (keras_spectralkd.data's offline loader)."""
    from keras_spectralkd.data.fashion_mnist import load_fashion_mnist

    (_, _), (images, _) = load_fashion_mnist()[0]
    return list(images[:num_images])


def _folder_images(root, num_images, seed, split=None):
    """Encoded files: `root/<split>/<class>/*` (ImageNet layout, keras_spectralkd.data's lister)
    when that folder exists (split: --split, else val or validation), else any image under root.
    A seeded sample of `num_images` from the sorted list, so every class has a chance."""
    import tensorflow as tf

    from keras_spectralkd.data.imagenet import list_image_folder

    splits = [split] if split else ["val", "validation"]
    found = [name for name in splits if os.path.isdir(os.path.join(root, name))]
    if found:
        files, _, _ = list_image_folder(root, found[0])
        root = os.path.join(root, found[0])
    else:
        files = sorted(
            os.path.join(directory, file)
            for directory, _, names in os.walk(root)
            for file in names
            if file.lower().endswith(IMAGE_EXTENSIONS)
        )
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {root!r}.")
    # A seeded order of all files; the first `num_images` that decode are used, in file order.
    order = np.random.default_rng(seed).permutation(len(files))
    chosen, skipped = {}, []  # chosen: file index -> its encoded bytes
    for index in order:
        if len(chosen) == num_images:
            break
        try:
            encoded = tf.io.read_file(files[index])
            tf.io.decode_image(encoded, channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            skipped.append(files[index])
            _warn(f"skipping {files[index]!r}: not a decodable image "
                  f"({' '.join(str(error.message).split())[:120]})")
            continue
        chosen[int(index)] = encoded
    if not chosen:
        raise ValueError(f"None of the {len(files)} image files under {root!r} can be decoded.")
    images = [chosen[i] for i in sorted(chosen)]
    _warn_if_fewer(images, num_images, f"{root!r} ({len(skipped)} undecodable files skipped)"
                   if skipped else repr(root))
    print(f"Analysing {len(images)} images from {root}.", file=sys.stderr)
    return images


def _warn(message):
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def _warn_if_fewer(images, num_images, source):
    if len(images) < num_images:
        _warn(f"--num_images={num_images} but {source} has only {len(images)} usable images; "
              f"analysing {len(images)}.")


def _tfds_images(name, num_images, data_dir, split):
    """The first images of a PREPARED TFDS split; never downloads (tfds.load would retry for
    minutes offline), unlike keras_spectralkd.data.imagenet.tfds_builder."""
    import tensorflow_datasets as tfds

    from keras_spectralkd.data.imagenet import tfds_examples

    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except Exception as error:  # noqa: BLE001 - tfds raises several types for unknown names
        raise ValueError(
            f"--data={name!r} is neither 'fashion_mnist', an existing folder, nor a TFDS "
            f"dataset ({error})."
        ) from error
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared under data_dir={data_dir!r}; prepare it "
            "first (e.g. imagenet2012 needs its manual files), this tool never downloads."
        )
    dataset, _ = tfds_examples(builder, split, shuffle_files=False)
    return [image for image, _ in dataset.take(num_images)]


# === The analysis ===
def analyze(
    model,
    weights=None,
    model_kwargs=None,
    student=None,
    student_weights=None,
    student_kwargs=None,
    num_classes=None,
    data="fashion_mnist",
    data_dir=None,
    split=None,
    num_images=32,
    batch_size=8,
    image_size=None,
    seed=0,
    entropy=True,
    student_depth=None,
    num_front=None,
    num_back=None,
    output_dir="analysis",
    layers=None,
    student_layers=None,
):
    """Everything `main` does, callable from Python. Returns a dict of the results.

    `layers` / `student_layers`: layer names (a list, or one comma-separated string) to profile
    instead of the backbone's units; needed for a model that is not one of ours."""
    from keras_spectralkd import analysis

    teacher = load_backbone(model, weights, model_kwargs, num_classes, image_size)
    size = image_size or model_image_size(teacher)
    images = load_images(data, num_images, size, data_dir, split, seed)
    os.makedirs(output_dir, exist_ok=True)
    results = {"output_dir": output_dir, "files": {}}
    profiles, labels = [], []
    roles = [("model", model, teacher, _names(layers))]
    if student is not None:
        student_model = load_backbone(student, student_weights, student_kwargs, num_classes, size)
        roles.append(("student", student, student_model, _names(student_layers)))
    for role, name, backbone, layer_names in roles:
        profile = analysis.profile_model(
            backbone, images, batch_size=batch_size, entropy=entropy, name=name, verbose=1,
            layer_names=layer_names,
        )
        for extension in ("json", "csv"):
            path = profile.save(os.path.join(output_dir, f"{role}_profile.{extension}"))
            results["files"][f"{role}_profile_{extension}"] = path
        results[f"{role}_profile"] = profile
        profiles.append(profile)
        labels.append(f"{role if role == 'student' else 'teacher'}: {name}")
    if student is None:
        labels = [model]

    depth = student_depth
    if depth is None and student is not None:
        depth = profiles[1] if profiles[1].layer_names else profiles[1].depth
    pairs = None
    if depth is not None:
        pairs = analysis.select_layer_pairs(profiles[0], depth, num_front, num_back)
        results["layer_pairs"] = pairs
        if all(isinstance(unit, int) for pair in pairs for unit in pair):
            results["layer_pairs_flag"] = "--layer_pairs=" + analysis.format_layer_pairs(pairs)
        else:
            results["layer_pairs_python"] = "layer_pairs=" + repr(pairs)
    # The comparison and the figures place units by position; named pairs say which.
    unit_pairs = None if pairs is None else [
        (_position(profiles[1], s) if student is not None else s, profiles[0].unit_of(t))
        for s, t in pairs
    ]
    if student is not None:
        comparison = analysis.compare_profiles(profiles[0], profiles[1], pairs=unit_pairs)
        results["comparison"] = comparison
        path = os.path.join(output_dir, "comparison.json")
        with open(path, "w") as file:
            json.dump(comparison.to_dict(), file, indent=1)
        results["files"]["comparison"] = path
    figures = analysis.save_profile_figures(output_dir, profiles, labels, layer_pairs=unit_pairs)
    results["files"].update(figures)
    return results


def _names(layers):
    """`--layers` as a list of names (None stays None)."""
    if layers is None or isinstance(layers, (list, tuple)):
        return layers
    names = [name.strip() for name in str(layers).split(",") if name.strip()]
    if not names:
        raise ValueError(f"--layers={layers!r} names no layer; expected 'name1,name2,...'.")
    return names


def _position(profile, unit):
    return profile.unit_of(unit) if isinstance(unit, str) else unit


def summary(results):
    """Human-readable lines: per-unit intensity, the comparison, the files, the pair flag."""
    lines = []
    for role in ("model", "student"):
        profile = results.get(f"{role}_profile")
        if profile is None:
            continue
        lines.append(
            f"{role} {profile.model_name}: {profile.num_images} images, {len(profile)} units"
        )
        lines.append("  unit  rel.depth  C     intensity   entropy   mean|X|")
        for i, unit in enumerate(profile.units):
            entropy = "-" if profile.entropy is None else f"{profile.entropy[i]:.4f}"
            lines.append(
                f"  {unit:4d}  {profile.relative_depth[i]:9.3f}  {profile.num_channels[i]:<4d}  "
                f"{profile.intensity[i]:.6f}  {entropy:>8}  {profile.magnitude[i]:.4f}"
            )
    if "comparison" in results:
        comparison = results["comparison"]
        lines.append(
            f"intensity-profile correlation {comparison.intensity_correlation:.4f}, "
            f"spectral distance {comparison.spectral_distance:.4f} over {len(comparison.pairs)} "
            "pairs"
        )
    lines.append("wrote: " + ", ".join(sorted(results["files"].values())))
    if "layer_pairs_flag" in results:
        lines.append("suggested layer pairs (student:teacher):")
        lines.append(results["layer_pairs_flag"])
    elif "layer_pairs_python" in results:
        lines.append("suggested layer pairs (student, teacher), for Distiller(layer_pairs=...):")
        lines.append(results["layer_pairs_python"])
    else:
        lines.append("pass --student or --student_depth for suggested layer pairs.")
    return lines


def build_parser():
    parser = cli.parser(PROG, __doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model", required=True,
        help="Registered model name (timm's), e.g. cait_s24_224; or a .keras file, or "
             "keras.applications.<Name> (then name its layers with --layers).")
    add("--layers", default=None,
        help="Comma-separated layer names of --model to profile (any functional Keras model) "
             "instead of its units.")
    add("--student_layers", default=None,
        help="Comma-separated layer names of --student to profile.")
    add("--weights", default=None,
        help="A .keras model, a .weights.h5 file, a timm checkpoint (.safetensors/.pth/.bin), or "
             "'timm' (timm's pretrained weights for --model, which may carry timm's tag). "
             "Without it the weights are RANDOM.")
    add("--model_kwargs", type=cli.json_object, default=None,
        help='JSON constructor overrides, e.g. \'{"depth": 4}\'.')
    add("--student", default=None, help="Optional second model (e.g. a distilled student).")
    add("--student_weights", default=None, help="Weights of --student (same forms as --weights).")
    add("--student_kwargs", type=cli.json_object, default=None,
        help="JSON constructor overrides of --student.")
    add("--num_classes", type=int, default=None,
        help="Head size; it must match the weights' (default: theirs; 1000 for random weights).")
    add("--data", default="fashion_mnist",
        help="fashion_mnist, an image folder, or a TFDS dataset name.")
    add("--data_dir", default=None, help="TFDS data_dir (for a TFDS --data).")
    add("--split", default=None,
        help="TFDS split (default: validation), or the image folder's split subfolder.")
    add("--num_images", type=int, default=32, help="Images analysed (SPEC.md 5: 32).")
    add("--batch_size", type=int, default=8, help="Images per forward pass.")
    add("--image_size", type=int, default=None, help="Input side in pixels (default: the model's).")
    add("--seed", type=int, default=0, help="Seed of the image sample drawn from a folder.")
    add("--entropy", dest="entropy", action="store_true", default=True,
        help="Compute the channel entropy (a second pass; the default).")
    add("--noentropy", dest="entropy", action="store_false", help="Skip the channel entropy.")
    add("--student_depth", type=int, default=None, help="Units of the student to select pairs for.")
    add("--num_front", type=int, default=None,
        help="Teacher units taken from the start (default: auto).")
    add("--num_back", type=int, default=None,
        help="Teacher units taken from the end (default: auto).")
    add("--output_dir", default="analysis", help="Where the profiles and figures go.")
    return parser


def main(argv=None):
    """The `spectralkd-analyze` command; returns the exit status."""

    def body(args):
        for flag in ("model", "student"):
            name = getattr(args, flag)
            if name is not None and not is_keras_model_spec(name):
                cli.check_model_name(flag, name)
        for flag in ("num_images", "batch_size"):
            if getattr(args, flag) < 1:
                raise cli.UsageError(f"--{flag}={getattr(args, flag)} must be >= 1.")
        results = analyze(**vars(args))
        print("\n".join(summary(results)))

    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
