"""tf.data pipelines that feed pairs (and single crops) of raw waveform to Keras.

Steps: pair indices -> parallel map (seek-read only the crop with soundfile,
resample, reject near-silent crops, normalise level) -> batch -> prefetch.
Every crop is a pure function of `(pair row, crop_seed)`, so the data is the
same however many threads decode it.
"""

import numpy as np

from data_prep.audio import load_audio, normalize_level


def frame_activity(audio, sample_rate, frame_s=0.02, dynamic_range_db=30.0, floor_db=-55.0):
    """Share of 20 ms frames within `dynamic_range_db` of the loudest one and above a floor."""
    frame = max(1, int(frame_s * sample_rate))
    usable = len(audio) // frame * frame
    if usable == 0:
        return 0.0
    energy = np.mean(np.square(audio[:usable].reshape(-1, frame)), axis=1)
    energy_db = 10.0 * np.log10(energy + 1e-12)
    active = (energy_db > energy_db.max() - dynamic_range_db) & (energy_db > floor_db)
    return float(np.mean(active))


def random_crop(path, duration_s, window_s, sample_rate, rng, min_activity=0.6, attempts=4):
    """A `window_s` crop of an utterance, avoiding crops that are mostly silence.

    Up to `attempts` random offsets are tried; the first crop with at least
    `min_activity` active frames is kept, otherwise the most active one.
    Utterances shorter than the window are zero-padded at the end.
    """
    num_samples = int(round(window_s * sample_rate))
    best, best_activity = None, -1.0
    for _ in range(attempts):
        start_s = rng.uniform(0.0, max(0.0, duration_s - window_s))
        crop = load_audio(path, sample_rate, start_s=start_s, duration_s=window_s)
        crop = np.pad(crop[:num_samples], (0, max(0, num_samples - len(crop))))
        activity = frame_activity(crop, sample_rate)
        if activity > best_activity:
            best, best_activity = crop, activity
        if activity >= min_activity:
            break
    return normalize_level(best).astype(np.float32)


def pair_dataset(manifest, pairs, *, sample_rate, window_s, batch_size, drop_remainder=False):
    """A `tf.data.Dataset` of `((first, second), label)` batches.

    Args:
        manifest: utterance manifest (`path`, `duration_s`, ...).
        pairs: table from `data_prep.pairs.sample_pairs` (already shuffled, seeded).
        sample_rate: model rate in Hz; audio at other rates is resampled.
        window_s: crop length in seconds.
        batch_size: pairs per batch.

    Shapes: first, second `(batch, window_samples, 1)`, label `(batch,)`.
    """
    import tensorflow as tf

    paths = manifest["path"].astype(str).to_numpy()
    durations = manifest["duration_s"].to_numpy(dtype=float)
    num_samples = int(round(window_s * sample_rate))

    def load_pair(first, second, crop_seed):
        rng = np.random.default_rng(int(crop_seed))
        crops = [random_crop(paths[row], durations[row], window_s, sample_rate, rng) for row in (first, second)]
        return crops[0][:, None], crops[1][:, None]

    def tf_load_pair(first, second, label, crop_seed):
        a, b = tf.numpy_function(load_pair, [first, second, crop_seed], [tf.float32, tf.float32], stateful=False)
        a.set_shape((num_samples, 1))
        b.set_shape((num_samples, 1))
        return (a, b), tf.cast(label, tf.float32)

    columns = tuple(pairs[name].to_numpy(dtype=np.int64) for name in ("first", "second", "label", "crop_seed"))
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    dataset = dataset.map(tf_load_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
