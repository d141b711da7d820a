"""Same/different-speaker pairs, drawn as row indices into an utterance manifest.

Pairs are indices, never copies of audio: a pair table of a million rows is a
few megabytes, and the audio is cropped on the fly by `data_prep.pipeline`.
Draws go through a per-speaker index (`SpeakerIndex`: the row positions sorted
by speaker and where each speaker's run begins), built in one sort, so a million
utterances of thousands of speakers are indexed in about a second and 16 MB.
`sample_speaker_batches` draws the other shape of the same idea: batches of P
speakers x K crops, where every pair inside a batch is a training pair.
"""

import numpy as np
import pandas as pd


class SpeakerIndex:
    """The manifest rows of each speaker, as slices of one array.

    `rows_of(code)` equals `np.flatnonzero(codes == code)` (rows in manifest
    order) without a pass over the manifest per speaker.

    Attributes:
        codes: speaker code of every row, `(rows,)`; codes follow the sorted speaker names.
        num_speakers: number of distinct speakers.
        order: row positions grouped by speaker, `(rows,)`.
        starts: where each speaker's rows begin in `order`, `(num_speakers + 1,)`.
    """

    def __init__(self, manifest):
        codes, speakers = pd.factorize(manifest["speaker"].astype(str), sort=True)
        self.codes = codes
        self.num_speakers = len(speakers)
        self.order = np.argsort(codes, kind="stable")
        self.starts = np.searchsorted(codes[self.order], np.arange(self.num_speakers + 1))

    def sizes(self, speaker_codes):
        """Number of rows of each speaker in `speaker_codes`."""
        speaker_codes = np.asarray(speaker_codes, dtype=np.int64)
        return self.starts[speaker_codes + 1] - self.starts[speaker_codes]

    def rows_of(self, code):
        """Row positions of speaker `code`, in manifest order."""
        return self.order[self.starts[code]:self.starts[code + 1]]

    def pick(self, speaker_codes, fractions):
        """One row per speaker code: the row at `fraction` (in [0, 1)) of the speaker's rows."""
        speaker_codes = np.asarray(speaker_codes, dtype=np.int64)
        offsets = (fractions * self.sizes(speaker_codes)).astype(int)
        return self.order[self.starts[speaker_codes] + offsets].astype(np.int64)


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
    index = SpeakerIndex(manifest)
    num_speakers = index.num_speakers
    if num_speakers < 2:
        raise ValueError("pairs need at least two speakers")
    num_positive = num_pairs // 2
    num_negative = num_pairs - num_positive

    def pick_utterance(speaker_codes):
        return index.pick(speaker_codes, rng.random(len(speaker_codes)))

    # Positives: two draws from one speaker, re-drawn to differ where possible.
    same = rng.integers(0, num_speakers, num_positive)
    first_pos = pick_utterance(same)
    second_pos = pick_utterance(same)
    for i in np.flatnonzero(first_pos == second_pos):
        rows = index.rows_of(same[i])
        choices = rows[rows != first_pos[i]]
        if len(choices):
            second_pos[i] = rng.choice(choices)
    # Negatives: a second speaker drawn from all the others, never the same one.
    a = rng.integers(0, num_speakers, num_negative)
    b = (a + rng.integers(1, num_speakers, num_negative)) % num_speakers
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
    index = SpeakerIndex(manifest)
    if index.num_speakers < 2:
        raise ValueError("pairs need at least two speakers")
    per_batch = min(speakers_per_batch, index.num_speakers)
    chosen = np.stack([rng.choice(index.num_speakers, per_batch, replace=False) for _ in range(num_batches)])
    speaker = np.repeat(chosen.reshape(-1), crops_per_speaker)
    rows = index.pick(speaker, rng.random(len(speaker)))
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
