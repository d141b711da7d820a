"""Tests for data_prep.vad on synthetic signals and a real utterance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from data_prep.audio import load_audio
from data_prep.vad import (
    energy_vad,
    silero_vad,
    spectral_vad,
    speech_mask,
    speech_regions,
    webrtc_vad,
)

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



def _silero_installed() -> bool:
    from importlib import metadata
    from importlib.util import find_spec

    try:
        metadata.distribution("silero-vad")
    except metadata.PackageNotFoundError:
        return False
    return find_spec("onnxruntime") is not None


# silero-vad is installed apart from requirements.txt (pip install --no-deps silero-vad==6.2.3).
TRAINED = ["spectral", "learned", "webrtc", pytest.param("silero", marks=pytest.mark.skipif(
    not _silero_installed(), reason="pip install --no-deps silero-vad==6.2.3 (and onnxruntime)"))]


@pytest.mark.parametrize("method", TRAINED)
def test_trained_detectors_silence_gives_no_regions(method):
    assert speech_regions(np.zeros(3 * SR, np.float32), SR, method) == []
    assert speech_regions(np.zeros(0, np.float32), SR, method) == []


@pytest.fixture(scope="module")
def real_speech(real_flac):
    """The real utterance at 16 kHz and the energy detector's regions on it."""
    audio = load_audio(real_flac, SR)
    return audio, energy_vad(audio, SR)


def _covered_s(regions, others) -> float:
    """Seconds of ``others`` inside ``regions`` (both non-overlapping lists)."""
    return sum(max(0.0, min(e, oe) - max(s, os_)) for s, e in regions for os_, oe in others)


@pytest.mark.parametrize("method", TRAINED)
def test_trained_detectors_find_real_speech(method, real_speech):
    audio, energy_regions = real_speech
    regions = speech_regions(audio, SR, method)
    duration_s = len(audio) / SR
    assert regions and all(0 <= s < e <= duration_s for s, e in regions)
    assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(regions))
    energy_s = sum(e - s for s, e in energy_regions)
    assert _covered_s(regions, energy_regions) > 0.7 * energy_s


@pytest.mark.parametrize("method", TRAINED)
def test_trained_detectors_skip_leading_silence(method, real_speech):
    audio, _ = real_speech
    silence = np.zeros(SR, np.float32)
    padded = np.concatenate([silence, audio, silence])
    regions = speech_regions(padded, SR, method)
    assert regions and regions[0][0] >= 0.8
    assert regions[-1][1] <= len(padded) / SR - 0.8


