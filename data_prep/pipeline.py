"""tf.data pipelines that feed pairs (and single crops) of raw waveform to Keras.

Steps: pair indices -> batch -> parallel map (decode with soundfile, resample,
crop, reject near-silent crops, normalise level) -> prefetch.
Every crop is a pure function of `(pair row, crop_seed)`, so the data is the
same however many threads decode it. A manifest row that is a segment of its
file (`start_s`/`end_s`, e.g. one speaker's turn in a meeting) is cropped only
inside the segment.
"""

import numpy as np

from data_prep.audio import load_audio, normalize_level
from data_prep.augment import REVERB_RT60_S, add_noise, reverberate_randomly
from data_prep.manifest import load_utterance, utterance_spans


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


def random_crop(path, duration_s, window_s, sample_rate, rng, min_activity=0.6, attempts=4, audio=None,
                offset_s=0.0, segment=False):
    """A `window_s` crop of an utterance, avoiding crops that are mostly silence.

    Up to `attempts` random offsets are tried; the first crop with at least
    `min_activity` active frames is kept, otherwise the most active one.
    Utterances shorter than the window are zero-padded at the end. With `audio`
    (the whole utterance, already at `sample_rate`) crops are sliced from memory
    instead of read from the file. An utterance that is a segment of its file
    starts `offset_s` into it; with `segment` nothing past its `duration_s` is
    read (the file goes on with other speech), otherwise the file's end is the limit.
    """
    num_samples = int(round(window_s * sample_rate))
    best, best_activity = None, -1.0
    for _ in range(attempts):
        start_s = rng.uniform(0.0, max(0.0, duration_s - window_s))
        if audio is None:
            length_s = min(window_s, duration_s - start_s) if segment else window_s
            crop = load_audio(path, sample_rate, start_s=offset_s + start_s, duration_s=max(length_s, 1e-3))
        else:
            start = int(round(start_s * sample_rate))
            crop = audio[start:start + num_samples]
        crop = np.pad(crop[:num_samples], (0, max(0, num_samples - len(crop))))
        activity = frame_activity(crop, sample_rate)
        if activity > best_activity:
            best, best_activity = crop, activity
        if activity >= min_activity:
            break
    return normalize_level(best).astype(np.float32)


def utterance_cache(manifest, *, sample_rate, cache_mb=2048):
    """`cached(row)`: manifest row `row` decoded at `sample_rate`, once, or None if nothing is cached.

    Utterances are kept only when the whole manifest, decoded, fits in `cache_mb` MB;
    the choice is made once for the whole manifest, so crops never depend on timing.
    Without the cache, callers read from the file.
    """
    paths = manifest["path"].astype(str).to_numpy()
    offsets, lengths = utterance_spans(manifest)
    durations = np.where(np.isnan(lengths), manifest["duration_s"].to_numpy(dtype=float), lengths)
    use_cache = durations.sum() * sample_rate * 4 <= cache_mb * 2**20
    cache = {}  # manifest row -> whole utterance at sample_rate; filled lazily by the loader threads

    def cached(row):
        if not use_cache:
            return None
        audio = cache.get(row)
        if audio is None:
            audio = cache[row] = load_utterance(paths[row], sample_rate, offsets[row], lengths[row])
        return audio

    return cached


def maybe_augmented(crop, rng, noise_prob, noise_snr_db, reverb_prob=0.0, reverb_rt60_s=REVERB_RT60_S, sample_rate=16000):
    """`crop` in a reverberant room with probability `reverb_prob` (reverberation time drawn from `reverb_rt60_s`),
    then with white, pink or brown noise at an SNR drawn from `noise_snr_db`, with probability `noise_prob`.

    Without reverberation no draw is made for it, so crops trained without it stay the same for a seed.
    """
    if reverb_prob > 0.0 and rng.random() < reverb_prob:
        crop = normalize_level(reverberate_randomly(crop, reverb_rt60_s, rng, sample_rate))
    if noise_prob > 0.0 and rng.random() < noise_prob:
        return normalize_level(add_noise(crop, rng.uniform(*noise_snr_db), rng))
    return crop


def crop_loader(manifest, *, sample_rate, window_s, cache_mb=2048, noise_prob=0.0, noise_snr_db=(5.0, 30.0),
                reverb_prob=0.0, reverb_rt60_s=REVERB_RT60_S):
    """`crop(row, rng)`: one training crop of manifest row `row`, drawn with `rng`.

    Crops are sliced from memory when `utterance_cache` keeps the utterances, otherwise
    seek-read from their files. With probability `noise_prob` a crop gets white,
    pink or brown background noise at an SNR drawn from `noise_snr_db`; before that, with
    probability `reverb_prob`, a synthetic room's reverberation (`data_prep.augment.room_impulse_response`).
    """
    paths = manifest["path"].astype(str).to_numpy()
    durations = manifest["duration_s"].to_numpy(dtype=float)
    offsets, lengths = utterance_spans(manifest)  # segments of files: crops stay inside them
    durations = np.where(np.isnan(lengths), durations, lengths)  # a segment's exact length, not rounded to ms
    cached = utterance_cache(manifest, sample_rate=sample_rate, cache_mb=cache_mb)

    def crop(row, rng):
        clean = random_crop(paths[row], durations[row], window_s, sample_rate, rng, audio=cached(row),
                            offset_s=offsets[row], segment=not np.isnan(lengths[row]))
        return maybe_augmented(clean, rng, noise_prob, noise_snr_db, reverb_prob, reverb_rt60_s, sample_rate)

    return crop


