"""The one training engine: a `RunConfig` -> a training run folder.

Every training of the package goes through `run`: the paper's ImageNet recipes, the
Fashion-MNIST miniature (its teacher and its students), the demo's and the study's runs, and a
user's own config (`spectralkd-train --recipe=... --set name=value`, `tools/train.py`):

    checked config -> data (ImageNet folders/TFDS, or Fashion-MNIST) -> student (seeded) +
    teacher (from its weights) -> Distiller -> AdamW (+ EMA) + warmup-cosine -> `training.train`
    (checkpoints, exact resume, logs, TensorBoard) -> student.keras, summary.json

A run folder holds config.json, checkpoints/, log.csv and log.jsonl (one record per epoch),
best.weights.h5, tensorboard/, student.keras and summary.json; the same call on the same folder
resumes it. The student is created right after seeding, before anything else draws, so runs of
one seed start from the same weights and see the same batches whatever their mode (the study's
paired design).

This package sits above everything else in keras_spectralkd (it drives models, conversion,
data, the Distiller, analysis and training); only the command-line tools import it.
"""

import dataclasses
import os
import sys
import time

import keras

from keras_spectralkd import data as data_lib
from keras_spectralkd import models
from keras_spectralkd import precision as precision_lib
from keras_spectralkd.callbacks import SpectralTensorBoard
from keras_spectralkd.convert import pretrained
from keras_spectralkd.distiller import Distiller
from keras_spectralkd.recipes.config import Recipe, RunConfig
from keras_spectralkd.teacher_cache import TeacherCache
from keras_spectralkd.training import checkpoint as checkpoint_lib
from keras_spectralkd.training import distribute, loop, optimizer as optim
from keras_spectralkd.training import ema as ema_lib
from keras_spectralkd.training import schedules

def timm_weights_hint(timm_tag, filename):
    """How to obtain a timm teacher's weights offline (a recipe's `teacher_source`)."""
    return (
        f"Get timm's {timm_tag} weights on a machine with internet access: pip install timm; "
        f"python -c \"import timm, torch; torch.save(timm.create_model('{timm_tag}', "
        f"pretrained=True).state_dict(), '{filename}')\"; then pass teacher_weights={filename} "
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
        spectral_every_n_epochs=1,
    )
    preset.update(changes)
    return preset


# === Teacher ===
# `teacher=keras`: the teacher is the whole Keras model saved in teacher_weights (a `.keras`
# file): any functional model, e.g. a keras.applications CNN, its layers named in layer_pairs.
KERAS_MODEL_TEACHER = "keras"


def teacher_weights(recipe, config):
    """`(name, weights)` for `models.create` from `config.teacher_weights`: a file, or a timm
    name with an optional tag (timm's pretrained weights); `(KERAS_MODEL_TEACHER, path)` for a
    whole saved model.

    Raises:
        FileNotFoundError: no weights given or the file is missing, saying how to get them.
        ValueError: timm weights of another model than the teacher.
    """
    path = config.teacher_weights
    if not path:
        raise FileNotFoundError(
            f"mode={config.mode!r} needs a trained teacher ({config.teacher}), but no "
            f"teacher_weights was given. {recipe.teacher_source}"
        )
    if config.teacher == KERAS_MODEL_TEACHER:
        if not str(path).endswith(".keras"):
            raise ValueError(
                f"teacher={KERAS_MODEL_TEACHER} loads a whole saved Keras model, so "
                f"teacher_weights must be a .keras file; got {path!r}."
            )
        if not os.path.exists(path):
            raise FileNotFoundError(f"Teacher model {path!r} does not exist.")
        return KERAS_MODEL_TEACHER, path
    if pretrained.is_timm_pretrained_name(path):  # e.g. "cait_s24_224.fb_dist_in1k"
        if pretrained.split_name(path)[0] != config.teacher:
            raise ValueError(
                f"teacher_weights={path!r} names timm weights of another model than the "
                f"teacher {config.teacher!r}."
            )
        return path, "timm"
    if not os.path.exists(path):
        raise FileNotFoundError(f"Teacher weights {path!r} do not exist. {recipe.teacher_source}")
    return config.teacher, path


def load_teacher(recipe, config, num_classes):
    """The teacher through the one model loader (`models.create(name, weights)`, see
    `teacher_weights`), its head checked against the dataset's `num_classes` (ValueError)."""
    name, weights = teacher_weights(recipe, config)
    if name == KERAS_MODEL_TEACHER:
        if config.teacher_overrides:
            raise ValueError(
                f"teacher={KERAS_MODEL_TEACHER} takes the saved model as it is; drop "
                f"teacher_overrides={config.teacher_overrides!r}."
            )
        teacher = keras.saving.load_model(weights, compile=False)
    else:
        teacher = models.create(name, weights, image_size=config.image_size,
                                **config.teacher_overrides)
    classes = teacher.output_shape[-1]
    if classes != num_classes:
        raise ValueError(
            f"The teacher from {config.teacher_weights!r} has {classes} output classes but the "
            f"dataset has {num_classes}; use a teacher trained on the same classes."
        )
    return teacher


