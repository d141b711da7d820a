"""Layers of the Siamese head."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="siamese")
class EuclideanDistance(keras.layers.Layer):
    """Euclidean distance between two embeddings, `[(batch, D), (batch, D)] -> (batch,)`.

    A registered layer instead of a `Lambda`, so models load with `safe_mode=True`.
    `epsilon` keeps the gradient of the square root finite at zero distance.
    """

    def __init__(self, epsilon=1e-9, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        first, second = inputs
        squared = ops.sum(ops.square(first - second), axis=-1)
        return ops.sqrt(ops.maximum(squared, self.epsilon))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
