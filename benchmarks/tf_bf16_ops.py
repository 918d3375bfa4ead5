"""Why TensorFlow gains less from bf16 than torch on a bf16 CPU: the ops of CaiT-S24's block, one
by one, at the shapes of a batch-16 step, timed in float32 and bfloat16, compiled with XLA
(`jit_compile=True`, what Keras' `jit_compile="auto"` picks on TensorFlow) and with TensorFlow's
own kernels (`jit_compile=False`: oneDNN on a CPU).

Prints one row per op: ms per call in each mode, and the bf16 / fp32 speed-up under each. The
matmuls are most of the teacher's forward (docs/performance.md), so their row decides the step.

    python benchmarks/tf_bf16_ops.py --threads 2
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# CaiT-S24 at 224 px: 196 tokens of width 384, 8 heads of 48, MLP 1536; a batch-16 step.
TOKENS, WIDTH, HEADS, HIDDEN = 196, 384, 8, 1536


def ops_of_a_block(tf, batch):
    """(name, function, input shapes): the forward ops of one CaiT block."""
    rows = batch * TOKENS
    dense = lambda x, w: tf.matmul(x, w)  # noqa: E731
    return [
        ("qkv matmul (3136x384 @ 384x1152)", dense, [(rows, WIDTH), (WIDTH, 3 * WIDTH)]),
        ("fc1 matmul (3136x384 @ 384x1536)", dense, [(rows, WIDTH), (WIDTH, HIDDEN)]),
        ("fc2 matmul (3136x1536 @ 1536x384)", dense, [(rows, HIDDEN), (HIDDEN, WIDTH)]),
        ("attention q k^T (batched)", lambda q, k: tf.matmul(q, k, transpose_b=True),
         [(batch, HEADS, TOKENS, WIDTH // HEADS)] * 2),
        ("softmax over keys", lambda a: tf.nn.softmax(a, axis=-1),
         [(batch, HEADS, TOKENS, TOKENS)]),
        ("GELU", lambda x: tf.nn.gelu(x, approximate=False), [(rows, HIDDEN)]),
        ("LayerNorm", lambda x: _layer_norm(tf, x), [(rows, WIDTH)]),
    ]


def _layer_norm(tf, x):
    mean, variance = tf.nn.moments(tf.cast(x, "float32"), axes=[-1], keepdims=True)
    return tf.cast((tf.cast(x, "float32") - mean) * tf.math.rsqrt(variance + 1e-6), x.dtype)


def time_call(function, args, repeats):
    function(*args)  # compiles
    function(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = function(*args)
        _ = out.numpy().flat[0]  # waits for the result
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from matmul_peak import cpu_summary

    model, flags = cpu_summary()
    print(f"TensorFlow {tf.__version__}, {model} ({', '.join(flags) or 'no bf16/AVX-512 flags'}), "
          f"{args.threads} threads, median of {args.repeats} calls, batch {args.batch}")
    print("| op | XLA fp32 ms | XLA bf16 ms | XLA bf16 speed-up | TF fp32 ms | TF bf16 ms "
          "| TF bf16 speed-up |")
    print("|---|---|---|---|---|---|---|")
    rng = tf.random.Generator.from_seed(0)
    for name, function, shapes in ops_of_a_block(tf, args.batch):
        row = {}
        for jit in (True, False):
            compiled = tf.function(function, jit_compile=jit)
            for dtype in ("float32", "bfloat16"):
                inputs = [tf.cast(rng.normal(shape), dtype) for shape in shapes]
                row[jit, dtype] = time_call(compiled, inputs, args.repeats)
        cells = []
        for jit in (True, False):
            fp32, bf16 = row[jit, "float32"], row[jit, "bfloat16"]
            cells += [f"{fp32:.2f}", f"{bf16:.2f}", f"{fp32 / bf16:.2f}x"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
