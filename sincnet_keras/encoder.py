"""The SincNet embedding tower, built from a preset (a YAML file of numbers)."""

from pathlib import Path

import keras
import yaml
from keras import layers

from sincnet_keras.pooling import StatisticsPooling
from sincnet_keras.sinc_conv import SincConv1D

PRESET_DIR = Path(__file__).parent / "presets"
PRESET_KEYS = {
    "name", "sample_rate", "window_s", "num_stacks", "sinc", "front", "conv_filters",
    "conv_kernel_size", "conv_padding", "batchnorm_momentum", "leaky_relu_slope",
    "pooling", "embedding",
}


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
    unknown = set(preset) - PRESET_KEYS
    missing = PRESET_KEYS - set(preset) - {"name", "num_stacks"}
    if unknown or missing:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    if preset["pooling"] not in ("flatten", "statistics"):
        raise ValueError(f"{source}: pooling must be 'flatten' or 'statistics'")


def window_samples(preset):
    return int(round(preset["window_s"] * preset["sample_rate"]))


def conv_block(x, filters, preset, name):
    """Conv1D -> BatchNorm -> LeakyReLU -> MaxPool, the coursework's repeated block."""
    x = layers.Conv1D(filters, preset["conv_kernel_size"], padding=preset["conv_padding"], name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=preset["batchnorm_momentum"], name=f"{name}_bn")(x)
    x = layers.LeakyReLU(negative_slope=preset["leaky_relu_slope"], name=f"{name}_act")(x)
    return layers.MaxPooling1D(2, padding="same", name=f"{name}_pool")(x)


def sinc_stack(waveform, preset, name):
    """SincConv front end followed by the convolution blocks."""
    sinc = preset["sinc"]
    x = SincConv1D(sample_rate=preset["sample_rate"], name=f"{name}_sinc", **sinc)(waveform)
    if preset["front"]["norm"] == "layer":
        x = layers.LayerNormalization(name=f"{name}_sinc_norm")(x)
    x = layers.LeakyReLU(negative_slope=preset["leaky_relu_slope"], name=f"{name}_sinc_act")(x)
    x = layers.MaxPooling1D(preset["front"]["pool_size"], padding="same", name=f"{name}_sinc_pool")(x)
    for index, filters in enumerate(preset["conv_filters"]):
        x = conv_block(x, filters, preset, name=f"{name}_block{index}")
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
    stacks = [sinc_stack(waveform, preset, name=f"stack{i}") for i in range(preset.get("num_stacks", 1))]
    x = stacks[0] if len(stacks) == 1 else layers.Concatenate(name="stacks")(stacks)
    embedding = preset["embedding"]
    for index, units in enumerate(embedding["units"]):
        constraint = keras.constraints.UnitNorm(axis=0) if embedding["unit_norm_kernel"] else None
        x = layers.Dense(units, activation=embedding["activation"], kernel_constraint=constraint, name=f"dense{index}")(x)
    if embedding["l2_normalize"]:
        x = layers.UnitNormalization(name="l2_normalize")(x)
    return keras.Model(waveform, x, name=f"sincnet_{preset.get('name', 'custom')}")
