"""experiments.meetings: long recordings of a few held-out speakers with one room's noise."""

import numpy as np
import pytest
import soundfile as sf

from data_prep.rttm import read_rttm
from experiments.meetings import main, meeting_recording


def test_a_meeting_has_its_speakers_and_length_and_is_rebuilt_identically(tmp_path, test_split):
    wav, rttm, speakers = meeting_recording(test_split["test"], 3, 0.5, tmp_path / "a", seed=0)
    reference = next(iter(read_rttm(rttm).values()))
    assert len(speakers) == 3 and sorted(reference.labels()) == sorted(map(str, speakers))
    duration_s = sf.info(str(wav)).duration
    assert duration_s >= 30.0 and reference.get_timeline().extent().end <= duration_s + 1e-6
    again, _, same = meeting_recording(test_split["test"], 3, 0.5, tmp_path / "b", seed=0)
    assert same == speakers and again.read_bytes() == wav.read_bytes()
    audio, _ = sf.read(str(wav))
    quiet = np.sort(np.abs(audio))[: len(audio) // 10]
    assert quiet.max() > 0  # one background noise under the whole meeting, pauses included


def test_a_meeting_needs_enough_speakers(tmp_path, test_split):
    few = test_split["test"][test_split["test"]["speaker"].isin(sorted(test_split["test"]["speaker"].unique())[:2])]
    with pytest.raises(ValueError, match="3 speakers asked"):
        meeting_recording(few, 3, 0.5, tmp_path, seed=0)


def test_meetings_command_checks_its_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--speakers", "1"])
    assert exit_info.value.code == 2 and "--speakers must be >= 2" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["soon", "-1"])
def test_meetings_command_refuses_a_bad_link_threshold(capsys, bad):
    with pytest.raises(SystemExit) as exit_info:
        main(["--link-threshold", "none", bad])
    assert exit_info.value.code == 2 and "--link-threshold" in capsys.readouterr().err


def test_meetings_command_scores_each_link_against_the_oracle_count(tmp_path, capsys, shipped_model):
    report = tmp_path / "meetings.md"
    code = main(["--speakers", "2", "--minutes", "0.4", "--seeds", "1", "--link-threshold", "none", "1.0",
                 "--block-windows", "20", "--out-dir", str(tmp_path / "runs"), "--report", str(report)])
    assert code == 0
    rows = [line for line in report.read_text().splitlines() if line.startswith("| meeting_2spk")]
    assert len(rows) == 1 and rows[0].count("%") == 3  # as a whole, link 1.0, oracle count
    assert "| mean |" in report.read_text() and "count_block_windows 20" in capsys.readouterr().out
