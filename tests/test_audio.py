"""Tests for data_prep.audio: loading, cropping, resampling, errors, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from data_prep import audio as audio_module
from data_prep.audio import AudioError, audio_info, load_audio, normalize_level, write_wav


def _tone(freq_hz: float, duration_s: float, sample_rate: int, amplitude: float = 0.5):
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_real_flac_native_and_resampled(real_flac):
    info = audio_info(real_flac)
    native = load_audio(real_flac, 16000)
    assert info.sample_rate == 16000 and info.channels == 1
    assert native.dtype == np.float32 and native.ndim == 1 and len(native) == info.frames
    half = load_audio(real_flac, 8000)
    assert half.dtype == np.float32 and abs(len(half) - info.frames / 2) <= 1


def test_stereo_is_downmixed_by_mean(write_test_wav):
    left = _tone(440, 0.5, 16000)
    path = write_test_wav("stereo.wav", np.stack([left, 0.5 * left], axis=1), 16000, "FLOAT")
    mono = load_audio(path, 16000)
    np.testing.assert_allclose(mono, 0.75 * left, atol=1e-6)


def test_44k_int16_is_resampled(write_test_wav):
    path = write_test_wav("cd.wav", _tone(440, 1.0, 44100), 44100, "PCM_16")
    out = load_audio(path, 16000)
    assert out.dtype == np.float32 and abs(len(out) - 16000) <= 1
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * 16000 / len(out)
    assert abs(peak_hz - 440) < 2
    assert np.sqrt(np.mean(out**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_crop_equals_slice_of_full_load(real_flac, monkeypatch):
    full = load_audio(real_flac, 16000)
    crop = load_audio(real_flac, 16000, start_s=1.25, duration_s=2.0)
    np.testing.assert_array_equal(crop, full[20000:52000])
    monkeypatch.setattr(audio_module, "_BLOCK_FRAMES", 1000)  # exercise block reads
    np.testing.assert_array_equal(load_audio(real_flac, 16000, start_s=0.5), full[8000:])


def test_crop_past_end_raises(real_flac):
    with pytest.raises(AudioError, match="requested range"):
        load_audio(real_flac, 16000, start_s=1000.0)


def _bad_inputs(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    nan = tmp_path / "nan.wav"
    sf.write(str(nan), np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT")
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    missing = tmp_path / "missing.wav"
    return {"missing": missing, "dir": folder, "text": text, "empty": empty, "nan": nan}


@pytest.mark.parametrize("kind", ["missing", "dir", "text", "empty", "nan"])
def test_unusable_audio_raises_one_line_error(tmp_path, kind):
    path = _bad_inputs(tmp_path)[kind]
    with pytest.raises(AudioError) as excinfo:
        load_audio(path, 16000)
    message = str(excinfo.value)
    assert path.name in message and "\n" not in message
    if kind != "nan":
        with pytest.raises(AudioError, match=path.name):
            audio_info(path)


def test_truncated_wav_returns_readable_part(write_test_wav):
    path = write_test_wav("cut.wav", _tone(440, 1.0, 16000), 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    try:
        out = load_audio(path, 16000)
    except AudioError as exc:
        assert path.name in str(exc)
    else:
        assert 0 < len(out) < 16000


def test_normalize_level():
    out = normalize_level(_tone(100, 1.0, 16000, amplitude=0.01), target_rms_db=-20.0)
    assert 20 * np.log10(np.sqrt(np.mean(out.astype(np.float64) ** 2))) == pytest.approx(-20.0)
    zeros = normalize_level(np.zeros(100, np.float32))
    assert zeros.dtype == np.float32 and not zeros.any()


def test_write_wav_roundtrip_leaves_no_temp_files(tmp_path):
    audio = _tone(440, 0.5, 16000)
    target = tmp_path / "sub" / "out.wav"
    write_wav(target, audio, 16000)
    assert [p.name for p in target.parent.iterdir()] == ["out.wav"]
    assert sf.info(str(target)).subtype == "PCM_16"
    np.testing.assert_allclose(load_audio(target, 16000), audio, atol=1 / 32768 + 1e-7)


def test_write_wav_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(audio_module.sf, "write", broken_write)
    with pytest.raises(OSError):
        write_wav(tmp_path / "out.wav", np.zeros(10, np.float32), 16000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_block_by_block_resampling_equals_whole_signal(tmp_path, monkeypatch, rate):
    """Long files are resampled as they are read; the samples match resampling everything at once."""
    import soxr

    from data_prep import audio as audio_module

    monkeypatch.setattr(audio_module, "_BLOCK_FRAMES", 997)  # many odd-sized blocks
    stereo = np.random.default_rng(rate).normal(0, 0.1, (2 * rate + 13, 2)).astype(np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, stereo, rate, subtype="FLOAT")
    expected = soxr.resample(stereo.mean(axis=1), rate, 16000, quality="HQ")
    np.testing.assert_array_equal(audio_module.load_audio(path, 16000), expected)
