"""A new recording domain from the vendored speech: the telephone channel.

    python -m data_prep.channel --manifest CSV [CSV ...] --out DIR [--seed 0]

Each utterance of the manifests is sent through a narrowband telephone channel
(resampled to 8 kHz, band-passed to 300-3400 Hz, 8-bit mu-law coded, a random
level) and written as ``DIR/<speaker>/<stem>.wav`` (8 kHz), with ``DIR/manifest.csv``
listing ``path, speaker, gender`` so that ``data.format: manifest`` (or
``python -m data_prep --format manifest``) reads it. The speakers, their genders
and hence the seeded speaker split stay those of the source manifests, so a model
fine-tuned on the result still never sees the test speakers. The shipped model was
trained on 16 kHz wideband speech only: this is the domain shift a user's call
recordings bring, used to show fine-tuning and recalibration at work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TELEPHONE_RATE = 8000
BAND_HZ = (300.0, 3400.0)
MU = 255.0


def telephone(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One utterance through a telephone channel; returns 8 kHz float32 samples in [-1, 1]."""
    import soxr
    from scipy.signal import butter, sosfiltfilt

    narrow = soxr.resample(np.asarray(audio, dtype=np.float64), sample_rate, TELEPHONE_RATE)
    band = butter(4, BAND_HZ, btype="bandpass", fs=TELEPHONE_RATE, output="sos")
    narrow = sosfiltfilt(band, narrow)
    peak = max(float(np.abs(narrow).max()), 1e-9)
    narrow *= 10.0 ** (rng.uniform(-12.0, -1.0) / 20.0) / peak  # the line's level varies per call
    coded = np.sign(narrow) * np.log1p(MU * np.abs(narrow)) / np.log1p(MU)  # G.711-style mu-law, 8 bits
    coded = np.round(coded * 127.0) / 127.0
    return (np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(MU)) / MU).astype(np.float32)


def write_telephone_corpus(manifest: pd.DataFrame, out_dir, seed: int = 0) -> pd.DataFrame:
    """Writes every row's audio through `telephone` under ``out_dir``; returns and writes the new list.

    Row ``i`` draws its level from ``default_rng([seed, i])``: the same manifest and seed give
    the same files. Files already written are kept (a killed run continues).
    """
    from tqdm import tqdm

    from data_prep.audio import atomic_path, write_wav
    from data_prep.manifest import load_utterance, utterance_spans

    out = Path(out_dir)
    sources = {Path(path).resolve().parent for path in manifest["path"]}
    if any(out.resolve() == source or out.resolve() in source.parents for source in sources):
        raise ValueError(f"{out}: must not be a folder of the source audio")
    offsets, lengths = utterance_spans(manifest)
    rows = []
    for index, row in enumerate(tqdm(manifest.itertuples(), total=len(manifest), desc="telephone channel",
                                     unit="file", disable=None)):
        speaker = str(row.speaker).replace("/", "__")
        target = out / speaker / f"{index:06d}_{Path(row.path).stem}.wav"
        if not target.is_file():
            audio = load_utterance(row.path, TELEPHONE_RATE * 2, offsets[index], lengths[index])
            target.parent.mkdir(parents=True, exist_ok=True)
            write_wav(target, telephone(audio, TELEPHONE_RATE * 2, np.random.default_rng([seed, index])), TELEPHONE_RATE)
        rows.append({"path": str(target.resolve()), "speaker": str(row.speaker),
                     **({"gender": row.gender} if "gender" in manifest.columns else {})})
    listing = pd.DataFrame(rows)
    with atomic_path(out / "manifest.csv") as tmp:
        listing.to_csv(tmp, index=False, lineterminator="\n")
    return listing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.channel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", nargs="+", required=True, help="utterance manifest CSV(s), e.g. a run's "
                        "manifests/train.csv val.csv test.csv")
    parser.add_argument("--out", required=True, help="output folder (must not hold the source audio)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-utterance levels (default 0)")
    args = parser.parse_args(argv)
    from data_prep.audio import AudioError
    from data_prep.manifest import read_manifest

    try:
        manifest = pd.concat([read_manifest(path) for path in args.manifest], ignore_index=True)
        listing = write_telephone_corpus(manifest, args.out, seed=args.seed)
    except (ValueError, AudioError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    print(f"wrote {len(listing)} telephone-band utterances of {listing['speaker'].nunique()} speakers "
          f"to {args.out} (list: {Path(args.out) / 'manifest.csv'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
