"""Linear discriminant analysis (LDA) back end: a projection of the embeddings that speakers tell apart.

A tower trained on a few hundred speakers leaves some directions of its embedding
space to things other than the voice (channel, noise, phonetic content). LDA,
fitted on embeddings of labelled training speakers, whitens the variation within
a speaker and keeps the directions along which speakers differ most, the usual back
end of x-vector systems (Snyder et al., "X-vectors: robust DNN embeddings for speaker
recognition", 2018). The projection is appended to the tower as a `Dense` layer and
a unit normalisation, so the result is an ordinary `.keras` tower that loads in safe
mode and diarizes like any other.
"""

import numpy as np

LDA_LAYER = "lda"  # name of the appended projection: a tower holds at most one


def fit_lda(embeddings, speakers, dims, shrinkage=0.0):
    """`(mean, projection)` of shape `(D,)` and `(D, dims)`: `(x - mean) @ projection` separates speakers.

    Args:
        embeddings: `(num_windows, D)` window embeddings of the training speakers.
        speakers: `(num_windows,)` speaker label of each window.
        dims: output dimensions, at most `min(D, num_speakers - 1)`.
        shrinkage: share of the within-speaker covariance replaced by its mean variance (0-1); more
            shrinkage trusts the few windows per speaker less.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    speakers = np.asarray(speakers)
    if embeddings.ndim != 2 or len(embeddings) != len(speakers):
        raise ValueError("embeddings must be (windows, D) with one speaker label per window")
    names, index = np.unique(speakers, return_inverse=True)
    width = embeddings.shape[1]
    if len(names) < 2:
        raise ValueError("LDA needs windows of at least two speakers")
    if not 1 <= dims <= min(width, len(names) - 1):
        raise ValueError(f"dims must be between 1 and {min(width, len(names) - 1)} "
                         f"(the embedding size and the number of speakers minus one), got {dims}")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be between 0 and 1, got {shrinkage}")
    mean = embeddings.mean(axis=0)
    centred = embeddings - mean
    counts = np.bincount(index)
    speaker_means = np.zeros((len(names), width))
    np.add.at(speaker_means, index, centred)
    speaker_means /= counts[:, None]  # shape: (speakers, D)
    residual = centred - speaker_means[index]
    within = residual.T @ residual / len(embeddings)  # shape: (D, D)
    between = speaker_means.T @ speaker_means / len(names)  # every speaker counts once, however long it spoke
    # Shrinkage, plus a tiny ridge so a rank-deficient within-speaker covariance still whitens.
    average = np.trace(within) / width
    within = (1.0 - shrinkage) * within + (shrinkage * average + 1e-6 * average + 1e-12) * np.eye(width)
    values, vectors = np.linalg.eigh(within)
    whiten = vectors / np.sqrt(values)  # (x @ whiten) has identity within-speaker covariance
    spread, directions = np.linalg.eigh(whiten.T @ between @ whiten)
    strongest = np.argsort(spread)[::-1][:dims]
    return mean.astype(np.float32), (whiten @ directions[:, strongest]).astype(np.float32)


def with_lda(tower, mean, projection):
    """`tower` followed by the LDA projection and a unit normalisation (a new model sharing `tower`'s layers)."""
    import keras

    if any(layer.name == LDA_LAYER for layer in tower.layers):
        raise ValueError("the tower already ends in an LDA projection")
    mean, projection = np.asarray(mean, np.float32), np.asarray(projection, np.float32)
    if projection.ndim != 2 or projection.shape[0] != tower.output.shape[-1] or mean.shape != (projection.shape[0],):
        raise ValueError(f"the projection must be ({tower.output.shape[-1]}, dims) and the mean "
                         f"({tower.output.shape[-1]},) for this tower")
    dense = keras.layers.Dense(projection.shape[1], name=LDA_LAYER)
    x = keras.layers.UnitNormalization(name=f"{LDA_LAYER}_l2_normalize")(dense(tower.output))
    model = keras.Model(tower.input, x, name=tower.name)
    dense.set_weights([projection, -mean @ projection])  # (x - mean) @ projection as one affine map
    return model
