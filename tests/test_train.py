"""Training end to end with the tiny preset: checkpoints, log, resume, saved tower."""

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from experiments.train import main as train_main
from siamese.diarizer import Diarizer


def tiny_config(tmp_path, librispeech_root, epochs=2):
    config = yaml.safe_load(open("experiments/configs/tiny.yaml"))
    config["output_dir"] = str(tmp_path / "run")
    config["data"]["root"] = str(librispeech_root)
    config["training"]["epochs"] = epochs
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_tiny_training_writes_a_loadable_tower(tmp_path, librispeech_root):
    assert train_main(["--config", str(tiny_config(tmp_path, librispeech_root)), "--quiet"]) == 0
    run = tmp_path / "run"
    log = pd.read_csv(run / "log.csv")
    assert list(log["epoch"]) == [0, 1] and np.isfinite(log["val_loss"]).all()
    for name in ("train", "val", "test"):
        assert (run / "manifests" / f"{name}.csv").is_file()
    speakers = {name: set(pd.read_csv(run / "manifests" / f"{name}.csv")["speaker"]) for name in ("train", "val", "test")}
    assert not speakers["train"] & speakers["val"] and not speakers["train"] & speakers["test"]
    tower = keras.saving.load_model(run / "tower.keras", safe_mode=True)
    assert tower(np.zeros((1, 4000, 1), "float32")).shape == (1, 32)
    diarizer = Diarizer.load(run / "tower.keras")  # the sidecar tower.json carries rate and window
    assert diarizer.settings.sample_rate == 8000 and diarizer.settings.window_s == 0.5


def test_resume_continues_from_the_last_checkpoint(tmp_path, librispeech_root):
    config = tiny_config(tmp_path, librispeech_root, epochs=1)
    assert train_main(["--config", str(config), "--quiet"]) == 0
    assert train_main(["--config", str(config), "--quiet"]) == 1  # refuses to overwrite a run
    assert train_main(["--config", str(config), "--quiet", "--resume", "--epochs", "2"]) == 0
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log["epoch"]) == [0, 1]


def test_bad_config_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(open("experiments/configs/tiny.yaml")), "learning_rat": 0.1}))
    assert train_main(["--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "unknown key" in err and "learning_rat" in err and len(err.strip().splitlines()) == 1


def test_missing_dataset_leaves_no_run_folder(tmp_path, capsys):
    config = yaml.safe_load(open("experiments/configs/tiny.yaml"))
    config["data"]["root"], config["output_dir"] = str(tmp_path / "nowhere"), str(tmp_path / "run")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(path)]) == 1
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_init_fine_tunes_from_a_trained_tower(tmp_path, librispeech_root, capsys):
    """`--init` starts from a tower's weights; the noise options are optional config keys."""
    (tmp_path / "a").mkdir()
    first = tiny_config(tmp_path / "a", librispeech_root, epochs=1)
    assert train_main(["--config", str(first), "--quiet"]) == 0
    tower = tmp_path / "a" / "run" / "tower.keras"
    config = yaml.safe_load(open(first))
    config["output_dir"] = str(tmp_path / "b" / "run")
    config["training"].update(noise_prob=1.0, noise_snr_low=5.0, noise_snr_high=20.0, learning_rate=1e-12)
    second = tmp_path / "b.yaml"
    second.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(second), "--quiet", "--init", str(tower)]) == 0
    start = keras.saving.load_model(tower, safe_mode=True)
    tuned = keras.saving.load_model(tmp_path / "b" / "run" / "tower.keras", safe_mode=True)
    x = np.random.default_rng(0).normal(0, 0.1, (2, 4000, 1)).astype("float32")
    # A vanishing learning rate: the fine-tuned tower is the starting one (BatchNorm statistics aside).
    np.testing.assert_allclose(start(x, training=False), tuned(x, training=False), atol=0.05)
    config["output_dir"] = str(tmp_path / "c" / "run")
    config["model"]["preset"] = "default"
    second.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert train_main(["--config", str(second), "--quiet", "--init", str(tower)]) == 1
    assert "--init" in capsys.readouterr().err


