"""Pair metrics: accuracy at a distance threshold, EER and minDCF."""

import keras
import numpy as np
from keras import ops
from sklearn.metrics import roc_curve


@keras.saving.register_keras_serializable(package="siamese")
class PairAccuracy(keras.metrics.MeanMetricWrapper):
    """Share of pairs judged right when "same speaker" means `distance < threshold`."""

    def __init__(self, threshold=0.5, name="pair_accuracy", dtype=None):
        super().__init__(fn=pair_accuracy, name=name, dtype=dtype, threshold=threshold)
        self.threshold = float(threshold)

    def get_config(self):
        return {"threshold": self.threshold, "name": self.name, "dtype": self.dtype}


def pair_accuracy(y_true, y_pred, threshold=0.5):
    predicted_same = ops.cast(ops.reshape(y_pred, (-1,)) < threshold, "float32")
    return ops.cast(ops.equal(predicted_same, ops.cast(ops.reshape(y_true, (-1,)), "float32")), "float32")


def equal_error_rate(distances, labels):
    """EER of distances (lower = more alike) against labels (1 = same speaker).

    Returns `(eer, threshold)`: the rate where false acceptances equal false
    rejections, and the distance threshold where that happens.
    """
    distances, labels = np.asarray(distances, float), np.asarray(labels, int)
    false_accept, true_accept, thresholds = roc_curve(labels, -distances)
    false_reject = 1.0 - true_accept
    index = int(np.nanargmin(np.abs(false_reject - false_accept)))
    eer = (false_accept[index] + false_reject[index]) / 2.0
    return float(eer), float(-thresholds[index])


def min_dcf(distances, labels, p_target=0.01, cost_miss=1.0, cost_false_alarm=1.0):
    """Minimum normalised detection cost (NIST SRE), the usual companion of EER."""
    distances, labels = np.asarray(distances, float), np.asarray(labels, int)
    false_accept, true_accept, _ = roc_curve(labels, -distances)
    cost = cost_miss * (1.0 - true_accept) * p_target + cost_false_alarm * false_accept * (1.0 - p_target)
    return float(np.min(cost) / min(cost_miss * p_target, cost_false_alarm * (1.0 - p_target)))


def accuracy_at(distances, labels, threshold):
    return float(np.mean((np.asarray(distances) < threshold) == (np.asarray(labels) == 1)))


def diarization_error(reference, hypothesis, *, collar=0.0, skip_overlap=False, uem=None):
    """DER and its parts with pyannote.metrics, as rates of the scored reference speech.

    `collar` follows pyannote.metrics: the total width (seconds) of the no-score zone
    around each reference boundary (half before, half after). The project's two
    settings are "full" (`collar=0.0`, overlap scored) and "forgiving"
    (`collar=0.25`, overlap skipped).
    """
    from pyannote.core import Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    if uem is None:
        # Score the span covered by either side (pyannote's own fallback, made explicit).
        extent = (reference.get_timeline() | hypothesis.get_timeline()).extent()
        uem = Timeline([extent], uri=reference.uri)
    metric = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    parts = metric(reference, hypothesis, uem=uem, detailed=True)
    total = parts["total"]
    rate = lambda name: parts[name] / total if total else 0.0  # noqa: E731
    return {
        "der": parts["diarization error rate"] if total else 0.0,
        "missed": rate("missed detection"),
        "false_alarm": rate("false alarm"),
        "confusion": rate("confusion"),
        "scored_s": total,
    }


DER_SETTINGS = {"full": {"collar": 0.0, "skip_overlap": False}, "forgiving": {"collar": 0.25, "skip_overlap": True}}
