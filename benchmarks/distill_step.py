"""One full SpectralKD training step, timed side by side: the PyTorch reference vs ours.

Contenders (each in its own process, since a Keras backend is fixed per process; timed in
interleaved rounds, `--steps_per_call` steps each per round, see benchmarks/_workers.py; ours
through `fit` by default, as users train):
- `reference`: timm models + SPEC.md 3's objective in PyTorch (tests/torch_objective.py),
  AdamW, the teacher under `torch.no_grad()` (as the public code);
- `tensorflow`: our Distiller, `jit_compile=True` (XLA);
- `jax`: our Distiller (always jitted);
- `torch`: our Distiller on the Keras torch backend (eager).

Student in training mode with AdamW, teacher in inference, SPEC.md 4's pairs, soft mode, random
weights and images (the speed does not depend on the values; seeded, so a contender's first loss
is comparable across dtypes). Prints median s/step over the rounds, images/s, the ratio to the
reference, the peak RSS of the process during the steps, the spectral loss's share of the step
(its forward + backward timed alone on maps of the same shapes) and the first step's loss.
`--breakdown` adds where the time goes: the teacher's forward, the step without KD (student
forward/backward + AdamW) and AdamW alone, each timed alone.

Run (as in docs/performance.md):

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 \
        python benchmarks/distill_step.py --pair deit --batch_sizes 16,32

    python benchmarks/distill_step.py --pair swin --batch_sizes 16
    python benchmarks/distill_step.py --dtype mixed_bfloat16 --contenders reference,jax,tensorflow
    # precision="auto" (keras_spectralkd/precision.py) against the reference in float32 and under bf16
    # autocast, in one interleaved run:
    python benchmarks/distill_step.py \
        --contenders reference,reference@mixedbf16,torch@auto,tensorflow@auto,jax@auto
    python benchmarks/distill_step.py --device gpu --batch_sizes 128 --dtype mixed_bfloat16
"""

import argparse
import os
import statistics
import sys
import time

