"""Reading what `fit` logs, for tests that follow a run step by step."""

import keras


class PerStepLoss(keras.callbacks.Callback):
    """Each step's training loss, recovered from the running mean `fit` logs after a batch:
    loss_b = (b + 1) * mean_b - b * mean_(b-1) (equal batch sizes; the mean restarts every
    epoch). `running` keeps the logged means: one non-finite step makes every later one so."""

    def __init__(self):
        super().__init__()
        self.losses, self.running = [], []

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        previous = self.running[-1] if batch else 0.0
        self.losses.append((batch + 1) * mean - batch * previous)
        self.running.append(mean)
