"""The embedding tower, built from a preset (a YAML file of numbers).

Two front ends share the rest: `frontend: sinc` (the default, SincNet) and
`frontend: wav2vec2` (the wav2vec 2.0 feature encoder, frozen, followed by a
small head), so models are compared by choosing a preset.
"""

from pathlib import Path

import keras
import numpy as np
import yaml
from keras import layers, ops

from sincnet_keras.log_mel import LogMelSpectrogram
from sincnet_keras.pooling import StatisticsPooling
from sincnet_keras.sinc_conv import SincConv1D
from sincnet_keras.wav2vec2 import build_wav2vec2_feature_encoder

PRESET_DIR = Path(__file__).parent / "presets"
PRESET_KEYS = {
    "name", "sample_rate", "window_s", "num_stacks", "sinc", "front", "conv_filters",
    "conv_kernel_size", "conv_padding", "batchnorm_momentum", "leaky_relu_slope",
    "pooling", "embedding", "conv_pool_sizes",
}
WAV2VEC2_PRESET_KEYS = {"name", "frontend", "sample_rate", "window_s", "wav2vec2", "head", "pooling", "embedding"}


def available_presets():
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path):
    """Reads a preset by name (`"original"`, `"default"`, `"tiny"`) or from a YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown encoder preset {name_or_path!r}; known: {available_presets()}")
    with open(path) as file:
        preset = yaml.safe_load(file)
    check_preset(preset, source=str(path))
    return preset


def check_preset(preset, source="preset"):
    if not isinstance(preset, dict):
        raise ValueError(f"{source}: an encoder preset must be a mapping")
    frontend = preset.get("frontend", "sinc")
    if frontend not in ("sinc", "logmel", "wav2vec2"):
        raise ValueError(f"{source}: frontend must be 'sinc', 'logmel' or 'wav2vec2', got {frontend!r}")
    keys = {
        "sinc": PRESET_KEYS | {"frontend"},
        "logmel": PRESET_KEYS - {"sinc"} | {"frontend", "logmel"},  # the same tower, a fixed filterbank first
        "wav2vec2": WAV2VEC2_PRESET_KEYS,
    }[frontend]
    unknown = set(preset) - keys
    missing = keys - set(preset) - {"name", "num_stacks", "frontend", "conv_pool_sizes"}
    if unknown or missing:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    if preset["pooling"] not in ("flatten", "statistics"):
        raise ValueError(f"{source}: pooling must be 'flatten' or 'statistics'")
    pools = preset.get("conv_pool_sizes")
    if pools is not None and (not isinstance(pools, list) or len(pools) != len(preset.get("conv_filters", []))
                              or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in pools)):
        raise ValueError(f"{source}: conv_pool_sizes must list one whole number >= 1 per conv block, got {pools!r}")


def window_samples(preset):
    return int(round(preset["window_s"] * preset["sample_rate"]))


def conv_block(x, filters, preset, name, pool_size=2):
    """Conv1D -> BatchNorm -> LeakyReLU -> MaxPool, the coursework's repeated block (pool_size 1: no pooling)."""
    x = layers.Conv1D(filters, preset["conv_kernel_size"], padding=preset["conv_padding"], name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=preset["batchnorm_momentum"], name=f"{name}_bn")(x)
    x = layers.LeakyReLU(negative_slope=preset["leaky_relu_slope"], name=f"{name}_act")(x)
    if pool_size == 1:
        return x
    return layers.MaxPooling1D(pool_size, padding="same", name=f"{name}_pool")(x)


def sinc_stack(waveform, preset, name):
    """SincConv front end (or a fixed log-mel filterbank) followed by the convolution blocks."""
    if preset.get("frontend", "sinc") == "logmel":
        front = f"{name}_logmel"
        x = LogMelSpectrogram(sample_rate=preset["sample_rate"], name=front, **preset["logmel"])(waveform)
    else:
        front = f"{name}_sinc"
        x = SincConv1D(sample_rate=preset["sample_rate"], name=front, **preset["sinc"])(waveform)
    if preset["front"]["norm"] == "layer":
        x = layers.LayerNormalization(name=f"{front}_norm")(x)
    x = layers.LeakyReLU(negative_slope=preset["leaky_relu_slope"], name=f"{front}_act")(x)
    x = layers.MaxPooling1D(preset["front"]["pool_size"], padding="same", name=f"{front}_pool")(x)
    pools = preset.get("conv_pool_sizes", [2] * len(preset["conv_filters"]))
    for index, (filters, pool_size) in enumerate(zip(preset["conv_filters"], pools)):
        x = conv_block(x, filters, preset, name=f"{name}_block{index}", pool_size=pool_size)
    if preset["pooling"] == "flatten":
        return layers.Flatten(name=f"{name}_flatten")(x)
    return StatisticsPooling(name=f"{name}_stats")(x)


