"""Statistics pooling: a fixed-size summary of a variable-length sequence."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="sincnet_keras")
class StatisticsPooling(keras.layers.Layer):
    """Concatenates the mean and standard deviation over time.

    Pooling over time, rather than flattening, lets one encoder embed windows of
    any length (x-vector style, Snyder et al. 2018).

    Input shape: `(batch, frames, channels)`. Output: `(batch, 2 * channels)`.
    """

    def __init__(self, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        mean = ops.mean(inputs, axis=1)
        variance = ops.mean(ops.square(inputs - ops.expand_dims(mean, 1)), axis=1)
        return ops.concatenate([mean, ops.sqrt(variance + self.epsilon)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
