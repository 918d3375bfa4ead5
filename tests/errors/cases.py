"""One trigger per row of docs/errors.md: `CASES[row_id](tmp_path, capsys) -> the text a user
sees` (for a raised exception: "Type: message"; for a command-line tool: "exit N: <stderr line>").
"""

import json
import os
import sys

import keras
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: tiny_backbone

from tiny_backbone import TinyBackbone  # noqa: E402

CASES = {}
TINY_DEIT = {"patch_size": 4, "embed_dim": 8, "depth": 2, "num_heads": 2}


def case(row_id):
    def register(fn):
        CASES[row_id] = fn
        return fn

    return register


def raised(fn, *args, **kwargs):
    """The "Type: message" of what `fn` raises (the test fails if it raises nothing)."""
    try:
        fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the point is what users see
        return f"{type(error).__name__}: {error}"
    raise AssertionError(f"{fn} raised nothing")


def tool_run(name, argv, capsys, contains=""):
    """A tool's `main(argv)` in-process: "exit N: <its last stderr line naming the tool (and
    holding `contains`)>"."""
    import importlib

    capsys.readouterr()
    status = importlib.import_module(f"keras_spectralkd.tools.{name}").main(
        [str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines()
             if line.startswith("spectralkd-") and contains in line]
    return f"exit {status}: " + (lines[-1] if lines else err)


def _tiny(width=6, depth=3, patch_size=2, name=None):
    return TinyBackbone(width=width, depth=depth, patch_size=patch_size, name=name)


class NoInfoBackbone(keras.Model):
    """A custom backbone with `forward_intermediates` but no `feature_info`: its maps live in a
    dict keyed by unit, so an out-of-range unit raises KeyError inside it (the issue's case)."""

    def __init__(self, depth=3, flat_maps=False, num_classes=4, **kwargs):
        super().__init__(**kwargs)
        self.depth, self.flat_maps = depth, flat_maps
        self.embed = keras.layers.Conv2D(6, 2, strides=2)
        self.units = [keras.layers.Dense(6) for _ in range(depth)]
        self.head = keras.layers.Dense(num_classes)

    def forward_intermediates(self, images, indices, training=False):
        x = self.embed(images)
        maps = {}
        for i, unit in enumerate(self.units):
            x = x + unit(x)
            maps[i] = keras.ops.reshape(x, (-1, 16, 6)) if self.flat_maps else x
        logits = self.head(keras.ops.mean(x, axis=(1, 2)))
        return logits, [maps[i] for i in indices]

    def call(self, images, training=False):
        return self.forward_intermediates(images, [], training)[0]


IMAGES = np.zeros((2, 8, 8, 3), "float32")


def _distiller(teacher, student, pairs, mode="soft", **kwargs):
    from keras_spectralkd import Distiller

    return Distiller(teacher, student, layer_pairs=pairs, mode=mode, **kwargs)


def _classifier(num_classes, name):
    """A plain functional classifier: its head size is known before it runs."""
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes)], name=name)


# === Distiller ===
@case("D1")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 0), (2, 9)])


@case("D2")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 0), (3, 3)])


@case("D3")
def _(tmp_path, capsys):
    distiller = _distiller(NoInfoBackbone(depth=4, name="custom_teacher"),
                           NoInfoBackbone(depth=3, name="custom_student"), [(0, 0), (2, 9)])
    return raised(distiller, IMAGES, training=True)


@case("D4")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4, patch_size=4), _tiny(6, 3), [(0, 0)])


@case("D5")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(6, 4), _tiny(12, 3), [(0, 0)])


@case("D6")
def _(tmp_path, capsys):
    distiller = _distiller(NoInfoBackbone(depth=4, flat_maps=True, name="custom_teacher"),
                           NoInfoBackbone(depth=3, name="custom_student"), [(0, 0)])
    return raised(distiller, IMAGES, training=True)


@case("D7")
def _(tmp_path, capsys):
    distiller = _distiller(_tiny(12, 4), _tiny(6, 3), [(0, 0)])
    y_pred = distiller(IMAGES, training=True)
    return raised(distiller.compute_loss, IMAGES, np.zeros((2, 5), "float32"), y_pred)


