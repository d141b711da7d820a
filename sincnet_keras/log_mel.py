"""A fixed log-mel filterbank front end: the conventional baseline for SincConv1D.

Same place in the tower as the sinc filters, same number of bands, but the
bands are fixed (triangular mel filters on an STFT power spectrum) instead of
learned, so comparing the two towers tells whether learnable filters help.
"""

import keras
import librosa
from keras import ops


@keras.saving.register_keras_serializable(package="sincnet_keras")
class LogMelSpectrogram(keras.layers.Layer):
    """Waveform to log mel-band energies, computed with `keras.ops.stft`.

    Args:
        sample_rate: input rate in Hz.
        num_mels: mel bands (64, as many as the default preset's sinc filters).
        frame_length: STFT window in samples (Hann).
        hop_length: STFT hop in samples.
        fft_length: FFT size, at least `frame_length`.
        min_hz, max_hz: the filterbank's edges; `max_hz=None` means Nyquist.

    Input shape: `(batch, samples, 1)`. Output: `(batch, frames, num_mels)` with
    `frames = samples // hop_length + 1` (centred frames).
    """

    def __init__(self, sample_rate=16000, num_mels=64, frame_length=400, hop_length=40, fft_length=512,
                 min_hz=50.0, max_hz=None, **kwargs):
        super().__init__(**kwargs)
        if fft_length < frame_length:
            raise ValueError(f"fft_length ({fft_length}) must be at least frame_length ({frame_length})")
        self.sample_rate, self.num_mels = int(sample_rate), int(num_mels)
        self.frame_length, self.hop_length, self.fft_length = int(frame_length), int(hop_length), int(fft_length)
        self.min_hz, self.max_hz = float(min_hz), None if max_hz is None else float(max_hz)

    def build(self, input_shape):
        # librosa's Slaney-normalised triangles, stored as a fixed (non-trainable) weight.
        matrix = librosa.filters.mel(sr=self.sample_rate, n_fft=self.fft_length, n_mels=self.num_mels,
                                     fmin=self.min_hz, fmax=self.max_hz)
        self.mel_matrix = self.add_weight(shape=matrix.T.shape, initializer="zeros", trainable=False, name="mel_matrix")
        self.mel_matrix.assign(matrix.T)

    def call(self, inputs):
        waveform = ops.squeeze(inputs, axis=-1)
        real, imag = ops.stft(waveform, self.frame_length, self.hop_length, self.fft_length, window="hann")
        power = ops.square(real) + ops.square(imag)  # shape: (batch, frames, fft_length // 2 + 1)
        return ops.log(ops.matmul(power, self.mel_matrix) + 1e-6)

    def compute_output_shape(self, input_shape):
        frames = None if input_shape[1] is None else input_shape[1] // self.hop_length + 1
        return (input_shape[0], frames, self.num_mels)

    def get_config(self):
        return {**super().get_config(), "sample_rate": self.sample_rate, "num_mels": self.num_mels,
                "frame_length": self.frame_length, "hop_length": self.hop_length, "fft_length": self.fft_length,
                "min_hz": self.min_hz, "max_hz": self.max_hz}
