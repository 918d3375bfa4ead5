"""`precision="auto"` (issue 24): what it chooses on each machine, and that its bfloat16 teacher
costs no accuracy.

The choice (`keras_spectralkd.precision.choose`): a GPU -> mixed_bfloat16; a CPU with bf16 matmul
units (`avx512_bf16` / `amx_bf16` in /proc/cpuinfo, or SPECTRALKD_CPU_BF16=1) -> the frozen
teacher in bfloat16 and the student in `CPU_BF16_STUDENT_POLICY` (mixed_bfloat16), on
TensorFlow without XLA; any other CPU -> float32.

The accuracy checks run on the study's trained CaiT teacher, shipped with the package
(`STUDY_TEACHER_PATH`: 84.6% test top-1), so that its logits have a trained model's margins (a
random or barely trained teacher's near-ties flip under any rounding: a 160-step teacher at 70%
agreed on 509 of 512 images):
- the bf16 copy's top-1 equals the float32 teacher's on >= 99.5% of 512 test images;
- the spectral loss of a distilled student's maps against the bf16 teacher's is within 1% of
  the one against the float32 teacher's;
- students distilled through the runner with precision="auto" (bf16 teacher, mixed_bfloat16
  student) land within the seed spread of the same seeds distilled in float32 (paired seeds:
  the same initial weights and batches, only the precision differs): their mean top-1 inside
  the float32 seeds' range, and each seed's validation loss (continuous, so a finer check than
  top-1 on 512 images) within that range's width of its float32 twin's.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_spectralkd import Distiller, models, spectral
from keras_spectralkd._low_precision import in_dtype
from keras_spectralkd import precision as precision_lib
from keras_spectralkd.recipes import runner
from keras_spectralkd.recipes.table import RECIPES, STUDY_TEACHER_PATH

# The images the checks count; the 512.
TEST_IMAGES = 512
SEEDS = (0, 1, 2)
# jit_compile as users leave it ("auto": XLA on JAX; on TensorFlow what the precision chooses).
DATA = dict(train_size=3000, validation_size=TEST_IMAGES, tensorboard=False, verbose=0,
            ema_decay=0.0, jit_compile="auto")
# The study preset's students (they take the shipped teacher), two short epochs, the teacher
# online (no cache: the bf16 copy runs in every step).
STUDENT_RUN = dict(DATA, epochs=2, warmup_epochs=0, lr=2e-3, cache_teacher=False)


# === The choice ===
def write_cpuinfo(path, flags):
    path.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n"
                    f"flags\t\t: fpu sse2 avx2 {' '.join(flags)}\n\nprocessor\t: 1\n")
    return str(path)


@pytest.mark.parametrize("flags, expected", [
    (["avx512f", "avx512_bf16"], ("float32", "bfloat16")),
    (["amx_tile", "amx_bf16"], ("float32", "bfloat16")),
    (["avx512f", "avx512_fp16"], ("float32", None)),
    ([], ("float32", None)),
])
def test_auto_on_a_cpu_follows_its_bf16_flags(tmp_path, monkeypatch, flags, expected):
    monkeypatch.delenv(precision_lib.CPU_BF16_ENV, raising=False)
    cpuinfo = write_cpuinfo(tmp_path / "cpuinfo", flags)
    choice = precision_lib.choose("auto", [], cpuinfo=cpuinfo)
    assert (choice.policy, choice.teacher_dtype) == (
        precision_lib.CPU_BF16_STUDENT_POLICY if expected[1] else expected[0], expected[1])
    # The reason names what was seen, for the run's first log line.
    seen = [f for f in flags if f in precision_lib.BF16_CPU_FLAGS]
    assert ("no GPU" in choice.reason) and all(f in choice.reason for f in seen)
    assert ("without bf16" in choice.reason) == (not seen)


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_auto_leaves_xla_out_only_for_tensorflow_on_a_bf16_cpu(tmp_path, monkeypatch, backend):
    # XLA:CPU's bf16 kernels are slower than TensorFlow's own (docs/performance.md).
    monkeypatch.delenv(precision_lib.CPU_BF16_ENV, raising=False)
    with_bf16 = write_cpuinfo(tmp_path / "with", ["avx512_bf16"])
    without = write_cpuinfo(tmp_path / "without", [])
    bf16_cpu = precision_lib.choose("auto", [], backend=backend, cpuinfo=with_bf16)
    assert bf16_cpu.jit_compile is (False if backend == "tensorflow" else None)
    assert ("without XLA" in bf16_cpu.describe()) == (backend == "tensorflow")
    for other in (precision_lib.choose("auto", [], backend=backend, cpuinfo=without),
                  precision_lib.choose("auto", ["gpu:0"], backend=backend, cpuinfo=with_bf16),
                  precision_lib.choose("float32", [], backend=backend, cpuinfo=with_bf16)):
        assert other.jit_compile is None, other


def test_the_runner_takes_the_xla_setting_only_when_left_to_auto(monkeypatch):
    monkeypatch.setenv(precision_lib.CPU_BF16_ENV, "1")
    recipe = RECIPES["deit_tiny"]
    for jit, backend, expected in [("auto", "tensorflow", False), (True, "tensorflow", True),
                                   ("auto", "jax", "auto"), ("auto", "torch", "auto")]:
        config = recipe.config("tiny", precision="auto", jit_compile=jit)
        resolved, choice = runner.resolve_precision(config, [], backend)
        assert resolved.jit_compile == expected, (jit, backend, resolved.jit_compile)
        assert choice.teacher_dtype == "bfloat16"
    # A set precision changes nothing.
    config = recipe.config("tiny", precision="float32")
    assert runner.resolve_precision(config, [], "tensorflow")[0].jit_compile == "auto"


def test_auto_with_a_gpu_and_explicit_precisions(tmp_path, monkeypatch):
    monkeypatch.setenv(precision_lib.CPU_BF16_ENV, "1")
    gpu = precision_lib.choose("auto", ["gpu:0"])
    assert (gpu.policy, gpu.teacher_dtype) == ("mixed_bfloat16", None)
    assert "1 GPU" in gpu.reason
    for policy in ("float32", "mixed_bfloat16", "mixed_float16"):
        assert precision_lib.choose(policy, []) == precision_lib.Precision(policy, None, "as set")
    # Without a teacher (mode none) there is nothing to put in bfloat16.
    alone = precision_lib.choose("auto", [], teacher=False)
    assert (alone.policy, alone.teacher_dtype) == (precision_lib.CPU_BF16_STUDENT_POLICY, None)
    # A whole saved Keras model (teacher=keras) cannot be rebuilt in bfloat16: kept as saved.
    saved = precision_lib.choose("auto", [], teacher_rebuilds=False)
    assert saved.teacher_dtype is None and "teacher stays as saved" in saved.reason


def test_the_environment_overrides_the_flags(tmp_path, monkeypatch):
    with_bf16 = write_cpuinfo(tmp_path / "with", ["avx512_bf16"])
    without = write_cpuinfo(tmp_path / "without", [])
    monkeypatch.setenv(precision_lib.CPU_BF16_ENV, "0")
    assert precision_lib.choose("auto", [], cpuinfo=with_bf16).teacher_dtype is None
    monkeypatch.setenv(precision_lib.CPU_BF16_ENV, "yes")
    choice = precision_lib.choose("auto", [], cpuinfo=without)
    assert choice.teacher_dtype == "bfloat16" and "SPECTRALKD_CPU_BF16=yes" in choice.reason
    monkeypatch.setenv(precision_lib.CPU_BF16_ENV, "maybe")
    with pytest.raises(ValueError, match="SPECTRALKD_CPU_BF16 must be 1 or 0.*'maybe'"):
        precision_lib.choose("auto", [])
    # No /proc/cpuinfo (another OS): no flags, float32.
    monkeypatch.delenv(precision_lib.CPU_BF16_ENV)
    missing = precision_lib.choose("auto", [], cpuinfo=str(tmp_path / "absent"))
    assert (missing.policy, missing.teacher_dtype) == ("float32", None)


def test_a_run_says_what_auto_chose_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(precision_lib.CPU_BF16_ENV, "1")
    recipe = RECIPES["deit_tiny"]
    config = recipe.config("tiny", precision="auto", output_dir=str(tmp_path / "run"),
                           verbose=2)
    # No teacher weights or data: the run stops before any work, after saying its precision.
    with pytest.raises(FileNotFoundError):
        runner.run(recipe, config)
    first = capsys.readouterr().out.splitlines()[0]
    tensorflow = keras.backend.backend() == "tensorflow"
    assert first == (f"[deit_tiny] precision: {precision_lib.CPU_BF16_STUDENT_POLICY}, frozen "
                     "teacher in bfloat16" + (", step without XLA" if tensorflow else "")
                     + "; auto: no GPU, a CPU with bf16 matmul units (SPECTRALKD_CPU_BF16=1)"
                     + ("; TensorFlow's own bf16 kernels, faster than XLA:CPU's" if tensorflow
                        else "") + ".")


# === Accuracy of the bf16 teacher ===
@pytest.fixture(scope="module")
def teacher_path():
    """The study's trained teacher, float32."""
    return STUDY_TEACHER_PATH