def test_webrtc_resamples(real_speech):
    audio, _ = real_speech
    regions_16k = webrtc_vad(audio, SR)
    regions_8k = webrtc_vad(audio[::2], SR // 2)  # resampled to 16 kHz inside
    assert _covered_s(regions_8k, regions_16k) > 0.8 * sum(e - s for s, e in regions_16k)


def test_webrtc_noise_margin_trims_noise_but_keeps_speech(real_speech):
    """With an energy floor, WebRTC keeps the utterance but drops the noise-only stretches around it."""
    audio, energy_regions = real_speech
    rng = np.random.default_rng(0)
    pad = np.zeros(2 * SR, np.float32)
    noisy = np.concatenate([pad, audio, pad])
    noisy = noisy + rng.normal(0, 0.02 * np.abs(audio).max(), noisy.size).astype(np.float32)  # ~30 dB below peak
    speech = [(s + 2.0, e + 2.0) for s, e in energy_regions]
    plain = webrtc_vad(noisy, SR, aggressiveness=0)
    trimmed = webrtc_vad(noisy, SR, aggressiveness=0, noise_margin_db=3.0)
    speech_s = sum(e - s for s, e in speech)
    assert _covered_s(trimmed, speech) > 0.7 * speech_s
    outside = lambda regions: sum(e - s for s, e in regions) - _covered_s(regions, speech)  # noqa: E731
    assert outside(trimmed) <= outside(plain)
    assert _covered_s(trimmed, plain) == pytest.approx(sum(e - s for s, e in trimmed), abs=0.05)  # only ever removes


def _brown_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """Brown (1/f^2) noise: most of its power below a few hundred Hz, where a broadband energy floor sees only it."""
    from data_prep.augment import coloured_noise

    return coloured_noise(length, exponent=2.0, rng=rng).astype(np.float32)


def test_spectral_finds_speech_in_coloured_noise(real_speech):
    """10 dB below the speech in brown noise, the band-wise detector keeps the utterance and not the noise around it."""
    audio, energy_regions = real_speech
    pad = np.zeros(3 * SR, np.float32)
    clean = np.concatenate([pad, audio, pad])
    noise = _brown_noise(clean.size, np.random.default_rng(0))
    speech_power = float(np.mean(audio[speech_mask(audio, SR)] ** 2))
    noisy = clean + noise * np.sqrt(speech_power / 10.0 / np.mean(noise ** 2))
    speech = [(s + 3.0, e + 3.0) for s, e in energy_regions]
    speech_s = sum(e - s for s, e in speech)
    regions = spectral_vad(noisy, SR)
    outside = sum(e - s for s, e in regions) - _covered_s(regions, speech)
    assert _covered_s(regions, speech) > 0.85 * speech_s
    assert outside < 0.5  # of the 6 s of noise alone
    broadband = webrtc_vad(noisy, SR, aggressiveness=0, noise_margin_db=1.0)
    broadband_errors = speech_s - _covered_s(broadband, speech) + sum(e - s for s, e in broadband) - _covered_s(broadband, speech)
    assert speech_s - _covered_s(regions, speech) + outside < broadband_errors


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100])
@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_spectral_steady_noise_alone_is_not_speech(sample_rate, exponent):
    """A recording of white, pink or brown noise and nothing else has no speech, at any level and rate."""
    from data_prep.augment import coloured_noise

    noise = coloured_noise(10 * sample_rate, exponent=exponent, rng=np.random.default_rng(3)).astype(np.float32)
    for level in (0.003, 0.3):
        assert spectral_vad(level * noise / np.abs(noise).max(), sample_rate) == []


