"""The Wav2Vec arm: presets, safe reloading, and training a head on a frozen, pretrained front end."""

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from data_prep.feature_bank import feature_bank
from experiments.train import main as train_main
from siamese.diarizer import Diarizer
from sincnet_keras import build_encoder, build_wav2vec2_feature_encoder, load_preset
from sincnet_keras.encoder import split_frontend
from sincnet_keras.wav2vec2 import num_frames


def test_original_preset_is_the_coursework_arm():
    tower = build_encoder("wav2vec_original")
    assert tower.input_shape == (None, 82080, 1) and tower.output_shape == (None, 2)  # 5.13 s at 16 kHz, 2-D
    frontend, head = split_frontend(tower)
    assert not frontend.trainable and frontend.output_shape == (None, None, 512)
    assert head.input_shape == (None, 256, 512)  # 256 frames of 20 ms
    shapes = [layer.output.shape[1:] for layer in head.layers if layer.name.startswith("head_")]
    # Conv2D(64, 11, s4) -> MaxPool(3, 2) -> Conv2D(128, 5, s2) -> MaxPool(3, 2) -> Conv2D(256, 5, s2)
    assert shapes == [(62, 126, 64), (30, 62, 64), (13, 29, 128), (6, 14, 128), (1, 5, 256)]
    assert [layer.units for layer in head.layers if isinstance(layer, keras.layers.Dense)] == [512, 256, 2]


@pytest.mark.parametrize("preset", ["wav2vec_original", "wav2vec"])
def test_presets_reload_in_safe_mode(tmp_path, preset):
    tower = build_encoder(preset)
    samples = tower.input_shape[1] or 24000
    audio = np.random.default_rng(0).normal(size=(2, samples, 1)).astype("float32")
    tower.save(tmp_path / "tower.keras")
    again = keras.saving.load_model(tmp_path / "tower.keras", safe_mode=True)
    np.testing.assert_allclose(again(audio), tower(audio), atol=1e-5)
    assert not split_frontend(again)[0].trainable


def test_feature_bank_holds_each_utterance_once(librispeech_manifest):
    manifest = librispeech_manifest.iloc[:2]
    encoder = build_wav2vec2_feature_encoder(conv_dim=8)
    features, items = feature_bank(manifest, lambda x: encoder(x), sample_rate=16000)
    assert len(features) == 2 and list(items["row"]) == [0, 1] and features[0].dtype == np.float16
    assert features[0].shape == (num_frames(int(round(manifest["duration_s"].iloc[0] * 16000))), 8)


def tiny_wav2vec_config(tmp_path, root, pooling):
    preset = load_preset("wav2vec" if pooling == "statistics" else "wav2vec_original")
    preset["wav2vec2"]["conv_dim"] = 8
    preset["window_s"] = 0.5
    if pooling == "statistics":
        preset["head"]["filters"], preset["embedding"]["units"] = [8], [8]
    else:  # a flatten head over 24 frames x 8 channels
        preset["head"].update(filters=[4], kernel_sizes=[3], strides=[2], pool_after=[False])
        preset["embedding"]["units"] = [8, 2]
    (tmp_path / "preset.yaml").write_text(yaml.safe_dump(preset))
    encoder = build_wav2vec2_feature_encoder(conv_dim=8)
    encoder.save(tmp_path / "encoder.keras")  # stands in for experiments.pretrain_wav2vec's output
    config = yaml.safe_load(open("experiments/configs/tiny.yaml"))
    config["output_dir"], config["data"]["root"] = str(tmp_path / "run"), str(root)
    config["data"].update(val_speakers=2, test_speakers=1)
    config["model"] = {"preset": str(tmp_path / "preset.yaml"), "frontend_weights": str(tmp_path / "encoder.keras")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "config.yaml", encoder


@pytest.mark.parametrize("pooling", ["statistics", "flatten"])
def test_head_trains_on_frozen_pretrained_features(tmp_path, tiny_librispeech, pooling):
    config, encoder = tiny_wav2vec_config(tmp_path, tiny_librispeech, pooling)
    assert train_main(["--config", str(config), "--quiet", "--epochs", "1"]) == 0
    assert train_main(["--config", str(config), "--quiet", "--resume", "--epochs", "2"]) == 0
    run = tmp_path / "run"
    log = pd.read_csv(run / "log.csv")
    assert list(log["epoch"]) == [0, 1] and np.isfinite(log["val_loss"]).all()
    tower = keras.saving.load_model(run / "tower.keras", safe_mode=True)
    frontend, head = split_frontend(tower)
    for kept, given in zip(frontend.get_weights(), encoder.get_weights()):  # frozen: exactly the pretrained encoder
        np.testing.assert_array_equal(kept, given)
    trained = keras.saving.load_model(run / "checkpoints" / "best.keras", safe_mode=True)
    for ours, best in zip(head.get_weights(), trained.get_weights()):  # and the best epoch's head behind it
        np.testing.assert_array_equal(ours, best)
    diarizer = Diarizer.load(run / "tower.keras")
    assert diarizer.settings.sample_rate == 16000 and diarizer.settings.window_s == 0.5
    # The diarizer runs the front end once per recording, as training did per utterance.
    assert (diarizer.frame_split() if pooling == "statistics" else diarizer.frontend_split()) is not None
    audio = np.random.default_rng(0).normal(size=48000).astype("float32") * 0.1
    windows = diarizer.embed(audio, regions=[(0.0, 3.0)])  # steady noise is no speech to the detector: say it is
    assert windows.embeddings.shape == (len(windows.starts), 8 if pooling == "statistics" else 2)
    diarizer.settings.shared_frames = False  # window by window: the same tower, normalised over less context
    assert diarizer.embed(audio, regions=[(0.0, 3.0)]).embeddings.shape == windows.embeddings.shape
    # The command-line contracts take the trained tower with --model.
    import soundfile as sf

    from experiments.diarize import main as diarize_main
    from experiments.verify import main as verify_main

    wav = tmp_path / "noise.wav"
    sf.write(wav, np.concatenate([audio, audio[::-1]]), 16000)
    assert diarize_main([str(wav), "--out-dir", str(tmp_path / "rttm"), "--model", str(run / "tower.keras")]) == 0
    assert (tmp_path / "rttm" / "noise.rttm").is_file()
    (tmp_path / "trials.txt").write_text(f"{wav} {wav}\n")
    assert verify_main(["--trials", str(tmp_path / "trials.txt"), "--out", str(tmp_path / "scores.txt"),
                        "--model", str(run / "tower.keras")]) == 0
    assert float((tmp_path / "scores.txt").read_text().split()[-1]) < 1e-3  # a file against itself
