"""Mixed precision proven, not assumed (issue 9, item 6): a tiny DeiT <- CaiT distillation `fit`
under `mixed_bfloat16` and `mixed_float16` (with Keras' dynamic loss scaling) on every backend.

What is checked, each against the same run in float32 from the same initial weights and data:
- every step's loss is finite (the logged running mean stays finite at every batch, which it
  cannot do if one step's loss is not);
- the spectral term is formed in float32: the feature maps reach `spectral_pair_loss` in the
  16-bit compute dtype, and what goes into the FFT, and the pair loss that comes out, is float32
  (observed by wrapping the two functions, at trace time under jit);
- the loss of step 20 is within 5% of float32's (each step's loss recovered from the logged
  running means);
- the student saved as `.keras` and loaded back has the same weights, policy and outputs.
"""

import keras
import numpy as np
import pytest
from fit_logs import PerStepLoss

from keras_spectralkd import Distiller, spectral
from keras_spectralkd.models import create
from keras_spectralkd.training import create_optimizer, set_precision

IMAGE_SIZE, NUM_CLASSES, BATCH, STEPS = 16, 5, 8, 20
STUDENT = ("deit_tiny_patch16_224", dict(embed_dim=16, depth=2, num_heads=2))
# LayerScale at 1 (not CaiT's 1e-5): blocks that are not near-identities give the teacher's maps
# some structure for the spectral term to align to.
TEACHER = ("cait_s24_224", dict(embed_dim=32, depth=2, num_heads=4, init_values=1.0))
LAYER_PAIRS = [(0, 0), (1, 1)]
LEARNING_RATE = 5e-3


def _models():
    """Teacher and student under the global dtype policy."""
    return tuple(
        create(name, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, patch_size=4, **sizes)
        for name, sizes in (TEACHER, STUDENT)
    )


def _data():
    """20 batches of a learnable task: each class a fixed pattern, each image pattern + noise."""
    rng = np.random.default_rng(0)
    patterns = rng.normal(size=(NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE, 3))
    labels = rng.integers(0, NUM_CLASSES, size=STEPS * BATCH)
    images = patterns[labels] + rng.normal(size=(len(labels), IMAGE_SIZE, IMAGE_SIZE, 3))
    return images.astype("float32"), labels


def _jax_on_cpu():
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def _distiller(precision, initial_weights):
    """Teacher and student built under `precision` from `initial_weights`, in a compiled
    Distiller (the recipe's optimizer, with loss scaling for float16)."""
    loss_scale = set_precision(precision)
    teacher, student = _models()
    for model, weights in zip((teacher, student), initial_weights):
        model.set_weights(weights)
    distiller = Distiller(teacher, student, layer_pairs=LAYER_PAIRS, mode="soft",
                          spectral_weight=0.2)
    distiller.compile(optimizer=create_optimizer(LEARNING_RATE, model=student,
                                                 loss_scale=loss_scale))
    return distiller


def distill(precision, initial_weights):
    """Fits 20 steps; returns the per-step losses, the running means and the student."""
    distiller = _distiller(precision, initial_weights)
    images, labels = _data()
    recorder = PerStepLoss()
    distiller.fit(images, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                  callbacks=[recorder])
    return np.array(recorder.losses), np.array(recorder.running), distiller.student


@pytest.fixture(scope="module")
def float32_run():
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    initial_weights = [model.get_weights() for model in _models()]
    losses, _, _ = distill("float32", initial_weights)
    keras.config.set_dtype_policy("float32")
    return initial_weights, losses


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


