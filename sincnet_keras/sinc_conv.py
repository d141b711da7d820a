"""SincConv1D: a convolution whose kernels are learnable band-pass sinc filters.

Reference: M. Ravanelli and Y. Bengio, "Speaker Recognition from Raw Waveform
with SincNet", IEEE SLT 2018 (arXiv:1808.00158).

Each filter is an ideal band-pass filter between a learnable low cut-off and a
learnable band width, truncated to `kernel_size` taps and smoothed by a Hamming
window. Only two numbers per filter are learnt, so the first layer cannot
overfit into arbitrary shapes and stays interpretable as a filter bank.
"""

import math

import keras
import numpy as np
from keras import ops


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


@keras.saving.register_keras_serializable(package="sincnet_keras")
class SincConv1D(keras.layers.Layer):
    """Band-pass sinc filter bank applied to a raw waveform.

    Args:
        filters: number of band-pass filters (output channels).
        kernel_size: filter length in taps; must be odd so filters are symmetric.
        sample_rate: sample rate of the input in Hz.
        stride: hop between output frames, in samples.
        padding: `"valid"` or `"same"`.
        min_low_hz: smallest allowed low cut-off in Hz.
        min_band_hz: smallest allowed band width in Hz.
        trainable_cutoffs: if False, the mel initialisation is kept frozen.

    Input shape: `(batch, samples, 1)`. Output: `(batch, frames, filters)`.

    Example:
        >>> layer = SincConv1D(filters=8, kernel_size=65, sample_rate=8000, stride=16)
        >>> layer(np.zeros((2, 8000, 1), "float32")).shape
        (2, 496, 8)

    The cut-offs are stored divided by `sample_rate` (cycles per sample) so that
    an optimiser step of 1e-3 moves a cut-off by a few Hz, whatever the rate;
    `low_hz` and `band_hz` give them back in Hz.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        sample_rate,
        stride=1,
        padding="valid",
        min_low_hz=50.0,
        min_band_hz=50.0,
        trainable_cutoffs=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        if min_low_hz + min_band_hz >= sample_rate / 2:
            raise ValueError("min_low_hz + min_band_hz must be below the Nyquist rate")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.sample_rate = int(sample_rate)
        self.stride = int(stride)
        self.padding = padding
        self.min_low_hz = float(min_low_hz)
        self.min_band_hz = float(min_band_hz)
        self.trainable_cutoffs = bool(trainable_cutoffs)

    def _mel_initialisation(self):
        """Cut-offs equally spaced on the mel scale from 30 Hz to Nyquist."""
        highest_hz = self.sample_rate / 2 - (self.min_low_hz + self.min_band_hz)
        mel = np.linspace(hz_to_mel(30.0), hz_to_mel(highest_hz), self.filters + 1)
        hz = mel_to_hz(mel)
        low = hz[:-1] / self.sample_rate
        band = np.diff(hz) / self.sample_rate
        return low.astype("float32"), band.astype("float32")

    def build(self, input_shape):
        if input_shape[-1] != 1:
            raise ValueError(f"SincConv1D expects one input channel, got shape {input_shape}")
        low, band = self._mel_initialisation()
        self.low = self.add_weight(
            name="low", shape=(self.filters,),
            initializer=keras.initializers.Constant(low), trainable=self.trainable_cutoffs,
        )
        self.band = self.add_weight(
            name="band", shape=(self.filters,),
            initializer=keras.initializers.Constant(band), trainable=self.trainable_cutoffs,
        )
        # Fixed tap positions and window of the left half (the filter is symmetric).
        half = (self.kernel_size - 1) // 2
        self._n_left = np.arange(-half, 0, dtype="float32")  # shape: (half,)
        self._window_left = np.hamming(self.kernel_size)[:half].astype("float32")

    @property
    def low_hz(self):
        return self.min_low_hz + np.abs(ops.convert_to_numpy(self.low)) * self.sample_rate

    @property
    def band_hz(self):
        high = np.clip(
            self.low_hz + self.min_band_hz + np.abs(ops.convert_to_numpy(self.band)) * self.sample_rate,
            self.min_low_hz, self.sample_rate / 2,
        )
        return high - self.low_hz

    def sinc_filters(self):
        """The current filter bank, shape `(kernel_size, 1, filters)`."""
        nyquist = 0.5
        low = self.min_low_hz / self.sample_rate + ops.abs(self.low)  # cycles per sample
        high = ops.clip(
            low + self.min_band_hz / self.sample_rate + ops.abs(self.band),
            self.min_low_hz / self.sample_rate, nyquist,
        )
        n = ops.expand_dims(ops.convert_to_tensor(self._n_left), 1)  # shape: (half, 1)
        window = ops.expand_dims(ops.convert_to_tensor(self._window_left), 1)
        two_pi_n = 2.0 * math.pi * n
        # Left half: the ideal band-pass impulse response, low-pass(high) - low-pass(low).
        left = (ops.sin(two_pi_n * high) - ops.sin(two_pi_n * low)) / (math.pi * n) * window
        # Centre tap: the limit of the same expression at n = 0.
        centre = ops.expand_dims(2.0 * (high - low), 0)  # shape: (1, filters)
        # Right half: mirror image, which makes the filter zero-phase.
        right = ops.flip(left, axis=0)
        kernel = ops.concatenate([left, centre, right], axis=0)  # shape: (kernel_size, filters)
        # Unit gain at each band centre, so narrow and wide bands start on the same scale.
        centre_hz = (low + high) / 2.0
        full_n = ops.concatenate([n, ops.zeros((1, 1)), -ops.flip(n, axis=0)], axis=0)
        gain = ops.sum(kernel * ops.cos(2.0 * math.pi * full_n * centre_hz), axis=0)
        kernel = kernel / ops.maximum(ops.abs(gain), 1e-6)
        return ops.expand_dims(kernel, 1)

    def call(self, inputs):
        return ops.conv(inputs, self.sinc_filters(), strides=self.stride, padding=self.padding)

    def compute_output_shape(self, input_shape):
        samples = input_shape[1]
        if samples is not None:
            if self.padding == "same":
                samples = -(-samples // self.stride)
            else:
                samples = (samples - self.kernel_size) // self.stride + 1
        return (input_shape[0], samples, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            sample_rate=self.sample_rate,
            stride=self.stride,
            padding=self.padding,
            min_low_hz=self.min_low_hz,
            min_band_hz=self.min_band_hz,
            trainable_cutoffs=self.trainable_cutoffs,
        )
        return config
