"""Per-op profile of one teacher-only cross-entropy step (the mini CaiT), ours on the Keras torch
backend beside timm, with `torch.profiler` in one process (KERAS_BACKEND=torch).

Prints, for each, the top ops by self CPU time and the number of ops dispatched (the Python /
dispatcher overhead grows with it). Run:

    KERAS_BACKEND=torch python benchmarks/profile_step.py --threads 2
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("KERAS_BACKEND", "torch")

from distill_step import SIZES, model_kwargs  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras
    import numpy as np
    import timm
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from keras_spectralkd import Distiller, models

    torch.set_num_threads(args.threads)
    side, classes = SIZES["mini"]["common"]["image_size"], SIZES["mini"]["common"]["num_classes"]
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, side, side, 3)).astype("float32")
    labels = rng.integers(0, classes, (args.batch,))

    teacher = models.create("cait_s24_224", **model_kwargs("mini", "teacher"))
    trainer = Distiller(None, teacher, mode="none")
    trainer.compile(optimizer=keras.optimizers.AdamW(5e-4, weight_decay=0.05), jit_compile=False)
    x, y = keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(labels)

    reference = timm.create_model("cait_s24_224", **model_kwargs("mini", "teacher", True)).train()
    optimizer = torch.optim.AdamW(reference.parameters(), lr=5e-4, weight_decay=0.05)
    tx, ty = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels)

    def timm_step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(reference(tx), ty, label_smoothing=0.1).backward()
        optimizer.step()

    contenders = [("ours (Keras torch backend)", lambda: trainer.train_on_batch(x, y)),
                  ("timm", timm_step)]
    for _, step in contenders:
        step()
        step()
    for name, step in contenders:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / 1e6
        count = sum(e.count for e in events)
        print(f"\n=== {name}: one step, {total:.3f} s self CPU in ops, {count} op calls ===")
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40))


if __name__ == "__main__":
    main()
