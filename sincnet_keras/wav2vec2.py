"""The wav2vec 2.0 convolutional feature encoder in Keras 3.

Reference: A. Baevski, H. Zhou, A. Mohamed and M. Auli, "wav2vec 2.0: A
Framework for Self-Supervised Learning of Speech Representations", NeurIPS 2020
(arXiv:2006.11477), section 2 and appendix B.

The encoder is seven valid, strided temporal convolutions of 512 channels, each
followed by a GELU. Two normalisation variants exist:

- `"group"` (the base model): one GroupNorm on the first layer only, with as many
  groups as channels, so each channel is normalised over time.
- `"layer"` (the large model): a LayerNorm over channels after every convolution.

At 16 kHz the kernels (10, 3, 3, 3, 3, 2, 2) and strides (5, 2, 2, 2, 2, 2, 2)
give one 512-dimensional frame every 20 ms (320 samples) with a receptive field
of 25 ms (400 samples). Pretrained weights are read by
`sincnet_keras.wav2vec2_checkpoint`.
"""

import keras
from keras import layers

NORM_VARIANTS = ("group", "layer")
CONV_DIM = 512
CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)
NORM_EPSILON = 1e-5  # PyTorch's GroupNorm and LayerNorm default


def conv_dims(conv_dim, num_layers):
    """Expands one channel count to every layer; checks a per-layer sequence."""
    if isinstance(conv_dim, int):
        return (conv_dim,) * num_layers
    conv_dim = tuple(int(dim) for dim in conv_dim)
    if len(conv_dim) != num_layers:
        raise ValueError(f"conv_dim has {len(conv_dim)} entries for {num_layers} conv layers")
    return conv_dim


def frame_geometry(conv_kernel=CONV_KERNEL, conv_stride=CONV_STRIDE):
    """The receptive field and hop of one output frame, both in input samples.

    Example:
        >>> frame_geometry()
        (400, 320)
    """
    receptive_field, hop = 1, 1
    for kernel, stride in zip(conv_kernel, conv_stride):
        receptive_field += (kernel - 1) * hop
        hop *= stride
    return receptive_field, hop


def num_frames(samples, conv_kernel=CONV_KERNEL, conv_stride=CONV_STRIDE):
    """Number of output frames for `samples` input samples (0 when too short).

    Example:
        >>> num_frames(16000)  # one second at 16 kHz
        49
    """
    receptive_field, hop = frame_geometry(conv_kernel, conv_stride)
    return max(0, (samples - receptive_field) // hop + 1)


def build_wav2vec2_feature_encoder(
    norm="group",
    conv_dim=CONV_DIM,
    conv_kernel=CONV_KERNEL,
    conv_stride=CONV_STRIDE,
    conv_bias=False,
    epsilon=NORM_EPSILON,
    name="wav2vec2_feature_encoder",
):
    """Builds the wav2vec 2.0 feature encoder: waveform -> 20 ms frames.

    Layers are named `conv{i}`, `norm{i}` and `gelu{i}` after the `i`-th
    convolution, so `conv{i}` holds `conv_layers.{i}.conv` of a PyTorch
    checkpoint and `norm{i}` holds `conv_layers.{i}.layer_norm`.

    Args:
        norm: `"group"` (base: per-channel GroupNorm on the first layer only) or
            `"layer"` (large: LayerNorm over channels after every layer).
        conv_dim: output channels, one int for all layers or one per layer.
        conv_kernel: kernel size of each layer, in frames of the layer's input.
        conv_stride: stride of each layer.
        conv_bias: whether the convolutions have a bias (False in the base model).
        epsilon: the normalisation layers' epsilon.
        name: the model's name.

    Returns:
        A `keras.Model` from a 16 kHz waveform `(batch, samples, 1)` (or
        `(batch, samples)`) to features `(batch, frames, conv_dim[-1])`, with
        `frames = num_frames(samples, conv_kernel, conv_stride)`.

    Example:
        >>> model = build_wav2vec2_feature_encoder()
        >>> model.output_shape
        (None, None, 512)
    """
    if norm not in NORM_VARIANTS:
        raise ValueError(f"norm must be one of {NORM_VARIANTS}, got {norm!r}")
    if len(conv_kernel) != len(conv_stride):
        raise ValueError(f"conv_kernel has {len(conv_kernel)} entries but conv_stride has {len(conv_stride)}")
    dims = conv_dims(conv_dim, len(conv_kernel))
    waveform = keras.Input(shape=(None, 1), name="waveform")
    x = waveform
    for index, (filters, kernel, stride) in enumerate(zip(dims, conv_kernel, conv_stride)):
        x = layers.Conv1D(filters, kernel, strides=stride, padding="valid", use_bias=conv_bias, name=f"conv{index}")(x)
        if norm == "group" and index == 0:
            # One group per channel: each channel is normalised over time.
            x = layers.GroupNormalization(groups=filters, epsilon=epsilon, name=f"norm{index}")(x)
        elif norm == "layer":
            x = layers.LayerNormalization(epsilon=epsilon, name=f"norm{index}")(x)
        # keras.activations.gelu is the exact (erf) GELU unless approximate=True, as in PyTorch.
        x = layers.Activation("gelu", name=f"gelu{index}")(x)
    return keras.Model(waveform, x, name=name)