def test_noise_options_are_checked(tmp_path, capsys):
    config = yaml.safe_load(open("experiments/configs/tiny.yaml"))
    config["training"].update(noise_prob=0.5, noise_snr_low=30.0, noise_snr_high=5.0)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(path)]) == 1
    assert "noise_snr_low" in capsys.readouterr().err


@pytest.mark.parametrize("change", [{"reverb_prob": 1.5}, {"reverb_rt60_low": 0.0}, {"reverb_rt60_low": 0.9, "reverb_rt60_high": 0.3}])
def test_reverberation_options_are_checked(tmp_path, capsys, change):
    config = yaml.safe_load(open("experiments/configs/tiny.yaml"))
    config["training"].update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "reverb" in err and len(err.strip().splitlines()) == 1


def test_batch_all_objective_trains_resumes_and_saves_a_bare_tower(tmp_path, librispeech_root):
    path = tiny_config(tmp_path, librispeech_root, epochs=1)
    config = yaml.safe_load(open(path))
    config["training"].update(objective="batch_all", crops_per_speaker=2, batch_size=8)
    path.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(path), "--quiet"]) == 0
    assert train_main(["--config", str(path), "--quiet", "--resume", "--epochs", "2"]) == 0
    run = tmp_path / "run"
    log = pd.read_csv(run / "log.csv")
    assert list(log["epoch"]) == [0, 1] and np.isfinite(log["val_loss"]).all()
    tower = keras.saving.load_model(run / "tower.keras", safe_mode=True)
    assert not getattr(tower, "compiled", False)  # the released tower carries no training state
    assert tower(np.zeros((1, 4000, 1), "float32")).shape == (1, 32)


def test_batch_all_config_needs_whole_speaker_groups(tmp_path, librispeech_root, capsys):
    path = tiny_config(tmp_path, librispeech_root)
    config = yaml.safe_load(open(path))
    config["training"].update(objective="batch_all", crops_per_speaker=3, batch_size=16)
    path.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(path)]) == 1
    assert "crops_per_speaker" in capsys.readouterr().err


def test_freeze_keeps_the_chosen_layers_of_the_starting_tower(tmp_path, librispeech_root, capsys):
    """`--freeze frontend` fixes the sinc filters; `encoder` (config key) everything but the last layer."""
    (tmp_path / "a").mkdir()
    first = tiny_config(tmp_path / "a", librispeech_root, epochs=1)
    assert train_main(["--config", str(first), "--quiet"]) == 0
    start = keras.saving.load_model(tmp_path / "a" / "run" / "tower.keras", safe_mode=True)
    config = yaml.safe_load(open(first))
    config["training"]["learning_rate"] = 0.05  # large steps: every trained weight moves visibly
    for freeze, via_config in (("frontend", False), ("encoder", True)):
        config["output_dir"] = str(tmp_path / freeze / "run")
        if via_config:
            config["training"]["freeze"] = freeze
        path = tmp_path / f"{freeze}.yaml"
        path.write_text(yaml.safe_dump(config))
        extra = [] if via_config else ["--freeze", freeze]
        assert train_main(["--config", str(path), "--quiet", "--init",
                           str(tmp_path / "a" / "run" / "tower.keras"), *extra]) == 0
        tuned = keras.saving.load_model(tmp_path / freeze / "run" / "tower.keras", safe_mode=True)
        weighted = [(a, b) for a, b in zip(start.layers, tuned.layers) if a.weights]
        frozen = weighted[:1] if freeze == "frontend" else weighted[:-1]
        assert type(frozen[0][0]).__name__ == "SincConv1D"
        for before, after in frozen:
            for x, y in zip(before.get_weights(), after.get_weights()):
                np.testing.assert_array_equal(x, y)
        last_before, last_after = weighted[-1]
        assert not np.allclose(last_before.get_weights()[0], last_after.get_weights()[0])
    config["training"]["freeze"] = "everything"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert train_main(["--config", str(path), "--quiet"]) == 1
    assert "training.freeze must be one of" in capsys.readouterr().err
