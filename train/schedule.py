"""WarmUp: a learning rate that ramps up linearly over the first steps of a phase, then holds.

Each phase compiles a fresh Adam, whose first updates are about lr per weight whatever the gradient (its
moment estimates start at zero). At the full rate that undoes what the previous phase learned: the first
fine-tuning epoch trained at 0.74 where the head ended at 0.88. Ramping up over the first epoch lets Adam's
estimates settle before the steps grow.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="edge_toolkit")
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """lr * min(1, (step + 1) / warmup_steps)."""

    def __init__(self, learning_rate: float, warmup_steps: int):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = max(1, int(warmup_steps))

    def __call__(self, step):
        frac = tf.minimum(1.0, (tf.cast(step, tf.float32) + 1.0) / float(self.warmup_steps))
        return self.learning_rate * frac

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}