PAIRS = {
    # student, teacher, layer pairs (student, teacher), spectral weight: SPEC.md 4.
    "deit": (
        "deit_tiny_patch16_224",
        "cait_s24_224",
        list(zip([0, 1, 6, 7, 8, 9, 10, 11], [0, 1, 18, 19, 20, 21, 22, 23])),
        0.2,
    ),
    "swin": (
        "swin_tiny_patch4_window7_224",
        "swin_small_patch4_window7_224",
        [(0, 0), (1, 1), (2, 2), (3, 3)],
        0.05,
    ),
    # Demo- and study-sized (issue 13 item 1): a CaiT teacher of dim 128 / depth 8 and a ViT
    # student of dim 64 / depth 4 on 28 px images, 4 px patches (a 7x7 grid), 10 classes.
    "mini": (
        "deit_tiny_patch16_224",
        "cait_s24_224",
        [(0, 0), (1, 1), (2, 6), (3, 7)],
        0.2,
    ),
}
# Constructor arguments beside the preset's (the same for timm and ours), per pair.
SIZES = {
    "mini": {
        "common": dict(image_size=28, patch_size=4, num_classes=10),
        "student": dict(embed_dim=64, depth=4, num_heads=2),
        "teacher": dict(embed_dim=128, depth=8, num_heads=4, init_values=0.1),
    },
}
DEFAULT_BATCH_SIZES = {"mini": "128"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The PyTorch reference objective is the tests' oracle: tests/torch_objective.py.
TESTS = os.path.join(ROOT, "tests")


def model_kwargs(pair, role, timm_names=False):
    """Constructor arguments of `role` ("student"/"teacher") for `pair` (empty: the preset)."""
    sizes = SIZES.get(pair)
    if not sizes:
        return {}
    kwargs = {**sizes["common"], **sizes[role]}
    if timm_names:
        kwargs["img_size"] = kwargs.pop("image_size")
    return kwargs


def image_shape(pair):
    """(side, num_classes) of the pair's inputs."""
    common = SIZES.get(pair, {}).get("common", {})
    return common.get("image_size", 224), common.get("num_classes", 1000)


def peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(step, warmup, steps, sync=lambda: None):
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# === The PyTorch reference ===
def run_reference(args):
    import timm
    import torch

    import torch_objective as ref  # tests/torch_objective.py (TESTS is on sys.path)

    device = "cuda" if args.device == "gpu" else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads)
    student_name, teacher_name, pairs, weight = PAIRS[args.pair]
    side, num_classes = image_shape(args.pair)
    torch.manual_seed(0)  # the same weights in every run: first losses compare across dtypes
    # drop-path 0 as the paper's recipe (timm's Swin defaults to 0.1), like ours.
    student = timm.create_model(student_name, pretrained=False, drop_path_rate=0.0,
                                **model_kwargs(args.pair, "student", True)).to(device).train()
    teacher = timm.create_model(teacher_name, pretrained=False,
                                **model_kwargs(args.pair, "teacher", True)).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, side, side, generator=generator).to(device)
    labels = torch.randint(0, num_classes, (args.batch,), generator=generator).to(device)
    if args.dtype == "auto":
        raise SystemExit("the reference has no precision='auto': time it as `reference` "
                         "(float32) and `reference@mixedbf16` (bf16 autocast)")
    bf16 = args.dtype == "mixed_bfloat16"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if args.task == "teacher_ce":
        return _reference_teacher_ce(args, teacher.train(), images, labels, device, bf16, sync)
    for p in teacher.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=5e-4, weight_decay=0.05, eps=1e-8)
    s_units, t_units = [p[0] for p in pairs], [p[1] for p in pairs]

    def forward(model, units):
        # timm's default output_fmt is NCHW for every family, the reference loss's layout.
        final, maps = model.forward_intermediates(images, indices=units)
        return model.forward_head(final), maps

    def losses():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                t_logits, t_maps = forward(teacher, t_units)
            s_logits, s_maps = forward(student, s_units)
        terms = ref.objective(
            s_logits.float(), t_logits.float(), labels, [m.float() for m in s_maps],
            [m.float() for m in t_maps], mode="soft", spectral_weight=weight,
        )
        return terms["total"]

    if args.torch_compile:  # the reference in its best GPU mode: forward + objective compiled
        losses = torch.compile(losses)
    step, first_loss = _torch_training_step(optimizer, losses, sync, args.warmup)
    step = _repeated(step, args.steps_per_call)

    def extras():
        result = {"peak_rss_mb": peak_rss_mb()}  # the steps' peak, before the parts below
        # The spectral loss alone, forward + backward, on maps of the same shapes.
        with torch.no_grad():
            _, s_maps = forward(student, s_units)
            _, t_maps = forward(teacher, t_units)
        s_maps = [m.float().detach().requires_grad_(True) for m in s_maps]
        t_maps = [m.float().detach() for m in t_maps]

        def spectral_step():
            total, _ = ref.spectral_alignment_loss(s_maps, t_maps)
            total.backward()

        result["spectral_seconds"] = timed(spectral_step, 2, max(args.steps, 5), sync)
        if args.breakdown:
            result.update(_reference_breakdown(args, teacher, student, optimizer, images, labels,
                                               forward, t_units, bf16, device, sync))
        return result

    return step, {"loss": first_loss}, extras


