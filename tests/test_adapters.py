"""Corpus adapters (data_prep.adapters): VoxCeleb, a user's CSV/TSV list, RTTM recordings.

Every corpus is built on the fly in tmp_path from the vendored LibriSpeech speakers,
in the layout of the real one.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from data_prep import audio as audio_module
from data_prep.__main__ import main
from data_prep.adapters import SCANNERS, scan_rttm, scan_user_manifest, scan_voxceleb
from data_prep.audio import AudioError, load_audio
from data_prep.manifest import load_utterance, read_manifest, utterance_spans, write_manifest
from data_prep.pairs import SpeakerIndex, sample_pairs, sample_speaker_batches
from data_prep.pipeline import crop_loader

RATE = 16000
HAS_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


@pytest.fixture(scope="module")
def speech(librispeech_manifest):
    """``speech(i, seconds)``: the first ``seconds`` of vendored utterance ``i`` at 16 kHz."""
    paths = librispeech_manifest.sort_values("duration_s", ascending=False)["path"].tolist()  # long ones first

    def cut(index, seconds):
        return load_audio(paths[index], RATE, duration_s=seconds)

    return cut


def _write(path, audio, rate=RATE):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, subtype="PCM_16")
    return path


# VoxCeleb --------------------------------------------------------------------------------------------------------


def test_voxceleb_layout(tmp_path, speech):
    corpus = tmp_path / "vox1_dev_wav"
    for number, speaker in enumerate(("id10001", "id10002", "id10003")):
        for video in ("1zcIwhmdeo4", "7gWzIy6yIIk"):
            _write(corpus / "wav" / speaker / video / "00001.wav", speech(number, 1.5 if video[0] == "1" else 2.0))
    (corpus / "wav" / "id10003" / "7gWzIy6yIIk" / "00002.wav").write_text("not audio")
    _write(corpus / "wav" / "stray.wav", speech(0, 1.0))  # not in a speaker's video folder: ignored
    (tmp_path / "vox1_meta.csv").write_text("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
                                            "id10001\tA.J._Buckley\tm\tIreland\tdev\n"
                                            "id10002\tA.R._Rahman\tm\tIndia\tdev\n"
                                            "id10003\tAamir_Khan\tf\tIndia\tdev\n")
    df = scan_voxceleb(corpus)
    assert list(df.columns[:6]) == ["path", "speaker", "duration_s", "sample_rate", "gender", "video"]
    assert df["speaker"].tolist() == ["id10001"] * 2 + ["id10002"] * 2 + ["id10003"] * 2
    assert df["duration_s"].tolist() == pytest.approx([1.5, 2.0] * 3)
    assert df.groupby("speaker")["gender"].first().to_dict() == {"id10001": "M", "id10002": "M", "id10003": "F"}
    assert sorted(set(df["video"])) == ["1zcIwhmdeo4", "7gWzIy6yIIk"]
    assert [path.rsplit("/", 1)[-1] for path, _ in df.attrs["skipped"]] == ["00002.wav"]


@pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg/ffprobe not installed")
def test_voxceleb_m4a_is_decoded_by_ffmpeg_without_writing(tmp_path, speech, tree_digest):
    corpus = tmp_path / "vox2" / "dev" / "aac"
    source = speech(0, 3.0)
    wav = _write(tmp_path / "source.wav", source)
    for speaker in ("id00012", "id00015"):
        target = corpus / speaker / "21Uxsk56VDQ" / "00001.m4a"
        target.parent.mkdir(parents=True)
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), "-c:a", "aac", str(target)], check=True)
    before = tree_digest(tmp_path / "vox2")
    df = scan_voxceleb(tmp_path / "vox2", verify=True)
    assert df["speaker"].tolist() == ["id00012", "id00015"] and (df["sample_rate"] == RATE).all()
    assert df["duration_s"].tolist() == pytest.approx([3.0, 3.0], abs=0.03)
    whole = load_audio(df["path"][0], RATE)
    assert abs(len(whole) - len(source)) < 0.1 * RATE
    crop = load_audio(df["path"][0], 8000, start_s=1.0, duration_s=0.5)  # seek + resample in ffmpeg
    assert len(crop) == 4000
    reference = load_audio(wav, 8000, start_s=1.0, duration_s=0.5)
    assert np.corrcoef(crop, reference)[0, 1] > 0.95
    assert tree_digest(tmp_path / "vox2") == before  # decoded through a pipe, nothing written beside the corpus


def test_m4a_without_ffmpeg_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(audio_module, "find_decoder", lambda name: None)
    clip = tmp_path / "vox" / "id00012" / "21Uxsk56VDQ" / "00001.m4a"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"\x00" * 64)
    with pytest.raises(AudioError, match=r"00001\.m4a: m4a needs ffmpeg, which is not installed"):
        load_audio(clip, RATE)
    with pytest.raises(ValueError, match=r"00001\.m4a: m4a needs ffmpeg, which is not installed"):
        scan_voxceleb(tmp_path / "vox")
    out = tmp_path / "out"
    assert main(["--format", "voxceleb", "--root", str(tmp_path / "vox"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "needs ffmpeg" in err and not out.exists()


# A user's CSV/TSV list ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_user_manifest_whole_files_and_segments(tmp_path, speech, suffix):
    _write(tmp_path / "lists" / "audio" / "a.wav", speech(0, 4.0))
    _write(tmp_path / "lists" / "audio" / "b.flac", speech(1, 3.0))
    elsewhere = _write(tmp_path / "elsewhere" / "c.wav", speech(2, 2.0))
    sep = "\t" if suffix == ".tsv" else ","
    lines = [["path", "speaker", "start", "end"],
             ["audio/a.wav", "alice", "", ""],           # whole file, path relative to the list
             ["audio/a.wav", "alice", "0.5", "2.25"],     # a segment of it
             ["audio/b.flac", "bob", "1.0", ""],          # start only: to the end of the file
             [str(elsewhere), "carol", "", "1.5"],        # absolute path, end only
             ["audio/b.flac", "bob", "2.5", "2.0"],       # ends before it starts
             ["audio/b.flac", "bob", "x", ""],            # not a number
             ["audio/b.flac", "bob", "2.0", "9.0"],       # past the end of the file
             ["audio/missing.wav", "dave", "", ""]]       # no such file
    table = tmp_path / "lists" / f"list{suffix}"
    table.write_text("".join(sep.join(line) + "\n" for line in lines))
    df = scan_user_manifest(table)
    assert df["speaker"].tolist() == ["alice", "alice", "bob", "carol"]
    assert df["duration_s"].tolist() == pytest.approx([4.0, 1.75, 2.0, 1.5])
    assert df["start_s"].tolist()[1:] == [0.5, 1.0, 0.0] and np.isnan(df["start_s"][0])
    assert df["end_s"].tolist()[1:] == pytest.approx([2.25, 3.0, 1.5]) and np.isnan(df["end_s"][0])
    assert df["path"][0] == str(tmp_path / "lists" / "audio" / "a.wav")
    reasons = [reason for _, reason in df.attrs["skipped"]]
    assert [reason.split(": ", 1)[0].rsplit(":", 1)[-1] for reason in reasons] == ["6", "7", "8", "9"]
    assert "ends before it starts" in reasons[0] and "not a number" in reasons[1]
    assert "ends after the end of the file" in reasons[2] and "no such file" in reasons[3]
    # Written and read back, the segment columns survive, and the rows load only their segment.
    write_manifest(df, tmp_path / "out" / "all.csv")
    back = read_manifest(tmp_path / "out" / "all.csv")
    pd.testing.assert_frame_equal(back[["start_s", "end_s"]], df[["start_s", "end_s"]])
    offsets, lengths = utterance_spans(back)
    assert [len(load_utterance(back["path"][i], RATE, offsets[i], lengths[i])) for i in range(4)] == \
        [4 * RATE, 28000, 2 * RATE, 24000]
    # A manifest written by python -m data_prep is itself a list this adapter reads.
    again = scan_user_manifest(tmp_path / "out" / "all.csv")
    pd.testing.assert_frame_equal(again[["path", "speaker", "start_s", "end_s"]],
                                  df[["path", "speaker", "start_s", "end_s"]])


def test_user_manifest_of_whole_files_has_no_segment_columns(tmp_path, speech):
    _write(tmp_path / "a.wav", speech(0, 1.0))
    (tmp_path / "list.txt").write_text("speaker;path\nalice;a.wav\n")  # sniffed from the header
    df = scan_user_manifest(tmp_path / "list.txt")
    assert list(df.columns) == ["path", "speaker", "duration_s", "sample_rate"] and df["speaker"][0] == "alice"


def test_user_manifest_needs_a_header(tmp_path, speech):
    _write(tmp_path / "a.wav", speech(0, 1.0))
    (tmp_path / "list.csv").write_text("a.wav,alice\n")
    with pytest.raises(ValueError, match="list.csv: the first line must be a header naming the columns path and speaker"):
        scan_user_manifest(tmp_path / "list.csv")
    with pytest.raises(ValueError, match="is a directory"):
        scan_user_manifest(tmp_path)


def _tones(seconds_and_hz):
    """Consecutive sine tones, ``[(seconds, hz), ...]``, at 16 kHz."""
    return np.concatenate([0.3 * np.sin(2 * np.pi * hz * np.arange(int(seconds * RATE)) / RATE)
                           for seconds, hz in seconds_and_hz]).astype(np.float32)


def _share_at(crop, hz):
    """Share of the crop's spectral energy within 50 Hz of ``hz``."""
    spectrum = np.abs(np.fft.rfft(crop * np.hanning(len(crop)))) ** 2
    frequencies = np.fft.rfftfreq(len(crop), 1 / RATE)
    return spectrum[np.abs(frequencies - hz) < 50].sum() / spectrum.sum()


