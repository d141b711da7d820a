"""SincNet in Keras 3: the `SincConv1D` layer and the embedding tower built from presets."""

from sincnet_keras.encoder import available_presets, build_encoder, load_preset, window_samples
from sincnet_keras.pooling import StatisticsPooling
from sincnet_keras.sinc_conv import SincConv1D

__all__ = ["SincConv1D", "StatisticsPooling", "build_encoder", "load_preset", "available_presets", "window_samples"]
