"""Score speaker-verification trials: one distance per pair of files (lower = more alike).

    python -m experiments.verify --trials trials.txt --out scores.txt [--model M]

Each trial line is `<path1> <path2>`, optionally followed by more columns (a
label, say). Each output line repeats the input line and appends the distance
between the two files' embeddings. Blank lines and lines starting with `#` are
copied unchanged. Every unreadable file is reported on its own line (all files
are tried), and the run then exits 1 without writing an output: a scores file
missing some trials would silently skew an EER computed from it. A file with no
detected speech (e.g. digital silence) is scored over its whole length, with a
warning, since its distance says little.
"""

import argparse
import sys
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)


def read_trials(path):
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a trials file")
    if not path.is_file():
        raise ValueError(f"{path}: trials file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    trials = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            trials.append((line, None))
        elif len(fields) < 2:
            raise ValueError(f"{path}:{number}: expected '<path1> <path2> [more columns]'")
        else:
            trials.append((line, (fields[0], fields[1])))
    return trials


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", required=True, help="trial list: '<path1> <path2> [more columns]' per line")
    parser.add_argument("--out", required=True, help="output file: each trial line plus its distance")
    parser.add_argument("--model", help="embedding tower .keras (default: the shipped model)")
    args = parser.parse_args(argv)
    from data_prep.audio import AudioError, atomic_path, load_audio
    from data_prep.vad import speech_regions
    from siamese.diarizer import Diarizer

    out = Path(args.out)
    try:
        if out.is_dir():
            raise ValueError(f"{out}: is a directory, not an output file")
        if args.model and Path(args.model).is_dir():
            raise ValueError(f"{args.model}: is a directory, not a model file")
        trials = read_trials(args.trials)
        diarizer = Diarizer.load(args.model)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    import numpy as np
    from tqdm import tqdm

    embeddings, failed, output = {}, set(), []
    settings = diarizer.settings
    paths = sorted({path for _, pair in trials if pair for path in pair})
    for path in tqdm(paths, desc="embedding", unit="file", disable=not sys.stderr.isatty()):
        try:
            audio = load_audio(path, settings.sample_rate)  # decoded once; both calls below scale a copy
            if not speech_regions(diarizer.load_audio(audio), settings.sample_rate, **settings.vad):
                print(f"warning: {path}: no speech found; scored over the whole file", file=sys.stderr)
            embeddings[path] = diarizer.embed_utterance(audio)
        except AudioError as error:  # already "<path>: <problem>"
            print(f"error: {error}", file=sys.stderr)
            failed.add(path)
    if failed:
        return 1
    for line, pair in trials:
        if pair is None:
            output.append(line)
        else:
            distance = float(np.linalg.norm(embeddings[pair[0]] - embeddings[pair[1]]))
            output.append(f"{line.rstrip()} {distance:.6f}")
    try:
        with atomic_path(out) as tmp:
            Path(tmp).write_text("".join(f"{line}\n" for line in output))
    except OSError as error:
        print(f"error: {out}: cannot write ({' '.join(str(error).split())})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
