"""The recipes' runner: a recipe's settings and the command line -> a training run.

A recipe is a `Recipe` (the paper's numbers, SPEC.md 4 and 7, plus presets that shrink it; the
table is `recipes/table.py`); the runner turns command-line flags into a `RunConfig` and trains:

    data (ImageNet: folders or TFDS) -> teacher (converted weights) + student -> Distiller
    -> AdamW (+ EMA) + warmup-cosine -> `training.train` (checkpoints, resume, logs, TensorBoard)

Every setting is written once, as a `RunConfig` field: the fields that carry a `help` in their
metadata become absl flags (type from the annotation, `choices` -> an enum flag), with the
recipe's paper value as default; each flag given on the command line overrides the preset.

This package sits above everything else in keras_spectralkd (it drives models, conversion,
data, the Distiller, analysis and training); nothing in the package imports it.
"""

import dataclasses
import os
import sys
import time

import keras
import tensorflow as tf
from absl import flags

from keras_spectralkd import data as data_lib
from keras_spectralkd import models
from keras_spectralkd.analysis import parse_layer_pairs
from keras_spectralkd.callbacks import SpectralTensorBoard
from keras_spectralkd.convert import from_timm, pretrained
from keras_spectralkd.distiller import Distiller
from keras_spectralkd.training import checkpoint as checkpoint_lib
from keras_spectralkd.training import distribute, loop, optimizer as optim
from keras_spectralkd.training import ema as ema_lib
from keras_spectralkd.training import schedules
from keras_spectralkd.training.callbacks import NonFiniteLossError

MODES = ("soft", "hard", "fft", "none")
TIMM_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".pth.tar")
PRECISION_CHOICES = ("auto",) + optim.PRECISIONS