def _reference_teacher_ce(args, model, images, labels, device, bf16, sync):
    """The teacher trained alone with cross-entropy (label smoothing 0.1) and AdamW."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05, eps=1e-8)

    def loss():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        return F.cross_entropy(logits.float(), labels, label_smoothing=0.1)

    step, first_loss = _torch_training_step(optimizer, loss, sync, args.warmup)
    step = _repeated(step, args.steps_per_call)
    return step, {"loss": first_loss}, lambda: {"peak_rss_mb": peak_rss_mb()}


def _repeated(step, times):
    """One timed call = `times` steps (the reference's side of --steps_per_call)."""

    def steps():
        for _ in range(times):
            step()

    return steps


def _torch_training_step(optimizer, loss_fn, sync, warmup):
    """(step, first loss): `step()` = zero grads, loss_fn().backward(), optimizer.step(); run
    `warmup` times here (the first run's loss is returned)."""

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        sync()
        return loss

    first_loss = float(step())
    for _ in range(warmup - 1):
        step()
    return step, first_loss


def _reference_breakdown(args, teacher, student, optimizer, images, labels, forward, t_units,
                         bf16, device, sync):
    """The parts of the step, each timed alone (same definitions as `_keras_breakdown`)."""
    import torch
    import torch.nn.functional as F

    def teacher_forward():
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            forward(teacher, t_units)

    def student_step():  # forward + cross-entropy + backward + AdamW: the step without KD
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = student(images)
        F.cross_entropy(logits.float(), labels).backward()
        optimizer.step()

    def optimizer_step():
        optimizer.step()

    return {
        "teacher_seconds": timed(teacher_forward, 1, args.steps, sync),
        "student_seconds": timed(student_step, 1, args.steps, sync),
        "optimizer_seconds": timed(optimizer_step, 1, args.steps, sync),
    }


# === Ours ===
def run_keras(args):
    import keras
    import numpy as np
    from _workers import release_heap_after_jax_compiles, seed_without_tensorflow

    from keras_spectralkd import Distiller, models, spectral

    backend = keras.backend.backend()
    if os.environ.get("SPECTRALKD_TRIM_AFTER_COMPILE") and backend == "jax":
        release_heap_after_jax_compiles()
    chosen = None
    if args.dtype == "auto":  # what a run with precision="auto" takes on this machine
        from keras_spectralkd import precision as precision_lib

        choice = precision_lib.choose("auto", ["gpu"] if args.device == "gpu" else [],
                                      teacher=args.task == "distill", backend=backend)
        args.dtype, args.teacher_dtype, chosen = choice.policy, choice.teacher_dtype, choice
        args.no_jit = args.no_jit or choice.jit_compile is False
    if args.dtype != "float32":
        keras.config.set_dtype_policy(args.dtype)
    student_name, teacher_name, pairs, weight = PAIRS[args.pair]
    side, num_classes = image_shape(args.pair)
    # Seeded as keras.utils.set_random_seed(0) seeds, without importing TensorFlow under JAX or
    # torch (~500 MB of RSS for tf.data's seed, which this step does not read).
    seed_without_tensorflow(0)
    student = models.create(student_name, **model_kwargs(args.pair, "student"))
    teacher = models.create(teacher_name, **model_kwargs(args.pair, "teacher"))
    if args.task == "teacher_ce":  # the teacher trained alone: cross-entropy, AdamW
        distiller = Distiller(None, teacher, mode="none")
    else:
        distiller = Distiller(teacher, student, layer_pairs=pairs, mode="soft",
                              spectral_weight=weight, **teacher_dtype_kwargs(args))
        # As the runner: a low-precision copy replaces the float32 original, which is freed.
        teacher = distiller.teacher
    optimizer = keras.optimizers.AdamW(5e-4, weight_decay=0.05, epsilon=1e-8)
    if args.dtype == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    distiller.compile(optimizer=optimizer, jit_compile=compiled(args, backend))
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, side, side, 3)).astype("float32")
    labels = rng.integers(0, num_classes, (args.batch,))
    # On the device once, like the reference's batch (no host-to-device copy in the step).
    images, labels = keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(labels)

    def step():
        return distiller.train_on_batch(images, labels, return_dict=True)["loss"]

    first_loss = float(step())  # compiles; the loss of the initial weights on this batch
    for _ in range(args.warmup - 1):
        step()
    if args.loop == "fit":
        # What users run: `fit`, which keeps the (JAX) state inside its loop between steps;
        # `train_on_batch` pulls and re-assigns every variable around each step on JAX. The same
        # batch `steps_per_call` times, as numpy arrays (no tf.data: no TensorFlow import).
        tiled = [np.concatenate([keras.ops.convert_to_numpy(t)] * args.steps_per_call)
                 for t in (images, labels)]

        from _workers import batch_clock

        clock = batch_clock()

        def step():
            # Timed from the first step's start to the last step's end: the steps as an epoch
            # of many steps runs them, without `fit`'s start-up (data adapter, callbacks) and
            # wind-down, which an epoch pays once and which vary by up to seconds between
            # calls on TensorFlow.
            clock.clear()
            distiller.fit(*tiled, batch_size=args.batch, epochs=1, shuffle=False, verbose=0,
                          callbacks=[clock])
            return {"seconds": clock.ends[-1] - clock.begins[0]}

        step()

    def extras():
        result = {"peak_rss_mb": peak_rss_mb()}  # the steps' peak, before the parts below
        if args.task == "teacher_ce":
            return result
        # The spectral loss alone, forward + backward, jitted like the step.
        s_units, t_units = [p[0] for p in pairs], [p[1] for p in pairs]
        _, s_maps = student.forward_intermediates(images, s_units)
        _, t_maps = teacher.forward_intermediates(images, t_units)
        s_maps = [keras.ops.convert_to_numpy(keras.ops.cast(m, "float32")) for m in s_maps]
        t_maps = [keras.ops.convert_to_numpy(keras.ops.cast(m, "float32")) for m in t_maps]
        spectral_step = _spectral_value_and_grad(
            backend, spectral.spectral_alignment_loss, s_maps, t_maps
        )
        result["spectral_seconds"] = timed(spectral_step, 2, max(args.steps, 5))
        if args.breakdown:
            result.update(_keras_breakdown(args, backend, teacher, student, distiller, images,
                                           labels, t_units))
        return result

    info = {"loss": first_loss}
    if chosen:
        info["precision"] = chosen.describe()
    return step, info, extras