@case("D13")
def _(tmp_path, capsys):
    from keras_spectralkd.training import loop

    distiller = _distiller(_tiny(12, 4), _tiny(6, 3), [(0, 0)])
    distiller.compile(optimizer="sgd")
    num_classes = distiller.student.output_shape[-1]
    images = np.zeros((4, 8, 8, 3), "float32")
    labels = np.array([0, 1, num_classes, 0], "int32")  # one class id past the head

    def train_data(epoch, skip):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(4).skip(skip)

    return raised(loop.train, distiller, train_data, epochs=1, steps_per_epoch=1,
                  output_dir=str(tmp_path / "run"), verbose=0)


@case("D8")
def _(tmp_path, capsys):
    distiller = _distiller(_tiny(12, 4), _tiny(6, 3), [(0, 0)])
    return raised(distiller, np.zeros((2, 16, 16, 3), "float32"), training=True)


@case("D9")
def _(tmp_path, capsys):
    distiller = _distiller(_tiny(12, 4), _tiny(6, 3), [(0, 0)])
    return raised(distiller, np.zeros((2, 8, 8, 1), "float32"), training=True)


@case("D10")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(1, 1), (0, 0)])


@case("D11")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 0)], mode="distill")


@case("D12")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [], mode="fft")


@case("D14")
def _(tmp_path, capsys):
    return raised(_distiller, _classifier(7, "teacher"), _classifier(10, "student"), [])


@case("D15")
def _(tmp_path, capsys):
    distiller = _distiller(NoInfoBackbone(num_classes=7, name="custom_teacher"),
                           NoInfoBackbone(num_classes=10, name="custom_student"), [], mode="hard")
    return raised(distiller, IMAGES, training=True)


@case("D16")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 0)], alpha=float("nan"))


@case("D17")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 0)], temperature=float("inf"))


@case("D18")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 0)], alpha=1.5)


@case("D19")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 0)], temperature=0)


@case("D20")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 0)], label_smoothing=1.0)


@case("D21")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 0)], spectral_weight=-0.2)


@case("D22")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 0)], beta="1.0")


@case("D23")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 1), (0, 2)])


@case("D24")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, 1.5)])


@case("D25")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), (0, 0))


@case("D26")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), [(0, -1)])


@case("D27")
def _(tmp_path, capsys):
    return raised(_distiller, _tiny(12, 4), _tiny(6, 3), "0:0,2:3")


@case("D28")
def _(tmp_path, capsys):
    return raised(_distiller, "deit_small_patch16_224", _tiny(6, 3), [])


@case("D29")
def _(tmp_path, capsys):
    model = _classifier(4, "classifier")
    return raised(_distiller, model, model, [])


def _cnn(name, tokens=False):
    """A functional CNN on 8x8 images: stage_0 (4x4x6), stage_1 (2x2x12), pooled, 4 classes;
    `tokens` adds `seq`, stage_1 cut into 3 tokens of 16 (no grid of 2 cells or more fits)."""
    images = keras.Input((8, 8, 3), name="images")
    x = keras.layers.Conv2D(6, 2, strides=2, name="stage_0")(images)
    x = keras.layers.Conv2D(12, 2, strides=2, name="stage_1")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if tokens:
        seq = keras.layers.Reshape((3, 16), name="seq")(x)
        pooled = keras.layers.Concatenate(name="both")(
            [pooled, keras.layers.GlobalAveragePooling1D(name="seq_pool")(seq)])
    return keras.Model(images, keras.layers.Dense(4, name="head")(pooled), name=name)


@case("D30")
def _(tmp_path, capsys):
    return raised(_distiller, _cnn("cnn_teacher"), _cnn("cnn_student"),
                  [("stage_0", "stage_9")], mode="fft")


@case("D31")
def _(tmp_path, capsys):
    return raised(_distiller, _cnn("cnn_teacher"), NoInfoBackbone(name="custom_student"),
                  [("unit_0", "stage_1")], mode="fft")


@case("D32")
def _(tmp_path, capsys):
    return raised(_distiller, _cnn("cnn_teacher"), _cnn("cnn_student"),
                  [("stage_1", "pool")], mode="fft")


@case("D33")
def _(tmp_path, capsys):
    return raised(_distiller, _cnn("cnn_teacher", tokens=True), _cnn("cnn_student"),
                  [("stage_1", "seq")], mode="fft")


@case("D34")
def _(tmp_path, capsys):
    return raised(_distiller, _cnn("cnn_teacher"), _tiny(6, 3), [(0, "stage_0"), (2, 1)],
                  mode="fft")


@case("D35")
def _(tmp_path, capsys):
    return raised(_distiller, _cnn("cnn_teacher"), _cnn("cnn_student"),
                  [("stage_0", "stage_0")], mode="fft", grid_alignment="resize")