def validation_images():
    data = runner.load_data(RECIPES["fashion_mnist"].config("study", **DATA))
    images, labels = zip(*[(x, y) for x, y in data.validation.as_numpy_iterator()])
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert len(images) == TEST_IMAGES
    return images, labels


def teacher_logits(model, images, batch=128):
    return np.concatenate([
        ops.convert_to_numpy(ops.cast(model(images[i:i + batch], training=False), "float32"))
        for i in range(0, len(images), batch)])


def low_precision_teacher(teacher):
    """The copy that precision="auto" gives the Distiller on a bf16 CPU (one place, so a
    deliberately broken copy can be tried against these checks)."""
    return in_dtype(teacher, "bfloat16")


def test_bf16_teacher_agrees_with_float32_top1(teacher_path):
    images, labels = validation_images()
    teacher = models.create("cait_s24_224", teacher_path)
    low = low_precision_teacher(teacher)
    assert {w.dtype for w in low.weights} == {"bfloat16"}
    reference, logits = teacher_logits(teacher, images), teacher_logits(low, images)
    agree = np.mean(reference.argmax(-1) == logits.argmax(-1))
    assert agree >= 0.995, f"top-1 agreement {agree:.4f} on {TEST_IMAGES} images"
    # The agreement is not that of two constant predictors: the teacher is right most times.
    assert np.mean(reference.argmax(-1) == labels) > 0.8
    # ... and bf16 really rounded: the logits differ, by about bf16's relative precision.
    assert not np.array_equal(reference, logits)


