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

    # Settings that smooth by a value not offered start from the first offered one: the choice stays among them.
    tried.clear()
    diarizer = Diarizer(None, DiarizerSettings(window_s=1.0, smooth_windows=4, resegment=None))
    calibrate.calibrate_clustering(diarizer, [], [1.0], np.arange(0.9, 1.3, 0.1), None, [3.0], smoothings=[0, 1])
    assert [k for _, _, k, _ in tried] == [0, 1] and diarizer.settings.smooth_windows == 1


def test_speech_detection_calibration_tries_each_network_and_keeps_the_best(monkeypatch):
    """With several learned networks, the other detectors run once and the lowest missed + false alarm wins."""
    import experiments.compare_vad as compare_vad
    from experiments.calibrate import calibrate_vad

    calls = []

    def fake_compare(recordings, methods, sample_rate, speech_model):
        calls.append((tuple(methods), speech_model))
        score = {"a.keras": 0.06, "b.keras": 0.05}[speech_model]
        rows = [{"method": "learned", "setting": "threshold=0.5, min_silence_s=0.1", "sum": score}]
        if "energy" in methods:
            rows.append({"method": "energy", "setting": "threshold_db=-40", "sum": 0.055})
        return rows, 1.0

    monkeypatch.setattr(compare_vad, "compare", fake_compare)
    diarizer = Diarizer(None, DiarizerSettings())
    best = calibrate_vad(diarizer, [], ("energy", "learned"), ["a.keras", "b.keras"])
    assert calls == [(("energy", "learned"), "a.keras"), (("learned",), "b.keras")]
    assert best["speech_model"] == "b.keras" and diarizer.settings.vad == {
        "method": "learned", "threshold": 0.5, "min_silence_s": 0.1, "model": "b.keras"}
    calls.clear()
    assert calibrate_vad(diarizer, [], ("energy",), ["a.keras", "b.keras"])["method"] == "energy"
    assert calls == [(("energy",), "a.keras")]  # no learned detector tried: the second network is not run


def test_by_count_names_every_extra_validation_set():
    from experiments.calibrate import by_count

    assert by_count({}) == ""
    text = by_count({"val_der_full_estimated_2to4": 0.1, "val_der_full_estimated_5to8": 0.2,
                     "val_der_full_estimated_rooms": 0.15})
    assert text == " (2-4 speakers 10.00%, 5-8 speakers 20.00%, in rooms 15.00%)"
