"""The command-line contracts: diarize, verify, evaluate, quickstart."""

import subprocess
import sys

import numpy as np
import soundfile as sf

from data_prep.rttm import read_rttm
from experiments.diarize import main as diarize_main
from experiments.evaluate import main as evaluate_main
from experiments.verify import main as verify_main


def test_diarize_writes_one_rttm_per_input_named_by_stem(tmp_path, shipped_model, test_conversations):
    wavs = list(test_conversations["wav_path"])[:2]
    assert diarize_main([*wavs, "--out-dir", str(tmp_path / "out")]) == 0
    for wav in wavs:
        stem = wav.rsplit("/", 1)[-1][:-4]
        annotations = read_rttm(tmp_path / "out" / f"{stem}.rttm")
        assert list(annotations) == [stem] and len(annotations[stem].labels()) >= 1


def test_diarize_any_rate_and_stereo_with_known_speaker_count(tmp_path, shipped_model, test_conversations):
    audio, rate = sf.read(test_conversations["wav_path"][0])
    stereo = tmp_path / "stereo 44k.flac"  # a space in the name, another rate, two channels
    import soxr

    resampled = soxr.resample(audio, rate, 44100)
    sf.write(stereo, np.stack([resampled, 0.5 * resampled], axis=1), 44100)
    assert diarize_main([str(stereo), "--out-dir", str(tmp_path), "--num-speakers", "2"]) == 0
    annotation = read_rttm(tmp_path / "stereo 44k.rttm")["stereo_44k"]  # RTTM ids cannot hold blanks
    assert len(annotation.labels()) == 2


def test_diarize_reports_a_bad_file_and_processes_the_rest(tmp_path, shipped_model, test_conversations, capsys):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio")
    good = test_conversations["wav_path"][0]
    code = diarize_main([str(tmp_path / "missing.wav"), str(not_audio), good, "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "missing.wav" in err and "notes.wav" in err and "Traceback" not in err
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [good.rsplit("/", 1)[-1][:-4] + ".rttm"]


def test_diarize_silence_gives_an_empty_rttm(tmp_path, shipped_model):
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(16000 * 3), 16000)
    assert diarize_main([str(silent), "--out-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "silence.rttm").read_text() == ""


def test_verify_appends_a_distance_to_each_line(tmp_path, shipped_model, test_conversations):
    a, b = test_conversations["wav_path"][:2]
    trials = tmp_path / "trials.txt"
    trials.write_text(f"{a} {a} target extra\n{a} {b}\n")
    assert verify_main(["--trials", str(trials), "--out", str(tmp_path / "scores.txt")]) == 0
    lines = (tmp_path / "scores.txt").read_text().splitlines()
    assert lines[0].startswith(f"{a} {a} target extra ") and lines[1].startswith(f"{a} {b} ")
    same, different = (float(line.split()[-1]) for line in lines)
    assert same < 1e-4 < different


def test_verify_missing_file_fails_without_output(tmp_path, shipped_model, test_conversations, capsys):
    trials = tmp_path / "trials.txt"
    trials.write_text(f"{test_conversations['wav_path'][0]} {tmp_path / 'gone.wav'}\n")
    assert verify_main(["--trials", str(trials), "--out", str(tmp_path / "scores.txt")]) == 1
    assert "gone.wav" in capsys.readouterr().err
    assert not (tmp_path / "scores.txt").exists()


def test_evaluate_writes_der_tables(tmp_path, shipped_model, test_conversations):
    folder = test_conversations["wav_path"][0].rsplit("/", 1)[0]
    assert evaluate_main(["--audio", folder, "--rttm", folder, "--out-dir", str(tmp_path)]) == 0
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())["diarization"]
    assert {(row["setting"], row["speakers"]) for row in summary} == {
        ("full", "oracle"), ("full", "estimated"), ("forgiving", "oracle"), ("forgiving", "estimated")}
    assert all(0.0 <= row["der"] <= 1.0 for row in summary)


def test_every_command_has_help(repo_root):
    """Every module with a command line (a `__main__` block) answers --help, including ones added later."""
    commands = [path for folder in ("experiments", "data_prep") for path in sorted((repo_root / folder).glob("*.py"))
                if '__name__ == "__main__"' in path.read_text()]
    modules = [f"{path.parent.name}" if path.stem == "__main__" else f"{path.parent.name}.{path.stem}" for path in commands]
    assert {"experiments.train", "experiments.diarize", "experiments.lda", "data_prep"} <= set(modules)
    for module in modules:
        result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=repo_root)
        assert result.returncode == 0 and "usage" in result.stdout, module


def test_diarize_same_stem_twice_keeps_the_first_and_reports_the_second(tmp_path, shipped_model, test_conversations):
    first = test_conversations["wav_path"][0]
    copy = tmp_path / "elsewhere" / first.rsplit("/", 1)[-1].replace(".wav", ".flac")
    copy.parent.mkdir()
    sf.write(copy, sf.read(first)[0], 16000)
    code = diarize_main([first, str(copy), "--out-dir", str(tmp_path / "out")])
    assert code == 1
    assert len(list((tmp_path / "out").iterdir())) == 1


def test_diarize_a_quiet_recording(tmp_path, shipped_model, test_conversations):
    """A recording made with a low gain (-60 dB) is still diarized: the level does not matter."""
    audio, rate = sf.read(test_conversations["wav_path"][0], dtype="float32")
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, audio * 0.001, rate, subtype="FLOAT")
    assert diarize_main([str(quiet), "--out-dir", str(tmp_path), "--num-speakers", "2"]) == 0
    assert len(read_rttm(tmp_path / "quiet.rttm")["quiet"].labels()) == 2


