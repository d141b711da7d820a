"""experiments.calibrate's search: which settings it tries, and that it keeps the best."""

import numpy as np
import pytest

from siamese.diarizer import Diarizer, DiarizerSettings


def test_calibration_tries_smoothing_and_cluster_windows_at_the_chosen_window(monkeypatch):
    import experiments.calibrate as calibrate

    tried = []

    def fake_sweep(diarizer, embedded, grid):
        s = diarizer.settings
        tried.append((s.window_s, s.min_cluster_s, s.smooth_windows, s.cluster_window_s))
        der = 0.10 + 0.01 * (s.window_s != 1.0) + 0.001 * abs(s.min_cluster_s - 3.0)
        der -= 0.004 * (s.smooth_windows == 1) + 0.006 * (s.cluster_window_s == 1.5)
        return der + 0.001 * np.abs(grid - 1.1)  # lowest at threshold 1.1

    monkeypatch.setattr(calibrate, "embed_recordings", lambda diarizer, recordings: [])
    monkeypatch.setattr(calibrate, "sweep_threshold", fake_sweep)
    diarizer = Diarizer(None, DiarizerSettings(window_s=1.0, smooth_windows=0, resegment=None))
    der = calibrate.calibrate_clustering(diarizer, [], [1.0, 1.5], np.arange(0.9, 1.3, 0.1), None, [2.0, 3.0],
                                         smoothings=[0, 1], cluster_windows_s=[None, 1.0, 1.5])
    s = diarizer.settings
    assert (s.window_s, s.min_cluster_s, s.smooth_windows, s.cluster_window_s, s.threshold) == (1.0, 3.0, 1, 1.5, 1.1)
    assert der == pytest.approx(0.10 - 0.004 - 0.006)
    # Stage 1: both windows with every smallest speaker, the settings' own smoothing and cluster window.
    assert tried[:4] == [(1.0, 2.0, 0, None), (1.0, 3.0, 0, None), (1.5, 2.0, 0, None), (1.5, 3.0, 0, None)]
    # Stage 2: the other (smoothing, cluster window) pairs at the chosen 1.0 s window; 1.0 is the window itself.
    assert set(tried[4:]) == {(1.0, m, k, c) for m in (2.0, 3.0) for k, c in [(0, 1.5), (1, None), (1, 1.5)]}
    assert len(tried) == 4 + 6
