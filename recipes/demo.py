"""The built-in demo: the whole SpectralKD method on Fashion-MNIST, offline, on a laptop CPU.

    python recipes/demo.py                      # 5-10 minutes on 2 CPU cores
    KERAS_BACKEND=jax python recipes/demo.py

What it does (the paper's pipeline in miniature, each training a run of the package's one
engine, `spectralkd-train --recipe=fashion_mnist_teacher` / `--recipe=fashion_mnist`):
1. trains a small CaiT teacher (6 self-attention blocks + CaiT's 2 class-attention blocks);
2. profiles it: the frequency intensity L(X) of every block (SPEC.md 5), with plots;
3. chooses the layer pairs with the guideline (SPEC.md 6, `analysis.select_layer_pairs`);
4. trains the same smaller DeiT student (same initial weights, same batches) three ways: without
   KD, with soft KD only, and with SpectralKD (soft KD + the spectral alignment loss on those
   pairs);
5. prints a table (top-1 of each model; how well each student's intensity profile correlates
   with the teacher's; the spectral alignment loss between each student's and the teacher's
   paired maps) and says where the plots and TensorBoard logs are.

The data are Fashion-MNIST (28x28, 10 classes), made 3-channel: the full set when it is found
(the `dataset-fashion-mnist` Debian package, Keras' cache, or a download when online), else the
subset shipped with the package, so the demo runs on a fresh machine offline; the first line
says which. The default fixed subset (10k train / 2k test images) is the same from either
source. Everything is written under --output_dir (default runs/demo): one run folder per model
(teacher/, runs/seed0-<arm>/), results.json and plots/; a second run with the same directory
resumes or reuses the finished parts.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_spectralkd.tools import cli  # noqa: E402

PROG = "demo.py"
# The demo's students, in the Distiller's words, with their table labels.
ARMS = {"none": "student, no KD", "soft": "student, soft KD",
        "soft+spectral": "student, SpectralKD"}


def configs(quick=False, teacher_epochs=None, student_epochs=None, **changes):
    """The teacher's and the students' `RunConfig`s of the demo (`changes`: data_dir,
    train_size, validation_size, batch_size, seed, verbose; None keeps the default)."""
    from keras_spectralkd.recipes import sweep

    common = {} if quick else dict(validation_size=2_000)
    common.update({k: v for k, v in changes.items() if v is not None})
    return sweep.miniature(
        quick, teacher_changes=dict(common, epochs=teacher_epochs or (1 if quick else 6)),
        student_changes=dict(common, epochs=student_epochs or (1 if quick else 5)))


def run_demo(output_dir, teacher_config, student_config, profile_images=512, log=None):
    """Runs the whole demo; returns the results dict (also written to results.json)."""
    import time

    import keras

    from keras_spectralkd import analysis
    from keras_spectralkd.recipes import RECIPES, runner, sweep
    from keras_spectralkd.training import checkpoint as checkpoint_lib

    started = time.time()
    verbose = runner.resolve_verbose(student_config.verbose)
    log = log or ((lambda message: print(f"[demo] {message}", flush=True)) if verbose
                  else (lambda message: None))
    os.makedirs(output_dir, exist_ok=True)
    data = runner.load_data(teacher_config)
    log(f"{data.description}; backend {keras.backend.backend()}.")

    # 1-3. The teacher (cross-entropy only), its profile, the guideline's layer pairs.
    depth = teacher_config.student_overrides["depth"]
    log(f"1/4 training the CaiT teacher ({depth} blocks) for {teacher_config.epochs} epochs.")
    teacher = sweep.train_teacher(
        RECIPES["fashion_mnist_teacher"], teacher_config, output_dir,
        student_depth=student_config.student_overrides["depth"],
        profile_images=profile_images, log=log,
    )
    log("2/4 teacher intensity profile L(X) per block: "
        + " ".join(f"{v:.4f}" for v in teacher.profile.intensity))
    log("3/4 guideline's layer pairs (student:teacher): "
        + analysis.format_layer_pairs(teacher.pairs))

    # 4. Three students: same seed, so the same initial weights and batches.
    results = {"teacher": _scores(teacher.summary)}
    profiles = {"teacher": teacher.profile}
    for index, arm in enumerate(ARMS):
        log(f"4/4 ({index + 1}/3) training the DeiT student: {arm}.")
        result = sweep.run_arm(RECIPES["fashion_mnist"], student_config, arm, sweep.ARMS[arm],
                               student_config.seed, teacher, output_dir, log)
        results[arm] = {**_scores(result), **{k: result[k] for k in (
            "intensity", "profile_r", "spectral_gap", "run_dir")}}
        profiles[arm] = analysis.Profile.load(os.path.join(result["run_dir"], "profile.json"))

    # Plots: the teacher against the SpectralKD student (all figures), and all four profiles.
    plot_dir = os.path.join(output_dir, "plots")
    figures = analysis.save_profile_figures(
        plot_dir, [profiles["teacher"], profiles["soft+spectral"]],
        labels=["teacher (CaiT)", "student (SpectralKD)"], layer_pairs=teacher.pairs,
    )
    figures["intensity_all"] = os.path.join(plot_dir, "intensity_all.png")
    analysis.plot_intensity(
        [profiles[k] for k in ("teacher", *ARMS)], ["teacher (CaiT)", *ARMS.values()],
        layer_pairs=teacher.pairs, path=figures["intensity_all"],
    )
    summary = {
        "results": results,
        "layer_pairs": [list(p) for p in teacher.pairs],
        "teacher_intensity": [float(v) for v in teacher.profile.intensity],
        "plots": figures,
        "output_dir": output_dir,
        "backend": keras.backend.backend(),
        "configs": {"teacher": teacher_config.to_dict(), "student": student_config.to_dict()},
        "wall_time_s": round(time.time() - started, 1),
    }
    checkpoint_lib.atomic_write_json(os.path.join(output_dir, "results.json"), summary)
    if verbose:
        print(format_table(summary), flush=True)
    return summary


def _scores(result):
    """Final and best-epoch top-1 and the training time of a run summary or sweep result."""
    if "top1" in result:
        return {k: result[k] for k in ("top1", "best_top1", "train_time_s")}
    history = result["history"]
    return {"top1": history[-1]["val_accuracy"],
            "best_top1": max(h["val_accuracy"] for h in history),
            "train_time_s": result["wall_time_s"]}


def format_table(summary):
    """The demo's printed table and where its outputs are."""
    results = summary["results"]
    rows = [("teacher (CaiT, CE)", results["teacher"])]
    rows += [(label, results[arm]) for arm, label in ARMS.items()]
    lines = [
        "",
        f"SpectralKD demo on Fashion-MNIST ({summary['backend']} backend, "
        f"{summary['wall_time_s']:.0f} s). Layer pairs (student:teacher): "
        + ",".join(f"{s}:{t}" for s, t in summary["layer_pairs"]),
        f"{'model':<22} {'top-1':>7} {'best':>7} {'profile r':>10} {'spectral gap':>13} "
        f"{'train s':>8}",
    ]
    for label, result in rows:
        corr = f"{result['profile_r']:+.3f}" if "profile_r" in result else "-"
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
        f"TensorBoard: tensorboard --logdir {summary['output_dir']}",
        f"Numbers: {os.path.join(summary['output_dir'], 'results.json')}",
    ]
    return "\n".join(lines)


