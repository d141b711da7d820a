"""Same/different-speaker pairs, drawn as row indices into an utterance manifest.

Pairs are indices, never copies of audio: a pair table of a million rows is a
few megabytes, and the audio is cropped on the fly by `data_prep.pipeline`.
`sample_speaker_batches` draws the other shape of the same idea: batches of P
speakers x K crops, where every pair inside a batch is a training pair.
"""

import numpy as np
import pandas as pd


def sample_pairs(manifest, num_pairs, seed):
    """Draws a balanced, shuffled table of pairs.

    Positives take two utterances of one speaker (two crops of the same utterance
    when the speaker has only one); negatives take two different speakers. Speakers
    are drawn uniformly, so talkative speakers do not dominate.

    Args:
        manifest: utterance manifest with a `speaker` column.
        num_pairs: number of pairs; half positive (rounded down), half negative.
        seed: an int or a sequence of ints for `numpy.random.default_rng`.

    Returns:
        DataFrame with columns `first`, `second` (manifest row positions),
        `label` (1 = same speaker) and `crop_seed` (fixes both crops).
    """
    rng = np.random.default_rng(seed)
    codes, speakers = pd.factorize(manifest["speaker"].astype(str), sort=True)
    if len(speakers) < 2:
        raise ValueError("pairs need at least two speakers")
    rows_of = [np.flatnonzero(codes == code) for code in range(len(speakers))]
    num_positive = num_pairs // 2
    num_negative = num_pairs - num_positive

    def pick_utterance(speaker_codes):
        sizes = np.array([len(rows_of[code]) for code in speaker_codes])
        offsets = (rng.random(len(speaker_codes)) * sizes).astype(int)
        return np.array([rows_of[code][offset] for code, offset in zip(speaker_codes, offsets)], dtype=np.int64)

    # Positives: two draws from one speaker, re-drawn to differ where possible.
    same = rng.integers(0, len(speakers), num_positive)
    first_pos = pick_utterance(same)
    second_pos = pick_utterance(same)
    for i in np.flatnonzero(first_pos == second_pos):
        choices = rows_of[same[i]][rows_of[same[i]] != first_pos[i]]
        if len(choices):
            second_pos[i] = rng.choice(choices)
    # Negatives: a second speaker drawn from all the others, never the same one.
    a = rng.integers(0, len(speakers), num_negative)
    b = (a + rng.integers(1, len(speakers), num_negative)) % len(speakers)
    pairs = pd.DataFrame({
        "first": np.concatenate([first_pos, pick_utterance(a)]),
        "second": np.concatenate([second_pos, pick_utterance(b)]),
        "label": np.concatenate([np.ones(num_positive, np.int64), np.zeros(num_negative, np.int64)]),
    })
    pairs = pairs.iloc[rng.permutation(len(pairs))].reset_index(drop=True)
    pairs["crop_seed"] = rng.integers(0, 2**31 - 1, len(pairs), dtype=np.int64)
    return pairs


def sample_speaker_batches(manifest, num_batches, speakers_per_batch, crops_per_speaker, seed):
    """Draws batches of `speakers_per_batch` speakers with `crops_per_speaker` crops each.

    Every two crops in such a batch form a pair, so one batch of P x K crops gives
    P x K x (K - 1) / 2 positive and many more negative pairs for the cost of
    P x K crops: the "batch-all" form of contrastive training. Speakers are drawn
    uniformly without replacement within a batch (all of them when there are
    fewer than P); each crop takes a random utterance of its speaker.

    Returns:
        DataFrame with `num_batches x P x K` rows in batch order: `row` (manifest
        row position), `speaker` (integer code, equal within a speaker) and
        `crop_seed` (fixes the crop).
    """
    if crops_per_speaker < 2:
        raise ValueError("batch-all training needs at least 2 crops per speaker")
    rng = np.random.default_rng(seed)
    codes, speakers = pd.factorize(manifest["speaker"].astype(str), sort=True)
    if len(speakers) < 2:
        raise ValueError("pairs need at least two speakers")
    rows_of = [np.flatnonzero(codes == code) for code in range(len(speakers))]
    per_batch = min(speakers_per_batch, len(speakers))
    chosen = np.stack([rng.choice(len(speakers), per_batch, replace=False) for _ in range(num_batches)])
    speaker = np.repeat(chosen.reshape(-1), crops_per_speaker)
    sizes = np.array([len(rows_of[code]) for code in speaker])
    offsets = (rng.random(len(speaker)) * sizes).astype(int)
    rows = np.array([rows_of[code][offset] for code, offset in zip(speaker, offsets)], dtype=np.int64)
    return pd.DataFrame({
        "row": rows,
        "speaker": speaker.astype(np.int64),
        "crop_seed": rng.integers(0, 2**31 - 1, len(rows), dtype=np.int64),
    })


def sample_crops(manifest, num_crops, seed):
    """Draws unlabelled crops for self-supervised pretraining: utterances weighted by duration.

    Returns the same columns as `sample_speaker_batches` (`row`, `speaker`, `crop_seed`),
    so `data_prep.pipeline.crop_dataset` reads either; here `speaker` is only carried along.
    """
    rng = np.random.default_rng(seed)
    durations = manifest["duration_s"].to_numpy(dtype=float)
    rows = rng.choice(len(manifest), num_crops, p=durations / durations.sum())
    codes, _ = pd.factorize(manifest["speaker"].astype(str), sort=True)
    return pd.DataFrame({
        "row": rows.astype(np.int64),
        "speaker": codes[rows].astype(np.int64),
        "crop_seed": rng.integers(0, 2**31 - 1, num_crops, dtype=np.int64),
    })