def _cached_inputs(maps, keys=("images", "teacher_logits", "teacher_maps")):
    """A Distiller input dict of cached teacher outputs for a batch of two 8x8 images."""
    values = {"images": np.zeros((2, 8, 8, 3), "float32"),
              "teacher_logits": np.zeros((2, 4), "float32"), "teacher_maps": maps}
    return {key: values.get(key, values["images"]) for key in keys}


@case("D36")
def _(tmp_path, capsys):
    distiller = _distiller(_tiny(6, 3), _tiny(6, 3), [(0, 0), (2, 2)])
    return raised(distiller, _cached_inputs([np.zeros((2, 4, 4, 6), "float32")]),
                  training=True)


@case("D37")
def _(tmp_path, capsys):
    distiller = _distiller(_tiny(6, 3), _tiny(6, 3), [(0, 0)])
    return raised(distiller, _cached_inputs([], keys=("image",)), training=True)


@case("D38")
def _(tmp_path, capsys):
    distiller = _distiller(_tiny(6, 3), _tiny(6, 3), [(0, 0), (2, 2)])
    return raised(distiller, _cached_inputs(np.zeros((2, 2, 4, 4, 6), "float32")),
                  training=True)


# === Spectral functions ===
@case("S1")
def _(tmp_path, capsys):
    from keras_spectralkd import spectral

    return raised(spectral.spectral_pair_loss, np.zeros((2, 4, 4, 6), "float32"),
                  np.zeros((2, 2, 2, 12), "float32"))


@case("S2")
def _(tmp_path, capsys):
    from keras_spectralkd import spectral

    return raised(spectral.spectral_pair_loss, np.zeros((2, 4, 4, 12), "float32"),
                  np.zeros((2, 4, 4, 6), "float32"))


@case("S3")
def _(tmp_path, capsys):
    from keras_spectralkd import spectral

    return raised(spectral.rfft2, np.zeros((2, 16), "float32"))


@case("S4")
def _(tmp_path, capsys):
    from keras_spectralkd import spectral

    return raised(spectral.as_feature_map, np.zeros((2, 16, 6), "float32"))


# === models.create ===
@case("M1")
def _(tmp_path, capsys):
    from keras_spectralkd import models

    return raised(models.create, "deit_tiny_patch16")


@case("M2")
def _(tmp_path, capsys):
    from keras_spectralkd import models

    return raised(models.create, "deit_tiny_patch16_224", image_size=100)


@case("M3")
def _(tmp_path, capsys):
    from keras_spectralkd import models

    return raised(models.create, "deit_tiny_patch16_224", image_size=224.5)


# === Analysis ===
@case("A1")
def _(tmp_path, capsys):
    from keras_spectralkd.analysis import parse_layer_pairs

    return raised(parse_layer_pairs, "0:0,1-1")


# === Data loaders ===
@case("L1")
def _(tmp_path, capsys):
    from keras_spectralkd.data import imagenet_data

    return raised(imagenet_data, str(tmp_path / "imagenet"), batch_size=8)


@case("L2")
def _(tmp_path, capsys):
    from keras_spectralkd.data import imagenet_data

    (tmp_path / "manual").mkdir()
    (tmp_path / "tfds").mkdir()
    return raised(imagenet_data, str(tmp_path / "tfds"), batch_size=8, data_format="tfds",
                  tfds_manual_dir=str(tmp_path / "manual"))


# === Converter ===
def _timm_like_state(family):
    """A few tensors named like a timm checkpoint of `family` (enough to name the family)."""
    key = {"swin": "layers.0.blocks.0.attn.relative_position_bias_table",
           "vit": "blocks.0.attn.qkv.weight"}[family]
    return {key: np.zeros((4, 4), "float32"), "head.weight": np.zeros((10, 4), "float32")}


@case("C1")
def _(tmp_path, capsys):
    from keras_spectralkd.convert import from_timm

    return raised(from_timm, "cait_xxs24_224", _timm_like_state("swin"))


@case("C2")
def _(tmp_path, capsys):
    from safetensors.numpy import save_file

    from keras_spectralkd.convert import load_state_dict

    path = tmp_path / "deit.safetensors"
    save_file({"blocks.0.attn.qkv.weight": np.zeros((96, 32), "float32")}, str(path))
    path.write_bytes(path.read_bytes()[:60])  # truncated download
    return raised(load_state_dict, str(path))


