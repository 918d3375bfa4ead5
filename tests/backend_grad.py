"""Gradients in tests, whatever the Keras backend (the core never needs this: fit does it)."""

import keras
import numpy as np


def value_and_grads(fn, arrays):
    """Returns (fn(*tensors) as float, [d fn / d array as numpy]) for numpy `arrays`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.Variable(a) for a in arrays]
        with tf.GradientTape() as tape:
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
        return float(value), [g.numpy() for g in grads]
    if backend == "jax":
        import jax

        value, grads = jax.value_and_grad(lambda *t: fn(*t), argnums=tuple(range(len(arrays))))(
            *[jax.numpy.asarray(a) for a in arrays]
        )
        return float(value), [np.asarray(g) for g in grads]
    if backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        value = fn(*tensors)
        grads = torch.autograd.grad(value, tensors)
        return float(value.detach()), [g.detach().cpu().numpy() for g in grads]
    raise NotImplementedError(backend)


def jit(fn):
    """`fn` compiled by the backend's jit (XLA for TF and JAX, torch.compile is not used: slow)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def model_value_and_grads(model, loss_fn):
    """(loss, {variable.path: grad}) of `loss_fn()` w.r.t. `model.trainable_variables`."""
    backend = keras.backend.backend()
    variables = model.trainable_variables
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_fn()
        grads = tape.gradient(value, [v.value for v in variables])
        grads = [tf.convert_to_tensor(g).numpy() for g in grads]  # IndexedSlices from gathers
    elif backend == "torch":
        import torch

        value = loss_fn()
        grads = torch.autograd.grad(value, [v.value for v in variables], allow_unused=True)
        grads = [g.detach().cpu().numpy() for g in grads]
    elif backend == "jax":
        import jax

        trainable = [v.value for v in variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def stateless(trainable_values):
            mapping = list(zip(variables, trainable_values)) + list(
                zip(model.non_trainable_variables, non_trainable)
            )
            with keras.StatelessScope(state_mapping=mapping):
                return loss_fn()

        value, grads = jax.value_and_grad(stateless)(trainable)
        grads = [np.asarray(g) for g in grads]
    else:
        raise NotImplementedError(backend)
    return float(keras.ops.convert_to_numpy(value)), {
        v.path: g for v, g in zip(variables, grads)
    }