@pytest.mark.parametrize("cache_mb", [2048, 0])  # crops sliced from memory, or seek-read from the file
def test_training_crops_stay_inside_the_segment(tmp_path, cache_mb):
    # 300 Hz outside the segments, 1000 Hz inside: any audio from outside would show at 300 Hz.
    recording = _write(tmp_path / "rec.wav", _tones([(2.0, 300), (2.5, 1000), (1.0, 300), (0.6, 1000), (2.0, 300)]))
    manifest = pd.DataFrame({"path": [str(recording)] * 2, "speaker": ["a", "b"], "duration_s": [2.5, 0.6],
                             "sample_rate": RATE, "start_s": [2.0, 5.5], "end_s": [4.5, 6.1]})
    pairs = sample_pairs(manifest, 40, seed=0)
    crop = crop_loader(manifest, sample_rate=RATE, window_s=1.0, cache_mb=cache_mb)
    for row, seed in zip(pairs["first"], pairs["crop_seed"]):
        piece = crop(row, np.random.default_rng(int(seed)))
        assert len(piece) == RATE and _share_at(piece, 300) < 1e-3, row
        if row == 1:  # the 0.6 s segment: its audio, then zero padding, never what follows it
            assert np.abs(piece[int(0.6 * RATE):]).max() == 0 and np.abs(piece[int(0.5 * RATE):int(0.6 * RATE)]).max() > 0