def compiled(args, backend):
    """Ours: the step's `jit_compile` (XLA on TensorFlow and JAX unless `--no_jit`;
    torch.compile on torch with `--torch_compile`)."""
    return (backend != "torch" or args.torch_compile) and not args.no_jit


def teacher_dtype_kwargs(args):
    """`teacher_dtype=...` for the Distiller when asked for (older Distillers lack it)."""
    return {"teacher_dtype": args.teacher_dtype} if args.teacher_dtype else {}


def _keras_breakdown(args, backend, teacher, student, distiller, images, labels, t_units):
    """The parts of the step, each timed alone, compiled as the step is."""
    import keras

    from keras_spectralkd import Distiller

    jit = compiled(args, backend)
    # Teacher inference: a model with the teacher's logits and the paired maps.
    inputs = keras.Input(tuple(images.shape[1:]))
    teacher_model = keras.Model(inputs, teacher.forward_intermediates(inputs, t_units))
    teacher_model.compile(jit_compile=jit)

    # The step without KD: student forward + cross-entropy + backward + AdamW.
    student_only = Distiller(teacher, student, layer_pairs=None, mode="none")
    student_only.compile(
        optimizer=keras.optimizers.AdamW(5e-4, weight_decay=0.05, epsilon=1e-8), jit_compile=jit
    )

    return {
        "teacher_seconds": timed(lambda: teacher_model.predict_on_batch(images), 1, args.steps),
        "student_seconds": timed(lambda: student_only.train_on_batch(images, labels), 1, args.steps),
        "optimizer_seconds": timed(_optimizer_step(backend, distiller.optimizer, student), 1,
                                   args.steps),
    }


