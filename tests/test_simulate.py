"""Tests for data_prep.simulate: turn validity, overlaps, determinism, RTTM I/O, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep.manifest import write_manifest
from data_prep.rttm import read_rttm, write_rttm
from data_prep.simulate import main, simulate_conversation, turns_to_annotation, write_conversations

SR = 16000


@pytest.fixture(scope="module")
def conversations(librispeech_manifest):
    """Twelve conversations with 2-4 speakers, made with independent seeds."""
    results = []
    for index in range(12):
        num_speakers = 2 + index % 3
        rng = np.random.default_rng([7, index])
        audio, turns = simulate_conversation(
            librispeech_manifest, num_speakers=num_speakers, rng=rng
        )
        results.append((num_speakers, audio, turns))
    return results


def test_turns_are_valid(conversations):
    for num_speakers, audio, turns in conversations:
        duration_s = len(audio) / SR
        assert audio.dtype == np.float32 and np.abs(audio).max() == pytest.approx(0.9, abs=1e-4)
        assert duration_s <= 60.0
        assert all(0 <= start < end <= duration_s for start, end, _ in turns)
        speakers = [speaker for _, _, speaker in turns]
        assert len(set(speakers)) == num_speakers
        assert all(speakers.count(s) >= 2 for s in set(speakers))
        assert all(a != b for a, b in zip(speakers, speakers[1:]))  # alternating
        starts = [start for start, _, _ in turns]
        assert starts == sorted(starts)
        for (_, end, _), (start, _, _) in zip(turns, turns[2:]):
            assert start >= end  # at most two speakers at once
        for start, end, _ in turns:  # the reference marks audible audio
            segment = audio[int(start * SR) : int(end * SR)]
            assert np.sqrt(np.mean(segment**2)) > 0.01


def test_some_turns_overlap(conversations):
    overlaps = [
        b[0] < a[1] for _, _, turns in conversations for a, b in zip(turns, turns[1:])
    ]
    assert any(overlaps) and np.mean(overlaps) < 0.5


def test_too_many_speakers_raises(librispeech_manifest):
    small = librispeech_manifest[librispeech_manifest["speaker"].isin(["103", "1034"])]
    with pytest.raises(ValueError):
        simulate_conversation(small, num_speakers=3, rng=np.random.default_rng(0))


def test_same_seed_gives_identical_files(librispeech_manifest, tmp_path):
    kwargs = dict(num_conversations=2, seed=3, max_duration_s=20.0)
    first = write_conversations(librispeech_manifest, tmp_path / "a", **kwargs)
    write_conversations(librispeech_manifest, tmp_path / "b", **kwargs)
    other = write_conversations(librispeech_manifest, tmp_path / "c", **{**kwargs, "seed": 4})
    assert list(first.columns) == ["uri", "wav_path", "rttm_path", "num_speakers", "duration_s"]
    for uri in first["uri"]:
        for suffix in (".wav", ".rttm"):
            a, b = (tmp_path / d / f"{uri}{suffix}" for d in ("a", "b"))
            assert a.read_bytes() == b.read_bytes()
    wav = "conv_000.wav"
    assert (tmp_path / "a" / wav).read_bytes() != (tmp_path / "c" / wav).read_bytes()
    assert (other["duration_s"] <= 20.0).all()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "conv_000.rttm", "conv_000.wav", "conv_001.rttm", "conv_001.wav", "conversations.csv"
    ]


def test_rttm_roundtrip(tmp_path):
    turns = [(0.5, 2.25, "103"), (2.0, 4.0, "1034"), (4.5, 6.125, "103")]
    path = tmp_path / "x.rttm"
    write_rttm(turns_to_annotation(turns, "conv_x"), path)
    annotations = read_rttm(path)
    assert list(annotations) == ["conv_x"]
    back = sorted(
        (seg.start, seg.end, label)
        for seg, _, label in annotations["conv_x"].itertracks(yield_label=True)
    )
    assert [label for _, _, label in back] == ["103", "1034", "103"]
    np.testing.assert_allclose([b[:2] for b in back], [t[:2] for t in turns], atol=1e-3)


def test_read_rttm_rejects_malformed_line(tmp_path):
    path = tmp_path / "bad.rttm"
    path.write_text("SPEAKER conv 1 abc 1.0 <NA> <NA> spk <NA> <NA>\n")
    with pytest.raises(ValueError, match="bad.rttm:1"):
        read_rttm(path)


def test_cli(librispeech_manifest, tmp_path, capsys):
    manifest = tmp_path / "test.csv"
    write_manifest(librispeech_manifest.head(40), manifest)
    out = tmp_path / "conv"
    assert main(["--manifest", str(manifest), "--out", str(out), "--num", "1", "--seed", "5"]) == 0
    index = pd.read_csv(out / "conversations.csv")
    assert index["uri"].tolist() == ["conv_000"] and (out / "conv_000.rttm").exists()
    assert main(["--manifest", str(tmp_path / "nope.csv"), "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith("error:")


def test_background_noise_has_the_drawn_level(librispeech_manifest):
    """Silences carry noise at 10-30 dB below the speech; without noise they are digital zeros."""
    for noise, check in (((10.0, 30.0), True), (None, False)):
        audio, turns = simulate_conversation(
            librispeech_manifest, num_speakers=2, rng=np.random.default_rng(5), noise_snr_db=noise
        )
        active = np.zeros(len(audio), bool)
        for start, end, _ in turns:
            active[int(start * SR) : int(end * SR)] = True
        gaps = audio[~active]
        if not check:
            assert np.all(gaps == 0.0)
            continue
        snr_db = 10 * np.log10(np.mean(audio[active] ** 2) / np.mean(gaps**2))
        assert 9.0 < snr_db < 31.0


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_coloured_noise_spectrum_slope(exponent):
    from data_prep.augment import coloured_noise

    noise = coloured_noise(2**16, exponent=exponent, rng=np.random.default_rng(0))
    assert noise.dtype == np.float32 and np.mean(noise**2) == pytest.approx(1.0, rel=1e-3)
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise))
    low, high = power[(freqs > 0.01) & (freqs < 0.02)].mean(), power[(freqs > 0.1) & (freqs < 0.2)].mean()
    # A decade apart in frequency: 10 dB per decade per unit of exponent.
    assert 10 * np.log10(low / high) == pytest.approx(10 * exponent, abs=1.5)


def test_speech_reference_leaves_out_pauses_inside_turns(librispeech_manifest):
    """Same audio either way; speech segments lie inside turns and skip the source's pauses."""
    removed = 0.0
    for index in range(4):
        draws = {mode: simulate_conversation(librispeech_manifest, num_speakers=3, rng=np.random.default_rng([9, index]),
                                             reference=mode) for mode in ("turns", "speech")}
        (audio, turns), (speech_audio, speech) = draws["turns"], draws["speech"]
        np.testing.assert_array_equal(audio, speech_audio)
        for start, end, speaker in speech:
            assert any(s <= start + 1e-9 and end <= e + 1e-9 and k == speaker for s, e, k in turns)
        for s, e, k in turns:  # every turn starts and ends on speech
            mine = [(a, b) for a, b, label in speech if label == k and s - 1e-9 <= a and b <= e + 1e-9]
            assert mine and mine[0][0] == pytest.approx(s) and mine[-1][1] == pytest.approx(e)
            gaps = [b2 - a1 for (_, a1), (b2, _) in zip(mine, mine[1:])]
            assert all(gap >= 0.3 - 0.011 for gap in gaps)  # energy_vad bridges shorter pauses
        removed += sum(e - s for s, e, _ in turns) - sum(e - s for s, e, _ in speech)
        assert removed >= -1e-9
    assert removed > 0.5  # seconds: LibriSpeech readers do pause
    with pytest.raises(ValueError, match="reference"):
        simulate_conversation(librispeech_manifest, num_speakers=2, rng=np.random.default_rng(0), reference="words")