def setting(help, default=dataclasses.MISSING, choices=None, **field_kwargs):
    """A `RunConfig` field that is also a command-line flag (`help` is the flag's help)."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata, **field_kwargs)


# === Configuration ===
@dataclasses.dataclass
class RunConfig:
    """Everything one training run needs; the recipe's preset fills it, flags override it.

    Model fields take timm names; `*_overrides` are extra `models.create` arguments (presets use
    them for small models). `batch_size` is GLOBAL (over all replicas); the learning rate is
    `lr * batch_size / 512` (DeiT's rule). Fields made with `setting(help, ...)` are flags.
    """

    student: str
    teacher: str
    layer_pairs: list = setting(
        "student:teacher unit pairs, e.g. '0:0,1:1,6:18' (tools/analyze.py prints a "
        "suggestion); default: the paper's (SPEC.md 4).")
    spectral_weight: float = setting("w_fft (SPEC.md 4).")
    epochs: int = setting("Training epochs.")
    warmup_epochs: int = setting("Linear warmup epochs.")
    batch_size: int = setting("GLOBAL batch size (all devices); lr scales with batch_size / 512.",
                              512)
    eval_batch_size: int = setting("Validation batch size (default: batch_size).", None)
    lr: float = setting("Learning rate for a global batch of 512.", schedules.REFERENCE_BASE_LR)
    min_lr: float = schedules.MIN_LR
    warmup_lr: float = schedules.WARMUP_INIT_LR
    weight_decay: float = 0.05
    mode: str = setting("soft/hard: CE + logit KD + spectral; fft: CE + spectral; none: CE "
                        "only.", "soft", choices=MODES)
    alpha: float = setting("Weight of the logit KD term.", 0.9)
    beta: float = setting("Global weight of the spectral term.", 1.0)
    temperature: float = setting("Soft-KD temperature.", 1.0)
    label_smoothing: float = 0.1
    drop_path_rate: float = 0.0
    ema_decay: float = setting("EMA decay of the student per optimizer step (0: no EMA).",
                               ema_lib.EMA_DECAY)
    image_size: int = 224
    repeated_augmentation: int = setting("DeiT's repeated augmentation factor (1: off).", 3)
    rand_augment: bool = True
    random_erasing: float = 0.25
    mixup: float = setting("MixUp alpha (0: off, as the paper).", 0.0)
    cutmix: float = setting("CutMix alpha (0: off, as the paper).", 0.0)
    precision: str = setting("'auto': mixed_bfloat16 on GPUs, float32 on CPUs. mixed_float16 "
                             "uses loss scaling. The spectral loss is float32 in every case.",
                             "auto", choices=PRECISION_CHOICES)
    student_overrides: dict = dataclasses.field(default_factory=dict)
    teacher_overrides: dict = dataclasses.field(default_factory=dict)
    teacher_weights: str = setting(
        "Teacher weights: a converted .keras or .weights.h5 file, or a timm checkpoint "
        "(.pth/.safetensors/.bin) converted on the fly, or a timm name[.tag] (e.g. "
        "cait_s24_224.fb_dist_in1k): timm's pretrained weights from its cache, downloaded if "
        "online. A resumed run reuses the checkpoint's when not given.", None)
    data_dir: str = setting("ImageNet: an image-folder root (train/, val/) or a TFDS data dir.",
                            None)
    data_format: str = setting("How --data_dir is laid out ('auto': folder if it has train/).",
                               "auto", choices=("auto", "folder", "tfds"))
    tfds_manual_dir: str = setting(
        "Folder with ILSVRC2012_img_{train,val}.tar, to prepare TFDS once.", None)
    output_dir: str = setting("Where checkpoints, logs, TensorBoard events and weights go; a run "
                              "restarted with the same output dir resumes.", None)
    steps_per_epoch: int = setting(
        "Limit the optimizer steps per epoch (default: one pass over the data).", None)
    save_every_steps: int = setting("Also checkpoint every N steps (default: at epoch ends).",
                                    None)
    seed: int = setting("Seed of initialisation, shuffling, augmentation.", 0)
    deterministic: bool = setting("Sequential per-image augmentation (reproducible, slower).",
                                  False)
    tensorboard: bool = setting(
        "Write TensorBoard logs (with SpectralTensorBoard's spectral panels).", True)
    spectral_every_n_epochs: int = 1
    strategy: str = setting("Data parallelism (see keras_spectralkd.training.distribute).",
                            "auto", choices=distribute.STRATEGIES)
    jit_compile: object = "auto"
    verbose: int = setting("fit's verbosity (0, 1, 2).", 1)

    def to_dict(self):
        return dataclasses.asdict(self)


def flag_fields():
    """The `RunConfig` fields that are command-line flags."""
    return [f for f in dataclasses.fields(RunConfig) if "help" in f.metadata]


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
_DEFINE = {int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_bool,
           str: flags.DEFINE_string}


def define_flags(recipe, flag_values=None):
    """Defines the recipe's absl flags in `flag_values`: `--preset` and one flag per
    `RunConfig` setting, defaulting to the paper's value (None for paths and `layer_pairs`)."""
    fv = flag_values if flag_values is not None else flags.FLAGS
    flags.DEFINE_enum("preset", "paper", ["paper"] + sorted(recipe.presets),
                      "Settings to start from: 'paper' (SPEC.md 7) or a smaller one.",
                      flag_values=fv)
    for field in flag_fields():
        help_text = field.metadata["help"]
        if field.name == "teacher_weights" and recipe.teacher_source:
            help_text = f"{help_text} {recipe.teacher_source}"
        if field.name == "layer_pairs":
            flags.DEFINE_string(field.name, None, help_text, flag_values=fv)
        elif "choices" in field.metadata:
            flags.DEFINE_enum(field.name, getattr(recipe.paper, field.name),
                              list(field.metadata["choices"]), help_text, flag_values=fv)
        else:
            _DEFINE[field.type](field.name, getattr(recipe.paper, field.name), help_text,
                                flag_values=fv)
    return fv


def config_from_flags(recipe, flag_values):
    """The preset's `RunConfig` with every flag given on the command line applied."""
    changes = {}
    for field in flag_fields():
        flag = flag_values[field.name]
        if not (flag.present or flag.value != flag.default):
            continue
        value = flag.value
        if field.name == "layer_pairs":
            value = parse_layer_pairs(value)
        changes[field.name] = value
    return recipe.config(flag_values["preset"].value, **changes)


def main(recipe, argv=None):
    """The recipe scripts' entry point: parses `argv` (default `sys.argv`), runs, returns the
    exit status: 0 done, 1 a runtime failure (one line on stderr, no traceback), 2 a usage
    error."""
    argv = list(sys.argv if argv is None else argv)
    flag_values = define_flags(recipe, flags.FlagValues())
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv[1:]):
        print(f"{recipe.description}\n\n{flag_values.get_help()}")
        return 0
    try:
        rest = flag_values(argv)
        if len(rest) > 1:
            raise flags.Error(f"unexpected arguments {rest[1:]}; every setting is a --flag")
        config = config_from_flags(recipe, flag_values)
    except (flags.Error, ValueError) as error:
        print(f"{os.path.basename(argv[0])}: usage error: {error}", file=sys.stderr)
        return 2
    try:
        run(recipe, config)
    except (NonFiniteLossError, ValueError, FileNotFoundError, OSError) as error:
        print(f"{os.path.basename(argv[0])}: error: {error}", file=sys.stderr)
        return 1
    return 0


