"""Command line: scan a corpus and write speaker-disjoint manifests.

``python -m data_prep --format librispeech --root data/LibriSpeech --out data/manifests``
writes ``all.csv``, ``train.csv``, ``val.csv`` and ``test.csv`` to ``--out``.

Every file is decoded once, so truncated files and NaN samples are caught here
rather than during training. A file that cannot be used is reported on one
``error:`` line and left out; the manifests of the rest are written and the
exit code is 1. Nothing under ``--root`` is ever written.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from data_prep.audio import atomic_path
from data_prep.manifest import scan_folders, scan_librispeech, write_manifest
from data_prep.split import split_speakers

_SCANNERS = {"librispeech": scan_librispeech, "folders": scan_folders}


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
        choices=sorted(_SCANNERS),
        help="librispeech: <root>/<split>/<speaker>/<chapter>/*.flac; "
        "folders: <root>/<speaker>/**/*.wav|flac",
    )
    parser.add_argument("--root", required=True, type=Path, help="corpus folder (read only)")
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
    if args.root.exists() and not args.root.is_dir():
        return _fail(f"{args.root}: not a directory")
    if not args.root.is_dir():
        return _fail(f"{args.root}: no such directory")
    if args.out.resolve().is_relative_to(args.root.resolve()):
        return _fail(f"{args.out}: must not be inside the corpus folder {args.root}")
    if args.out.exists() and not args.out.is_dir():
        return _fail(f"{args.out}: not a directory")
    try:
        manifest = _SCANNERS[args.format](args.root, verify=not args.headers_only)
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
    _print_summary(tables, skipped, args.out)
    return 1 if skipped else 0


def _fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _print_summary(tables: dict, skipped: list, out: Path) -> None:
    print(f"{'split':<6}{'speakers':>10}{'utterances':>12}{'hours':>8}")
    for name, table in tables.items():
        hours = table["duration_s"].sum() / 3600
        print(f"{name:<6}{table['speaker'].nunique():>10}{len(table):>12}{hours:>8.2f}")
    print(f"skipped files: {len(skipped)}" + (" (reported above)" if skipped else ""))
    print(f"manifests written to {out}")


if __name__ == "__main__":
    sys.exit(main())
