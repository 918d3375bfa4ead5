"""What this machine's matmuls deliver, fp32 vs bf16, per framework: the ceiling of every step.

A SpectralKD step is ~26 GFLOP per 224x224 image (teacher CaiT-S24 forward 18.7, DeiT-Tiny
forward 2.5 and backward 5), nearly all of it matmuls; so a step can run no faster than
26 GFLOP x batch / (this table's GFLOP/s). Whether mixed bf16 can pay off on a CPU is decided here
too: bf16 only helps where the CPU has bf16 matmul units (AVX512-BF16, AMX); elsewhere the
frameworks either upcast to fp32 (XLA) or fall back to slow reference kernels (PyTorch).

    python benchmarks/matmul_peak.py --n 512    # quick: PyTorch's bf16 fallback is very slow here
    python benchmarks/matmul_peak.py --n 2048 --threads 1

Each framework runs in its own process (a Keras backend and thread pools are per process).
"""

import argparse
import json
import os
import subprocess
import sys
import time

FRAMEWORKS = ("torch", "jax", "tensorflow")


def cpu_summary():
    """The CPU's model name and whether it has bf16 matmul instructions."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    bf16 = sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f"))
    return model, bf16


def measure(framework, n, dtype, repeats):
    """GFLOP/s of an n x n @ n x n product: the best of `repeats` timings after one warm-up."""
    if framework == "torch":
        import torch

        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        a, b = torch.randn(n, n, dtype=torch_dtype), torch.randn(n, n, dtype=torch_dtype)

        def run():
            return a @ b

    elif framework == "jax":
        import jax
        import jax.numpy as jnp

        a = jnp.ones((n, n), dtype)
        product = jax.jit(lambda x, y: x @ y)

        def run():
            return product(a, a).block_until_ready()

    else:
        import tensorflow as tf

        a = tf.ones((n, n), dtype)
        product = tf.function(lambda x, y: tf.matmul(x, y), jit_compile=False)

        def run():
            return product(a, a).numpy()

    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def child(args):
    results = {dtype: measure(args.framework, args.n, dtype, args.repeats)
               for dtype in ("float32", "bfloat16")}
    print("RESULT " + json.dumps(results))


def parent(args):
    model, bf16_flags = cpu_summary()
    print(f"CPU: {model}; bf16/AVX-512 flags: {', '.join(bf16_flags) or 'none'}; "
          f"{args.threads} threads; n = {args.n}")
    print("| framework | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 |")
    print("|---|---|---|---|")
    for framework in FRAMEWORKS:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TF_CPP_MIN_LOG_LEVEL="3",
                   JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
        command = [sys.executable, os.path.abspath(__file__), "--child", framework,
                   "--n", str(args.n), "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"| {framework} | failed: {done.stderr.strip().splitlines()[-1:]} | | |")
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        fp32, bf16 = result["float32"], result["bfloat16"]
        print(f"| {framework} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--child", choices=FRAMEWORKS, dest="framework", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.framework:
        if args.framework == "torch":
            sys.modules.setdefault("triton", None)  # triton after TensorFlow segfaults
            import torch

            torch.set_num_threads(args.threads)
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
