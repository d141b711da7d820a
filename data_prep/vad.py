"""Energy-based voice activity detection.

Good enough for clean read speech (LibriSpeech): it trims leading/trailing
silence and finds pauses. The threshold is relative to the loud frames of the
same signal, so it does not depend on the recording level, with an absolute
floor so that digital silence or faint noise is never called speech.
"""

from __future__ import annotations

import numpy as np

# Frames are processed in chunks of this many, bounding temporary memory on
# long (hours) recordings while staying vectorised.
_CHUNK_FRAMES = 8192


def frame_energy_db(
    audio: np.ndarray, sample_rate: int, *, frame_s: float = 0.025, hop_s: float = 0.010
) -> np.ndarray:
    """Mean-square energy of each frame, in dB relative to full scale.

    Audio shorter than one frame is zero-padded to one frame. Samples after
    the last full frame (less than one hop) are ignored.

    Args:
        audio: 1-D samples.
        sample_rate: Sample rate in Hz.
        frame_s: Frame length in seconds.
        hop_s: Hop between frame starts in seconds.

    Returns:
        float64 array of frame energies (digital silence gives -120 dB).
    """
    audio = np.asarray(audio, dtype=np.float32)
    frame = max(1, int(round(frame_s * sample_rate)))
    hop = max(1, int(round(hop_s * sample_rate)))
    if audio.size < frame:
        audio = np.pad(audio, (0, frame - audio.size))
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop]
    energy = np.empty(len(frames))
    for first in range(0, len(frames), _CHUNK_FRAMES):
        chunk = frames[first : first + _CHUNK_FRAMES].astype(np.float64)
        energy[first : first + len(chunk)] = np.einsum("ij,ij->i", chunk, chunk) / frame
    return 10.0 * np.log10(energy + 1e-12)


def energy_vad(
    audio: np.ndarray,
    sample_rate: int,
    *,
    frame_s: float = 0.025,
    hop_s: float = 0.010,
    threshold_db: float = -35.0,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.3,
    abs_floor_db: float = -60.0,
) -> list[tuple[float, float]]:
    """Find speech regions from frame energies.

    A frame is speech when its energy exceeds both ``threshold_db`` below the
    95th percentile of frame energies and ``abs_floor_db``. Each frame stands
    for one hop centred on its window. Silences shorter than ``min_silence_s``
    are bridged, then regions shorter than ``min_speech_s`` are dropped.

    Args:
        audio: 1-D samples in [-1, 1].
        sample_rate: Sample rate in Hz.
        frame_s: Analysis window in seconds.
        hop_s: Hop between windows in seconds.
        threshold_db: Threshold relative to the 95th-percentile frame energy.
        min_speech_s: Shortest speech region kept, in seconds.
        min_silence_s: Shortest pause kept between regions, in seconds.
        abs_floor_db: Frames below this absolute level (dBFS) are silence.

    Returns:
        Sorted, non-overlapping ``(start_s, end_s)`` regions; [] for silence.

    Raises:
        ValueError: If ``audio`` is not 1-D or a rate/length is not positive.
    """
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {audio.shape}")
    if sample_rate <= 0 or frame_s <= 0 or hop_s <= 0:
        raise ValueError("sample_rate, frame_s and hop_s must be positive")
    if audio.size == 0:
        return []
    energy_db = frame_energy_db(audio, sample_rate, frame_s=frame_s, hop_s=hop_s)
    threshold = max(np.percentile(energy_db, 95) + threshold_db, abs_floor_db)
    is_speech = np.concatenate([[False], energy_db > threshold, [False]])
    edges = np.flatnonzero(np.diff(is_speech.astype(np.int8)))
    first, last = edges[0::2], edges[1::2] - 1  # frame index ranges, inclusive
    if first.size == 0:
        return []
    frame_len_s = max(1, int(round(frame_s * sample_rate))) / sample_rate
    hop_len_s = max(1, int(round(hop_s * sample_rate))) / sample_rate
    starts = np.maximum(first * hop_len_s + (frame_len_s - hop_len_s) / 2, 0.0)
    ends = np.minimum(last * hop_len_s + (frame_len_s + hop_len_s) / 2, audio.size / sample_rate)
    keep_gap = (starts[1:] - ends[:-1]) >= min_silence_s
    starts = starts[np.concatenate([[True], keep_gap])]
    ends = ends[np.concatenate([keep_gap, [True]])]
    long_enough = (ends - starts) >= min_speech_s
    return [(float(s), float(e)) for s, e in zip(starts[long_enough], ends[long_enough])]


def speech_mask(audio: np.ndarray, sample_rate: int, **vad_kwargs) -> np.ndarray:
    """Per-sample boolean mask of the regions found by :func:`energy_vad`.

    Args:
        audio: 1-D samples.
        sample_rate: Sample rate in Hz.
        **vad_kwargs: Passed on to :func:`energy_vad`.

    Returns:
        Boolean array shaped like ``audio``.
    """
    mask = np.zeros(np.asarray(audio).shape[0], dtype=bool)
    for start_s, end_s in energy_vad(audio, sample_rate, **vad_kwargs):
        mask[int(round(start_s * sample_rate)) : int(round(end_s * sample_rate))] = True
    return mask
