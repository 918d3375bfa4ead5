"""A paired-seed study of what SpectralKD buys: every mode, several seeds, 95% intervals.

    python tools/study.py                            # the default study (docs/results.md)
    python tools/study.py --quick --output_dir=runs/study_quick   # a one-minute smoke run
    spectralkd-study --seeds=0,1,2,3,4 --backend=jax

The paper's pipeline in miniature on Fashion-MNIST (full set when installed, else the subset
shipped with the package): ONE CaiT teacher is trained (or reused from --output_dir), profiled
(L(X) per block, SPEC.md 5) and the layer pairs are chosen by the guideline from its profile
(SPEC.md 6) unless --layer_pairs is given. Then, for every seed, the DeiT student is trained in
every mode from the SAME initial weights (drawn once per seed, saved, reloaded) on the SAME
batches in the SAME order with the SAME augmentation draws (the stream of epoch e is a pure
function of (seed, e)): a paired design, so the mode is the only difference within a seed.

Modes (the Distiller's, SPEC.md 3):
- `none`: cross-entropy only;
- `kd`: soft logit KD (alpha KD + (1 - alpha) CE);
- `fft`: the spectral term only, with (1 - alpha) CE;
- `spectralkd`: soft KD + the spectral term (the paper's method).

Reported (JSON, CSV, markdown, plots under --output_dir):
- per mode, the mean +- std over seeds of the FINAL-epoch top-1 on the test set (the headline)
  and of the best-epoch top-1 (optimistic: it picks the epoch on the test set itself);
- per mode, the paired difference to `none` (and `spectralkd` to `kd`) with a 95% t-interval
  over seeds;
- per epoch, the student's intensity profile L(X) against the teacher's: the level distance
  (RMS difference of L(X) over relative depth, so it includes the width effect of SPEC.md 5)
  and the profile correlation (Pearson r, shape only), plus the spectral alignment loss at the
  layer pairs on the profiling images ("spectral gap").

A study resumes: finished (seed, mode) runs are read back from runs/ and skipped; a run
interrupted half-way is trained again from its seed's initial weights.
"""

import argparse
import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

MODES = ("none", "kd", "fft", "spectralkd")
# The Distiller's arguments of each mode; `pairs` marks the modes with the spectral term.
MODE_SETTINGS = {
    "none": dict(mode="none", pairs=False),
    "kd": dict(mode="soft", pairs=False),
    "fft": dict(mode="fft", pairs=True),
    "spectralkd": dict(mode="soft", pairs=True),
}
BACKENDS = ("tensorflow", "jax", "torch")
# The miniature's models, shared with recipes/demo.py. CaiT's paper sets LayerScale to 0.1 for
# networks up to 18 blocks (1e-5 is for 24).
TEACHER = dict(embed_dim=128, depth=6, num_heads=4, init_values=0.1)
STUDENT = dict(embed_dim=48, depth=4, num_heads=3)
# Settings that must not change when a study in an existing folder is resumed.
_FIXED_ON_RESUME = (
    "teacher_epochs", "student_epochs", "train_size", "test_size", "image_size", "patch_size",
    "batch_size", "lr", "warmup_epochs", "augment", "teacher", "student", "spectral_weight",
    "alpha", "temperature", "profile_images", "layer_pairs", "teacher_seed", "backend",
    "jit_compile",
)


