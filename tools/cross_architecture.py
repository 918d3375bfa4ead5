"""Across architectures: a CNN teacher distilled into a ViT student on Fashion-MNIST, paired seeds.

    nice -n 19 python tools/cross_architecture.py --backend=jax --output_dir=runs/cross_arch
    python tools/cross_architecture.py --quick --output_dir=/tmp/cross_quick   # a smoke run

What the spectral term does when teacher and student are different kinds of network (issue 23):

1. The teacher is a small functional Keras CNN (`cnn_teacher`: four conv stages, batch norm,
   global pooling), trained ONCE with `keras.Model.fit` on the students' training images and
   saved whole as `<output_dir>/teacher/teacher.keras`. It is profiled at its four stage
   outputs BY NAME (`analysis.profile_model(layer_names=...)`), and the layer pairs are the
   guideline's on that profile (`analysis.select_layer_pairs`): a DeiT unit index with a CNN
   layer name, e.g. `(0, "stage_1")`; the Distiller reads the CNN's maps through a
   `taps.FeatureTap` and compares 28x28 or 14x14 maps with the student's 7x7 tokens on their
   common low band (SPEC.md 2.1).
2. The students are the miniature's DeiT (`RECIPES["fashion_mnist"]`, `MINI_STUDENT`) with
   4x4 patches (a 7x7 token grid at 28x28), trained by the package's one engine
   (`recipes.sweep.run_sweep` -> `runner.run`, `teacher=keras` loading the saved CNN) in three
   arms: none (CE only), soft (soft logit KD), soft+spectral (SpectralKD). Within a seed every
   arm starts from the same weights and sees the same batches (the runner seeds right before
   the student; the data stream is a function of (seed, epoch)): a paired design.
3. `tools.study.statistics` gives the per-arm means and the paired differences with 95%
   t-intervals over seeds; also the spectral gap (the spectral loss at the pairs on the
   profiling images), the level distance and the profile correlation to the teacher.

Outputs: cross_architecture.json (settings, teacher, every run, statistics, wall and CPU time),
results.md (the tables), and the run folders (resumable: a finished run is read back).
"""

import argparse
import dataclasses
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Importing triton after TensorFlow segfaults (see tests/conftest.py); nothing here needs it.
sys.modules.setdefault("triton", None)

from keras_spectralkd.tools import cli  # noqa: E402
from keras_spectralkd.tools.study import BACKENDS, _int_list  # noqa: E402

ARMS = ("none", "soft", "soft+spectral")
STAGES = ("stage_0", "stage_1", "stage_2", "stage_3")
# (filters, stride) per stage: 28 -> 28, 14, 7, 7. Every stage is at least as wide as the
# student (48; quick: 16), so its channels pool down to the student's (SPEC.md 2.2).
WIDTHS = (48, 64, 96, 128)
QUICK_WIDTHS = (16, 16, 24, 32)
STRIDES = (1, 2, 2, 1)
# The full run: sized for about 25 min on 2 CPU cores (5 seeds x 3 arms); see docs/analysis.md.
FULL = dict(seeds=(0, 1, 2, 3, 4), teacher_epochs=8, student_epochs=4, train_size=4000,
            validation_size=2000)
QUICK = dict(seeds=(0, 1), teacher_epochs=1, student_epochs=1, train_size=256,
             validation_size=128)


