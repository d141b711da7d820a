"""Tests for siamese.diarizer: clustering and timeline logic on hand-made embeddings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from pyannote.core import Annotation

from siamese.diarizer import Diarizer, DiarizerSettings, Windows
from sincnet_keras import build_encoder

# The first-release pipeline: raw embeddings, AHC for the split, nearest-window turns. The tests
# of clustering mechanics below use it on hand-made (not unit-norm) embeddings.
AHC = {"center": False, "clustering": "ahc", "resegment": None}


@pytest.fixture(scope="module")
def tiny_diarizer():
    """An untrained tiny tower at 8 kHz: fine for shapes and empty inputs, not for speakers."""
    return Diarizer(build_encoder("tiny"), DiarizerSettings(sample_rate=8000, window_s=0.5, hop_s=0.25))


def _two_blobs(seed=0, dim=8):
    """Windows of speaker B, then A, then B again: 5 + 10 + 5 points, blobs ~14 apart, spread ~0.4."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.1, (10, dim))
    b = rng.normal(5.0, 0.1, (10, dim))
    embeddings = np.concatenate([b[:5], a, b[5:]])
    expected = np.array([0] * 5 + [1] * 10 + [0] * 5)  # first window's speaker is 0
    return embeddings, expected


# --- Clustering ----------------------------------------------------------------------------


@pytest.mark.parametrize("linkage", ["average", "complete", "single"])
def test_cluster_two_blobs_by_threshold(linkage):
    embeddings, expected = _two_blobs()
    diarizer = Diarizer(tower=None, settings=DiarizerSettings(**AHC, threshold=2.0, linkage=linkage))
    labels = diarizer.cluster(embeddings)
    np.testing.assert_array_equal(labels, expected)
    # An explicit threshold overrides the calibrated one.
    assert diarizer.cluster(embeddings, threshold=100.0).tolist() == [0] * 20


def test_cluster_two_blobs_by_count():
    embeddings, expected = _two_blobs(seed=1)
    diarizer = Diarizer(tower=None, settings=DiarizerSettings(**AHC, threshold=1e6))  # threshold must not matter
    np.testing.assert_array_equal(diarizer.cluster(embeddings, num_speakers=2), expected)
    assert diarizer.cluster(embeddings, num_speakers=1).tolist() == [0] * 20


