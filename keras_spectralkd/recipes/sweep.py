"""Many runs of the engine: a teacher, its profile and layer pairs, then arms x seeds.

The paper's pipeline, as the demo and the study run it:

1. `train_teacher`: the teacher is a normal run (`runner.run`, mode none) in
   `<output_dir>/teacher`; then it is profiled (L(X) per unit, SPEC.md 5) on the first test
   images and the layer pairs are chosen by the guideline (SPEC.md 6) unless given.
2. `run_arm` for every (seed, arm): a normal run folder `<output_dir>/runs/seed<S>-<arm>` with
   the student config, the arm's changes and the teacher's weights. Within a seed every arm
   starts from the same weights and sees the same batches (`runner.run` seeds right before the
   student; the data stream is a function of (seed, epoch)): a paired design, the arm the only
   difference. A `SpectralTracker` adds `level_distance`, `profile_r` and `spectral_gap` to every
   epoch's logs.

Everything resumes: a run folder with a summary.json of its epochs is read back, any other one
is resumed by the runner from its last checkpoint.

Arms are named in the Distiller's words (`RunConfig.label`): `none` (CE only), `soft` (CE + soft
logit KD), `fft` (CE + the spectral term), `soft+spectral` (SpectralKD: soft KD + the spectral
term on the guideline's pairs), and `soft+middle`, `soft+spread`, `soft+last`: SpectralKD on
other choices of as many pairs (`layer_choices`); a user may add arms of any config fields.
"""

import dataclasses
import json
import os
import time

import numpy as np

from keras_spectralkd import analysis
from keras_spectralkd.callbacks import SpectralTracker
from keras_spectralkd.recipes import runner
from keras_spectralkd.recipes.table import RECIPES
from keras_spectralkd.teacher_cache import TeacherCache
from keras_spectralkd.training import checkpoint as checkpoint_lib

# The standard arms: config changes on top of the student config (pairs filled in where the
# arm has the spectral term).
ARMS = {
    "none": dict(mode="none", layer_pairs=[]),
    "soft": dict(mode="soft", layer_pairs=[]),
    "fft": dict(mode="fft"),
    "soft+spectral": dict(mode="soft"),
}
LAYER_CHOICE_ARMS = ("soft+middle", "soft+spread", "soft+last")


def layer_choices(pairs, student_depth, teacher_depth):
    """Other choices of as many layer pairs as `pairs` (the guideline's), for the paper's claim
    that its choice beats them: the student units in the middle, spread evenly over depth, and
    the last ones. Spread units are the centres of k equal segments of the student's depth (so
    two pairs are not simply the first and last units). Middle and spread units pair with the
    teacher unit at the same relative depth; the last k student units with the last k teacher
    units (late-layer distillation).

    Returns:
        {"middle": pairs, "spread": pairs, "last": pairs}, each sorted, len(pairs) long.
    """
    count = len(pairs)
    if not 1 <= count <= student_depth:
        raise ValueError(f"{count} layer pairs do not fit a student of {student_depth} units.")

    def at_same_depth(units):
        scale = (teacher_depth - 1) / max(student_depth - 1, 1)
        return [(unit, int(round(unit * scale))) for unit in units]

    start = (student_depth - count) // 2
    spread = [int(round((i + 0.5) * student_depth / count - 0.5)) for i in range(count)]
    return {
        "middle": at_same_depth(range(start, start + count)),
        "spread": at_same_depth(spread),
        "last": [(student_depth - count + i, teacher_depth - count + i) for i in range(count)],
    }


@dataclasses.dataclass
class Teacher:
    """The trained teacher of a sweep.

    Attributes:
        model: the frozen backbone.
        path: its `.keras` file (what the students' runs load).
        profile: its `Profile` on `images`.
        pairs: the layer pairs (student_unit, teacher_unit) of the spectral arms.
        summary: the teacher run's summary.json (for a given teacher: its test top-1 alone).
        images: the profiling images (the first test images).
        top1: its final top-1 on the test set.
    """

    model: object
    path: str
    profile: object
    pairs: list
    summary: dict
    images: object
    top1: float = float("nan")


