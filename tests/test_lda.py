"""Tests for the LDA back end (siamese.lda) and the command that fits it on a run (experiments.lda)."""

import json

import keras
import numpy as np
import pytest

from data_prep.manifest import scan_librispeech, write_manifest
from experiments.lda import main as lda_main
from siamese.diarizer import Diarizer, DiarizerSettings
from siamese.lda import fit_lda, with_lda
from sincnet_keras import build_encoder


def _speakers(num_speakers=12, per_speaker=40, seed=0):
    """Speakers who differ along 2 of 8 dimensions, under a within-speaker nuisance 5x larger on the other 6."""
    rng = np.random.default_rng(seed)
    means = np.zeros((num_speakers, 8))
    means[:, :2] = rng.normal(0.0, 1.0, (num_speakers, 2))
    labels = np.repeat(np.arange(num_speakers), per_speaker)
    x = means[labels] + rng.normal(0.0, 0.2, (len(labels), 8))
    x[:, 2:] += rng.normal(0.0, 5.0, (len(labels), 6))
    return x, labels


def _nearest_mean_accuracy(x, labels):
    means = np.stack([x[labels == k].mean(axis=0) for k in np.unique(labels)])
    return np.mean(np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), axis=1) == labels)


def test_lda_keeps_the_directions_that_tell_speakers_apart():
    x, labels = _speakers()
    mean, projection = fit_lda(x, labels, dims=2)
    assert mean.shape == (8,) and projection.shape == (8, 2)
    held_out, held_labels = _speakers(seed=1)  # new windows of the same kind: a projection, not a memory
    projected = (held_out - mean) @ projection
    assert _nearest_mean_accuracy(projected, held_labels) > _nearest_mean_accuracy(held_out, held_labels) + 0.3
    # The projection ignores the nuisance dimensions and whitens the variation within a speaker.
    assert np.abs(projection[2:]).max() < 0.05 * np.abs(projection[:2]).max()
    fitted = (x - mean) @ projection
    within = np.mean([np.var(fitted[labels == k], axis=0) for k in np.unique(labels)], axis=0)
    np.testing.assert_allclose(within, 1.0, rtol=0.15)


@pytest.mark.parametrize("problem, pattern", [
    ({"dims": 12}, "dims must be between 1 and 8"),
    ({"dims": 0}, "dims must be between"),
    ({"shrinkage": 1.5}, "shrinkage"),
    ({"one_speaker": True}, "at least two speakers"),
])
def test_lda_refuses_what_it_cannot_fit(problem, pattern):
    x, labels = _speakers()
    if problem.pop("one_speaker", False):
        labels = np.zeros_like(labels)
    with pytest.raises(ValueError, match=pattern):
        fit_lda(x, labels, **{"dims": 2, **problem})


def test_tower_with_lda_projects_loads_safely_and_shares_frames(tmp_path):
    keras.utils.set_random_seed(0)
    tower = build_encoder("tiny")
    rng = np.random.default_rng(0)
    mean, projection = rng.normal(size=32).astype(np.float32), rng.normal(size=(32, 5)).astype(np.float32)
    model = with_lda(tower, mean, projection)
    audio = rng.normal(0.0, 0.1, (3, 4000, 1)).astype(np.float32)
    expected = (np.asarray(tower(audio)) - mean) @ projection
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(model(audio)), expected, rtol=1e-4, atol=1e-5)
    model.save(tmp_path / "lda.keras")
    loaded = keras.saving.load_model(tmp_path / "lda.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(np.asarray(loaded(audio)), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="already ends in an LDA"):
        with_lda(loaded, mean, projection)
    with pytest.raises(ValueError, match="projection must be"):
        with_lda(tower, mean[:4], projection[:4])
    # The diarizer's shared-frame path (frames once, pooling per window, then the head) ends in the projection.
    settings = DiarizerSettings(sample_rate=8000, window_s=0.5, hop_s=0.25)
    signal = rng.normal(0.0, 0.1, 16000).astype(np.float32)
    starts = np.arange(0.0, 1.5, 0.25)
    shared = Diarizer(loaded, settings).embed_windows_shared(signal, starts)
    expected = (Diarizer(tower, settings).embed_windows_shared(signal, starts) - mean) @ projection
    np.testing.assert_allclose(shared, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)

def _run(folder, librispeech_root):
    """A minimal training run: config, tower card, the tiny tower, and a split whose training part has 6 speakers."""
    (folder / "manifests").mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "tower.json").write_text('{"sample_rate": 8000, "window_s": 0.5}')
    (folder / "log.csv").write_text("epoch,val_loss\n0,0.5\n")
    write_manifest(scan_librispeech(librispeech_root), folder / "manifests" / "train.csv")
    keras.utils.set_random_seed(0)
    build_encoder("tiny").save(folder / "tower.keras")


def test_lda_command_writes_a_run_folder_with_the_projected_tower(tmp_path, tiny_librispeech):
    _run(tmp_path / "run", tiny_librispeech)
    args = ["--run", str(tmp_path / "run"), "--out", str(tmp_path / "lda"), "--dims", "3", "--max-seconds", "4"]
    assert lda_main(args) == 0
    out = tmp_path / "lda"
    tower = keras.saving.load_model(out / "tower.keras", safe_mode=True, compile=False)
    assert tower.output.shape[-1] == 3 and tower.get_layer("lda") is not None
    card = json.loads((out / "tower.json").read_text())
    assert card["sample_rate"] == 8000 and card["lda"]["dims"] == 3 and card["lda"]["speakers"] == 6
    assert (out / "log.csv").is_file() and (out / "manifests" / "train.csv").is_file()
    assert not (tmp_path / "lda.partial").exists()
    # Seeded: the same command gives the same projection.
    assert lda_main([*args[:3], str(tmp_path / "again"), *args[4:]]) == 0
    again = keras.saving.load_model(tmp_path / "again" / "tower.keras", safe_mode=True, compile=False)
    np.testing.assert_array_equal(np.asarray(again.get_layer("lda").kernel), np.asarray(tower.get_layer("lda").kernel))


@pytest.mark.parametrize("problem", ["exists", "missing", "dims", "copies"])
def test_lda_command_refuses_bad_input_with_one_line(tmp_path, tiny_librispeech, capsys, problem):
    _run(tmp_path / "run", tiny_librispeech)
    args = ["--run", str(tmp_path / "run"), "--out", str(tmp_path / "lda"), "--max-seconds", "2", "--dims", "3"]
    if problem == "exists":
        (tmp_path / "lda").mkdir()
    if problem == "missing":
        (tmp_path / "run" / "tower.keras").unlink()
    if problem == "dims":
        args += ["--dims", "6"]  # 6 speakers allow at most 5
    if problem == "copies":
        args += ["--noisy-copies", "-1"]
    assert lda_main(args) == 1
    error = capsys.readouterr().err
    assert error.startswith("error:") and len(error.strip().splitlines()) == 1
    if problem != "exists":
        assert not (tmp_path / "lda").exists()
    assert not (tmp_path / "lda.partial").exists()
