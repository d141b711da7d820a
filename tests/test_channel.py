"""The telephone channel: a new domain built from the vendored speech, same speakers and split."""

import numpy as np
import pandas as pd
import soundfile as sf

from data_prep.channel import main, telephone, write_telephone_corpus


def test_telephone_is_narrowband_8khz():
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 16000).astype(np.float32)  # white: energy at every frequency
    out = telephone(audio, 16000, np.random.default_rng(1))
    assert out.dtype == np.float32 and len(out) == 8000 and np.abs(out).max() <= 1.0
    power = np.abs(np.fft.rfft(out)) ** 2
    hz = np.fft.rfftfreq(len(out), 1 / 8000)
    inside = power[(hz > 500) & (hz < 3000)].mean()
    assert power[hz < 100].mean() < 0.05 * inside and power[hz > 3800].mean() < 0.05 * inside


def test_corpus_keeps_speakers_and_genders_and_refuses_the_source_folder(librispeech_manifest, tmp_path, capsys):
    manifest = librispeech_manifest.head(3).reset_index(drop=True)
    listing = write_telephone_corpus(manifest, tmp_path / "phone", seed=0)
    assert list(listing["speaker"]) == [str(s) for s in manifest["speaker"]]
    assert list(listing["gender"]) == list(manifest["gender"])
    assert pd.read_csv(tmp_path / "phone" / "manifest.csv", dtype=str)["path"].tolist() == listing["path"].tolist()
    for path, source in zip(listing["path"], manifest["path"]):
        assert sf.info(path).samplerate == 8000
        assert abs(sf.info(path).duration - sf.info(source).duration) < 0.01
    source_dir = str(manifest["path"][0]).rsplit("/", 1)[0]
    csv = tmp_path / "list.csv"
    manifest.head(1).to_csv(csv, index=False)
    assert main(["--manifest", str(csv), "--out", source_dir]) == 1
    assert "must not be a folder of the source audio" in capsys.readouterr().err
    assert main(["--manifest", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x")]) == 1