def pair_dataset(manifest, pairs, *, sample_rate, window_s, batch_size, drop_remainder=False, cache_mb=2048,
                 noise_prob=0.0, noise_snr_db=(5.0, 30.0), reverb_prob=0.0, reverb_rt60_s=REVERB_RT60_S):
    """A `tf.data.Dataset` of `((first, second), label)` batches.

    Args:
        manifest: utterance manifest (`path`, `duration_s`, ...).
        pairs: table from `data_prep.pairs.sample_pairs` (already shuffled, seeded).
        sample_rate: model rate in Hz; audio at other rates is resampled.
        window_s: crop length in seconds.
        batch_size: pairs per batch.
        cache_mb, noise_prob, noise_snr_db, reverb_prob, reverb_rt60_s: see `crop_loader` (the noise is drawn
            from the pair's seed, like the crop itself).

    Shapes: first, second `(batch, window_samples, 1)`, label `(batch,)`.
    """
    import tensorflow as tf

    num_samples = int(round(window_s * sample_rate))
    crop = crop_loader(manifest, sample_rate=sample_rate, window_s=window_s, cache_mb=cache_mb,
                       noise_prob=noise_prob, noise_snr_db=noise_snr_db, reverb_prob=reverb_prob,
                       reverb_rt60_s=reverb_rt60_s)

    def load_batch(first, second, crop_seed):
        batch = np.zeros((2, len(first), num_samples, 1), np.float32)
        for index, (a, b, seed) in enumerate(zip(first, second, crop_seed)):
            rng = np.random.default_rng(int(seed))
            batch[0, index, :, 0] = crop(a, rng)
            batch[1, index, :, 0] = crop(b, rng)
        return batch[0], batch[1]

    def tf_load_batch(first, second, label, crop_seed):
        a, b = tf.numpy_function(load_batch, [first, second, crop_seed], [tf.float32, tf.float32], stateful=False)
        a.set_shape((None, num_samples, 1))
        b.set_shape((None, num_samples, 1))
        return (a, b), tf.cast(label, tf.float32)

    # Batch the indices first and decode a whole batch per call: far less per-element overhead.
    columns = tuple(pairs[name].to_numpy(dtype=np.int64) for name in ("first", "second", "label", "crop_seed"))
    dataset = tf.data.Dataset.from_tensor_slices(columns).batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(tf_load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def crop_dataset(manifest, crops, *, sample_rate, window_s, batch_size, cache_mb=2048,
                 noise_prob=0.0, noise_snr_db=(5.0, 30.0), reverb_prob=0.0, reverb_rt60_s=REVERB_RT60_S):
    """A `tf.data.Dataset` of `(crops, speaker)` batches for batch-all contrastive training.

    Args:
        manifest: utterance manifest (`path`, `duration_s`, ...).
        crops: table from `data_prep.pairs.sample_speaker_batches`, in batch order.
        batch_size: crops per batch (P speakers x K crops); batches are cut in
            table order and never shuffled, so each holds whole speaker groups.
        The other arguments are those of `pair_dataset`.

    Shapes: crops `(batch, window_samples, 1)`, speaker `(batch,)` integer codes.
    """
    import tensorflow as tf

    num_samples = int(round(window_s * sample_rate))
    crop = crop_loader(manifest, sample_rate=sample_rate, window_s=window_s, cache_mb=cache_mb,
                       noise_prob=noise_prob, noise_snr_db=noise_snr_db, reverb_prob=reverb_prob,
                       reverb_rt60_s=reverb_rt60_s)

    def load_batch(rows, crop_seed):
        batch = np.zeros((len(rows), num_samples, 1), np.float32)
        for index, (row, seed) in enumerate(zip(rows, crop_seed)):
            batch[index, :, 0] = crop(row, np.random.default_rng(int(seed)))
        return batch

    def tf_load_batch(rows, speaker, crop_seed):
        audio = tf.numpy_function(load_batch, [rows, crop_seed], tf.float32, stateful=False)
        audio.set_shape((None, num_samples, 1))
        return audio, speaker

    columns = tuple(crops[name].to_numpy(dtype=np.int64) for name in ("row", "speaker", "crop_seed"))
    dataset = tf.data.Dataset.from_tensor_slices(columns).batch(batch_size, drop_remainder=True)
    dataset = dataset.map(tf_load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
