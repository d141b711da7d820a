"""Tests for sincnet_keras.sinc_conv.SincConv1D: serialisation, shapes, gradients, filter physics."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from sincnet_keras import SincConv1D, load_preset


def _noise(samples, batch=2, seed=0):
    return np.random.default_rng(seed).normal(0.0, 0.1, (batch, samples, 1)).astype("float32")


def _perturb_cutoffs(layer, seed=1):
    """Moves the cut-offs away from the deterministic mel initialisation.

    Without this a reloaded layer would give the same output even if its
    weights were never written to the file.
    """
    rng = np.random.default_rng(seed)
    layer.low.assign(layer.low.numpy() * rng.uniform(0.5, 1.5, layer.filters).astype("float32"))
    layer.band.assign(layer.band.numpy() * rng.uniform(0.5, 1.5, layer.filters).astype("float32"))


# --- Serialisation -------------------------------------------------------------------------


def test_save_and_reload_gives_identical_outputs(tmp_path):
    inputs = keras.Input(shape=(None, 1))
    layer = SincConv1D(filters=8, kernel_size=65, sample_rate=8000, stride=4, padding="same", name="sinc")
    model = keras.Model(inputs, layer(inputs))
    _perturb_cutoffs(layer)
    path = tmp_path / "sinc.keras"
    model.save(path)

    reloaded = keras.saving.load_model(path, safe_mode=True)
    x = _noise(2000)
    reloaded_layer = reloaded.get_layer("sinc")
    assert isinstance(reloaded_layer, SincConv1D)
    np.testing.assert_array_equal(reloaded_layer.low.numpy(), layer.low.numpy())
    np.testing.assert_array_equal(reloaded_layer.band.numpy(), layer.band.numpy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6)


def test_get_config_round_trip():
    layer = SincConv1D(
        filters=12, kernel_size=101, sample_rate=16000, stride=5, padding="same",
        min_low_hz=30.0, min_band_hz=40.0, trainable_cutoffs=False, name="my_sinc",
    )
    config = layer.get_config()
    clone = SincConv1D.from_config(config)
    assert clone.get_config() == config
    for key, value in dict(filters=12, kernel_size=101, sample_rate=16000, stride=5, padding="same",
                           min_low_hz=30.0, min_band_hz=40.0, trainable_cutoffs=False).items():
        assert getattr(clone, key) == value
    x = _noise(1000)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), keras.ops.convert_to_numpy(layer(x)), atol=1e-6)


@pytest.mark.parametrize("kernel_size", [64, 128, 250])
def test_even_kernel_size_is_refused(kernel_size):
    with pytest.raises(ValueError, match="odd"):
        SincConv1D(filters=8, kernel_size=kernel_size, sample_rate=8000)


def test_bad_padding_and_channels_are_refused():
    with pytest.raises(ValueError, match="padding"):
        SincConv1D(filters=8, kernel_size=65, sample_rate=8000, padding="causal")
    with pytest.raises(ValueError, match="one input channel"):
        SincConv1D(filters=8, kernel_size=65, sample_rate=8000)(np.zeros((1, 500, 2), "float32"))


# --- Shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize("sample_rate, kernel_size", [(8000, 129), (16000, 251)])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("stride", [1, 16])
def test_output_shape_for_one_second(sample_rate, kernel_size, padding, stride):
    samples = sample_rate  # 1 s
    layer = SincConv1D(filters=4, kernel_size=kernel_size, sample_rate=sample_rate, stride=stride, padding=padding)
    if padding == "valid":
        frames = (samples - kernel_size) // stride + 1
    else:
        frames = -(-samples // stride)  # ceil
    output = layer(np.zeros((2, samples, 1), "float32"))
    assert tuple(output.shape) == (2, frames, 4)
    assert layer.compute_output_shape((2, samples, 1)) == (2, frames, 4)
    assert layer.compute_output_shape((None, None, 1)) == (None, None, 4)


def test_docstring_example_shape():
    layer = SincConv1D(filters=8, kernel_size=65, sample_rate=8000, stride=16)
    assert tuple(layer(np.zeros((2, 8000, 1), "float32")).shape) == (2, 496, 8)


# --- Gradients and trainability -------------------------------------------------------------


def test_gradients_reach_the_cutoffs():
    layer = SincConv1D(filters=8, kernel_size=65, sample_rate=8000, stride=4)
    x = tf.constant(_noise(1000))
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(layer(x)))
    grad_low, grad_band = tape.gradient(loss, [layer.low, layer.band])
    for name, grad in (("low", grad_low), ("band", grad_band)):
        assert grad is not None, f"no gradient for {name}"
        grad = keras.ops.convert_to_numpy(grad)
        assert np.all(np.isfinite(grad)), f"non-finite gradient for {name}"
        assert np.any(grad != 0.0), f"zero gradient for {name}"
    assert {id(v) for v in layer.trainable_weights} == {id(layer.low), id(layer.band)}


def test_frozen_cutoffs_are_not_trainable():
    layer = SincConv1D(filters=8, kernel_size=65, sample_rate=8000, trainable_cutoffs=False)
    layer.build((None, None, 1))
    assert layer.trainable_weights == []
    assert {id(v) for v in layer.non_trainable_weights} == {id(layer.low), id(layer.band)}
    assert not layer.low.trainable and not layer.band.trainable


# --- Frequency response of the initial filters ------------------------------------------------

FFT_POINTS = 16384


@pytest.mark.parametrize("preset_name", ["original", "default"])
def test_initial_filters_are_band_pass(preset_name):
    preset = load_preset(preset_name)
    sample_rate = preset["sample_rate"]
    layer = SincConv1D(sample_rate=sample_rate, **preset["sinc"])
    layer.build((None, None, 1))
    kernel_size = layer.kernel_size
    assert (layer.filters, kernel_size, sample_rate) in {(64, 129, 8000), (64, 251, 16000)}

    filters = keras.ops.convert_to_numpy(layer.sinc_filters())[:, 0, :]  # shape: (kernel_size, filters)
    magnitude = np.abs(np.fft.rfft(filters, n=FFT_POINTS, axis=0))  # shape: (bins, filters)
    freqs = np.fft.rfftfreq(FFT_POINTS, d=1.0 / sample_rate)
    low, band = layer.low_hz, layer.band_hz
    high = low + band
    # A window of kernel_size taps cannot resolve details finer than its transition
    # width: for a Hamming window the main lobe's half-width is about
    # 2 * sample_rate / kernel_size Hz (62 Hz for 129 taps at 8 kHz, 127 Hz for
    # 251 taps at 16 kHz), wider than the narrow low bands themselves. So the
    # "an octave away" stop-band check only looks at bins that are also at least
    # that far from the band edges [low, high]; closer bins are in the transition band.
    transition_hz = 2.0 * sample_rate / kernel_size

    failures = []
    for i in range(layer.filters):
        centre = low[i] + band[i] / 2
        gain = magnitude[np.argmin(np.abs(freqs - centre)), i]
        if gain < 0.5:
            failures.append(f"filter {i} [{low[i]:.1f}, {high[i]:.1f}] Hz: gain {gain:.3f} < 0.5 at centre {centre:.1f} Hz")
        octave_away = (freqs >= 2 * high[i]) | (freqs <= low[i] / 2)
        outside_transition = (freqs <= low[i] - transition_hz) | (freqs >= high[i] + transition_hz)
        stop = octave_away & outside_transition
        if stop.any():
            worst = np.argmax(np.where(stop, magnitude[:, i], -np.inf))
            if magnitude[worst, i] > 0.1:
                failures.append(
                    f"filter {i} [{low[i]:.1f}, {high[i]:.1f}] Hz: magnitude {magnitude[worst, i]:.3f} > 0.1 "
                    f"at {freqs[worst]:.1f} Hz (excess {magnitude[worst, i] - 0.1:.3f})"
                )
    if failures:
        print("\n".join(failures))
    assert not failures, f"{len(failures)} filter checks failed:\n" + "\n".join(failures)
