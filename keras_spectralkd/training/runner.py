"""The shared runner of the recipes (`recipes/deit_tiny.py`, `deit_small.py`, `swin_tiny.py`).

A recipe is a `Recipe` (the paper's numbers, SPEC.md 4 and 7, plus presets that shrink it); the
runner turns command-line flags into a `RunConfig` and trains:

    data (ImageNet: folders or TFDS) -> teacher (converted weights) + student -> Distiller
    -> AdamW + warmup-cosine -> `training.train` (checkpoints, resume, EMA, logs, TensorBoard)

Defaults are the paper's; each explicitly given flag overrides the preset's value.
"""

import dataclasses
import os
import sys
import time

import keras

from keras_spectralkd.training import checkpoint as checkpoint_lib
from keras_spectralkd.training import distribute, ema as ema_lib, loop, optimizer as optim
from keras_spectralkd.training import schedules

MODES = ("soft", "hard", "fft", "none")
TIMM_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".pth.tar")


# === Configuration ===
@dataclasses.dataclass
class RunConfig:
    """Everything one training run needs; the recipe's preset fills it, flags override it.

    Model fields take timm names; `*_overrides` are extra `models.create` arguments (presets use
    them for small models). `batch_size` is GLOBAL (over all replicas); the learning rate is
    `lr * batch_size / 512` (DeiT's rule).
    """

    student: str
    teacher: str
    layer_pairs: list
    spectral_weight: float
    epochs: int
    warmup_epochs: int
    batch_size: int = 512
    eval_batch_size: int = None
    lr: float = schedules.REFERENCE_BASE_LR
    min_lr: float = schedules.MIN_LR
    warmup_lr: float = schedules.WARMUP_INIT_LR
    weight_decay: float = 0.05
    mode: str = "soft"
    alpha: float = 0.9
    beta: float = 1.0
    temperature: float = 1.0
    label_smoothing: float = 0.1
    drop_path_rate: float = 0.0
    ema_decay: float = ema_lib.EMA_DECAY
    image_size: int = 224
    repeated_augmentation: int = 3
    rand_augment: bool = True
    random_erasing: float = 0.25
    mixup: float = 0.0
    cutmix: float = 0.0
    precision: str = "auto"
    student_overrides: dict = dataclasses.field(default_factory=dict)
    teacher_overrides: dict = dataclasses.field(default_factory=dict)
    teacher_weights: str = None
    data_dir: str = None
    data_format: str = "auto"
    tfds_manual_dir: str = None
    output_dir: str = None
    steps_per_epoch: int = None
    save_every_steps: int = None
    seed: int = 0
    deterministic: bool = False
    tensorboard: bool = True
    spectral_every_n_epochs: int = 1
    strategy: str = "auto"
    jit_compile: object = "auto"
    verbose: int = 1

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Recipe:
    """A paper setting and its presets.

    Attributes:
        name: the recipe's name ("deit_tiny").
        description: one line for `--help`.
        paper: the `RunConfig` with the paper's numbers (the "paper" preset).
        presets: more presets, name -> dict of `RunConfig` fields replacing the paper's.
        teacher_source: how to obtain the teacher's weights (shown when they are missing).
    """

    name: str
    description: str
    paper: RunConfig
    presets: dict = dataclasses.field(default_factory=dict)
    teacher_source: str = ""

    def config(self, preset="paper", **changes):
        if preset != "paper" and preset not in self.presets:
            raise ValueError(
                f"Unknown preset {preset!r} for recipe {self.name!r}; expected one of "
                f"{['paper'] + sorted(self.presets)}."
            )
        config = dataclasses.replace(self.paper)
        if preset != "paper":
            config = dataclasses.replace(config, **self.presets[preset])
        return dataclasses.replace(config, **changes)


def timm_weights_hint(timm_tag, filename):
    """How to obtain a timm teacher's weights offline (a recipe's `teacher_source`)."""
    return (
        f"Get timm's {timm_tag} weights on a machine with internet access: pip install timm; "
        f"python -c \"import timm, torch; torch.save(timm.create_model('{timm_tag}', "
        f"pretrained=True).state_dict(), '{filename}')\"; then pass --teacher_weights={filename} "
        "(converted on the fly by keras_spectralkd.convert.from_timm), or a .weights.h5/.keras "
        "file you converted once."
    )


