"""Features of a frozen front end, computed once per utterance and cropped for pair training.

A frozen front end (for example the wav2vec 2.0 feature encoder) gives the same
output every epoch, so running it on every crop of every pair wastes nearly all
of the training time: on a 2-core CPU the wav2vec 2.0 encoder costs about 50
times the whole SincNet tower. The bank runs it once over each whole utterance
and pairs are cut from its output, as the diarizer runs it once over a whole
recording and cuts windows from its output (`siamese.Diarizer`). `featurize` is
any callable `(1, samples, 1) -> (1, frames, C)`, so this module knows nothing
of models.
"""

import numpy as np
import pandas as pd
from tqdm import tqdm

from data_prep.audio import normalize_level
from data_prep.augment import add_noise
from data_prep.manifest import load_utterance, utterance_spans


def feature_bank(manifest, featurize, *, sample_rate, noise_prob=0.0, noise_snr_db=(5.0, 30.0), seed=0,
                 desc="front-end features"):
    """Runs `featurize` once over each utterance of a manifest (only its segment, for a segment row).

    Args:
        manifest: utterance manifest (`path`, `speaker`, ...).
        featurize: callable from a waveform `(1, samples, 1)` float32 to `(1, frames, C)`.
        sample_rate: the front end's rate in Hz.
        noise_prob, noise_snr_db: share of utterances that get background noise, and
            its SNR range in dB; drawn once per utterance from `seed` (augmentation
            frozen with the features).

    Returns:
        `(features, items)`: a list of float16 arrays `(frames, C)`, one per
        utterance, and a table with their `speaker` and manifest `row`.
    """
    rng = np.random.default_rng(seed)
    features, items = [], []
    offsets, lengths = utterance_spans(manifest)
    for row, (path, speaker) in enumerate(tqdm(list(zip(manifest["path"], manifest["speaker"])), desc=desc,
                                               unit="file", disable=None)):
        audio = load_utterance(path, sample_rate, offsets[row], lengths[row])
        if noise_prob > 0.0 and rng.random() < noise_prob:
            audio = add_noise(audio, rng.uniform(*noise_snr_db), rng)
        output = np.asarray(featurize(normalize_level(audio)[None, :, None].astype(np.float32)))[0]
        features.append(output.astype(np.float16))
        items.append({"speaker": str(speaker), "row": row})
    return features, pd.DataFrame(items, columns=["speaker", "row"])


def bank_pair_dataset(features, pairs, *, window_frames, batch_size, drop_remainder=False):
    """A `tf.data.Dataset` of `((first, second), label)` feature-crop batches.

    `pairs` index the bank's items (from `data_prep.pairs.sample_pairs` on its
    table). Each side takes `window_frames` frames at an offset drawn from the
    pair's `crop_seed` (items shorter than that are zero-padded).
    Shapes: first, second `(batch, window_frames, C)`, label `(batch,)`.
    """
    import tensorflow as tf

    channels = features[0].shape[1]

    def crop(item, rng):
        array = features[item]
        start = rng.integers(0, max(1, len(array) - window_frames + 1))
        piece = array[start:start + window_frames].astype(np.float32)
        return np.pad(piece, ((0, window_frames - len(piece)), (0, 0)))

    def load_batch(first, second, crop_seed):
        batch = np.zeros((2, len(first), window_frames, channels), np.float32)
        for index, (a, b, seed) in enumerate(zip(first, second, crop_seed)):
            rng = np.random.default_rng(int(seed))
            batch[0, index], batch[1, index] = crop(a, rng), crop(b, rng)
        return batch[0], batch[1]

    def tf_load_batch(first, second, label, crop_seed):
        a, b = tf.numpy_function(load_batch, [first, second, crop_seed], [tf.float32, tf.float32], stateful=False)
        a.set_shape((None, window_frames, channels))
        b.set_shape((None, window_frames, channels))
        return (a, b), tf.cast(label, tf.float32)

    columns = tuple(pairs[name].to_numpy(dtype=np.int64) for name in ("first", "second", "label", "crop_seed"))
    dataset = tf.data.Dataset.from_tensor_slices(columns).batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(tf_load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
