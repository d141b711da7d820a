"""Peer systems run through this project's own diarization pipeline, for a side-by-side benchmark.

Only the embedding of each window changes: speech detection, window placement,
clustering and scoring stay the project's, so a difference in DER or EER is a
difference of embeddings. The peers need torch (requirements-peers.txt says how
to install them); the project itself never imports them.

    python -m experiments.benchmark --peer resemblyzer
"""

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from siamese.diarizer import DEFAULT_MODEL, Diarizer, DiarizerSettings, sidecar_path

PEERS = ("resemblyzer",)
MISSING = "resemblyzer is not installed: pip install torch==2.13.0 && pip install --no-deps -r requirements-peers.txt"
CALIBRATION_GRID = (0.1, 1.8, 0.02)  # clustering thresholds tried, as experiments.release does


def import_resemblyzer():
    """(torch, resemblyzer), imported only when a peer is asked for; a clear one-line error otherwise."""
    try:
        import resemblyzer
        import torch
    except ImportError as error:
        detail = "" if error.name in ("torch", "resemblyzer") else f" (missing module {error.name!r})"
        raise ValueError(MISSING + detail) from None
    return torch, resemblyzer


class ResemblyzerDiarizer(Diarizer):
    """Resemblyzer's pretrained d-vectors (3-layer LSTM on 40 mel bands, 256-d) in the project's pipeline.

    Each window is the same crop the project's tower sees; Resemblyzer's own
    `preprocess_wav` is not used, since its VAD would replace the shared speech
    detection. Only its level step is kept (the recording is raised to -30 dBFS
    if quieter), because its mel input, unlike the SincNet tower, depends on level.
    """

    def __init__(self, settings=None, encoder=None):
        torch, resemblyzer = import_resemblyzer()
        settings = settings or DiarizerSettings.from_file(sidecar_path(DEFAULT_MODEL))
        if settings.sample_rate != resemblyzer.sampling_rate:
            raise ValueError(f"Resemblyzer needs {resemblyzer.sampling_rate} Hz, the settings say {settings.sample_rate}")
        super().__init__(tower=None, settings=settings)
        self.torch, self.resemblyzer = torch, resemblyzer
        self.encoder = encoder or resemblyzer.VoiceEncoder("cpu", verbose=False)  # weights ship in its wheel
        self.encoder.eval()

    @classmethod
    def load(cls, path=None):
        """Settings from a JSON file (None: the shipped model's sidecar) and the pretrained encoder."""
        return cls(DiarizerSettings.from_file(path or sidecar_path(DEFAULT_MODEL)))

    def frame_split(self):
        """No shared frames: an LSTM's state depends on everything before, so windows are embedded one by one."""
        return None  # noqa: RET501  (the base class's "no split" value)

    def embed_windows(self, audio, starts, window_s=None):
        """Unit-norm d-vectors of the windows (`window_s` long, default the settings'), shape (num_windows, 256)."""
        from resemblyzer.audio import wav_to_mel_spectrogram
        from resemblyzer.hparams import audio_norm_target_dBFS

        s = self.settings
        length = round((window_s or s.window_s) * s.sample_rate)
        if np.any(audio):
            audio = self.resemblyzer.normalize_volume(audio, audio_norm_target_dBFS, increase_only=True)
        embeddings = [np.zeros((0, 256), np.float32)]
        for first in range(0, len(starts), s.batch_size):
            crops = (audio[round(t * s.sample_rate):][:length] for t in starts[first:first + s.batch_size])
            batch = np.stack([np.pad(crop, (0, length - len(crop))) for crop in crops]).astype(np.float32)
            # Its front end on a (batch, samples) array gives (frames, mels, batch).
            mels = np.ascontiguousarray(np.transpose(wav_to_mel_spectrogram(batch), (2, 0, 1)))  # (batch, frames, 40)
            with self.torch.no_grad():
                embeddings.append(self.encoder(self.torch.from_numpy(mels)).numpy())
        # A window of digital silence has no direction (0 / 0): it becomes the zero vector.
        return np.nan_to_num(np.concatenate(embeddings))


