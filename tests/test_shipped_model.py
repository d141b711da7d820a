"""The shipped model still works as measured: a guard against committing a broken or stale model."""

import json

import numpy as np

from data_prep.rttm import read_rttm
from siamese import Diarizer
from siamese.metrics import DER_SETTINGS, diarization_error, equal_error_rate


def test_sidecar_settings_are_calibrated(shipped_model):
    settings = json.loads(shipped_model.with_suffix(".json").read_text())
    assert settings["sample_rate"] == 16000 and settings["verification_threshold"] is not None
    assert 0.0 < settings["threshold"] < 2.0  # embeddings are unit-norm, so distances lie in [0, 2]


def test_readme_python_example(shipped_model, test_conversations, tmp_path):
    """The README's three lines, on a held-out conversation."""
    diarizer = Diarizer.load()
    annotation = diarizer.diarize(test_conversations["wav_path"][0], rttm=tmp_path / "meeting.rttm")
    windows = diarizer.embed(test_conversations["wav_path"][0])
    assert annotation.to_rttm().startswith("SPEAKER")
    assert (tmp_path / "meeting.rttm").read_text() == annotation.to_rttm()
    assert windows.embeddings.shape == (len(windows.starts), diarizer.tower.output.shape[-1])  # 128 for the shipped tower


def test_held_out_conversations_are_diarized_well(shipped_model, test_conversations):
    """Oracle-count DER (full) on three test-speaker conversations; the card reports 100 of them."""
    diarizer = Diarizer.load(shipped_model)
    errors = scored = 0.0
    for row in test_conversations.itertuples():
        reference = read_rttm(row.rttm_path)[row.uri]
        hypothesis = diarizer.diarize(row.wav_path, num_speakers=len(reference.labels()))
        result = diarization_error(reference, hypothesis, **DER_SETTINGS["full"])
        errors, scored = errors + result["der"] * result["scored_s"], scored + result["scored_s"]
    assert errors / scored < 0.25  # 15.1% when the noisy fine-tuned model was first shipped


def test_test_speakers_are_separated(shipped_model, test_split):
    """EER over 1.5 s crops of eight test speakers, two crops each from the middle of their utterance."""
    from data_prep.audio import load_audio

    diarizer = Diarizer.load(shipped_model)
    rows = test_split["test"].drop_duplicates("speaker").head(8)
    embeddings, speakers = [], []
    for row in rows.itertuples():
        audio = load_audio(row.path, 16000)
        middle = len(audio) // 2
        for start in (middle - 32000, middle + 8000):
            embeddings.append(diarizer.embed_utterance(audio[start:start + 24000]))
            speakers.append(row.speaker)
    distances, labels = [], []
    for i in range(len(embeddings)):
        for j in range(i + 1, len(embeddings)):
            distances.append(np.linalg.norm(embeddings[i] - embeddings[j]))
            labels.append(int(speakers[i] == speakers[j]))
    eer, _ = equal_error_rate(distances, labels)
    assert eer < 0.25


def test_shared_frames_match_per_window_embeddings(shipped_model, test_conversations):
    """Pooling frames computed once per recording gives the embeddings of separate windows,
    up to the zero padding that separate windows see at their edges, and pools the right frames: each shared
    embedding is much closer to its own window's than to the window 0.5 s later. How close depends on the tower
    (mean cosine 0.89-0.96 on three test conversations for the stop-22 tower, against 0.79-0.84 for the next
    window; 0.95-0.98 for the stop-20 tower). Compared before an LDA projection, which whitens (so magnifies)
    those edge differences; tests/test_lda.py checks the projection ends the shared path."""
    import keras

    from siamese.lda import LDA_LAYER

    diarizer = Diarizer.load(shipped_model)
    names = [layer.name for layer in diarizer.tower.layers]
    if LDA_LAYER in names:
        before = diarizer.tower.layers[names.index(LDA_LAYER) - 1]
        diarizer = Diarizer(keras.Model(diarizer.tower.input, before.output), diarizer.settings)
    audio = diarizer.load_audio(test_conversations["wav_path"][0])
    starts = np.arange(0.0, len(audio) / 16000 - 1.0, 0.5)
    shared = diarizer.embed_windows_shared(audio, starts)
    separate = diarizer.embed_windows(audio, starts)
    cosine = np.sum(shared * separate, axis=1)  # both unit-norm
    shifted = np.sum(shared[:-1] * separate[1:], axis=1)  # each shared window against the next separate one
    assert shared.shape == separate.shape and np.mean(cosine) > 0.85
    assert np.mean(cosine) > np.mean(shifted) + 0.05


def test_flatten_towers_have_no_shared_frames():
    from sincnet_keras import build_encoder

    assert Diarizer(build_encoder("original")).frame_split() is None
    assert Diarizer(build_encoder("tiny"), None).frame_split() is not None


def test_benchmark_measure_reports_the_median_run_and_its_steps(shipped_model, real_flac):
    """What `experiments.benchmark` times in each fresh process, here in this one on a real utterance."""
    from experiments.benchmark import STAGES, measure

    wall_s, peak_mb, hypothesis, shared, stage_s = measure(str(shipped_model), None, str(real_flac), "utt", repeats=3)
    assert wall_s > 0 and peak_mb > 0 and shared is True
    assert hypothesis.uri == "utt" and len(hypothesis.labels()) >= 1
    assert set(stage_s) == set(STAGES) and sum(stage_s.values()) <= wall_s * 1.01


def test_benchmark_rejects_zero_repeats():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--repeats", "0"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 2 and "--repeats must be at least 1" in result.stderr
