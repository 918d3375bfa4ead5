"""`spectralkd-study`: a paired-seed study of what SpectralKD buys, every arm, 95% intervals.

    python tools/study.py                            # the default study (docs/results.md)
    python tools/study.py --quick --output_dir=runs/study_quick   # a one-minute smoke run
    spectralkd-study --seeds=0,1,2,3,4,5,6,7 --backend=jax --set epochs=24

A sweep of the package's one engine (`recipes.sweep`), in the paper's conditions in miniature (the
recipes' "study" preset; docs/results.md gives the reasons): a trained CaiT teacher (by default the
one shipped with the package, trained on the full Fashion-MNIST; `--train_teacher` trains it anew
with the `fashion_mnist_teacher` recipe), profiled, the layer pairs chosen by the guideline from
its profile unless --layer_pairs is given; then, for every seed, the `fashion_mnist` student in
every arm, each a normal run folder under <output_dir>/runs (checkpoints, summary.json,
TensorBoard, resumable). Within a seed every arm starts from the same weights and sees the same
batches: a paired design, the arm the only difference. The teacher's outputs on the students'
training images are computed once and shared by every run (`cache_teacher`, `TeacherCache`).

Arms (the Distiller's words): `none` (CE only), `soft` (soft logit KD), `fft` (CE + the spectral
term), `soft+spectral` (SpectralKD on the guideline's pairs), `soft+middle`, `soft+spread`,
`soft+last` (SpectralKD on other choices of as many pairs); `--arm 'NAME={"spectral_weight":
0.5}'` adds an arm of any config fields. Reported (study.json, runs.csv, epochs.csv, results.md,
top1.png, distance.png, profiles.png):
- per arm, the mean +- std over seeds of the FINAL-epoch top-1 on the test set (the headline) and
  of the best-epoch top-1 (optimistic: it picks the epoch on the test set itself);
- the paper's three claims (`CLAIMS`), each as paired differences with a 95% t-interval over
  seeds, whether it excludes zero, the seeds a 0.5-point difference would need at 80% power, and
  a verdict: supported, contradicted, or not resolved at this power;
- per epoch, the student's L(X) against the teacher's: `level_distance` (RMS over relative
  depth), `profile_r` (Pearson r), and `spectral_gap` (the spectral alignment loss at the layer
  pairs on the profiling images).
"""

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import subprocess
import sys

from keras_spectralkd.tools import cli

PROG = "spectralkd-study"
BACKENDS = ("tensorflow", "jax", "torch")
LAYER_CHOICE_ARMS = ("soft+middle", "soft+spread", "soft+last")  # recipes.sweep's
STANDARD_ARMS = ("none", "soft", "fft", "soft+spectral") + LAYER_CHOICE_ARMS
DEFAULT_ARMS = ("none", "soft", "soft+spectral") + LAYER_CHOICE_ARMS
QUICK_ARMS = ("none", "soft", "soft+spectral", "soft+last")
# Resuming a study with other values of these is refused (arms and seeds may be added).
_FIXED_ON_RESUME = ("teacher", "student", "layer_pairs", "backend")


# === Summaries ===
# The paper's three claims, each as paired comparisons (arm, baseline, metric, the sign the claim
# expects of arm - baseline). Claim 3 compares every distilled arm with `none`.
CLAIMS = {
    "1": ("SpectralKD beats soft KD, which beats no KD (final top-1)",
          [("soft+spectral", "soft", "top1", 1), ("soft", "none", "top1", 1),
           ("soft+spectral", "none", "top1", 1)]),
    "2": ("the guideline's layer pairs beat other choices of as many pairs (final top-1)",
          [("soft+spectral", arm, "top1", 1) for arm in LAYER_CHOICE_ARMS]),
    "3": ("distilled students mirror the teacher's spectral profile more than a student "
          "trained without distillation",
          [(arm, "none", metric, sign) for arm in STANDARD_ARMS if arm != "none"
           for metric, sign in (("level_distance", -1), ("profile_r", 1))]),
}
# The top-1 difference the power analysis sizes a study for (0.5 points).
POWER_EFFECT = 0.005
METRICS = ("top1", "best_top1", "level_distance", "profile_r", "spectral_gap")


