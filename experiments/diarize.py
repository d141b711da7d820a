"""Diarize recordings: write who spoke when as one RTTM file per input.

    python -m experiments.diarize meeting.wav call.flac --out-dir rttm/ [--model M] [--num-speakers N]

Writes `DIR/<stem>.rttm` for each input, the RTTM file id being the stem (blanks
become underscores, as RTTM fields are space-separated). Any
sample rate, mono or multi-channel, wav or flac. Without `--model` the shipped
model in `models/` is used. A bad input is reported on one line and skipped,
the other inputs are still diarized, and the exit code is then 1. A recording
with no speech (e.g. digital silence) gives an empty RTTM and a warning. Each
RTTM is written to a temporary file and renamed: never half an output.
"""

import argparse
import logging
import re
import sys
import time
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)

logger = logging.getLogger("experiments.diarize")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.diarize", description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", nargs="+", help="audio files to diarize")
    parser.add_argument("--out-dir", required=True, help="folder for the <stem>.rttm outputs (created)")
    parser.add_argument("--model", help="embedding tower .keras with its .json sidecar (default: the shipped model)")
    parser.add_argument("--num-speakers", type=int, help="number of speakers, if known (default: estimated)")
    parser.add_argument("--verbose", action="store_true", help="log each step")
    args = parser.parse_args(argv)
    if args.num_speakers is not None and args.num_speakers < 1:
        parser.error("--num-speakers must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    from data_prep.audio import AudioError
    from data_prep.rttm import write_rttm
    from siamese.diarizer import Diarizer

    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: {out_dir}: not a directory", file=sys.stderr)
        return 1
    if args.model and Path(args.model).is_dir():
        print(f"error: {args.model}: is a directory, not a model file", file=sys.stderr)
        return 1
    try:
        diarizer = Diarizer.load(args.model)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    failures, written = 0, {}
    for path in args.audio:
        if Path(path).stem in written:  # one output per stem: never overwrite an earlier input's result
            print(f"error: {path}: same output name as {written[Path(path).stem]}; skipped", file=sys.stderr)
            failures += 1
            continue
        started = time.perf_counter()
        output = out_dir / f"{Path(path).stem}.rttm"
        try:
            # RTTM fields are space-separated, so a stem's blanks become underscores in the file id.
            uri = re.sub(r"\s", "_", Path(path).stem)
            annotation = diarizer.diarize(path, num_speakers=args.num_speakers, uri=uri)
            write_rttm(annotation, output)
        except AudioError as error:  # already "<path>: <problem>"
            print(f"error: {error}", file=sys.stderr)
            failures += 1
            continue
        except (OSError, ValueError) as error:  # e.g. an unwritable output folder
            print(f"error: {path}: {' '.join(str(error).split())}", file=sys.stderr)
            failures += 1
            continue
        written[Path(path).stem] = path  # only a written result blocks a later input of the same stem
        logger.info("%s: %d speakers, %.1f s -> %s", path, len(annotation.labels()), time.perf_counter() - started, output)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
