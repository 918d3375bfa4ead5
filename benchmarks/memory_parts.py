"""Two measurements behind docs/performance.md's memory section (DeiT-Tiny <- CaiT-S24 step).

`--part live` (torch backend): the most bytes of tensors alive at once during one warm training
step, for the PyTorch reference and for ours on the torch backend, counted with a torch dispatch
mode (every tensor an op creates, until it is freed; tensors that exist before the step, such as
weights and optimizer slots, are not counted). This is the step's own tensor memory, without
what the allocator keeps around it.

`--part teacher` (torch backend): the same count for the frozen teacher's forward alone
(`forward_intermediates` at the 8 paired units, CaiT-S24), timm's and ours, and the peak RSS
increase of three such forwards; ours also with Keras' own graph runner instead of
`backbone.ReleasingGraph` where this checkout has it.

`--part imports`: peak RSS after the imports alone, each in a fresh process: the reference's
(torch, timm, tests/torch_objective.py) and ours (keras + keras_spectralkd) on each backend,
on torch also with JAX kept out (Keras imports JAX whatever the backend).

`--part xla` (JAX backend): XLA's plan for our compiled training step (`memory_analysis()`:
arguments, outputs, temporaries), what compiling it costs in peak RSS, and how much of that
glibc's `malloc_trim(0)` hands back afterwards. Set XLA_FLAGS to compare schedulers, e.g.
`--xla_cpu_enable_concurrency_optimized_scheduler=false`.

    python benchmarks/memory_parts.py --part imports
    python benchmarks/memory_parts.py --part live --batch 16
    python benchmarks/memory_parts.py --part teacher --batch 32
    python benchmarks/memory_parts.py --part live --batch 16 --root <older checkout>   # before
    python benchmarks/memory_parts.py --part xla --batch 16
    XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false \\
        python benchmarks/memory_parts.py --part xla --batch 16
"""

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = list(zip([0, 1, 6, 7, 8, 9, 10, 11], [0, 1, 18, 19, 20, 21, 22, 23]))


def status_mb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024.0 for line in status if line.startswith(field))


def ours(batch):
    """(distiller, images, labels): our Distiller on the current backend, compiled, seeded."""
    import keras
    import numpy as np
    from _workers import seed_without_tensorflow

    from keras_spectralkd import Distiller, models

    seed_without_tensorflow(0)
    distiller = Distiller(models.create("cait_s24_224"), models.create("deit_tiny_patch16_224"),
                          layer_pairs=PAIRS, mode="soft", spectral_weight=0.2)
    distiller.compile(optimizer=keras.optimizers.AdamW(5e-4, weight_decay=0.05, epsilon=1e-8))
    rng = np.random.default_rng(0)
    images = keras.ops.convert_to_tensor(
        rng.standard_normal((batch, 224, 224, 3)).astype("float32"))
    labels = keras.ops.convert_to_tensor(rng.integers(0, 1000, (batch,)))
    return distiller, images, labels


# === torch: tensors alive during a step ===
def live_peak_mb(step, warm=True):
    """Runs `step()` once to warm up, then once counted; the most MB of tensors (created
    during the counted step) alive at the same time."""
    import gc

    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from torch_storages import NewStorages  # tests/torch_storages.py

    if warm:
        step()
    existing = set()
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            existing.add(obj.untyped_storage().data_ptr())
    state = {"live": 0, "peak": 0}
    counted = {}

    def new(key, tensor, nbytes):
        counted[key] = nbytes
        state["live"] += nbytes
        state["peak"] = max(state["peak"], state["live"])

    def free(key):
        state["live"] -= counted.pop(key, 0)

    with torch.no_grad() if not warm else _nothing(), NewStorages(new, free, existing):
        step()
    return state["peak"] / 2**20


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def part_live(batch):
    import timm
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import torch_objective as ref

    torch.manual_seed(0)
    student = timm.create_model("deit_tiny_patch16_224", drop_path_rate=0.0).train()
    teacher = timm.create_model("cait_s24_224").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=5e-4, weight_decay=0.05)
    images, labels = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))

    def forward(model, units):
        final, maps = model.forward_intermediates(images, indices=units)
        return model.forward_head(final), maps

    def reference_step():
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            t_logits, t_maps = forward(teacher, [p[1] for p in PAIRS])
        s_logits, s_maps = forward(student, [p[0] for p in PAIRS])
        ref.objective(s_logits, t_logits, labels, s_maps, t_maps, mode="soft",
                      spectral_weight=0.2)["total"].backward()
        optimizer.step()

    print(f"batch {batch}: peak MB of tensors alive during one step")
    print(f"| reference (timm) | {live_peak_mb(reference_step):.0f} |")
    del student, teacher, optimizer
    distiller, images_k, labels_k = ours(batch)
    print(f"| ours, torch backend | "
          f"{live_peak_mb(lambda: distiller.train_on_batch(images_k, labels_k)):.0f} |")