def test_spectral_ignores_bands_telephone_audio_leaves_empty(real_speech):
    """8 kHz audio (nothing above 4 kHz once resampled) is detected about as the same audio at 16 kHz."""
    audio, _ = real_speech
    regions_16k = spectral_vad(audio, SR)
    regions_8k = spectral_vad(audio[::2], SR // 2)
    total_16k = sum(e - s for s, e in regions_16k)
    assert _covered_s(regions_8k, regions_16k) > 0.9 * total_16k
    assert sum(e - s for s, e in regions_8k) < 1.1 * total_16k


def test_spectral_hysteresis_only_grows_speech_it_found(real_speech):
    """A lower second threshold extends detected speech over its quieter edges, and finds nothing new on its own."""
    audio, _ = real_speech
    noisy = audio + 0.05 * np.abs(audio).max() * np.random.default_rng(1).standard_normal(audio.size).astype(np.float32)
    plain = spectral_vad(noisy, SR, low_threshold=None)
    grown = spectral_vad(noisy, SR, low_threshold=0.15)
    assert spectral_vad(noisy, SR, low_threshold=0.25) == plain  # equal to the threshold: no hysteresis
    assert _covered_s(grown, plain) == pytest.approx(sum(e - s for s, e in plain), abs=0.02)  # keeps all it had
    assert sum(e - s for s, e in grown) > sum(e - s for s, e in plain)  # and adds the edges
    for start, end in grown:  # every grown region still holds speech the plain threshold found
        assert _covered_s(plain, [(start, end)]) > 0


def test_spectral_rejects_bad_settings():
    quiet = np.zeros(SR, np.float32)
    with pytest.raises(ValueError, match="low_threshold"):
        spectral_vad(quiet, SR, low_threshold=0.3)
    with pytest.raises(ValueError, match="noise_quantile"):
        spectral_vad(quiet, SR, noise_quantile=1.0)
    with pytest.raises(ValueError, match="smooth_frames"):
        spectral_vad(quiet, SR, smooth_frames=4)
    with pytest.raises(ValueError, match="1-D"):
        spectral_vad(np.zeros((2, SR), np.float32), SR)


def test_webrtc_rejects_bad_settings():
    with pytest.raises(ValueError, match="aggressiveness"):
        webrtc_vad(np.zeros(SR, np.float32), SR, aggressiveness=4)
    with pytest.raises(ValueError, match="frame_ms"):
        webrtc_vad(np.zeros(SR, np.float32), SR, frame_ms=25)


def test_silero_threshold_checked():
    with pytest.raises(ValueError, match="threshold"):
        silero_vad(np.zeros(SR, np.float32), SR, threshold=1.5)


def test_silero_missing_package_says_how_to_install(monkeypatch):
    from importlib import metadata

    from data_prep import vad

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    vad._silero_session.cache_clear()
    monkeypatch.setattr(metadata, "distribution", not_installed)
    try:
        with pytest.raises(ImportError, match=r"pip install --no-deps silero-vad==6\.2\.3"):
            silero_vad(np.zeros(SR, np.float32), SR)
    finally:
        vad._silero_session.cache_clear()


def test_dispatcher(real_speech):
    audio, energy_regions = real_speech
    assert speech_regions(audio, SR) == energy_regions
    assert speech_regions(audio, SR, "energy", threshold_db=-30) == energy_vad(audio, SR, threshold_db=-30)
    with pytest.raises(ValueError, match="unknown speech detection method 'pitch'"):
        speech_regions(audio, SR, "pitch")


def test_compare_vad_cli(tmp_path, write_test_wav, capsys):
    from experiments.compare_vad import main

    write_test_wav("audio/rec.wav", _burst("noise"), SR)
    (tmp_path / "rttm").mkdir()
    (tmp_path / "rttm" / "rec.rttm").write_text("SPEAKER rec 1 1.000 2.000 <NA> <NA> A <NA> <NA>\n")
    out = tmp_path / "table.md"
    args = ["--audio", str(tmp_path / "audio"), "--rttm", str(tmp_path / "rttm"), "--out", str(out)]
    assert main(args + ["--methods", "energy", "spectral", "webrtc", "webrtc-trimmed"]) == 0
    table = out.read_text()
    assert "| spectral | threshold=0.25, low_threshold=0.25, noise_quantile=0.2, min_silence_s=0.3 |" in table
    assert "| spectral | threshold=0.3, low_threshold=0.15, noise_quantile=0.1, min_silence_s=0.2 |" in table
    assert "| energy | threshold_db=-30 | 0.00% | 0.00% |" in table and "| webrtc | aggressiveness=3 |" in table
    assert "| missed, quiet |" in table and "- missed, quiet: the missed speech" in table
    assert "| webrtc-trimmed | aggressiveness=0, noise_margin_db=3.0 |" in table
    assert main(["--audio", str(tmp_path / "missing"), "--rttm", str(tmp_path / "rttm"), "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip().startswith("error: --audio")
    assert main(["--audio", str(tmp_path / "rttm"), "--rttm", str(tmp_path / "rttm"), "--out", str(out)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_compare_vad_tells_missed_speech_buried_in_noise_from_audible_missed_speech():
    """The reference marks 1-4 s; the mix is loud at 1-2 s, at its noise floor at 2-3 s, and 20 dB over it at 3-4 s."""
    from pyannote.core import Annotation, Segment

    from experiments.compare_vad import frame_levels_db, speech_errors

    rng = np.random.default_rng(0)
    audio = 0.001 * rng.standard_normal(5 * SR)
    audio[SR:2 * SR] *= 100.0
    audio[3 * SR:4 * SR] *= 10.0
    reference = Annotation()
    reference[Segment(1.0, 4.0)] = "A"
    missed, false_alarm, speech, quiet = speech_errors(reference, [(0.5, 2.0)], frame_levels_db(audio, SR))
    assert (missed, false_alarm, speech) == pytest.approx((2.0, 0.5, 3.0))
    assert quiet == pytest.approx(1.0, abs=0.02)  # 2-3 s only
    assert speech_errors(reference, [(0.5, 2.0)])[3] == 0.0  # without levels: not measured