# === Run ===
def accelerators():
    """The GPUs the current Keras backend sees (an empty list on a CPU-only machine)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return list(range(torch.cuda.device_count()))
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def resolve_precision(config, gpus, backend):
    """(config, `precision.Precision`): what `config.precision` means on this machine and
    `backend`; the config's `jit_compile="auto"` takes the choice's XLA setting where it has one
    (TensorFlow on a bf16 CPU: without XLA)."""
    choice = precision_lib.choose(config.precision, gpus, teacher=config.mode != "none",
                                  teacher_rebuilds=config.teacher != KERAS_MODEL_TEACHER,
                                  backend=backend)
    if config.jit_compile == "auto" and choice.jit_compile is not None:
        config = dataclasses.replace(config, jit_compile=choice.jit_compile)
    return config, choice


def check_precision(precision, backend, gpus):
    """ValueError for a precision that cannot run on `backend` with these `gpus`, before work."""
    if precision == "mixed_float16" and backend == "jax" and not gpus:
        raise ValueError(
            "precision='mixed_float16' cannot run on the jax backend on CPU: XLA's CPU matmul "
            "has no float16 inputs with float32 accumulation ('F16_F16_F32' is not supported by "
            "dot_general). Use precision=mixed_bfloat16 or float32, or another backend."
        )


def load_data(config):
    """The config's dataset as an `ImageData`: ImageNet (folders or TFDS) with DeiT's
    transforms, or Fashion-MNIST (`data.fashion_mnist_data`)."""
    if config.dataset == "fashion_mnist":
        return data_lib.fashion_mnist_data(
            image_size=config.image_size,
            batch_size=config.batch_size,
            eval_batch_size=config.eval_batch_size or 256,
            train_size=config.train_size,
            validation_size=config.validation_size,
            seed=config.seed,
            augment=config.augment,
            data_dir=config.data_dir,
        )
    if not config.data_dir:
        raise FileNotFoundError(f"No data_dir given. {data_lib.HOW_TO_GET_IMAGENET}")
    train_transform = data_lib.TrainTransform(
        config.image_size,
        rand_augment=config.rand_augment,
        random_erasing=config.random_erasing,
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


def build_distiller(config, teacher, student, teacher_dtype=None):
    """The Distiller of `config.mode`. Soft/hard KD with a zero spectral weight (`--beta=0` or
    `--spectral_weight=0`) runs without layer pairs: the plain KD baseline, no map extraction.
    `teacher_dtype`: the frozen teacher's own dtype (`precision.choose`), None for the policy's."""
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
        teacher_dtype=teacher_dtype,
    )


def compile_distiller(distiller, config, steps_per_epoch, loss_scale):
    """The one optimizer builder: AdamW (timm's no-decay set on the student, optional EMA) on a
    per-step warmup-cosine schedule peaking at `lr * batch_size / lr_batch_size`."""
    base_lr = config.lr * config.batch_size / config.lr_batch_size
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


def _settle_teacher(recipe, config):
    """Before anything is loaded: a resumed run without teacher_weights rebuilds the teacher from
    the file its checkpoint names, and the teacher's weights must exist. Returns the (possibly
    completed) config and the checkpoint's state (None for a new run)."""
    saved = checkpoint_lib.read_state(os.path.join(config.output_dir, "checkpoints"))
    previous = (saved or {}).get("run_info") or {}
    if config.mode != "none" and not config.teacher_weights and previous.get("teacher_weights"):
        config = dataclasses.replace(config, teacher_weights=previous["teacher_weights"])
        _log(config, f"[{recipe.name}] resuming: the teacher is rebuilt from "
                     f"{config.teacher_weights} (recorded in the checkpoint).")
    if config.mode != "none":
        teacher_weights(recipe, config)
    return config, saved


def resolve_verbose(verbose):
    """fit's verbosity: "auto" is a per-step progress bar on a terminal, one line per epoch in
    a log file or pipe (a bar there is thousands of carriage returns)."""
    if verbose != "auto":
        return verbose
    isatty = getattr(sys.stdout, "isatty", None)
    return 1 if isatty is not None and isatty() else 2


