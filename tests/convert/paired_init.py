"""Paired training runs from two initialisations: timm's (converted) and `models.create`'s.

Shared by tests/convert/test_init_training.py and benchmarks/init_gap.py (issue 21). For a seed
s, arm "timm" starts from `timm.create_model` (torch seed s) converted by `from_timm`, arm
"create" from `models.create` after `keras.utils.set_random_seed(s)`; both are trained on the
SAME batches (seed s's stream: Fashion-MNIST, the subset shipped with the package, a seeded
order and augmentation drawn with numpy) through the package's training path: `Distiller(mode=
"none")` (cross-entropy, label smoothing 0.1) and `create_optimizer` (AdamW, weight decay 0.05
off timm's no-decay set) on a `WarmupCosineDecay` (warm-up over the first 1/8 of the steps).

Import torch (or timm) before Keras in a standalone script: see tests/conftest.py.
"""

import contextlib

import keras
import numpy as np
import timm
import torch

from keras_spectralkd.convert import from_timm
from keras_spectralkd.data.fashion_mnist import MEAN, STD, load_embedded_subset
from keras_spectralkd.distiller import Distiller
from keras_spectralkd.models import create
from keras_spectralkd.training.optimizer import create_optimizer
from keras_spectralkd.training.schedules import WarmupCosineDecay

NAME = "deit_tiny_patch16_224"
NUM_CLASSES = 10
# The miniature: 28x28 inputs, 4x4 patches, width 64, depth 4, 2 heads.
MINIATURE = dict(image_size=28, patch_size=4, embed_dim=64, depth=4, num_heads=2)
PAD = 2  # the augmentation: a random crop of the 2-pixel reflect-padded image, a flip
LABEL_SMOOTHING = 0.1
WEIGHT_DECAY = 0.05
# Initialisations a test or a benchmark can put in arm "create"'s place, each a known gap:
# "old" is the package's before it followed timm (Keras' TruncatedNormal(0.02), cut at 2 std so
# std 0.0176, for Dense kernels and the position table; Keras' default Glorot-uniform patch
# conv with a zero bias); "glorot" is Keras' default Glorot uniform for every Dense kernel.
CONTROLS = ("old", "glorot")


# === Data: one fixed stream per seed, the same for every arm ===
def _normalised(images):
    """(N, 28, 28) uint8 -> (N, 28, 28, 3) float32, normalised as the package's pipeline."""
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return np.repeat(x[..., None], 3, axis=-1)


def load_images(train_size, eval_size):
    """((train images, labels), (held-out images, labels)): the first `train_size` training and
    `eval_size` test images of the subset shipped with the package, normalised, 3 channels."""
    ((x_train, y_train), (x_test, y_test)), _ = load_embedded_subset()
    return ((_normalised(x_train[:train_size]), y_train[:train_size].astype(np.int32)),
            (_normalised(x_test[:eval_size]), y_test[:eval_size].astype(np.int32)))


def batches(images, labels, seed, steps, batch_size):
    """`steps` batches: epochs of a seeded permutation, each image randomly cropped from its
    reflect-padded copy and flipped with probability 1/2 (numpy, so every arm gets the very
    same arrays)."""
    rng = np.random.default_rng(seed)
    padded = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect")
    side = images.shape[1]
    order = np.empty(0, dtype=np.int64)
    for _ in range(steps):
        if order.size < batch_size:
            order = np.concatenate([order, rng.permutation(len(images))])
        picked, order = order[:batch_size], order[batch_size:]
        dy, dx = rng.integers(0, 2 * PAD + 1, size=(2, batch_size))
        flip = rng.random(batch_size) < 0.5
        batch = np.stack([padded[i, y:y + side, x:x + side] for i, y, x in zip(picked, dy, dx)])
        batch[flip] = batch[flip, :, ::-1]
        yield batch, labels[picked]


# === The initialisations ===
def timm_state(seed, overrides=MINIATURE):
    """timm's initial state dict of the architecture (torch seed `seed`), as numpy arrays."""
    torch.manual_seed(seed)
    reference = timm.create_model(
        NAME, pretrained=False, num_classes=NUM_CLASSES, img_size=overrides["image_size"],
        **{key: value for key, value in overrides.items() if key != "image_size"},
    )
    return {key: value.detach().numpy() for key, value in reference.state_dict().items()}


