"""Who spoke when: windows -> embeddings -> distances -> agglomerative clustering.

The pipeline is model-agnostic: any tower `(batch, samples, 1) -> (batch, D)`
saved as `.keras` works, with a JSON sidecar beside it (same stem) that holds
the sample rate, window, hop and the calibrated clustering threshold.
"""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pyannote.core import Annotation, Segment
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

import sincnet_keras  # noqa: F401  (registers the tower's layers so .keras files load)
from data_prep.audio import load_audio, normalize_level
from data_prep.vad import energy_vad

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "sincnet_default.keras"


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
    vad: dict = field(default_factory=dict)  # keyword arguments of data_prep.vad.energy_vad

    @classmethod
    def from_file(cls, path):
        values = json.loads(Path(path).read_text())
        known = {key: values[key] for key in cls.__dataclass_fields__ if key in values}
        return cls(**known)

    def to_file(self, path):
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


@dataclass
class Windows:
    """Sliding windows over the speech regions of one recording."""

    starts: np.ndarray  # shape: (num_windows,), seconds
    regions: list  # [(start_s, end_s)] speech regions, in seconds
    region_of: np.ndarray  # shape: (num_windows,), index into regions
    embeddings: np.ndarray  # shape: (num_windows, D)


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

    @classmethod
    def load(cls, path=None):
        """Loads a tower (`.keras`, safe mode) and its sidecar settings; None = the shipped model."""
        import keras

        import zipfile

        path = Path(path) if path is not None else DEFAULT_MODEL
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model file not found")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not a .keras model file (not a zip archive)")
        settings = DiarizerSettings.from_file(sidecar_path(path)) if sidecar_path(path).is_file() else None
        try:
            tower = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as error:  # Keras raises many types for a bad file.
            message = " ".join(str(error).split())[:200]
            raise ValueError(f"{path}: not a loadable Keras model ({message})") from None
        return cls(tower, settings)

    # 1. Audio in, windows out.
    def load_audio(self, audio_or_path):
        if isinstance(audio_or_path, (str, Path)):
            return load_audio(audio_or_path, self.settings.sample_rate)
        return np.asarray(audio_or_path, dtype=np.float32)

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

    # 2. Embed every window once, in batches.
    def embed_windows(self, audio, starts):
        s = self.settings
        length = int(round(s.window_s * s.sample_rate))
        padded = np.pad(audio, (0, length))
        embeddings = []
        for first in range(0, len(starts), s.batch_size):
            batch = [
                normalize_level(padded[int(round(t * s.sample_rate)):][:length])
                for t in starts[first:first + s.batch_size]
            ]
            batch = np.stack(batch).astype(np.float32)[..., None]  # shape: (batch, samples, 1)
            embeddings.append(np.asarray(self.tower(batch, training=False)))
        return np.concatenate(embeddings)  # shape: (num_windows, D)

    def embed(self, audio_or_path):
        """Speech regions, window starts and one embedding per window (see `Windows`)."""
        audio = self.load_audio(audio_or_path)
        duration_s = len(audio) / self.settings.sample_rate
        regions = energy_vad(audio, self.settings.sample_rate, **self.settings.vad)
        if not regions:
            return Windows(np.zeros(0), [], np.zeros(0, int), np.zeros((0, 0), np.float32))
        starts, region_of = self.window_starts(regions, duration_s)
        return Windows(starts, regions, region_of, self.embed_windows(audio, starts))

    def embed_utterance(self, audio_or_path):
        """One embedding for a whole file: the mean of its speech windows' embeddings.

        Used for verification. Unit-norm towers get a unit-norm mean, so distances
        keep the scale the threshold was chosen on. Files with no detected speech
        fall back to windows over the whole file.
        """
        audio = self.load_audio(audio_or_path)
        duration_s = len(audio) / self.settings.sample_rate
        regions = energy_vad(audio, self.settings.sample_rate, **self.settings.vad) or [(0.0, duration_s)]
        starts, _ = self.window_starts(regions, duration_s)
        embeddings = self.embed_windows(audio, starts)
        mean = embeddings.mean(axis=0)
        if np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3):
            mean /= max(np.linalg.norm(mean), 1e-12)
        return mean

    # 3. Cluster the distance matrix.
    def cluster(self, embeddings, num_speakers=None, threshold=None):
        """Agglomerative clustering of window embeddings on Euclidean distances.

        With `num_speakers` the dendrogram is cut into that many *large* clusters;
        otherwise it is cut at the distance `threshold` (default: the calibrated one).
        A cluster with less than `min_cluster_s` of windows is not taken as a speaker
        (it is usually overlap, noise or a boundary window): its windows join the
        nearest large cluster's centroid.
        """
        s = self.settings
        count = len(embeddings)
        if count <= 1:
            return np.zeros(count, dtype=int)
        distances = pdist(embeddings, metric="euclidean")  # condensed (count * (count - 1) / 2,)
        tree = linkage(distances, method=s.linkage)
        min_size = max(1, int(np.ceil(s.min_cluster_s / s.hop_s)))
        if num_speakers is not None:
            target = min(num_speakers, count)
            for clusters in range(target, count + 1):  # finer cuts until `target` clusters are large
                labels = fcluster(tree, t=clusters, criterion="maxclust")
                sizes = np.bincount(labels)
                if np.sum(sizes >= min_size) >= target:
                    break
            keep = np.argsort(sizes)[::-1][:target]
        else:
            labels = fcluster(tree, t=s.threshold if threshold is None else threshold, criterion="distance")
            sizes = np.bincount(labels)
            keep = np.flatnonzero(sizes >= min_size)
            if len(keep) == 0:
                keep = np.array([np.argmax(sizes)])
        keep = keep[sizes[keep] > 0]
        centroids = np.stack([embeddings[labels == label].mean(axis=0) for label in keep])
        nearest = keep[np.argmin(((embeddings[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)]
        labels = np.where(np.isin(labels, keep), labels, nearest)
        # Relabel by order of first appearance, so "spk0" speaks first.
        _, first_seen = np.unique(labels, return_index=True)
        order = {labels[index]: rank for rank, index in enumerate(sorted(first_seen))}
        return np.array([order[label] for label in labels], dtype=int)

    # 4. Labels back onto the timeline.
    def to_annotation(self, windows, labels, uri="audio"):
        """Each stretch of speech goes to the window whose centre is nearest; same labels merge."""
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

    def diarize(self, audio_or_path, num_speakers=None, uri=None):
        """Returns a `pyannote.core.Annotation` of who spoke when.

        Args:
            audio_or_path: a file path (any rate, mono or multi-channel) or a mono
                float array already at `settings.sample_rate`.
            num_speakers: the number of speakers if known; else the calibrated threshold decides.
            uri: file id for the annotation (default: the file stem).
        """
        if uri is None:
            uri = Path(audio_or_path).stem if isinstance(audio_or_path, (str, Path)) else "audio"
        windows = self.embed(audio_or_path)
        if len(windows.starts) == 0:
            logger.warning("%s: no speech found; the diarization is empty", uri)
            return Annotation(uri=uri)
        labels = self.cluster(windows.embeddings, num_speakers=num_speakers)
        return self.to_annotation(windows, labels, uri=uri)