def test_feature_bank_reads_only_the_segment(tmp_path):
    from data_prep.feature_bank import feature_bank

    recording = _write(tmp_path / "rec.wav", _tones([(1.0, 300), (1.5, 1000), (1.0, 300)]))
    manifest = pd.DataFrame({"path": [str(recording)], "speaker": ["a"], "duration_s": [1.5], "sample_rate": RATE,
                             "start_s": [1.0], "end_s": [2.5]})
    features, _ = feature_bank(manifest, lambda batch: batch[:, :, :], sample_rate=RATE)
    assert features[0].shape == (int(1.5 * RATE), 1) and _share_at(features[0][:, 0].astype(np.float32), 300) < 1e-3


# RTTM recordings ---------------------------------------------------------------------------------------------------


def _meeting(speech):
    """13 s of speakers a, b, c: a and b overlap over 3-4 s, c speaks only 0.6 s (too short a turn)."""
    a, b, c = speech(0, 6.4), speech(1, 7.0), speech(2, 0.6)
    audio = np.zeros(13 * RATE, np.float32)
    turns = [(0.0, 4.0, "spk_a", a[: 4 * RATE]), (3.0, 7.0, "spk_b", b[: 4 * RATE]),
             (7.0, 7.6, "spk_c", c), (7.6, 10.0, "spk_a", a[4 * RATE:]), (10.0, 13.0, "spk_b", b[4 * RATE:])]
    for start, end, _, piece in turns:
        audio[int(start * RATE):int(start * RATE) + len(piece)] += piece
    return audio, [(start, end, label) for start, end, label, _ in turns]


@pytest.fixture
def rttm_corpus(tmp_path, speech):
    """Two recordings (one with a UEM), their RTTM in a sub-folder, and one audio file without turns."""
    root = tmp_path / "corpus"
    audio, turns = _meeting(speech)
    _write(root / "wav" / "meeting1.wav", audio)
    _write(root / "wav" / "meeting2.flac", np.concatenate([speech(3, 3.0), speech(4, 3.0)]))
    _write(root / "wav" / "unlabelled.wav", speech(5, 1.0))
    lines = [f"SPEAKER meeting1 1 {start:.3f} {end - start:.3f} <NA> <NA> {label} <NA> <NA>" for start, end, label in turns]
    lines += ["SPEAKER meeting2 1 0.000 3.000 <NA> <NA> spk_a <NA> <NA>",
              "SPEAKER meeting2 1 3.000 3.000 <NA> <NA> spk_d <NA> <NA>"]
    (root / "rttm").mkdir()
    (root / "rttm" / "all.rttm").write_text("\n".join(lines) + "\n")
    (root / "rttm" / "meeting2.uem").write_text("meeting2 1 0.500 5.000\n")
    return root, audio


