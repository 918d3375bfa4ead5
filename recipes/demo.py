"""The built-in demo: the whole SpectralKD method on Fashion-MNIST, offline, on a laptop CPU.

    python recipes/demo.py                      # 5-10 minutes on 2 CPU cores
    KERAS_BACKEND=jax python recipes/demo.py    # 13% slower on CPU in all (docs/performance.md)

What it does (the paper's pipeline in miniature):
1. trains a small CaiT teacher (6 self-attention blocks + CaiT's 2 class-attention blocks);
2. profiles it: the frequency intensity L(X) of every block (SPEC.md 5), with plots;
3. chooses the layer pairs with the guideline (SPEC.md 6, `analysis.select_layer_pairs`);
4. trains the same smaller DeiT student (same initial weights) three ways: without KD, with
   soft KD only, and with SpectralKD (soft KD + the spectral alignment loss on those pairs);
5. prints a table (top-1 of each model; how well each student's intensity profile correlates
   with the teacher's; the spectral alignment loss between each student's and the teacher's
   paired maps) and says where the plots and TensorBoard logs are.

The data are Fashion-MNIST (28x28, 10 classes), made 3-channel: the full set when it is found
(the `dataset-fashion-mnist` Debian package, Keras' cache, or a download when online), else the
subset shipped with the package, so the demo runs on a fresh machine offline; the first line
says which. The default fixed subset (10k train / 2k test images) is the same from either
source, and it and the epochs fit the time budget. Everything is written under --output_dir (default runs/demo); a second
run with the same directory resumes or reuses the finished parts.
"""

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# First: Keras and TensorFlow imported without TensorFlow's C++ start-up lines ("could not find
# cuda drivers", "failed call to cuInit", ...), which mean nothing on a CPU machine.
from keras_spectralkd import _startup  # noqa: E402

_startup.quiet_import("keras", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_spectralkd import Distiller, analysis, spectral_alignment_loss  # noqa: E402
from keras_spectralkd.data import fashion_mnist_data  # noqa: E402
from keras_spectralkd.models import create  # noqa: E402
from keras_spectralkd.tools import study  # noqa: E402
from keras_spectralkd.training import checkpoint as checkpoint_lib  # noqa: E402
from keras_spectralkd.training import ema as ema_lib, loop  # noqa: E402
from keras_spectralkd.training.optimizer import create_optimizer  # noqa: E402
from keras_spectralkd.training.schedules import WarmupCosineDecay  # noqa: E402


@dataclasses.dataclass
class DemoConfig:
    """Sizes of the demo. The defaults are the README's run; `quick()` is the test's."""

    output_dir: str = "runs/demo"
    train_size: int = 10_000
    validation_size: int = 2_000
    image_size: int = 28
    # 7x7 patches: a 4x4 token grid, about 3.5x cheaper than 4x4 patches (7x7 grid) on CPU.
    patch_size: int = 7
    batch_size: int = 128
    teacher_epochs: int = 6
    student_epochs: int = 5
    lr: float = 1e-3
    warmup_epochs: int = 1
    # Random shifts and flips slow these few-epoch runs down a lot (a linear probe drops from
    # 85% to 70% test accuracy after 3 epochs with them): off by default.
    augment: bool = False
    # The miniature's models, one definition for the demo and the study.
    teacher: dict = dataclasses.field(default_factory=lambda: dict(study.TEACHER))
    student: dict = dataclasses.field(default_factory=lambda: dict(study.STUDENT))
    spectral_weight: float = 0.2
    profile_images: int = 512
    seed: int = 0
    data_dir: str = None
    verbose: int = 2

    @classmethod
    def quick(cls, output_dir, data_dir=None):
        """A tiny version for tests: a few hundred images, one epoch, very small models."""
        return cls(
            output_dir=output_dir, data_dir=data_dir, train_size=128, validation_size=64,
            batch_size=64, teacher_epochs=1, student_epochs=1, warmup_epochs=0,
            profile_images=64, teacher=dict(embed_dim=32, depth=3, num_heads=2, init_values=0.1),
            student=dict(embed_dim=16, depth=2, num_heads=2), verbose=0,
        )


# === Pieces ===
def _compile(distiller, config, epochs, steps_per_epoch):
    total = epochs * steps_per_epoch
    schedule = WarmupCosineDecay(
        config.lr, total_steps=total,
        warmup_steps=min(config.warmup_epochs * steps_per_epoch, total - 1),
        warmup_init_lr=1e-6, min_lr=1e-5,
    )
    model = distiller.student
    distiller.compile(
        optimizer=create_optimizer(schedule, model=model, weight_decay=0.05),
        metrics=ema_lib.classification_metrics(model.output_shape[-1]),
    )


def _fit(name, distiller, data, config, epochs, callbacks=()):
    """Trains with the package's loop (checkpoints, logs, best epoch) under output_dir/runs."""
    run_dir = os.path.join(config.output_dir, "runs", name)
    log_dir = os.path.join(config.output_dir, "tensorboard", name)
    started = time.time()
    result = loop.train(
        distiller, data.train, epochs=epochs, steps_per_epoch=data.steps_per_epoch,
        validation_data=data.validation, output_dir=run_dir,
        callbacks=[keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False), *callbacks],
        best_model=distiller.student, verbose=config.verbose,
    )
    final = result.history[-1]
    return {
        "top1": float(final["val_accuracy"]),
        "best_top1": float(result.best["value"]) if result.best else float("nan"),
        "train_time_s": round(time.time() - started, 1),
    }