def cnn_teacher(image_size, num_classes, widths=WIDTHS, name="cnn_teacher"):
    """A small functional CNN: four conv-BN-ReLU stages named `stage_0`..`stage_3` (their ReLU
    outputs are the maps), global average pooling, a dense head of logits."""
    import keras

    images = keras.Input((image_size, image_size, 3), name="images")
    x = images
    for index, (filters, stride) in enumerate(zip(widths, STRIDES)):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                                name=f"stage_{index}_conv")(x)
        # momentum 0.9: after the teacher's few hundred steps, Keras' default 0.99 leaves the
        # moving statistics far from the batches' (test top-1 far below train top-1).
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"stage_{index}_bn")(x)
        x = keras.layers.Activation("relu", name=f"stage_{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(num_classes, name="head")(x)
    return keras.Model(images, logits, name=name)


def configs(quick, epochs=None, train_size=None, validation_size=None):
    """The students' `RunConfig` (the miniature's, 4x4 patches, teacher=keras)."""
    from keras_spectralkd.recipes.runner import KERAS_MODEL_TEACHER
    from keras_spectralkd.recipes.table import MINI_STUDENT, RECIPES, _QUICK_STUDENT

    sizes = QUICK if quick else FULL
    student = dict(_QUICK_STUDENT if quick else MINI_STUDENT, patch_size=4)
    return RECIPES["fashion_mnist"].config(
        "quick" if quick else "paper",
        student_overrides=student, teacher=KERAS_MODEL_TEACHER, teacher_overrides={},
        epochs=epochs or sizes["student_epochs"],
        warmup_epochs=0 if quick else 1,
        train_size=train_size or sizes["train_size"],
        validation_size=validation_size or sizes["validation_size"],
    ).check()


def train_cnn_teacher(config, output_dir, epochs, widths, log):
    """Trains (or reads back) the CNN teacher on `config`'s data; returns (model, path, top1)."""
    import keras

    from keras_spectralkd.recipes import runner

    folder = os.path.join(output_dir, "teacher")
    path, record = os.path.join(folder, "teacher.keras"), os.path.join(folder, "teacher.json")
    data = runner.load_data(dataclasses.replace(config, seed=0))
    if os.path.exists(path) and os.path.exists(record):
        with open(record) as f:
            top1 = json.load(f)["top1"]
        log(f"teacher read back from {path} (test top-1 {top1 * 100:.2f}%).")
        return keras.saving.load_model(path, compile=False), path, top1
    started = time.time()
    keras.utils.set_random_seed(0)
    model = cnn_teacher(config.image_size, data.num_classes, widths)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    for epoch in range(epochs):  # the students' stream: the same batches, seed 0
        model.fit(data.train(epoch), epochs=1, verbose=0)
    _, top1 = model.evaluate(data.validation, verbose=0)
    os.makedirs(folder, exist_ok=True)
    model.save(path)
    with open(record, "w") as f:
        json.dump(dict(top1=float(top1), epochs=epochs, widths=list(widths),
                       wall_time_s=round(time.time() - started, 1)), f, indent=1)
    log(f"teacher trained in {time.time() - started:.0f} s: test top-1 {top1 * 100:.2f}%.")
    return keras.saving.load_model(path, compile=False), path, float(top1)


def run(quick, output_dir, seeds=None, epochs=None, teacher_epochs=None, train_size=None,
        validation_size=None, profile_images=None, log=print):
    """The whole comparison (see the module doc); returns the summary dict."""
    import keras

    import numpy as np

    from keras_spectralkd import analysis
    from keras_spectralkd.recipes import RECIPES, runner, sweep
    from keras_spectralkd.tools import study

    started, cpu_started = time.time(), _cpu_seconds()
    sizes = QUICK if quick else FULL
    seeds = tuple(seeds or sizes["seeds"])
    config = configs(quick, epochs, train_size, validation_size)
    os.makedirs(output_dir, exist_ok=True)
    log(f"backend {keras.backend.backend()}; student {config.student} "
        f"{config.student_overrides}; {config.train_size} train / {config.validation_size} "
        f"test images; {config.epochs} epochs; seeds {list(seeds)}; output in {output_dir}.")
    teacher_epochs = teacher_epochs or sizes["teacher_epochs"]
    model, path, teacher_top1 = train_cnn_teacher(
        config, output_dir, teacher_epochs, QUICK_WIDTHS if quick else WIDTHS, log)
    model.trainable = False
    count = profile_images or (64 if quick else 512)
    # The profiling images: the first test images, as the study's (recipes.sweep).
    images = np.concatenate([np.asarray(x) for x, _ in runner.load_data(config).validation])
    images = images[:count]
    profile = analysis.profile_model(model, images, layer_names=list(STAGES), entropy=False,
                                     name="cnn_teacher", verbose=0)
    pairs = [tuple(p) for p in analysis.select_layer_pairs(
        profile, config.student_overrides["depth"])]
    log("teacher L(X) per stage: " + " ".join(f"{v:.4f}" for v in profile.intensity)
        + f"; layer pairs (student unit, teacher layer) {pairs}.")
    teacher = sweep.Teacher(model=model, path=path, profile=profile, pairs=pairs,
                            summary=dict(top1=teacher_top1), images=images)
    arms = {arm: dict(sweep.ARMS[arm]) for arm in ARMS}
    runs = sweep.run_sweep(RECIPES["fashion_mnist"], config, teacher, arms, seeds,
                           output_dir, log)
    statistics = study.statistics(runs, list(arms))
    statistics["spectral_gap"] = _spectral_gap_rows(runs)
    summary = dict(
        settings=dict(backend=keras.backend.backend(), quick=quick, seeds=list(seeds),
                      student=config.to_dict(), teacher_epochs=teacher_epochs,
                      teacher_widths=list(QUICK_WIDTHS if quick else WIDTHS),
                      profile_images=len(images), command=" ".join(sys.argv)),
        teacher=dict(top1=teacher_top1, path=path, stages=list(STAGES),
                     intensity=[float(v) for v in profile.intensity]),
        layer_pairs=[list(p) for p in pairs],
        runs=[{k: v for k, v in r.items() if k != "history"} for r in runs],
        statistics=statistics,
        wall_time_s=round(time.time() - started, 1),
        cpu_time_s=round(_cpu_seconds() - cpu_started, 1),
    )
    with open(os.path.join(output_dir, "cross_architecture.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(markdown(summary))
    log(f"done in {summary['wall_time_s']:.0f} s wall, {summary['cpu_time_s']:.0f} s CPU; "
        f"results in {output_dir}.")
    return summary


def _spectral_gap_rows(runs):
    """Paired differences of the final spectral gap: what the spectral term itself moves."""
    from keras_spectralkd.analysis.statistics import paired_difference

    by_arm = {arm: {r["seed"]: r["spectral_gap"] for r in runs if r["arm"] == arm} for arm in ARMS}
    rows = []
    for arm, baseline in (("soft+spectral", "soft"), ("soft+spectral", "none"),
                          ("soft", "none")):
        if by_arm[arm] and by_arm[baseline]:
            row = paired_difference(by_arm[arm], by_arm[baseline])
            row.update(arm=arm, baseline=baseline, metric="spectral_gap")
            rows.append(row)
    return rows


def _cpu_seconds():
    """User + system CPU time of this process and its finished children."""
    own, children = (resource.getrusage(who) for who in
                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def markdown(summary):
    """The per-arm table and the paired comparisons, in markdown."""
    from keras_spectralkd.tools import study

    stats = summary["statistics"]
    lines = ["| arm | seeds | final top-1 (%) mean +- std | spectral gap | L(X) level distance "
             "| profile r |", "|---|---|---|---|---|---|"]
    for arm, s in stats["per_arm"].items():
        lines.append(f"| {arm} | {s['top1']['n']} | {s['top1']['mean'] * 100:.2f} +- "
                     f"{s['top1']['std'] * 100:.2f} | {s['spectral_gap']['mean']:.4f} | "
                     f"{s['level_distance']['mean']:.4f} | {s['profile_r']['mean']:+.3f} |")
    rows = [r for claim in ("1", "3") for r in stats["claims"][claim]["comparisons"]]
    rows += stats["spectral_gap"]
    lines += ["", "| paired difference | metric | seeds | mean (top-1: points) | 95% t-interval "
              "| excludes 0 |",
              "|---|---|---|---|---|---|"]
    for r in rows:  # top-1 in points, the spectral distances as they are (as the study's)
        low, mean, high = (study._value(r["metric"], r[k], "+") for k in ("low", "mean", "high"))
        excludes = "yes" if r["low"] > 0 or r["high"] < 0 else "no"
        lines.append(f"| {r['arm']} - {r['baseline']} | {r['metric']} | {r['n']} | {mean} | "
                     f"[{low}, {high}] | {excludes} |")
    teacher = summary["teacher"]
    lines += ["", f"Teacher (CNN, CE only): test top-1 {teacher['top1'] * 100:.2f}%. Layer "
              f"pairs (student unit, teacher layer): {summary['layer_pairs']}. Wall "
              f"{summary['wall_time_s']:.0f} s, CPU {summary['cpu_time_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}")
    return value


def main(argv=None):
    """Command-line entry point: 0 done, 1 failed, 2 bad usage (one line, no traceback)."""
    parser = cli.parser("cross_architecture.py", __doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="runs/cross_architecture")
    parser.add_argument("--quick", action="store_true", help="a tiny run for tests")
    parser.add_argument("--seeds", type=_int_list, help="default 0,1,2,3,4 (quick: 0,1)")
    parser.add_argument("--epochs", type=_positive, help="student epochs")
    parser.add_argument("--teacher_epochs", type=_positive)
    parser.add_argument("--train_size", type=_positive)
    parser.add_argument("--validation_size", type=_positive)
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)")
    parser.add_argument("--quiet", action="store_true")

    def body(args):
        if args.backend:
            if "keras" in sys.modules and sys.modules["keras"].backend.backend() != args.backend:
                raise cli.UsageError(
                    f"keras is already imported with another backend than {args.backend}")
            os.environ["KERAS_BACKEND"] = args.backend
        log = (lambda message: None) if args.quiet else (
            lambda message: print(f"[cross-architecture] {message}", flush=True))
        summary = run(args.quick, args.output_dir, seeds=args.seeds, epochs=args.epochs,
                      teacher_epochs=args.teacher_epochs, train_size=args.train_size,
                      validation_size=args.validation_size, log=log)
        if not args.quiet:
            print(markdown(summary), end="")

    return cli.run(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
