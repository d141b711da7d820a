"""Background noise for simulated recordings and for training crops.

One place for noise synthesis: the conversation simulator adds it under whole
recordings, and the pair pipeline can add it to training crops so the
embeddings learn to ignore it.
"""

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
