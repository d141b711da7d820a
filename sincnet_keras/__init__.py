"""SincNet in Keras 3: the `SincConv1D` layer and the embedding tower built from presets.

Also the wav2vec 2.0 convolutional feature encoder, its checkpoint loader and its
self-supervised pretraining model (wav2vec 1.0's future-step prediction).
"""

from sincnet_keras.encoder import available_presets, build_encoder, load_preset, window_samples
from sincnet_keras.pooling import StatisticsPooling
from sincnet_keras.sinc_conv import SincConv1D
from sincnet_keras.wav2vec2 import build_wav2vec2_feature_encoder
from sincnet_keras.wav2vec2_checkpoint import load_wav2vec2_feature_encoder, wav2vec2_feature_encoder_weights
from sincnet_keras.wav2vec_pretraining import FuturePredictionLoss, build_pretrainer

__all__ = [
    "SincConv1D",
    "StatisticsPooling",
    "build_encoder",
    "load_preset",
    "available_presets",
    "window_samples",
    "build_wav2vec2_feature_encoder",
    "load_wav2vec2_feature_encoder",
    "wav2vec2_feature_encoder_weights",
    "FuturePredictionLoss",
    "build_pretrainer",
]
