"""Augmentation: background noise, room reverberation, and speed perturbation for more training speakers.

One place for noise and reverberation synthesis: the conversation simulator adds
them to whole recordings, and the training pipelines can add both to crops
so the embeddings learn to ignore them. Speed perturbation turns each training speaker
into several identities (`speed_perturbed_speakers`).
"""

from pathlib import Path

import numpy as np


def coloured_noise(length: int, *, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise whose power spectrum falls as 1 / f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length)
    frequencies[0] = frequencies[1] if length > 1 else 1.0  # no infinite gain at DC
    noise = np.fft.irfft(spectrum / frequencies ** (exponent / 2), n=length)
    noise -= noise.mean()
    return (noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, exponent: float | None = None) -> np.ndarray:
    """`audio` plus white, pink or brown noise (drawn unless `exponent` is given) at `snr_db` below its power."""
    if exponent is None:
        exponent = float(rng.choice([0.0, 1.0, 2.0]))
    power = float(np.mean(np.square(audio), dtype=np.float64))
    if power <= 0.0:
        return audio
    noise = coloured_noise(len(audio), exponent=exponent, rng=rng)
    return (audio + noise * np.sqrt(power / 10.0 ** (snr_db / 10.0))).astype(np.float32)


# Direct-to-reverberant ratios drawn for a reverberated talker: 10 dB close to the microphone, 0 dB across a room.
DRR_DB = (0.0, 10.0)
# Reverberation times (s) a training crop or conversation is drawn from when reverberation is on and none are given.
REVERB_RT60_S = (0.2, 0.9)


def reverberate_randomly(audio: np.ndarray, rt60_s: tuple[float, float], rng: np.random.Generator,
                         sample_rate: int = 16000) -> np.ndarray:
    """``audio`` in a room drawn from ``rng``: reverberation time in ``rt60_s``, direct-to-reverberant ratio in DRR_DB."""
    response = room_impulse_response(rng.uniform(*rt60_s), sample_rate, rng, drr_db=rng.uniform(*DRR_DB))
    return reverberate(audio, response)


def room_impulse_response(
    rt60_s: float, sample_rate: int, rng: np.random.Generator, *, drr_db: float = 5.0, predelay_s: float = 0.002
) -> np.ndarray:
    """A synthetic room impulse response: the direct sound, then an exponentially decaying diffuse tail.

    The statistical model of late reverberation (Gaussian noise whose energy falls 60 dB in
    ``rt60_s``) rather than a room simulation: no early-reflection geometry, the same decay at
    every frequency. It is cheap, needs no recorded responses, and gives what matters to a
    speech detector and a speaker embedding: smeared onsets, filled pauses, a coloured voice.
    ``drr_db`` is the direct-to-reverberant energy ratio (about 10 dB for a close talker,
    0 dB or less across a meeting room). The direct sound is sample 0, so a reverberated
    signal stays aligned with its dry original.

    Returns:
        float32 ``(ceil(rt60_s * sample_rate) + 1,)`` response with ``h[0] == 1``.
    """
    if not rt60_s > 0.0 or sample_rate < 1:
        raise ValueError(f"need rt60_s > 0 and a positive sample rate, got {rt60_s}, {sample_rate}")
    length = int(np.ceil(rt60_s * sample_rate)) + 1
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-3.0 * np.log(10.0) * t / rt60_s)  # energy: -60 dB at rt60_s
    tail[t < predelay_s] = 0.0
    energy = float(np.sum(tail**2))
    if energy > 0.0:
        tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / energy)
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(audio: np.ndarray, response: np.ndarray) -> np.ndarray:
    """``audio`` convolved with ``response``, cut to the input's length (the tail past the end is dropped)."""
    import scipy.signal

    if audio.size == 0:
        return np.asarray(audio, dtype=np.float32)
    return scipy.signal.fftconvolve(audio, response)[: len(audio)].astype(np.float32)


def speed_perturbed_speakers(manifest, factors, out_dir, sample_rate=16000):
    """Training speakers multiplied by speed perturbation: each factor makes new identities.

    Playing an utterance ``factor`` times faster shifts its pitch and formants, so
    ``<speaker>-sp<factor>`` is treated as a speaker of its own: with 201 training
    speakers and factors (0.9, 1.1) the embedding learns to tell 603 apart (the
    x-vector recipes' answer to too few speakers). Perturbed copies are written once
    as WAV under ``out_dir/sp<factor>/`` and reused. Use it on training speakers only.
    A segment row (``start_s``/``end_s``) is perturbed as its segment alone, so its
    copy is a whole file.

    Returns:
        The manifest with the perturbed rows appended (originals first).
    """
    import pandas as pd
    import soxr
    from tqdm import tqdm

    from data_prep.audio import write_wav
    from data_prep.manifest import SEGMENT_COLUMNS, load_utterance, utterance_spans

    rows = [manifest]
    offsets, lengths = utterance_spans(manifest)
    for factor in factors:
        if not 0.5 <= factor <= 2.0 or factor == 1.0:
            raise ValueError(f"speed perturbation factors must lie in [0.5, 2] and differ from 1, got {factor}")
        folder = Path(out_dir) / f"sp{factor:g}"
        folder.mkdir(parents=True, exist_ok=True)
        copies = manifest.copy()
        paths = []
        for index, row in enumerate(tqdm(manifest.itertuples(), total=len(manifest), desc=f"speed x{factor:g}",
                                         unit="file", disable=None)):
            target = folder / f"{index:06d}_{Path(row.path).stem}.wav"
            if not target.is_file():
                audio = load_utterance(row.path, sample_rate, offsets[index], lengths[index])
                write_wav(target, soxr.resample(audio, sample_rate * factor, sample_rate).astype(np.float32), sample_rate)
            paths.append(str(target))
        copies["path"] = paths
        copies["speaker"] = manifest["speaker"].astype(str) + f"-sp{factor:g}"
        copies["duration_s"] = manifest["duration_s"].astype(float) / factor
        copies["sample_rate"] = sample_rate
        for column in SEGMENT_COLUMNS:
            if column in copies.columns:
                copies[column] = np.nan
        rows.append(copies)
    return pd.concat(rows, ignore_index=True)