def _profile(model, data, config, name):
    return analysis.profile_model(
        model, data.validation, num_images=config.profile_images, name=name, verbose=0
    )


def _log(config, message):
    if config.verbose:
        print(message, flush=True)


# === The demo ===
def run_demo(config):
    """Runs the whole demo; returns the results dict (also written to results.json)."""
    started = time.time()
    keras.utils.set_random_seed(config.seed)
    os.makedirs(config.output_dir, exist_ok=True)
    data = fashion_mnist_data(
        image_size=config.image_size, batch_size=config.batch_size,
        train_size=config.train_size, validation_size=config.validation_size, seed=config.seed,
        data_dir=config.data_dir, augment=config.augment,
    )
    _log(config, f"[demo] {data.description}; backend {keras.backend.backend()}.")
    common = dict(num_classes=data.num_classes, image_size=config.image_size,
                  patch_size=config.patch_size)

    # 1. The teacher: cross-entropy only.
    teacher = create("cait_s24_224", **common, **config.teacher)
    _log(config, f"[demo] 1/4 training the CaiT teacher ({teacher.count_params():,} params, "
                 f"{teacher.num_units} blocks) for {config.teacher_epochs} epochs.")
    trainer = Distiller(None, teacher, mode="none")
    _compile(trainer, config, config.teacher_epochs, data.steps_per_epoch)
    results = {"teacher": _fit("teacher", trainer, data, config, config.teacher_epochs)}
    teacher.trainable = False

    # 2. Profile the teacher and 3. choose the layer pairs with the guideline.
    teacher_profile = _profile(teacher, data, config, "teacher (CaiT)")
    student_depth = config.student["depth"]
    pairs = analysis.select_layer_pairs(teacher_profile, student_depth)
    _log(config, "[demo] 2/4 teacher intensity profile L(X) per block: "
                 + " ".join(f"{v:.4f}" for v in teacher_profile.intensity)
                 + "\n[demo] 3/4 guideline's layer pairs (student:teacher): "
                 + analysis.format_layer_pairs(pairs))

    # 4. Three students from the same initial weights.
    student = create("deit_tiny_patch16_224", **common, **config.student)
    initial_weights = student.get_weights()
    probe = next(iter(data.validation))[0][:8]
    gap_images = np.concatenate([x for x, _ in data.validation])[: config.profile_images]
    _, teacher_maps = teacher.forward_intermediates(gap_images, [t for _, t in pairs])
    runs = [
        ("no_kd", dict(teacher=None, mode="none")),
        ("soft_kd", dict(teacher=teacher, mode="soft")),
        ("spectral_kd", dict(teacher=teacher, mode="soft", layer_pairs=pairs,
                             spectral_weight=config.spectral_weight)),
    ]
    profiles = {"teacher": teacher_profile}
    for index, (name, kwargs) in enumerate(runs):
        keras.utils.set_random_seed(config.seed + 1)  # same data order and draws for each
        model = create("deit_tiny_patch16_224", **common, **config.student)
        model.set_weights(initial_weights)
        distiller = Distiller(student=model, **kwargs)
        _compile(distiller, config, config.student_epochs, data.steps_per_epoch)
        _log(config, f"[demo] 4/4 ({index + 1}/3) training the DeiT student "
                     f"({model.count_params():,} params, {model.num_units} blocks): {name}.")
        callbacks = []
        if distiller.teacher is not None:
            from keras_spectralkd.callbacks import SpectralTensorBoard

            callbacks.append(SpectralTensorBoard(
                os.path.join(config.output_dir, "tensorboard", name), probe
            ))
        results[name] = _fit(name, distiller, data, config, config.student_epochs, callbacks)
        profiles[name] = _profile(model, data, config, f"student ({name})")
        results[name]["intensity"] = [float(v) for v in profiles[name].intensity]
        results[name]["profile_correlation"] = analysis.profile_correlation(
            teacher_profile, profiles[name]
        )
        # The spectral alignment loss (SPEC.md 2) on the guideline's pairs, on test images:
        # how far the student's paired feature maps are from the teacher's, in frequency.
        _, student_maps = model.forward_intermediates(gap_images, [s for s, _ in pairs])
        results[name]["spectral_gap"] = float(keras.ops.convert_to_numpy(
            spectral_alignment_loss(student_maps, teacher_maps)
        ))

    # Plots: the teacher against the SpectralKD student (all figures), and all four profiles.
    plot_dir = os.path.join(config.output_dir, "plots")
    figures = analysis.save_profile_figures(
        plot_dir, [profiles["teacher"], profiles["spectral_kd"]],
        labels=["teacher (CaiT)", "student (SpectralKD)"], layer_pairs=pairs,
    )
    figures["intensity_all"] = os.path.join(plot_dir, "intensity_all.png")
    analysis.plot_intensity(
        [profiles[k] for k in ("teacher", "no_kd", "soft_kd", "spectral_kd")],
        ["teacher (CaiT)", "student, no KD", "student, soft KD", "student, SpectralKD"],
        layer_pairs=pairs, path=figures["intensity_all"],
    )
    summary = {
        "results": results,
        "layer_pairs": [list(p) for p in pairs],
        "teacher_intensity": [float(v) for v in teacher_profile.intensity],
        "plots": figures,
        "tensorboard": os.path.join(config.output_dir, "tensorboard"),
        "backend": keras.backend.backend(),
        "config": dataclasses.asdict(config),
        "wall_time_s": round(time.time() - started, 1),
    }
    checkpoint_lib.atomic_write_json(os.path.join(config.output_dir, "results.json"), summary)
    if config.verbose:
        print(format_table(summary))
    return summary


