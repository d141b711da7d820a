"""Contrastive loss (Hadsell, Chopra and LeCun, CVPR 2006).

Label convention, used everywhere in this project: **1 = same speaker,
0 = different speakers** (as in the keras.io example; the coursework used the
opposite). For a distance d and margin m:

    loss = y * d**2 + (1 - y) * max(m - d, 0)**2

Same-speaker pairs are pulled together; different-speaker pairs are pushed
apart until they are at least `margin` away, and then left alone.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="siamese")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss on distances; `y_true` is 1 for same-speaker pairs."""

    def __init__(self, margin=1.0, name="contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), y_pred.dtype)
        distance = ops.reshape(y_pred, (-1,))
        same = y_true * ops.square(distance)
        different = (1.0 - y_true) * ops.square(ops.maximum(self.margin - distance, 0.0))
        return same + different

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
