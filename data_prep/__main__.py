"""Command line: scan a corpus and write speaker-disjoint manifests.

``python -m data_prep --format librispeech --root data/LibriSpeech --out data/manifests``
writes ``all.csv``, ``train.csv``, ``val.csv`` and ``test.csv`` to ``--out`` and
prints a summary (speakers, utterances or segments, hours, minutes per speaker,
what was left out and why). The formats are described in `data_prep.adapters`.

Every file is decoded once, so truncated files and NaN samples are caught here
rather than during training. A file that cannot be used is reported on one
``error:`` line and left out; the manifests of the rest are written and the
exit code is 1. Nothing under ``--root`` (for ``--format manifest``, the list's
folder) is ever written.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from collections import Counter
from pathlib import Path

from data_prep.adapters import SCANNERS
from data_prep.audio import atomic_path
from data_prep.manifest import write_manifest
from data_prep.split import split_speakers

_LAYOUTS = {
    "librispeech": "<root>/<split>/<speaker>/<chapter>/*.flac",
    "voxceleb": "<root>/**/<speaker id>/<video id>/<n>.wav|m4a (m4a needs ffmpeg)",
    "folders": "<root>/<speaker>/**/*.wav|flac",
    "manifest": "--root is a CSV/TSV file with a header path,speaker[,start,end] (seconds); "
                "relative paths are taken from its folder",
    "rttm": "<root>/**/<uri>.wav|flac with <uri> turns in <root>/**/*.rttm (and optional *.uem): "
            "each speaker turn, minus overlapped speech, is a segment",
}


class _UsageError(Exception):
    """Bad command line; reported as one line instead of argparse's usage dump."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _UsageError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m data_prep",
        description="Scan a speech corpus and write speaker-disjoint train/val/test manifests.",
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=list(SCANNERS),
        help="; ".join(f"{name}: {layout}" for name, layout in _LAYOUTS.items()),
    )
    parser.add_argument("--root", required=True, type=Path,
                        help="corpus folder, or the CSV/TSV file for --format manifest (read only)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the manifest CSVs")
    parser.add_argument("--val-speakers", type=int, default=20, help="default 20")
    parser.add_argument("--test-speakers", type=int, default=30, help="default 30")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument(
        "--headers-only",
        action="store_true",
        help="read only each file's header: much faster on a large corpus, but truncated "
        "files and NaN samples are not caught",
    )
    parser.add_argument(
        "--min-duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="rttm only: shortest speaker turn (after cutting out overlapped speech) kept as a "
        "segment; use the model's window (default 1.0)",
    )
    parser.add_argument(
        "--global-speakers",
        action="store_true",
        help="rttm only: speaker labels name the same person in every recording; by default "
        "they are unique only within one and become <uri>/<label>",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 user error)."""
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except _UsageError as exc:
        return _fail(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    options = {}
    if args.format == "rttm":
        options = {"min_duration_s": 1.0 if args.min_duration is None else args.min_duration,
                   "global_speakers": args.global_speakers}
        if not options["min_duration_s"] > 0:
            return _fail(f"--min-duration must be > 0, got {args.min_duration:g}")
    elif args.min_duration is not None or args.global_speakers:
        return _fail("--min-duration and --global-speakers apply only to --format rttm")
    if args.format == "manifest":
        if args.root.is_dir():
            return _fail(f"{args.root}: is a directory; --format manifest takes the CSV/TSV file")
        if not args.root.is_file():
            return _fail(f"{args.root}: no such file")
        corpus = args.root.resolve().parent  # the list's folder: its relative paths, so its audio, are there
    else:
        if args.root.exists() and not args.root.is_dir():
            return _fail(f"{args.root}: not a directory")
        if not args.root.is_dir():
            return _fail(f"{args.root}: no such directory")
        corpus = args.root
    if args.out.resolve().is_relative_to(corpus.resolve()):
        return _fail(f"{args.out}: must not be inside the corpus folder {corpus}")
    if args.out.exists() and not args.out.is_dir():
        return _fail(f"{args.out}: not a directory")
    try:
        manifest = SCANNERS[args.format](args.root, verify=not args.headers_only, **options)
        try:
            parts = split_speakers(
                manifest,
                val_speakers=args.val_speakers,
                test_speakers=args.test_speakers,
                seed=args.seed,
            )
        except ValueError as exc:
            raise ValueError(f"{args.root}: {exc}") from None
        tables = {"all": manifest, **parts}
        # Write every CSV to a temp file first so a failure leaves none behind.
        with contextlib.ExitStack() as stack:
            for name, table in tables.items():
                write_manifest(table, stack.enter_context(atomic_path(args.out / f"{name}.csv")))
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    skipped = manifest.attrs.get("skipped", [])
    for _, reason in skipped:
        _fail(reason)
    _print_summary(tables, skipped, args.out, manifest.attrs.get("excluded"), options.get("min_duration_s"))
    return 1 if skipped else 0


def _fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _print_summary(tables: dict, skipped: list, out: Path, excluded: dict | None = None,
                   min_duration_s: float | None = None) -> None:
    rows = "segments" if "start_s" in tables["all"].columns else "utterances"
    print(f"{'split':<6}{'speakers':>10}{rows:>12}{'hours':>8}")
    for name, table in tables.items():
        hours = table["duration_s"].sum() / 3600
        print(f"{name:<6}{table['speaker'].nunique():>10}{len(table):>12}{hours:>8.2f}")
    minutes = tables["all"].groupby("speaker")["duration_s"].sum() / 60
    print(f"minutes per speaker (all): min {minutes.min():.2f}, median {minutes.median():.2f}, max {minutes.max():.2f}")
    if excluded is not None:
        print(f"left out of speaker turns: {excluded['overlap_s']:.1f} s of overlapped speech, "
              f"{excluded['short_pieces']} pieces shorter than {min_duration_s:g} s ({excluded['short_s']:.1f} s), "
              f"{excluded['unscored_s']:.1f} s outside the scored regions (UEM) or the audio; "
              f"audio files without RTTM turns: {excluded['unannotated_files']}")
    causes = Counter(_cause(reason) for _, reason in skipped)
    print(f"skipped files: {len(skipped)}" + (" (reported above)" if skipped else ""))
    for cause, count in causes.most_common():
        print(f"  {count:>6}  {cause}")
    print(f"manifests written to {out}")


def _cause(reason: str) -> str:
    """What went wrong, without the file, line and details: ``x.wav: not a readable audio file (...)`` -> the middle."""
    return re.sub(r"\s*\([^()]*\)", "", reason).rsplit(": ", 1)[-1]


if __name__ == "__main__":
    sys.exit(main())