def statistics(runs, arms):
    """Per-arm means and, per claim, the paired comparisons of the arms present, each with its
    95% t-interval, whether it excludes zero, and (top-1) the seeds a 0.5-point difference needs
    at 80% power given the observed spread; and each claim's verdict."""
    from keras_spectralkd.analysis.statistics import (mean_interval, paired_difference,
                                                      seeds_for_power)

    by_arm = {a: {r["seed"]: r for r in runs if r["arm"] == a} for a in arms}
    per_arm = {arm: {key: mean_interval([r[key] for r in results.values()]) for key in METRICS}
               for arm, results in by_arm.items() if results}
    claims = {}
    for claim, (statement, comparisons) in CLAIMS.items():
        rows = []
        for arm, baseline, metric, sign in comparisons:
            if not (by_arm.get(arm) and by_arm.get(baseline)):
                continue
            row = paired_difference({s: r[metric] for s, r in by_arm[arm].items()},
                                    {s: r[metric] for s, r in by_arm[baseline].items()})
            row.update(arm=arm, baseline=baseline, metric=metric, expected=sign,
                       excludes_zero=bool(row["low"] > 0 or row["high"] < 0))
            row["seeds_for_power"] = (
                seeds_for_power(POWER_EFFECT, row["std"])
                if metric == "top1" and row["std"] > 0 else None)
            rows.append(row)
        claims[claim] = dict(statement=statement, comparisons=rows, verdict=_verdict(rows))
    return dict(per_arm=per_arm, claims=claims)


def _verdict(rows):
    """"supported": every comparison excludes zero in the claimed direction; "contradicted":
    one excludes it in the other; otherwise "not resolved at this power" (or no data)."""
    if not rows:
        return "not tested (its arms were not run)"
    if any(r["excludes_zero"] and (r["mean"] > 0) != (r["expected"] > 0) for r in rows):
        return "contradicted"
    if all(r["excludes_zero"] for r in rows):
        return "supported"
    return "not resolved at this power"


def _points(value, sign=""):
    return "n/a" if value is None or math.isnan(value) else f"{value * 100:{sign}.2f}"


def _value(metric, value, sign=""):
    """Top-1 in points, the spectral distances as they are."""
    if metric in ("top1", "best_top1"):
        return _points(value, sign)
    return "n/a" if value is None or math.isnan(value) else f"{value:{sign}.4f}"