def test_rttm_turns_become_segments_without_overlap_or_short_turns(rttm_corpus):
    root, meeting = rttm_corpus
    df = scan_rttm(root)
    segments = {(row.speaker, row.start_s, row.end_s) for row in df.itertuples()}
    assert segments == {("meeting1/spk_a", 0.0, 3.0), ("meeting1/spk_a", 7.6, 10.0),
                        ("meeting1/spk_b", 4.0, 7.0), ("meeting1/spk_b", 10.0, 13.0),
                        ("meeting2/spk_a", 0.5, 3.0), ("meeting2/spk_d", 3.0, 5.0)}  # cut to the UEM
    assert not any(start < 4.0 and end > 3.0 for _, start, end in segments if _.startswith("meeting1"))  # overlap
    assert "meeting1/spk_c" not in set(df["speaker"])  # its only turn (0.6 s) is shorter than the window
    assert df["duration_s"].tolist() == pytest.approx((df["end_s"] - df["start_s"]).tolist())
    assert set(df["recording"]) == {"meeting1", "meeting2"} and df.attrs["skipped"] == []
    excluded = df.attrs["excluded"]
    assert excluded["overlap_s"] == pytest.approx(1.0) and excluded["short_pieces"] == 1
    assert excluded["short_s"] == pytest.approx(0.6) and excluded["unscored_s"] == pytest.approx(1.5)
    assert excluded["unannotated_files"] == 1
    # A row's audio is exactly its stretch of the recording.
    row = df[(df["speaker"] == "meeting1/spk_b") & (df["start_s"] == 4.0)].iloc[0]
    offsets, lengths = utterance_spans(df)
    audio = load_utterance(row["path"], RATE, offsets[row.name], lengths[row.name])
    np.testing.assert_allclose(audio, meeting[4 * RATE:7 * RATE], atol=1e-4)


def test_rttm_options_min_duration_and_global_speakers(rttm_corpus):
    root, _ = rttm_corpus
    df = scan_rttm(root, min_duration_s=0.5, global_speakers=True)
    assert set(df["speaker"]) == {"spk_a", "spk_b", "spk_c", "spk_d"}  # spk_a of both meetings is one person
    assert set(df.loc[df["speaker"] == "spk_a", "recording"]) == {"meeting1", "meeting2"}
    assert len(scan_rttm(root, min_duration_s=2.5)) == 4  # of 3.0, 2.4, 3.0, 3.0, 2.5 and 2.0 s
    with pytest.raises(ValueError, match="min_duration_s"):
        scan_rttm(root, min_duration_s=0)


def test_rttm_reports_recordings_without_audio_and_bad_files(rttm_corpus):
    root, _ = rttm_corpus
    (root / "rttm" / "extra.rttm").write_text("SPEAKER ghost 1 0.0 2.0 <NA> <NA> x <NA> <NA>\nSPEAKER broken 1\n")
    (root / "rttm" / "more.rttm").write_text("SPEAKER ghost 1 0.0 2.0 <NA> <NA> x <NA> <NA>\n")
    df = scan_rttm(root)
    reasons = [reason for _, reason in df.attrs["skipped"]]
    assert len(reasons) == 2 and "extra.rttm:2: malformed RTTM line" in reasons[0]
    assert "recording ghost: no audio file named ghost" in reasons[1]
    assert df["speaker"].nunique() == 4


# Command line, split and training config --------------------------------------------------------------------------