def format_table(summary):
    """The demo's printed table and where its outputs are."""
    results = summary["results"]
    rows = [
        ("teacher (CaiT, CE)", results["teacher"], None),
        ("student, no KD", results["no_kd"], results["no_kd"]["profile_correlation"]),
        ("student, soft KD", results["soft_kd"], results["soft_kd"]["profile_correlation"]),
        ("student, SpectralKD", results["spectral_kd"],
         results["spectral_kd"]["profile_correlation"]),
    ]
    lines = [
        "",
        f"SpectralKD demo on Fashion-MNIST ({summary['backend']} backend, "
        f"{summary['wall_time_s']:.0f} s). Layer pairs (student:teacher): "
        + ",".join(f"{s}:{t}" for s, t in summary["layer_pairs"]),
        f"{'model':<22} {'top-1':>7} {'best':>7} {'profile r':>10} {'spectral gap':>13} "
        f"{'train s':>8}",
    ]
    for label, result, correlation in rows:
        corr = "-" if correlation is None else f"{correlation:+.3f}"
        gap = f"{result['spectral_gap']:.4f}" if "spectral_gap" in result else "-"
        lines.append(
            f"{label:<22} {result['top1'] * 100:6.2f}% {result['best_top1'] * 100:6.2f}% "
            f"{corr:>10} {gap:>13} {result['train_time_s']:8.0f}"
        )
    lines += [
        "top-1: final epoch on the test subset; best: best epoch; profile r: Pearson "
        "correlation of the student's frequency-intensity profile L(X) with the teacher's "
        "(over relative depth); spectral gap: the spectral alignment loss between the "
        "student's and the teacher's maps at the layer pairs, on test images (what SpectralKD "
        "minimises; lower is closer).",
        f"Plots: {', '.join(summary['plots'].values())}",
        f"TensorBoard: tensorboard --logdir {summary['tensorboard']}",
        f"Numbers: {os.path.join(summary['config']['output_dir'], 'results.json')}",
    ]
    return "\n".join(lines)


def main(argv):
    from absl import flags

    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {argv[1:]}.")
    f = flags.FLAGS
    config = DemoConfig(output_dir=f.output_dir)
    if f.quick:
        config = DemoConfig.quick(f.output_dir)
        config.verbose = 2
    for name in ("train_size", "validation_size", "teacher_epochs", "student_epochs",
                 "batch_size", "seed"):
        if f[name].present:
            setattr(config, name, f[name].value)
    if keras.backend.backend() == "torch":
        print("[demo] note: Keras' torch backend is several times slower than jax or "
              "tensorflow on CPU; KERAS_BACKEND=jax runs this demo fastest.", flush=True)
    run_demo(config)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("output_dir", "runs/demo", "Where results, plots and logs go.")
    flags.DEFINE_bool("quick", False, "A one-minute version on tiny models (for tests).")
    flags.DEFINE_integer("train_size", None, "Training images (default 10000).")
    flags.DEFINE_integer("validation_size", None, "Test images (default 2000).")
    flags.DEFINE_integer("teacher_epochs", None, "Teacher epochs (default 6).")
    flags.DEFINE_integer("student_epochs", None, "Epochs of each student (default 5).")
    flags.DEFINE_integer("batch_size", None, "Batch size (default 128).")
    flags.DEFINE_integer("seed", None, "Seed (default 0).")
    app.run(main)
