"""The Resemblyzer peer (experiments/peers.py) and `experiments.benchmark --peer`.

CI does not install the optional peers (requirements-peers.txt): the tests that
run Resemblyzer skip there; the command-line contract is tested everywhere.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pyannote.core import Annotation, Segment

from data_prep.audio import load_audio


@pytest.fixture(scope="module")
def peer():
    """Resemblyzer behind the project's pipeline, with the shipped model's settings."""
    pytest.importorskip("resemblyzer")
    from experiments.peers import ResemblyzerDiarizer

    return ResemblyzerDiarizer.load()


def test_benchmark_help_mentions_peer():
    result = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--help"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and "--peer" in result.stdout and "resemblyzer" in result.stdout


def test_benchmark_names_the_same_peers_as_peers_module():
    from experiments import benchmark, peers

    assert benchmark.PEERS == peers.PEERS


def test_missing_resemblyzer_is_one_clear_line(monkeypatch, capsys):
    """Without the extra, --peer fails before any work with one `error:` line that says how to install it."""
    from experiments.benchmark import main
    from experiments.peers import MISSING, ResemblyzerDiarizer

    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # `import resemblyzer` now fails as if not installed
    assert main(["--peer", "resemblyzer"]) == 1
    error = capsys.readouterr().err.strip()
    assert error == f"error: {MISSING}" and "\n" not in error
    with pytest.raises(ValueError, match="resemblyzer is not installed"):
        ResemblyzerDiarizer()


def test_peer_embeds_windows_to_unit_norm_d_vectors(peer, real_flac):
    audio = peer.load_audio(real_flac)
    duration_s = len(audio) / peer.settings.sample_rate
    starts = np.array([0.0, 0.5, 2.0, duration_s - 0.5])  # the last window runs past the end: zero padded
    embeddings = peer.embed_windows(audio, starts)
    assert embeddings.shape == (4, 256) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # Batching does not change a window's embedding, and the shared-frames path is never taken.
    peer.settings.batch_size, batch_size = 1, peer.settings.batch_size
    try:
        np.testing.assert_allclose(peer.embed_windows(audio, starts), embeddings, atol=1e-5)
    finally:
        peer.settings.batch_size = batch_size
    assert peer.frame_split() is None


def test_peer_diarizes_two_speakers(peer, librispeech_manifest, write_test_wav):
    """A-B-A turns of two vendored speakers, 6 s each, through the project's clustering and resegmentation.

    The speech regions are given (the whole clip): the detector is the project's own, tested on its own. With
    the stop-30 detector this clip's speech is cut into four regions, and Resemblyzer then takes a second of A
    for B and most of B for A; with the region whole it gets the turns right, as with the stop-29 detector.
    """
    first, second = (load_audio(path, 16000) for path in librispeech_manifest.groupby("speaker")["path"].first()[:2])
    turn = 6 * 16000
    wav = write_test_wav("two speakers.wav", np.concatenate([first[:turn], second[:turn], first[turn:2 * turn]]), 16000)
    annotation = peer.diarize(wav, num_speakers=2, regions=[(0.0, 18.0)])
    assert isinstance(annotation, Annotation) and annotation.uri == "two speakers"
    assert len(annotation.labels()) == 2
    # The speaker who talks most inside each turn (a second in from its edges): A, B, A.
    turns = [Segment(index * 6.0 + 1.0, (index + 1) * 6.0 - 1.0) for index in range(3)]
    first_turn, second_turn, third_turn = (annotation.crop(segment).argmax() for segment in turns)
    assert first_turn == third_turn != second_turn


def test_resemblyzer_teacher_embeds_a_bank_of_windows(tiny_librispeech):
    """The distillation teacher (experiments.train, objective distill): 256-d unit-norm d-vectors per window."""
    pytest.importorskip("resemblyzer")
    from data_prep.manifest import scan_librispeech
    from data_prep.teacher_bank import build_teacher_bank
    from experiments.peers import teacher

    embed, described = teacher("resemblyzer", 16000, 1.5)
    assert described.startswith("resemblyzer ")
    manifest = scan_librispeech(tiny_librispeech).iloc[:1]
    bank = build_teacher_bank(manifest, embed, sample_rate=16000, window_s=1.5, hop_s=1.0, progress=False)
    assert bank["embedding"].shape[1] == 256 and len(bank["start"]) >= 3
    np.testing.assert_allclose(np.linalg.norm(bank["embedding"].astype(np.float32), axis=1), 1.0, atol=1e-2)
    with pytest.raises(ValueError, match="unknown teacher"):
        teacher("nobody", 16000, 1.5)


def release_heldout(folder):
    """What a release leaves in <run>/heldout: 2-4 speaker conversations and trials of both splits, and 5-8 speaker
    conversations of the validation speakers only (index files; enough for `heldout_data`)."""
    for name in ("val_conversations", "test_conversations", "val_many_conversations"):
        (folder / name).mkdir()
        (folder / name / "conversations.csv").write_text("uri\n")
    for split in ("val", "test"):
        (folder / f"{split}_trials").mkdir()
        (folder / f"{split}_trials" / "trials.txt").write_text("")


def test_heldout_data_finds_the_release_many_speaker_conversations(tmp_path):
    """The peer is calibrated and scored on the same 5-8 speaker conversations as the release, when it made them."""
    from experiments.peers import heldout_data

    release_heldout(tmp_path)
    data = heldout_data({}, tmp_path, 16000, many_conversations=0, room_conversations=0)  # nothing is simulated
    assert data["val"] == (tmp_path / "val_conversations", tmp_path / "val_trials" / "trials.txt")
    assert data["val_many"] == tmp_path / "val_many_conversations" and data["test_many"] is None
    assert data["val_rooms"] is None and data["test_rooms"] is None


def test_heldout_data_simulates_missing_many_speaker_conversations_as_release_does(tmp_path, monkeypatch):
    """A fresh run folder gets the release's 5-8 speaker conversations too, so the peer is calibrated like ours."""
    import data_prep.simulate
    from experiments.peers import heldout_data
    from experiments.release import (MANY_CONVERSATIONS, MANY_SPEAKERS, ROOM_CONVERSATIONS, ROOM_RT60_S, TEST_MANY_SEED,
                                     TEST_SEED, VAL_MANY_SEED, VAL_SEED)

    calls = []

    def fake_write_conversations(manifest, folder, **kwargs):
        calls.append((Path(folder).name, kwargs))
        Path(folder).mkdir(parents=True)
        (Path(folder) / "conversations.csv").write_text("uri\n")

    monkeypatch.setattr(data_prep.simulate, "write_conversations", fake_write_conversations)
    release_heldout(tmp_path)  # val_many present: kept as it is
    data = heldout_data({"val": None, "test": None}, tmp_path, 16000)
    assert [name for name, _ in calls] == ["val_room_conversations", "test_many_conversations", "test_room_conversations"]
    kwargs = calls[1][1]
    assert kwargs["seed"] == TEST_MANY_SEED != VAL_MANY_SEED and kwargs["num_conversations"] == MANY_CONVERSATIONS
    assert (kwargs["min_speakers"], kwargs["max_speakers"]) == MANY_SPEAKERS
    assert data["test_many"] == tmp_path / "test_many_conversations"
    # The rooms hold the 2-4 speaker conversations' own seeds: the same conversations, reverberated.
    for (_, room), seed in zip((calls[0], calls[2]), (VAL_SEED, TEST_SEED)):
        assert room["seed"] == seed and room["reverb_rt60_s"] == ROOM_RT60_S
        assert room["num_conversations"] == ROOM_CONVERSATIONS
    assert data["val_rooms"] == tmp_path / "val_room_conversations"