def _optimizer_step(backend, optimizer, student):
    """One AdamW update of the student's weights with fixed gradients, compiled as in the step."""
    import keras
    import numpy as np

    variables = student.trainable_variables
    grads = [keras.ops.convert_to_tensor(np.full(v.shape, 1e-3, "float32")) for v in variables]
    if backend == "jax":
        import jax

        apply = jax.jit(optimizer.stateless_apply)
        state = {"opt": [v.value for v in optimizer.variables],
                 "weights": [v.value for v in variables]}

        def step():
            state["weights"], state["opt"] = apply(state["opt"], grads, state["weights"])
            jax.block_until_ready(state["weights"])

        return step
    if backend == "tensorflow":
        import tensorflow as tf

        apply = tf.function(lambda: optimizer.apply(grads, variables), jit_compile=True)
        return lambda: apply()
    return lambda: optimizer.apply(grads, variables)


def _spectral_value_and_grad(backend, loss_fn, s_maps, t_maps):
    if backend == "tensorflow":
        import tensorflow as tf

        s_vars = [tf.Variable(m) for m in s_maps]
        t_consts = [tf.constant(m) for m in t_maps]

        @tf.function(jit_compile=True)
        def grads():
            with tf.GradientTape() as tape:
                loss = loss_fn(s_vars, t_consts)
            return tape.gradient(loss, s_vars)

        return lambda: [g.numpy() for g in grads()][:1]
    if backend == "jax":
        import jax

        fn = jax.jit(jax.grad(lambda s, t: loss_fn(s, t)))
        s_arrays, t_arrays = [jax.numpy.asarray(m) for m in s_maps], [jax.numpy.asarray(m) for m in t_maps]
        return lambda: jax.block_until_ready(fn(s_arrays, t_arrays))
    import keras
    import torch

    s_tensors = [keras.ops.convert_to_tensor(m).requires_grad_(True) for m in s_maps]
    t_tensors = [keras.ops.convert_to_tensor(m) for m in t_maps]

    def step():
        loss_fn(s_tensors, t_tensors).backward()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return step


# === Driver ===
def child(args):
    sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__)), TESTS]
    from _workers import serve

    reference = args.contender.partition("@")[0] == "reference"
    serve(lambda: run_reference(args) if reference else run_keras(args))


# Variants of a contender, `backend@variant` in --contenders (e.g. "jax@onednn,jax"; several
# joined by "+"): XLA:CPU flags (for jax and tensorflow), a low-precision teacher (ours),
# `nojit`: TensorFlow without XLA, or `compile`: `torch.compile` (the reference's loss and
# backward; ours on torch: jit_compile=True).
VARIANT_ENV = {
    "onednn": {"XLA_FLAGS": "--xla_cpu_use_onednn=true"},
    "xnnpack": {"XLA_FLAGS": "--xla_cpu_use_xnnpack=true"},
    "noparallel": {"XLA_FLAGS": "--xla_cpu_parallel_codegen_split_count=1"},
    # Memory (docs/performance.md): XLA:CPU's memory-optimised schedule instead of the
    # concurrency-optimised one, and (JAX) the compiler's freed heap handed back to the OS
    # after each compilation, before the program allocates its buffers.
    "lowmem": {"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=false",
               "SPECTRALKD_TRIM_AFTER_COMPILE": "1"},
}
VARIANT_TEACHER_DTYPE = {"bf16teacher": "bfloat16", "f16teacher": "float16"}
# ... or a contender's own --dtype, so that both precisions time in one interleaved run
# (`reference,reference@mixedbf16`: the reference in float32 and under bf16 autocast; `torch@auto`:
# ours with what precision="auto" chooses on this machine, `keras_spectralkd/precision.py`).
VARIANT_DTYPE = {"mixedbf16": "mixed_bfloat16", "auto": "auto"}


