"""Property-based fuzzing of the audio loading path: it only ever raises AudioError."""

import io

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep.audio import AudioError, load_audio


def _valid_wav_bytes(format_name):
    buffer = io.BytesIO()
    audio = np.sin(np.linspace(0, 200, 8000)).astype(np.float32) * 0.5
    sf.write(buffer, audio, 8000, format=format_name, subtype="PCM_16")
    return buffer.getvalue()


WAV, FLAC = _valid_wav_bytes("WAV"), _valid_wav_bytes("FLAC")


def _load(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"input{suffix}"
    path.write_bytes(data)
    try:
        audio = load_audio(path, 16000)
    except AudioError:
        return
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".wav", ".flac", ".ogg", ""]))
def test_random_bytes_only_raise_audio_error(tmp_path_factory, data, suffix):
    _load(tmp_path_factory, data, suffix)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from(["wav", "flac"]), cut=st.integers(min_value=0, max_value=20000),
       flips=st.lists(st.tuples(st.integers(0, 20000), st.integers(0, 255)), max_size=8))
def test_truncated_and_corrupted_files_only_raise_audio_error(tmp_path_factory, source, cut, flips):
    data = bytearray(WAV if source == "wav" else FLAC)[:cut]
    for position, value in flips:
        if position < len(data):
            data[position] = value
    _load(tmp_path_factory, bytes(data), f".{source}")
