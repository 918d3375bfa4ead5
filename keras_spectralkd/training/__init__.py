"""Training utilities: schedule, optimizer, EMA, checkpoints, logs, distribution, the loop."""

from keras_spectralkd.training.callbacks import (
    BestEpochTracker,
    EpochRecord,
    LearningRateLogger,
    NonFiniteLossError,
    StopOnNonFiniteLoss,
)
from keras_spectralkd.training.checkpoint import CheckpointManager
from keras_spectralkd.training.distribute import Distribution, setup_distribution
from keras_spectralkd.training.ema import EMA_DECAY, EMAEvaluation, ema_weights
from keras_spectralkd.training.loop import TrainResult, train
from keras_spectralkd.training.optimizer import (
    create_optimizer,
    is_no_decay_variable,
    no_weight_decay_variables,
    set_precision,
)
from keras_spectralkd.training.schedules import WarmupCosineDecay, scaled_learning_rate