def test_comparison_rows_compare_many_speaker_conversations_when_both_have_them():
    from experiments.benchmark import comparison_rows

    def system(der, many=None):
        rows = {(setting, count): {"der": der, "files": 100, "count_exact": 0.8, "rtf": 0.003}
                for setting in ("full", "forgiving") for count in ("estimated", "oracle")}
        if many is not None:
            rows.update({("full many", count): {"der": many, "files": 20, "count_exact": 0.6, "rtf": 0.003}
                         for count in ("estimated", "oracle")})
        return {"trials": 10, "eer": 0.05}, rows

    rows = comparison_rows([system(0.15, 0.2), system(0.1, 0.3)], {}, {})
    many = [row for row in rows if "5-8 speakers" in row[1]]
    assert [row[0] for row in many] == ["DER full", "DER full", "speaker count exact"]
    assert many[0][2:4] == (0.2, 0.3) and "20 test conversations" in many[0][1]
    assert not any("5-8" in row[1] for row in comparison_rows([system(0.15, 0.2), system(0.1)], {}, {}))


def test_comparison_rows_compare_conversations_in_rooms_when_both_have_them():
    from experiments.benchmark import comparison_rows

    def system(der, rooms=None):
        rows = {(setting, count): {"der": der, "files": 100, "count_exact": 0.8, "rtf": 0.003}
                for setting in ("full", "forgiving") for count in ("estimated", "oracle")}
        if rooms is not None:
            rows.update({(f"{setting} rooms", count): {"der": rooms, "files": 100, "count_exact": 0.7, "rtf": 0.003}
                         for setting in ("full", "forgiving") for count in ("estimated", "oracle")})
        return {"trials": 10, "eer": 0.05}, rows

    rows = comparison_rows([system(0.15, 0.2), system(0.1, 0.3)], {}, {})
    rooms = [row for row in rows if "in rooms" in row[1]]
    assert [row[0] for row in rooms] == ["DER full", "DER full", "DER forgiving", "speaker count exact"]
    assert rooms[0][2:4] == (0.2, 0.3) and rooms[-1][2:4] == (0.7, 0.7)
    assert not any("rooms" in row[1] for row in comparison_rows([system(0.15, 0.2), system(0.1)], {}, {}))
