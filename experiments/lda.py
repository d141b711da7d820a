"""Fit an LDA back end on a run's training speakers and append it to the run's tower.

    python -m experiments.lda --run RUN --out RUN_DIR [--dims 64]

Embeds the training speakers' speech windows (the diarizer's own windows and speech
detector, on each utterance as it is and with background noise added), fits linear
discriminant analysis on them (`siamese.lda`), and writes a run folder whose
`tower.keras` is the tower followed by the projection. Only training speakers are
used, so `python -m experiments.release --run RUN_DIR` calibrates and measures it
on the run's validation and test speakers like any other tower.
"""

import argparse
import json
import sys
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)

RUN_FILES = ("config.yaml", "tower.json", "tower.keras", "manifests")
TRAINING_LOGS = ("log.csv", "train_seconds.txt")


def speaker_windows(diarizer, manifest, noisy_copies, snr_db, max_seconds, seed):
    """`(embeddings, speakers)` of the manifest's speech windows, up to `max_seconds` of audio per speaker."""
    import numpy as np
    from tqdm import tqdm

    from data_prep.augment import add_noise
    from data_prep.manifest import load_utterance, utterance_spans

    rng = np.random.default_rng(seed)
    offsets, lengths = utterance_spans(manifest)
    order = rng.permutation(len(manifest))  # which utterances a capped speaker keeps: seeded
    heard, embeddings, speakers = {}, [], []
    rate = diarizer.settings.sample_rate
    for row in tqdm(order, desc="embedding training speakers", unit="utterance", disable=None):
        speaker = manifest["speaker"].iloc[row]
        if heard.get(speaker, 0.0) >= max_seconds:
            continue
        clean = load_utterance(manifest["path"].iloc[row], rate, offsets[row], lengths[row])
        heard[speaker] = heard.get(speaker, 0.0) + len(clean) / rate
        for copy in range(1 + noisy_copies):
            audio = clean if copy == 0 else add_noise(clean, float(rng.uniform(*snr_db)), rng)
            windows = diarizer.embed(audio)
            embeddings.append(windows.embeddings)
            speakers += [speaker] * len(windows.embeddings)
    if not embeddings:
        raise ValueError("no training utterance had speech to embed")
    return np.concatenate(embeddings), np.asarray(speakers)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.lda", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="training run folder (holds tower.keras, tower.json, manifests/)")
    parser.add_argument("--out", required=True, help="run folder to write (must not exist yet)")
    parser.add_argument("--dims", type=int, default=64, help="dimensions kept (default 64)")
    parser.add_argument("--shrinkage", type=float, default=0.0,
                        help="share of the within-speaker covariance replaced by its mean variance (default 0)")
    parser.add_argument("--noisy-copies", type=int, default=1,
                        help="noisy copies of each utterance embedded besides the clean one (default 1)")
    parser.add_argument("--snr", type=float, nargs=2, default=(5.0, 30.0), metavar=("LOW", "HIGH"),
                        help="range of their speech-to-noise ratio in dB (default 5 30)")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="audio per speaker embedded at most, in seconds (default 120)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and of which utterances are kept")
    args = parser.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    from data_prep.audio import AudioError
    from data_prep.manifest import read_manifest
    from siamese.diarizer import Diarizer, DiarizerSettings
    from experiments.train import write_derived_run
    from siamese.lda import fit_lda, with_lda
    try:
        if out.exists():
            raise ValueError(f"{out}: already exists (choose a new run folder)")
        for name in RUN_FILES:
            if not (run / name).exists():
                raise ValueError(f"{run}: not a training run folder (no {name})")
        if args.noisy_copies < 0 or args.max_seconds <= 0 or args.snr[0] > args.snr[1]:
            raise ValueError("--noisy-copies must be >= 0, --max-seconds > 0 and --snr LOW <= HIGH")
        card = json.loads((run / "tower.json").read_text())
        diarizer = Diarizer.load(run / "tower.keras")
        diarizer.settings = DiarizerSettings(sample_rate=card["sample_rate"], window_s=card["window_s"])
        embeddings, speakers = speaker_windows(diarizer, read_manifest(run / "manifests" / "train.csv"),
                                               args.noisy_copies, args.snr, args.max_seconds, args.seed)
        mean, projection = fit_lda(embeddings, speakers, args.dims, args.shrinkage)
        tower = with_lda(diarizer.tower, mean, projection)
    except (OSError, ValueError, KeyError, AudioError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    card["lda"] = {"of": str(run), "dims": args.dims, "shrinkage": args.shrinkage, "noisy_copies": args.noisy_copies,
                   "snr_db": list(args.snr), "max_seconds": args.max_seconds, "seed": args.seed,
                   "windows": len(embeddings), "speakers": len(set(speakers.tolist()))}
    # The tower's own training log goes along: the release reports it.
    write_derived_run(out, run, tower, card,
                      extra={name: (run / name).read_text() for name in TRAINING_LOGS if (run / name).is_file()})
    print(f"LDA to {args.dims} dimensions fitted on {len(embeddings)} windows of {card['lda']['speakers']} training "
          f"speakers; tower written to {out / 'tower.keras'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