@pytest.fixture(scope="module")
def distilled(teacher_path, tmp_path_factory):
    """{(seed, "float32" | "auto"): run folder}: the miniature's students distilled through the
    runner, the float32 teacher against precision="auto" on a bf16 CPU (the override, so the
    check runs on any CI machine)."""
    root = tmp_path_factory.mktemp("auto_distill")
    recipe = RECIPES["fashion_mnist"]
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(precision_lib.CPU_BF16_ENV, "1")
        for seed in SEEDS:
            for precision in ("float32", "auto"):
                out = root / f"seed{seed}-{precision}"
                config = recipe.config("study", precision=precision, seed=seed,
                                       teacher_weights=teacher_path, output_dir=str(out),
                                       **STUDENT_RUN)
                runner.run(recipe, config)
                runs[seed, precision] = str(out)
    return runs


def final(run):
    return json.load(open(os.path.join(run, "summary.json")))["final"]


@pytest.mark.slow
def test_auto_runs_record_their_choice(distilled):
    recorded = json.load(open(os.path.join(distilled[0, "auto"], "config.json")))
    assert (recorded["precision"], recorded["teacher_dtype"]) == (
        precision_lib.CPU_BF16_STUDENT_POLICY, "bfloat16")
    assert "SPECTRALKD_CPU_BF16=1" in recorded["precision_reason"]
    plain = json.load(open(os.path.join(distilled[0, "float32"], "config.json")))
    assert (plain["precision"], plain["teacher_dtype"]) == ("float32", None)


@pytest.mark.slow
def test_bf16_teacher_keeps_the_spectral_loss(teacher_path, distilled):
    images, _ = validation_images()
    teacher = models.create("cait_s24_224", teacher_path)
    student = keras.saving.load_model(os.path.join(distilled[0, "float32"], "student.keras"))
    pairs = RECIPES["fashion_mnist"].paper.layer_pairs
    losses = {}
    for name, model in (("float32", teacher), ("bfloat16", low_precision_teacher(teacher))):
        distiller = Distiller(model, student, layer_pairs=pairs, mode="soft")
        total = 0.0
        for i in range(0, len(images), 128):
            batch = images[i:i + 128]
            # Training mode: the student's maps and the teacher's, from one forward each (no
            # dropout or drop-path in these models, so the same maps as inference).
            outputs = distiller(batch, training=True)
            loss = spectral.spectral_alignment_loss(outputs["maps"], outputs["teacher_maps"])
            total += float(ops.convert_to_numpy(loss)) * len(batch)
        losses[name] = total / len(images)
    relative = abs(losses["bfloat16"] - losses["float32"]) / losses["float32"]
    assert relative <= 0.01, losses
    assert losses["float32"] > 1e-4  # a loss that 1% of means something


@pytest.mark.slow
def test_bf16_teacher_distills_within_the_seed_spread(distilled):
    results = {key: final(run) for key, run in distilled.items()}

    def metric(name, precision):
        return np.array([results[seed, precision][name] for seed in SEEDS])

    # The students learned: chance-level runs would agree trivially.
    assert metric("val_accuracy", "float32").min() > 0.25, results
    # The bf16 teacher's mean lands inside the float32 seeds' range, in top-1 and in loss.
    for name in ("val_accuracy", "val_loss"):
        full, auto = metric(name, "float32"), metric(name, "auto")
        assert full.min() <= auto.mean() <= full.max(), (name, full, auto)
    # Each seed's loss moves by at most that range from its float32 twin's (paired seeds).
    full, auto = metric("val_loss", "float32"), metric("val_loss", "auto")
    assert np.all(np.abs(auto - full) <= np.ptp(full)), (full, auto)