def build_encoder(preset="default"):
    """Builds the embedding tower: waveform `(batch, samples, 1)` -> `(batch, D)`.

    Args:
        preset: a preset name, a YAML path, or an already-loaded preset dict.
    """
    if not isinstance(preset, dict):
        preset = load_preset(preset)
    check_preset(preset)
    # Flatten fixes the input length; statistics pooling accepts any length.
    samples = window_samples(preset) if preset["pooling"] == "flatten" else None
    waveform = keras.Input(shape=(samples, 1), name="waveform")
    if preset.get("frontend", "sinc") == "wav2vec2":
        x, family = wav2vec2_stack(waveform, preset), "wav2vec2"
    else:
        stacks = [sinc_stack(waveform, preset, name=f"stack{i}") for i in range(preset.get("num_stacks", 1))]
        x = stacks[0] if len(stacks) == 1 else layers.Concatenate(name="stacks")(stacks)
        family = "logmel" if preset.get("frontend") == "logmel" else "sincnet"
    embedding = preset["embedding"]
    for index, units in enumerate(embedding["units"]):
        constraint = keras.constraints.UnitNorm(axis=0) if embedding["unit_norm_kernel"] else None
        last = index == len(embedding["units"]) - 1
        activation = None if last and embedding.get("last_linear", False) else embedding["activation"]
        x = layers.Dense(units, activation=activation, kernel_constraint=constraint, name=f"dense{index}")(x)
    if embedding["l2_normalize"]:
        x = layers.UnitNormalization(name="l2_normalize")(x)
    return keras.Model(waveform, x, name=f"{family}_{preset.get('name', 'custom')}")


def wav2vec2_stack(waveform, preset):
    """The wav2vec 2.0 feature encoder (a nested model named `frontend`) and its head.

    `head.type: conv2d` is the coursework's: the (frames x 512) features read as a
    one-channel image by strided Conv2D + MaxPool2D layers, then flattened.
    `head.type: conv1d` treats the 512 channels as features over time:
    LayerNorm, Conv1D blocks, then the preset's pooling.
    """
    settings, head = preset["wav2vec2"], preset["head"]
    frontend = build_wav2vec2_feature_encoder(norm=settings["norm"], conv_dim=settings["conv_dim"], name="frontend")
    frontend.trainable = settings["trainable"]
    x = frontend(waveform)  # shape: (batch, frames, 512)
    if head["type"] == "conv2d":
        x = layers.Reshape((-1, x.shape[-1], 1), name="as_image")(x)  # shape: (batch, frames, 512, 1)
        for index, (filters, kernel, stride) in enumerate(zip(head["filters"], head["kernel_sizes"], head["strides"])):
            x = layers.Conv2D(filters, kernel, strides=stride, activation=head["activation"], name=f"head_conv{index}")(x)
            if head["pool_after"][index]:
                x = layers.MaxPooling2D(head["pool_size"], strides=head["pool_stride"], name=f"head_pool{index}")(x)
    elif head["type"] == "conv1d":
        x = layers.LayerNormalization(name="head_norm")(x)
        for index, filters in enumerate(head["filters"]):
            x = layers.Conv1D(filters, head["kernel_size"], padding="same", name=f"head_conv{index}")(x)
            x = layers.BatchNormalization(momentum=head["batchnorm_momentum"], name=f"head_bn{index}")(x)
            x = layers.LeakyReLU(negative_slope=head["leaky_relu_slope"], name=f"head_act{index}")(x)
    else:
        raise ValueError(f"head.type must be 'conv2d' or 'conv1d', got {head['type']!r}")
    if preset["pooling"] == "flatten":
        return layers.Flatten(name="flatten")(x)
    return StatisticsPooling(name="stats")(x)


def split_frontend(tower):
    """`(frontend, head)` of a tower whose first layer after the input is a nested `frontend` model.

    The head is a model from the frontend's output to the embedding that shares
    the tower's layers, so training it trains the tower; None when there is no
    such front end (SincNet towers).
    """
    names = [layer.name for layer in tower.layers]
    if "frontend" not in names:
        return None
    frontend = tower.get_layer("frontend")
    consumer = tower.layers[names.index("frontend") + 1]
    return frontend, keras.Model(consumer.input, tower.output, name=f"{tower.name}_head")


