"""A kill, simulated inside `fit`: the exception a callback raises after a given step."""

import keras


class Killed(Exception):
    """Stands for the process being killed."""


class KillAt(keras.callbacks.Callback):
    """Raises `Killed` after `step` steps of this process."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise Killed(f"killed after {self.step} steps")
