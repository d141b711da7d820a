"""Faults (issue 4): a kill at any moment leaves whole files, and training resumes where it stopped."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from data_prep.manifest import read_manifest, write_manifest
from experiments.train import early_stopping_state, save_model
from experiments.train import main as train_main


def tiny_config(tmp_path, dataset, **training):
    """experiments/configs/tiny.yaml on a small LibriSpeech copy (3 training, 2 validation speakers)."""
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "experiments/configs/tiny.yaml").read_text())
    config["output_dir"] = str(tmp_path / "run")
    config["data"].update(root=str(dataset), val_speakers=2, test_speakers=1)
    config["training"].update(training)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_sigkill_mid_epoch_then_resume_gives_the_configured_epochs(tmp_path, tiny_librispeech, repo_root, caplog):
    """SIGKILL once the first epoch is checkpointed (so mid-epoch 2), then `--resume`.

    On top, the worst moment to die is faked: an epoch's log row written, its checkpoint
    not. The resumed run must drop that row, redo the epoch, and end with exactly the
    configured epochs, each logged once.
    """
    epochs = yaml.safe_load((repo_root / "experiments/configs/tiny.yaml").read_text())["training"]["epochs"]
    config = tiny_config(tmp_path, tiny_librispeech, pairs_per_epoch=160, patience=10, lr_decay_patience=0)
    run = tmp_path / "run"
    with open(tmp_path / "train.out", "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "experiments.train", "--config", str(config), "--quiet"],
                                   cwd=repo_root, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not (run / "checkpoints" / "last.keras").exists():
            assert process.poll() is None, (tmp_path / "train.out").read_text()
            assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    log = pd.read_csv(run / "log.csv")
    assert 1 <= len(log) < epochs and not (run / "tower.keras").exists()  # it died mid-run
    pd.concat([log, log.tail(1).assign(epoch=len(log), val_loss=0.0)]).to_csv(run / "log.csv", index=False)

    caplog.set_level("INFO")
    assert train_main(["--config", str(config), "--resume", "--quiet"]) == 0
    log = pd.read_csv(run / "log.csv")
    assert list(log["epoch"]) == list(range(epochs))
    assert (log["val_loss"] > 0.0).all()  # the faked row is gone, its epoch was run again
    messages = [record.getMessage() for record in caplog.records]
    assert any("dropping 1 log row(s)" in message for message in messages)
    assert any("resuming from" in message for message in messages)
    assert (run / "tower.keras").is_file() and (run / "tower.json").is_file()


WRITER = """
import sys
import pandas as pd
from data_prep.manifest import write_manifest
rows = 200_000
table = pd.DataFrame({"path": [f"/corpus/s{i % 50}/u{i}.flac" for i in range(rows)],
                      "speaker": [f"s{i % 50}" for i in range(rows)], "duration_s": 1.0, "sample_rate": 16000})
version = 0
while True:
    write_manifest(table.assign(duration_s=float(version % 7) + 0.5), sys.argv[1])
    version += 1
"""


def test_a_kill_during_a_write_never_leaves_half_a_file(tmp_path, repo_root):
    """Outputs go to a temp file that is renamed: killed at random moments, the manifest is whole or absent."""
    target = tmp_path / "manifest.csv"
    rng = random.Random(0)
    for _ in range(3):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=repo_root)
        deadline = time.monotonic() + 60
        while not target.exists() and time.monotonic() < deadline:  # the first version is complete
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.5))  # then die somewhere in a later write
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        manifest = read_manifest(target)
        assert len(manifest) == 200_000 and manifest["duration_s"].nunique() == 1
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["manifest.csv"]


def test_a_failed_model_save_keeps_the_previous_checkpoint(tmp_path):
    class DiesWhileSaving:
        def save(self, path):
            Path(path).write_bytes(b"half a zip")
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-save

    checkpoint = tmp_path / "last.keras"
    checkpoint.write_bytes(b"the previous epoch")
    with pytest.raises(KeyboardInterrupt):
        save_model(DiesWhileSaving(), checkpoint)
    assert checkpoint.read_bytes() == b"the previous epoch"
    assert list(tmp_path.iterdir()) == [checkpoint]  # the staging folder is gone too


def _run_with(tmp_path, dataset, log=None, checkpoint=None):
    """A run folder whose first epoch is (supposedly) done: manifests, log and checkpoint as given."""
    config = tiny_config(tmp_path, dataset)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    if log is not None:
        (run / "log.csv").write_bytes(log)
    if checkpoint is not None:
        (run / "checkpoints" / "last.keras").write_bytes(checkpoint)
    return config


@pytest.mark.parametrize(("log", "checkpoint", "named", "problem"), [
    (b"epoch,loss,val_loss\n0,0.3,0.3\n", b"PK\x03\x04 not really a zip", "last.keras", "not a loadable checkpoint"),
    (bytes(range(256)), b"", "log.csv", "not a readable training log"),
    (b"epoch,loss,val_loss\n0,0.3,oops\n", b"", "log.csv", "not a readable training log"),
], ids=["damaged checkpoint", "binary log", "log with a bad number"])
def test_resume_from_a_damaged_run_is_a_one_line_error(tmp_path, tiny_librispeech, capsys, log, checkpoint, named,
                                                       problem):
    config = _run_with(tmp_path, tiny_librispeech, log=log, checkpoint=checkpoint)
    assert train_main(["--config", str(config), "--resume", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and named in err and problem in err, err
    assert "Traceback" not in err and not (tmp_path / "run" / "tower.keras").exists()


def test_a_file_that_breaks_after_the_scan_stops_training_with_one_line(tmp_path, tiny_librispeech, capsys):
    """The run's manifests list a file that now holds NaN (changed after the scan): one line, exit 1."""
    from data_prep.manifest import scan_librispeech
    from data_prep.split import split_speakers

    config = tiny_config(tmp_path, tiny_librispeech, epochs=1, pairs_per_epoch=16, val_pairs=16)
    run = tmp_path / "run"
    splits = split_speakers(scan_librispeech(tiny_librispeech), val_speakers=2, test_speakers=1, seed=0)
    for name, table in splits.items():  # as a first, interrupted session left them
        write_manifest(table, run / "manifests" / f"{name}.csv")
    broken = splits["train"]["path"][0]
    audio, rate = sf.read(broken, dtype="float32")
    audio[100] = np.nan
    sf.write(broken, audio, rate, format="WAV", subtype="FLOAT")  # keeps the .flac name, as a careless tool might
    assert train_main(["--config", str(config), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    expected = f"error: {broken}: contains NaN or Inf samples; training stopped, completed epochs are kept for --resume"
    assert err == [expected]
    assert not (run / "tower.keras").exists()


def test_early_stopping_state_survives_resume():
    """Patience is rebuilt from the log, so a run that stopped early stays stopped after --resume."""
    assert early_stopping_state([]) == (float("inf"), 0)
    assert early_stopping_state([0.5, 0.4, 0.45, 0.41]) == (0.4, 2)
    assert early_stopping_state([0.5, 0.4, 0.3]) == (0.3, 0)
