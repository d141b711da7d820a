"""Tests for sincnet_keras.encoder: preset loading and the towers they build."""

from __future__ import annotations

import copy

import keras
import numpy as np
import pytest
import yaml
from keras import layers

from sincnet_keras import SincConv1D, StatisticsPooling, available_presets, build_encoder, load_preset, window_samples
from sincnet_keras.encoder import fold_batch_norm


def _noise(batch, samples, seed=0):
    return np.random.default_rng(seed).normal(0.0, 0.1, (batch, samples, 1)).astype("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def original_encoder():
    return build_encoder("original")


def test_available_presets():
    assert {"original", "default", "tiny"} <= set(available_presets())


def test_original_preset_layers(original_encoder):
    model = original_encoder
    assert model.input_shape == (None, 8000, 1)
    assert model.output_shape == (None, 256)

    stack = [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]
    kinds = [type(layer) for layer in stack]
    block = [layers.Conv1D, layers.BatchNormalization, layers.LeakyReLU, layers.MaxPooling1D]
    expected = (
        [SincConv1D, layers.LayerNormalization, layers.LeakyReLU, layers.MaxPooling1D]
        + block * 4
        + [layers.Flatten, layers.Dense]
    )
    assert kinds == expected, [k.__name__ for k in kinds]

    sinc = stack[0]
    assert (sinc.filters, sinc.kernel_size, sinc.stride, sinc.sample_rate) == (64, 129, 16, 8000)
    assert sinc.padding == "valid"
    assert stack[2].negative_slope == pytest.approx(0.2)
    assert stack[3].pool_size == (2,)

    for index, filters in enumerate([64, 64, 128, 128]):
        conv, norm, act, pool = stack[4 + 4 * index: 8 + 4 * index]
        assert conv.filters == filters
        assert conv.kernel_size == (3,)
        assert norm.momentum == pytest.approx(0.05)
        assert act.negative_slope == pytest.approx(0.2)
        assert pool.pool_size == (2,)

    dense = stack[-1]
    assert dense.units == 256
    assert dense.activation is keras.activations.elu
    assert isinstance(dense.kernel_constraint, keras.constraints.UnitNorm)


def test_original_preset_embeds_one_second(original_encoder):
    output = _numpy(original_encoder(_noise(2, 8000), training=False))
    assert output.shape == (2, 256)
    assert np.all(np.isfinite(output))


def test_two_stacks_are_concatenated():
    preset = load_preset("original")
    preset["num_stacks"] = 2
    model = build_encoder(preset)
    sincs = [layer for layer in model.layers if isinstance(layer, SincConv1D)]
    assert len(sincs) == 2
    concatenate = [layer for layer in model.layers if isinstance(layer, layers.Concatenate)]
    assert len(concatenate) == 1
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    assert len(dense) == 1
    assert dense[0].input is concatenate[0].output  # the Dense reads the concatenation
    flatten = [layer for layer in model.layers if isinstance(layer, layers.Flatten)]
    assert concatenate[0].output.shape[-1] == sum(layer.output.shape[-1] for layer in flatten)
    assert model.input_shape == (None, 8000, 1)
    assert model.output_shape == (None, 256)


@pytest.mark.parametrize("seconds", [0.5, 2.0])
def test_default_preset_any_length_unit_norm(seconds):
    model = build_encoder("default")
    assert model.input_shape == (None, None, 1)
    samples = int(seconds * 16000)
    output = _numpy(model(_noise(2, samples), training=False))
    assert output.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, atol=1e-5)


def test_tiny_preset():
    preset = load_preset("tiny")
    model = build_encoder(preset)
    assert window_samples(preset) == 4000
    assert any(isinstance(layer, StatisticsPooling) for layer in model.layers)
    output = _numpy(model(_noise(3, window_samples(preset)), training=False))
    assert output.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("preset_name", ["tiny", "original"])
def test_save_and_reload_gives_identical_outputs(tmp_path, preset_name, request):
    model = request.getfixturevalue("original_encoder") if preset_name == "original" else build_encoder("tiny")
    samples = window_samples(load_preset(preset_name))
    path = tmp_path / f"{preset_name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    x = _noise(2, samples, seed=3)
    np.testing.assert_allclose(
        _numpy(reloaded(x, training=False)), _numpy(model(x, training=False)), atol=1e-6
    )
    assert [w.shape for w in reloaded.weights] == [w.shape for w in model.weights]


def test_unknown_preset_name_is_refused():
    with pytest.raises(ValueError, match="nope"):
        load_preset("nope")


def test_unknown_preset_key_is_refused():
    preset = load_preset("tiny")
    preset["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        build_encoder(preset)


def test_missing_preset_key_is_refused():
    preset = copy.deepcopy(load_preset("tiny"))
    del preset["sinc"]
    with pytest.raises(ValueError, match="sinc"):
        build_encoder(preset)


def test_preset_from_yaml_path(tmp_path):
    source = load_preset("tiny")
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump({**source, "name": "custom"}))
    assert load_preset(str(path)) == {**source, "name": "custom"}