def teacher_cache_for(config, distiller, data, cache=None, log=None):
    """The training stream with the frozen teacher's outputs attached (`config.cache_teacher`):
    `cache` (a `TeacherCache` of these training images holding the Distiller's teacher units,
    e.g. one shared by a sweep's runs), else one computed here; `data` unchanged when the run
    has no teacher."""
    if not config.cache_teacher or distiller.teacher is None:
        return data
    if data.with_extras is None or data.train_images is None:
        raise ValueError("cache_teacher=true needs training images in memory without "
                         "augmentation (dataset=fashion_mnist, augment=false).")
    units = distiller.teacher_units
    if cache is None:
        started = time.time()
        cache = TeacherCache.compute(distiller.teacher, data.train_images, units,
                                     batch_size=config.eval_batch_size or 256)
        if log:
            log(f"teacher outputs cached for {len(cache)} training images in "
                f"{time.time() - started:.1f} s.")
    return data.with_extras(cache.inputs(data.train_images, units))


def run(recipe, config, data=None, callbacks=(), teacher_cache=None):
    """Trains `config` into `config.output_dir` (see the module docstring), resuming it when
    it holds a checkpoint; returns the summary dict (also written to summary.json).

    Args:
        recipe: the `Recipe` the config comes from (its name labels logs and files).
        config: the `RunConfig`; checked first (`RunConfig.check`).
        data: an `ImageData` to use instead of loading the config's dataset.
        callbacks: more Keras callbacks; they run before the loop's records, so logs they add
            at an epoch's end land in log.csv, log.jsonl and the history.
        teacher_cache: with `config.cache_teacher`, a `TeacherCache` of the training images to
            use instead of computing one (a sweep computes it once for all its runs).
    """
    started = time.time()
    config = config.check()
    if not config.output_dir:
        raise ValueError("output_dir is required (checkpoints, logs and weights go there).")
    config = dataclasses.replace(config, verbose=resolve_verbose(config.verbose))
    # Joining the other processes of a multi-machine run must come before other backend work.
    distribute.initialize_multi_process()
    gpus = accelerators()
    config, choice = resolve_precision(config, gpus, keras.backend.backend())
    precision = choice.policy
    _log(config, f"[{recipe.name}] precision: {choice.describe()}.")
    check_precision(precision, keras.backend.backend(), gpus)
    loss_scale = optim.set_precision(precision)
    distribution = distribute.setup_distribution(config.strategy)
    distribution.check_batch_size(config.batch_size)
    config, saved = _settle_teacher(recipe, config)
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
    # An output dir written by another model or mode is refused before anything is written.
    info = run_info(recipe, config, data.num_classes)
    if saved is not None:
        loop.check_run_info(saved, info, config.output_dir)
    # Only the chief writes the run's shared outputs; another worker keeps its own checkpoints
    # and logs in `run_dir` (docs/distributed.md).
    run_dir = distribution.run_dir(config.output_dir)
    os.makedirs(run_dir, exist_ok=True)
    checkpoint_lib.atomic_write_json(
        os.path.join(run_dir, "config.json"),
        {"recipe": recipe.name, **config.to_dict(), **choice.to_dict()},
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
        # Seeded right before the student, so its weights depend on the seed alone.
        keras.utils.set_random_seed(config.seed)
        student = models.create(
            config.student,
            num_classes=data.num_classes,
            image_size=config.image_size,
            drop_path_rate=config.drop_path_rate,
            **config.student_overrides,
        )
        teacher = None
        if config.mode != "none":
            teacher = load_teacher(recipe, config, data.num_classes)
        distiller = build_distiller(config, teacher, student, choice.teacher_dtype)
        teacher = distiller.teacher  # the float32 original is freed when a bf16 copy runs
        schedule = compile_distiller(distiller, config, steps_per_epoch, loss_scale)
    data = teacher_cache_for(config, distiller, data, teacher_cache,
                             log=lambda message: _log(config, f"[{recipe.name}] {message}"))
    _log(config, f"[{recipe.name}] student {config.student} ({student.count_params():,} "
                 f"params), teacher {config.teacher if teacher is not None else 'none'}, mode "
                 f"{config.label()}, layer pairs {distiller.layer_pairs}, peak lr "
                 f"{schedule.base_lr:.3g}, EMA {config.ema_decay or 'off'}.")

    callbacks = list(callbacks)
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
        validation_every=config.validation_every,
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
        "method": config.label(),
        "seed": config.seed,
        "epochs": config.epochs,
        "final": final,
        "best": result.best,
        "resumed_from": None if result.resumed_from is None else {
            k: result.resumed_from[k] for k in ("epoch", "step_in_epoch", "global_step")
        },
        "student": student_path,
        "history": result.history,
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
