"""Voice activity detection: energy, spectral, WebRTC and Silero detectors.

:func:`energy_vad` is good enough for clean read speech (LibriSpeech): it trims
leading/trailing silence and finds pauses. The threshold is relative to the
loud frames of the same signal, so it does not depend on the recording level,
with an absolute floor so that digital silence or faint noise is never called
speech.

:func:`webrtc_vad` (package ``webrtcvad-wheels``) and :func:`silero_vad`
(Silero's ONNX model run with ``onnxruntime``; the model file comes from the
``silero-vad`` wheel, installed with ``pip install --no-deps silero-vad==6.2.3``
so that torch is never pulled in) classify fixed frames with a trained model.
:func:`spectral_vad` measures how far each frame rises above the recording's
own background noise, band by band: in steady noise it finds speech better
than any of the others (results/vad_comparison.md, results/vad_by_noise.md).
All four share the same region merging (short pauses bridged, then short
regions dropped) and return ``[(start_s, end_s)]``. :func:`speech_regions`
picks one by name; ``python -m experiments.compare_vad`` measures them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

# Frames are processed in chunks of this many, bounding temporary memory on
# long (hours) recordings while staying vectorised.
_CHUNK_FRAMES = 8192

# The WebRTC and Silero detectors run at 16 kHz.
_MODEL_RATE = 16000

# Band SNRs are clipped to this range (nepers) before the learned detector sees them: far below the noise
# is all the same, and a recording far cleaner than any training one should look like the cleanest ones.
_SNR_RANGE = (-3.0, 8.0)
_SNR_FLOOR = float(np.exp(_SNR_RANGE[0]))
# The shipped network of the learned detector (python -m experiments.train_vad; trained with reverberant rooms, the
# shipped model's since stop 30), wherever the command runs from. models/speech_detector.keras is the dry-trained one.
SHIPPED_SPEECH_MODEL = str(Path(__file__).resolve().parents[1] / "models" / "speech_detector_rooms.keras")


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


def _noise_floor_db(energy_db: np.ndarray) -> float:
    """The recording's noise floor: its 10th-percentile frame energy (dB)."""
    return float(np.percentile(energy_db, 10))