# Settings the teacher and the students must share: they see the same data. In the study preset
# the teacher was trained on more images than the students see (theirs among them).
DATA_FIELDS = ("dataset", "data_dir", "image_size", "train_size", "validation_size", "batch_size",
               "eval_batch_size", "augment")
STUDY_SHARED_FIELDS = ("dataset", "data_dir", "image_size", "validation_size", "eval_batch_size",
                       "augment")


def miniature(quick=False, teacher_changes=(), student_changes=(), preset=None):
    """The Fashion-MNIST miniature's teacher and student `RunConfig`s, checked: the recipes'
    `preset` ("paper": the demo's; "study": the study's; "quick", the default with `quick`, for
    tests) with `*_changes` ((name, value) pairs) applied; data settings given for the students
    apply to the teacher too, and the students' teacher is the teacher's model."""
    preset = preset or ("quick" if quick else "paper")
    shared = STUDY_SHARED_FIELDS if preset == "study" else DATA_FIELDS
    student_changes = dict(student_changes)
    teacher_changes = {**{k: v for k, v in student_changes.items() if k in shared},
                       **dict(teacher_changes)}
    teacher = RECIPES["fashion_mnist_teacher"].config(preset, **teacher_changes)
    student = RECIPES["fashion_mnist"].config(preset, **student_changes)
    student = dataclasses.replace(student, teacher=teacher.student,
                                  teacher_overrides=dict(teacher.student_overrides))
    return teacher.check(), student.check()


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def finished(run_dir, epochs):
    """The run's summary if `run_dir` holds a run finished at `epochs` epochs, else None."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return None
    summary = _read_json(path)
    return summary if summary.get("epochs") == epochs else None


def _first_images(data, config, count):
    images = np.concatenate([np.asarray(x) for x, _ in data.validation.take(
        -(-count // (config.eval_batch_size or 256)))])
    return images[:count]


def train_teacher(recipe, config, output_dir, *, student_depth, profile_images=512,
                  layer_pairs=None, log=print, weights=None):
    """Trains (or reuses) the teacher run of `config` (of `recipe`, mode none) in
    `<output_dir>/teacher`, or takes the trained teacher in `weights` (a `.keras` file, scored
    on the test set here); profiles it, chooses the layer pairs; returns a `Teacher`."""
    import keras

    data = runner.load_data(config)
    if weights is not None:
        path = weights
        model = keras.saving.load_model(path, compile=False)
        # A loss too: the torch backend's evaluate refuses a model compiled without one.
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], jit_compile=False)
        top1 = float(model.evaluate(data.validation, verbose=0, return_dict=True)["accuracy"])
        summary = {"student": path, "final": {"val_accuracy": top1}, "history": []}
        log(f"teacher {path}: test top-1 {top1 * 100:.2f}% (measured now).")
    else:
        config = dataclasses.replace(config, output_dir=os.path.join(output_dir, "teacher"))
        summary = finished(config.output_dir, config.epochs)
        if summary is None:
            summary = runner.run(recipe, config, data=data)  # loaded once, above
        else:
            log(f"teacher reused from {config.output_dir} (test top-1 "
                f"{summary['final']['val_accuracy'] * 100:.2f}%).")
        path = summary["student"]
        model = keras.saving.load_model(path, compile=False)
        top1 = summary["final"]["val_accuracy"]
    model.trainable = False
    images = _first_images(data, config, profile_images)
    profile = analysis.profile_model(model, images, entropy=False, name="teacher", verbose=0)
    if layer_pairs is None:
        layer_pairs = analysis.select_layer_pairs(profile, student_depth)
    return Teacher(model=model, path=path, profile=profile,
                   pairs=[tuple(p) for p in layer_pairs], summary=summary, images=images,
                   top1=top1)


def arm_changes(arm, config, teacher):
    """The config changes of a standard arm (`ARMS`, `LAYER_CHOICE_ARMS`) for this teacher."""
    if arm in LAYER_CHOICE_ARMS:
        choices = layer_choices(teacher.pairs, config.student_overrides["depth"],
                                teacher.model.num_units)
        return dict(mode="soft", layer_pairs=choices[arm.split("+")[1]])
    return dict(ARMS[arm])


def arm_config(config, arm_changes, seed, teacher, run_dir):
    """The student config of one (seed, arm) run."""
    changes = dict(arm_changes)
    if changes.get("mode", config.mode) != "none" and "layer_pairs" not in changes:
        changes["layer_pairs"] = list(teacher.pairs)
    return dataclasses.replace(config, seed=seed, output_dir=run_dir, teacher_weights=teacher.path,
                               **changes)


def run_arm(recipe, config, arm, arm_changes, seed, teacher, output_dir, log=print,
            teacher_cache=None):
    """Trains (or reads back) one (seed, arm) run; returns its result dict. `teacher_cache`:
    the teacher's outputs on the training images (`config.cache_teacher`), shared by the runs."""
    run_dir = os.path.join(output_dir, "runs", f"seed{seed}-{arm}")
    run_config = arm_config(config, arm_changes, seed, teacher, run_dir)
    profile_path = os.path.join(run_dir, "profile.json")
    summary = finished(run_dir, run_config.epochs)
    if summary is not None and os.path.exists(profile_path):
        log(f"seed {seed} {arm}: done before (test top-1 "
            f"{summary['final']['val_accuracy'] * 100:.2f}%), read back.")
        profile = analysis.Profile.load(profile_path)
    else:
        tracker = SpectralTracker(teacher.model, teacher.images, teacher.pairs)
        summary = runner.run(recipe, run_config, callbacks=[tracker],
                             teacher_cache=teacher_cache)
        if tracker.profile is None:  # resumed after its last epoch: measure the saved student
            import keras

            tracker.student = keras.saving.load_model(summary["student"], compile=False)
            tracker.measure()
        profile = tracker.profile
        checkpoint_lib.atomic_write_text(profile_path, profile.to_json())
    return result_of(summary, seed, arm, profile, run_dir)