def part_teacher(batch, model):
    """One row: `model` is "timm", "ours" or "keras_runner" (each in its own process, so that
    one's freed memory does not serve the next)."""
    import keras
    import numpy as np
    import torch

    units = [p[1] for p in PAIRS]
    if model == "timm":
        import timm

        torch.manual_seed(0)
        theirs = timm.create_model("cait_s24_224").eval()
        images = torch.randn(batch, 3, 224, 224)

        def forward():
            with torch.no_grad():
                final, maps = theirs.forward_intermediates(images, indices=units)
                return theirs.forward_head(final), maps
    else:
        from keras_spectralkd import models
        from keras_spectralkd.models import backbone

        if model == "keras_runner":
            if not hasattr(backbone, "_keras_graph_internals_known"):
                return
            backbone._keras_graph_internals_known = lambda model: False
        ours_model = models.create("cait_s24_224")
        ours_model.trainable = False
        images = keras.ops.convert_to_tensor(np.random.default_rng(0).standard_normal(
            (batch, 224, 224, 3)).astype("float32"))

        def forward():
            return ours_model.forward_intermediates(images, units)

    before = status_mb("VmHWM:")
    for _ in range(3):
        forward()
    increase = status_mb("VmHWM:") - before  # before the count, whose bookkeeping would add
    name = {"timm": "timm", "ours": "ours",
            "keras_runner": "ours with Keras' graph runner"}[model]
    print(f"| {name} | {live_peak_mb(forward, warm=False):.0f} | {increase:.0f} |", flush=True)


IMPORTS = {
    "reference (torch, timm)": ("torch", "import torch, timm, torch_objective"),
    "ours, torch backend": ("torch", "import keras, keras_spectralkd"),
    "ours, torch backend, JAX kept out": (
        "torch", "import sys; sys.modules['jax'] = None; import keras, keras_spectralkd"),
    "ours, JAX backend": ("jax", "import keras, keras_spectralkd"),
    "ours, TensorFlow backend": ("tensorflow", "import keras, keras_spectralkd"),
}


def part_imports(root):
    print("| imports | peak RSS (MB) |")
    print("|---|---|")
    for name, (backend, statement) in IMPORTS.items():
        code = (f"import sys; sys.path[:0] = [{root!r}, {os.path.join(ROOT, 'tests')!r}]\n"
                f"{statement}\n"
                "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                   CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True)
        lines = result.stdout.split()
        value = f"{int(lines[-1]) / 1024:.0f}" if result.returncode == 0 and lines else "failed"
        print(f"| {name} | {value} |", flush=True)


# === JAX: XLA's plan for the step ===
def part_xla(batch):
    import ctypes

    import jax

    distiller, images, labels = ours(batch)
    distiller._symbolic_build(data_batch=(images, labels, None))  # what train_on_batch does first
    state = distiller._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                     optimizer_variables=True, metrics_variables=True,
                                     purge_model_variables=False)
    lowered = jax.jit(distiller.train_step, donate_argnums=0).lower(state, (images, labels, None))
    before = status_mb("VmHWM:")
    compiled = lowered.compile()
    after, now = status_mb("VmHWM:"), status_mb("VmRSS:")
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    trimmed = status_mb("VmRSS:")
    analysis = compiled.memory_analysis()
    mb = 2.0**20
    print(f"batch {batch}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}: MB")
    print("| arguments | outputs (aliased to arguments) | temporaries | compile: peak RSS increase "
          "| freed heap malloc_trim hands back |")
    print("|---|---|---|---|---|")
    print(f"| {analysis.argument_size_in_bytes / mb:.0f} | {analysis.output_size_in_bytes / mb:.0f}"
          f" ({analysis.alias_size_in_bytes / mb:.0f}) | {analysis.temp_size_in_bytes / mb:.0f} "
          f"| {after - before:.0f} | {now - trimmed:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["imports", "live", "teacher", "xla"], required=True)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--root", default=ROOT,
                        help="checkout whose keras_spectralkd is measured (e.g. an older commit)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "imports":
        part_imports(args.root)
        return
    if not args.child:  # in a fresh process with the backend the part needs
        env = dict(os.environ, KERAS_BACKEND="jax" if args.part == "xla" else "torch",
                   MALLOC_MMAP_THRESHOLD_="33554432", MALLOC_TRIM_THRESHOLD_="4294967296",
                   CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
        command = [sys.executable, os.path.abspath(__file__), "--child", "--part", args.part,
                   "--batch", str(args.batch), "--root", args.root]
        if args.part != "teacher":
            sys.exit(subprocess.run(command, env=env).returncode)
        print(f"batch {args.batch}: frozen CaiT-S24 forward, 8 units, MB", flush=True)
        print("| model | tensors alive at once | peak RSS increase, 3 forwards |", flush=True)
        print("|---|---|---|", flush=True)
        for model in ("timm", "ours", "keras_runner"):
            subprocess.run(command + ["--model", model], env=env)
        return
    sys.path[:0] = [args.root, os.path.dirname(os.path.abspath(__file__))]
    if args.part == "teacher":
        part_teacher(args.batch, args.model)
    else:
        {"live": part_live, "xla": part_xla}[args.part](args.batch)


if __name__ == "__main__":
    main()