def _long_two_voices(seed=4):
    """Unit windows of 2 voices taking turns over 600 windows; each voice alternates between 2 tight groups 0.52
    apart (what it says), further apart than the threshold used below but far nearer each other than the voices."""
    rng = np.random.default_rng(seed)
    groups = np.array([[1.0, 0.0, 0.0], [np.cos(np.pi / 6), np.sin(np.pi / 6), 0.0],
                       [0.0, 0.0, 1.0], [0.0, np.sin(np.pi / 6), np.cos(np.pi / 6)]])
    voice = np.repeat(np.arange(30) % 2, 20)  # turns of 20 windows
    group = 2 * voice + np.repeat((np.arange(30) // 2) % 2, 20)  # each voice's turns alternate between its groups
    embeddings = groups[group] + rng.normal(0, 0.01, (len(group), 3))
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), voice


@pytest.mark.parametrize("clustering", ["ahc", "spectral"])
def test_long_recordings_link_the_speakers_of_blocks(clustering):
    embeddings, voice = _long_two_voices()
    settings = DiarizerSettings(**{**AHC, "clustering": clustering}, threshold=0.2, min_cluster_s=2.0, hop_s=0.25)
    assert len(set(Diarizer(None, settings).cluster(embeddings))) == 4  # each voice's groups count as speakers
    linked = replace(settings, link_threshold=0.8, count_block_windows=200)
    labels = Diarizer(None, linked).cluster(embeddings)
    assert len(set(labels)) == 2
    if clustering == "ahc":  # (the spectral split of these synthetic groups, 4 disconnected ones, is arbitrary)
        assert labels.tolist() == voice.tolist()  # the first window's voice is 0
    # Not when the groups are further apart than the link, nor when the recording fits in one block.
    assert len(set(Diarizer(None, replace(linked, link_threshold=0.3)).cluster(embeddings))) == 4
    assert len(set(Diarizer(None, replace(linked, count_block_windows=600)).cluster(embeddings))) == 4
    centred = replace(linked, center=True)  # the link then scales with the count found (sqrt(K / (K - 1)))
    assert len(set(Diarizer(None, centred).cluster(embeddings))) == 2
    assert len(set(Diarizer(None, replace(centred, link_threshold=0.6)).cluster(embeddings))) == 4
    for bad in ({"link_threshold": -1.0}, {"count_block_windows": 1}, {"count_block_windows": 2.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Diarizer(None, replace(linked, **bad)).cluster(embeddings)


def test_blockwise_count_applies_the_count_correction_as_a_whole_recording_count_does():
    """With `threshold_count_power`, each block is cut at the threshold for the count it finds, as `cluster` cuts a
    recording of one block: here both see each voice's two groups as one speaker, and without it both see two."""
    embeddings, _ = _long_two_voices()
    settings = DiarizerSettings(**{**AHC, "center": True}, threshold=0.7, min_cluster_s=2.0, hop_s=0.25,
                                link_threshold=0.3, count_block_windows=200)
    for power, speakers in ((0.0, 4), (1.0, 2)):
        corrected = replace(settings, threshold_count_power=power)
        assert len(set(Diarizer(None, corrected).cluster(embeddings))) == speakers  # blocks of 200, linked
        assert len(set(Diarizer(None, replace(corrected, link_threshold=None)).cluster(embeddings))) == speakers


def test_cluster_labels_ordered_by_first_appearance():
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    order = [2, 2, 0, 1, 0, 2, 1]
    embeddings = centres[order] + rng.normal(0, 0.05, (len(order), 2))
    labels = Diarizer(None, DiarizerSettings(**AHC, threshold=1.0, min_cluster_s=0.0)).cluster(embeddings)
    assert labels.tolist() == [0, 0, 1, 2, 1, 0, 2]


def test_small_clusters_join_the_nearest_speaker():
    """Two speakers of 20 windows each and 3 stray windows: strays are not a speaker of their own."""
    rng = np.random.default_rng(4)
    a = rng.normal(0, 0.05, (20, 2))
    b = rng.normal(0, 0.05, (20, 2)) + [10.0, 0.0]
    strays = np.array([[2.0, 4.0], [2.2, 4.1], [9.0, 3.0]])  # nearer a, nearer a, nearer b
    embeddings = np.concatenate([a, b, strays])
    diarizer = Diarizer(None, DiarizerSettings(**AHC, threshold=1.0, hop_s=0.25, min_cluster_s=2.0))
    for labels in (diarizer.cluster(embeddings), diarizer.cluster(embeddings, num_speakers=2)):
        assert sorted(set(labels.tolist())) == [0, 1]
        assert labels[40:].tolist() == [0, 0, 1]


def test_cluster_zero_and_one_window():
    diarizer = Diarizer(None, DiarizerSettings(**AHC))
    assert diarizer.cluster(np.zeros((0, 4))).tolist() == []
    assert diarizer.cluster(np.ones((1, 4))).tolist() == [0]
    assert diarizer.cluster(np.ones((1, 4)), num_speakers=3).tolist() == [0]


# --- Windows over regions ------------------------------------------------------------------


def test_neighbour_mean_stays_inside_each_region():
    from siamese.diarizer import neighbour_mean

    points = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0]])
    region_of = np.array([0, 0, 0, 1, 1, 2])
    np.testing.assert_allclose(neighbour_mean(points, region_of, 1)[:, 0], [0.5, 1.0, 1.5, 10.5, 10.5, 20.0])
    np.testing.assert_allclose(neighbour_mean(points, region_of, 5)[:, 0], [1.0, 1.0, 1.0, 10.5, 10.5, 20.0])


def test_smoothing_keeps_a_stray_window_with_its_neighbours():
    """One window of A's turn that looks like B: alone it is taken for B, with its neighbours averaged in it stays A."""
    rng = np.random.default_rng(0)
    a, b = np.eye(8)[0], np.eye(8)[1]
    embeddings = np.concatenate([np.tile(a, (12, 1)), np.tile(b, (12, 1))]) + rng.normal(0, 0.05, (24, 8))
    embeddings[5] = b + rng.normal(0, 0.05, 8)  # a stray window inside A's turn
    region_of = np.array([0] * 12 + [1] * 12)
    settings = DiarizerSettings(**AHC, threshold=0.8, min_cluster_s=0.0)
    alone = Diarizer(None, settings).cluster(embeddings, region_of=region_of)
    assert alone[5] != alone[4]
    smoothed = Diarizer(None, replace(settings, smooth_windows=2)).cluster(embeddings, region_of=region_of)
    assert smoothed.tolist() == [0] * 12 + [1] * 12  # and the turn change stays where it is
    for bad in (-1, 1.5, "2"):
        with pytest.raises(ValueError, match="smooth_windows"):
            Diarizer(None, replace(settings, smooth_windows=bad)).cluster(embeddings)


