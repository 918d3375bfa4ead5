"""Where the time of one compiled JAX training step goes on XLA:CPU, op by op.

The mini CaiT teacher trained alone (cross-entropy, AdamW: `distill_step.py --pair mini --task
teacher_ce`), our Distiller on the JAX backend: its `train_step` is compiled once, run a few
times under `jax.profiler` (a Perfetto trace; XLA:CPU records every executed HLO op), and the
ops are summed per step by kind (matmuls, layout copies/transposes, fused elementwise ops, ...)
and listed with the Keras layer and primitive they come from (the HLO's `op_name` metadata).

    KERAS_BACKEND=jax python benchmarks/profile_xla_step.py --threads 2

Op times are wall times of the ops as XLA runs them (with 2 threads some ops overlap, so their
sum can exceed the step's wall time); compare kinds, not the total.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("KERAS_BACKEND", "jax")

from distill_step import SIZES, model_kwargs  # noqa: E402

KINDS = (  # (kind, regex on the HLO op name), first match wins
    ("matmul (XNNPACK/YNNPACK fusion)", r"^(ynn|xnn)_fusion"),
    ("matmul (dot)", r"^dot"),
    ("layout copy / transpose", r"copy|transpose"),
    ("reduction", r"reduce"),
    ("elementwise fusion", r"fusion"),
)


def kind_of(name):
    for kind, pattern in KINDS:
        if re.search(pattern, name):
            return kind
    return "other"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax
    import keras
    import numpy as np

    from keras_spectralkd import Distiller, models

    if keras.backend.backend() != "jax":
        raise SystemExit("profile_xla_step.py profiles the JAX backend: KERAS_BACKEND=jax")
    side, classes = SIZES["mini"]["common"]["image_size"], SIZES["mini"]["common"]["num_classes"]
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, side, side, 3)).astype("float32")
    labels = rng.integers(0, classes, (args.batch,)).astype("int32")
    teacher = models.create("cait_s24_224", **model_kwargs("mini", "teacher"))
    distiller = Distiller(None, teacher, mode="none")
    distiller.compile(optimizer=keras.optimizers.AdamW(5e-4, weight_decay=0.05, epsilon=1e-8),
                      jit_compile=True)
    distiller.train_on_batch(images[:2], labels[:2])  # builds the optimizer and metrics
    state = distiller._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                     optimizer_variables=True, metrics_variables=True)
    compiled = jax.jit(distiller.train_step).lower(state, (images, labels)).compile()
    sources = {}
    for line in compiled.as_text().splitlines():
        found = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) .*?op_name=\"([^\"]+)\"", line)
        if found:
            sources.setdefault(found.group(1), (found.group(2), found.group(3)))
    for _ in range(2):
        jax.block_until_ready(compiled(state, (images, labels)))
    trace_dir = tempfile.mkdtemp(prefix="xla_profile_")
    started = time.perf_counter()
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(args.steps):
        jax.block_until_ready(compiled(state, (images, labels)))
    jax.profiler.stop_trace()
    wall = (time.perf_counter() - started) / args.steps
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    per_op = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and (event.get("args") or {}).get("hlo_op"):
            per_op[event["name"]] += event.get("dur", 0) / 1e3 / args.steps
    per_kind, count = collections.Counter(), collections.Counter()
    for name, ms in per_op.items():
        per_kind[kind_of(name)] += ms
        count[kind_of(name)] += 1
    total = sum(per_kind.values())
    print(f"\nJAX {jax.__version__}, XLA:CPU, {args.threads} thread(s), batch {args.batch}: "
          f"step {wall * 1e3:.0f} ms wall (under the profiler), ops {total:.0f} ms summed")
    print("| op kind | ms per step | share | ops |")
    print("|---|---|---|---|")
    for kind, ms in per_kind.most_common():
        print(f"| {kind} | {ms:.1f} | {100 * ms / total:.1f}% | {count[kind]} |")
    print(f"\nTop {args.top} ops")
    print("| ms | op | shape | from |")
    print("|---|---|---|---|")
    for name, ms in per_op.most_common(args.top):
        shape, source = sources.get(name, ("?", "?"))
        source = source.replace("jit(train_step)/", "")
        print(f"| {ms:.1f} | {name} | {shape} | {source} |")


if __name__ == "__main__":
    main()
