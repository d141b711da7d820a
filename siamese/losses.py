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


@keras.saving.register_keras_serializable(package="siamese")
class BatchContrastiveLoss(keras.losses.Loss):
    """The contrastive loss above over every pair in a batch of labelled embeddings.

    `y_true` holds speaker codes `(batch,)`, `y_pred` embeddings `(batch, D)`. A
    batch of P speakers x K crops holds P x K x (K - 1) / 2 same-speaker pairs and
    far more different-speaker pairs; each kind is averaged separately and weighted
    one half, as in the balanced pair tables, so the value is on the pair loss's scale.
    """

    def __init__(self, margin=1.0, name="batch_contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        labels = ops.reshape(y_true, (-1,))
        size = ops.shape(y_pred)[0]
        same = ops.cast(ops.equal(labels[:, None], labels[None, :]), y_pred.dtype)
        positive = same * (1.0 - ops.eye(size, dtype=y_pred.dtype))  # a crop is no pair with itself
        negative = 1.0 - same
        norms = ops.sum(ops.square(y_pred), axis=1)
        squared = ops.maximum(norms[:, None] + norms[None, :] - 2.0 * ops.matmul(y_pred, ops.transpose(y_pred)), 0.0)
        distance = ops.sqrt(squared + 1e-12)
        pulled = positive * squared
        pushed = negative * ops.square(ops.maximum(self.margin - distance, 0.0))
        # Per-row shares whose batch mean is 0.5 * mean(positive) + 0.5 * mean(negative).
        rows = ops.cast(size, y_pred.dtype)
        return 0.5 * rows * (ops.sum(pulled, axis=1) / ops.maximum(ops.sum(positive), 1.0)
                             + ops.sum(pushed, axis=1) / ops.maximum(ops.sum(negative), 1.0))

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="siamese")
class RelationalDistillationLoss(keras.losses.Loss):
    """Teaches a student the teacher's geometry: every pair's cosine similarity in a batch.

    `y_true` holds the teacher's embeddings `(batch, D_teacher)`, `y_pred` the student's
    `(batch, D)`; the sizes may differ, since only similarities between crops are
    compared (relational distillation, Park et al., CVPR 2019), so no projection head
    is needed and the student keeps its own embedding. Per row: the mean squared
    difference between the student's and the teacher's similarities to the batch.

    With `contrastive_weight` > 0 the last column of `y_true` is each crop's speaker
    code, and `BatchContrastiveLoss(margin)` on those labels is added with that weight:
    the teacher's geometry and our own speaker labels at once.

    With `embedding_weight` > 0 (student and teacher of the same size; training projects a
    wider teacher with `data_prep.teacher_bank.project_teacher_windows`), each crop's
    `1 - cosine(student, teacher)` is added with that weight: the teacher's embedding
    itself as a target for every crop, where the similarities give only the batch's
    relations. The student's last layer learns the rotation between the two spaces.
    """

    def __init__(self, contrastive_weight=0.0, margin=1.0, embedding_weight=0.0,
                 name="relational_distillation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.contrastive_weight, self.margin = float(contrastive_weight), float(margin)
        self.embedding_weight = float(embedding_weight)

    def call(self, y_true, y_pred):
        def unit(embeddings):
            return embeddings / ops.sqrt(ops.sum(ops.square(embeddings), axis=1, keepdims=True) + 1e-12)

        def similarities(embeddings):
            return ops.matmul(unit(embeddings), ops.transpose(unit(embeddings)))

        y_true = ops.cast(y_true, y_pred.dtype)
        teacher = y_true[:, :-1] if self.contrastive_weight > 0.0 else y_true
        loss = ops.mean(ops.square(similarities(y_pred) - similarities(teacher)), axis=1)
        if self.contrastive_weight > 0.0:
            loss = loss + self.contrastive_weight * BatchContrastiveLoss(margin=self.margin).call(y_true[:, -1], y_pred)
        if self.embedding_weight > 0.0:
            loss = loss + self.embedding_weight * (1.0 - ops.sum(unit(y_pred) * unit(teacher), axis=1))
        return loss

    def get_config(self):
        return {**super().get_config(), "contrastive_weight": self.contrastive_weight, "margin": self.margin,
                "embedding_weight": self.embedding_weight}