@case("C3")
def _(tmp_path, capsys):
    from keras_spectralkd.convert import load_state_dict

    path = tmp_path / "deit.pth"
    path.write_bytes(b"this is not a torch file")
    return raised(load_state_dict, str(path))


@case("C4")
def _(tmp_path, capsys):
    from keras_spectralkd.convert import load_state_dict

    return raised(load_state_dict, str(tmp_path / "missing.safetensors"))


@case("C5")
def _(tmp_path, capsys):
    from safetensors.numpy import save_file

    checkpoint = tmp_path / "deit.safetensors"
    save_file(_timm_like_state("vit"), str(checkpoint))
    output = tmp_path / "missing_folder" / "deit.keras"
    text = tool_run("convert_timm", ["--model=deit_tiny_patch16_224", f"--checkpoint={checkpoint}",
                                     f"--output={output}"], capsys)
    assert not output.parent.exists()
    return text


@case("C6")
def _(tmp_path, capsys):
    return tool_run("convert_timm", ["--model=deit_tiny", "--checkpoint=x.safetensors",
                                     f"--output={tmp_path / 'x.keras'}"], capsys)


@case("C7")
def _(tmp_path, capsys):
    """A checkpoint that does not fit (another family) leaves no output file behind."""
    from safetensors.numpy import save_file

    checkpoint = tmp_path / "swin.safetensors"
    save_file(_timm_like_state("swin"), str(checkpoint))
    output = tmp_path / "deit.keras"
    text = tool_run("convert_timm", ["--model=deit_tiny_patch16_224", f"--checkpoint={checkpoint}",
                                     f"--output={output}"], capsys)
    assert os.listdir(tmp_path) == ["swin.safetensors"], os.listdir(tmp_path)
    return text


@case("C8")
def _(tmp_path, capsys):
    from keras_spectralkd.convert import from_timm

    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return raised(from_timm, "cait_s24_224")
    finally:
        if previous is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


# === Tools ===
def _analyze(tmp_path, capsys, *argv, contains=""):
    return tool_run("analyze", ["--model=deit_tiny_patch16_224", "--image_size=8",
                                f"--model_kwargs={json.dumps(TINY_DEIT)}", "--num_classes=4",
                                "--noentropy", f"--output_dir={tmp_path / 'out'}", *argv], capsys,
                    contains)


def _image_folder(root, count=3):
    import tensorflow as tf

    os.makedirs(root, exist_ok=True)
    for i in range(count):
        image = np.full((12, 12, 3), 40 * i, np.uint8)
        tf.io.write_file(os.path.join(root, f"{i}.jpg"), tf.io.encode_jpeg(image))
    return str(root)


@case("T1")
def _(tmp_path, capsys):
    return tool_run("analyze", ["--model=deit_tiny_patch16_224", "--model_kwargs={depth: 4}"],
                    capsys)


@case("T2")
def _(tmp_path, capsys):
    return tool_run("analyze", ["--model=deit_tiny_patch16"], capsys)


