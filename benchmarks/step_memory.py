"""Where the DeiT-Tiny <- CaiT-S24 step's peak memory comes from, phase by phase (issue 13).

One fresh process per contender (as in distill_step.py, with the same malloc settings); after
each phase it records the process's peak RSS (`ru_maxrss`) and its current RSS, in MB:

    imports   torch + timm (reference) / keras + keras_spectralkd (ours)
    student   the student built (random weights; the same for both)
    teacher   the teacher: random (`--teacher random`, timm's / `models.create`) or from a
              timm checkpoint of random weights (`--teacher checkpoint`, written once to a
              .safetensors file: timm `create_model` + `load_state_dict`, ours `from_timm`)
    compile   the optimizer and (ours) `Distiller.compile`
    step 1    the first training step (ours on JAX/TensorFlow: includes XLA's compilation)
    step 2..  the following steps

The step is distill_step.py's: soft mode, SPEC.md 4's 8 pairs, AdamW, random images, fp32.

    python benchmarks/step_memory.py --batch 16                       # every contender
    python benchmarks/step_memory.py --batch 32 --teacher checkpoint --contenders reference,torch
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDENT, TEACHER = "deit_tiny_patch16_224", "cait_s24_224"
PAIRS = list(zip([0, 1, 6, 7, 8, 9, 10, 11], [0, 1, 18, 19, 20, 21, 22, 23]))
CHECKPOINT = "/tmp/spectralkd_cait_s24_random.safetensors"


def rss():
    """(peak RSS, current RSS) of this process, MB: /proc's VmHWM and VmRSS (`ru_maxrss` would
    carry the parent's peak over into a child)."""
    with open("/proc/self/status") as status:
        values = {line.split(":")[0]: int(line.split()[1]) / 1024.0 for line in status
                  if line.startswith(("VmHWM:", "VmRSS:"))}
    return values["VmHWM"], values["VmRSS"]


def write_checkpoint(path):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(TEACHER, pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def reference(args, mark):
    import timm
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import torch_objective as ref

    torch.set_num_threads(args.threads)
    mark("imports")
    torch.manual_seed(0)
    student = timm.create_model(STUDENT, pretrained=False, drop_path_rate=0.0).train()
    mark("student")
    teacher = timm.create_model(TEACHER, pretrained=False).eval()
    if args.teacher == "checkpoint":
        from safetensors.torch import load_file

        teacher.load_state_dict(load_file(CHECKPOINT))
    for p in teacher.parameters():
        p.requires_grad_(False)
    mark("teacher")
    optimizer = torch.optim.AdamW(student.parameters(), lr=5e-4, weight_decay=0.05, eps=1e-8)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, 224, 224, generator=generator)
    labels = torch.randint(0, 1000, (args.batch,), generator=generator)
    s_units, t_units = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    mark("compile")

    def forward(model, units):
        final, maps = model.forward_intermediates(images, indices=units)
        return model.forward_head(final), maps

    for step in range(args.steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            t_logits, t_maps = forward(teacher, t_units)
        s_logits, s_maps = forward(student, s_units)
        loss = ref.objective(s_logits, t_logits, labels, s_maps, t_maps, mode="soft",
                             spectral_weight=0.2)["total"]
        loss.backward()
        optimizer.step()
        del t_logits, t_maps, s_logits, s_maps, loss
        mark(f"step {step + 1}")


def ours(args, mark):
    import keras
    import numpy as np
    from _workers import release_heap_after_jax_compiles, seed_without_tensorflow

    from keras_spectralkd import Distiller, models
    from keras_spectralkd.convert import from_timm

    if os.environ.get("SPECTRALKD_TRIM_AFTER_COMPILE") and keras.backend.backend() == "jax":
        release_heap_after_jax_compiles()
    mark("imports")
    seed_without_tensorflow(0)  # benchmarks/_workers.py
    student = models.create(STUDENT)
    mark("student")
    if args.teacher == "checkpoint":
        teacher = from_timm(TEACHER, CHECKPOINT)
    else:
        teacher = models.create(TEACHER)
    mark("teacher")
    distiller = Distiller(teacher, student, layer_pairs=PAIRS, mode="soft", spectral_weight=0.2)
    distiller.compile(optimizer=keras.optimizers.AdamW(5e-4, weight_decay=0.05, epsilon=1e-8),
                      jit_compile=keras.backend.backend() != "torch")
    rng = np.random.default_rng(0)
    images = keras.ops.convert_to_tensor(
        rng.standard_normal((args.batch, 224, 224, 3)).astype("float32"))
    labels = keras.ops.convert_to_tensor(rng.integers(0, 1000, (args.batch,)))
    mark("compile")
    for step in range(args.steps):
        distiller.train_on_batch(images, labels)
        mark(f"step {step + 1}")


def child(args):
    sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]
    marks = []

    def mark(phase):
        peak, now = rss()
        marks.append({"phase": phase, "peak": peak, "now": now})
        print(json.dumps(marks[-1]), flush=True)

    (reference if args.contender == "reference" else ours)(args, mark)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--teacher", choices=["random", "checkpoint"], default="random")
    parser.add_argument("--contenders", default="reference,tensorflow,jax,torch")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--env", action="append", default=[],
                        help="NAME=VALUE for every worker (e.g. XLA_FLAGS=...)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.teacher == "checkpoint" and not os.path.exists(CHECKPOINT):
        write_checkpoint(CHECKPOINT)
    print(f"peak RSS (MB) after each phase; {STUDENT} <- {TEACHER}, batch {args.batch}, "
          f"teacher {args.teacher}; in brackets: RSS now")
    columns, rows = None, {}
    for contender in args.contenders.split(","):
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="33554432",
                   MALLOC_TRIM_THRESHOLD_="4294967296", TF_CPP_MIN_LOG_LEVEL="3",
                   CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu",
                   OMP_NUM_THREADS=str(args.threads),
                   KERAS_BACKEND="torch" if contender == "reference" else contender)
        env.update(item.split("=", 1) for item in args.env)
        command = [sys.executable, os.path.abspath(__file__), "--child", "--contender",
                   contender, "--batch", str(args.batch), "--steps", str(args.steps),
                   "--teacher", args.teacher, "--threads", str(args.threads)]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        marks = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode:
            print(f"{contender} failed: {result.stderr.strip().splitlines()[-3:]}", flush=True)
        rows[contender] = marks
        columns = columns or [m["phase"] for m in marks]
        print(f"| {contender} | " + " | ".join(f"{m['peak']:.0f} ({m['now']:.0f})" for m in marks)
              + " |", flush=True)
    print("| contender | " + " | ".join(columns or []) + " |")


if __name__ == "__main__":
    main()