def _merge_frames(
    is_speech: np.ndarray,
    *,
    hop_s: float,
    start_offset_s: float,
    end_offset_s: float,
    duration_s: float,
    min_speech_s: float,
    min_silence_s: float,
) -> list[tuple[float, float]]:
    """Turn per-frame speech decisions into merged speech regions.

    A run of speech frames ``first..last`` (inclusive) spans
    ``[first * hop_s + start_offset_s, last * hop_s + end_offset_s]``, clipped
    to ``[0, duration_s]``. Silences shorter than ``min_silence_s`` are bridged,
    then regions shorter than ``min_speech_s`` are dropped.

    Args:
        is_speech: 1-D boolean decision per frame.
        hop_s: Time between frame starts in seconds.
        start_offset_s: Start of frame 0's share of time, in seconds.
        end_offset_s: End of frame 0's share of time, in seconds.
        duration_s: Length of the signal in seconds.
        min_speech_s: Shortest speech region kept, in seconds.
        min_silence_s: Shortest pause kept between regions, in seconds.

    Returns:
        Sorted, non-overlapping ``(start_s, end_s)`` regions.
    """
    padded = np.concatenate([[False], np.asarray(is_speech, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    first, last = edges[0::2], edges[1::2] - 1  # frame index ranges, inclusive
    if first.size == 0:
        return []
    starts = np.maximum(first * hop_s + start_offset_s, 0.0)
    ends = np.minimum(last * hop_s + end_offset_s, duration_s)
    keep_gap = (starts[1:] - ends[:-1]) >= min_silence_s
    starts = starts[np.concatenate([[True], keep_gap])]
    ends = ends[np.concatenate([keep_gap, [True]])]
    long_enough = (ends - starts) >= min_speech_s
    return [(float(s), float(e)) for s, e in zip(starts[long_enough], ends[long_enough])]


def merge_band_frames(
    is_speech: np.ndarray, duration_s: float, *, min_speech_s: float, min_silence_s: float
) -> list[tuple[float, float]]:
    """:func:`_merge_frames` for decisions on :func:`band_powers`' frames (25 ms every 10 ms; each owns its middle 10 ms)."""
    hop_s, frame_s = 160 / _MODEL_RATE, 400 / _MODEL_RATE
    return _merge_frames(is_speech, hop_s=hop_s, start_offset_s=(frame_s - hop_s) / 2,
                         end_offset_s=(frame_s + hop_s) / 2, duration_s=duration_s,
                         min_speech_s=min_speech_s, min_silence_s=min_silence_s)


def _check_input(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """1-D float32 view of ``audio``; ValueError for bad shape or rate."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {audio.shape}")
    if sample_rate <= 0:
        raise ValueError("sample_rate must be positive")
    return np.asarray(audio, dtype=np.float32)


def _to_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio`` resampled to 16 kHz with soxr (unchanged if already 16 kHz)."""
    if sample_rate == _MODEL_RATE:
        return audio
    import soxr

    return np.asarray(soxr.resample(audio, sample_rate, _MODEL_RATE, quality="HQ"), dtype=np.float32)



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
    noise_margin_db: float | None = None,
) -> list[tuple[float, float]]:
    """Find speech regions from frame energies.

    A frame is speech when its energy exceeds both ``threshold_db`` below the
    95th percentile of frame energies and ``abs_floor_db`` (and, with
    ``noise_margin_db``, the noise floor, the 10th percentile, by that
    margin: in steady background noise the loud-frame reference alone would
    call the noise speech). Each frame stands
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
        noise_margin_db: Margin above the 10th-percentile frame energy that
            speech must exceed; None disables it.

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
    if noise_margin_db is not None:
        threshold = max(threshold, _noise_floor_db(energy_db) + noise_margin_db)
    frame_len_s = max(1, int(round(frame_s * sample_rate))) / sample_rate
    hop_len_s = max(1, int(round(hop_s * sample_rate))) / sample_rate
    return _merge_frames(
        energy_db > threshold,
        hop_s=hop_len_s,
        start_offset_s=(frame_len_s - hop_len_s) / 2,
        end_offset_s=(frame_len_s + hop_len_s) / 2,
        duration_s=audio.size / sample_rate,
        min_speech_s=min_speech_s,
        min_silence_s=min_silence_s,
    )


def _mel_band_matrix(num_bins: int, num_bands: int, fmin: float, fmax: float) -> np.ndarray:
    """``(num_bins, num_bands)`` 0/1 matrix: which FFT bins (at 16 kHz) fall in each mel-spaced band."""
    mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    edges = 700.0 * (10.0 ** (np.linspace(mel(fmin), mel(fmax), num_bands + 1) / 2595.0) - 1.0)
    freqs = np.linspace(0.0, _MODEL_RATE / 2, num_bins)
    band = np.searchsorted(edges, freqs, side="right") - 1  # band of each bin; -1 or num_bands outside
    matrix = np.zeros((num_bins, num_bands), dtype=np.float32)
    inside = (band >= 0) & (band < num_bands)
    matrix[np.flatnonzero(inside), band[inside]] = 1.0
    return matrix


def band_powers(audio: np.ndarray, *, num_bands: int = 24, frame: int = 400, hop: int = 160) -> np.ndarray:
    """Power of each 25 ms frame (10 ms hop, Hann window) of 16 kHz audio in mel-spaced bands, 100-7600 Hz.

    Returns a float32 ``(frames, num_bands)`` array; computed in chunks, so
    hours of audio never exist as a full spectrogram.
    """
    import scipy.fft

    audio = np.asarray(audio, dtype=np.float32)
    if audio.size < frame:
        audio = np.pad(audio, (0, frame - audio.size))
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop]
    n_fft = max(512, 1 << (frame - 1).bit_length())  # 512 for the 25 ms frames at 16 kHz
    # Each bin's power is real**2 + imag**2: squaring the interleaved (real, imag) floats and summing them into
    # bands with each band row repeated for both is one pass and one matrix product.
    bands = np.repeat(_mel_band_matrix(n_fft // 2 + 1, num_bands, 100.0, 7600.0), 2, axis=0)
    window = np.hanning(frame).astype(np.float32)
    powers = np.empty((len(frames), num_bands), dtype=np.float32)
    chunk = 1024  # frames per FFT call: small blocks stay in cache (about twice as fast as 8192)
    windowed = np.zeros((chunk, n_fft), dtype=np.float32)  # zero-padded to n_fft once, not on every call
    for first in range(0, len(frames), chunk):
        block = frames[first:first + chunk]
        np.multiply(block, window, out=windowed[:len(block), :frame])
        spectrum = scipy.fft.rfft(windowed[:len(block)], workers=1)  # shape: (frames, n_fft // 2 + 1), complex64
        interleaved = spectrum.view(np.float32)
        np.square(interleaved, out=interleaved)
        powers[first:first + len(block)] = interleaved @ bands
    return powers


def _mean_snr(powers: np.ndarray, noise: np.ndarray, band_out: np.ndarray | None = None) -> np.ndarray:
    """Each frame's mean over bands of ``log(max(power / noise, 1))``, computed in chunks.

    With ``band_out`` (float32, ``powers``' shape), each band's ``log(power / noise)``, clipped to
    ``_SNR_RANGE``, is written there too (from the same logarithms).
    """
    scores = np.empty(len(powers), dtype=np.float32)
    for first in range(0, len(powers), _CHUNK_FRAMES):
        if band_out is None:
            snr = np.log(np.maximum(powers[first:first + _CHUNK_FRAMES] / noise, 1.0))
        else:
            snr = np.log(np.maximum(powers[first:first + _CHUNK_FRAMES] / noise, _SNR_FLOOR))
            np.clip(snr, *_SNR_RANGE, out=band_out[first:first + len(snr)])
            np.maximum(snr, 0.0, out=snr)
        scores[first:first + len(snr)] = snr.mean(axis=1)
    return scores


def _noise_and_scores(
    audio: np.ndarray, sample_rate: int, num_bands: int, average_frames: int, noise_quantile: float, threshold: float,
    with_bands: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Each frame's mean band SNR over the recording's noise, which bands are live, and (``with_bands``) the
    clipped SNR of each live band (see :func:`band_snr`).

    See :func:`spectral_vad`. Bands the recording never fills are left out of the noise and the band SNRs.
    """
    import scipy.ndimage

    powers = band_powers(_to_16k(audio, sample_rate), num_bands=num_bands)
    if average_frames > 1:
        powers = scipy.ndimage.uniform_filter1d(powers, average_frames, axis=0, mode="nearest")
    mean_power = powers.mean(axis=0, dtype=np.float64)
    floor = mean_power.max() * 1e-6  # 60 dB below the loudest band: digital silence is not a noise level
    live = mean_power > 10.0 * floor  # bands the recording fills at all
    if not live.all():
        powers = powers[:, live]
    total = powers.sum(axis=1)
    noise_frames = total <= np.quantile(total, noise_quantile)
    bands = np.empty(powers.shape, dtype=np.float32) if with_bands else None
    for estimate in range(2):
        noise = np.maximum(powers[noise_frames].mean(axis=0, dtype=np.float64), floor).astype(np.float32)
        scores = _mean_snr(powers, noise, bands)
        is_speech = scores > threshold
        if estimate == 1 or np.count_nonzero(~is_speech) <= np.count_nonzero(noise_frames):
            break  # the second estimate only when the first leaves more frames out of speech
        noise_frames = ~is_speech
    return scores, live, bands


def spectral_vad(
    audio: np.ndarray,
    sample_rate: int,
    *,
    threshold: float = 0.25,
    low_threshold: float | None = 0.15,
    noise_quantile: float = 0.2,
    num_bands: int = 24,
    average_frames: int = 3,
    smooth_frames: int = 5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.3,
) -> list[tuple[float, float]]:
    """Find speech regions by how far each frame rises above the background noise, band by band.

    Band powers (24 mel bands, 25 ms frames every 10 ms) are first averaged over
    ``average_frames`` neighbouring frames, which steadies the noise's own
    fluctuation more than it blurs speech. A frame's score is the mean over
    bands of ``log(max(power / noise, 1))``: the band's SNR in nepers, negative
    values counted as 0. The noise spectrum is estimated twice: first as the
    mean of the ``noise_quantile`` quietest frames (by total power), then as
    the mean of every frame that first estimate did not call speech (the
    quietest frames alone are an underestimate, which made steady noise look
    like speech). Frames scoring above ``threshold`` are speech, after a median
    filter over ``smooth_frames`` frames. That speech then grows over the
    neighbouring frames that score above ``low_threshold`` (hysteresis: word
    onsets and trailing sounds are quieter than the vowels that trigger
    detection; a frame is only taken at the lower threshold next to speech
    that survived the filter, so noise alone still finds none).

    Per band, speech stands out of coloured noise where a broadband energy
    threshold sees only the noise's loudest band. Bands the recording never
    fills (above 4 kHz in telephone audio resampled to 16 kHz) are left out.
    Regions are merged as in :func:`energy_vad`. One noise spectrum serves the
    whole recording, so it suits steady background noise.

    Args:
        audio: 1-D samples.
        sample_rate: Sample rate in Hz (resampled to 16 kHz with soxr).
        threshold: Mean per-band SNR (nepers) above which a frame is speech.
        low_threshold: Score above which frames next to speech join it (at most ``threshold``; None: no hysteresis).
        noise_quantile: Share of the quietest frames that give the first noise estimate, in (0, 1).
        num_bands: Mel-spaced bands between 100 and 7600 Hz.
        average_frames: Frames whose band powers are averaged (moving average; 1 disables it).
        smooth_frames: Median filter length over frame decisions (odd; 1 disables it).
        min_speech_s: Shortest speech region kept, in seconds.
        min_silence_s: Shortest pause kept between regions, in seconds.

    Returns:
        Sorted, non-overlapping ``(start_s, end_s)`` regions; [] for silence.

    Raises:
        ValueError: Bad audio shape, rate or setting.
    """
    import scipy.ndimage

    audio = _check_input(audio, sample_rate)
    if not 0.0 < noise_quantile < 1.0:
        raise ValueError(f"noise_quantile must be in (0, 1), got {noise_quantile}")
    if low_threshold is not None and not 0.0 <= low_threshold <= threshold:
        raise ValueError(f"low_threshold must be in [0, threshold], got {low_threshold}")
    if threshold < 0 or num_bands < 1 or average_frames < 1 or smooth_frames < 1 or smooth_frames % 2 == 0:
        raise ValueError("threshold must be >= 0, num_bands and average_frames >= 1, "
                         "and smooth_frames a positive odd number")
    if audio.size == 0 or not np.any(audio):
        return []
    duration_s = audio.size / sample_rate
    scores, _, _ = _noise_and_scores(audio, sample_rate, num_bands, average_frames, noise_quantile, threshold)
    is_speech = scores > threshold

    def smooth(decisions):
        if smooth_frames == 1:
            return decisions
        return scipy.ndimage.median_filter(decisions.astype(np.uint8), smooth_frames, mode="nearest").astype(bool)

    is_speech = smooth(is_speech)
    if low_threshold is not None and low_threshold < threshold and is_speech.any():
        # Only speech that survived the median filter grows: a lone frame of noise above the threshold is no seed.
        stretches, _ = scipy.ndimage.label(scores > low_threshold)  # each run of frames above the low threshold
        seeded = np.unique(stretches[is_speech])
        is_speech = smooth(np.isin(stretches, seeded[seeded > 0]) | is_speech)
    return merge_band_frames(is_speech, duration_s, min_speech_s=min_speech_s, min_silence_s=min_silence_s)


def band_snr(
    audio: np.ndarray,
    sample_rate: int,
    *,
    num_bands: int = 24,
    average_frames: int = 3,
    noise_quantile: float = 0.2,
    threshold: float = 0.25,
) -> np.ndarray:
    """Each 10 ms frame's SNR in each mel band over the recording's own noise: the learned detector's input.

    Band powers and the noise spectrum are those of :func:`spectral_vad` (same
    arguments); the result is ``log(power / noise)`` in nepers, clipped to
    [-3, 8]. Bands the recording never fills read 0, as if they held only noise.
    Level, microphone colour and steady noise colour divide out, so a network
    trained on it need not have heard them.

    Returns:
        float32 ``(frames, num_bands)``; frame ``i`` covers samples ``[160 i, 160 i + 400)`` at 16 kHz.
    """
    audio = _check_input(audio, sample_rate)
    if audio.size == 0 or not np.any(audio):
        frames = 1 + max(int(round(audio.size * _MODEL_RATE / sample_rate)) - 400, 0) // 160
        return np.zeros((frames, num_bands), dtype=np.float32)
    _, live, bands = _noise_and_scores(audio, sample_rate, num_bands, average_frames, noise_quantile, threshold,
                                       with_bands=True)
    if live.all():
        return bands
    snr = np.zeros((len(bands), num_bands), dtype=np.float32)
    snr[:, live] = bands
    return snr


def learned_vad(
    audio: np.ndarray,
    sample_rate: int,
    *,
    model: str = SHIPPED_SPEECH_MODEL,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.1,
) -> list[tuple[float, float]]:
    """Find speech regions with a small network trained on band SNRs (``python -m experiments.train_vad``).

    Each 10 ms frame of :func:`band_snr` gets a speech probability from the
    network at ``model`` (:mod:`data_prep.speech_net`; it sees about 0.4 s either
    side); frames above ``threshold`` are speech, merged as in :func:`energy_vad`.
    It learns what the hand-set rule of :func:`spectral_vad` guesses: which
    bands and which neighbouring frames tell speech from noise, and the
    references' convention that pauses under 0.3 s inside speech are speech.

    Args:
        audio: 1-D samples.
        sample_rate: Sample rate in Hz.
        model: Path of the network's ``.keras`` file.
        threshold: Speech probability above which a frame is speech.
        min_speech_s: Shortest speech region kept, in seconds.
        min_silence_s: Shortest pause kept between regions, in seconds.

    Returns:
        Sorted, non-overlapping ``(start_s, end_s)`` regions; [] for silence.

    Raises:
        ValueError: Bad audio shape, rate or threshold, or a missing or unusable model file.
    """
    from data_prep.speech_net import load_speech_net

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    audio = _check_input(audio, sample_rate)
    network = load_speech_net(str(model))
    if audio.size == 0 or not np.any(audio):
        return []
    probabilities = network(band_snr(audio, sample_rate, num_bands=network.num_bands))
    return merge_band_frames(probabilities > threshold, audio.size / sample_rate, min_speech_s=min_speech_s,
                             min_silence_s=min_silence_s)


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


def webrtc_vad(
    audio: np.ndarray,
    sample_rate: int,
    *,
    aggressiveness: int = 2,
    frame_ms: int = 30,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.3,
    noise_margin_db: float | None = None,
) -> list[tuple[float, float]]:
    """Find speech regions with the WebRTC voice activity detector.

    The audio is resampled to 16 kHz (soxr) unless already there, converted to
    16-bit PCM and classified in consecutive ``frame_ms`` frames (the last,
    partial frame is zero-padded). Speech frames are merged as in
    :func:`energy_vad`: silences shorter than ``min_silence_s`` are bridged,
    then regions shorter than ``min_speech_s`` are dropped.

    With ``noise_margin_db``, a frame is speech only if WebRTC says so *and*
    its energy exceeds the recording's noise floor (10th-percentile frame
    energy) by that margin. WebRTC at low aggressiveness misses little speech
    but keeps the noisy edges of pauses and turns; the energy condition trims
    them (lower missed + false alarm on noisy validation conversations than
    any aggressiveness alone, results/vad_comparison.md).

    Args:
        audio: 1-D samples in [-1, 1] (values outside are clipped).
        sample_rate: Sample rate in Hz.
        aggressiveness: 0 (least) to 3 (most aggressive in rejecting non-speech).
        frame_ms: Frame length, 10, 20 or 30 ms.
        min_speech_s: Shortest speech region kept, in seconds.
        min_silence_s: Shortest pause kept between regions, in seconds.
        noise_margin_db: Margin above the 10th-percentile frame energy that a
            speech frame must also exceed; None (default) disables it.

    Returns:
        Sorted, non-overlapping ``(start_s, end_s)`` regions; [] for silence.

    Raises:
        ImportError: If ``webrtcvad-wheels`` is not installed.
        ValueError: Bad audio shape, rate, aggressiveness or frame length.
    """
    audio = _check_input(audio, sample_rate)
    if aggressiveness not in (0, 1, 2, 3):
        raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness}")
    if frame_ms not in (10, 20, 30):
        raise ValueError(f"frame_ms must be 10, 20 or 30, got {frame_ms}")
    try:
        import webrtcvad
    except ImportError:
        raise ImportError("webrtc_vad needs the webrtcvad module: pip install webrtcvad-wheels") from None
    if audio.size == 0:
        return []
    duration_s = audio.size / sample_rate
    audio = _to_16k(audio, sample_rate)
    frame = _MODEL_RATE * frame_ms // 1000
    num_frames = -(-audio.size // frame)
    vad = webrtcvad.Vad(aggressiveness)
    is_speech = np.zeros(num_frames, dtype=bool)
    energy_db = np.zeros(num_frames)  # of the same frames, for the noise-floor condition
    hop_s = frame / _MODEL_RATE
    heard = False  # any non-zero sample at all (digital silence has no speech)
    block = 20_000  # frames handled at a time: a long recording never exists twice in memory
    for first in range(0, num_frames, block):
        count = min(block, num_frames - first)
        chunk = np.clip(audio[first * frame:(first + count) * frame], -1.0, 1.0)
        chunk = np.pad(chunk, (0, count * frame - chunk.size))  # the last frame zero-padded
        pcm = np.round(chunk * 32767).astype(np.int16)
        heard = heard or bool(pcm.any())
        data, classify = memoryview(pcm.tobytes()), vad.is_speech  # slices of a memoryview copy nothing
        step = 2 * frame  # bytes per frame
        is_speech[first:first + count] = [classify(data[i * step:(i + 1) * step], _MODEL_RATE) for i in range(count)]
        if noise_margin_db is not None:
            energy_db[first:first + count] = frame_energy_db(chunk, _MODEL_RATE, frame_s=hop_s, hop_s=hop_s)
    if not heard:
        return []
    if noise_margin_db is not None:
        is_speech &= energy_db > _noise_floor_db(energy_db) + noise_margin_db
    return _merge_frames(
        is_speech,
        hop_s=hop_s,
        start_offset_s=0.0,
        end_offset_s=hop_s,
        duration_s=duration_s,
        min_speech_s=min_speech_s,
        min_silence_s=min_silence_s,
    )


_SILERO_INSTALL = (
    "silero_vad needs onnxruntime and the silero-vad package's ONNX model: "
    "pip install onnxruntime && pip install --no-deps silero-vad==6.2.3 "
    "(--no-deps: silero-vad depends on torch, which is not needed here)"
)
# Model file inside the silero-vad wheel (the package's default ONNX model,
# opset 16, 8 and 16 kHz). Found through the distribution's file list: importing
# the silero_vad package itself would import torch.
_SILERO_MODEL = "silero_vad/data/silero_vad.onnx"
# The model takes 512-sample chunks at 16 kHz, each prefixed with the last 64
# samples of the previous chunk (zeros before the first); recurrent state is
# carried from one call to the next.
_SILERO_CHUNK = 512
_SILERO_CONTEXT = 64


def _silero_model_path() -> str:
    """Path of the Silero ONNX model shipped in the installed silero-vad wheel."""
    from importlib import metadata

    try:
        dist = metadata.distribution("silero-vad")
    except metadata.PackageNotFoundError:
        raise ImportError(_SILERO_INSTALL) from None
    for file in dist.files or ():
        if file.as_posix() == _SILERO_MODEL:
            path = dist.locate_file(file)
            if path.is_file():
                return str(path)
    raise ImportError(f"{_SILERO_MODEL} not found in the installed silero-vad; {_SILERO_INSTALL}")


@functools.lru_cache(maxsize=1)
def _silero_session():
    """The (cached) onnxruntime CPU session for Silero VAD, one thread."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(_SILERO_INSTALL) from None
    path = _silero_model_path()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def silero_probabilities(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Silero VAD speech probability of each 32 ms chunk (512 samples at 16 kHz).

    Streaming inference, one ONNX call per chunk: the audio is resampled to
    16 kHz if needed, zero-padded to whole chunks, and each chunk is fed with
    the previous chunk's last 64 samples in front and the recurrent state the
    previous call returned. Input and output names and the state's shape are
    read from the session.

    Args:
        audio: 1-D samples in [-1, 1].
        sample_rate: Sample rate in Hz.

    Returns:
        float32 array, one probability per chunk (empty for empty audio).

    Raises:
        ImportError: If onnxruntime or silero-vad is not installed.
        ValueError: Bad audio shape or rate.
    """
    audio = _check_input(audio, sample_rate)
    session = _silero_session()
    if audio.size == 0:
        return np.zeros(0, dtype=np.float32)
    audio = _to_16k(audio, sample_rate)
    inputs = {item.name: item for item in session.get_inputs()}
    missing = {"input", "state", "sr"} - set(inputs)
    if missing:
        raise RuntimeError(f"unexpected Silero ONNX inputs {sorted(inputs)} (missing {sorted(missing)})")
    prob_name, state_name = (item.name for item in session.get_outputs()[:2])
    state_shape = [dim if isinstance(dim, int) else 1 for dim in inputs["state"].shape]  # (2, batch=1, 128)
    state = np.zeros(state_shape, dtype=np.float32)
    rate = np.array(_MODEL_RATE, dtype=np.int64)
    num_chunks = -(-audio.size // _SILERO_CHUNK)
    padded = np.zeros(_SILERO_CONTEXT + num_chunks * _SILERO_CHUNK, dtype=np.float32)
    padded[_SILERO_CONTEXT : _SILERO_CONTEXT + audio.size] = audio
    window = _SILERO_CONTEXT + _SILERO_CHUNK
    probabilities = np.empty(num_chunks, dtype=np.float32)
    for i in range(num_chunks):
        start = i * _SILERO_CHUNK  # chunk i with its 64 context samples in front
        chunk = padded[start : start + window][None, :]
        prob, state = session.run([prob_name, state_name], {"input": chunk, "state": state, "sr": rate})
        probabilities[i] = prob.reshape(-1)[0]
    return probabilities


def silero_vad(
    audio: np.ndarray,
    sample_rate: int,
    *,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.3,
) -> list[tuple[float, float]]:
    """Find speech regions with the Silero VAD model (ONNX, CPU).

    Chunks of 32 ms whose speech probability (:func:`silero_probabilities`)
    exceeds ``threshold`` are speech; they are merged as in
    :func:`energy_vad`: silences shorter than ``min_silence_s`` are bridged,
    then regions shorter than ``min_speech_s`` are dropped.

    Needs ``onnxruntime`` and the model file of the ``silero-vad`` package,
    installed without its torch dependency:
    ``pip install --no-deps silero-vad==6.2.3``.

    Args:
        audio: 1-D samples in [-1, 1].
        sample_rate: Sample rate in Hz.
        threshold: Speech probability above which a chunk is speech.
        min_speech_s: Shortest speech region kept, in seconds.
        min_silence_s: Shortest pause kept between regions, in seconds.

    Returns:
        Sorted, non-overlapping ``(start_s, end_s)`` regions; [] for silence.

    Raises:
        ImportError: If onnxruntime or silero-vad is not installed.
        ValueError: Bad audio shape, rate or threshold.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    audio = _check_input(audio, sample_rate)
    if audio.size == 0:
        return []
    probabilities = silero_probabilities(audio, sample_rate)
    hop_s = _SILERO_CHUNK / _MODEL_RATE
    return _merge_frames(
        probabilities > threshold,
        hop_s=hop_s,
        start_offset_s=0.0,
        end_offset_s=hop_s,
        duration_s=audio.size / sample_rate,
        min_speech_s=min_speech_s,
        min_silence_s=min_silence_s,
    )


SPEECH_DETECTORS = {"energy": energy_vad, "spectral": spectral_vad, "learned": learned_vad, "webrtc": webrtc_vad,
                    "silero": silero_vad}


def speech_regions(
    audio: np.ndarray, sample_rate: int, method: str = "energy", **kwargs
) -> list[tuple[float, float]]:
    """Speech regions from the detector named ``method``.

    Args:
        audio: 1-D samples in [-1, 1].
        sample_rate: Sample rate in Hz.
        method: "energy" (:func:`energy_vad`), "spectral" (:func:`spectral_vad`),
            "webrtc" (:func:`webrtc_vad`) or "silero" (:func:`silero_vad`).
        **kwargs: Passed on to the detector.

    Returns:
        Sorted, non-overlapping ``(start_s, end_s)`` regions.

    Raises:
        ValueError: If ``method`` is not one of the detectors.
    """
    try:
        detector = SPEECH_DETECTORS[method]
    except (KeyError, TypeError):
        raise ValueError(f"unknown speech detection method {method!r}; choose from {sorted(SPEECH_DETECTORS)}") from None
    return detector(audio, sample_rate, **kwargs)
