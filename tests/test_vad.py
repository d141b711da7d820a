"""Tests for data_prep.vad on synthetic signals and a real utterance."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.audio import load_audio
from data_prep.vad import energy_vad, speech_mask

SR = 16000


def _burst(kind: str) -> np.ndarray:
    """1 s silence + 2 s tone or noise + 1 s silence."""
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    loud = 0.3 * np.sin(2 * np.pi * 300 * t) if kind == "tone" else rng.normal(0, 0.1, 2 * SR)
    quiet = np.zeros(SR)
    return np.concatenate([quiet, loud, quiet]).astype(np.float32)


@pytest.mark.parametrize("kind", ["tone", "noise"])
def test_single_burst_is_one_region(kind):
    regions = energy_vad(_burst(kind), SR)
    assert len(regions) == 1
    start_s, end_s = regions[0]
    assert start_s == pytest.approx(1.0, abs=0.05) and end_s == pytest.approx(3.0, abs=0.05)


def test_silence_gives_no_regions():
    assert energy_vad(np.zeros(4 * SR, np.float32), SR) == []
    faint = np.random.default_rng(1).normal(0, 1e-4, 4 * SR).astype(np.float32)  # -80 dBFS
    assert energy_vad(faint, SR) == []
    assert energy_vad(np.zeros(0, np.float32), SR) == []


def test_short_gaps_bridged_and_short_bursts_dropped():
    audio = _burst("tone")
    audio[int(1.9 * SR) : int(2.0 * SR)] = 0  # 0.1 s gap: bridged
    audio[int(3.5 * SR) : int(3.6 * SR)] = 0.3  # 0.1 s click: dropped
    assert len(energy_vad(audio, SR)) == 1


def test_real_utterance_is_mostly_speech(real_flac):
    audio = load_audio(real_flac, SR)
    regions = energy_vad(audio, SR)
    duration_s = len(audio) / SR
    assert regions and all(0 <= s < e <= duration_s for s, e in regions)
    assert sum(e - s for s, e in regions) > 0.6 * duration_s
    mask = speech_mask(audio, SR)
    assert mask.shape == audio.shape and 0.6 < mask.mean() <= 1.0


def test_long_input_is_fast():
    audio = np.random.default_rng(2).normal(0, 0.1, 600 * SR).astype(np.float32)  # 10 min
    regions = energy_vad(audio, SR)
    assert regions == [(pytest.approx(0.0, abs=0.02), pytest.approx(600.0, abs=0.02))]