@case("T3")
def _(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    return _analyze(tmp_path, capsys, f"--data={tmp_path / 'empty'}")


@case("T4")
def _(tmp_path, capsys):
    folder = _image_folder(tmp_path / "images")
    with open(os.path.join(folder, "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    text = _analyze(tmp_path, capsys, f"--data={folder}", "--num_images=4",
                    contains="skipping")
    assert os.path.exists(tmp_path / "out" / "model_profile.json")
    return text


@case("T5")
def _(tmp_path, capsys):
    folder = _image_folder(tmp_path / "images")
    capsys.readouterr()
    from keras_spectralkd.tools import analyze

    images = analyze.load_images(folder, 10, 8)
    assert images.shape[0] == 3
    return "exit 0: " + capsys.readouterr().err.strip().splitlines()[0]


@case("T6")
def _(tmp_path, capsys):
    return tool_run("select_layers", [f"--profile={tmp_path / 'model_profile.json'}",
                                      "--student_depth=12"], capsys)


@case("T7")
def _(tmp_path, capsys):
    return tool_run("select_layers", ["--profile=p.json", "--student=deit_tiny"], capsys)


# === Recipes ===
def _recipe():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(HERE)), "recipes", "deit_tiny.py")
    spec = importlib.util.spec_from_file_location("recipe_deit_tiny", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RECIPE


def _runner():
    from keras_spectralkd.recipes import runner

    return runner


@case("R1")
def _(tmp_path, capsys):
    recipe = _recipe()
    config = recipe.config("tiny", output_dir=str(tmp_path / "run"), mode="none")
    return raised(_runner().run, recipe, config)


@case("R2")
def _(tmp_path, capsys):
    recipe = _recipe()
    (tmp_path / "manual").mkdir()
    config = recipe.config("tiny", output_dir=str(tmp_path / "run"), mode="none",
                           data_dir=str(tmp_path), data_format="tfds",
                           tfds_manual_dir=str(tmp_path / "manual"))
    return raised(_runner().run, recipe, config)


@case("R3")
def _(tmp_path, capsys):
    from keras_spectralkd.training import distribute

    return raised(distribute.Distribution("multi_worker_mirrored", 2).check_batch_size, 7)


@case("R6")
def _(tmp_path, capsys):
    return tool_run("train", ["--recipe=deit_tiny", "--preset=tiny", "--set", "batch_size=0"],
                    capsys)


@case("R7")
def _(tmp_path, capsys):
    return tool_run("train", ["--recipe=deit_tiny", "--set", "colour=red"], capsys)


@case("R8")
def _(tmp_path, capsys):
    return tool_run("train", ["--recipe=deit_tiny", "--mode=fft", "--layer_pairs="], capsys)


@case("R9")
def _(tmp_path, capsys):
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(HERE)), "recipes", "demo.py")
    spec = importlib.util.spec_from_file_location("recipe_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    (tmp_path / "a_file").write_text("not a folder")
    capsys.readouterr()
    status = demo.main([f"--output_dir={tmp_path / 'a_file' / 'demo'}", "--quick"])
    return f"exit {status}: {capsys.readouterr().err.strip()}"


@case("R10")
def _(tmp_path, capsys):
    return tool_run("study", ["--arm", 'w={"spectral_weight": -1}'], capsys)


@case("R16")
def _(tmp_path, capsys):
    return tool_run("train", ["--recipe=fashion_mnist", "--set", "cache_teacher=true", "--set",
                              "augment=true"], capsys)


@case("R17")
def _(tmp_path, capsys):
    return tool_run("study", ["--teacher=/no/such.keras"], capsys)


@case("R11")
def _(tmp_path, capsys):
    # The check the runner makes before any work, as it decides on JAX without a GPU.
    return raised(_runner().check_precision, "mixed_float16", "jax", [])


@case("R12")
def _(tmp_path, capsys):
    from keras_spectralkd import precision

    os.environ[precision.CPU_BF16_ENV] = "maybe"
    try:  # what the runner decides first for precision=auto on a CPU
        return raised(precision.choose, "auto", [])
    finally:
        del os.environ[precision.CPU_BF16_ENV]


@case("R13")
def _(tmp_path, capsys):
    recipe = _recipe()
    config = recipe.config("tiny", teacher="keras", teacher_weights="teacher.weights.h5")
    return raised(_runner().teacher_weights, recipe, config)


@case("R14")
def _(tmp_path, capsys):
    recipe = _recipe()
    path = tmp_path / "teacher.keras"
    path.write_bytes(b"")  # refused before it is read
    config = recipe.config("tiny", teacher="keras", teacher_weights=str(path),
                           teacher_overrides={"depth": 2})
    return raised(_runner().load_teacher, recipe, config, 10)


@case("R15")
def _(tmp_path, capsys):
    from keras_spectralkd.recipes.config import parse_value

    return raised(parse_value, "layer_pairs", "0:stage_0,3:")


@case("A2")
def _(tmp_path, capsys):
    from keras_spectralkd.callbacks import SpectralTracker

    images = keras.Input((8, 8, 3))
    teacher = keras.Model(images, keras.layers.Conv2D(4, 3, name="conv")(images), name="cnn")
    return raised(SpectralTracker, teacher, np.zeros((2, 8, 8, 3), "float32"), [(0, 1)])


@case("R4")
def _(tmp_path, capsys):
    from keras_spectralkd.training import loop

    saved = {"run_info": {"student": "deit_tiny_patch16_224", "mode": "soft"}}
    now = {"student": "deit_tiny_patch16_224", "mode": "none"}
    return raised(loop.check_run_info, saved, now, str(tmp_path / "run"))


@case("R5")
def _(tmp_path, capsys):
    from keras_spectralkd.training import loop

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.full((8, 3), np.nan, "float32")
    labels = np.zeros((8,), "int32")

    def train_data(epoch, skip):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(4).skip(skip)

    return raised(loop.train, model, train_data, epochs=1, steps_per_epoch=2,
                  output_dir=str(tmp_path / "run"), verbose=0)
