"""Speed perturbation: new training identities from the same speakers."""

import os

import numpy as np
import pytest
import soundfile as sf

from data_prep.augment import speed_perturbed_speakers


def test_speed_perturbation_adds_one_identity_per_factor(librispeech_manifest, tmp_path):
    manifest = librispeech_manifest.head(2).reset_index(drop=True)
    out = speed_perturbed_speakers(manifest, [0.9, 1.1], tmp_path / "sp")
    assert len(out) == 6 and out.head(2).equals(manifest)  # originals first, untouched
    speakers = [str(s) for s in manifest["speaker"]]
    assert list(out["speaker"][2:]) == [f"{s}-sp0.9" for s in speakers] + [f"{s}-sp1.1" for s in speakers]
    for row in out.iloc[2:].itertuples():
        info = sf.info(row.path)
        assert info.samplerate == 16000
        assert info.duration == pytest.approx(row.duration_s, abs=0.01)
    original = manifest["duration_s"].to_numpy()
    np.testing.assert_allclose(out["duration_s"][2:4], original / 0.9, atol=0.01)  # slower is longer
    np.testing.assert_allclose(out["duration_s"][4:6], original / 1.1, atol=0.01)
    written = {path: os.stat(path).st_mtime_ns for path in out["path"][2:]}
    speed_perturbed_speakers(manifest, [0.9, 1.1], tmp_path / "sp")  # written once, then reused
    assert {path: os.stat(path).st_mtime_ns for path in out["path"][2:]} == written


def test_speed_perturbation_rejects_a_factor_of_one(librispeech_manifest, tmp_path):
    with pytest.raises(ValueError, match="factors"):
        speed_perturbed_speakers(librispeech_manifest.head(1), [1.0], tmp_path)


def test_room_impulse_response_decays_at_its_reverberation_time():
    """Direct sound first, then a tail whose energy falls ~60 dB over RT60, at the drawn direct-to-reverberant ratio."""
    from data_prep.augment import room_impulse_response

    rt60, rate = 0.5, 16000
    response = room_impulse_response(rt60, rate, np.random.default_rng(0), drr_db=6.0)
    assert response.dtype == np.float32 and response[0] == 1.0 and len(response) == int(np.ceil(rt60 * rate)) + 1
    tail = response[1:].astype(np.float64)
    assert abs(10 * np.log10(1.0 / np.sum(tail**2)) - 6.0) < 0.01
    # Schroeder backward integration: the decay from -5 to -25 dB, extrapolated to 60 dB, is the RT60.
    decay = 10 * np.log10(np.cumsum(tail[::-1] ** 2)[::-1] / np.sum(tail**2))
    t5, t25 = np.argmax(decay < -5) / rate, np.argmax(decay < -25) / rate
    assert abs(3 * (t25 - t5) - rt60) < 0.05
    with pytest.raises(ValueError, match="rt60_s"):
        room_impulse_response(0.0, rate, np.random.default_rng(0))


def test_reverberate_keeps_length_and_alignment():
    from data_prep.augment import reverberate, room_impulse_response

    audio = np.zeros(8000, np.float32)
    audio[1000] = 1.0
    out = reverberate(audio, room_impulse_response(0.3, 16000, np.random.default_rng(1), drr_db=10.0))
    assert out.shape == audio.shape and out.dtype == np.float32
    assert np.argmax(np.abs(out)) == 1000 and np.abs(out[:1000]).max() < 1e-6 and np.abs(out[1100:]).max() > 1e-3
    assert reverberate(np.zeros(0, np.float32), np.ones(3, np.float32)).shape == (0,)