def worker_spec(args, contender, batch):
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "33554432")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "4294967296")
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    backend, _, variant = contender.partition("@")
    variants = variant.split("+") if variant else []  # several at once: "tensorflow@auto+nojit"
    known = (sorted(VARIANT_ENV) + sorted(VARIANT_TEACHER_DTYPE) + sorted(VARIANT_DTYPE)
             + ["nojit", "compile"])
    for name in variants:
        if name not in known:
            raise SystemExit(f"unknown variant {name!r} in {contender!r}; expected one of "
                             f"{known}")
        env.update(VARIANT_ENV.get(name, {}))
    dtype = next((VARIANT_DTYPE[v] for v in variants if v in VARIANT_DTYPE), args.dtype)
    teacher_dtype = next((VARIANT_TEACHER_DTYPE[v] for v in variants
                          if v in VARIANT_TEACHER_DTYPE), args.teacher_dtype)
    # The reference needs no Keras; torch keeps anything that imports it from loading TensorFlow.
    env["KERAS_BACKEND"] = "torch" if backend == "reference" else backend
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["JAX_PLATFORMS"] = "cpu"
        env["OMP_NUM_THREADS"] = str(args.threads)
    command = [
        sys.executable, os.path.abspath(__file__), "--child", "--contender", contender,
        "--batch", str(batch), "--pair", args.pair, "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--dtype", dtype,
        "--device", args.device,
        "--threads", str(args.threads), "--task", args.task, "--loop", args.loop,
        "--steps_per_call", str(args.steps_per_call),
    ]
    command += ["--teacher_dtype", teacher_dtype] if teacher_dtype else []
    command += ["--no_jit"] if "nojit" in variants else []
    command += ["--torch_compile"] if args.torch_compile or "compile" in variants else []
    command += ["--breakdown"] if args.breakdown else []
    return contender, command, env


def parent(args):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _workers import interleave, start_all

    def log(message):
        print(message, file=sys.stderr, flush=True)

    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        contenders = args.contenders.split(",")
        log(f"=== {args.pair}, batch {batch}, {args.dtype} ===")
        workers = start_all([worker_spec(args, c, batch) for c in contenders], log=log)
        try:
            interleave(workers, args.steps, log=log)
            results = {}
            for worker in workers:
                log(f"[{worker.name}] spectral loss alone" + (", breakdown" if args.breakdown else ""))
                results[worker.name] = {"seconds": worker.median / args.steps_per_call,
                                        **worker.info, **worker.extras()}
        finally:
            for worker in workers:
                worker.close()
        rows += [(batch, c, results.get(c)) for c in contenders]
    print_table(args, rows)


def print_table(args, rows):
    student, teacher, pairs, _ = PAIRS[args.pair]
    what = (f"SpectralKD training step: {student} <- {teacher}, {len(pairs)} pairs, soft mode"
            if args.task == "distill" else f"Teacher-only cross-entropy step: {teacher}")
    sizes = SIZES.get(args.pair)
    if sizes:
        what += f" ({args.pair}: teacher {sizes['teacher']}, student {sizes['student']}, {sizes['common']})"
    if args.teacher_dtype:
        what += f", ours with teacher_dtype={args.teacher_dtype}"
    print(f"\n{what}, "
          f"{args.dtype}, {args.device}, {args.threads} threads, median of {args.steps} "
          f"interleaved rounds of {args.steps_per_call} step(s) (ours through "
          f"`{args.loop}`) after {args.warmup} warm-up steps")
    # Speed ratios against each reference that ran: float32, and its bf16 autocast mode.
    baselines = [c for c in ("reference", "reference@mixedbf16")
                 if any(name == c and r for _, name, r in rows)] or ["reference"]
    header = ("| batch | contender | s/step | img/s | "
              + "".join(f"vs {c} | " for c in baselines)
              + "peak RSS (MB) | spectral share | first loss |")
    print(header)
    print("|" + "---|" * (7 + len(baselines)))
    for batch, contender, result in rows:
        if result is None:
            print(f"| {batch} | {contender} | failed |" + " |" * (4 + len(baselines)))
            continue
        ips = batch / result["seconds"]
        ratios = []
        for baseline in baselines:
            base = next((r for b, c, r in rows if b == batch and c == baseline and r), None)
            ratios.append(f"{base['seconds'] / result['seconds']:.2f}x" if base else "")
        share = ""
        if "spectral_seconds" in result:
            share = f"{100.0 * result['spectral_seconds'] / result['seconds']:.1f}%"
        print(f"| {batch} | {contender} | {result['seconds']:.3f} | {ips:.2f} | "
              + "".join(f"{r} | " for r in ratios)
              + f"{result['peak_rss_mb']:.0f} | {share} | {result['loss']:.5f} |")
    for batch, contender, result in rows:
        if result and "precision" in result:
            print(f"{contender} (batch {batch}) ran precision=\"auto\": {result['precision']}")
    if args.breakdown:
        print_breakdown(rows)


