"""Self-supervised pretraining of the wav2vec 2.0 feature encoder (wav2vec 1.0's objective)."""

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from experiments.pretrain_wav2vec import main as pretrain_main
from sincnet_keras.wav2vec2 import build_wav2vec2_feature_encoder
from sincnet_keras.wav2vec_pretraining import FuturePredictionLoss, build_context_network, build_pretrainer


def test_context_network_is_causal():
    context = build_context_network(8, num_layers=3)
    frames = np.random.default_rng(0).normal(size=(1, 20, 8)).astype("float32")
    changed = frames.copy()
    changed[:, 12:] += 5.0  # the future changes...
    before, after = context(frames).numpy(), context(changed).numpy()
    np.testing.assert_allclose(before[:, :12], after[:, :12], atol=1e-6)  # ...the past's context does not
    assert not np.allclose(before[:, 12:], after[:, 12:])


def test_future_prediction_loss_is_the_contrastive_loss_by_hand():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 6, 4)).astype("float32")
    c = rng.normal(size=(2, 6, 3)).astype("float32")
    layer = FuturePredictionLoss(prediction_steps=2, num_negatives=3, temperature=0.5, seed=4)
    accuracy = layer([z, c]).numpy()
    kernel, bias = (weight.numpy() for weight in layer.predictors.weights)
    # A fresh generator on the same seed gives the distractors of the layer's first call.
    picks = keras.random.randint((2, 6, 3), 0, 6, seed=keras.random.SeedGenerator(4)).numpy()
    unit = lambda x: x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-6)  # noqa: E731
    predictions, targets = unit((c @ kernel + bias).reshape(2, 6, 2, 4)), unit(z)
    total, hits = np.zeros(2), np.zeros(2)
    for step in (1, 2):
        for b in range(2):
            losses, wins = [], []
            for t in range(6 - step):
                prediction = predictions[b, t, step - 1]
                positive = prediction @ targets[b, t + step] / 0.5
                negatives = [prediction @ targets[b, p] / 0.5 for p in picks[b, t + step] if p != t + step]
                logits = np.array([positive, *negatives])
                losses.append(np.log(np.exp(logits).sum()) - positive)
                wins.append(positive > max(negatives, default=-np.inf))
            total[b] += np.mean(losses)
            hits[b] += np.mean(wins) / 2
    np.testing.assert_allclose(accuracy, hits, atol=1e-6)
    assert float(layer.losses[-1]) == pytest.approx(total.mean(), rel=1e-4)


def test_a_constant_encoder_output_scores_chance():
    """The collapse that wav2vec 1.0's binary loss allowed here is no minimum of this loss."""
    layer = FuturePredictionLoss(prediction_steps=3, num_negatives=5, seed=0)
    z = np.ones((2, 20, 8), "float32")  # every frame alike
    c = np.random.default_rng(0).normal(size=(2, 20, 4)).astype("float32")
    layer([z, c])
    # All candidates score the same: log(1 + drawn distractors) per step, about log(6).
    assert float(layer.losses[-1]) == pytest.approx(3 * np.log(6), rel=0.05)


def test_pretrainer_learns_and_reloads_in_safe_mode(tmp_path):
    keras.utils.set_random_seed(0)
    encoder = build_wav2vec2_feature_encoder(conv_dim=32)
    model = build_pretrainer(encoder, context_layers=2, prediction_steps=3, num_negatives=4, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    # A predictable signal (a slow chirp) is learnable: the loss must fall.
    t = np.arange(16000) / 16000
    audio = np.stack([np.sin(2 * np.pi * (200 + 300 * phase) * t) for phase in np.linspace(0, 1, 8)])
    history = model.fit(audio[..., None].astype("float32"), epochs=8, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < 0.9 * history.history["loss"][0], history.history["loss"]
    model.save(tmp_path / "pretrainer.keras")
    again = keras.saving.load_model(tmp_path / "pretrainer.keras", safe_mode=True)
    np.testing.assert_allclose(again.get_weights()[0], model.get_weights()[0])


def test_pretrain_command_writes_a_loadable_encoder_and_resumes(tmp_path, librispeech_root):
    config = yaml.safe_load(open("experiments/configs/wav2vec2_pretrain.yaml"))
    config["output_dir"], config["data"]["root"] = str(tmp_path / "run"), str(librispeech_root)
    config["pretraining"].update(epochs=1, steps_per_epoch=2, val_steps=1, batch_size=2, crop_s=0.5,
                                 prediction_steps=2, num_negatives=2, context_layers=1)
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    assert pretrain_main(["--config", str(path), "--quiet"]) == 0
    assert pretrain_main(["--config", str(path), "--quiet", "--resume", "--epochs", "2"]) == 0
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log["epoch"]) == [0, 1] and np.isfinite(log["val_loss"]).all()
    encoder = keras.saving.load_model(tmp_path / "run" / "encoder.keras", safe_mode=True)
    assert encoder(np.zeros((1, 16000, 1), "float32")).shape == (1, 49, 512)


def test_pretrain_bad_config_is_one_line_error(tmp_path, capsys):
    config = yaml.safe_load(open("experiments/configs/wav2vec2_pretrain.yaml"))
    config["encoder"]["norm"] = "batch"
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    assert pretrain_main(["--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "encoder.norm" in err and len(err.strip().splitlines()) == 1