def tiny_preset(student_overrides, teacher_overrides, layer_pairs, **changes):
    """A preset for smoke tests and laptops: small models at 32x32, one short epoch."""
    preset = dict(
        image_size=32,
        batch_size=8,
        eval_batch_size=8,
        epochs=1,
        warmup_epochs=0,
        repeated_augmentation=1,
        precision="float32",
        student_overrides=student_overrides,
        teacher_overrides=teacher_overrides,
        layer_pairs=layer_pairs,
        deterministic=True,
        spectral_every_n_epochs=1,
    )
    preset.update(changes)
    return preset


# === Flags ===
def define_flags(recipe, flag_values=None):
    """Defines the recipe's absl flags (defaults: the paper's preset) in `flag_values`."""
    from absl import flags

    fv = flag_values if flag_values is not None else flags.FLAGS
    paper = recipe.paper
    presets = ["paper"] + sorted(recipe.presets)
    flags.DEFINE_enum("preset", "paper", presets,
                      "Settings to start from: 'paper' (SPEC.md 7) or a smaller one.",
                      flag_values=fv)
    flags.DEFINE_string("teacher_weights", None,
                        "Teacher weights: a converted .keras or .weights.h5 file, or a timm "
                        "checkpoint (.pth/.safetensors/.bin) converted on the fly, or a timm "
                        "name[.tag] (e.g. cait_s24_224.fb_dist_in1k): timm's pretrained weights "
                        "from its cache, downloaded if online. "
                        + recipe.teacher_source, flag_values=fv)
    flags.DEFINE_string("data_dir", None,
                        "ImageNet: an image-folder root (train/, val/) or a TFDS data dir.",
                        flag_values=fv)
    flags.DEFINE_enum("data_format", "auto", ["auto", "folder", "tfds"],
                      "How --data_dir is laid out ('auto': folder if it has train/).",
                      flag_values=fv)
    flags.DEFINE_string("tfds_manual_dir", None,
                        "Folder with ILSVRC2012_img_{train,val}.tar, to prepare TFDS once.",
                        flag_values=fv)
    flags.DEFINE_string("output_dir", None,
                        "Where checkpoints, logs, TensorBoard events and weights go; a run "
                        "restarted with the same output dir resumes.", flag_values=fv)
    flags.DEFINE_integer("epochs", paper.epochs, "Training epochs.", flag_values=fv)
    flags.DEFINE_integer("warmup_epochs", paper.warmup_epochs, "Linear warmup epochs.",
                         flag_values=fv)
    flags.DEFINE_integer("batch_size", paper.batch_size,
                         "GLOBAL batch size (all devices); lr scales with batch_size / 512.",
                         flag_values=fv)
    flags.DEFINE_integer("eval_batch_size", None, "Validation batch size (default: batch_size).",
                         flag_values=fv)
    flags.DEFINE_float("lr", paper.lr, "Learning rate for a global batch of 512.",
                       flag_values=fv)
    flags.DEFINE_enum("mode", paper.mode, list(MODES),
                      "soft/hard: CE + logit KD + spectral; fft: CE + spectral; none: CE only.",
                      flag_values=fv)
    flags.DEFINE_string("layer_pairs", None,
                        "student:teacher unit pairs, e.g. '0:0,1:1,6:18' (tools/analyze.py "
                        "prints a suggestion); default: the paper's (SPEC.md 4).",
                        flag_values=fv)
    flags.DEFINE_float("spectral_weight", paper.spectral_weight, "w_fft (SPEC.md 4).",
                       flag_values=fv)
    flags.DEFINE_float("alpha", paper.alpha, "Weight of the logit KD term.", flag_values=fv)
    flags.DEFINE_float("beta", paper.beta, "Global weight of the spectral term.",
                       flag_values=fv)
    flags.DEFINE_float("temperature", paper.temperature, "Soft-KD temperature.",
                       flag_values=fv)
    flags.DEFINE_float("ema_decay", paper.ema_decay, "EMA decay of the student (0: no EMA).",
                       flag_values=fv)
    flags.DEFINE_integer("repeated_augmentation", paper.repeated_augmentation,
                         "DeiT's repeated augmentation factor (1: off).", flag_values=fv)
    flags.DEFINE_float("mixup", paper.mixup, "MixUp alpha (0: off, as the paper).",
                       flag_values=fv)
    flags.DEFINE_float("cutmix", paper.cutmix, "CutMix alpha (0: off, as the paper).",
                       flag_values=fv)
    flags.DEFINE_enum("precision", paper.precision,
                      ["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                      "'auto': mixed_bfloat16 on GPUs, float32 on CPUs. mixed_float16 uses "
                      "loss scaling. The spectral loss is float32 in every case.",
                      flag_values=fv)
    flags.DEFINE_integer("steps_per_epoch", None,
                         "Limit the optimizer steps per epoch (default: one pass over the data).",
                         flag_values=fv)
    flags.DEFINE_integer("save_every_steps", None,
                         "Also checkpoint every N steps (default: at epoch ends).",
                         flag_values=fv)
    flags.DEFINE_integer("seed", paper.seed, "Seed of initialisation, shuffling, augmentation.",
                         flag_values=fv)
    flags.DEFINE_bool("deterministic", paper.deterministic,
                      "Sequential per-image augmentation (reproducible, slower).",
                      flag_values=fv)
    flags.DEFINE_bool("tensorboard", paper.tensorboard,
                      "Write TensorBoard logs (with SpectralTensorBoard's spectral panels).",
                      flag_values=fv)
    flags.DEFINE_enum("strategy", paper.strategy, list(distribute.STRATEGIES),
                      "Data parallelism (see keras_spectralkd.training.distribute).",
                      flag_values=fv)
    flags.DEFINE_integer("verbose", paper.verbose, "fit's verbosity (0, 1, 2).", flag_values=fv)
    return fv


_FLAG_FIELDS = (
    "teacher_weights", "data_dir", "data_format", "tfds_manual_dir", "output_dir", "epochs",
    "warmup_epochs", "batch_size", "eval_batch_size", "lr", "mode", "spectral_weight", "alpha",
    "beta", "temperature", "ema_decay", "repeated_augmentation", "mixup", "cutmix", "precision",
    "steps_per_epoch", "save_every_steps", "seed", "deterministic", "tensorboard", "strategy",
    "verbose",
)


def config_from_flags(recipe, flag_values):
    """The preset's `RunConfig` with every flag given on the command line applied."""
    from keras_spectralkd.analysis import parse_layer_pairs

    changes = {}
    for name in _FLAG_FIELDS:
        if flag_values[name].present or flag_values[name].value != flag_values[name].default:
            changes[name] = flag_values[name].value
    # Paths given on the command line always count, even when equal to a default of None.
    for name in ("teacher_weights", "data_dir", "tfds_manual_dir", "output_dir"):
        if flag_values[name].value is not None:
            changes[name] = flag_values[name].value
    if flag_values["layer_pairs"].value:
        changes["layer_pairs"] = parse_layer_pairs(flag_values["layer_pairs"].value)
    return recipe.config(flag_values["preset"].value, **changes)


def main(recipe):
    """`app.run(main(recipe))`: the recipe scripts' entry point."""

    def run_main(argv):
        from absl import flags

        if len(argv) > 1:
            raise ValueError(f"Unexpected arguments: {argv[1:]}; every setting is a --flag.")
        config = config_from_flags(recipe, flags.FLAGS)
        run(recipe, config)

    return run_main


# === Teacher ===
def load_teacher(recipe, config, num_classes):
    """The teacher, from `config.teacher_weights`: .keras, .weights.h5, a timm checkpoint, or a
    timm name with an optional tag (timm's pretrained weights, `convert.pretrained`).

    Raises:
        FileNotFoundError: no weights given or the file is missing, saying how to get them.
        ValueError: the teacher's head does not fit the dataset.
    """
    from keras_spectralkd import models

    path = config.teacher_weights
    if not path:
        raise FileNotFoundError(
            f"mode={config.mode!r} needs a trained teacher ({config.teacher}), but no "
            f"--teacher_weights was given. {recipe.teacher_source}"
        )
    from keras_spectralkd.convert import pretrained

    timm_name = pretrained.is_timm_pretrained_name(path)  # e.g. "cait_s24_224.fb_dist_in1k"
    if not timm_name and not os.path.exists(path):
        raise FileNotFoundError(
            f"Teacher weights {path!r} do not exist. {recipe.teacher_source}"
        )
    create_kwargs = dict(config.teacher_overrides)
    if timm_name:  # timm's pretrained weights, from timm's cache (downloaded if online)
        from keras_spectralkd.convert import from_timm

        if pretrained.split_name(path)[0] != config.teacher:
            raise ValueError(
                f"--teacher_weights={path!r} names timm weights of another model than the "
                f"teacher {config.teacher!r}."
            )
        teacher = from_timm(path, image_size=config.image_size, **create_kwargs)
    elif path.endswith(".keras"):
        teacher = keras.saving.load_model(path, compile=False)
    elif path.endswith(".weights.h5"):
        teacher = models.create(
            config.teacher, num_classes=num_classes, image_size=config.image_size,
            **create_kwargs,
        )
        teacher.load_weights(path)
    elif path.endswith(TIMM_CHECKPOINT_SUFFIXES):
        from keras_spectralkd.convert import from_timm

        teacher = from_timm(config.teacher, path, image_size=config.image_size, **create_kwargs)
    else:
        raise ValueError(
            f"Unsupported teacher weights file {path!r}; expected .keras, .weights.h5 or a timm "
            f"checkpoint ({', '.join(TIMM_CHECKPOINT_SUFFIXES)})."
        )
    classes = teacher.output_shape[-1]
    if classes != num_classes:
        raise ValueError(
            f"The teacher from {path!r} has {classes} output classes but the dataset has "
            f"{num_classes}; use a teacher trained on the same classes."
        )
    return teacher


# === Run ===
def resolve_precision(precision):
    if precision != "auto":
        return precision
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if keras.backend.backend() == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
    elif keras.backend.backend() == "torch":
        import torch

        gpus = list(range(torch.cuda.device_count()))
    return "mixed_bfloat16" if gpus else "float32"


def load_data(config):
    """ImageNet (folders or TFDS) with DeiT's transforms, as an `ImageData`."""
    from keras_spectralkd import data as data_lib

    if not config.data_dir:
        raise FileNotFoundError(f"No --data_dir given. {data_lib.HOW_TO_GET_IMAGENET}")
    train_transform = data_lib.TrainTransform(
        config.image_size,
        rand_augment=config.rand_augment,
        random_erasing=config.random_erasing,
        seed=config.seed,
    )
    return data_lib.imagenet_data(
        config.data_dir,
        batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        data_format=config.data_format,
        tfds_manual_dir=config.tfds_manual_dir,
        image_size=config.image_size,
        train_transform=train_transform,
        seed=config.seed,
        repeated_augmentation=config.repeated_augmentation,
        mixup_alpha=config.mixup,
        cutmix_alpha=config.cutmix,
        deterministic=config.deterministic,
    )


def build_distiller(config, teacher, student):
    """The Distiller of `config.mode`. Soft/hard KD with a zero spectral weight (`--beta=0` or
    `--spectral_weight=0`) runs without layer pairs: the plain KD baseline, no map extraction."""
    from keras_spectralkd import Distiller

    if config.mode == "none":
        teacher, pairs = None, []
    elif config.mode in ("soft", "hard") and (config.beta == 0 or config.spectral_weight == 0):
        pairs = []
    else:
        pairs = config.layer_pairs
    return Distiller(
        teacher,
        student,
        layer_pairs=pairs,
        mode=config.mode,
        alpha=config.alpha,
        beta=config.beta,
        spectral_weight=config.spectral_weight,
        temperature=config.temperature,
        label_smoothing=config.label_smoothing,
    )


def compile_distiller(distiller, config, steps_per_epoch, loss_scale):
    """AdamW + warmup-cosine (per step) with timm's no-decay set on the student."""
    base_lr = schedules.scaled_learning_rate(config.batch_size, config.lr)
    total_steps = config.epochs * steps_per_epoch
    schedule = schedules.WarmupCosineDecay(
        base_lr,
        total_steps=total_steps,
        warmup_steps=min(config.warmup_epochs * steps_per_epoch, total_steps - 1),
        warmup_init_lr=min(config.warmup_lr, base_lr),
        min_lr=min(config.min_lr, base_lr),
    )
    optimizer = optim.create_optimizer(
        schedule, model=distiller.student, weight_decay=config.weight_decay, loss_scale=loss_scale
    )
    distiller.compile(
        optimizer=optimizer,
        metrics=ema_lib.classification_metrics(distiller.student.output_shape[-1]),
        jit_compile=config.jit_compile,
    )
    return schedule


def run(recipe, config, data=None):
    """Trains `config` (see the module docstring); returns a summary dict.

    Args:
        recipe: the `Recipe` (for messages).
        config: the `RunConfig`.
        data: an `ImageData` to use instead of loading ImageNet (tests, the demo).
    """
    from keras_spectralkd import models

    started = time.time()
    if config.mode not in MODES:
        raise ValueError(f"Unknown mode {config.mode!r}; expected one of {MODES}.")
    if not config.output_dir:
        raise ValueError("--output_dir is required (checkpoints, logs and weights go there).")
    precision = resolve_precision(config.precision)
    loss_scale = optim.set_precision(precision)
    keras.utils.set_random_seed(config.seed)
    distribution = distribute.setup_distribution(config.strategy)
    distribution.check_batch_size(config.batch_size)
    if data is None:
        data = load_data(config)
    steps_per_epoch = data.steps_per_epoch
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(
            f"The training set ({data.num_train_examples} images) is smaller than one batch of "
            f"{config.batch_size}."
        )
    os.makedirs(config.output_dir, exist_ok=True)
    checkpoint_lib.atomic_write_json(
        os.path.join(config.output_dir, "config.json"),
        {"recipe": recipe.name, "precision": precision, **config.to_dict()},
    )
    _log(config, f"[{recipe.name}] data: {data.description}; {data.num_train_examples} train / "
                 f"{data.num_validation_examples} val images, {data.num_classes} classes, "
                 f"{steps_per_epoch} steps/epoch; {distribution.describe()}; precision "
                 f"{precision}.")

    with distribution.scope():
        teacher = None
        if config.mode != "none":
            teacher = load_teacher(recipe, config, data.num_classes)
        student = models.create(
            config.student,
            num_classes=data.num_classes,
            image_size=config.image_size,
            drop_path_rate=config.drop_path_rate,
            **config.student_overrides,
        )
        distiller = build_distiller(config, teacher, student)
        schedule = compile_distiller(distiller, config, steps_per_epoch, loss_scale)
        ema = None
        if config.ema_decay and config.ema_decay > 0:
            ema = ema_lib.ModelEMA(
                student, decay=config.ema_decay, ema_model=ema_lib.clone_model(student),
                validation_data=data.validation,
            )
    _log(config, f"[{recipe.name}] student {config.student} ({student.count_params():,} "
                 f"params), teacher {config.teacher if teacher is not None else 'none'}, mode "
                 f"{config.mode}, layer pairs {distiller.layer_pairs}, peak lr "
                 f"{schedule.base_lr:.3g}.")

    callbacks = []
    if config.tensorboard:
        log_dir = os.path.join(config.output_dir, "tensorboard")
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
        if teacher is not None and hasattr(student, "forward_intermediates"):
            from keras_spectralkd.callbacks import SpectralTensorBoard

            probe = next(iter(data.validation))[0][:8]
            callbacks.append(
                SpectralTensorBoard(log_dir, probe, every_n_epochs=config.spectral_every_n_epochs)
            )

    result = loop.train(
        distiller,
        data.train,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=data.validation,
        output_dir=config.output_dir,
        callbacks=callbacks,
        ema=ema,
        best_model=student,
        monitor="val_accuracy",
        save_every_steps=config.save_every_steps,
        verbose=config.verbose,
    )

    student_path = os.path.join(config.output_dir, "student.keras")
    tmp = student_path[: -len(".keras")] + f".tmp-{os.getpid()}.keras"
    student.save(tmp)
    os.replace(tmp, student_path)
    if ema is not None:
        checkpoint_lib.atomic_save_weights(
            ema.ema_model, os.path.join(config.output_dir, "student_ema.weights.h5")
        )
    final = result.history[-1] if result.history else {}
    summary = {
        "recipe": recipe.name,
        "epochs": config.epochs,
        "final": final,
        "best": result.best,
        "resumed_from": None if result.resumed_from is None else {
            k: result.resumed_from[k] for k in ("epoch", "step_in_epoch", "global_step")
        },
        "student": student_path,
        "wall_time_s": round(time.time() - started, 1),
    }
    checkpoint_lib.atomic_write_json(os.path.join(config.output_dir, "summary.json"), summary)
    best = result.best
    _log(config, f"[{recipe.name}] done in {summary['wall_time_s']} s. Final val top-1 "
                 f"{final.get('val_accuracy', float('nan')):.4f}"
                 + (f", EMA {final['ema_val_accuracy']:.4f}" if "ema_val_accuracy" in final else "")
                 + (f"; best {best['value']:.4f} at epoch {best['epoch']}" if best else "")
                 + f". Outputs in {config.output_dir} (student.keras, best.weights.h5, log.csv, "
                 "tensorboard/).")
    return summary


def _log(config, message):
    if config.verbose:
        print(message, file=sys.stdout, flush=True)