def test_cluster_windows_share_their_windows_centres_inside_the_speech_region():
    diarizer = Diarizer(None, DiarizerSettings(**AHC, window_s=1.0, hop_s=0.25))
    regions = [(0.0, 5.0), (6.0, 6.8)]
    starts, region_of = diarizer.window_starts(regions, duration_s=10.0)
    cluster = diarizer.centred_starts(starts, region_of, regions, 10.0, 1.5)
    inside = region_of == 0
    middle = (starts > 0.5) & (starts + 1.0 < 4.5) & inside
    np.testing.assert_allclose(cluster[middle] + 0.75, starts[middle] + 0.5)  # same centres away from the edges
    assert cluster[inside].min() == 0.0 and cluster[inside].max() == pytest.approx(3.5)  # kept inside (0, 5)
    assert cluster[~inside].tolist() == pytest.approx([6.4 - 0.75])  # a short region: centred on it, as its window


def test_clustering_compares_the_cluster_windows_and_the_turns_keep_the_windows(tiny_diarizer):
    """Longer cluster windows are pooled from the same frames as the windows; a fixed-length tower refuses them."""
    t = np.arange(4 * 8000) / 8000
    audio = (0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t) * (1 + np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)
    regions = [(0.2, 3.8)]  # a rising, pulsing tone: what a window hears changes along the recording
    plain = tiny_diarizer.embed(audio, regions=regions)
    assert plain.cluster_embeddings is None and plain.for_clustering is plain.embeddings
    longer = Diarizer(tiny_diarizer.tower, replace(tiny_diarizer.settings, cluster_window_s=1.0))
    windows = longer.embed(audio, regions=regions)
    np.testing.assert_allclose(windows.embeddings, plain.embeddings, atol=1e-6)  # the turns' windows are unchanged
    assert windows.for_clustering is windows.cluster_embeddings
    starts = longer.centred_starts(windows.starts, windows.region_of, regions, 4.0, 1.0)
    # What a diarizer of 1 s windows gives at those starts, from the frames computed once for both lengths.
    one_second = Diarizer(tiny_diarizer.tower, replace(tiny_diarizer.settings, window_s=1.0))
    heard = longer.load_audio(audio)  # as `embed` hears it
    np.testing.assert_allclose(windows.cluster_embeddings, one_second.embed_windows_shared(heard, starts), atol=1e-5)
    assert np.abs(windows.cluster_embeddings - windows.embeddings).max() > 0.05
    same = Diarizer(tiny_diarizer.tower, replace(tiny_diarizer.settings, cluster_window_s=0.5))  # the window's own
    assert same.embed(audio, regions=regions).cluster_embeddings is None
    for bad in (0.0, -1.0, "1.5", True):
        with pytest.raises(ValueError, match="cluster_window_s"):
            Diarizer(tiny_diarizer.tower, replace(tiny_diarizer.settings, cluster_window_s=bad)).embed(audio)
    fixed = Diarizer(build_encoder("original"), DiarizerSettings(cluster_window_s=1.5))
    with pytest.raises(ValueError, match="any window length"):
        fixed.embed(audio, regions=regions)


def test_window_starts_cover_regions():
    diarizer = Diarizer(None, DiarizerSettings(**AHC, window_s=1.0, hop_s=0.25))
    regions = [(2.0, 2.6), (5.0, 7.1)]
    starts, region_of = diarizer.window_starts(regions, duration_s=10.0)

    # Short region: one window centred on it.
    assert region_of.tolist() == [0] + [1] * 6
    assert starts[0] == pytest.approx(2.3 - 0.5)

    # Long region: windows a hop apart from its start; the last ends exactly at its end.
    long = starts[region_of == 1]
    np.testing.assert_allclose(long, [5.0, 5.25, 5.5, 5.75, 6.0, 6.1])
    np.testing.assert_allclose(np.diff(long[:-1]), 0.25)
    assert 0 < long[-1] - long[-2] <= 0.25
    assert long[-1] + 1.0 == pytest.approx(7.1)
    assert np.all(long >= 5.0) and np.all(long + 1.0 <= 7.1 + 1e-9)


def test_window_starts_short_regions_stay_inside_the_file():
    diarizer = Diarizer(None, DiarizerSettings(**AHC, window_s=1.0, hop_s=0.25))
    starts, _ = diarizer.window_starts([(0.1, 0.5), (2.8, 3.0)], duration_s=3.0)
    np.testing.assert_allclose(starts, [0.0, 2.0])


def test_window_starts_region_of_exact_window_length():
    diarizer = Diarizer(None, DiarizerSettings(**AHC, window_s=1.0, hop_s=0.25))
    starts, _ = diarizer.window_starts([(4.0, 5.0)], duration_s=10.0)
    np.testing.assert_allclose(starts, [4.0])