def markdown_table(summary):
    """The per-arm table, then each claim's paired comparisons and verdict, in markdown."""
    stats = summary["statistics"]
    lines = [
        "| arm | seeds | final top-1 (%) mean +- std | best-epoch top-1 (%) (optimistic) "
        "| L(X) level distance | profile r | spectral gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, s in stats["per_arm"].items():
        lines.append(
            f"| {arm} | {s['top1']['n']} | {_points(s['top1']['mean'])} +- "
            f"{_points(s['top1']['std'])} | {_points(s['best_top1']['mean'])} +- "
            f"{_points(s['best_top1']['std'])} | {s['level_distance']['mean']:.4f} | "
            f"{s['profile_r']['mean']:+.3f} | {s['spectral_gap']['mean']:.4f} |"
        )
    for claim, c in stats["claims"].items():
        lines += ["", f"Claim {claim}: {c['statement']}. Verdict: **{c['verdict']}**.", ""]
        if not c["comparisons"]:
            continue
        lines += ["| paired difference | metric | seeds | mean | 95% t-interval | excludes 0 "
                  f"| seeds for {POWER_EFFECT * 100:.1f} pt at 80% power |",
                  "|---|---|---|---|---|---|---|"]
        for r in c["comparisons"]:
            m = r["metric"]
            lines.append(
                f"| {r['arm']} - {r['baseline']} | {m} | {r['n']} | {_value(m, r['mean'], '+')} "
                f"| [{_value(m, r['low'], '+')}, {_value(m, r['high'], '+')}] | "
                f"{'yes' if r['excludes_zero'] else 'no'} | {r['seeds_for_power'] or '-'} |")
    teacher = summary["teacher"]
    lines += ["", f"Teacher (CaiT, CE only): final top-1 {teacher['top1'] * 100:.2f}%. Layer "
                  "pairs (student:teacher): "
                  + ",".join(f"{s}:{t}" for s, t in summary["layer_pairs"]) + "."]
    return "\n".join(lines) + "\n"


def _csv(header, rows):
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


def write_outputs(summary, output_dir):
    """study.json, runs.csv (one row per run), epochs.csv, results.md and the plots."""
    from keras_spectralkd.analysis import plots
    from keras_spectralkd.training.checkpoint import atomic_write_json, atomic_write_text

    atomic_write_json(os.path.join(output_dir, "study.json"), summary)
    run_fields = ["seed", "arm", "top1", "best_top1", "best_epoch", "level_distance",
                  "profile_r", "spectral_gap", "train_time_s"]
    atomic_write_text(os.path.join(output_dir, "runs.csv"), _csv(
        run_fields, [[r[k] for k in run_fields] for r in summary["runs"]]))
    epoch_fields = ["epoch", "val_accuracy", "val_loss", "loss", "level_distance", "profile_r",
                    "spectral_gap", "time_s"]
    atomic_write_text(os.path.join(output_dir, "epochs.csv"), _csv(
        ["seed", "arm"] + epoch_fields,
        [[r["seed"], r["arm"]] + [h.get(k) for k in epoch_fields]
         for r in summary["runs"] for h in r["history"]]))
    atomic_write_text(os.path.join(output_dir, "results.md"), markdown_table(summary))
    per_arm = summary["statistics"]["per_arm"]
    plots.plot_arm_top1(summary["runs"], per_arm, os.path.join(output_dir, "top1.png"))
    plots.plot_spectral_distances(summary["runs"], list(per_arm),
                                  os.path.join(output_dir, "distance.png"))
    plots.plot_arm_profiles(summary["teacher"]["intensity"], summary["runs"], list(per_arm),
                            os.path.join(output_dir, "profiles.png"))


# === The study ===
def _check_resume(settings, output_dir):
    path = os.path.join(output_dir, "study.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        previous = json.load(f).get("settings", {})
    for key in _FIXED_ON_RESUME:
        old, new = previous.get(key), settings[key]
        if key in previous and old != new:
            if isinstance(old, dict) and isinstance(new, dict):
                changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
                detail = "; ".join(f"{key} {k}={old.get(k)!r}, now {new.get(k)!r}"
                                   for k in changed)
            else:
                detail = f"{key}={old!r}, now {new!r}"
            raise cli.UsageError(f"{output_dir!r} holds a study with other settings ({detail}); "
                                 "use another --output_dir, or the same settings to resume")


def _comparable(config):
    """A config's settings that decide its numbers (not where it writes or how it talks)."""
    values = config.to_dict()
    for key in ("output_dir", "verbose", "seed", "mode", "layer_pairs", "teacher_weights"):
        values.pop(key)
    return values


def run_study(teacher_config, student_config, output_dir, *, seeds, arms, layer_pairs=None,
              profile_images=512, log=print, teacher_weights=None):
    """Runs (or resumes) the study; writes and returns the summary dict.

    `teacher_weights`: a trained teacher (`.keras`) to distill from instead of training
    `teacher_config` (the default study's shipped one).

    `arms`: name -> config changes, or None for a standard arm (`recipes.sweep.arm_changes`,
    resolved once the teacher's pairs are known; a layer-choice arm whose pairs are the
    guideline's own is dropped, saying so).
    """
    import time

    import keras

    from keras_spectralkd import analysis
    from keras_spectralkd.recipes import RECIPES, sweep

    started = time.time()
    settings = dict(teacher=(_comparable(teacher_config) if teacher_weights is None
                             else {"weights": os.path.abspath(teacher_weights)}),
                    student=_comparable(student_config),
                    layer_pairs=None if layer_pairs is None else [list(p) for p in layer_pairs],
                    backend=keras.backend.backend())
    os.makedirs(output_dir, exist_ok=True)
    _check_resume(settings, output_dir)
    log(f"backend {settings['backend']}; output in {output_dir}.")
    teacher = sweep.train_teacher(
        RECIPES["fashion_mnist_teacher"], teacher_config, output_dir,
        student_depth=student_config.student_overrides["depth"],
        profile_images=profile_images, layer_pairs=layer_pairs, log=log,
        weights=teacher_weights,
    )
    log("teacher L(X) per block: " + " ".join(f"{v:.4f}" for v in teacher.profile.intensity)
        + f"; layer pairs (student:teacher) {analysis.format_layer_pairs(teacher.pairs)}"
        + (" (the guideline's)" if layer_pairs is None else " (given)"))
    resolved = {}
    for name, changes in arms.items():
        changes = sweep.arm_changes(name, student_config, teacher) if changes is None else changes
        if name in LAYER_CHOICE_ARMS and [tuple(p) for p in changes["layer_pairs"]] == list(
                teacher.pairs):
            log(f"arm {name} dropped: its pairs are the guideline's own on these depths.")
            continue
        resolved[name] = changes
    arms = resolved
    runs = sweep.run_sweep(RECIPES["fashion_mnist"], student_config, teacher, arms, seeds,
                           output_dir, log)
    history = teacher.summary["history"]
    summary = dict(
        settings=settings, seeds=list(seeds), arms={k: _jsonable(v) for k, v in arms.items()},
        layer_pairs=[list(p) for p in teacher.pairs],
        teacher=dict(top1=teacher.top1,
                     best_top1=max((h["val_accuracy"] for h in history if "val_accuracy" in h),
                                   default=teacher.top1),
                     intensity=[float(v) for v in teacher.profile.intensity],
                     run_dir=os.path.dirname(teacher.path)),
        runs=runs, statistics=statistics(runs, list(arms)),
        wall_time_s=round(time.time() - started, 1),
    )
    write_outputs(summary, output_dir)
    log(f"done in {summary['wall_time_s']:.0f} s; results in {output_dir}.")
    return summary


def _jsonable(changes):
    return {k: [list(p) for p in v] if k == "layer_pairs" else v for k, v in changes.items()}


# === Command line ===
def _int_list(text):
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise argparse.ArgumentTypeError(
            f"expected distinct non-negative integers, e.g. 0,1,2; got {text!r}")
    return values


def _arm_list(text):
    arms = tuple(a.strip() for a in text.split(",") if a.strip())
    if not arms or len(set(arms)) != len(arms) or set(arms) - set(STANDARD_ARMS):
        raise argparse.ArgumentTypeError(
            f"expected distinct arms from {','.join(STANDARD_ARMS)}; got {text!r}")
    return arms


def _custom_arm(text):
    name, sep, changes = text.partition("=")
    try:
        changes = json.loads(changes) if sep else None
    except json.JSONDecodeError:
        changes = None
    if not name.strip() or not isinstance(changes, dict):
        raise argparse.ArgumentTypeError(
            f"expected NAME={{json object of settings}}, e.g. 'w05={{\"spectral_weight\": 0.5}}'; "
            f"got {text!r}")
    return name.strip(), changes


def _pairs(text):
    from keras_spectralkd.analysis.selection import parse_layer_pairs

    try:
        return [tuple(p) for p in parse_layer_pairs(text)]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _name_value(item):
    name, sep, text = item.partition("=")
    if not sep:
        raise cli.UsageError(f"{item!r} is not NAME=VALUE (e.g. epochs=12)")
    return name, sep, text


def build_parser():
    parser = cli.parser(PROG, __doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="runs/study",
                        help="where everything goes; an existing study there is resumed")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny study for tests (2 seeds, 256 images, small models)")
    parser.add_argument("--seeds", type=_int_list, help="e.g. 0,1,2 (default 0,1,2,3,4; quick: 0,1)")
    parser.add_argument("--arms", type=_arm_list,
                        help=f"subset of {','.join(STANDARD_ARMS)} (default "
                             f"{','.join(DEFAULT_ARMS)}; quick: {','.join(QUICK_ARMS)})")
    parser.add_argument("--arm", type=_custom_arm, action="append", default=[],
                        metavar="NAME=JSON", help="one more arm of any config fields")
    parser.add_argument("--layer_pairs", type=_pairs,
                        help="student:teacher pairs, e.g. 0:0,3:5 (default: the guideline's)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any setting of the students' runs (spectralkd-train --help), e.g. "
                             "epochs=12; data settings (train_size, batch_size, ...) apply to "
                             "the teacher too")
    parser.add_argument("--teacher_set", action="append", default=[], metavar="NAME=VALUE",
                        help="any setting of the teacher's run, e.g. epochs=12 or "
                             "student_overrides='{\"depth\": 8}'")
    parser.add_argument("--teacher", metavar="PATH",
                        help="a trained teacher (.keras) to distill from, of the students' "
                             "teacher architecture (teacher_overrides; default: the one shipped "
                             "with the package, trained by `spectralkd-train "
                             "--recipe=fashion_mnist_teacher --preset=study`)")
    parser.add_argument("--train_teacher", action="store_true",
                        help="train the teacher in <output_dir>/teacher instead (implied by "
                             "--teacher_set, and by --quick without --teacher)")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def _teacher_weights(args):
    """The trained teacher the study distills from, or None to train one."""
    from keras_spectralkd.recipes.table import STUDY_TEACHER_PATH

    if args.teacher and (args.train_teacher or args.teacher_set):
        raise cli.UsageError("--teacher takes a trained teacher; it cannot go with "
                             "--train_teacher or --teacher_set")
    if args.train_teacher or args.teacher_set or (args.quick and not args.teacher):
        return None
    path = args.teacher or STUDY_TEACHER_PATH
    if not os.path.isfile(path):
        raise cli.UsageError(f"--teacher={path!r} is not a file; give a trained teacher's "
                             ".keras file, or --train_teacher to train one")
    return path


def _rerun_with_backend(backend, argv):
    """Keras fixes its backend at import: run this tool again in a process that has it."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    return subprocess.call([sys.executable, "-m", "keras_spectralkd.tools.study", *argv], env=env)


def main(argv=None):
    """Command-line entry point: 0 done, 1 failed, 2 bad usage (one line, no traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def body(args):
        if args.backend:
            if "keras" not in sys.modules:
                os.environ["KERAS_BACKEND"] = args.backend
            else:
                import keras

                if keras.backend.backend() != args.backend:
                    return _rerun_with_backend(args.backend, argv)
        from keras_spectralkd.recipes import sweep
        from keras_spectralkd.recipes.config import parse_value

        try:
            changes = [[(name.strip(), parse_value(name.strip(), text))
                        for name, _, text in (_name_value(item) for item in items)]
                       for items in (args.teacher_set, args.set)]
            verbose = [("verbose", 0 if args.quiet else "auto")]
            # The quick study's students train two epochs: a trend, not one point.
            epochs = [("epochs", 2)] if args.quick else []
            teacher_config, student_config = sweep.miniature(
                args.quick, teacher_changes=verbose + changes[0],
                student_changes=verbose + epochs + changes[1],
                preset="quick" if args.quick else "study")
        except ValueError as error:
            raise cli.UsageError(str(error)) from None

        arms = dict.fromkeys(args.arms or (QUICK_ARMS if args.quick else DEFAULT_ARMS))
        for name, changes in args.arm:
            try:
                dataclasses.replace(student_config, **changes).check()
            except (TypeError, ValueError) as error:
                raise cli.UsageError(f"--arm {name}: {error}") from None
            arms[name] = changes
        teacher_weights = _teacher_weights(args)
        log = (lambda message: None) if args.quiet else (
            lambda message: print(f"[study] {message}", flush=True))
        summary = run_study(teacher_config, student_config, args.output_dir,
                            seeds=args.seeds or ((0, 1) if args.quick else (0, 1, 2, 3, 4)),
                            arms=arms, layer_pairs=args.layer_pairs,
                            profile_images=64 if args.quick else 512, log=log,
                            teacher_weights=teacher_weights)
        if not args.quiet:
            print(markdown_table(summary), end="")

    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
