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