# --- Labels back onto the timeline ---------------------------------------------------------


def _tracks(annotation):
    return sorted((round(s.start, 6), round(s.end, 6), label) for s, _, label in annotation.itertracks(yield_label=True))


def test_to_annotation_merges_segments_inside_regions():
    diarizer = Diarizer(None, DiarizerSettings(**AHC, window_s=1.0, hop_s=0.5))
    regions = [(0.0, 3.0), (4.0, 4.5)]
    starts, region_of = diarizer.window_starts(regions, duration_s=6.0)
    np.testing.assert_allclose(starts, [0.0, 0.5, 1.0, 1.5, 2.0, 3.75])  # short region: centred window
    windows = Windows(starts, regions, region_of, np.zeros((len(starts), 2)))
    labels = np.array([0, 0, 0, 1, 1, 0])
    annotation = diarizer.to_annotation(windows, labels, uri="meeting")

    assert annotation.uri == "meeting"
    # Centres 0.5, 1, 1.5, 2, 2.5: the 0 -> 1 change falls midway between 1.5 and 2.
    assert _tracks(annotation) == [(0.0, 1.75, "spk0"), (1.75, 3.0, "spk1"), (4.0, 4.5, "spk0")]
    for segment in annotation.get_timeline():
        assert any(begin <= segment.start and segment.end <= end for begin, end in regions)


def test_to_annotation_single_label_is_one_segment_per_region():
    diarizer = Diarizer(None, DiarizerSettings(**AHC, window_s=1.0, hop_s=0.25))
    regions = [(1.0, 4.0), (6.0, 9.0)]
    starts, region_of = diarizer.window_starts(regions, duration_s=10.0)
    windows = Windows(starts, regions, region_of, np.zeros((len(starts), 2)))
    annotation = diarizer.to_annotation(windows, np.zeros(len(starts), int))
    assert _tracks(annotation) == [(1.0, 4.0, "spk0"), (6.0, 9.0, "spk0")]


# --- End to end with a tiny untrained tower ------------------------------------------------


def test_diarize_digital_silence_is_empty(tiny_diarizer):
    annotation = tiny_diarizer.diarize(np.zeros(2 * 8000, np.float32))
    assert isinstance(annotation, Annotation)
    assert len(annotation) == 0
    assert annotation.uri == "audio"


def test_embed_noise(tiny_diarizer):
    noise = np.random.default_rng(0).normal(0.0, 0.1, 3 * 8000).astype(np.float32)
    # The default detector keeps only frames that rise above the recording's own noise: steady noise is no speech.
    assert tiny_diarizer.settings.vad["method"] == "spectral"
    assert tiny_diarizer.embed(noise).regions == []
    plain = {"method": "webrtc", "aggressiveness": 0}  # plain WebRTC calls loud noise speech
    plain_diarizer = Diarizer(tiny_diarizer.tower, replace(tiny_diarizer.settings, vad=plain))
    windows = plain_diarizer.embed(noise)
    assert len(windows.regions) == 1
    begin, end = windows.regions[0]
    assert begin == pytest.approx(0.0, abs=0.05) and end == pytest.approx(3.0, abs=0.05)
    num_windows = len(windows.starts)
    assert num_windows == len(plain_diarizer.window_starts(windows.regions, 3.0)[0]) > 1
    assert windows.embeddings.shape == (num_windows, 32)
    np.testing.assert_allclose(np.linalg.norm(windows.embeddings, axis=1), 1.0, atol=1e-5)


