"""Images/s of DeiT's training input pipeline: ours (tf.data) beside timm's (torchvision).

Both read the same folder of real JPEG files (written here once: ImageNet-sized, 500x375,
smooth random content, quality 90) and apply DeiT's training transform at the same settings:
decode, RandomResizedCrop to 224 (bicubic), horizontal flip, RandAugment m9 (mstd 0.5),
normalise, random erasing (p 0.25), batched by 32.

- ours: `keras_spectralkd.data` (`imagenet.image_folder_examples`, `pipeline.train_pipeline`,
  `transforms.TrainTransform`), its per-image map run on 1 or 2 tf.data threads (a private
  thread pool of that size; 1 = `deterministic=True`, the sequential map);
- timm: `timm.data.create_transform(224, is_training=True, auto_augment="rand-m9-mstd0.5-inc1",
  re_prob=0.25, interpolation="bicubic")` on torchvision's `ImageFolder`, a torch `DataLoader`
  with 1 or 2 worker processes.

Each configuration runs in its own process, one after the other, `--rounds` times interleaved;
the median images/s is printed. Run:

    python benchmarks/input_pipeline.py                 # 512 images, batches of 32
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["ours-1", "ours-2", "timm-1", "timm-2"]


def write_jpegs(root, count, classes=4, size=(500, 375), seed=0):
    """`root/train/class_k/*.JPEG`: smooth random images (upsampled noise), JPEG quality 90."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index in range(count):
        folder = os.path.join(root, "train", f"class_{index % classes}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{index:05d}.JPEG")
        if os.path.exists(path):
            continue
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(size, Image.BICUBIC)
        noise = rng.normal(0, 12, (size[1], size[0], 3))
        pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)


def run_ours(root, threads, batch, batches):
    import tensorflow as tf

    from keras_spectralkd.data import imagenet, pipeline, transforms

    (paths, labels), count, _ = imagenet.image_folder_examples(root, "train")
    dataset = pipeline.train_pipeline(
        (paths, labels), transforms.TrainTransform(224), batch_size=batch,
        num_examples=count, deterministic=threads == 1, load=imagenet.read_image_file,
    )
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    dataset = dataset.with_options(options)
    return lambda: _time_batches(iter(dataset.repeat()), batch, batches)


def run_timm(root, workers, batch, batches):
    import timm.data
    import torch
    import torchvision

    torch.set_num_threads(1)
    _allow_zero_bit_posterize()
    transform = timm.data.create_transform(
        224, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25,
        interpolation="bicubic",
    )
    dataset = torchvision.datasets.ImageFolder(os.path.join(root, "train"), transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True,
                                         persistent_workers=True)

    def endless():
        while True:
            yield from loader

    iterator = endless()
    return lambda: _time_batches(iterator, batch, batches)


def _allow_zero_bit_posterize():
    """timm's PosterizeIncreasing keeps 0 bits at magnitude 10 (m9 + its jitter reaches it);
    Pillow 13 (seen here) raises on 0 where older Pillow returned a black image. Keep the old
    result, so timm's worker does not die mid-benchmark (a Pillow/timm mismatch, not a timm
    choice)."""
    from PIL import Image, ImageOps

    posterize = ImageOps.posterize

    def patched(image, bits):
        if bits < 1:
            return Image.new(image.mode, image.size)
        return posterize(image, bits)

    ImageOps.posterize = patched


def _time_batches(iterator, batch, batches):
    next(iterator)  # the pipeline is running (workers started, buffers filled once)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batch * batches / (time.perf_counter() - start)


def child(config, root, batch, batches):
    kind, count = config.split("-")
    make = run_ours if kind == "ours" else run_timm
    measure = make(root, int(count), batch, batches)
    print(json.dumps({"images_per_s": measure()}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/tmp/spectralkd_jpegs")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, ROOT)
        child(args.child, args.root, args.batch, args.batches)
        return 0
    write_jpegs(args.root, args.images)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="1")
    results = {config: [] for config in args.configs.split(",")}
    for round_index in range(args.rounds):
        for config in results:
            output = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", config, "--root",
                 args.root, "--batch", str(args.batch), "--batches", str(args.batches)],
                env=env, capture_output=True, text=True,
            )
            lines = [line for line in output.stdout.splitlines() if line.startswith("{")]
            if output.returncode or not lines:
                print(f"{config} failed: {output.stderr.strip()[-2000:]}", file=sys.stderr)
                continue
            results[config].append(json.loads(lines[-1])["images_per_s"])
            print(f"round {round_index + 1}: {config} {results[config][-1]:.1f} images/s",
                  file=sys.stderr, flush=True)
    print(f"\nDeiT training transform, {args.images} JPEGs 500x375 -> 224, batch {args.batch}, "
          f"{args.batches} timed batches, median of {args.rounds} rounds")
    print("| pipeline | workers / threads | images/s |")
    print("|---|---|---|")
    for config, values in results.items():
        kind, count = config.split("-")
        name = "ours (tf.data)" if kind == "ours" else "timm (torchvision DataLoader)"
        value = f"{statistics.median(values):.1f}" if values else "failed"
        print(f"| {name} | {count} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
