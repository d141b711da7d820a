"""Tests for the Siamese head: shared towers, distance, loss, metrics and safe saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from pyannote.core import Annotation, Segment

from siamese import ContrastiveLoss, EuclideanDistance, PairAccuracy, build_siamese
from siamese.metrics import DER_SETTINGS, diarization_error, equal_error_rate, min_dcf
from siamese.model import tower_of
from sincnet_keras import build_encoder


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _noise(batch, samples, seed):
    return np.random.default_rng(seed).normal(0.0, 0.1, (batch, samples, 1)).astype("float32")


@pytest.fixture(scope="module")
def tower():
    return build_encoder("tiny")


@pytest.fixture(scope="module")
def siamese(tower):
    return build_siamese(tower)


# --- Model ---------------------------------------------------------------------------------


def test_towers_share_variables(tower, siamese):
    assert len(tower.weights) > 0
    assert len(siamese.weights) == len(tower.weights)
    assert {id(w) for w in siamese.weights} == {id(w) for w in tower.weights}
    assert tower_of(siamese) is tower


def test_siamese_distance_matches_tower_embeddings(tower, siamese):
    first, second = _noise(3, 4000, seed=1), _noise(3, 4000, seed=2)
    distance = _numpy(siamese([first, second], training=False))
    assert distance.shape == (3,)
    expected = np.linalg.norm(_numpy(tower(first, training=False)) - _numpy(tower(second, training=False)), axis=1)
    np.testing.assert_allclose(distance, expected, atol=1e-5)


def test_siamese_save_and_reload_safe_mode(tmp_path, siamese):
    path = tmp_path / "siamese.keras"
    siamese.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    first, second = _noise(2, 4000, seed=4), _noise(2, 4000, seed=5)
    np.testing.assert_allclose(
        _numpy(reloaded([first, second], training=False)), _numpy(siamese([first, second], training=False)), atol=1e-6
    )
    assert len(reloaded.weights) == len(siamese.weights)
    tower_of(reloaded)  # still exactly one shared tower


def test_lambda_layer_is_refused_in_safe_mode(tmp_path):
    # The Lambda here is deliberate: it is the unsafe file that safe loading must refuse.
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(path, safe_mode=True)


# --- EuclideanDistance ---------------------------------------------------------------------


def test_euclidean_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 16)).astype("float32")
    b = rng.normal(size=(5, 16)).astype("float32")
    layer = EuclideanDistance()
    ab, ba, aa = _numpy(layer([a, b])), _numpy(layer([b, a])), _numpy(layer([a, a]))
    assert ab.shape == (5,)
    np.testing.assert_array_equal(ab, ba)
    assert np.all(aa < 1e-4)
    np.testing.assert_allclose(ab, np.linalg.norm(a - b, axis=1), rtol=1e-5)


def test_euclidean_distance_gradient_is_finite_at_zero():
    import tensorflow as tf

    a = tf.Variable(np.ones((2, 4), "float32"))
    with tf.GradientTape() as tape:
        distance = tf.reduce_sum(EuclideanDistance()([a, tf.ones((2, 4))]))
    assert np.all(np.isfinite(tape.gradient(distance, a).numpy()))


# --- ContrastiveLoss -----------------------------------------------------------------------


def test_contrastive_loss_closed_form():
    d = [0.2, 1.5, 0.3, 0.9]
    y = [1, 1, 0, 0]
    # By hand, margin 1.0: same pairs d^2 -> 0.04, 2.25; different pairs max(1 - d, 0)^2 -> 0.49, 0.01.
    expected = (0.04 + 2.25 + 0.49 + 0.01) / 4  # = 0.6975, mean reduction
    loss = ContrastiveLoss(margin=1.0)
    assert float(loss(np.array(y, "float32"), np.array(d, "float32"))) == pytest.approx(expected, rel=1e-6)
    per_pair = _numpy(loss.call(np.array(y, "float32"), np.array(d, "float32")))
    np.testing.assert_allclose(per_pair, [0.04, 2.25, 0.49, 0.01], rtol=1e-5)


@pytest.mark.parametrize("margin", [1.0, 1.5])
def test_contrastive_loss_label_convention(margin):
    loss = ContrastiveLoss(margin=margin)
    zero = np.array([0.0], "float32")
    # 1 = same speaker: a same pair at distance 0 costs nothing.
    assert float(loss(np.array([1.0], "float32"), zero)) == pytest.approx(0.0)
    # 0 = different speakers: a different pair at distance 0 costs margin^2.
    assert float(loss(np.array([0.0], "float32"), zero)) == pytest.approx(margin ** 2)
    # A different pair beyond the margin is left alone.
    assert float(loss(np.array([0.0], "float32"), np.array([margin + 0.1], "float32"))) == pytest.approx(0.0)


def test_contrastive_loss_config_round_trip():
    loss = ContrastiveLoss(margin=0.7)
    assert ContrastiveLoss.from_config(loss.get_config()).margin == pytest.approx(0.7)


# --- Metrics -------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold, expected", [(0.5, 0.5), (0.7, 0.75), (0.05, 0.5), (1.0, 0.5)])
def test_pair_accuracy(threshold, expected):
    distances = np.array([0.1, 0.6, 0.4, 0.9], "float32")
    labels = np.array([1, 1, 0, 0], "float32")
    # threshold 0.5: "same" = [1, 0, 1, 0] vs labels [1, 1, 0, 0] -> 2 of 4 right
    # threshold 0.7: "same" = [1, 1, 1, 0] -> 3 of 4 right
    metric = PairAccuracy(threshold=threshold)
    metric.update_state(labels, distances)
    assert float(metric.result()) == pytest.approx(expected)


def test_pair_accuracy_config():
    metric = PairAccuracy(threshold=0.3)
    clone = PairAccuracy.from_config(metric.get_config())
    assert clone.threshold == pytest.approx(0.3)


def test_equal_error_rate_separable():
    distances = [0.1, 0.2, 0.3, 0.8, 0.9, 1.0]
    labels = [1, 1, 1, 0, 0, 0]
    eer, threshold = equal_error_rate(distances, labels)
    assert eer == 0.0
    assert 0.3 <= threshold < 0.8


def test_equal_error_rate_hand_made():
    # same: 0.1, 0.2, 0.6; different: 0.4, 0.8, 0.9. Accepting d <= 0.4 gives one false
    # acceptance (0.4) and one false rejection (0.6): FA = FR = 1/3.
    distances = [0.1, 0.2, 0.6, 0.4, 0.8, 0.9]
    labels = [1, 1, 1, 0, 0, 0]
    eer, threshold = equal_error_rate(distances, labels)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.4)


def test_min_dcf_range():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    distances = rng.uniform(0, 2, 200) - 0.3 * labels
    value = min_dcf(distances, labels)
    assert 0.0 <= value <= 1.0 + 1e-9
    assert min_dcf([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == pytest.approx(0.0)


def _annotation(segments, uri="file"):
    annotation = Annotation(uri=uri)
    for start, end, label in segments:
        annotation[Segment(start, end)] = label
    return annotation


def test_diarization_error_identical_is_zero():
    reference = _annotation([(0, 10, "A"), (10, 20, "B"), (25, 30, "A")])
    result = diarization_error(reference, reference)
    assert result["der"] == pytest.approx(0.0)
    assert result["scored_s"] == pytest.approx(25.0)


def test_diarization_error_hand_made_confusion():
    reference = _annotation([(0, 10, "A"), (10, 20, "B")])
    hypothesis = _annotation([(0, 12, "X"), (12, 20, "Y")])
    result = diarization_error(reference, hypothesis)
    # Best mapping A->X, B->Y; 10-12 s is B labelled X: 2 s of 20 s confused.
    assert result["confusion"] == pytest.approx(0.1)
    assert result["der"] == pytest.approx(0.1)
    assert result["missed"] == pytest.approx(0.0)
    assert result["false_alarm"] == pytest.approx(0.0)


def test_diarization_error_forgiving_skips_overlap():
    # A and B overlap from 8 s to 10 s; a single-speaker hypothesis misses one of them there.
    reference = _annotation([(0, 10, "A"), (8, 20, "B")])
    hypothesis = _annotation([(0, 9, "X"), (9, 20, "Y")])
    full = diarization_error(reference, hypothesis, **DER_SETTINGS["full"])
    assert full["scored_s"] == pytest.approx(22.0)
    assert full["missed"] == pytest.approx(2.0 / 22.0)
    assert full["der"] == pytest.approx(2.0 / 22.0)
    forgiving = diarization_error(reference, hypothesis, **DER_SETTINGS["forgiving"])
    assert DER_SETTINGS["forgiving"] == {"collar": 0.25, "skip_overlap": True}
    assert forgiving["der"] == pytest.approx(0.0)
    assert forgiving["scored_s"] < 20.0 - 2.0 + 1e-9  # overlap and collars not scored


def test_batch_contrastive_loss_matches_every_pair_by_hand():
    from siamese.losses import BatchContrastiveLoss

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(12, 8)).astype("float32")
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = np.repeat(np.arange(4), 3)
    same, different = [], []
    for i in range(12):
        for j in range(12):
            if i != j:
                distance = np.linalg.norm(embeddings[i] - embeddings[j])
                (same if labels[i] == labels[j] else different).append(distance)
    expected = 0.5 * np.mean(np.square(same)) + 0.5 * np.mean(np.square(np.maximum(0.8 - np.array(different), 0.0)))
    loss = BatchContrastiveLoss(margin=0.8)
    assert float(loss(labels, embeddings)) == pytest.approx(expected, rel=1e-5)
    assert BatchContrastiveLoss.from_config(loss.get_config()).margin == pytest.approx(0.8)