# === Teacher ===
def load_teacher(recipe, config, num_classes):
    """The teacher, from `config.teacher_weights`: .keras, .weights.h5, a timm checkpoint, or a
    timm name with an optional tag (timm's pretrained weights, `convert.pretrained`).

    Raises:
        FileNotFoundError: no weights given or the file is missing, saying how to get them.
        ValueError: the teacher's head does not fit the dataset.
    """
    path = config.teacher_weights
    if not path:
        raise FileNotFoundError(
            f"mode={config.mode!r} needs a trained teacher ({config.teacher}), but no "
            f"--teacher_weights was given. {recipe.teacher_source}"
        )
    timm_name = pretrained.is_timm_pretrained_name(path)  # e.g. "cait_s24_224.fb_dist_in1k"
    if not timm_name and not os.path.exists(path):
        raise FileNotFoundError(
            f"Teacher weights {path!r} do not exist. {recipe.teacher_source}"
        )
    create_kwargs = dict(config.teacher_overrides)
    if timm_name:  # timm's pretrained weights, from timm's cache (downloaded if online)
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
        schedule, model=distiller.student, weight_decay=config.weight_decay,
        loss_scale=loss_scale, ema_momentum=config.ema_decay or None,
    )
    distiller.compile(
        optimizer=optimizer,
        metrics=ema_lib.classification_metrics(distiller.student.output_shape[-1]),
        jit_compile=config.jit_compile,
    )
    return schedule


def _weights_source(config):
    """Where the teacher's weights come from, as the checkpoint records it: an absolute path, or
    a timm name[.tag] as given; None without a teacher."""
    path = config.teacher_weights
    if config.mode == "none" or not path:
        return None
    return path if pretrained.is_timm_pretrained_name(path) else os.path.abspath(path)


def run_info(recipe, config, num_classes):
    """What identifies a run: resuming an output dir written with other values is refused."""
    return {
        "recipe": recipe.name,
        "student": config.student,
        "student_overrides": dict(config.student_overrides),
        "teacher": None if config.mode == "none" else config.teacher,
        "teacher_overrides": {} if config.mode == "none" else dict(config.teacher_overrides),
        "teacher_weights": _weights_source(config),
        "mode": config.mode,
        "layer_pairs": [list(p) for p in config.layer_pairs],
        "image_size": config.image_size,
        "num_classes": num_classes,
        "ema": bool(config.ema_decay),
    }