def created_weights(seed, init="create", overrides=MINIATURE):
    """`models.create`'s initial weights after `keras.utils.set_random_seed(seed)`, as numpy;
    `init` one of `CONTROLS` then redraws them as that control says."""
    keras.utils.set_random_seed(seed)
    model = create(NAME, num_classes=NUM_CLASSES, **overrides)
    weights = [keras.ops.convert_to_numpy(variable) for variable in model.weights]
    if init == "create":
        return weights
    if init not in CONTROLS:
        raise ValueError(f"init must be 'create' or one of {CONTROLS}; got {init!r}.")
    for index, variable in enumerate(model.weights):
        path, shape = variable.path, tuple(variable.shape)
        draw = None
        if init == "glorot":
            if path.endswith("/kernel") and not path.startswith("patch_embed/"):
                draw = keras.initializers.GlorotUniform()
        elif path == "patch_embed/proj/kernel":
            draw = keras.initializers.GlorotUniform()
        elif path == "patch_embed/proj/bias":
            draw = keras.initializers.Zeros()
        elif path.endswith("/kernel") or path.startswith("pos_embed/"):
            draw = keras.initializers.TruncatedNormal(stddev=0.02)
        if draw is not None:
            weights[index] = keras.ops.convert_to_numpy(draw(shape))
    return weights


# === Training ===
@contextlib.contextmanager
def one_torch_thread():
    """torch on one intra-op thread inside the block, on the torch backend (else nothing).

    For these small steps two busy-waiting OpenMP threads per process stall on a shared 2-core
    machine: 20 steps of the miniature took 91 s with torch's 2 threads under a load of 8, and
    8 s with one."""
    if keras.backend.backend() != "torch":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class PairedTrainer:
    """One compiled student, given each run's initial weights and a fresh optimizer: a run's
    losses then depend on those weights and its seed's batches alone, and every arm goes
    through the very same compiled step (nothing is recompiled between runs).

    Args:
        steps: optimizer steps per run; the learning rate warms up over the first 1/8 of them
            to `lr`, then follows a cosine to the end (the issue's recipe, shrunk).
        batch_size: images per step.
        overrides: the architecture (`models.create` overrides), the miniature's by default.
        lr: peak learning rate.
        jit_compile: the Distiller's `jit_compile`.
        student: the model to train (of `overrides`' architecture); None builds one.
    """

    def __init__(self, steps, batch_size, overrides=MINIATURE, lr=1e-3, jit_compile=True,
                 student=None):
        self.steps, self.batch_size, self.overrides = steps, batch_size, dict(overrides)
        if student is None:
            keras.utils.set_random_seed(0)
            student = create(NAME, num_classes=NUM_CLASSES, **self.overrides)
        self.student = student
        self.distiller = Distiller(None, self.student, mode="none",
                                   label_smoothing=LABEL_SMOOTHING)
        schedule = WarmupCosineDecay(lr, total_steps=steps, warmup_steps=steps // 8)
        self.distiller.compile(
            optimizer=create_optimizer(schedule, model=self.student, weight_decay=WEIGHT_DECAY),
            jit_compile=jit_compile,
        )
        self.distiller.optimizer.build(self.student.trainable_variables)
        self._fresh_optimizer = [keras.ops.convert_to_numpy(variable)
                                 for variable in self.distiller.optimizer.variables]

    def load(self, arm, seed):
        """Gives the student arm `arm`'s initial weights for `seed`: "timm" (through the
        converter), "create", or one of `CONTROLS`."""
        if arm == "timm":
            from_timm(NAME, timm_state(seed, self.overrides), model=self.student)
            return
        for variable, value in zip(self.student.weights,
                                   created_weights(seed, arm, self.overrides)):
            variable.assign(value)

    def train(self, images, labels, seed):
        """Trains the loaded weights on seed `seed`'s batches from a fresh optimizer; returns
        the training loss of every step."""
        for variable, value in zip(self.distiller.optimizer.variables, self._fresh_optimizer):
            variable.assign(value)
        return np.array([
            float(self.distiller.train_on_batch(x, y, return_dict=True)["loss"])
            for x, y in batches(images, labels, seed, self.steps, self.batch_size)
        ])

    def evaluate(self, images, labels, batch_size=500):
        """(cross-entropy, top-1) of the student on held-out images (no label smoothing)."""
        logits = self.student.predict(images, batch_size=batch_size, verbose=0)
        logits = logits.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        cross_entropy = -log_probs[np.arange(len(labels)), labels].mean()
        return float(cross_entropy), float((logits.argmax(axis=1) == labels).mean())

    def run(self, arm, seed, data, evaluate=True):
        """Arm `arm`, seed `seed` on `data` (from `load_images`): (the training losses of every
        step, held-out cross-entropy, held-out top-1); the last two None unless `evaluate`."""
        (images, labels), held_out = data
        self.load(arm, seed)
        losses = self.train(images, labels, seed)
        return (losses,) + (self.evaluate(*held_out) if evaluate else (None, None))