def teacher(name, sample_rate, window_s):
    """`(embed, description)` of a peer used as a distillation teacher (`data_prep.teacher_bank`).

    `embed(audio, starts_s)` gives its embeddings of the `window_s` windows of one
    utterance; the description (name and version) is stored with the bank.
    """
    from importlib.metadata import version

    if name not in PEERS:
        raise ValueError(f"unknown teacher {name!r}; known: {', '.join(PEERS)}")
    import_resemblyzer()  # a clear one-line error when torch or resemblyzer is missing
    settings = DiarizerSettings(sample_rate=sample_rate, window_s=window_s)
    return ResemblyzerDiarizer(settings).embed_windows, f"{name} {version(name)}"


def load_peer(name, settings_path=None):
    """A peer diarizer by name, with settings from `settings_path` (None: the shipped model's)."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    return ResemblyzerDiarizer.load(settings_path)


def heldout_data(manifests, heldout, sample_rate, val_conversations=None, test_conversations=None,
                 many_conversations=None, room_conversations=None):
    """{split: (conversations folder, trials file)} that experiments.release calibrates and measures on.

    Same seeds and sizes as release (unless given), so a run folder it released is reused
    as it is and a fresh one gets the same data. Nothing present is rewritten. "val_many"
    and "test_many" are the release's conversations of 5-8 speakers (folders), simulated
    like release does where missing (`many_conversations`, default release's; 0: none
    are made, and a missing folder gives None). "val_rooms" and "test_rooms" are the release's
    conversations in reverberant rooms, the same way (`room_conversations`).
    """
    from data_prep.simulate import write_conversations
    from data_prep.trials import write_trials
    from experiments.release import (MANY_CONVERSATIONS, ROOM_CONVERSATIONS, TEST_CONVERSATIONS, TEST_MANY_SEED,
                                     TEST_SEED, TRIALS_SEED, VAL_CONVERSATIONS, VAL_MANY_SEED, VAL_SEED,
                                     write_many_conversations, write_room_conversations)

    heldout = Path(heldout)
    data = {}
    sizes = (val_conversations or VAL_CONVERSATIONS, test_conversations or TEST_CONVERSATIONS)
    many_count = MANY_CONVERSATIONS if many_conversations is None else many_conversations
    room_count = ROOM_CONVERSATIONS if room_conversations is None else room_conversations
    for split, seed, many_seed, count in (("val", VAL_SEED, VAL_MANY_SEED, sizes[0]),
                                          ("test", TEST_SEED, TEST_MANY_SEED, sizes[1])):
        conversations, trials = heldout / f"{split}_conversations", heldout / f"{split}_trials" / "trials.txt"
        if not (conversations / "conversations.csv").is_file():
            write_conversations(manifests[split], conversations, num_conversations=count, seed=seed, sample_rate=sample_rate)
        if not trials.is_file():
            write_trials(manifests[split], trials.parent, sample_rate=sample_rate, seed=TRIALS_SEED)
        data[split] = (conversations, trials)
        many = heldout / f"{split}_many_conversations"
        if many_count > 0 and not (many / "conversations.csv").is_file():
            write_many_conversations(manifests[split], many, many_count, many_seed, sample_rate)
        data[f"{split}_many"] = many if (many / "conversations.csv").is_file() else None
        rooms = heldout / f"{split}_room_conversations"
        if room_count > 0 and not (rooms / "conversations.csv").is_file():
            write_room_conversations(manifests[split], rooms, room_count, seed, sample_rate)
        data[f"{split}_rooms"] = rooms if (rooms / "conversations.csv").is_file() else None
    return data


def calibrate(diarizer, conversations, trials, many=None, rooms=None):
    """Window, switch penalty, smallest speaker, clustering and verification thresholds on validation data, as release does.

    `many` (a folder of conversations of 5-8 speakers, or None) and `rooms` (the conversations in reverberant
    rooms, or None) join the clustering calibration, as in release. The speech detector stays the base settings'.
    """
    from experiments.calibrate import calibrate_clustering, der_by_count
    from experiments.evaluate import annotated_recordings, score_trials
    from experiments.release import CLUSTER_WINDOWS_S, MIN_CLUSTERS_S, PENALTIES, SMOOTHINGS, WINDOWS_S

    recordings = annotated_recordings(conversations, conversations)
    more = annotated_recordings(many, many) if many else []
    in_rooms = annotated_recordings(rooms, rooms) if rooms else []
    der = calibrate_clustering(diarizer, recordings + in_rooms + more, WINDOWS_S, np.arange(*CALIBRATION_GRID), PENALTIES,
                               MIN_CLUSTERS_S, SMOOTHINGS, CLUSTER_WINDOWS_S)
    verification = score_trials(diarizer, trials)
    diarizer.settings.verification_threshold = round(verification["eer_threshold"], 4)
    calibration = {"val_der_full_estimated": der, "val_eer": verification["eer"]}
    if more:
        calibration.update(der_by_count(diarizer, recordings, more))
    if in_rooms:
        calibration.update(der_by_count(diarizer, recordings, in_rooms, other="rooms"))
    return calibration


def calibrated_peer(name, cache, base_settings_path, conversations, trials, many=None, recalibrate=False, log=print,
                    rooms=None):
    """(diarizer, calibration) with thresholds tuned on validation data, cached as JSON in `cache`.

    The cache is reused while the settings it started from, the peer's version, what
    calibration tries and the validation data (index and trial list checksums) are
    the same, so a rerun does not recalibrate unless asked.
    """
    from importlib.metadata import version

    from data_prep.audio import atomic_path
    from experiments.release import CLUSTER_WINDOWS_S, MIN_CLUSTERS_S, PENALTIES, SMOOTHINGS, WINDOWS_S

    base = DiarizerSettings.from_file(base_settings_path)
    base.shared_frames = False  # never used by the peer (see `frame_split`); said so in its settings
    # The blockwise count's link was chosen for our embeddings (experiments.meetings); the peer counts as a whole.
    base.link_threshold = None
    data = [Path(conversations) / "conversations.csv", Path(trials)] + [
        Path(folder) / "conversations.csv" for folder in (many, rooms) if folder]
    origin = {"base": asdict(base), "peer": f"{name} {version(name)}", "grid": list(CALIBRATION_GRID),
              "windows": list(WINDOWS_S), "penalties": list(PENALTIES),
              "min_clusters_s": list(MIN_CLUSTERS_S), "smoothings": list(SMOOTHINGS),
              "cluster_windows_s": list(CLUSTER_WINDOWS_S),
              "validation": {str(path): hashlib.sha1(path.read_bytes()).hexdigest() for path in data}}
    cache = Path(cache)
    if cache.is_file() and not recalibrate:
        stored = json.loads(cache.read_text())
        if stored.get("calibrated_from") == origin:
            log(f"{name}: calibrated settings from {cache}")
            return load_peer(name, cache), stored["calibration"]
    folders = ", ".join(str(folder) for folder in (conversations, many, rooms) if folder)
    log(f"{name}: calibrating on validation speakers ({folders}, {trials}) ...")
    diarizer = load_peer(name, base_settings_path)
    diarizer.settings = base
    calibration = calibrate(diarizer, conversations, trials, many, rooms)
    with atomic_path(cache) as tmp:
        tmp.write_text(json.dumps({**diarizer.settings.stored(cache), "calibration": calibration,
                                   "calibrated_from": origin}, indent=2) + "\n")
    return diarizer, calibration
