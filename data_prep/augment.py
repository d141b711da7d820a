"""Augmentation: background noise, and speed perturbation for more training speakers.

One place for noise synthesis: the conversation simulator adds it under whole
recordings, and the pair pipeline can add it to training crops so the
embeddings learn to ignore it. Speed perturbation turns each training speaker
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
