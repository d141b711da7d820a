"""The report's figure helpers: filter responses match the layer, curves and timelines draw on given axes."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from pyannote.core import Annotation, Segment

from siamese import plots
from siamese.metrics import equal_error_rate
from sincnet_keras import SincConv1D


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_sinc_responses_peak_inside_each_band():
    layer = SincConv1D(filters=6, kernel_size=129, sample_rate=8000)
    layer.build((None, None, 1))
    frequencies, magnitudes = plots.sinc_frequency_responses(layer, num_fft=2048)
    assert frequencies.shape == (1025,) and magnitudes.shape == (6, 1025)
    peaks = frequencies[np.argmax(magnitudes, axis=1)]
    low, high = layer.low_hz, layer.low_hz + layer.band_hz
    # Hamming-windowed 129-tap filters: the peak lies in the band, give or take the main-lobe width.
    assert np.all((peaks >= low - 70) & (peaks <= high + 70)), (peaks, low, high)
    # The layer normalises each filter to unit gain at its band centre.
    centre_bins = np.searchsorted(frequencies, (low + high) / 2)
    np.testing.assert_allclose(magnitudes[np.arange(6), centre_bins], 1.0, atol=0.1)


def test_det_marks_the_equal_error_rate():
    rng = np.random.default_rng(0)
    distances = np.r_[rng.normal(0.4, 0.1, 50), rng.normal(0.8, 0.1, 500)]
    labels = np.r_[np.ones(50, int), np.zeros(500, int)]
    _, axes = plt.subplots()
    plots.plot_det(axes, distances, labels, "model")
    eer, _ = equal_error_rate(distances, labels)
    marker = axes.lines[1]
    assert axes.get_legend_handles_labels()[1] == [f"model (EER {eer:.1%})"]
    np.testing.assert_allclose(marker.get_xdata(), plots.norm.ppf(eer))


def test_window_speakers_and_timeline():
    reference = Annotation(uri="demo")
    reference[Segment(0.0, 3.0)] = "A"
    reference[Segment(3.0, 6.0)] = "B"
    assert plots.window_speakers(reference, [0.0, 2.6, 4.0, 7.0], 1.0) == ["A", "B", "B", None]
    _, axes = plt.subplots()
    plots.plot_timeline(axes, reference, plots.speaker_colours(["B", "A"]))
    assert [label.get_text() for label in axes.get_yticklabels()] == ["B", "A"]


def test_model_bars_keep_the_table_order():
    table = pd.DataFrame({"model": ["first", "second"], "seeds": [3, 1], "eer_mean": [0.1, 0.2], "eer_std": [0.01, 0.0]})
    _, axes = plt.subplots()
    plots.plot_model_bars(axes, table, "eer", "EER")
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert labels == ["first (3 seeds)", "second (1 seed)"]
    assert axes.get_ylim()[0] > axes.get_ylim()[1]  # first row on top
