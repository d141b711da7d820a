"""The learned speech detector's network: a small dilated 1-D CNN over band SNRs.

Its input is :func:`data_prep.vad.band_snr` (each 10 ms frame's SNR in 24 mel
bands over the recording's own noise), its output each frame's probability of
speech. It is trained in Keras (``python -m experiments.train_vad``) and saved
as ``.keras``; :class:`SpeechNet` runs a NumPy copy of its convolutions, block
by block, because one TF call per recording costs more than the network itself
and data preparation should not need TF to run a detector.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

_BLOCK_FRAMES = 8192  # frames per block: bounded memory on hours of audio
# Keras activations by name, in place on a float32 array: the NumPy inference copies of Keras layers (this
# network, and the diarizer's embedding head, `siamese.diarizer.numpy_head`) share them.
NUMPY_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0, out=x),
    "sigmoid": lambda x: np.reciprocal(1.0 + np.exp(-x, out=x), out=x),
    "linear": lambda x: x,
    "elu": lambda x: np.expm1(x, out=x, where=x < 0),
    "tanh": lambda x: np.tanh(x, out=x),
}


def build_speech_net(num_bands: int = 24, channels: int = 16, kernel_size: int = 9, dilations=(1, 4, 8)):
    """Keras model ``(batch, frames, num_bands) -> (batch, frames, 1)`` speech probabilities.

    A 1x1 convolution mixes the bands, then one "same"-padded convolution per
    dilation widens the context (receptive field ``1 + (kernel_size - 1) * sum(dilations)``
    frames), and a 1x1 convolution with a sigmoid gives the probability.
    """
    import keras

    layers = [keras.Input((None, num_bands)), keras.layers.Conv1D(channels, 1, activation="relu", name="bands")]
    layers += [keras.layers.Conv1D(channels, kernel_size, padding="same", dilation_rate=dilation, activation="relu",
                                   name=f"context_{index}") for index, dilation in enumerate(dilations)]
    layers.append(keras.layers.Conv1D(1, 1, activation="sigmoid", name="speech"))
    return keras.Sequential(layers, name="speech_net")


class SpeechNet:
    """NumPy inference copy of a :func:`build_speech_net` model (any stack of Conv1D layers)."""

    def __init__(self, convolutions):
        self.convolutions = convolutions  # [(kernel (k, in, out), bias (out,), dilation, activation)]
        self.margin = sum((kernel.shape[0] - 1) * dilation for kernel, _, dilation, _ in convolutions)
        self.num_bands = convolutions[0][0].shape[1]

    @classmethod
    def from_keras(cls, model):
        convolutions = []
        for layer in model.layers:
            config = layer.get_config()
            if type(layer).__name__ != "Conv1D" or config["activation"] not in NUMPY_ACTIVATIONS \
                    or config["strides"] != (1,) or (config["kernel_size"] != (1,) and config["padding"] != "same"):
                raise ValueError(f"not a speech detector network: layer {layer.name!r} is not a stride-1 'same' "
                                 f"Conv1D with one of the activations {sorted(NUMPY_ACTIVATIONS)}")
            kernel, bias = (np.asarray(weight, dtype=np.float32) for weight in layer.get_weights())
            convolutions.append((kernel, bias, int(config["dilation_rate"][0]), config["activation"]))
        if not convolutions or convolutions[-1][0].shape[-1] != 1:
            raise ValueError("not a speech detector network: it must end in a Conv1D with one output")
        return cls(convolutions)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Speech probability of each frame of ``(frames, num_bands)`` features (the Keras model's, to float error)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.num_bands:
            raise ValueError(f"expected (frames, {self.num_bands}) features, got shape {features.shape}")
        out = np.empty(len(features), dtype=np.float32)
        for first in range(0, len(features), _BLOCK_FRAMES):
            # Each block runs with `margin` real frames either side, so its own zero padding never reaches the
            # frames it keeps: blocks give what the whole signal at once would.
            last = min(first + _BLOCK_FRAMES, len(features))
            lo, hi = max(first - self.margin, 0), min(last + self.margin, len(features))
            out[first:last] = self._forward(features[lo:hi])[first - lo:last - lo]
        return out

    def _forward(self, x):
        for kernel, bias, dilation, activation in self.convolutions:
            span = (kernel.shape[0] - 1) * dilation
            padded = np.pad(x, ((span // 2, span - span // 2), (0, 0)))  # Keras' "same" zero padding
            y = padded[:len(x)] @ kernel[0] + bias
            for tap in range(1, kernel.shape[0]):
                y += padded[tap * dilation : tap * dilation + len(x)] @ kernel[tap]
            x = NUMPY_ACTIVATIONS[activation](y)
        return x[:, 0]


@functools.lru_cache(maxsize=4)
def load_speech_net(path: str) -> SpeechNet:
    """The network saved at ``path`` (``.keras``, safe mode), cached per path."""
    import keras

    if not Path(path).is_file():
        raise ValueError(f"speech detector model {path} not found")
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # noqa: BLE001 - a corrupt file surfaces as many exception types
        raise ValueError(f"speech detector model {path} could not be loaded ({type(error).__name__})") from None
    return SpeechNet.from_keras(model)