def load_frontend_weights(tower, path):
    """Sets a tower's wav2vec 2.0 front end from a pretrained encoder.

    `path` is an `encoder.keras` from `experiments.pretrain_wav2vec`, or a Hugging
    Face / torchaudio checkpoint (see `sincnet_keras.wav2vec2_checkpoint`).
    """
    from pathlib import Path

    from sincnet_keras.wav2vec2_checkpoint import load_wav2vec2_feature_encoder

    frontend = tower.get_layer("frontend")
    if Path(path).suffix == ".keras":
        source = keras.saving.load_model(path, safe_mode=True)
    else:
        norm = "layer" if any(layer.name == "norm1" for layer in frontend.layers) else "group"
        source = load_wav2vec2_feature_encoder(path, norm=norm)
    frontend.set_weights(source.get_weights())


@keras.saving.register_keras_serializable(package="sincnet_keras")
class CentredLayerNorm(layers.Layer):
    """Layer normalisation over the channels of frames whose channel mean is already zero.

    `fold_batch_norm` centres the filters before a LayerNormalization, so its
    input needs no mean removed: one pass fewer over the tower's largest frames.
    Same `gamma`, `beta` and `epsilon` as the LayerNormalization it replaces.
    """

    def __init__(self, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="beta")

    def call(self, inputs):
        return inputs * ops.rsqrt(ops.mean(ops.square(inputs), axis=-1, keepdims=True) + self.epsilon) * self.gamma + self.beta

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def fold_batch_norm(model):
    """An inference copy of a chain of layers with each `Conv1D -> BatchNormalization` made one `Conv1D`.

    At inference a batch norm is a fixed per-channel scale and shift, which the
    convolution before it can absorb (scale its kernel, shift its bias): one pass
    over the frames instead of two. The SincConv becomes a plain `Conv1D` with its
    current filters, so they are not rebuilt on every call; a LayerNormalization
    after it becomes a `CentredLayerNorm` over filters centred across channels.
    An activation that never decreases (ReLU, LeakyReLU with a slope >= 0) followed
    by max pooling is applied after the pooling instead, on half the frames: the
    maximum of the activations is the activation of the maximum. Other layers are
    copied (same config and weights), so `model`'s own layers gain no new calls.
    Returns `model` itself unless it is a single chain (each layer feeding only the next).
    """
    chain = model.layers[1:]
    if not isinstance(model.layers[0], layers.InputLayer) or any(
            len(layer._inbound_nodes) != 1 or layer.input is not previous.output
            for previous, layer in zip(model.layers, chain)):
        return model
    x = inputs = keras.Input(model.input.shape[1:], dtype=model.input.dtype)
    index = 0
    while index < len(chain):
        layer = chain[index]
        following = chain[index + 1] if index + 1 < len(chain) else None
        if isinstance(layer, SincConv1D):
            conv = layers.Conv1D(layer.filters, layer.kernel_size, strides=layer.stride, padding=layer.padding,
                                 use_bias=False, name=layer.name)
            x = conv(x)
            filters = np.asarray(layer.sinc_filters())  # shape: (kernel, 1, channels)
            if (isinstance(following, layers.LayerNormalization) and np.atleast_1d(following.axis).tolist() in ([-1], [2])
                    and following.center and following.scale and not following.rms_scaling):
                # The mean over channels of the outputs is the output of the mean filter: centred filters
                # give centred outputs, and the norm only has to scale them.
                filters = filters - filters.mean(axis=-1, keepdims=True)
                norm = CentredLayerNorm(epsilon=following.epsilon, name=following.name)
                x = norm(x)
                norm.set_weights(following.get_weights())
                index += 1
            conv.set_weights([filters])
        elif (isinstance(layer, layers.ReLU) or isinstance(layer, layers.LeakyReLU) and layer.negative_slope >= 0) \
                and isinstance(following, layers.MaxPooling1D):
            for original in (following, layer):  # pool first, then the activation on the pooled frames
                copy = original.__class__.from_config(original.get_config())
                x = copy(x)
            index += 1
        elif (type(layer) is layers.Conv1D and layer.activation is keras.activations.linear
              and isinstance(following, layers.BatchNormalization) and following.axis in (-1, 2)
              and following.center and following.scale):
            kernel = np.asarray(layer.kernel)
            bias = np.asarray(layer.bias) if layer.use_bias else np.zeros(kernel.shape[-1], np.float32)
            mean, variance = np.asarray(following.moving_mean), np.asarray(following.moving_variance)
            scale = np.asarray(following.gamma) / np.sqrt(variance + following.epsilon)
            conv = layers.Conv1D(layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
                                 dilation_rate=layer.dilation_rate, name=layer.name)
            x = conv(x)
            conv.set_weights([kernel * scale, (bias - mean) * scale + np.asarray(following.beta)])
            index += 1  # the batch norm is inside the convolution now
        else:
            copy = layer.__class__.from_config(layer.get_config())
            x = copy(x)
            copy.set_weights(layer.get_weights())
        index += 1
    return keras.Model(inputs, x, name=f"{model.name}_folded")