def result_of(summary, seed, arm, profile, run_dir):
    """One run's numbers: the final epoch's test top-1 (the headline), the best epoch's
    (optimistic: chosen on the test set itself), the spectral distances, the history."""
    history = summary["history"]
    final = history[-1]
    # Epochs without validation (`validation_every`) have no val_accuracy.
    best = max((h for h in history if "val_accuracy" in h), key=lambda h: h["val_accuracy"])
    return dict(
        seed=seed, arm=arm, top1=final["val_accuracy"], best_top1=best["val_accuracy"],
        best_epoch=best["epoch"], level_distance=final.get("level_distance", float("nan")),
        profile_r=final.get("profile_r", float("nan")),
        spectral_gap=final.get("spectral_gap", float("nan")),
        intensity=[float(v) for v in profile.intensity], history=history,
        train_time_s=summary["wall_time_s"], run_dir=run_dir,
    )


def shared_teacher_cache(config, teacher, arms, log=print):
    """With `config.cache_teacher`: ONE `TeacherCache` of the teacher's logits and of every
    teacher unit any arm pairs, on the training images (the same for every seed: the subset is
    fixed, the seed only orders it), for all the runs; else None."""
    if not config.cache_teacher:
        return None
    configs = [arm_config(config, changes, 0, teacher, "") for changes in arms.values()]
    if all(c.mode == "none" for c in configs):
        return None
    units = sorted({t for c in configs if c.mode != "none" for _, t in c.layer_pairs})
    started = time.time()
    images = runner.load_data(config).train_images
    cache = TeacherCache.compute(teacher.model, images, units,
                                 batch_size=config.eval_batch_size or 256)
    log(f"teacher outputs (logits, units {units}) cached for {len(cache)} training images in "
        f"{time.time() - started:.0f} s, shared by every run.")
    return cache


def run_sweep(recipe, config, teacher, arms, seeds, output_dir, log=print):
    """Every (seed, arm) run of `recipe`'s student `config`, seeds outermost; returns their
    result dicts."""
    results = []
    cache = shared_teacher_cache(config, teacher, arms, log)
    for seed in seeds:
        for arm, changes in arms.items():
            started = time.time()
            results.append(run_arm(recipe, config, arm, changes, seed, teacher, output_dir, log,
                                   teacher_cache=cache))
            log(f"seed {seed} {arm}: test top-1 {results[-1]['top1'] * 100:.2f}% "
                f"({time.time() - started:.0f} s).")
    return results
