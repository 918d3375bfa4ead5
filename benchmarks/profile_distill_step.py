"""Where a bf16 SpectralKD step's time and memory go, ours on the Keras torch backend beside the
PyTorch reference under bf16 autocast, in one process with `torch.profiler`
(docs/performance.md, "Why not more").

Ours runs what `precision="auto"` takes on a CPU with bf16 units (a bf16 frozen teacher, a
`mixed_bfloat16` student); the reference is timm's models with SPEC.md 3's objective under
`torch.autocast(bfloat16)`, the teacher under `torch.no_grad()`. For each, one profiled step
prints: the time in ops, the matrix products' share (`aten::mm`, `aten::addmm`), the top ops by
self time with their input shapes, and the tensors saved for the backward pass (counted once per
storage with `torch.autograd.graph.saved_tensors_hooks`).

    KERAS_BACKEND=torch python benchmarks/profile_distill_step.py --batch 16 --threads 2
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]
os.environ.setdefault("KERAS_BACKEND", "torch")

from distill_step import PAIRS  # noqa: E402

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def ours(pair, batch, rng):
    import keras

    from keras_spectralkd import Distiller, models

    student_name, teacher_name, pairs, weight = PAIRS[pair]
    keras.config.set_dtype_policy("mixed_bfloat16")
    distiller = Distiller(models.create(teacher_name), models.create(student_name),
                          layer_pairs=pairs, mode="soft", spectral_weight=weight,
                          teacher_dtype="bfloat16")
    distiller.compile(optimizer=keras.optimizers.AdamW(5e-4, weight_decay=0.05),
                      jit_compile=False)
    images = keras.ops.convert_to_tensor(rng.standard_normal((batch, 224, 224, 3), "float32"))
    labels = keras.ops.convert_to_tensor(rng.integers(0, 1000, (batch,)))
    return lambda: distiller.train_on_batch(images, labels)


def reference(pair, batch, rng):
    import timm
    import torch

    import torch_objective as objective

    student_name, teacher_name, pairs, weight = PAIRS[pair]
    student = timm.create_model(student_name, drop_path_rate=0.0).train()
    teacher = timm.create_model(teacher_name).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=5e-4, weight_decay=0.05)
    images = torch.from_numpy(rng.standard_normal((batch, 3, 224, 224), "float32"))
    labels = torch.from_numpy(rng.integers(0, 1000, (batch,)))
    s_units, t_units = [p[0] for p in pairs], [p[1] for p in pairs]

    def forward(model, units):
        final, maps = model.forward_intermediates(images, indices=units)
        return model.forward_head(final).float(), [m.float() for m in maps]

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.no_grad():
                t_logits, t_maps = forward(teacher, t_units)
            s_logits, s_maps = forward(student, s_units)
        objective.objective(s_logits, t_logits, labels, s_maps, t_maps, mode="soft",
                            spectral_weight=weight)["total"].backward()
        optimizer.step()

    return step


def saved_for_backward(step):
    """MB of the distinct storages the autograd graph of one step keeps for its backward."""
    import torch

    storages = {}

    def pack(tensor):
        try:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # a tensor without storage (e.g. sparse)
            pass
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(storages.values()) / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", choices=["deit", "swin"], default="deit")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads)
    for name, build in (("ours (torch backend, precision=auto)", ours),
                        ("reference (timm, bf16 autocast)", reference)):
        step = build(args.pair, args.batch, np.random.default_rng(0))
        step()
        step()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            step()
        events = prof.key_averages(group_by_input_shape=True)
        total = sum(e.self_cpu_time_total for e in events) / 1e3
        products = sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / 1e3
        calls = sum(e.count for e in events if e.key in MATMULS)
        print(f"\n=== {name}, {args.pair}, batch {args.batch}: {total:.0f} ms in ops, of which "
              f"matrix products {products:.0f} ms ({calls} calls); saved for backward "
              f"{saved_for_backward(step):.0f} MB")
        print("| op | input shapes | self ms | calls |\n|---|---|---|---|")
        for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
            shapes = str(event.input_shapes)[:70]
            print(f"| {event.key} | {shapes} | {event.self_cpu_time_total / 1e3:.1f} "
                  f"| {event.count} |")


if __name__ == "__main__":
    main()