def test_reverberant_conversation_keeps_turns_and_fills_pauses(librispeech_manifest):
    """A room changes the audio, not the reference; its tails spill into the pauses after turns."""
    dry, dry_turns = simulate_conversation(librispeech_manifest, num_speakers=3, rng=np.random.default_rng(9),
                                           noise_snr_db=None)
    wet, wet_turns = simulate_conversation(librispeech_manifest, num_speakers=3, rng=np.random.default_rng(9),
                                           noise_snr_db=None, reverb_rt60_s=(0.6, 0.6))
    assert wet_turns == dry_turns and len(wet) == len(dry) and not np.allclose(wet, dry)
    active = np.zeros(len(dry), bool)
    for start, end, _ in dry_turns:
        active[int(start * SR):int(end * SR)] = True
    assert np.all(dry[~active] == 0.0) and np.sqrt(np.mean(wet[~active] ** 2)) > 1e-4


def test_cli_rejects_a_bad_reverberation_time(librispeech_manifest, tmp_path, capsys):
    manifest = tmp_path / "test.csv"
    write_manifest(librispeech_manifest.head(40), manifest)
    assert main(["--manifest", str(manifest), "--out", str(tmp_path / "c"), "--reverb", "0", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: --reverb")
    assert not (tmp_path / "c").exists()