# === Config ===
@dataclasses.dataclass
class StudyConfig:
    """Everything that decides a study's numbers (saved in study.json).

    The default (docs/results.md) is sized for about 45 minutes on 2 CPU cores: 3 seeds x 4
    modes of a 4-block DeiT student (48 channels) distilled from a 6-block CaiT teacher (128
    channels) on 10000 training images at 28x28 with 7x7 patches (a 4x4 token grid), evaluated
    on the full 10000-image test set.
    """

    seeds: tuple = (0, 1, 2)
    modes: tuple = MODES
    teacher_epochs: int = 8
    student_epochs: int = 8
    train_size: int = 10_000
    test_size: int = None  # None: the full test set (10000 images)
    image_size: int = 28
    patch_size: int = 7
    batch_size: int = 128
    lr: float = 1e-3
    warmup_epochs: int = 1
    # Off: in runs of a few epochs random shifts and flips slow learning more than they help
    # (the demo measured it); the paired design holds either way.
    augment: bool = False
    teacher: dict = dataclasses.field(default_factory=lambda: dict(TEACHER))
    student: dict = dataclasses.field(default_factory=lambda: dict(STUDENT))
    spectral_weight: float = 0.2  # SPEC.md 4: w_fft of the DeiT students
    alpha: float = 0.9
    temperature: float = 1.0
    profile_images: int = 512
    # Keras' `compile(jit_compile=...)`: "auto" compiles the steps with XLA (fast epochs, a
    # compile per run); the quick study's few steps run faster without it.
    jit_compile: object = "auto"
    layer_pairs: list = None  # None: the guideline's choice from the teacher's profile
    teacher_seed: int = 0
    backend: str = None  # recorded: the backend the study runs on
    data_dir: str = None
    verbose: int = 1

    @classmethod
    def quick(cls, **overrides):
        """A tiny study for tests: 2 seeds, a few hundred images, 2 short epochs."""
        settings = dict(
            seeds=(0, 1), teacher_epochs=1, student_epochs=2, train_size=256, test_size=128,
            batch_size=64, warmup_epochs=0, profile_images=64, jit_compile=False,
            teacher=dict(embed_dim=32, depth=3, num_heads=2, init_values=0.1),
            student=dict(embed_dim=16, depth=2, num_heads=2),
        )
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self):
        config = dataclasses.asdict(self)
        config["seeds"] = list(self.seeds)
        config["modes"] = list(self.modes)
        if self.layer_pairs is not None:
            config["layer_pairs"] = [list(p) for p in self.layer_pairs]
        return config


# === Statistics ===
def _log_beta_continued_fraction(a, b, x):
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def regularized_incomplete_beta(a, b, x):
    """I_x(a, b) for a, b > 0 and x in [0, 1] (Numerical Recipes' `betai`, to ~1e-14)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1]; got {x!r}.")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _log_beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _log_beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with `df` > 0 degrees of freedom."""
    if df <= 0:
        raise ValueError(f"Degrees of freedom must be > 0; got {df!r}.")
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
    """The p-quantile of Student's t with `df` degrees of freedom (bisection on `t_cdf`).

    E.g. `t_quantile(0.975, 2)` = 4.3027, the factor of a 95% interval from 3 paired seeds.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1); got {p!r}.")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def mean_interval(values, confidence=0.95):
    """Mean, sample std (ddof 1) and the t-interval of the mean of `values`.

    Returns a dict: n, mean, std, low, high (std, low and high are nan for fewer than 2 values).
    """
    values = np.asarray(values, dtype=np.float64)
    n = int(values.size)
    if n == 0:
        raise ValueError("No values to summarise.")
    mean = float(values.mean())
    if n < 2:
        return dict(n=n, mean=mean, std=float("nan"), low=float("nan"), high=float("nan"))
    std = float(values.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return dict(n=n, mean=mean, std=std, low=mean - half, high=mean + half)


def paired_difference(values, baseline, confidence=0.95):
    """`mean_interval` of the per-seed differences values[s] - baseline[s] (seeds in both)."""
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        raise ValueError("No seed has both results; nothing to pair.")
    summary = mean_interval([values[s] - baseline[s] for s in seeds], confidence)
    summary["seeds"] = seeds
    return summary


# === Spectral distances ===
def level_distance(teacher_profile, student_profile):
    """RMS difference of the students' and teacher's L(X) over relative depth.

    The shallower profile is interpolated onto the deeper one's relative depths (as
    `analysis.profile_correlation` aligns them). Unlike the correlation it sees the level, so it
    includes the 1/sqrt(C) width effect of SPEC.md 5: compare it across modes, not to zero.
    """
    from keras_spectralkd.analysis.compare import aligned_curves

    _, teacher, student = aligned_curves(
        teacher_profile.relative_depth, teacher_profile.intensity,
        student_profile.relative_depth, student_profile.intensity,
    )
    return float(np.sqrt(np.mean((student - teacher) ** 2)))


# === Files ===
def _write_text(path, text):
    """Writes through a temporary file and `os.replace` (no half-written file on a kill)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_json(path, obj):
    _write_text(path, json.dumps(obj, indent=1, sort_keys=True, allow_nan=True) + "\n")


