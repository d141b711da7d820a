"""The learned speech detector: its features, its NumPy network copy, its training command and its sidecar file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from data_prep.vad import band_snr, learned_vad, speech_regions

SR = 16000


def test_band_snr_divides_out_level_and_marks_empty_bands(real_flac):
    from data_prep.audio import load_audio

    audio = load_audio(real_flac, SR)
    noisy = audio + 0.01 * np.random.default_rng(0).standard_normal(audio.size).astype(np.float32)
    features = band_snr(noisy, SR)
    assert features.shape == (1 + (audio.size - 400) // 160, 24) and features.dtype == np.float32
    assert features.min() >= -3.0 and features.max() <= 8.0
    np.testing.assert_allclose(band_snr(0.1 * noisy, SR), features, atol=1e-3)  # level divides out
    # Audio with nothing above 4 kHz (8 kHz audio, resampled): the bands it never fills read 0.
    narrow = band_snr(noisy[::2], SR // 2)
    assert np.all(narrow[:, -4:] == 0.0) and np.abs(narrow[:, :8]).max() > 1.0
    assert not band_snr(np.zeros(SR, np.float32), SR).any()


def _random_network(tmp_path, dilations=(1, 4, 8)):
    import keras

    from data_prep.speech_net import build_speech_net

    keras.utils.set_random_seed(1)
    model = build_speech_net(24, channels=6, kernel_size=5, dilations=dilations)
    path = tmp_path / "detector.keras"
    model.save(path)
    return model, path


def test_numpy_copy_matches_keras_in_blocks(tmp_path, monkeypatch):
    import data_prep.speech_net as speech_net

    model, path = _random_network(tmp_path)
    features = np.random.default_rng(2).normal(0, 2, (700, 24)).astype(np.float32)
    expected = np.asarray(model(features[None]))[0, :, 0]
    network = speech_net.load_speech_net(str(path))
    np.testing.assert_allclose(network(features), expected, atol=1e-5)
    monkeypatch.setattr(speech_net, "_BLOCK_FRAMES", 64)  # blocks much shorter than the receptive field (65 frames)
    np.testing.assert_allclose(network(features), expected, atol=1e-5)
    with pytest.raises(ValueError, match="expected \\(frames, 24\\)"):
        network(features[:, :10])


def test_unusable_network_files_are_one_line_errors(tmp_path):
    import keras

    audio = np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32)
    with pytest.raises(ValueError, match="not found"):
        learned_vad(audio, SR, model=str(tmp_path / "missing.keras"))
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="could not be loaded"):
        learned_vad(audio, SR, model=str(corrupt))
    dense = keras.Sequential([keras.Input((None, 24)), keras.layers.Dense(1)])
    dense.save(tmp_path / "dense.keras")
    with pytest.raises(ValueError, match="not a speech detector network"):
        learned_vad(audio, SR, model=str(tmp_path / "dense.keras"))
    _, path = _random_network(tmp_path)
    with pytest.raises(ValueError, match="threshold"):
        learned_vad(audio, SR, model=str(path), threshold=1.5)


def test_shipped_detector_finds_speech_in_noise_and_none_in_noise_alone(real_flac):
    """The shipped network keeps a real utterance 10 dB above pink noise and calls the noise around it silence.

    And 10 s of white, pink or brown noise alone, at 16, 8 or 44.1 kHz, has (almost) no speech: trained without
    long pauses and noise-only recordings, an earlier network called 30-40% of it speech.
    """
    from data_prep.audio import load_audio
    from data_prep.augment import coloured_noise
    from data_prep.vad import energy_vad, speech_mask

    audio = load_audio(real_flac, SR)
    speech = [(s + 2.0, e + 2.0) for s, e in energy_vad(audio, SR)]
    pad = np.zeros(2 * SR, np.float32)
    clean = np.concatenate([pad, audio, pad])
    noise = coloured_noise(clean.size, exponent=1.0, rng=np.random.default_rng(0)).astype(np.float32)
    speech_power = float(np.mean(audio[speech_mask(audio, SR)] ** 2))
    noisy = clean + noise * np.sqrt(speech_power / 10.0 / np.mean(noise ** 2))
    regions = speech_regions(noisy, SR, "learned")
    covered = sum(max(0.0, min(e, oe) - max(s, os_)) for s, e in regions for os_, oe in speech)
    assert covered > 0.85 * sum(e - s for s, e in speech)
    assert regions[0][0] > 1.5 and regions[-1][1] < len(noisy) / SR - 1.5  # the 2 s of noise either side
    for exponent, rate in ((0.0, SR), (1.0, 8000), (2.0, 44100)):
        alone = coloured_noise(10 * rate, exponent=exponent, rng=np.random.default_rng(3)).astype(np.float32)
        assert sum(e - s for s, e in learned_vad(0.1 * alone / np.abs(alone).max(), rate)) < 0.5


def test_sidecar_keeps_the_network_relative_to_itself(tmp_path):
    from siamese.diarizer import DiarizerSettings

    folder = tmp_path / "models"
    folder.mkdir()
    settings = DiarizerSettings(vad={"method": "learned", "model": str(folder / "speech_detector.keras"),
                                     "threshold": 0.5})
    settings.to_file(folder / "tower.json")
    assert json.loads((folder / "tower.json").read_text())["vad"]["model"] == "speech_detector.keras"
    (folder / "speech_detector.keras").write_bytes(b"stands in for the network")
    again = DiarizerSettings.from_file(folder / "tower.json")
    assert again.vad["model"] == str(folder / "speech_detector.keras")
    (folder / "speech_detector.keras").unlink()  # copied without it: the shipped network of that name
    assert DiarizerSettings.from_file(folder / "tower.json").vad["model"].endswith("models/speech_detector.keras")
    settings.vad["model"] = str(folder / "other.keras")  # no such file anywhere: stays as written, a clear error later
    settings.to_file(folder / "tower.json")
    assert DiarizerSettings.from_file(folder / "tower.json").vad["model"] == str(folder / "other.keras")


def _tiny_config(tmp_path, librispeech_root, **changes):
    config = yaml.safe_load(open("experiments/configs/speech_detector.yaml"))
    config["output_dir"], config["data"]["root"] = str(tmp_path / "run"), str(librispeech_root)
    config["conversations"].update(train=6, val=2)
    config["detector"].update(channels=4, dilations=[1, 2])
    config["training"].update(epochs=2, crop_s=5.0)
    for key, value in changes.items():
        section, name = key.split(".")
        config[section][name] = value
    path = tmp_path / "speech_detector.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_vad_writes_a_loadable_detector_once(tmp_path, librispeech_root, capsys):
    from experiments.train_vad import main

    path = _tiny_config(tmp_path, librispeech_root, **{"conversations.reverb_share": 0.5})  # some in a room
    assert main(["--config", str(path), "--quiet"]) == 0
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_conversations"] == 6 and 0.0 <= summary["val_missed"] <= 1.0
    assert (run / "manifests" / "test.csv").is_file() and (run / "log.csv").is_file()
    audio = np.random.default_rng(0).normal(0, 0.1, 3 * SR).astype(np.float32)
    assert isinstance(learned_vad(audio, SR, model=str(run / "speech_detector.keras")), list)
    assert main(["--config", str(path), "--quiet"]) == 1  # never overwrites a trained detector
    assert "already holds a speech detector" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"detector.dilations": [1, 0]}, "detector.dilations"),
    ({"conversations.min_speakers": 5}, "min_speakers <= max_speakers"),
    ({"training.crop_s": 0.1}, "training.crop_s"),
    ({"conversations.reverb_share": 1.5}, "shares in [0, 1]"),
    ({"conversations.reverb_rt60_low": 0.0}, "reverb_rt60_low"),
])
def test_train_vad_bad_config_is_one_line_error(tmp_path, librispeech_root, capsys, change, message):
    from experiments.train_vad import main

    assert main(["--config", str(_tiny_config(tmp_path, librispeech_root, **change))]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_compare_vad_measures_the_learned_detector(tmp_path, real_flac, write_test_wav, capsys):
    from data_prep.audio import load_audio
    from data_prep.vad import energy_vad
    from experiments.compare_vad import main

    audio = load_audio(real_flac, SR)
    write_test_wav("audio/rec.wav", audio, SR)
    (tmp_path / "rttm").mkdir()
    (tmp_path / "rttm" / "rec.rttm").write_text("".join(
        f"SPEAKER rec 1 {s:.3f} {e - s:.3f} <NA> <NA> A <NA> <NA>\n" for s, e in energy_vad(audio, SR)))
    out = tmp_path / "table.md"
    args = ["--audio", str(tmp_path / "audio"), "--rttm", str(tmp_path / "rttm"), "--out", str(out), "--methods", "learned"]
    assert main(args) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| learned | threshold=0.4, min_silence_s=0.1 |")]
    assert len(rows) == 1
    missed = float(rows[0].split("|")[3].strip().rstrip("%"))
    assert missed < 10.0  # of a clean utterance's speech
    assert main(args + ["--speech-model", str(tmp_path / "none.keras")]) == 1
    err = capsys.readouterr().err
    assert "none.keras not found" in err and err.strip().count("\n") == 0