def _resume_checks(recipe, config, num_classes):
    """Refuses an output dir written by another model or mode before anything is loaded or
    written; a resumed run without --teacher_weights rebuilds the teacher from the file its
    checkpoint names. Returns the (possibly completed) config and the run's identity."""
    saved = checkpoint_lib.read_state(os.path.join(config.output_dir, "checkpoints"))
    previous = (saved or {}).get("run_info") or {}
    if config.mode != "none" and not config.teacher_weights and previous.get("teacher_weights"):
        config = dataclasses.replace(config, teacher_weights=previous["teacher_weights"])
        _log(config, f"[{recipe.name}] resuming: the teacher is rebuilt from "
                     f"{config.teacher_weights} (recorded in the checkpoint).")
    info = run_info(recipe, config, num_classes)
    if saved is not None:
        loop.check_run_info(saved, info, config.output_dir)
    return config, info


def run(recipe, config, data=None):
    """Trains `config` (see the module docstring); returns a summary dict.

    Args:
        recipe: the `Recipe` (for messages).
        config: the `RunConfig`.
        data: an `ImageData` to use instead of loading ImageNet (tests, the demo).
    """
    started = time.time()
    if config.mode not in MODES:
        raise ValueError(f"Unknown mode {config.mode!r}; expected one of {MODES}.")
    if not config.output_dir:
        raise ValueError("--output_dir is required (checkpoints, logs and weights go there).")
    # Joining the other processes of a multi-machine run must come before other backend work.
    distribute.initialize_multi_process()
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
    config, info = _resume_checks(recipe, config, data.num_classes)
    # Only the chief writes the run's shared outputs; another worker keeps its own checkpoints
    # and logs in `run_dir` (docs/distributed.md).
    run_dir = distribution.run_dir(config.output_dir)
    os.makedirs(run_dir, exist_ok=True)
    checkpoint_lib.atomic_write_json(
        os.path.join(run_dir, "config.json"),
        {"recipe": recipe.name, "precision": precision, **config.to_dict()},
    )
    _log(config, f"[{recipe.name}] data: {data.description}; {data.num_train_examples} train / "
                 f"{data.num_validation_examples} val images, {data.num_classes} classes, "
                 f"{steps_per_epoch} steps/epoch; {distribution.describe()}; precision "
                 f"{precision}.")

    left_out = distribution.evaluation_images_left_out(data.num_validation_examples,
                                                       config.batch_size)
    if left_out:
        _log(config, f"[{recipe.name}] note: {left_out} of the {data.num_validation_examples} "
                     f"validation images are not evaluated (the last batch is cut to a multiple "
                     f"of the {distribution.num_replicas} devices); pick a batch size that "
                     "divides the validation set to evaluate all.")

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
    _log(config, f"[{recipe.name}] student {config.student} ({student.count_params():,} "
                 f"params), teacher {config.teacher if teacher is not None else 'none'}, mode "
                 f"{config.mode}, layer pairs {distiller.layer_pairs}, peak lr "
                 f"{schedule.base_lr:.3g}, EMA {config.ema_decay or 'off'}.")

    callbacks = []
    if config.tensorboard:
        log_dir = os.path.join(config.output_dir, "tensorboard")
        if distribution.is_chief:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
        # On every process: it writes on the chief only, but under JAX all must compute.
        if teacher is not None and hasattr(student, "forward_intermediates"):
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
        output_dir=run_dir,
        callbacks=callbacks,
        best_model=student,
        monitor="val_accuracy",
        save_every_steps=config.save_every_steps,
        verbose=config.verbose,
        run_info=info,
    )

    student_path = os.path.join(config.output_dir, "student.keras")
    if distribution.is_chief:
        tmp = student_path[: -len(".keras")] + f".tmp-{os.getpid()}.keras"
        student.save(tmp)
        os.replace(tmp, student_path)
    if ema_lib.uses_ema(distiller):
        # Every process swaps (under JAX the swap's device_put on global arrays is a collective
        # that all processes must join: a chief-only swap hangs); only the chief writes.
        with ema_lib.ema_weights(distiller):
            if distribution.is_chief:
                checkpoint_lib.atomic_save_weights(
                    student, os.path.join(config.output_dir, "student_ema.weights.h5")
                )
    if not distribution.is_chief:
        return {"recipe": recipe.name, "worker": distribution.process_index,
                "final": result.history[-1] if result.history else {}, "run_dir": run_dir}
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
