"""How much of a DeiT-Tiny recipe step `fit` spends waiting for its input pipeline.

One process builds what `recipes/deit_tiny.py` builds (its preset's models with random weights,
its `load_data` on a folder of real JPEGs written here, its Distiller and optimizer), then runs
`fit` in interleaved rounds on two inputs:

- "pipeline": the recipe's training stream (decode, RandomResizedCrop, flip, RandAugment m9,
  normalise, random erasing; repeated augmentation as the preset sets it), read as `fit` reads
  it, with the pipeline's threads sharing the CPU with the step;
- "cached": the first batch of that stream, cached and repeated: the same step with no input work.

The share of a step spent on data is `1 - cached / pipeline` (median seconds per step over the
rounds). On a machine where the input work competes with the step for the cores (every CPU
run), this includes that competition, which is what a user's `fit` pays.

    python benchmarks/data_wait.py                            # paper models at 224, batch 16
    python benchmarks/data_wait.py --preset tiny              # the 32 px smoke-test preset
    KERAS_BACKEND=jax python benchmarks/data_wait.py ...
"""

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "33554432")
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "4294967296")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper", help="the recipe's preset (paper, tiny)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per fit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", default="/tmp/spectralkd_jpegs")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--map", default="preset", choices=("preset", "sequential", "parallel"),
                        help="the per-image map: the preset's choice (paper: parallel, tiny: "
                        "sequential), or forced")
    args = parser.parse_args()

    from _workers import batch_clock
    from input_pipeline import write_jpegs

    write_jpegs(args.root, args.images)
    os.makedirs(os.path.join(args.root, "val"), exist_ok=True)
    if not os.path.exists(os.path.join(args.root, "val", "class_0")):
        os.symlink(os.path.join(args.root, "train", "class_0"),
                   os.path.join(args.root, "val", "class_0"))
    for index in range(1, 4):
        link = os.path.join(args.root, "val", f"class_{index}")
        if not os.path.exists(link):
            os.symlink(os.path.join(args.root, "train", f"class_{index}"), link)

    import keras

    from keras_spectralkd import models
    from keras_spectralkd.recipes import RECIPES, runner

    changes = dict(batch_size=args.batch_size, eval_batch_size=args.batch_size,
                   data_dir=args.root, ema_decay=0.0, precision="float32")
    if args.image_size:
        changes["image_size"] = args.image_size
    if args.map != "preset":
        changes["deterministic"] = args.map == "sequential"
    config = RECIPES["deit_tiny"].config(args.preset, **changes)
    data = runner.load_data(config)
    teacher = models.create(config.teacher, num_classes=data.num_classes,
                            image_size=config.image_size, **config.teacher_overrides)
    student = models.create(config.student, num_classes=data.num_classes,
                            image_size=config.image_size, **config.student_overrides)
    distiller = runner.build_distiller(config, teacher, student)
    runner.compile_distiller(distiller, config, data.steps_per_epoch, loss_scale=None)

    stream = data.train(0, 0).repeat()
    cached = data.train(0, 0).take(1).cache().repeat()
    timer = batch_clock()
    per_step = {"pipeline": [], "cached": []}
    steps = args.steps + 2  # the first two ends of each fit are left out (start-up, prefetch)
    distiller.fit(cached, steps_per_epoch=2, epochs=1, verbose=0)  # compile
    for round_index in range(args.rounds):
        for name, dataset in (("cached", cached), ("pipeline", stream)):
            timer.clear()
            distiller.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0,
                          callbacks=[timer])
            gaps = [b - a for a, b in zip(timer.ends[1:], timer.ends[2:])]
            per_step[name].append(statistics.median(gaps))
            print(f"round {round_index + 1}: {name} {per_step[name][-1]:.3f} s/step",
                  file=sys.stderr, flush=True)

    cached_s = statistics.median(per_step["cached"])
    pipeline_s = statistics.median(per_step["pipeline"])
    print(f"\nDeiT-Tiny recipe, preset {args.preset!r}: {config.student} <- {config.teacher}, "
          f"{config.image_size} px, batch {config.batch_size}, "
          f"{'sequential' if config.deterministic else 'parallel'} map, "
          f"backend {keras.backend.backend()}, {os.cpu_count()} CPUs; median of {args.rounds} "
          f"rounds x {args.steps} steps")
    print("| input | s/step | images/s |")
    print("|---|---|---|")
    for name, value in (("cached batch (no input work)", cached_s),
                        ("the recipe's pipeline", pipeline_s)):
        print(f"| {name} | {value:.3f} | {config.batch_size / value:.1f} |")
    print(f"\nshare of the step spent on data: {max(0.0, 1.0 - cached_s / pipeline_s):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