def test_numpy_blas_runs_on_one_thread_while_diarizing(tiny_diarizer, monkeypatch):
    """OpenBLAS's spinning workers would take the cores TensorFlow needs (see `serial_blas`)."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}

    seen = []
    speech = Diarizer.speech

    def watched(self, audio):
        seen.append(blas_threads())
        return speech(self, audio)

    monkeypatch.setattr(Diarizer, "speech", watched)
    before = blas_threads()
    tiny_diarizer.diarize(np.random.default_rng(1).normal(0.0, 0.1, 2 * 8000).astype(np.float32))
    assert seen == [{1}]
    assert blas_threads() == before  # restored afterwards


def test_diarize_noise_labels_speech(tiny_diarizer):
    burst = np.zeros(3 * 8000, np.float32)  # 2 s of loud noise between quiet stretches: the detector's "speech"
    burst[4000:20000] = np.random.default_rng(1).normal(0.0, 0.1, 16000)
    burst += np.random.default_rng(2).normal(0.0, 1e-4, burst.size).astype(np.float32)
    annotation = tiny_diarizer.diarize(burst, num_speakers=1, uri="noise")
    assert annotation.uri == "noise"
    assert annotation.labels() == ["spk0"]
    assert annotation.get_timeline().duration() == pytest.approx(2.0, abs=0.1)


def test_long_recordings_cluster_in_two_stages_with_bounded_memory():
    """20,000 windows of three speakers in long turns: the two-stage path keeps every window's label."""
    rng = np.random.default_rng(7)
    centres = np.eye(3, 8) * 3.0
    truth = np.repeat(np.tile([0, 1, 2], 20), 20000 // 60 + 1)[:20000]
    embeddings = centres[truth] + rng.normal(0, 0.1, (20000, 8))
    settings = DiarizerSettings(**AHC, threshold=1.0, hop_s=0.25, max_cluster_points=1000)
    labels = Diarizer(None, settings).cluster(embeddings)
    assert labels.shape == (20000,) and len(set(labels.tolist())) == 3
    mapping = {true: labels[np.flatnonzero(truth == true)[0]] for true in range(3)}
    assert np.mean(labels == np.vectorize(mapping.get)(truth)) > 0.99
    oracle = Diarizer(None, settings).cluster(embeddings, num_speakers=3)
    assert np.array_equal(oracle, labels)


def test_eigengap_counts_well_separated_speakers():
    from siamese.diarizer import eigengap_speaker_count

    rng = np.random.default_rng(3)
    centres = np.eye(4, 16)
    for speakers in (2, 3, 4):
        points = centres[np.repeat(np.arange(speakers), 30)] + rng.normal(0, 0.05, (30 * speakers, 16))
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        assert eigengap_speaker_count(points, max_speakers=8, prune=0.2) == speakers
    diarizer = Diarizer(None, DiarizerSettings(**AHC, speaker_count="eigengap", hop_s=0.25))
    assert len(set(diarizer.cluster(points).tolist())) == 4
    with pytest.raises(ValueError):
        Diarizer(None, DiarizerSettings(**AHC, speaker_count="guess")).cluster(points)


# --- The default pipeline: centring, spectral split, frame-level Viterbi resegmentation ---------


def test_viterbi_matches_brute_force():
    """The dynamic programme finds the best path of sum(scores) - penalty * switches."""
    import itertools

    from siamese.diarizer import viterbi

    rng = np.random.default_rng(0)
    for penalty in (0.0, 0.7, 3.0):
        scores = rng.normal(size=(6, 3))
        best = max(itertools.product(range(3), repeat=6),
                   key=lambda path: scores[np.arange(6), path].sum() - penalty * np.count_nonzero(np.diff(path)))
        path = viterbi(scores, penalty)
        value = lambda p: scores[np.arange(6), p].sum() - penalty * np.count_nonzero(np.diff(p))  # noqa: E731
        assert value(path) == pytest.approx(value(np.array(best)))


def test_viterbi_penalty_removes_a_flicker():
    from siamese.diarizer import viterbi

    scores = np.array([[0.0, -1.0]] * 5 + [[-1.0, 0.0]] + [[0.0, -1.0]] * 5)
    assert viterbi(scores, 0.0).tolist() == [0] * 5 + [1] + [0] * 5
    assert viterbi(scores, 1.0).tolist() == [0] * 11


def _unit_speakers(order, dim=16, spread=0.1, common=0.0, seed=0):
    """Unit-norm embeddings of speakers `order` (one window each), optionally sharing a common component."""
    rng = np.random.default_rng(seed)
    centres = np.eye(max(order) + 1, dim)
    points = centres[order] + common * np.ones(dim) + rng.normal(0, spread, (len(order), dim))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def test_spectral_labels_split_speakers():
    from siamese.diarizer import spectral_labels

    truth = np.repeat([0, 1, 2], 40)
    labels = spectral_labels(_unit_speakers(truth), 3)
    assert len(set(labels.tolist())) == 3
    for speaker in range(3):  # every speaker's windows share one label
        assert len(set(labels[truth == speaker].tolist())) == 1


def test_kmeans_finds_the_same_partition_as_scikit_learn():
    """The NumPy k-means of the spectral split agrees with scikit-learn's on separated groups, reproducibly."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from siamese.diarizer import kmeans_labels

    rng = np.random.default_rng(3)
    for clusters in (2, 3, 5):
        centres = rng.normal(0.0, 3.0, (clusters, 4))
        points = np.concatenate([centre + rng.normal(0.0, 0.5, (30 + 7 * k, 4)) for k, centre in enumerate(centres)])
        labels = kmeans_labels(points, clusters)
        assert labels.shape == (len(points),) and set(labels.tolist()) == set(range(clusters))
        reference = KMeans(clusters, n_init=10, random_state=0).fit_predict(points)
        assert adjusted_rand_score(reference, labels) == 1.0
        assert np.array_equal(labels, kmeans_labels(points, clusters))  # same seed, same labels


def test_kmeans_of_identical_points_does_not_divide_by_zero():
    from siamese.diarizer import kmeans_labels

    labels = kmeans_labels(np.ones((6, 3)), 2)
    assert labels.shape == (6,) and np.all(labels == labels[0])


def test_centring_removes_what_all_windows_share():
    """A strong common component hides the speakers from a fixed threshold; centring reveals them."""
    embeddings = _unit_speakers(np.repeat([0, 1, 0], 20), common=1.0, spread=0.01)
    settings = {**AHC, "threshold": 0.5, "min_cluster_s": 0.0}
    assert len(set(Diarizer(None, DiarizerSettings(**settings)).cluster(embeddings).tolist())) == 1
    centred = Diarizer(None, DiarizerSettings(**{**settings, "center": True})).cluster(embeddings)
    assert centred.tolist() == [0] * 20 + [1] * 20 + [0] * 20


def test_default_pipeline_finds_speakers_in_turn_order():
    settings = DiarizerSettings()
    assert settings.center and settings.clustering == "spectral" and settings.resegment
    truth = np.repeat([0, 1, 2, 0, 1], 16)
    labels = Diarizer(None, DiarizerSettings(threshold=0.8)).cluster(_unit_speakers(truth))
    assert labels.tolist() == truth.tolist()


def test_resegment_places_the_change_between_speakers_and_removes_flickers():
    """Windows of 1 s every 0.25 s over one 10 s region; speaker 0 until 5 s, then speaker 1."""
    diarizer = Diarizer(None, DiarizerSettings(window_s=1.0, hop_s=0.25, resegment={"frame_s": 0.05, "switch_penalty": 1.0}))
    regions = [(0.0, 10.0), (11.0, 11.5)]
    starts, region_of = diarizer.window_starts(regions, duration_s=12.0)
    centres = starts + 0.5
    truth = (centres > 5.0).astype(int)
    labels = truth.copy()
    labels[4] = 1  # one window of speaker 0 mislabelled by clustering
    # A window straddling the change has an embedding between the two speakers.
    share = np.clip(starts + 1.0 - 5.0, 0.0, 1.0)  # fraction of the window after 5 s
    embeddings = (1 - share)[:, None] * np.eye(2, 8)[0] + share[:, None] * np.eye(2, 8)[1]
    annotation = diarizer.to_annotation(Windows(starts, regions, region_of, embeddings), labels, uri="x")
    tracks = _tracks(annotation)
    assert [label for *_, label in tracks[:2]] == ["spk0", "spk1"] and len(tracks) == 3
    assert tracks[0][0] == 0.0 and tracks[0][1] == pytest.approx(5.0, abs=0.1)  # the change, to a frame
    assert tracks[1][1] == 10.0 and tracks[2][:2] == (11.0, 11.5)  # turns stay inside the speech regions


def test_two_stage_points_stay_on_the_unit_sphere_the_threshold_was_calibrated_on(monkeypatch):
    """Averages of centred unit windows are shorter than a window; clustering sees them re-normalised."""
    import siamese.diarizer

    rng = np.random.default_rng(11)
    embeddings = rng.normal(size=(2400, 32))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    clustered = []
    pdist = siamese.diarizer.pdist
    monkeypatch.setattr(siamese.diarizer, "pdist", lambda points, **kw: clustered.append(points) or pdist(points, **kw))
    settings = {"clustering": "ahc", "resegment": None, "threshold": 1.2, "hop_s": 0.25, "max_cluster_points": 400}
    Diarizer(None, DiarizerSettings(**settings, center=True)).cluster(embeddings)
    Diarizer(None, DiarizerSettings(**settings, center=False)).cluster(embeddings)
    centred, plain = clustered
    assert len(centred) == 400 and np.allclose(np.linalg.norm(centred, axis=1), 1.0)
    np.testing.assert_allclose(plain, embeddings.reshape(400, 6, 32).mean(axis=1))  # uncentred: plain averages


def test_stage_seconds_say_where_a_diarization_spends_its_time(tiny_diarizer):
    burst = np.zeros(3 * 8000, np.float32)
    burst[4000:20000] = np.random.default_rng(1).normal(0.0, 0.1, 16000)
    diarizer = Diarizer(tiny_diarizer.tower, tiny_diarizer.settings)
    diarizer.diarize(burst, num_speakers=1)
    assert set(diarizer.stage_seconds) == {"decode", "speech", "embeddings", "clustering", "turns"}
    assert all(seconds >= 0.0 for seconds in diarizer.stage_seconds.values())
    first = dict(diarizer.stage_seconds)
    diarizer.diarize(burst, num_speakers=1)  # they add up until cleared
    assert all(diarizer.stage_seconds[stage] >= first[stage] for stage in first)


def test_receptive_field_of_local_layers_and_none_for_a_norm_over_time():
    import keras

    from siamese.diarizer import receptive_field

    inputs = keras.Input((None, 1))
    x = keras.layers.Conv1D(4, 5, strides=2, padding="same")(inputs)  # 5 samples, then a jump of 2
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.MaxPooling1D(2)(x)  # +1 frame = +2 samples
    x = keras.layers.Conv1D(4, 3, padding="same", dilation_rate=2)(x)  # +4 frames of 4 samples
    assert receptive_field(keras.Model(inputs, x)) == 5 + 2 + 16
    over_time = keras.layers.GroupNormalization(groups=4)(x)  # normalises across all frames
    assert receptive_field(keras.Model(inputs, over_time)) is None


@pytest.mark.parametrize("seconds", [2.0, 31.0, 44.0, 61.5])
def test_chunked_frames_equal_the_frames_of_the_whole_recording(tiny_diarizer, seconds):
    frame_model, _, hop, _ = tiny_diarizer.frame_split()
    audio = np.random.default_rng(3).normal(0.0, 0.1, int(seconds * 8000)).astype(np.float32)
    chunked = tiny_diarizer.chunked_frames(frame_model, audio, hop)
    # Padded to whole frames: "same" pooling pads a length that is not a multiple of its stride on the left too.
    padded = np.pad(audio, (0, -len(audio) % hop))
    whole = np.asarray(frame_model(padded[None, :, None]))[0]
    count = len(audio) // hop - 1  # the last frame may see the zero padding differently
    assert len(chunked) >= count
    np.testing.assert_allclose(chunked[1:count], whole[1:count], atol=1e-4)


def test_chunks_come_in_a_few_lengths_whatever_the_recording(tiny_diarizer):
    # A compiled (XLA) frame model is built once per input length: recordings of any length must reuse a few.
    frame_model, _, hop, _ = tiny_diarizer.frame_split()
    lengths = set()

    class Recorder:  # the frame model's layers (for its receptive field), but it records lengths instead
        layers = frame_model.layers

        def predict_on_batch(self, block):
            lengths.add(block.shape[1])
            return np.zeros((1, block.shape[1] // hop, 3), np.float32)

    for seconds in (0.7, 3.0, 7.3, 12.0, 29.9, 31.0, 44.0, 61.5, 93.2, 118.0):
        samples = int(seconds * 8000)
        frames = tiny_diarizer.chunked_frames(Recorder(), np.zeros(samples, np.float32), hop, chunk_s=30.0, step_s=5.0)
        assert len(frames) == -(-samples // hop)  # one frame per hop that sees the recording, no padding frames
    assert len(lengths) <= 6  # 5, 10, ..., 30 s chunks


def test_compiled_frame_model_gives_the_frames_of_the_plain_one():
    tower = build_encoder("tiny")
    compiled, plain = (Diarizer(tower, DiarizerSettings(sample_rate=8000, window_s=0.5, hop_s=0.25,
                                                        compile_after_s=after)) for after in (0.0, None))
    audio = np.random.default_rng(5).normal(0.0, 0.1, 8000 * 13).astype(np.float32)
    starts = np.arange(0.0, 12.5, 0.25)
    np.testing.assert_allclose(compiled.embed_windows_shared(audio, starts),
                               plain.embed_windows_shared(audio, starts), atol=1e-4)
    frame_model = compiled.frame_split()[0]
    assert compiled.frame_runner(frame_model, 8000).jit_compile
    assert plain.frame_runner(plain.frame_split()[0], 8000) is plain.frame_split()[0]


def test_a_chunk_length_is_compiled_only_once_it_recurs():
    diarizer = Diarizer(build_encoder("tiny"), DiarizerSettings(sample_rate=8000, compile_after_s=2.0))  # 1 s chunks
    frame_model = diarizer.frame_split()[0]
    runners = [diarizer.frame_runner(frame_model, 8000) for _ in range(4)]
    assert runners[0] is runners[1] is frame_model and not frame_model.jit_compile  # the plain model stays plain
    assert runners[2] is runners[3] and runners[2].jit_compile
    assert diarizer.frame_runner(frame_model, 16000) is frame_model  # each length earns its own compilation
    for bad in (-1.0, "soon", True):
        diarizer.settings.compile_after_s = bad
        with pytest.raises(ValueError, match="compile_after_s"):
            diarizer.frame_runner(frame_model, 8000)


def test_warm_up_compiles_every_chunk_length_at_once(tiny_diarizer):
    diarizer = Diarizer(tiny_diarizer.tower, DiarizerSettings(sample_rate=8000, window_s=0.5, hop_s=0.25))
    diarizer.warm_up()
    assert diarizer.settings.compile_after_s == 600.0  # restored
    frame_model = diarizer.frame_split()[0]
    lengths = [samples for (model, samples) in diarizer._chunk_seconds if model == id(frame_model)]
    assert len(lengths) == 6 and all(diarizer.frame_runner(frame_model, n).jit_compile for n in lengths)
    Diarizer(None, DiarizerSettings()).warm_up()  # nothing to compile: a no-op


def test_count_threshold_grows_for_few_speakers_of_centred_embeddings():
    settings = DiarizerSettings(threshold=1.0, threshold_count_power=0.5)
    diarizer = Diarizer(None, settings)
    assert diarizer.count_threshold(1.0, 2) == pytest.approx(2 ** 0.25)
    assert diarizer.count_threshold(1.0, 1) == diarizer.count_threshold(1.0, 2)
    assert 1.0 < diarizer.count_threshold(1.0, 8) < diarizer.count_threshold(1.0, 3) < diarizer.count_threshold(1.0, 2)
    assert Diarizer(None, replace(settings, threshold_count_power=0.0)).count_threshold(1.2, 2) == 1.2
    assert Diarizer(None, replace(settings, center=False)).count_threshold(1.2, 2) == 1.2


def test_two_close_speakers_merge_only_with_the_count_correction():
    """Two centred groups whose last merge lies between threshold and threshold * 2^(1/4)."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import pdist

    rng = np.random.default_rng(5)
    directions = rng.normal(size=(2, 16))
    embeddings = np.concatenate([directions[0] + rng.normal(0, 1.0, (40, 16)),
                                 directions[1] + rng.normal(0, 1.0, (40, 16))])
    plain = Diarizer(None, DiarizerSettings(clustering="ahc", hop_s=0.25, min_cluster_s=2.0, threshold_count_power=0.0))
    top = linkage(pdist(plain.clustering_space(embeddings)), method="average")[-1, 2]  # the 2 -> 1 merge
    plain.settings.threshold = top / 1.1
    assert len(set(plain.cluster(embeddings).tolist())) == 2
    corrected = Diarizer(None, replace(plain.settings, threshold_count_power=0.5))
    assert corrected.cluster(embeddings).tolist() == [0] * 80  # cut at 1.08 x the top merge


def test_sidecars_without_the_count_correction_read_as_before(tmp_path):
    """The correction is opt-in: a sidecar without the key (every release before it) reads as 0."""
    import json

    path = tmp_path / "model.json"
    DiarizerSettings(threshold=1.1, threshold_count_power=0.5).to_file(path)
    assert DiarizerSettings.from_file(path).threshold_count_power == 0.5
    values = json.loads(path.read_text())
    del values["threshold_count_power"]
    path.write_text(json.dumps(values))
    assert DiarizerSettings.from_file(path).threshold_count_power == 0.0


def test_numpy_head_matches_the_keras_layers_and_declines_others():
    import keras

    from siamese.diarizer import numpy_head
    from sincnet_keras.encoder import build_encoder as build

    tower = build("default")
    pool = next(i for i, layer in enumerate(tower.layers) if type(layer).__name__ == "StatisticsPooling")
    head = tower.layers[pool + 1:]  # dense0 (elu), dense1 (elu), l2_normalize: every shipped head
    x = np.random.default_rng(0).normal(size=(37, 512)).astype(np.float32)
    inputs = keras.Input((512,))
    y = inputs
    for layer in head:
        y = layer(y)
    expected = keras.Model(inputs, y).predict_on_batch(x)
    np.testing.assert_allclose(numpy_head(head)(x), expected, atol=1e-5)
    for activation in ("relu", "tanh", "linear"):
        dense = keras.layers.Dense(8, activation=activation)
        dense.build((None, 512))
        np.testing.assert_allclose(numpy_head([dense])(x), np.asarray(dense(x)), atol=1e-5)
    assert numpy_head([keras.layers.Dense(8, activation="softmax")]) is None
    assert numpy_head([keras.layers.BatchNormalization()]) is None
