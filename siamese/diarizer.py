"""Who spoke when: speech -> windows -> embeddings -> clustering -> frame-level resegmentation.

Each window of speech is embedded once; the embeddings are centred on the recording's
mean; agglomerative clustering cut at the calibrated distance decides how many speakers
there are, a spectral split decides which windows are whose, and a Viterbi pass over
50 ms frames places the speaker changes.

The pipeline is model-agnostic: any tower `(batch, samples, 1) -> (batch, D)`
saved as `.keras` works, with a JSON sidecar beside it (same stem) that holds
the sample rate, window, hop and the calibrated clustering threshold.
"""

import functools
import hashlib
import json
import logging
import os
import time
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pyannote.core import Annotation, Segment
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

import sincnet_keras  # noqa: F401  (registers the tower's layers so .keras files load)
from data_prep.audio import load_audio, normalize_level
from data_prep.speech_net import NUMPY_ACTIVATIONS
from data_prep.vad import speech_regions

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "sincnet_distilled_cosine.keras"


# Shared frames are computed in chunks of 30 s, the last rounded up to whole 5 s (`Diarizer.chunked_frames`).
FRAME_CHUNK_S, FRAME_STEP_S = 30.0, 5.0


@dataclass
class DiarizerSettings:
    """Everything besides the network that decides the output; stored as the model's sidecar JSON."""

    sample_rate: int = 16000  # Hz, the tower's input rate
    window_s: float = 1.0  # seconds of audio per embedding
    hop_s: float = 0.25  # seconds between window starts
    threshold: float = 0.8  # AHC distance at which clusters stop merging (calibrated)
    verification_threshold: float = None  # file-embedding distance below which two files are "same" (calibrated)
    linkage: str = "average"  # scipy linkage method over Euclidean distances
    min_cluster_s: float = 2.0  # clusters with less speech than this are not speakers of their own
    batch_size: int = 128  # windows per forward pass
    shared_frames: bool = True  # towers ending in statistics pooling: compute frames once, pool per window
    # Shared frames: once a process has run a chunk length (`Diarizer.chunked_frames`) over this many seconds
    # of audio, it runs an XLA-compiled copy of the frame model for it: about twice as fast on a CPU (fused
    # layers), but compiling costs about 0.25 s and 130 MB, about what 600 s of audio save (RTF 0.001 ->
    # 0.0005). So the compilation is paid only once the length has earned it, as in ski rental: long
    # recordings and many files per process gain, a single short file never compiles. 0: at once; None: never.
    compile_after_s: float | None = 600.0
    max_cluster_points: int = 3000  # beyond this many windows, cluster averages of consecutive windows first
    speaker_count: str = "threshold"  # without a given count: "threshold" (cut the dendrogram) or "eigengap"
    eigengap_prune: float = 0.2  # eigengap and spectral clustering: share of each window's strongest affinities kept
    max_speakers: int = 10  # eigengap: largest count considered
    # How windows are split once the count is known: "ahc" or "spectral"; centring and resegmentation
    # lowered validation DER, the spectral split DER with the oracle count (results/pipeline_steps.md).
    clustering: str = "spectral"
    # Subtract the recording's mean embedding (and renormalise) before clustering: what all windows
    # of a recording share (channel, noise, level) is not what tells its speakers apart.
    center: bool = True
    # Centring pushes the mean embeddings of K speakers apart to a cosine of -1/(K-1) whatever their raw
    # similarity, so speakers of small groups sit further apart: cutting at K speakers uses
    # threshold * (K/(K-1))^(power/2) (`count_threshold`); 0 (the default) disables it. Power 0.5 lowered
    # DER on 2-8 speaker conversations but found twice too many speakers in long recordings of 26
    # (results/sincnet_distilled_cosine/NOTE.md), so it is opt-in (`experiments.release --count-power`).
    threshold_count_power: float = 0.0
    # Clustering compares each window with up to this many neighbours on either side (of its own speech
    # region) averaged in: k = 1 or 2 gives 1.5 or 2 s of voice at the cost of no resolution, since the
    # resegmentation still votes with each window's own embedding. 0 (the default) compares windows alone.
    smooth_windows: int = 0
    # Clustering (the count and the split) can compare longer windows than the turns are placed with: each
    # window gets a cluster window of this length on the same centre (kept inside its speech region where the
    # region is long enough). More voice per point for the count, the window's resolution for the turns.
    # None (the default): the windows themselves. Towers with statistics pooling pool the same frames again,
    # which costs little; others embed the cluster windows too. Fixed-length towers cannot use it. Opt-in: chosen
    # on short conversations it came with a lower threshold that split voices in hour-long recordings (stop 27).
    cluster_window_s: float | None = None
    # Long recordings are counted block by block. Average linkage compares every window with every other: over
    # 10-30 minutes a voice's windows form several large groups (what was said, how), each above the smallest
    # speaker and further apart than the threshold, so one voice counts as several (stop 28, experiments.meetings:
    # 3 validation speakers over 30 min counted as 12). Each block of `count_block_windows` consecutive windows (a
    # conversation's length, where the threshold was calibrated) is counted on its own; the mean embeddings
    # (unit length) of its speakers are then linked across blocks by average linkage at `link_threshold` (times
    # sqrt(K / (K - 1)) for the K speakers it finds, when centred: see `blockwise_count`), and the groups are the
    # speakers. Recordings of one block are counted as before. None: off.
    link_threshold: float | None = None
    count_block_windows: int = 500
    # Frame-level resegmentation (None: each stretch of speech takes its nearest window's label).
    # Each `frame_s` frame scores every speaker by the mean squared distance of the windows covering
    # it to that speaker's centroid; a Viterbi pass pays `switch_penalty` for every change of speaker.
    resegment: dict = field(default_factory=lambda: {"frame_s": 0.05, "switch_penalty": 1.0})
    # Keyword arguments of data_prep.vad.speech_regions ("method" picks the detector).
    # The spectral detector (each frame's mean per-band SNR over the recording's own background noise) had
    # the lowest missed + false alarm speech of the detectors that fit the real-time budget, at every noise
    # level tried, on validation conversations whose references leave out pauses (results/vad_comparison.md,
    # results/vad_by_noise.md); experiments.calibrate --vad and experiments.release choose it per model.
    vad: dict = field(default_factory=lambda: {"method": "spectral", "threshold": 0.25, "low_threshold": 0.15,
                                               "noise_quantile": 0.2, "min_silence_s": 0.2})

    @classmethod
    def from_file(cls, path):
        """Reads a sidecar; keys it does not know (e.g. the training card's) are ignored."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a readable settings file ({error})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a settings file must hold a JSON object")
        known = {key: values[key] for key in cls.__dataclass_fields__ if key in values}
        vad = known.get("vad")
        if isinstance(vad, dict) and isinstance(vad.get("model"), str):
            # A network file is relative to its sidecar; a sidecar copied without it finds the shipped one by name.
            model = os.path.join(os.path.dirname(path), vad["model"])
            shipped = DEFAULT_MODEL.parent / vad["model"]
            if not os.path.isfile(model) and shipped.is_file():
                model = str(shipped)
            known["vad"] = {**vad, "model": model}
        return cls(**known)

    def stored(self, path):
        """The settings as a file at `path` holds them: the speech detector's network relative to that file's folder."""
        values = asdict(self)
        if isinstance(values["vad"].get("model"), str):
            values["vad"]["model"] = os.path.relpath(values["vad"]["model"], os.path.dirname(os.path.abspath(path)))
        return values

    def to_file(self, path):
        Path(path).write_text(json.dumps(self.stored(path), indent=2) + "\n")


@dataclass
class Windows:
    """Sliding windows over the speech regions of one recording."""

    starts: np.ndarray  # shape: (num_windows,), seconds
    regions: list  # [(start_s, end_s)] speech regions, in seconds
    region_of: np.ndarray  # shape: (num_windows,), index into regions
    embeddings: np.ndarray  # shape: (num_windows, D)
    cluster_embeddings: np.ndarray | None = None  # (num_windows, D) of the cluster windows, if the settings ask

    @property
    def for_clustering(self):
        """The embeddings clustering compares: the cluster windows' where there are any, else the windows'."""
        return self.embeddings if self.cluster_embeddings is None else self.cluster_embeddings


def eigengap_speaker_count(embeddings, max_speakers=10, prune=0.2):
    """Number of speakers from the largest gap in the Laplacian spectrum of a pruned affinity matrix.

    Affinity is the clipped dot product of (unit-norm) embeddings; each row keeps only
    its `prune` share of strongest affinities, which sharpens the block structure
    (Park et al., "Auto-tuning spectral clustering for speaker diarization", 2019).
    """
    from scipy.linalg import eigh

    count = len(embeddings)
    if count < 3:
        return 1
    affinity = np.clip(embeddings @ embeddings.T, 0.0, None)  # shape: (count, count)
    np.fill_diagonal(affinity, 0.0)
    weakest = np.argsort(affinity, axis=1)[:, :-max(1, int(count * prune))]
    np.put_along_axis(affinity, weakest, 0.0, axis=1)
    affinity = (affinity + affinity.T) / 2
    laplacian = np.diag(affinity.sum(axis=1)) - affinity
    top = min(max_speakers, count - 1)
    eigenvalues = eigh(laplacian, eigvals_only=True, subset_by_index=[0, top])
    return int(np.argmax(np.diff(eigenvalues)[:max_speakers]) + 1)


def spectral_labels(embeddings, num_speakers, prune=0.2):
    """Spectral clustering of (unit-norm) embeddings into `num_speakers` groups.

    Same pruned affinity as `eigengap_speaker_count`, a symmetric normalised Laplacian,
    and k-means on the row-normalised eigenvectors of its smallest eigenvalues
    (Ng, Jordan & Weiss, 2002). Once the count is known it splits windows better than
    average-linkage AHC (results/pipeline_steps.md: test DER with the oracle count 17.0% -> 15.4%).
    """
    from scipy.linalg import eigh
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import eigsh
    count = len(embeddings)
    if num_speakers <= 1 or count <= num_speakers:
        return np.arange(count) if count <= num_speakers else np.zeros(count, dtype=int)
    affinity = np.clip(embeddings @ embeddings.T, 0.0, None)  # shape: (count, count)
    np.fill_diagonal(affinity, 0.0)
    weakest = np.argpartition(affinity, count - max(1, int(count * prune)), axis=1)[:, :count - max(1, int(count * prune))]
    np.put_along_axis(affinity, weakest, 0.0, axis=1)
    affinity = (affinity + affinity.T) / 2
    scale = 1.0 / np.sqrt(np.maximum(affinity.sum(axis=1), 1e-12))
    affinity *= scale[:, None]
    affinity *= scale[None, :]  # D^-1/2 A D^-1/2: its largest eigenvectors are the Laplacian's smallest
    if count > 500:  # the pruned matrix is sparse; Lanczos beats a dense solver on long recordings
        start = np.random.default_rng(0).uniform(0.5, 1.5, count)  # fixed start vector: reproducible labels
        _, vectors = eigsh(csr_matrix(affinity), k=num_speakers, which="LA", v0=start)
    else:
        # One thread and the RRR driver: about 6x faster than the default on a conversation's few hundred windows.
        with _thread_pools().limit(limits=1):
            _, vectors = eigh(affinity, subset_by_index=[count - num_speakers, count - 1], driver="evr")  # (count, speakers)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return kmeans_labels(vectors, num_speakers)


# k-means starts of the spectral split (best inertia wins).
KMEANS_RESTARTS = 10


def kmeans_labels(points, clusters, restarts=KMEANS_RESTARTS, seed=0, max_iter=100):
    """k-means labels of `points` (k-means++ starts, Lloyd iterations), the best of `restarts` by inertia.

    Written out in NumPy because scikit-learn's KMeans costs ~10 ms a call in checks and thread
    set-up on the ~100-1000 points of a conversation, where the arithmetic takes a fraction of that.
    """
    rng = np.random.default_rng(seed)
    count = len(points)
    norms = np.einsum("ij,ij->i", points, points)
    trials = 2 + int(np.log(clusters))  # candidates per greedy k-means++ step (Arthur & Vassilvitskii)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        chosen = [int(rng.integers(count))]
        closest = np.maximum(norms - 2 * points @ points[chosen[0]] + norms[chosen[0]], 0.0)
        for _ in range(1, clusters):
            picks = np.minimum(np.searchsorted(np.cumsum(closest), rng.uniform(size=trials) * closest.sum()), count - 1)
            squared = np.maximum(norms[picks, None] - 2 * points[picks] @ points.T + norms[None], 0.0)
            squared = np.minimum(closest[None], squared)  # shape: (trials, points)
            pick = int(np.argmin(squared.sum(axis=1)))
            chosen.append(int(picks[pick]))
            closest = squared[pick]
        centres, labels = points[chosen].astype(np.float64), None
        for _ in range(max_iter):
            squared = norms[:, None] - 2 * points @ centres.T + np.einsum("ij,ij->i", centres, centres)[None]
            new = np.argmin(squared, axis=1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            onehot = (labels[:, None] == np.arange(clusters)[None]).astype(np.float64)  # shape: (points, clusters)
            members, sums = onehot.sum(axis=0), onehot.T @ points
            filled = members > 0  # an emptied cluster keeps its centre
            centres[filled] = sums[filled] / members[filled, None]
        inertia = float(np.maximum(squared[np.arange(count), labels], 0.0).sum())
        if inertia < best_inertia - 1e-9:
            best, best_inertia = labels, inertia
    return best
_THREAD_POOLS = []


def _thread_pools():
    """One threadpoolctl controller for the process: building one scans the loaded libraries (~10 ms a call)."""
    if not _THREAD_POOLS:
        from threadpoolctl import ThreadpoolController

        _THREAD_POOLS.append(ThreadpoolController())
    return _THREAD_POOLS[0]


def serial_blas(method):
    """Method decorator: NumPy's BLAS runs on one thread during the call.

    The pipeline's matrices are small (a conversation's windows, a detector's frames), and
    OpenBLAS's worker threads keep spinning after each product: on a 2-core machine they then
    take the cores TensorFlow's convolutions need next (the tower's frames ran ~30% slower).
    """
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _thread_pools().limit(limits=1, user_api="blas"):
            return method(*args, **kwargs)
    return wrapper


def neighbour_mean(points, region_of, k):
    """Each point averaged with up to `k` neighbours on either side that share its region (a run of equal `region_of`)."""
    count = len(points)
    index = np.arange(count)
    first = np.searchsorted(region_of, region_of, side="left")  # region_of is sorted: runs are regions
    last = np.searchsorted(region_of, region_of, side="right")
    low, high = np.maximum(index - k, first), np.minimum(index + k + 1, last)
    sums = np.concatenate([np.zeros((1, points.shape[1])), np.cumsum(points, axis=0, dtype=np.float64)])
    return ((sums[high] - sums[low]) / (high - low)[:, None]).astype(points.dtype)


def viterbi(scores, switch_penalty):
    """Best state path through `scores` (frames, states) when every change of state costs `switch_penalty`.

    With one penalty for every change, the best predecessor of a state is either itself or the
    overall best state, so each frame costs O(states). The states are few (speakers), so plain
    Python floats beat NumPy calls on arrays of 2-10 values (1.8x): two hours of 50 ms frames
    take about a second (0.9 s with 4 speakers, 1.3 s with 11).
    """
    rows = np.asarray(scores, dtype=np.float64).tolist()
    total = rows[0]
    stays, best = [None], [0]  # stays[t][k]: state k at t came from k itself; best[t]: where a switch came from
    for row in rows[1:]:
        top = max(total)
        switch = top - switch_penalty
        best.append(total.index(top))  # the first best state, as argmax
        stays.append([value >= switch for value in total])
        total = [(value if value >= switch else switch) + score for value, score in zip(total, row)]
    path = np.empty(len(rows), dtype=int)
    state = path[-1] = total.index(max(total))
    for t in range(len(rows) - 1, 0, -1):
        if not stays[t][state]:
            state = best[t]
        path[t - 1] = state
    return path


_POINTWISE = ("InputLayer", "BatchNormalization", "LeakyReLU", "ReLU", "ELU", "Activation", "Dropout", "Dense",
              "CentredLayerNorm")


def receptive_field(model):
    """Samples of input that one output frame of `model` depends on; None if not known to be finite.

    Walks Conv1D, pooling and SincConv1D layers (kernel and stride); layers that act on one frame
    at a time are skipped; anything else (a norm over time, a nested model) gives None.
    """
    field, jump = 1, 1
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv1D", "SincConv1D"):
            kernel = layer.kernel_size if kind == "SincConv1D" else layer.kernel_size[0]
            stride = layer.stride if kind == "SincConv1D" else layer.strides[0]
            dilation = 1 if kind == "SincConv1D" else layer.dilation_rate[0]
        elif kind in ("MaxPooling1D", "AveragePooling1D"):
            kernel, stride, dilation = layer.pool_size[0], layer.strides[0], 1
        elif kind in _POINTWISE or (kind == "LayerNormalization" and np.atleast_1d(layer.axis).tolist() in ([-1], [2])):
            continue
        else:
            return None
        field += (kernel - 1) * dilation * jump
        jump *= stride
    return field


class NumpyHead:
    """A stack of Dense and UnitNormalization layers as NumPy steps (see `numpy_head`)."""

    def __init__(self, steps):
        self.steps = steps  # [("dense", kernel, bias, activation) or ("unit_norm",)]

    def __call__(self, x):
        x = np.asarray(x, np.float32)
        for step in self.steps:
            if step[0] == "dense":
                _, kernel, bias, activation = step
                x = NUMPY_ACTIVATIONS[activation]((x @ kernel + bias).astype(np.float32, copy=False))
            else:
                x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        return x


def numpy_head(layers):
    """`layers` as a `NumpyHead` when each is a Dense (activation in `NUMPY_ACTIVATIONS`) or a last-axis
    UnitNormalization, else None. The weights are a snapshot: a diarizer only runs a trained tower."""
    import keras

    steps = []
    for layer in layers:
        config = layer.get_config()
        if isinstance(layer, keras.layers.Dense) and config.get("activation") in NUMPY_ACTIVATIONS:
            weights = layer.get_weights()
            bias = weights[1] if config.get("use_bias", True) else np.zeros(weights[0].shape[1], np.float32)
            steps.append(("dense", np.asarray(weights[0], np.float32), np.asarray(bias, np.float32), config["activation"]))
        elif isinstance(layer, keras.layers.UnitNormalization) and config.get("axis") in (-1, [-1], (-1,)):
            steps.append(("unit_norm",))
        else:
            return None
    return NumpyHead(steps)


def timed_stage(stage):
    """Method decorator: the call's time goes to `self.stage_seconds[stage]` (see `Diarizer.timed`)."""
    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            with self.timed(stage):
                return method(self, *args, **kwargs)
        return wrapper
    return decorate