def test_cli_rttm_summary_split_and_source_untouched(rttm_corpus, tmp_path, capsys, tree_digest):
    root, _ = rttm_corpus
    before = tree_digest(root)
    out = tmp_path / "manifests"
    code = main(["--format", "rttm", "--root", str(root), "--out", str(out), "--val-speakers", "1",
                 "--test-speakers", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    assert "segments" in captured.out and "minutes per speaker (all): min 0.03, median 0.07, max 0.10" in captured.out
    assert "1.0 s of overlapped speech, 1 pieces shorter than 1 s" in captured.out
    assert "audio files without RTTM turns: 1" in captured.out and "skipped files: 0" in captured.out
    parts = {name: read_manifest(out / f"{name}.csv") for name in ("all", "train", "val", "test")}
    assert len(parts["all"]) == 6 and {"start_s", "end_s", "recording"} <= set(parts["all"].columns)
    speakers = [set(parts[name]["speaker"]) for name in ("train", "val", "test")]
    assert [len(s) for s in speakers] == [2, 1, 1] and not (speakers[0] & speakers[1] or speakers[0] & speakers[2])
    assert tree_digest(root) == before


def test_cli_manifest_format_and_its_errors(tmp_path, speech, capsys):
    corpus = tmp_path / "corpus"
    for number, speaker in enumerate("abcd"):
        _write(corpus / f"{speaker}.wav", speech(number, 1.0))
    (corpus / "list.csv").write_text("path,speaker\n" + "".join(f"{s}.wav,{s}\n" for s in "abcd") + "gone.wav,e\n")
    out = tmp_path / "out"
    args = ["--format", "manifest", "--root", str(corpus / "list.csv"), "--out", str(out)]
    code = main([*args, "--val-speakers", "1", "--test-speakers", "1"])
    captured = capsys.readouterr()
    assert code == 1  # a row was left out: reported, the rest written
    assert captured.err.count("\n") == 1 and captured.err.startswith("error:") and "gone.wav: no such file" in captured.err
    assert "utterances" in captured.out and "skipped files: 1 (reported above)" in captured.out
    assert "       1  no such file" in captured.out
    assert read_manifest(out / "all.csv")["speaker"].tolist() == list("abcd")
    for bad, message in ((["--format", "manifest", "--root", str(corpus), "--out", str(tmp_path / "o1")],
                          "is a directory"),
                         (["--format", "manifest", "--root", str(corpus / "list.csv"), "--out", str(corpus / "m")],
                          "must not be inside the corpus folder"),
                         (["--format", "folders", "--root", str(corpus), "--out", str(tmp_path / "o2"),
                           "--global-speakers"], "apply only to --format rttm"),
                         (["--format", "rttm", "--root", str(corpus), "--out", str(tmp_path / "o3")],
                          "no .rttm files found")):
        assert main(bad) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3")) and not (corpus / "m").exists()


def test_training_config_accepts_the_new_formats(tmp_path, rttm_corpus):
    from experiments.config import CHOICES
    from experiments.train import prepare_manifests

    assert set(CHOICES["data.format"]) == set(SCANNERS)
    root, _ = rttm_corpus
    config = {"seed": 0, "data": {"format": "rttm", "root": str(root), "val_speakers": 1, "test_speakers": 1,
                                  "split_seed": 0}}
    splits = prepare_manifests(config, tmp_path / "run")
    assert sum(len(part) for part in splits.values()) == 6
    assert read_manifest(tmp_path / "run" / "manifests" / "train.csv")["start_s"].notna().all()


# Pairs at scale ----------------------------------------------------------------------------------------------------


def test_speaker_index_and_pairs_are_unchanged():
    rng = np.random.default_rng(5)
    manifest = pd.DataFrame({"path": [f"p{i}.wav" for i in range(3000)],
                             "speaker": [f"s{x:03d}" for x in rng.integers(0, 120, 3000)],
                             "duration_s": rng.uniform(1, 20, 3000), "sample_rate": RATE})
    manifest.loc[manifest.index[:5], "speaker"] = "lonely"
    manifest.loc[7, "speaker"] = "single"
    index = SpeakerIndex(manifest)
    codes = pd.factorize(manifest["speaker"], sort=True)[0]
    for code in (0, 5, index.num_speakers - 1):
        np.testing.assert_array_equal(index.rows_of(code), np.flatnonzero(codes == code))

    def digest(table):
        return hashlib.sha256(np.ascontiguousarray(table.to_numpy(dtype=np.int64)).tobytes()).hexdigest()[:16]

    # Drawn by the per-speaker-scan sampler before the index replaced it: the same seeds give the same pairs.
    assert digest(sample_pairs(manifest, 999, 0)) == "3962b84b3901578b"
    assert digest(sample_speaker_batches(manifest, 7, 8, 4, 0)) == "cf18f94e2ed2a60e"


def test_benchmark_manifest_runs_small(repo_root):
    usage = subprocess.run([sys.executable, "-m", "experiments.benchmark_manifest", "--help"], cwd=repo_root,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "--rows" in usage.stdout
    result = subprocess.run([sys.executable, "-m", "experiments.benchmark_manifest", "--rows", "3000",
                             "--speakers", "40", "--pairs", "2000", "--stages", "read", "pairs"],
                            cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "3,000 rows" in result.stdout and "pairs" in result.stdout and "peak RSS MB" in result.stdout
