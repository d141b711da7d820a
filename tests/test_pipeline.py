"""Pairs and the tf.data pair pipeline: balanced, speaker-correct, seeded, right shapes."""

import functools

import numpy as np

from data_prep.pairs import sample_pairs
from data_prep.pipeline import frame_activity, pair_dataset, random_crop


def test_pairs_are_balanced_and_labelled_by_speaker(librispeech_manifest):
    pairs = sample_pairs(librispeech_manifest, 1000, seed=3)
    speakers = librispeech_manifest["speaker"].to_numpy()
    same = speakers[pairs["first"]] == speakers[pairs["second"]]
    assert pairs["label"].sum() == 500
    np.testing.assert_array_equal(same, pairs["label"].to_numpy() == 1)


def test_pairs_use_different_utterances_when_a_speaker_has_several(librispeech_manifest):
    import pandas as pd

    doubled = librispeech_manifest.assign(path=librispeech_manifest["path"] + "#copy")  # a second "utterance" each
    manifest = pd.concat([librispeech_manifest, doubled], ignore_index=True)
    pairs = sample_pairs(manifest, 400, seed=0)
    positives = pairs[pairs["label"] == 1]
    assert (positives["first"] != positives["second"]).all()


def test_pairs_are_seeded(librispeech_manifest):
    first = sample_pairs(librispeech_manifest, 200, seed=[0, 1])
    again = sample_pairs(librispeech_manifest, 200, seed=[0, 1])
    other = sample_pairs(librispeech_manifest, 200, seed=[0, 2])
    assert first.equals(again)
    assert not first.equals(other)


def test_crops_avoid_silence(real_flac):
    rng = np.random.default_rng(0)
    crop = random_crop(real_flac, 15.0, 1.0, 8000, rng)
    assert crop.shape == (8000,) and crop.dtype == np.float32
    assert frame_activity(crop, 8000) >= 0.6
    assert abs(10 * np.log10(np.mean(crop**2)) + 20.0) < 0.5  # level-normalised to -20 dB RMS


def test_pair_dataset_shapes_and_determinism(librispeech_manifest):
    manifest = librispeech_manifest.iloc[:10]
    pairs = sample_pairs(manifest, 12, seed=5)
    batches = [
        list(pair_dataset(manifest, pairs, sample_rate=8000, window_s=0.5, batch_size=4).as_numpy_iterator())
        for _ in range(2)
    ]
    (first, second), labels = batches[0][0]
    assert first.shape == (4, 4000, 1) and second.shape == (4, 4000, 1) and labels.shape == (4,)
    assert len(batches[0]) == 3
    for ((a1, a2), _), ((b1, b2), _) in zip(batches[0], batches[1]):
        np.testing.assert_array_equal(a1, b1)
        np.testing.assert_array_equal(a2, b2)


def first_crops(manifest, **kwargs):
    """The first crops of the first batch of 8 seeded pairs of `manifest`, with `pair_dataset`'s `kwargs`."""
    pairs = sample_pairs(manifest, 8, seed=5)
    dataset = pair_dataset(manifest, pairs, sample_rate=8000, window_s=0.5, batch_size=8, **kwargs)
    (first, _), _ = next(dataset.as_numpy_iterator())
    return first


def test_noise_augmentation_is_seeded_and_at_the_drawn_snr(librispeech_manifest):
    manifest = librispeech_manifest.iloc[:10]
    first_batch = functools.partial(first_crops, manifest)
    clean = first_batch()
    noisy = first_batch(noise_prob=1.0, noise_snr_db=(10.0, 10.0))
    np.testing.assert_array_equal(noisy, first_batch(noise_prob=1.0, noise_snr_db=(10.0, 10.0)))
    assert not np.allclose(noisy, clean)
    # Same crops, plus noise 10 dB below them (both sides are level-normalised, so compare shapes).
    for a, b in zip(clean[..., 0], noisy[..., 0]):
        scale = np.dot(a, b) / np.dot(a, a)
        residual = b - scale * a
        assert abs(10 * np.log10(np.mean((scale * a) ** 2) / np.mean(residual**2)) - 10.0) < 1.5


def test_add_noise_leaves_silence_alone():
    from data_prep.augment import add_noise

    rng = np.random.default_rng(0)
    assert not np.any(add_noise(np.zeros(800, np.float32), 10.0, rng))
    tone = np.sin(np.arange(8000) * 0.3).astype(np.float32)
    noisy = add_noise(tone, 20.0, rng, exponent=1.0)
    assert abs(10 * np.log10(np.mean(tone**2) / np.mean((noisy - tone) ** 2)) - 20.0) < 0.01


def test_speaker_batches_hold_whole_groups_and_are_seeded(librispeech_manifest):
    from data_prep.pairs import sample_speaker_batches

    crops = sample_speaker_batches(librispeech_manifest, num_batches=3, speakers_per_batch=4, crops_per_speaker=3, seed=5)
    assert len(crops) == 3 * 4 * 3
    speakers = librispeech_manifest["speaker"].astype(str).to_numpy()
    for start in range(0, len(crops), 12):
        batch = crops.iloc[start:start + 12]
        groups = batch["speaker"].to_numpy().reshape(4, 3)
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0])) == 4  # 4 distinct speakers, 3 crops each
        for code, row in zip(batch["speaker"], batch["row"]):  # the code names the crop's real speaker
            assert code == sorted(set(speakers)).index(speakers[row])
    again = sample_speaker_batches(librispeech_manifest, num_batches=3, speakers_per_batch=4, crops_per_speaker=3, seed=5)
    assert crops.equals(again)


def test_crop_dataset_shapes_and_determinism(librispeech_manifest):
    from data_prep.pairs import sample_speaker_batches
    from data_prep.pipeline import crop_dataset

    manifest = librispeech_manifest.iloc[:6].reset_index(drop=True)
    crops = sample_speaker_batches(manifest, num_batches=2, speakers_per_batch=3, crops_per_speaker=2, seed=1)

    def batches():
        data = crop_dataset(manifest, crops, sample_rate=8000, window_s=0.5, batch_size=6, noise_prob=0.5)
        return [(audio.numpy(), speaker.numpy()) for audio, speaker in data]

    first, second = batches(), batches()
    assert len(first) == 2 and first[0][0].shape == (6, 4000, 1)
    for (audio_a, speaker_a), (audio_b, speaker_b) in zip(first, second):
        np.testing.assert_array_equal(audio_a, audio_b)
        np.testing.assert_array_equal(speaker_a, speaker_b)


def test_reverberation_augmentation_is_seeded_and_changes_crops(librispeech_manifest):
    """reverb_prob puts crops in a synthetic room, the same one for the same seed; at 0 no draw is made for it."""
    first_batch = functools.partial(first_crops, librispeech_manifest.iloc[:10])
    clean = first_batch()
    np.testing.assert_array_equal(clean, first_batch(reverb_prob=0.0))
    wet = first_batch(reverb_prob=1.0, reverb_rt60_s=(0.5, 0.5))
    np.testing.assert_array_equal(wet, first_batch(reverb_prob=1.0, reverb_rt60_s=(0.5, 0.5)))
    assert not np.allclose(wet, clean)