def _read_json(path):
    with open(path) as f:
        return json.load(f)


# === Training ===
class _Study:
    """One study's models, data and files (imports Keras lazily: the backend is set first)."""

    def __init__(self, config, output_dir):
        import keras

        from keras_spectralkd.data import fashion_mnist_data

        self.keras = keras
        self.config = config
        self.output_dir = output_dir
        self.started = time.time()
        os.makedirs(os.path.join(output_dir, "runs"), exist_ok=True)
        self.data = {}
        self._data_fn = fashion_mnist_data
        probe = self.dataset(config.teacher_seed)
        self.description = probe.description
        self.num_classes = probe.num_classes
        self.steps_per_epoch = probe.steps_per_epoch
        images = np.concatenate([x for x, _ in probe.validation])
        self.profile_images = images[: config.profile_images]

    def log(self, message):
        if self.config.verbose:
            elapsed = time.time() - self.started
            print(f"[study {elapsed:6.0f} s] {message}", flush=True)

    def dataset(self, seed):
        """The data of one seed: fixed images, the seed's order and augmentation draws."""
        if seed not in self.data:
            c = self.config
            self.data[seed] = self._data_fn(
                image_size=c.image_size, batch_size=c.batch_size, train_size=c.train_size,
                validation_size=c.test_size, seed=seed, augment=c.augment, data_dir=c.data_dir,
            )
        return self.data[seed]

    def create(self, role):
        from keras_spectralkd.models import create

        c = self.config
        name, kwargs = (
            ("cait_s24_224", c.teacher) if role == "teacher" else ("deit_tiny_patch16_224", c.student)
        )
        return create(name, num_classes=self.num_classes, image_size=c.image_size,
                      patch_size=c.patch_size, **kwargs)

    def compile(self, distiller, epochs):
        from keras_spectralkd.training.optimizer import create_optimizer
        from keras_spectralkd.training.schedules import WarmupCosineDecay

        c = self.config
        total = epochs * self.steps_per_epoch
        schedule = WarmupCosineDecay(
            c.lr, total_steps=total,
            warmup_steps=min(c.warmup_epochs * self.steps_per_epoch, total - 1),
            warmup_init_lr=1e-6, min_lr=1e-5,
        )
        distiller.compile(
            optimizer=create_optimizer(schedule, model=distiller.student, weight_decay=0.05),
            metrics=[self.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=c.jit_compile,
        )

    def profile(self, model, name):
        from keras_spectralkd import analysis

        return analysis.profile_model(
            model, self.profile_images, entropy=False, name=name, verbose=0
        )

    def train_epochs(self, distiller, data, epochs, label, after_epoch=None):
        """Keras `fit`, one call per epoch on that epoch's stream; evaluates after each."""
        history = []
        for epoch in range(epochs):
            started = time.time()
            # shuffle=False: the stream is already in the seed's order (and Keras warns otherwise).
            fit = distiller.fit(data.train(epoch), epochs=1, verbose=0, shuffle=False)
            train = {k: float(v[-1]) for k, v in fit.history.items()}
            test = distiller.evaluate(data.validation, verbose=0, return_dict=True)
            record = dict(
                epoch=epoch + 1, train=train, top1=float(test["accuracy"]),
                test_loss=float(test["loss"]),
            )
            if after_epoch is not None:
                record.update(after_epoch())
            record["time_s"] = round(time.time() - started, 1)
            history.append(record)
            extra = "".join(
                f" {key} {record[key]:.4f}" for key in ("level_distance", "profile_r", "spectral_gap")
                if key in record
            )
            self.log(f"{label} epoch {epoch + 1}/{epochs}: loss {train.get('loss', float('nan')):.4f}"
                     f" test top-1 {record['top1'] * 100:.2f}%{extra} ({record['time_s']:.0f} s)")
        return history

    # --- the teacher ---
    def teacher(self):
        """Trains the teacher once (or reloads it); returns (model, profile, summary)."""
        from keras_spectralkd import Distiller, analysis

        c = self.config
        weights = os.path.join(self.output_dir, "teacher.weights.h5")
        summary_path = os.path.join(self.output_dir, "teacher.json")
        if os.path.exists(weights) and os.path.exists(summary_path):
            model = self.create("teacher")
            model.load_weights(weights)
            summary = _read_json(summary_path)
            self.log(f"teacher reused from {weights} (test top-1 {summary['top1'] * 100:.2f}%).")
        else:
            self.keras.utils.set_random_seed(c.teacher_seed)
            model = self.create("teacher")
            self.log(f"training the CaiT teacher ({model.count_params():,} params, "
                     f"{model.num_units} blocks) for {c.teacher_epochs} epochs.")
            trainer = Distiller(None, model, mode="none")
            self.compile(trainer, c.teacher_epochs)
            started = time.time()
            history = self.train_epochs(
                trainer, self.dataset(c.teacher_seed), c.teacher_epochs, "teacher"
            )
            summary = dict(
                top1=history[-1]["top1"], best_top1=max(h["top1"] for h in history),
                history=history, params=int(model.count_params()),
                train_time_s=round(time.time() - started, 1),
            )
            model.save_weights(weights)
            _write_json(summary_path, summary)
        model.trainable = False
        profile = self.profile(model, "teacher")
        summary["intensity"] = [float(v) for v in profile.intensity]
        if c.layer_pairs is None:
            pairs = analysis.select_layer_pairs(profile, c.student["depth"])
        else:
            pairs = [tuple(p) for p in c.layer_pairs]
        return model, profile, summary, pairs

    # --- one student run ---
    def initial_weights(self, seed):
        """The seed's initial student weights: drawn once, saved, reloaded by every mode."""
        path = os.path.join(self.output_dir, "runs", f"seed{seed}_initial.weights.h5")
        model = self.create("student")
        if os.path.exists(path):
            model.load_weights(path)
        else:
            self.keras.utils.set_random_seed(seed)
            model = self.create("student")
            model.save_weights(path)
        return model.get_weights()

    def run(self, seed, mode, teacher, teacher_profile, pairs):
        from keras_spectralkd import Distiller, analysis, spectral_alignment_loss

        c = self.config
        settings = MODE_SETTINGS[mode]
        self.keras.utils.set_random_seed(seed)  # anything else drawn: the same for every mode
        student = self.create("student")
        student.set_weights(self.initial_weights(seed))
        run_pairs = pairs if settings["pairs"] else None
        distiller = Distiller(
            teacher=None if settings["mode"] == "none" else teacher, student=student,
            layer_pairs=run_pairs, mode=settings["mode"], alpha=c.alpha,
            temperature=c.temperature, spectral_weight=c.spectral_weight,
        )
        self.compile(distiller, c.student_epochs)
        _, teacher_maps = teacher.forward_intermediates(
            self.profile_images, [t for _, t in pairs], training=False
        )

        def after_epoch():
            profile = self.profile(student, f"student ({mode})")
            _, student_maps = student.forward_intermediates(
                self.profile_images, [s for s, _ in pairs], training=False
            )
            gap = spectral_alignment_loss(student_maps, teacher_maps)
            return dict(
                level_distance=level_distance(teacher_profile, profile),
                profile_r=analysis.profile_correlation(teacher_profile, profile),
                spectral_gap=float(self.keras.ops.convert_to_numpy(gap)),
                intensity=[float(v) for v in profile.intensity],
            )

        started = time.time()
        history = self.train_epochs(
            distiller, self.dataset(seed), c.student_epochs, f"seed {seed} {mode}", after_epoch
        )
        best = max(history, key=lambda h: h["top1"])
        return dict(
            seed=seed, mode=mode, top1=history[-1]["top1"], best_top1=best["top1"],
            best_epoch=best["epoch"], level_distance=history[-1]["level_distance"],
            profile_r=history[-1]["profile_r"], spectral_gap=history[-1]["spectral_gap"],
            history=history, train_time_s=round(time.time() - started, 1),
        )


def _run_path(output_dir, seed, mode):
    return os.path.join(output_dir, "runs", f"seed{seed}_{mode}.json")


def _check_resume(config, output_dir):
    """Refuses to mix a study with different settings into an existing folder."""
    path = os.path.join(output_dir, "study.json")
    if not os.path.exists(path):
        return
    previous = _read_json(path).get("config", {})
    current = config.to_dict()
    for key in _FIXED_ON_RESUME:
        if key in previous and previous[key] != current[key]:
            raise ValueError(
                f"{output_dir!r} holds a study with {key}={previous[key]!r}, but this one has "
                f"{key}={current[key]!r}; use another --output_dir (or the same settings to resume)."
            )


def run_study(config, output_dir):
    """Runs (or resumes) the study; writes and returns the summary dict."""
    from keras_spectralkd import _startup

    _startup.quiet_import("keras", "tensorflow")
    import keras

    config.backend = keras.backend.backend()
    if config.layer_pairs is not None:
        config.layer_pairs = [tuple(p) for p in config.layer_pairs]
    os.makedirs(output_dir, exist_ok=True)
    _check_resume(config, output_dir)
    study = _Study(config, output_dir)
    study.log(f"{study.description}; backend {config.backend}; output in {output_dir}.")
    teacher, teacher_profile, teacher_summary, pairs = study.teacher()
    from keras_spectralkd import analysis

    study.log("teacher L(X) per block: "
              + " ".join(f"{v:.4f}" for v in teacher_summary["intensity"])
              + f"; layer pairs (student:teacher) {analysis.format_layer_pairs(pairs)}"
              + (" (the guideline's)" if config.layer_pairs is None else " (given)"))
    runs = []
    for seed in config.seeds:
        for mode in config.modes:
            path = _run_path(output_dir, seed, mode)
            if os.path.exists(path):
                runs.append(_read_json(path))
                study.log(f"seed {seed} {mode}: done before (test top-1 "
                          f"{runs[-1]['top1'] * 100:.2f}%), skipped.")
                continue
            result = study.run(seed, mode, teacher, teacher_profile, pairs)
            _write_json(path, result)
            runs.append(result)
    summary = dict(
        config=config.to_dict(), data=study.description, layer_pairs=[list(p) for p in pairs],
        teacher=teacher_summary, runs=runs, statistics=statistics(runs, config.modes),
        wall_time_s=round(time.time() - study.started, 1),
    )
    write_outputs(summary, output_dir)
    study.log(f"done in {summary['wall_time_s']:.0f} s; results in {output_dir}.")
    return summary


# === Summaries ===
def statistics(runs, modes):
    """Per-mode means and the paired differences (see the module doc)."""
    by_mode = {m: {r["seed"]: r for r in runs if r["mode"] == m} for m in modes}
    per_mode = {}
    for mode, results in by_mode.items():
        if not results:
            continue
        per_mode[mode] = {
            key: mean_interval([r[key] for r in results.values()])
            for key in ("top1", "best_top1", "level_distance", "profile_r", "spectral_gap")
        }
    differences = {}
    comparisons = [(m, "none") for m in modes if m != "none"] + [("spectralkd", "kd")]
    for mode, baseline in comparisons:
        if by_mode.get(mode) and by_mode.get(baseline):
            differences[f"{mode} - {baseline}"] = paired_difference(
                {s: r["top1"] for s, r in by_mode[mode].items()},
                {s: r["top1"] for s, r in by_mode[baseline].items()},
            )
    return dict(per_mode=per_mode, differences=differences)


def _points(value):
    return "n/a" if value is None or math.isnan(value) else f"{value * 100:.2f}"


def _signed_points(value):
    return "n/a" if math.isnan(value) else f"{value * 100:+.2f}"


def markdown_table(summary):
    """The per-mode table and the paired differences, in markdown."""
    stats = summary["statistics"]
    lines = [
        "| mode | seeds | final top-1 (%) mean +- std | best-epoch top-1 (%) (optimistic) "
        "| L(X) level distance | profile r | spectral gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, s in stats["per_mode"].items():
        lines.append(
            f"| {mode} | {s['top1']['n']} | {_points(s['top1']['mean'])} +- "
            f"{_points(s['top1']['std'])} | {_points(s['best_top1']['mean'])} +- "
            f"{_points(s['best_top1']['std'])} | {s['level_distance']['mean']:.4f} | "
            f"{s['profile_r']['mean']:+.3f} | {s['spectral_gap']['mean']:.4f} |"
        )
    lines += [
        "",
        "| paired difference (final top-1, points) | seeds | mean | 95% t-interval |",
        "|---|---|---|---|",
    ]
    for name, d in stats["differences"].items():
        lines.append(
            f"| {name} | {d['n']} | {_signed_points(d['mean'])} | "
            f"[{_signed_points(d['low'])}, {_signed_points(d['high'])}] |"
        )
    teacher = summary["teacher"]
    lines += [
        "",
        f"Teacher (CaiT, CE only): final top-1 {teacher['top1'] * 100:.2f}%. Layer pairs "
        "(student:teacher): " + ",".join(f"{s}:{t}" for s, t in summary["layer_pairs"]) + ".",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(summary, output_dir):
    """study.json, runs.csv (one row per run), epochs.csv, results.md and the plots."""
    _write_json(os.path.join(output_dir, "study.json"), summary)
    run_fields = ["seed", "mode", "top1", "best_top1", "best_epoch", "level_distance",
                  "profile_r", "spectral_gap", "train_time_s"]
    _write_csv(os.path.join(output_dir, "runs.csv"), run_fields,
               [[r[k] for k in run_fields] for r in summary["runs"]])
    epoch_fields = ["seed", "mode", "epoch", "top1", "test_loss", "train_loss", "level_distance",
                    "profile_r", "spectral_gap", "time_s"]
    rows = [
        [r["seed"], r["mode"], h["epoch"], h["top1"], h["test_loss"], h["train"].get("loss"),
         h["level_distance"], h["profile_r"], h["spectral_gap"], h["time_s"]]
        for r in summary["runs"] for h in r["history"]
    ]
    _write_csv(os.path.join(output_dir, "epochs.csv"), epoch_fields, rows)
    _write_text(os.path.join(output_dir, "results.md"), markdown_table(summary))
    plot_top1(summary, os.path.join(output_dir, "top1.png"))
    plot_distances(summary, os.path.join(output_dir, "distance.png"))


def _write_csv(path, header, rows):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def _figure(width, height, columns=1):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(1, columns, figsize=(width, height), squeeze=False)


def plot_top1(summary, path):
    """Final top-1 per mode: the mean with its 95% t-interval, and one line per seed."""
    plt, figure, axes = _figure(6.0, 4.0)
    axis = axes[0][0]
    stats = summary["statistics"]["per_mode"]
    modes = list(stats)
    seeds = sorted({r["seed"] for r in summary["runs"]})
    for seed in seeds:
        values = {r["mode"]: r["top1"] for r in summary["runs"] if r["seed"] == seed}
        x = [i for i, m in enumerate(modes) if m in values]
        axis.plot(x, [values[modes[i]] * 100 for i in x], color="0.7", linewidth=1,
                  marker=".", zorder=1, label="one seed" if seed == seeds[0] else None)
    means = np.array([stats[m]["top1"]["mean"] for m in modes]) * 100
    low = np.array([stats[m]["top1"]["low"] for m in modes]) * 100
    high = np.array([stats[m]["top1"]["high"] for m in modes]) * 100
    errors = np.nan_to_num(np.stack([means - low, high - means]))
    axis.errorbar(range(len(modes)), means, yerr=errors, fmt="o", color="C0", capsize=6,
                  zorder=2, label="mean, 95% t-interval")
    axis.set_xticks(range(len(modes)), modes)
    axis.set_ylabel("final-epoch test top-1 (%)")
    axis.set_title(f"Student top-1 by mode ({len(seeds)} seeds, paired)")
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_distances(summary, path):
    """Per epoch and mode: the L(X) level distance and the profile correlation to the teacher
    (mean over seeds, thin lines: single seeds)."""
    plt, figure, axes = _figure(11.0, 4.0, columns=2)
    modes = list(summary["statistics"]["per_mode"])
    for column, (key, label) in enumerate(
        (("level_distance", "L(X) level distance to the teacher (RMS)"),
         ("profile_r", "profile correlation r with the teacher"))
    ):
        axis = axes[0][column]
        for index, mode in enumerate(modes):
            runs = [r for r in summary["runs"] if r["mode"] == mode]
            curves = np.array([[h[key] for h in r["history"]] for r in runs], dtype=np.float64)
            epochs = np.arange(1, curves.shape[1] + 1)
            for curve in curves:
                axis.plot(epochs, curve, color=f"C{index}", alpha=0.25, linewidth=0.8)
            axis.plot(epochs, np.nanmean(curves, axis=0), color=f"C{index}", linewidth=2,
                      marker="o", label=mode)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# === Command line ===
def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, e.g. 0,1,2; got {text!r}"
        ) from None
    if not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct integers, e.g. 0,1,2; got {text!r}")
    return tuple(values)


def _mode_list(text):
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes or len(set(modes)) != len(modes):
        raise argparse.ArgumentTypeError(
            f"expected distinct modes from {','.join(MODES)}; got {text!r}"
        )
    return modes


def _json_dict(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"embed_dim\": 48, \"depth\": 4}}'; got {text!r}"
        )
    return value


def _pairs(text):
    from keras_spectralkd.analysis.selection import parse_layer_pairs

    try:
        return [tuple(p) for p in parse_layer_pairs(text)]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="spectralkd-study",
        description="Paired-seed study of SpectralKD on Fashion-MNIST: every mode from the same "
        "initial weights and batches per seed; means, paired differences with 95%% t-intervals, "
        "spectral distances to the teacher per epoch.",
    )
    parser.add_argument("--output_dir", default="runs/study",
                        help="where everything goes; an existing study there is resumed")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny study for tests (2 seeds, 256 images, 2 epochs)")
    parser.add_argument("--seeds", type=_int_list, help="e.g. 0,1,2 (default)")
    parser.add_argument("--modes", type=_mode_list, help=f"subset of {','.join(MODES)} (default all)")
    parser.add_argument("--teacher_epochs", type=_positive)
    parser.add_argument("--student_epochs", type=_positive)
    parser.add_argument("--train_size", type=_positive,
                        help="training images (default 10000; the shipped subset has 12000)")
    parser.add_argument("--test_size", type=_positive, help="test images (default: all 10000)")
    parser.add_argument("--batch_size", type=_positive)
    parser.add_argument("--teacher", type=_json_dict,
                        help="CaiT teacher settings as JSON (default embed_dim 128, depth 6)")
    parser.add_argument("--student", type=_json_dict,
                        help="DeiT student settings as JSON (default embed_dim 48, depth 4)")
    parser.add_argument("--layer_pairs", type=_pairs,
                        help="student:teacher pairs, e.g. 0:0,3:5 (default: the guideline's)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random shift + flip augmentation (default off)")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)")
    parser.add_argument("--data_dir", help="a folder with the Fashion-MNIST idx files")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def config_from_args(args):
    """A `StudyConfig` from parsed flags (unset flags keep the default or quick value)."""
    config = StudyConfig.quick() if args.quick else StudyConfig()
    for name in ("seeds", "modes", "teacher_epochs", "student_epochs", "train_size",
                 "test_size", "batch_size", "layer_pairs", "augment", "data_dir"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    for role in ("teacher", "student"):
        value = getattr(args, role)
        if value is not None:
            setattr(config, role, {**getattr(config, role), **value})
    config.verbose = 0 if args.quiet else 1
    return config


def _rerun_with_backend(backend, argv):
    """Keras fixes its backend at import: run this tool again in a process that has it."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, "-m", "keras_spectralkd.tools.study", *argv]
    return subprocess.call(command, env=env)


def main(argv=None):
    """Command-line entry point: 0 done, 1 failed, 2 bad usage (no traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return 0 if exit_.code == 0 else 2
    if args.backend and "keras" in sys.modules:
        import keras

        if keras.backend.backend() != args.backend:
            return _rerun_with_backend(args.backend, argv)
    elif args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    config = config_from_args(args)
    try:
        summary = run_study(config, args.output_dir)
    except (ValueError, FileNotFoundError) as error:
        print(f"spectralkd-study: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ValueError) else 1
    except Exception as error:  # noqa: BLE001 - a tool reports, it does not dump a traceback
        print(f"spectralkd-study: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if config.verbose:
        print(markdown_table(summary), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