@pytest.fixture
def spectral_dtypes(monkeypatch):
    """Records the dtypes the spectral loss sees: its inputs, the FFT's input, its output."""
    seen = {"maps": set(), "fft": set(), "pair_loss": set()}
    pair_loss, rfft2 = spectral.spectral_pair_loss, spectral._rfft2_channels_first

    def observed_pair_loss(student_map, teacher_map, *args, **kwargs):
        seen["maps"].update({_dtype(student_map), _dtype(teacher_map)})
        loss = pair_loss(student_map, teacher_map, *args, **kwargs)
        seen["pair_loss"].add(_dtype(loss))
        return loss

    def observed_rfft2(x):
        seen["fft"].add(_dtype(x))
        return rfft2(x)

    monkeypatch.setattr(spectral, "spectral_pair_loss", observed_pair_loss)
    monkeypatch.setattr(spectral, "_rfft2_channels_first", observed_rfft2)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_distillation(precision, float32_run, spectral_dtypes, tmp_path):
    initial_weights, reference = float32_run
    # The float32 run learns, so a 5% agreement at its end says something.
    assert reference[-5:].mean() < 0.8 * reference[:5].mean(), reference
    if precision == "mixed_float16" and _jax_on_cpu():
        # Not skipped silently: the failure is asserted to be the one explained in
        # test_jax_cannot_jit_float16_attention_on_cpu, and the test reports as xfailed.
        distiller = _distiller(precision, initial_weights)
        images, labels = _data()
        with pytest.raises(ValueError, match="F16_F16_F32' is not supported by dot_general"):
            distiller.fit(images[:BATCH], labels[:BATCH], batch_size=BATCH, verbose=0)
        pytest.xfail("JAX cannot jit float16 attention on its CPU backend (JAX 0.10.2); see "
                     "test_jax_cannot_jit_float16_attention_on_cpu")

    losses, running, student = distill(precision, initial_weights)
    compute_dtype = keras.dtype_policies.get(precision).compute_dtype
    gap = abs(losses[-1] - reference[-1]) / reference[-1]
    print(f"{keras.backend.backend()} {precision}: loss {losses[0]:.5f} -> {losses[-1]:.5f} "
          f"(float32 {reference[0]:.5f} -> {reference[-1]:.5f}); gap at step {STEPS}: "
          f"{gap:.2e}, largest over the steps: "
          f"{(np.abs(losses - reference) / reference).max():.2e}")

    assert len(running) == STEPS and np.isfinite(running).all(), running
    assert spectral_dtypes == {"maps": {compute_dtype}, "fft": {"float32"},
                               "pair_loss": {"float32"}}
    assert gap < 0.05

    path = str(tmp_path / "student.keras")
    student.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.dtype_policy.name == precision
    for saved, restored in zip(student.weights, loaded.weights, strict=True):
        assert _dtype(restored) == "float32"  # variables stay float32 under mixed policies
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored),
                                      keras.ops.convert_to_numpy(saved), err_msg=saved.path)
    images = _data()[0][:BATCH]
    outputs = loaded(images)
    assert _dtype(outputs) == compute_dtype
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(outputs),
                                  keras.ops.convert_to_numpy(student(images)))


@pytest.mark.skipif(not _jax_on_cpu(), reason="a fact about JAX's CPU backend")
def test_jax_cannot_jit_float16_attention_on_cpu():
    """Why JAX's float16 run above cannot be done on CPU. `jax.nn.dot_product_attention` (what
    Keras' `ops.dot_product_attention` calls on JAX) asks for `DotAlgorithmPreset.F16_F16_F32` for
    float16 inputs; the CPU backend rejects that preset when the function is lowered for `jit`,
    after the try/except around it that would fall back to the default precision (eagerly, the
    error is raised inside it and the fallback works). bfloat16 (`BF16_BF16_F32`) is accepted.
    An eager run (`jit_compile=False`) works (measured once: 0.08% from float32 after 20 steps)
    but takes minutes on CPU, too slow for CI. Seen with JAX 0.10.2; when this test fails, JAX
    jits it and the float16 case above can run on CPU."""
    import jax
    import jax.numpy as jnp

    query = jnp.ones((2, 5, 2, 4), jnp.float16)
    assert jax.nn.dot_product_attention(query, query, query).dtype == jnp.float16
    with pytest.raises(ValueError, match="F16_F16_F32' is not supported by dot_general on CPU"):
        jax.jit(jax.nn.dot_product_attention)(query, query, query)
    bfloat16 = query.astype(jnp.bfloat16)
    attention = jax.jit(jax.nn.dot_product_attention)
    assert attention(bfloat16, bfloat16, bfloat16).dtype == jnp.bfloat16