def build_parser():
    parser = cli.parser(PROG, "The whole SpectralKD method on Fashion-MNIST, offline "
                              "(see the module docstring).")
    parser.add_argument("--output_dir", default="runs/demo", help="where everything goes")
    parser.add_argument("--quick", action="store_true",
                        help="a one-minute version on tiny models (for tests)")
    for name, help_text in (("train_size", "training images (default 10000)"),
                            ("validation_size", "test images (default 2000)"),
                            ("teacher_epochs", "teacher epochs (default 6)"),
                            ("student_epochs", "epochs of each student (default 5)"),
                            ("batch_size", "batch size (default 128)"),
                            ("seed", "seed (default 0)")):
        parser.add_argument(f"--{name}", type=int, help=help_text)
    parser.add_argument("--data_dir", help="a folder with the Fashion-MNIST idx files")
    return parser


def main(argv=None):
    """0 done, 1 a failure (one line, no traceback), 2 a usage error."""

    def body(args):
        import keras

        settings = {name: getattr(args, name) for name in (
            "train_size", "validation_size", "teacher_epochs", "student_epochs", "batch_size",
            "seed", "data_dir")}
        try:
            teacher_config, student_config = configs(args.quick, **settings)
        except ValueError as error:
            raise cli.UsageError(str(error)) from None
        if keras.backend.backend() == "torch":
            print("[demo] note: Keras' torch backend is several times slower than jax or "
                  "tensorflow on CPU; KERAS_BACKEND=jax runs this demo fastest.", flush=True)
        run_demo(args.output_dir, teacher_config, student_config,
                 profile_images=64 if args.quick else 512)

    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
