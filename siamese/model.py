"""The two-tower Siamese model: one tower object, applied to both inputs."""

import keras

import sincnet_keras  # noqa: F401  (registers the tower's layers so .keras files load)
from siamese.layers import EuclideanDistance


def build_siamese(tower):
    """Wraps an embedding tower `(batch, samples, 1) -> (batch, D)` into a pair model.

    Both inputs go through the *same* tower object, so the two branches share
    one set of weights; the output is their Euclidean distance, shape `(batch,)`.
    """
    shape = tower.input_shape[1:]  # (samples, 1) for a waveform tower, (frames, C) for a head on features
    first = keras.Input(shape=shape, name="first")
    second = keras.Input(shape=shape, name="second")
    distance = EuclideanDistance(name="distance")([tower(first), tower(second)])
    return keras.Model([first, second], distance, name="siamese")


def tower_of(siamese):
    """The shared embedding tower inside a Siamese model."""
    towers = [layer for layer in siamese.layers if isinstance(layer, keras.Model)]
    if len(towers) != 1:
        raise ValueError(f"expected one shared tower in {siamese.name}, found {len(towers)}")
    return towers[0]
