"""What a run computes in: `precision="auto"` decided per machine, and why.

`choose(precision, gpus, backend=...)` returns a `Precision`: the global Keras dtype policy (the
student's, and the teacher's unless `teacher_dtype` is set), the frozen teacher's own dtype
(`Distiller(teacher_dtype=...)`), whether to compile the step with XLA where that matters, and
a sentence saying why. "auto" is:

- a GPU: `mixed_bfloat16` for both models (bf16 compute, float32 weights);
- a CPU with bf16 matmul units (the `avx512_bf16` or `amx_bf16` flag in /proc/cpuinfo): the
  frozen teacher stored and run in `bfloat16` (its forward is most of a SpectralKD step) and
  the student in `mixed_bfloat16`, the fastest of the student precisions measured on every
  backend (docs/performance.md, "Precision on a CPU"); on TensorFlow, the step without XLA
  (`jit_compile=False`), since XLA:CPU's bf16 kernels are slower than TensorFlow's own
  (oneDNN) ones;
- any other CPU: `float32` (bf16 there is emulated, no faster or much slower).

The spectral loss is float32 in every case (`spectral.py` casts the maps before the FFT).
`SPECTRALKD_CPU_BF16=1` / `=0` overrides the CPU detection (tests; a virtual machine that hides
flags its CPU has).
"""

import dataclasses
import os

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_BF16_ENV = "SPECTRALKD_CPU_BF16"
# The student's policy on a bf16 CPU (accuracy: tests/test_auto_precision.py).
CPU_BF16_STUDENT_POLICY = "mixed_bfloat16"
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class Precision:
    """A run's precision.

    Args:
        policy: the global Keras dtype policy ("float32", "mixed_bfloat16", "mixed_float16").
        teacher_dtype: the frozen teacher's dtype when it differs from the policy's ("bfloat16"),
            else None.
        reason: why, for the run's first log lines.
        jit_compile: False where the step should not be compiled with XLA (TensorFlow on a
            bf16 CPU), else None: the run's own setting.
    """

    policy: str
    teacher_dtype: str = None
    reason: str = ""
    jit_compile: bool = None

    def describe(self):
        teacher = f", frozen teacher in {self.teacher_dtype}" if self.teacher_dtype else ""
        xla = ", step without XLA" if self.jit_compile is False else ""
        return f"{self.policy}{teacher}{xla}; {self.reason}"

    def to_dict(self):
        return {"precision": self.policy, "teacher_dtype": self.teacher_dtype,
                "precision_reason": self.reason}


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (the first processor's `flags` line); empty where there is no
    such file (not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == "flags":
                    return set(value.split())
    except OSError:
        pass
    return set()


def cpu_bf16(path="/proc/cpuinfo"):
    """`(has_bf16, why)`: whether the CPU has bf16 matmul units, from `SPECTRALKD_CPU_BF16` if
    set, else from its flags.

    Raises:
        ValueError: `SPECTRALKD_CPU_BF16` is set to something other than 1/0 (true/false...).
    """
    override = os.environ.get(CPU_BF16_ENV)
    if override is not None:
        value = override.strip().lower()
        if value not in _ON + _OFF:
            raise ValueError(f"{CPU_BF16_ENV} must be 1 or 0 (true/false, yes/no, on/off); "
                             f"got {override!r}.")
        return value in _ON, f"{CPU_BF16_ENV}={override}"
    seen = sorted(set(BF16_CPU_FLAGS) & cpu_flags(path))
    if seen:
        return True, "CPU flags " + ", ".join(seen)
    return False, "no " + "/".join(BF16_CPU_FLAGS) + " in the CPU flags"


def choose(precision, gpus, teacher=True, teacher_rebuilds=True, backend=None,
           cpuinfo="/proc/cpuinfo"):
    """The `Precision` of `precision` ("auto" or a Keras policy name) on a machine with `gpus`
    (the accelerators the backend sees; empty on a CPU), for a run with a frozen teacher or
    without one (`teacher=False`: mode none), on Keras `backend` (default: the current one).
    `teacher_rebuilds=False`: a teacher that cannot be rebuilt under another dtype (a saved
    Keras model without a top-level `dtype` in its config; `_low_precision.in_dtype`) stays as
    it is."""
    if precision != "auto":
        return Precision(precision, None, "as set")
    if gpus:
        return Precision("mixed_bfloat16", None, f"auto: {len(gpus)} GPU(s)")
    has_bf16, why = cpu_bf16(cpuinfo)
    if has_bf16:
        reason = f"auto: no GPU, a CPU with bf16 matmul units ({why})"
        jit_compile = None
        if (backend or _backend()) == "tensorflow":
            jit_compile = False
            reason += "; TensorFlow's own bf16 kernels, faster than XLA:CPU's"
        if teacher and not teacher_rebuilds:
            return Precision(CPU_BF16_STUDENT_POLICY, None, reason + "; the teacher stays as "
                             "saved: a whole Keras model is not rebuilt in bfloat16",
                             jit_compile)
        return Precision(CPU_BF16_STUDENT_POLICY, "bfloat16" if teacher else None, reason,
                         jit_compile)
    return Precision("float32", None, f"auto: no GPU, a CPU without bf16 matmul units ({why})")


def _backend():
    import keras

    return keras.backend.backend()