def print_breakdown(rows):
    print("\nWhere the time goes (s; each part timed alone; KD overhead = step - teacher - "
          "step without KD)")
    print("| batch | contender | step | teacher forward | step without KD | of which AdamW "
          "| spectral fwd+bwd | KD overhead |")
    print("|" + "---|" * 8)
    for batch, contender, result in rows:
        if not result or "teacher_seconds" not in result:
            continue
        rest = result["seconds"] - result["teacher_seconds"] - result["student_seconds"]
        print(f"| {batch} | {contender} | {result['seconds']:.3f} | {result['teacher_seconds']:.3f} "
              f"| {result['student_seconds']:.3f} | {result['optimizer_seconds']:.3f} "
              f"| {result['spectral_seconds']:.3f} | {rest:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", choices=sorted(PAIRS), default="deit")
    parser.add_argument("--batch_sizes", default=None,
                        help="comma-separated; default 128 for --pair mini, else 16,32")
    parser.add_argument("--task", default="distill", choices=["distill", "teacher_ce"],
                        help="distill: the SpectralKD step; teacher_ce: the teacher trained "
                             "alone with cross-entropy")
    parser.add_argument("--teacher_dtype", default=None, choices=["bfloat16", "float16"],
                        help="ours: the Distiller's teacher_dtype (the frozen teacher's compute "
                             "dtype)")
    parser.add_argument("--contenders", default="reference,tensorflow,jax,torch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--loop", default="fit", choices=["fit", "train_on_batch"],
                        help="ours: time steps through `fit` (what users run; the default) or "
                             "`train_on_batch` (adds a per-call state round trip on JAX)")
    parser.add_argument("--steps_per_call", type=int, default=None,
                        help="steps per timed call, for every contender (default: 4 with "
                             "--loop fit, 1 with train_on_batch); the table shows s per step")
    parser.add_argument("--dtype", default="float32",
                        choices=["float32", "mixed_bfloat16", "mixed_float16", "auto"],
                        help="auto (ours only): what precision=\"auto\" chooses on this "
                             "machine; for a contender alone, `backend@auto` in --contenders")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--torch_compile", action="store_true",
                        help="torch.compile: the reference's forward and objective; ours on "
                             "the Keras torch backend: jit_compile=True; `backend@compile` for "
                             "one contender")
    parser.add_argument("--no_jit", action="store_true",
                        help="ours on TensorFlow: jit_compile=False (TensorFlow's own kernels, "
                             "oneDNN on a CPU, instead of XLA); `tensorflow@nojit` for one "
                             "contender")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the parts alone: teacher forward, the step without KD "
                             "(student forward/backward + AdamW), AdamW alone")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_sizes is None:
        args.batch_sizes = DEFAULT_BATCH_SIZES.get(args.pair, "16,32")
    if args.steps_per_call is None:
        args.steps_per_call = 4 if args.loop == "fit" else 1
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
