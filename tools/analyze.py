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
    python tools/analyze.py --model=cait_s24_224 --weights=cait_s24_224.safetensors \
        --data=/data/imagenet --student_depth=12 --output_dir=runs/cait_analysis

    # Teacher vs a distilled student (a .keras file saved by the recipes):
    python tools/analyze.py --model=cait_s24_224 --weights=cait.safetensors \
        --student=deit_tiny_patch16_224 --student_weights=runs/deit/student.keras \
        --data=imagenet2012 --data_dir=~/tensorflow_datasets --output_dir=runs/compare

    # Offline, anywhere (built-in Fashion-MNIST, random weights: a smoke test, not science):
    python tools/analyze.py --model=deit_tiny_patch16_224 --output_dir=/tmp/analysis

Data (`--data`), read with keras_spectralkd.data's loaders: `fashion_mnist` (built in, offline:
the Debian `dataset-fashion-mnist` files or Keras' cache; test split, first images), a folder of
images (ImageNet layout `<root>/val/<class>/*.JPEG`, `--split` naming another subfolder, or any
tree of .jpg/.jpeg/.png/.bmp/.gif; `--num_images` are drawn from the sorted file list with a
fixed seed, so every class has a chance and reruns see the same images), or a TFDS name read
from `--data_dir` without downloading (`--split`, default `validation`; first images).
"""

import json
import os
import sys

import numpy as np
from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def define_flags():
    flags.DEFINE_string("model", None, "Registered model name (timm's), e.g. cait_s24_224.")
    flags.DEFINE_string(
        "weights",
        None,
        "A .keras model, a .weights.h5 file, or a timm checkpoint (.safetensors/.pth/.bin). "
        "Without it the weights are RANDOM.",
    )
    flags.DEFINE_string("model_kwargs", None, "JSON constructor overrides, e.g. '{\"depth\": 4}'.")
    flags.DEFINE_string("student", None, "Optional second model (e.g. a distilled student).")
    flags.DEFINE_string("student_weights", None, "Weights of --student (same forms as --weights).")
    flags.DEFINE_string("student_kwargs", None, "JSON constructor overrides of --student.")
    flags.DEFINE_integer(
        "num_classes",
        None,
        "Head size for random or .weights.h5 models (default 1000; timm checkpoints set it).",
    )
    flags.DEFINE_string(
        "data", "fashion_mnist", "fashion_mnist, an image folder, or a TFDS dataset name."
    )
    flags.DEFINE_string("data_dir", None, "TFDS data_dir (for a TFDS --data).")
    flags.DEFINE_string(
        "split", None, "TFDS split (default: validation), or the image folder's split subfolder."
    )
    flags.DEFINE_integer("num_images", 32, "Images analysed (SPEC.md 5: 32).")
    flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
    flags.DEFINE_integer("image_size", None, "Input side in pixels (default: the model's).")
    flags.DEFINE_integer("seed", 0, "Seed of the image sample drawn from a folder.")
    flags.DEFINE_bool("entropy", True, "Compute the channel entropy (a second pass).")
    flags.DEFINE_integer("student_depth", None, "Units of the student to select pairs for.")
    flags.DEFINE_integer("num_front", None, "Teacher units taken from the start (default: auto).")
    flags.DEFINE_integer("num_back", None, "Teacher units taken from the end (default: auto).")
    flags.DEFINE_string("output_dir", "analysis", "Where the profiles and figures go.")
    flags.mark_flag_as_required("model")


# === Models ===
def load_backbone(name, weights=None, model_kwargs=None, num_classes=None, image_size=None):
    """Builds model `name` with `weights` (see --weights); random weights with a loud warning."""
    from keras_spectralkd import models

    kwargs = dict(model_kwargs or {})
    if image_size is not None:
        kwargs["image_size"] = image_size
    if weights is None:
        banner = "!" * 78
        logging.warning(
            "\n%s\n!!! %s has RANDOM weights (no --weights given): its spectra describe an\n"
            "!!! untrained network, not the paper's analysis. Pass --weights for that.\n%s",
            banner,
            name,
            banner,
        )
        return models.create(
            name, num_classes=1000 if num_classes is None else num_classes, **kwargs
        )
    path = os.path.expanduser(weights)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--weights file {path!r} does not exist.")
    if path.endswith(".keras"):
        import keras

        model = keras.saving.load_model(path, compile=False)
        if not hasattr(model, "forward_intermediates"):
            raise ValueError(
                f"{path!r} holds a {type(model).__name__} without `forward_intermediates`; "
                "expected a keras_spectralkd backbone."
            )
        return model
    if path.endswith(".weights.h5"):
        model = models.create(
            name, num_classes=1000 if num_classes is None else num_classes, **kwargs
        )
        model.load_weights(path)
        return model
    from keras_spectralkd.convert.timm import from_timm

    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return from_timm(name, path, **kwargs)


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
    elif os.path.isdir(os.path.expanduser(data)):
        raw = _folder_images(os.path.expanduser(data), num_images, seed, split)
    else:
        raw = _tfds_images(data, num_images, data_dir, split or "validation")
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
    if len(files) > num_images:
        chosen = np.random.default_rng(seed).choice(len(files), num_images, replace=False)
        files = [files[i] for i in sorted(chosen)]
    logging.info("Analysing %d images from %s.", len(files), root)
    return [tf.io.read_file(path) for path in files]


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
):
    """Everything `main` does, callable from Python. Returns a dict of the results."""
    from keras_spectralkd import analysis

    teacher = load_backbone(model, weights, model_kwargs, num_classes, image_size)
    size = image_size or model_image_size(teacher)
    images = load_images(data, num_images, size, data_dir, split, seed)
    os.makedirs(output_dir, exist_ok=True)
    results = {"output_dir": output_dir, "files": {}}
    profiles, labels = [], []
    roles = [("model", model, teacher)]
    if student is not None:
        student_model = load_backbone(student, student_weights, student_kwargs, num_classes, size)
        roles.append(("student", student, student_model))
    for role, name, backbone in roles:
        profile = analysis.profile_model(
            backbone, images, batch_size=batch_size, entropy=entropy, name=name, verbose=1
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
        depth = profiles[1].depth
    pairs = None
    if depth is not None:
        pairs = analysis.select_layer_pairs(profiles[0], depth, num_front, num_back)
        results["layer_pairs"] = pairs
        results["layer_pairs_flag"] = "--layer_pairs=" + analysis.format_layer_pairs(pairs)
    if student is not None:
        comparison = analysis.compare_profiles(profiles[0], profiles[1], pairs=pairs)
        results["comparison"] = comparison
        path = os.path.join(output_dir, "comparison.json")
        with open(path, "w") as file:
            json.dump(comparison.to_dict(), file, indent=1)
        results["files"]["comparison"] = path
    figures = analysis.save_profile_figures(output_dir, profiles, labels, layer_pairs=pairs)
    results["files"].update(figures)
    return results


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
    else:
        lines.append("pass --student or --student_depth for suggested layer pairs.")
    return lines


def main(argv):
    del argv
    results = analyze(
        model=FLAGS.model,
        weights=FLAGS.weights,
        model_kwargs=json.loads(FLAGS.model_kwargs) if FLAGS.model_kwargs else None,
        student=FLAGS.student,
        student_weights=FLAGS.student_weights,
        student_kwargs=json.loads(FLAGS.student_kwargs) if FLAGS.student_kwargs else None,
        num_classes=FLAGS.num_classes,
        data=FLAGS.data,
        data_dir=FLAGS.data_dir,
        split=FLAGS.split,
        num_images=FLAGS.num_images,
        batch_size=FLAGS.batch_size,
        image_size=FLAGS.image_size,
        seed=FLAGS.seed,
        entropy=FLAGS.entropy,
        student_depth=FLAGS.student_depth,
        num_front=FLAGS.num_front,
        num_back=FLAGS.num_back,
        output_dir=FLAGS.output_dir,
    )
    print("\n".join(summary(results)))
    sys.stdout.flush()


if __name__ == "__main__":
    # Running from a checkout without installing: make the package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    define_flags()
    app.run(main)