def sidecar_path(model_path):
    return Path(model_path).with_suffix(".json")


class Diarizer:
    """Speaker diarization with a Siamese embedding tower.

    Example:
        >>> diarizer = Diarizer.load()  # the shipped model
        >>> annotation = diarizer.diarize("meeting.wav")  # doctest: +SKIP
    """

    def __init__(self, tower, settings=None):
        self.tower = tower
        self.settings = settings or DiarizerSettings()
        self._frame_split = None  # built on first use, see `frame_split`
        self._frontend_split = None  # built on first use, see `frontend_split`
        self._head_model = None  # (head layers, compiled model over them), see `pooled_head`
        self._chunk_seconds = {}  # (frame model id, chunk samples) -> seconds run so far, see `frame_runner`
        self._compiled_frames = {}  # frame model id -> its XLA-compiled twin, see `frame_runner`
        self._compiled_lengths = set()  # (frame model id, chunk samples) the twin has run, see `frame_runner`
        self._spectral_memo = {}  # (points digest, count, prune) -> labels; threshold sweeps repeat counts
        self.stage_seconds = {}  # seconds spent in each step since it was last cleared, see `timed`

    def forget(self):
        """Clears the step timings and the remembered clusterings: the next diarization costs what a first one would."""
        self.stage_seconds.clear()
        self._spectral_memo.clear()

    @contextmanager
    def timed(self, stage):
        """Adds the time spent in the block to `stage_seconds[stage]`: where a diarization's time goes."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + time.perf_counter() - started

    @classmethod
    def load(cls, path=None):
        """Loads a tower (`.keras`, safe mode) and its sidecar settings; None = the shipped model."""
        import keras

        path = Path(path) if path is not None else DEFAULT_MODEL
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model file not found")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not a .keras model file (not a zip archive)")
        settings = DiarizerSettings.from_file(sidecar_path(path)) if sidecar_path(path).is_file() else None
        if settings is not None and settings.vad.get("method") == "learned":
            from data_prep.speech_net import load_speech_net
            from data_prep.vad import SHIPPED_SPEECH_MODEL

            try:  # a missing or broken network file is a one-line error now, not after decoding a recording
                load_speech_net(str(settings.vad.get("model", SHIPPED_SPEECH_MODEL)))
            except ValueError as error:
                raise ValueError(f"{sidecar_path(path)}: {error}") from None
        try:
            tower = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as error:  # Keras raises many types for a bad file.
            message = " ".join(str(error).split())[:200]
            raise ValueError(f"{path}: not a loadable Keras model ({message})") from None
        return cls(tower, settings)

    # 1. Audio in, windows out.
    def load_audio(self, audio_or_path):
        """Mono float32 at the model rate, scaled to a peak of 0.9.

        The tower does not depend on level (LayerNorm follows the sinc filters), but
        the speech detector's absolute floor does: scaling first lets a recording made
        with a low gain be diarized. Digital silence stays silent.
        """
        if isinstance(audio_or_path, (str, Path)):
            audio = load_audio(audio_or_path, self.settings.sample_rate)
        else:
            audio = np.array(audio_or_path, dtype=np.float32)
        peak = max(float(audio.max()), -float(audio.min())) if audio.size else 0.0  # no |audio| copy of a long file
        if peak > 0.0:
            audio *= 0.9 / peak
        return audio

    def window_starts(self, regions, duration_s):
        """Window starts covering each speech region; short regions get one centred window."""
        s = self.settings
        starts, region_of = [], []
        for index, (begin, end) in enumerate(regions):
            if end - begin <= s.window_s:
                centre = (begin + end) / 2
                region_starts = [min(max(0.0, centre - s.window_s / 2), max(0.0, duration_s - s.window_s))]
            else:
                # The epsilon keeps float noise from adding a duplicate last window.
                count = int(np.ceil((end - begin - s.window_s) / s.hop_s - 1e-9)) + 1
                region_starts = np.minimum(begin + s.hop_s * np.arange(count), end - s.window_s).tolist()
            starts += region_starts
            region_of += [index] * len(region_starts)
        return np.asarray(starts, dtype=float), np.asarray(region_of, dtype=int)

    def speech(self, audio):
        """Speech regions `[(start_s, end_s)]` from the detector the settings name."""
        return speech_regions(audio, self.settings.sample_rate, **self.settings.vad)

    # 2. Embed every window once, in batches.
    def embed_windows(self, audio, starts, window_s=None):
        s = self.settings
        length = int(round((window_s or s.window_s) * s.sample_rate))
        embeddings = []
        for first in range(0, len(starts), s.batch_size):
            # Slices are views; only the last window of a file may need zero padding.
            crops = (audio[int(round(t * s.sample_rate)):][:length] for t in starts[first:first + s.batch_size])
            batch = [normalize_level(np.pad(crop, (0, length - len(crop)))) for crop in crops]
            batch = np.stack(batch).astype(np.float32)[..., None]  # shape: (batch, samples, 1)
            embeddings.append(np.asarray(self.tower(batch, training=False)))
        return np.concatenate(embeddings)  # shape: (num_windows, D)

    def frame_split(self):
        """`(frame_model, head_layers, samples_per_frame, epsilon)` if the tower pools statistics, else None.

        Statistics pooling is the only layer that mixes time, so the layers before it
        can run once over the whole recording and each window only pools its own
        frames: overlapping windows then cost nothing extra. The frame model has the batch
        norms folded into the convolutions (`fold_batch_norm`): a snapshot of the tower's
        weights when first built, as a diarizer only ever runs a trained tower.
        """
        if self._frame_split is None:
            import keras

            from sincnet_keras.encoder import fold_batch_norm
            from sincnet_keras.pooling import StatisticsPooling

            names = [layer.name for layer in self.tower.layers]
            pools = [layer for layer in self.tower.layers if isinstance(layer, StatisticsPooling)]
            split = False
            if len(pools) == 1 and self.tower.input_shape[1] is None:
                # Batch norms folded into their convolutions: the same frames, fewer passes over them.
                frame_model = fold_batch_norm(keras.Model(self.tower.input, pools[0].input))
                head = self.tower.layers[names.index(pools[0].name) + 1:]
                one, two = (frame_model(np.zeros((1, n * self.settings.sample_rate, 1), np.float32)).shape[1] for n in (1, 2))
                split = (frame_model, head, self.settings.sample_rate // (two - one), pools[0].epsilon)
            self._frame_split = split
        return self._frame_split or None

    def frontend_split(self):
        """`(frontend, head, samples_per_frame, head_frames)` for a fixed-length tower behind a `frontend` model.

        Such a tower (the coursework's Wav2Vec arm) is trained on front-end features
        computed once per utterance (`data_prep.feature_bank`), so the diarizer does
        the same: the front end runs once over the recording, and the head embeds
        each window's slice of frames.
        """
        if self._frontend_split is None:
            from sincnet_keras.encoder import split_frontend

            split = split_frontend(self.tower) if self.tower is not None else None
            if split is not None and self.tower.input_shape[1] is not None:
                frontend, head = split
                one, two = (frontend(np.zeros((1, n * self.settings.sample_rate, 1), np.float32)).shape[1] for n in (1, 2))
                split = (frontend, head, self.settings.sample_rate // (two - one), head.input_shape[1])
            self._frontend_split = split or False
        return self._frontend_split or None

    def embed_windows_frontend(self, audio, starts):
        """Same as `embed_windows` for `frontend_split` towers: front end once, head per window."""
        frontend, head, hop, length = self.frontend_split()
        frames = self.chunked_frames(frontend, audio, hop)  # shape: (total_frames, channels)
        begin = np.clip(np.round(np.asarray(starts) * self.settings.sample_rate / hop).astype(int), 0, len(frames) - 1)
        batch_size = self.settings.batch_size
        embeddings = []
        for first in range(0, len(begin), batch_size):
            batch = np.zeros((batch_size, length, frames.shape[1]), np.float32)  # one shape: traced once
            for row, start in enumerate(begin[first:first + batch_size]):
                piece = frames[start:start + length]
                batch[row, :len(piece)] = piece
            embeddings.append(head.predict_on_batch(batch)[:len(begin[first:first + batch_size])])
        return np.concatenate(embeddings)  # shape: (num_windows, D)

    def frame_runner(self, frame_model, samples):
        """The model to run on a chunk of `samples`: `frame_model`, or its XLA-compiled twin once the length recurs.

        The twin is a second Keras model over the same layers, so the plain one keeps its own predict
        function for lengths that have not yet earned a compilation (`settings.compile_after_s`).
        """
        after = self.settings.compile_after_s
        if after is not None and (isinstance(after, bool) or not isinstance(after, (int, float)) or not after >= 0):
            raise ValueError(f"compile_after_s must be a number of seconds >= 0 or null, got {after!r}")
        key = (id(frame_model), samples)
        seen_s = self._chunk_seconds.get(key, 0.0)
        self._chunk_seconds[key] = seen_s + samples / self.settings.sample_rate
        if after is None or (seen_s < after and key not in self._compiled_lengths):
            return frame_model
        self._compiled_lengths.add(key)  # compiled once: it stays compiled
        if id(frame_model) not in self._compiled_frames:
            import keras

            twin = keras.Model(frame_model.input, frame_model.output, name=f"{frame_model.name}_xla")
            twin.compile(jit_compile=True)  # its predict_on_batch runs one XLA function per input shape
            self._compiled_frames[id(frame_model)] = (frame_model, twin)  # the model kept alive: its id stays its own
        return self._compiled_frames[id(frame_model)][1]

    def warm_up(self, chunk_s=FRAME_CHUNK_S, step_s=FRAME_STEP_S):
        """Compiles now what a long-running process compiles on the fly: the frame model for each chunk length.

        For a server or a batch job that will diarize hours anyway (about 0.25 s per length, six lengths);
        the benchmarks call it so that "warm" means steady state. A no-op for towers without shared frames.
        """
        split = self.frame_split() if self.settings.shared_frames and self.tower is not None else None
        if not split or self.settings.compile_after_s is None:
            return
        frame_model, _, hop, _ = split
        after, self.settings.compile_after_s = self.settings.compile_after_s, 0.0
        try:
            for seconds in np.arange(step_s, chunk_s + step_s / 2, step_s):
                self.chunked_frames(frame_model, np.zeros(int(seconds * self.settings.sample_rate), np.float32), hop,
                                    chunk_s=chunk_s, step_s=step_s, compiled=True)
        finally:
            self.settings.compile_after_s = after

    def chunked_frames(self, frame_model, audio, hop, chunk_s=FRAME_CHUNK_S, step_s=FRAME_STEP_S, compiled=False):
        """`frame_model`'s frames over a whole recording, `(ceil(samples / hop), channels)`, computed in chunks with context.

        Chunks of `chunk_s`, the last one rounded up to whole `step_s`: a handful of input
        lengths per process, so a compiled (XLA) frame model (`compiled`, see `frame_runner`) is
        built at most `chunk_s / step_s` times, whatever the recordings' lengths, at the cost of
        under `step_s` of zeros each.
        """
        s = self.settings
        big = max(1, int(round(chunk_s * s.sample_rate / hop))) * hop
        step = min(big, max(1, int(round(step_s * s.sample_rate / hop))) * hop)
        # Context on each side: the model's receptive field plus a frame (so chunked frames equal
        # frames of the whole recording), or 1 s when a layer is not known to be local in time.
        field = receptive_field(frame_model)
        context = -(-field // hop) * hop + hop if field is not None else s.sample_rate // hop * hop
        total = -(-len(audio) // hop)  # frames that see some of the recording
        frames = None  # shape: (total, channels), float32, filled chunk by chunk
        for first in range(0, max(len(audio), 1), big):
            size = min(big, max(step, -(-(len(audio) - first) // step) * step))
            # Each chunk carries `context` samples of real audio (or zeros) on both sides.
            block = audio[max(0, first - context):first + size + context]
            left = context - min(first, context)
            block = np.pad(block, (left, size + 2 * context - len(block) - left))
            # Keras's compiled predict function runs about 3x faster than an eager call.
            model = self.frame_runner(frame_model, len(block)) if compiled else frame_model
            output = model.predict_on_batch(block[None, :, None].astype(np.float32))[0]  # shape: (frames, channels)
            if frames is None:
                frames = np.empty((total, output.shape[1]), np.float32)
            keep = output[context // hop:(context + size) // hop][:max(0, total - first // hop)]
            frames[first // hop:first // hop + len(keep)] = keep
        return frames

    def embed_windows_shared(self, audio, starts, window_s=None, frames=None):
        """Same as `embed_windows`, but frames are computed once in fixed-size chunks (or passed in `frames`)."""
        frame_model, head, hop, epsilon = self.frame_split()
        s = self.settings
        if frames is None:
            frames = self.chunked_frames(frame_model, audio, hop, compiled=True)
        length = max(1, int(round((window_s or s.window_s) * s.sample_rate / hop)))
        begin = np.clip(np.round(np.asarray(starts) * s.sample_rate / hop).astype(int), 0, len(frames) - 1)
        end = np.minimum(begin + length, len(frames))
        pooled = np.zeros((len(begin), 2 * frames.shape[1]), np.float32)  # shape: (windows, 2 channels)
        channels = frames.shape[1]
        # Each window's frames gathered side by side, a few hundred windows at a time: mean, then the mean
        # square deviation from it (two passes, no cancellation in float32). Windows cut short by the
        # recording's end (a handful) are pooled one by one.
        full = np.flatnonzero(end - begin == length)
        offsets = np.arange(length)
        for first in range(0, len(full), 512):
            rows = full[first:first + 512]
            window = frames[begin[rows, None] + offsets]  # shape: (windows, length, channels)
            mean = window.mean(axis=1)
            window -= mean[:, None]
            variance = np.square(window, out=window).mean(axis=1)
            pooled[rows, :channels] = mean
            pooled[rows, channels:] = np.sqrt(variance + epsilon)
        for row in np.flatnonzero(end - begin != length):
            window = frames[begin[row]:end[row]]
            pooled[row, :channels] = window.mean(axis=0)
            pooled[row, channels:] = np.sqrt(window.var(axis=0) + epsilon)
        return self.pooled_head(head, pooled)

    def pooled_head(self, head, pooled, rows=512, step=64):
        """The layers after statistics pooling, on blocks of `rows` windows (the last one zero-padded to `step`s).

        Dense and unit-normalisation layers (every shipped head) run as NumPy matrix products: a Keras call
        costs more than their arithmetic on a conversation's few hundred windows. Other layers run as a
        compiled Keras function; Keras relaxes its input shape after a second block size, so padding only
        to a multiple of `step` rows costs one more trace, not one per size.
        """
        if self._head_model is None or self._head_model[0] is not head:
            model = numpy_head(head)
            if model is None:
                import keras

                inputs = keras.Input((pooled.shape[1],))
                x = inputs
                for layer in head:
                    x = layer(x)
                model = keras.Model(inputs, x)
            self._head_model = (head, model)
        model = self._head_model[1]
        if isinstance(model, NumpyHead):
            return model(pooled)
        out = []
        for first in range(0, len(pooled), rows):
            block = pooled[first:first + rows]
            padded = np.zeros((-(-len(block) // step) * step, pooled.shape[1]), np.float32)
            padded[:len(block)] = block
            out.append(np.asarray(model.predict_on_batch(padded))[:len(block)])
        return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)

    @serial_blas
    def embed(self, audio_or_path, regions=None):
        """Speech regions, window starts and one embedding per window (see `Windows`).

        `regions` ([(start_s, end_s)], sorted, non-overlapping) replaces the speech detector: another
        detector's output, or a reference's speech to measure the rest of the pipeline on its own.
        """
        with self.timed("decode"):
            audio = self.load_audio(audio_or_path)
        duration_s = len(audio) / self.settings.sample_rate
        if regions is None:
            with self.timed("speech"):
                regions = self.speech(audio)
        else:
            regions = [(max(0.0, float(b)), min(duration_s, float(e))) for b, e in regions]
            regions = [(b, e) for b, e in regions if e > b]
        if not regions:
            return Windows(np.zeros(0), [], np.zeros(0, int), np.zeros((0, 0), np.float32))
        starts, region_of = self.window_starts(regions, duration_s)
        length_s = self.cluster_window()
        cluster_starts = None if length_s is None else self.centred_starts(starts, region_of, regions, duration_s, length_s)
        cluster_embeddings = None
        with self.timed("embeddings"):
            if self.settings.shared_frames and self.frame_split():
                frame_model, _, hop, _ = self.frame_split()
                frames = self.chunked_frames(frame_model, audio, hop, compiled=True)
                embeddings = self.embed_windows_shared(audio, starts, frames=frames)
                if cluster_starts is not None:
                    cluster_embeddings = self.embed_windows_shared(audio, cluster_starts, length_s, frames)
            elif self.settings.shared_frames and self.frontend_split():
                embeddings = self.embed_windows_frontend(audio, starts)
            else:
                embeddings = self.embed_windows(audio, starts)
                if cluster_starts is not None:
                    cluster_embeddings = self.embed_windows(audio, cluster_starts, length_s)
        return Windows(starts, regions, region_of, embeddings, cluster_embeddings)

    def cluster_window(self):
        """The cluster windows' length in seconds (`settings.cluster_window_s`), or None for the windows themselves."""
        s = self.settings
        length_s = s.cluster_window_s
        if length_s is None:
            return None
        if isinstance(length_s, bool) or not isinstance(length_s, (int, float)) or not length_s > 0:
            raise ValueError(f"cluster_window_s must be a positive number of seconds or null, got {length_s!r}")
        if abs(length_s - s.window_s) < 1e-9:
            return None
        fixed = self.tower is not None and self.tower.input_shape[1] is not None
        if fixed or (s.shared_frames and self.frontend_split()):
            raise ValueError("cluster_window_s needs a tower that takes any window length; this one takes "
                             f"{s.window_s} s windows only")
        return float(length_s)

    def centred_starts(self, starts, region_of, regions, duration_s, length_s):
        """Starts of `length_s` windows centred on the windows at `starts`, inside their speech region where it is
        long enough; a shorter region's window is centred on the region, as `window_starts` places it."""
        bounds = np.asarray(regions, dtype=float)[np.asarray(region_of, dtype=int)]  # shape: (windows, 2)
        begin, end = bounds[:, 0], bounds[:, 1]
        fits = end - begin >= length_s
        wanted = np.where(fits, np.asarray(starts) + self.settings.window_s / 2, (begin + end) / 2) - length_s / 2
        low = np.where(fits, begin, 0.0)
        high = np.where(fits, end - length_s, max(0.0, duration_s - length_s))
        return np.clip(wanted, low, np.maximum(low, high))

    @serial_blas
    def embed_utterance(self, audio_or_path):
        """One embedding for a whole file: the mean of its speech windows' embeddings.

        Used for verification. Unit-norm towers get a unit-norm mean, so distances
        keep the scale the threshold was chosen on. Files with no detected speech
        fall back to windows over the whole file.
        """
        audio = self.load_audio(audio_or_path)
        duration_s = len(audio) / self.settings.sample_rate
        regions = self.speech(audio) or [(0.0, duration_s)]
        starts, _ = self.window_starts(regions, duration_s)
        embeddings = self.embed_windows(audio, starts)
        mean = embeddings.mean(axis=0)
        if np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3):
            mean /= max(np.linalg.norm(mean), 1e-12)
        return mean

    # 3. Cluster the distance matrix.
    def clustering_space(self, embeddings):
        """The embeddings clustering compares: as they are, or centred on the recording's mean."""
        if not self.settings.center or len(embeddings) < 2:
            return embeddings
        centred = embeddings - embeddings.mean(axis=0)
        return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)

    def count_threshold(self, threshold, count):
        """The AHC threshold for cutting at `count` speakers (see `threshold_count_power`).

        After centring, K speakers' mean embeddings lie sqrt(2K/(K-1)) apart (unit length): 2 for two
        speakers, 1.5 for eight. Window embeddings are noisier than means, so only a power of that ratio
        is applied (0.5 was best on validation conversations of 2-8 speakers).
        """
        power = self.settings.threshold_count_power
        if not power or not self.settings.center:  # uncentred embeddings keep their raw distances
            return threshold
        count = max(int(count), 2)
        return threshold * (count / (count - 1)) ** (power / 2)

    @timed_stage("clustering")
    def cluster(self, embeddings, num_speakers=None, threshold=None, region_of=None):
        """Agglomerative clustering of window embeddings on Euclidean distances.

        `region_of` (each window's speech region, `Windows.region_of`; None: one region) bounds the
        neighbours that `smooth_windows` averages in.

        With `num_speakers` the dendrogram is cut into that many *large* clusters;
        otherwise it is cut at the distance `threshold` (default: the calibrated one; scaled
        for the count it finds when `threshold_count_power` is set, see `count_threshold`).
        A cluster with less than `min_cluster_s` of windows is not taken as a speaker
        (it is usually overlap, noise or a boundary window): its windows join the
        nearest large cluster's centroid.

        The distance matrix grows with the square of the number of windows, so
        beyond `max_cluster_points` windows (long recordings) consecutive windows
        are averaged into that many points first, and after clustering every
        window goes to its nearest speaker centroid: memory stays bounded and the
        labels keep the window resolution.
        """
        s = self.settings
        count = len(embeddings)
        if count <= 1:
            return np.zeros(count, dtype=int)
        if isinstance(s.smooth_windows, bool) or not isinstance(s.smooth_windows, int) or s.smooth_windows < 0:
            raise ValueError(f"smooth_windows must be a whole number >= 0, got {s.smooth_windows!r}")
        if s.smooth_windows > 0:
            region_of = np.zeros(count, int) if region_of is None else np.asarray(region_of)
            embeddings = neighbour_mean(embeddings, region_of, s.smooth_windows)
        embeddings = self.clustering_space(embeddings)
        group = int(np.ceil(count / s.max_cluster_points))
        points = embeddings
        if group > 1:
            points = np.add.reduceat(embeddings, np.arange(0, count, group), axis=0)  # (count / group, D)
            if s.center:  # back to unit length, like the single windows the threshold was calibrated on
                points /= np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
            else:
                points /= group
        if num_speakers is None and s.speaker_count == "eigengap":
            num_speakers = eigengap_speaker_count(points, s.max_speakers, s.eigengap_prune)
        elif s.speaker_count not in ("threshold", "eigengap"):
            raise ValueError(f"speaker_count must be 'threshold' or 'eigengap', got {s.speaker_count!r}")
        if s.clustering not in ("ahc", "spectral"):
            raise ValueError(f"clustering must be 'ahc' or 'spectral', got {s.clustering!r}")
        distances = pdist(points, metric="euclidean")  # condensed (points * (points - 1) / 2,)
        tree = linkage(distances, method=s.linkage)
        min_size = max(1, int(np.ceil(s.min_cluster_s / s.hop_s / group)))
        if num_speakers is None and s.link_threshold is not None and count > s.count_block_windows:
            num_speakers = self.blockwise_count(points, min_size, group, s.threshold if threshold is None else threshold)
        if num_speakers is not None:
            target = min(num_speakers, len(points))
            for clusters in range(target, len(points) + 1):  # finer cuts until `target` clusters are large
                labels = fcluster(tree, t=clusters, criterion="maxclust")
                sizes = np.bincount(labels)
                if np.sum(sizes >= min_size) >= target:
                    break
            keep = np.argsort(sizes)[::-1][:target]
        else:
            labels, sizes, keep = self.counted_cut(tree, s.threshold if threshold is None else threshold, min_size)
            if not len(keep):
                keep = np.array([np.argmax(sizes)])
        keep = keep[sizes[keep] > 0]
        if s.clustering == "spectral" and len(keep) > 1:
            # AHC only decided how many speakers there are; the spectral split decides who is who.
            key = (hashlib.sha1(np.ascontiguousarray(points).tobytes()).hexdigest(), len(keep), s.eigengap_prune)
            if key not in self._spectral_memo:
                if len(self._spectral_memo) > 256:
                    self._spectral_memo.clear()
                self._spectral_memo[key] = spectral_labels(points, len(keep), s.eigengap_prune)
            labels = self._spectral_memo[key] + 1
            keep = np.arange(1, len(keep) + 1)
        centroids = np.stack([points[labels == label].mean(axis=0) for label in keep])  # shape: (speakers, D)
        if group > 1:
            points, labels = embeddings, np.full(count, -1)  # every window goes to its nearest centroid
        # Squared distances to the centroids without a (points, speakers, D) array.
        squared = (points**2).sum(1)[:, None] - 2 * points @ centroids.T + (centroids**2).sum(1)[None]
        nearest = keep[np.argmin(squared, axis=1)]
        labels = np.where(np.isin(labels, keep), labels, nearest)
        # Relabel by order of first appearance, so "spk0" speaks first.
        _, first_seen = np.unique(labels, return_index=True)
        order = {labels[index]: rank for rank, index in enumerate(sorted(first_seen))}
        return np.array([order[label] for label in labels], dtype=int)

    def counted_cut(self, tree, threshold, min_size):
        """`(labels, sizes, large clusters)` of a dendrogram cut at `threshold`, corrected for the count it finds.

        With `threshold_count_power` the count and its threshold depend on each other (`count_threshold`):
        a few fixed-point steps from 4 speakers. Without it, one cut at `threshold`. A large cluster has
        at least `min_size` points; there may be none.
        """
        cuts = {}

        def cut(speakers):
            t = self.count_threshold(threshold, speakers)
            if t not in cuts:
                labels = fcluster(tree, t=t, criterion="distance")
                sizes = np.bincount(labels)
                cuts[t] = labels, sizes, np.flatnonzero(sizes >= min_size)
            return cuts[t]

        speakers = len(cut(4)[2])
        for _ in range(4):
            found = len(cut(speakers)[2])
            if found == speakers:
                break
            speakers = found
        return cut(speakers)

    def blockwise_count(self, points, min_size, group, threshold):
        """Speakers in a long recording: counted per block of windows, then linked across blocks (`link_threshold`)."""
        s = self.settings
        link = s.link_threshold
        if isinstance(link, bool) or not isinstance(link, (int, float)) or not link > 0:
            raise ValueError(f"link_threshold must be a distance > 0 or null, got {link!r}")
        if isinstance(s.count_block_windows, bool) or not isinstance(s.count_block_windows, int) or s.count_block_windows < 2:
            raise ValueError(f"count_block_windows must be a whole number >= 2, got {s.count_block_windows!r}")
        block = max(2, -(-s.count_block_windows // group))
        blocks = -(-len(points) // block)
        block = -(-len(points) // blocks)  # equal blocks: no short last one counted on too little speech
        centroids = []
        for first in range(0, len(points), block):
            local = points[first:first + block]
            labels, _, keep = self.counted_cut(linkage(pdist(local), method=s.linkage), threshold, min_size)
            for label in keep:
                centroids.append(local[labels == label].mean(axis=0))
        if len(centroids) < 2:
            return 1
        centroids = np.stack(centroids)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        tree = linkage(pdist(centroids), method="average")
        if not s.center:
            return int(fcluster(tree, t=link, criterion="distance").max())
        # Centring puts K speakers' mean embeddings sqrt(2K / (K - 1)) apart at best (a regular simplex): 1.73 for
        # 3 speakers, 1.46 for 16. The link scales the same way, for the count it finds (a few fixed-point steps).
        speakers = 4
        for _ in range(5):
            found = int(fcluster(tree, t=link * np.sqrt(speakers / (speakers - 1)), criterion="distance").max())
            if found == speakers:
                break
            speakers = max(found, 2)
        return found

    # 4. Labels back onto the timeline.
    @timed_stage("turns")
    def to_annotation(self, windows, labels, uri="audio"):
        """Window labels -> speaker turns on the speech regions; same labels merge.

        Without resegmentation each stretch of speech goes to the window whose centre
        is nearest. With it (`settings.resegment`), short frames are labelled by a
        Viterbi pass over the distances of their covering windows to each speaker.
        """
        if self.settings.resegment:
            return self.resegment(windows, labels, uri=uri)
        annotation = Annotation(uri=uri)
        half = self.settings.window_s / 2
        for index, (begin, end) in enumerate(windows.regions):
            members = np.flatnonzero(windows.region_of == index)
            centres = windows.starts[members] + half
            cuts = [begin, *((centres[:-1] + centres[1:]) / 2), end]
            for position, member in enumerate(members):
                start, stop = max(begin, cuts[position]), min(end, cuts[position + 1])
                if stop > start:
                    annotation[Segment(start, stop), "_"] = f"spk{labels[member]}"
        return annotation.support(collar=0.0)

    def resegment(self, windows, labels, uri="audio"):
        """Frame-level speaker turns: every window votes for the frames it covers.

        A window's vote is its squared distance to each speaker's centroid, so a frame
        inside a turn is scored by every window around it and a frame near a change by
        windows of both speakers. Viterbi then trades the summed frame distances against
        `switch_penalty` per change of speaker, which removes one-window flickers.
        """
        frame_s = float(self.settings.resegment.get("frame_s", 0.05))
        penalty = float(self.settings.resegment.get("switch_penalty", 1.0))
        speakers = np.unique(labels)
        x = self.clustering_space(windows.embeddings)
        centroids = np.stack([x[labels == k].mean(axis=0) for k in speakers])  # shape: (speakers, D)
        squared = (x**2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids**2).sum(1)[None]  # (windows, speakers)
        end_s = max(windows.regions[-1][1], float(windows.starts.max()) + self.settings.window_s)
        num_frames = int(np.ceil(end_s / frame_s)) + 1
        first = np.clip(np.round(windows.starts / frame_s).astype(int), 0, num_frames - 1)
        last = np.clip(np.round((windows.starts + self.settings.window_s) / frame_s).astype(int), first + 1, num_frames)
        # Sum and count of covering windows per frame, from difference arrays: O(windows + frames).
        sums = np.zeros((num_frames + 1, len(speakers)))
        np.add.at(sums, first, squared)
        np.add.at(sums, last, -squared)
        covering = np.bincount(first, minlength=num_frames + 1) - np.bincount(last, minlength=num_frames + 1)
        sums, covering = np.cumsum(sums, axis=0)[:num_frames], np.cumsum(covering)[:num_frames]
        scores = -sums / np.maximum(covering, 1)[:, None]  # frames no window covers score 0 for everyone
        spans = [np.arange(int(round(b / frame_s)), max(int(round(e / frame_s)), int(round(b / frame_s)) + 1))
                 for b, e in windows.regions]
        speech = np.clip(np.concatenate(spans), 0, num_frames - 1)
        path = speakers[viterbi(scores[speech], penalty)]
        annotation = Annotation(uri=uri)
        offset = 0
        for (begin, end), span in zip(windows.regions, spans):
            region_labels = path[offset:offset + len(span)]
            offset += len(span)
            changes = np.flatnonzero(np.diff(region_labels)) + 1
            edges = [begin, *(span[changes] * frame_s), end]
            for run, label in zip(range(len(edges) - 1), region_labels[[0, *changes]]):
                if edges[run + 1] > edges[run]:
                    annotation[Segment(edges[run], edges[run + 1]), "_"] = f"spk{label}"
        return annotation.support(collar=0.0)

    @serial_blas
    def diarize(self, audio_or_path, num_speakers=None, uri=None, rttm=None, regions=None):
        """Returns a `pyannote.core.Annotation` of who spoke when.

        Args:
            audio_or_path: a file path (any rate, mono or multi-channel) or a mono
                float array already at `settings.sample_rate`.
            num_speakers: the number of speakers if known; else the calibrated threshold decides.
            uri: file id for the annotation (default: the file stem).
            rttm: also write the result to this RTTM file (atomically; empty when no speech).
            regions: speech regions [(start_s, end_s)] to use instead of the speech detector's.
        """
        if uri is None:
            uri = Path(audio_or_path).stem if isinstance(audio_or_path, (str, Path)) else "audio"
        windows = self.embed(audio_or_path, regions=regions)
        if len(windows.starts) == 0:
            logger.warning("%s: no speech found; the diarization is empty", uri)
            return self._written(Annotation(uri=uri), rttm)
        labels = self.cluster(windows.for_clustering, num_speakers=num_speakers, region_of=windows.region_of)
        return self._written(self.to_annotation(windows, labels, uri=uri), rttm)

    @staticmethod
    def _written(annotation, rttm):
        if rttm is not None:
            from data_prep.rttm import write_rttm

            write_rttm(annotation, rttm)
        return annotation
