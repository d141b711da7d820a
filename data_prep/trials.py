"""Verification trials from held-out speakers: segment files plus a trial list.

Each utterance is cut into consecutive, non-overlapping segments; every pair of
segments is a trial, labelled 1 when both come from one speaker. With one
utterance per speaker (the vendored data), same-speaker trials come from one
recording session, which makes the task easier than cross-session trials.
"""

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from data_prep.audio import AudioError, atomic_path, write_wav
from data_prep.manifest import load_utterance, read_manifest, utterance_spans
from data_prep.vad import energy_vad


def cut_segments(audio, sample_rate, segment_s, min_speech=0.5):
    """Consecutive `segment_s` pieces of `audio` with at least `min_speech` of speech."""
    length = round(segment_s * sample_rate)
    pieces = []
    for start in range(0, len(audio) - length + 1, length):
        piece = audio[start:start + length]
        speech_s = sum(end - begin for begin, end in energy_vad(piece, sample_rate))
        if speech_s >= min_speech * segment_s:
            pieces.append(piece)
    return pieces


def write_trials(manifest, out_dir, *, segment_s=2.0, sample_rate=16000, max_segments_per_speaker=6, seed=0,
                 skipped=None):
    """Writes `out_dir/segments/*.wav` and `out_dir/trials.txt` (`<path1> <path2> <label>`).

    Returns the trial list path. Segments per speaker are capped (seeded choice)
    so that every speaker weighs about the same in the EER. A file that cannot
    be read is left out; its AudioError goes to `skipped` (a list) if given,
    else it is raised.
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    segments = []  # (path, speaker)

    offsets, lengths = utterance_spans(manifest)  # a segment row (a speaker's turn) is cut inside its segment
    table = manifest.reset_index(drop=True).assign(offset_s=offsets, length_s=lengths)

    def segments_of(row):
        try:
            audio = load_utterance(row.path, sample_rate, row.offset_s, row.length_s)
            return cut_segments(audio, sample_rate, segment_s)
        except AudioError as error:
            if skipped is None:
                raise
            skipped.append(error)
            return []

    for speaker, rows in table.groupby("speaker", sort=True):
        pieces = [piece for row in rows.itertuples() for piece in segments_of(row)]
        if len(pieces) > max_segments_per_speaker:
            keep = np.sort(rng.choice(len(pieces), max_segments_per_speaker, replace=False))
            pieces = [pieces[index] for index in keep]
        for index, piece in enumerate(pieces):
            path = out_dir / "segments" / f"{str(speaker).replace('/', '__')}_{index:02d}.wav"  # uri/label names
            write_wav(path, piece, sample_rate)
            segments.append((str(path), str(speaker)))
    lines = [
        f"{first} {second} {int(speaker_a == speaker_b)}"
        for (first, speaker_a), (second, speaker_b) in itertools.combinations(segments, 2)
    ]
    trials = out_dir / "trials.txt"
    with atomic_path(trials) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return trials


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data_prep.trials", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="utterance manifest CSV of held-out speakers")
    parser.add_argument("--out", required=True, help="output folder for segments/ and trials.txt")
    parser.add_argument("--segment-s", type=float, default=2.0, help="segment length in seconds (default 2)")
    parser.add_argument("--per-speaker", type=int, default=6, help="most segments kept per speaker (default 6)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="sample rate of the segments in Hz")
    parser.add_argument("--seed", type=int, default=0, help="seed of the segment choice")
    args = parser.parse_args(argv)
    skipped = []
    try:
        trials = write_trials(read_manifest(args.manifest), args.out, segment_s=args.segment_s,
                              sample_rate=args.sample_rate, max_segments_per_speaker=args.per_speaker, seed=args.seed,
                              skipped=skipped)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for error in skipped:  # one line each; the other files' trials are written
        print(f"error: {error}", file=sys.stderr)
    print(f"wrote {trials}")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
