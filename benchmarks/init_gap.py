"""Does a student initialised by `models.create` train like one initialised by timm? (issue 21)

A paired design (tests/convert/paired_init.py): for each seed s, the miniature ViT student
(28x28 inputs, 4x4 patches, width 64, depth 4, 2 heads, 10 classes) starts from
- A: timm's initialisation (`timm.create_model`, torch seed s), converted by `from_timm`;
- B: `models.create`'s (after `keras.utils.set_random_seed(s)`), or a control (`--init`);
and is trained on the SAME batches (Fashion-MNIST, the subset shipped with the package; seed
s's order, random 2-pixel crop and flip) through the package's own path: `Distiller(mode=
"none")`, label smoothing 0.1, `create_optimizer` (AdamW, weight decay 0.05, timm's no-decay set)
on a `WarmupCosineDecay` (peak 1e-3, warm-up over the first 1/8 of the steps). Per seed and arm:
the mean training loss of the last `--tail` steps, and the cross-entropy and top-1 of the first
`--eval_size` test images. Then the paired differences B - A with their 95% t-intervals
(`analysis.statistics.paired_difference`), and how the training loss tracks top-1 (their
correlation over the 2K runs, and over the K paired differences).

`--tensors` prints instead, per kind of tensor pooled over the seeds, how A's and B's initial
values compare beyond mean and std: the share beyond 2 of timm's std, the largest magnitude and
the two-sample Kolmogorov-Smirnov distance against its 1% critical value.

`--init old` puts in arm B the package's initialisation from before it followed timm (Keras'
`TruncatedNormal(0.02)`, std 0.0176; Glorot patch conv, zero bias), `--init glorot` Keras'
default Glorot uniform for every Dense kernel: what a real gap looks like.

Run (docs/training.md, "From scratch, as timm"):

    KERAS_BACKEND=jax python benchmarks/init_gap.py --seeds 10 --steps 200
    KERAS_BACKEND=jax python benchmarks/init_gap.py --seeds 10 --steps 200 --init old
    KERAS_BACKEND=torch python benchmarks/init_gap.py --seeds 8 --tensors
"""

import argparse
import os
import re
import sys
import time

# torch (through timm) before Keras: importing triton after TensorFlow crashes the process.
import timm  # noqa: F401
import torch  # noqa: F401

# The paired runs live beside the test that uses them, as tests/torch_objective.py does for
# benchmarks/distill_step.py.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "convert")]
import paired_init  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_spectralkd.analysis.statistics import paired_difference  # noqa: E402
from keras_spectralkd.convert import timm_name_map  # noqa: E402
from keras_spectralkd.models import create  # noqa: E402


# === Initial tensors ===
def ks_distance(a, b):
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / a.size
                               - np.searchsorted(b, grid, side="right") / b.size)))


def compare_tensors(seeds, init):
    """Prints, per kind of tensor (timm's name, block index dropped), A's and B's initial
    values pooled over `seeds`: std, mean, share beyond 2 of A's std, max |w|, KS distance."""
    pools = {}
    for seed in seeds:
        state = paired_init.timm_state(seed)
        keras.utils.set_random_seed(seed)
        model = create(paired_init.NAME, num_classes=paired_init.NUM_CLASSES,
                       **paired_init.MINIATURE)
        names = timm_name_map(paired_init.NAME, model, state)
        ours = paired_init.created_weights(seed, init)
        for variable, value in zip(model.weights, ours):
            key = names[variable.path]
            pool = pools.setdefault(re.sub(r"\.\d+\.", ".*.", key), ([], []))
            pool[0].append(state[key].ravel())
            pool[1].append(value.ravel())
    print(f"{'tensor (A: timm, B: ' + init + ')':34s} {'n':>7s} {'std A':>9s} {'std B':>9s} "
          f"{'mean A':>9s} {'mean B':>9s} {'>2sd A':>7s} {'>2sd B':>7s} {'max A':>8s} "
          f"{'max B':>8s} {'KS':>6s} {'KS 1%':>6s}")
    for kind, (theirs, ours) in pools.items():
        theirs, ours = np.concatenate(theirs), np.concatenate(ours)
        scale = theirs.std()
        if scale == 0:
            same = np.array_equal(theirs, ours)
            print(f"{kind:34s} {theirs.size:7d}   constant {theirs.flat[0]:g}: "
                  f"{'B equal' if same else 'B DIFFERS'}")
            continue
        tail_a, tail_b = (np.mean(np.abs(x) > 2 * scale) for x in (theirs, ours))
        # KS critical value at 1% for two samples of n each: 1.63 * sqrt(2 / n).
        print(f"{kind:34s} {theirs.size:7d} {scale:9.4g} {ours.std():9.4g} {theirs.mean():9.2g} "
              f"{ours.mean():9.2g} {tail_a:7.4f} {tail_b:7.4f} {np.abs(theirs).max():8.3g} "
              f"{np.abs(ours).max():8.3g} {ks_distance(theirs, ours):6.3f} "
              f"{1.63 * np.sqrt(2 / theirs.size):6.3f}")