def test_verify_bad_trials_files_are_one_line_errors(tmp_path, shipped_model, capsys):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(bytes(range(256)))
    for trials, message in ((tmp_path / "none.txt", "trials file not found"), (binary, "not a text file")):
        assert verify_main(["--trials", str(trials), "--out", str(tmp_path / "scores.txt")]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "scores.txt").exists()
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert verify_main(["--trials", str(empty), "--out", str(tmp_path / "scores.txt")]) == 0
    assert (tmp_path / "scores.txt").read_text() == ""


def test_calibrate_chooses_speech_detection_and_threshold_beside_a_copy(tmp_path, shipped_model, test_conversations):
    import json
    import shutil

    from experiments.calibrate import main as calibrate_main
    from siamese.diarizer import DEFAULT_MODEL, sidecar_path

    model = tmp_path / "copy.keras"
    shutil.copyfile(DEFAULT_MODEL, model)
    shutil.copyfile(sidecar_path(DEFAULT_MODEL), sidecar_path(model))
    shipped = sidecar_path(DEFAULT_MODEL).read_text()
    folder = str(test_conversations["wav_path"][0]).rsplit("/", 1)[0]
    assert calibrate_main(["--model", str(model), "--audio", folder, "--rttm", folder, "--vad", "webrtc",
                           "--grid", "0.5", "1.2", "0.1"]) == 0
    settings = json.loads(sidecar_path(model).read_text())
    assert settings["vad"]["method"] == "webrtc" and settings["vad"]["aggressiveness"] in (0, 1, 2, 3)
    assert 0.5 <= settings["threshold"] < 1.2
    assert sidecar_path(DEFAULT_MODEL).read_text() == shipped  # only the copy's sidecar changed
    # The trimmed WebRTC settings are stored as the detector they run (a sidecar names real detectors).
    # The smallest speaker is chosen from the values given, with the threshold.
    assert calibrate_main(["--model", str(model), "--audio", folder, "--rttm", folder, "--vad", "webrtc-trimmed",
                           "--grid", "0.5", "1.2", "0.1", "--min-cluster", "2", "30"]) == 0
    settings = json.loads(sidecar_path(model).read_text())
    assert settings["vad"]["method"] == "webrtc" and settings["vad"]["noise_margin_db"] in (1.0, 2.0, 3.0, 6.0)
    # 30 s of speech per speaker would leave one speaker in conversations of several: 2 s wins.
    assert settings["min_cluster_s"] == 2.0
    # The spectral detector's settings are stored with its name and a threshold from its grid.
    # With --smooth and --cluster-window, how many neighbours clustering averages in and the length of the
    # windows it compares are chosen as well (the window's own length is stored as null: the windows themselves).
    assert calibrate_main(["--model", str(model), "--audio", folder, "--rttm", folder, "--vad", "spectral",
                           "--grid", "0.5", "1.2", "0.1", "--smooth", "0", "1", "3", "--cluster-window", "1.0", "1.5"]) == 0
    settings = json.loads(sidecar_path(model).read_text())
    assert settings["vad"]["method"] == "spectral" and settings["vad"]["threshold"] in (0.25, 0.3, 0.35)
    assert settings["smooth_windows"] in (0, 1, 3) and settings["cluster_window_s"] in (None, 1.5)
    from siamese.diarizer import Diarizer

    assert Diarizer.load(model).diarize(test_conversations["wav_path"][0]).labels()