def test_logmel_baseline_is_the_default_tower_with_fixed_filters(tmp_path):
    import librosa

    from sincnet_keras.log_mel import LogMelSpectrogram

    logmel, default = build_encoder("logmel_cnn"), build_encoder("default")
    # Everything after the filterbank is the default's: same layers, same shapes.
    assert [type(layer) for layer in logmel.layers[2:]] == [type(layer) for layer in default.layers[2:]]
    assert [layer.count_params() for layer in logmel.layers[2:]] == [layer.count_params() for layer in default.layers[2:]]
    frames = lambda tower: tower.get_layer("stack0_block0_conv")(  # noqa: E731
        keras.Model(tower.input, tower.get_layer("stack0_block0_conv").input)(np.zeros((1, 16000, 1), "float32"))).shape[1]
    assert abs(frames(logmel) - frames(default)) <= 1  # the same frame rate into the convolution blocks
    front = logmel.get_layer("stack0_logmel")
    assert isinstance(front, LogMelSpectrogram) and not front.trainable_weights  # fixed filters
    # The layer's output is log(mel filterbank . |STFT|^2), as librosa computes it.
    tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 16000).astype("float32")
    ours = np.asarray(front(tone[None, :, None]))[0]
    power = np.abs(librosa.stft(tone, n_fft=512, hop_length=40, win_length=400, window="hann", center=True)) ** 2
    expected = np.log(librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=50) @ power + 1e-6).T
    inner = slice(10, -10)  # away from the edges, where the two pad differently
    np.testing.assert_allclose(ours[inner], expected[inner], atol=2e-3)
    logmel.save(tmp_path / "logmel.keras")
    again = keras.saving.load_model(tmp_path / "logmel.keras", safe_mode=True)
    audio = np.random.default_rng(0).normal(size=(1, 16000, 1)).astype("float32")
    np.testing.assert_allclose(again(audio), logmel(audio), atol=1e-5)


def test_fold_batch_norm_keeps_the_frames_in_fewer_layers():
    tower = build_encoder("tiny")
    rng = np.random.default_rng(0)
    for layer in tower.layers:
        if isinstance(layer, keras.layers.BatchNormalization):  # statistics unlike a fresh layer's
            width = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, width), rng.normal(size=width), rng.normal(size=width),
                               rng.uniform(0.5, 2.0, width)])
        if isinstance(layer, keras.layers.LayerNormalization):  # some channels flipped: pooling must not move before it
            width = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(-2.0, 2.0, width), rng.normal(size=width)])
    pool = next(layer for layer in tower.layers if isinstance(layer, StatisticsPooling))
    frames = keras.Model(tower.input, pool.input)
    folded = fold_batch_norm(frames)
    names = [type(layer).__name__ for layer in folded.layers]
    assert "BatchNormalization" not in names and "SincConv1D" not in names and "LayerNormalization" not in names
    assert names[1:3] == ["Conv1D", "CentredLayerNorm"]  # centred sinc filters, then only a scale
    assert len(folded.layers) == len(frames.layers) - 2  # two blocks, each conv absorbed its batch norm
    # Each LeakyReLU now follows its max pooling: same frames, half as many activations computed.
    assert all(names[i - 1] == "MaxPooling1D" for i, name in enumerate(names) if name == "LeakyReLU")
    audio = rng.normal(size=(2, 4001, 1)).astype("float32")
    np.testing.assert_allclose(folded.predict_on_batch(audio), frames.predict_on_batch(audio), rtol=1e-4, atol=1e-4)
    assert fold_batch_norm(frames).count_params() == folded.count_params()  # the tower's layers gained no calls
    two_stacks = build_encoder("original_two_stacks")  # not a single chain: left as it is
    assert fold_batch_norm(two_stacks) is two_stacks


def test_fast_preset_takes_the_default_weights_at_half_the_frame_rate_inside():
    fast, default = build_encoder("fast"), build_encoder("default")
    # Same weights (a default tower initialises it); the blocks run one octave lower, the embedding frames do not.
    assert [w.shape for w in fast.weights] == [w.shape for w in default.weights]
    fast.set_weights(default.get_weights())
    shapes = {}
    for model in (fast, default):
        pool = next(layer for layer in model.layers if isinstance(layer, StatisticsPooling))
        conv = next(layer for layer in model.layers if isinstance(layer, layers.Conv1D))
        frames = keras.Model(model.input, [conv.output, pool.input])(_noise(1, 32000))
        shapes[model.name] = [tuple(_numpy(f).shape) for f in frames]
    assert shapes[fast.name][1] == shapes[default.name][1] == (1, 50, 256)  # 25 frames a second at the end
    assert shapes[fast.name][0][1] * 2 == shapes[default.name][0][1]  # the first block sees half as many
    np.testing.assert_allclose(np.linalg.norm(_numpy(fast(_noise(2, 16000), training=False)), axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("pools", [[2, 2], "2", [2, 2, 0, 2], [2, 2, 2, True]])
def test_bad_conv_pool_sizes_are_refused(pools):
    preset = copy.deepcopy(load_preset("default"))
    preset["conv_pool_sizes"] = pools
    with pytest.raises(ValueError, match="conv_pool_sizes"):
        build_encoder(preset)
