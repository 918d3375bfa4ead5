#!/usr/bin/env bash
# The whole GPU table of docs/performance.md in one run (sized for under 8 minutes on an H100 or
# H200; not yet run: no GPU was lent since it was written): the
# paper's pairs at batch 128 in bf16, the PyTorch reference in its best GPU mode (autocast bf16,
# with and without torch.compile) against ours with precision="auto" on each backend that is
# installed. Contenders share the GPU in interleaved rounds, so no process may take all its
# memory up front (JAX and TensorFlow do by default).
#
#     bash benchmarks/gpu_table.sh            # prints two markdown tables
set -uo pipefail
cd "$(dirname "$0")/.."
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_FORCE_GPU_ALLOW_GROWTH=true
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
contenders="reference@mixedbf16,reference@mixedbf16+compile"
for backend in jax torch tensorflow; do
  if python -c "import ${backend}" 2>/dev/null; then contenders+=",${backend}@auto"; fi
done
for pair in deit swin; do
  python benchmarks/distill_step.py --device gpu --pair "${pair}" --batch_sizes 128 \
      --contenders "${contenders}" --steps 5 --steps_per_call 4 --warmup 3
done