def test_evaluate_scores_only_the_uem_regions(tmp_path, shipped_model, test_conversations):
    import pandas as pd

    folder = str(test_conversations["wav_path"][0]).rsplit("/", 1)[0]
    uri = test_conversations["uri"][0]
    (tmp_path / "uem").mkdir()
    (tmp_path / "uem" / f"{uri}.uem").write_text(f"{uri} 1 0.000 10.000\n")
    assert evaluate_main(["--audio", folder, "--rttm", folder, "--uem", str(tmp_path / "uem"),
                          "--out-dir", str(tmp_path / "out")]) == 0
    rows = pd.read_csv(tmp_path / "out" / "per_file.csv")
    limited, others = rows[rows["uri"] == uri], rows[rows["uri"] != uri]
    assert (limited["scored_s"] <= 10.0 + 1e-6).all() and (others["scored_s"] > 10.0).all()
    (tmp_path / "uem" / "bad.uem").write_text("conv 1 start end\n")
    assert evaluate_main(["--audio", folder, "--rttm", folder, "--uem", str(tmp_path / "uem"),
                          "--out-dir", str(tmp_path / "out2")]) == 1
    assert not (tmp_path / "out2").exists()


def test_evaluate_with_oracle_speech_has_no_detection_errors(tmp_path, shipped_model, test_conversations):
    """--oracle-speech takes the references' speech: nothing is false alarm, only overlap is missed."""
    import pandas as pd

    folder = str(test_conversations["wav_path"][0]).rsplit("/", 1)[0]
    assert evaluate_main(["--audio", folder, "--rttm", folder, "--oracle-speech", "--out-dir", str(tmp_path)]) == 0
    rows = pd.read_csv(tmp_path / "per_file.csv")
    assert (rows["false_alarm"] < 1e-3).all()
    forgiving = rows[rows["setting"] == "forgiving"]  # overlap skipped: no missed speech at all
    assert (forgiving["missed"] < 1e-3).all()


def test_diarize_takes_given_speech_regions(shipped_model, test_conversations):
    from siamese import Diarizer

    annotation = Diarizer.load().diarize(test_conversations["wav_path"][0], regions=[(2.0, 6.0), (8.0, 12.0), (99, 1e6)])
    timeline = annotation.get_timeline().support()
    assert timeline and timeline[0].start >= 2.0 and timeline[-1].end <= 12.0 + 1e-6


def test_compare_counting_reports_every_estimator_without_changing_the_model(tmp_path, shipped_model, test_conversations):
    from experiments.compare_counting import ESTIMATORS, main as counting_main
    from siamese.diarizer import DEFAULT_MODEL, sidecar_path

    shipped = sidecar_path(DEFAULT_MODEL).read_text()
    folder = str(test_conversations["wav_path"][0]).rsplit("/", 1)[0]
    out = tmp_path / "count.md"
    assert counting_main(["--audio", folder, "--rttm", folder, "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "/3 (" in line]
    assert len(rows) == len(ESTIMATORS) - 1  # the calibrated smallest speaker is one of the grid's, listed once
    assert rows[0].startswith("| threshold (calibrated, smallest speaker")
    assert sum(row.startswith("| eigengap") for row in rows) == 3
    assert sidecar_path(DEFAULT_MODEL).read_text() == shipped


def test_compare_pipeline_scores_every_step_and_calibrates_the_smallest_speaker_last(
        tmp_path, monkeypatch, shipped_model, test_conversations):
    import pandas as pd

    import experiments.compare_pipeline as compare_pipeline

    monkeypatch.setattr(compare_pipeline, "WINDOWS_S", (1.0,))  # one window and penalty, a coarse grid: fast
    monkeypatch.setattr(compare_pipeline, "PENALTIES", (1.0,))
    monkeypatch.setattr(compare_pipeline, "GRID", (0.6, 1.6, 0.2))
    folder = str(test_conversations["wav_path"][0]).rsplit("/", 1)[0]
    out = tmp_path / "steps.md"
    assert compare_pipeline.main(["--dev", folder, "--test", folder, "--out", str(out)]) == 0
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(table["step"]) == [label for label, _ in compare_pipeline.STEPS]
    assert (table["min_cluster_s"].iloc[:-1] == 2.0).all() and table["min_cluster_s"].iloc[-1] in (2.0, 3.0, 4.0, 5.0)
    assert table["test_der_full_est"].between(0.0, 1.0).all()
    assert "| + smallest speaker calibrated (2-5 s) |" in out.read_text()