# === Report ===
def _interval(summary, scale=1.0, digits=4):
    return (f"{summary['mean'] * scale:+.{digits}f} [{summary['low'] * scale:+.{digits}f}, "
            f"{summary['high'] * scale:+.{digits}f}]")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--tail", type=int, default=20, help="steps averaged for the train loss")
    parser.add_argument("--train_size", type=int, default=12_000)
    parser.add_argument("--eval_size", type=int, default=2_000)
    parser.add_argument("--init", default="create", choices=("create",) + paired_init.CONTROLS)
    parser.add_argument("--tensors", action="store_true",
                        help="compare the initial tensors instead of training")
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.tensors:
        print(f"backend {keras.backend.backend()}, {args.seeds} seeds pooled", flush=True)
        compare_tensors(seeds, args.init)
        return

    data = paired_init.load_images(args.train_size, args.eval_size)
    print(f"backend {keras.backend.backend()}, {args.seeds} seeds x {args.steps} steps, batch "
          f"{args.batch_size}; A: timm, B: {args.init}; {os.cpu_count()} CPUs", flush=True)
    header = ("seed", "train A", "train B", "held A", "held B", "top1 A", "top1 B", "s")
    print("  ".join(f"{h:>8s}" for h in header), flush=True)
    # torch's jit (torch.compile) would compile longer than the runs take eagerly.
    trainer = paired_init.PairedTrainer(args.steps, args.batch_size,
                                        jit_compile=keras.backend.backend() != "torch")
    rows = {}
    with paired_init.one_torch_thread():
        for seed in seeds:
            started = time.time()
            rows[seed] = {}
            for arm, name in (("timm", "timm"), ("create", args.init)):
                losses, cross_entropy, top1 = trainer.run(name, seed, data)
                rows[seed][arm] = (float(losses[-args.tail:].mean()), cross_entropy, top1)
            a, b = rows[seed]["timm"], rows[seed]["create"]
            print(f"{seed:8d}  {a[0]:8.4f}  {b[0]:8.4f}  {a[1]:8.4f}  {b[1]:8.4f}  "
                  f"{100 * a[2]:8.2f}  {100 * b[2]:8.2f}  {time.time() - started:8.0f}",
                  flush=True)
    report(rows, args.tail)


def report(rows, tail):
    """Prints the paired differences and how the training loss tracks top-1."""
    print("\npaired difference B - A (mean [95% t-interval], sd):")
    for index, what, scale, digits in ((0, f"train loss (last {tail} steps)", 1, 4),
                                       (1, "held-out cross-entropy", 1, 4),
                                       (2, "held-out top-1 (points)", 100, 2)):
        summary = paired_difference({s: r["create"][index] for s, r in rows.items()},
                                    {s: r["timm"][index] for s, r in rows.items()})
        print(f"  {what:28s} {_interval(summary, scale, digits)}  "
              f"sd {summary['std'] * scale:.{digits}f}")
    if len(rows) < 3:
        return
    runs = np.array([r[arm] for r in rows.values() for arm in ("timm", "create")])
    differences = np.array([np.subtract(r["create"], r["timm"]) for r in rows.values()])
    print(f"\ncorrelation with top-1 over the {len(runs)} runs: train loss "
          f"{np.corrcoef(runs[:, 0], runs[:, 2])[0, 1]:+.2f}, held-out cross-entropy "
          f"{np.corrcoef(runs[:, 1], runs[:, 2])[0, 1]:+.2f}; over the {len(rows)} paired "
          f"differences: {np.corrcoef(differences[:, 0], differences[:, 2])[0, 1]:+.2f}, "
          f"{np.corrcoef(differences[:, 1], differences[:, 2])[0, 1]:+.2f}")


if __name__ == "__main__":
    main()
