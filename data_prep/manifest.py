"""Utterance manifests: one CSV row per audio file, the input of every stage.

A manifest has the columns ``path, speaker, duration_s, sample_rate`` and
optionally ``gender``, ``chapter``, ``start_s`` and ``end_s``. Paths are stored
exactly as found under the root the caller gave (absolute if the root was
absolute, otherwise relative to the working directory at scan time), so a
manifest written from a relative root must be read from the same working
directory.

A row is a whole file, or with ``start_s``/``end_s`` (seconds into the file) a
segment of one: a speaker turn of a long recording. ``duration_s`` is then the
segment's length, and everything that loads a row's audio reads only the
segment (:func:`utterance_spans`, :func:`load_utterance`). Rows of whole files
leave both empty. The scanners of other corpora are in `data_prep.adapters`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from data_prep.audio import AudioError, atomic_path, audio_info, check_audio, load_audio

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "speaker", "duration_s", "sample_rate")
OPTIONAL_COLUMNS = ("gender", "chapter", "start_s", "end_s")
SEGMENT_COLUMNS = ("start_s", "end_s")
_TEXT_COLUMNS = ("path", "speaker", "gender", "chapter", "video", "recording")
# Rows parsed at a time by read_manifest: the parser's own memory stays bounded on a million-row manifest.
_CHUNK_ROWS = 100_000
_AUDIO_SUFFIXES = (".wav", ".flac")


def scan_librispeech(root: str | os.PathLike, *, verify: bool = False) -> pd.DataFrame:
    """Build a manifest from a LibriSpeech-style corpus.

    Accepts either the corpus root (``<root>/<split>/<speaker>/<chapter>/*.flac``)
    or a split folder (``<root>/<speaker>/<chapter>/*.flac``). Genders come
    from ``SPEAKERS.TXT`` in ``root`` or its parent, when present.

    Args:
        root: Corpus root or split folder.
        verify: Decode every file in full (see :func:`~data_prep.audio.check_audio`)
            instead of reading headers only, so truncated files and NaN samples
            are skipped too. Slower; what training data wants.

    Returns:
        Manifest sorted by (speaker, path) with a ``chapter`` column, plus
        ``gender`` when SPEAKERS.TXT was found. Files that could not be read
        are listed as ``(path, reason)`` in ``df.attrs["skipped"]``.

    Raises:
        ValueError: If ``root`` is not a folder or holds no readable audio.
    """
    root = _check_root(root)
    files = sorted(root.glob("*/*/*/*.flac")) or sorted(root.glob("*/*/*.flac"))
    entries = [(f, f.parent.parent.name, {"chapter": f.parent.name}) for f in files]
    df = _build_manifest(entries, root, verify)
    genders = _read_speaker_genders(root)
    if genders:
        df.insert(4, "gender", df["speaker"].map(genders))
    return df


def scan_folders(root: str | os.PathLike, *, verify: bool = False) -> pd.DataFrame:
    """Build a manifest from ``<root>/<speaker>/**/*.{wav,flac}``.

    The speaker is the first-level folder name; files directly in ``root``
    are ignored. Extensions match case-insensitively.

    Args:
        root: Folder holding one sub-folder per speaker.
        verify: Decode every file in full, as in :func:`scan_librispeech`.

    Returns:
        Manifest sorted by (speaker, path); unreadable files are listed in
        ``df.attrs["skipped"]``.

    Raises:
        ValueError: If ``root`` is not a folder or holds no readable audio.
    """
    root = _check_root(root)
    entries = []
    for file in sorted(root.rglob("*")):
        parts = file.relative_to(root).parts
        if len(parts) >= 2 and file.suffix.lower() in _AUDIO_SUFFIXES and file.is_file():
            entries.append((file, parts[0], {}))
    return _build_manifest(entries, root, verify)


def _check_root(root: str | os.PathLike) -> Path:
    """Return ``root`` as a Path, or raise ValueError if it is not a folder."""
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: not a directory")
    if not path.is_dir():
        raise ValueError(f"{path}: no such directory")
    return path


def _build_manifest(entries: list[tuple[Path, str, dict]], root: Path, verify: bool = False) -> pd.DataFrame:
    """Read each file's header (or all of it) and assemble the sorted manifest."""
    rows, skipped = [], []
    inspect = check_audio if verify else audio_info
    for file, speaker, extra in tqdm(entries, desc="scanning audio", unit="file", disable=None):
        try:
            info = inspect(file)
        except AudioError as exc:  # reported by the caller, from attrs["skipped"]
            logger.debug("skipping %s", exc)
            skipped.append((str(file), str(exc)))
            continue
        rows.append(
            {
                "path": str(file),
                "speaker": speaker,
                "duration_s": info.duration_s,
                "sample_rate": info.sample_rate,
                **extra,
            }
        )
    if not rows and skipped:
        raise ValueError(f"{root}: no usable audio; all {len(skipped)} files were rejected, e.g. {skipped[0][1]}")
    if not rows:
        raise ValueError(f"{root}: no speakers found")
    df = pd.DataFrame(rows).sort_values(["speaker", "path"], ignore_index=True)
    df.attrs["skipped"] = skipped
    return df


def _read_speaker_genders(root: Path) -> dict[str, str]:
    """Map speaker id -> 'F'/'M' from SPEAKERS.TXT in ``root`` or its parent."""
    for folder in (root, root.parent):
        table = folder / "SPEAKERS.TXT"
        if table.is_file():
            break
    else:
        return {}
    genders = {}
    for line in table.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = [field.strip() for field in line.split("|")]
        if line.startswith(";") or len(fields) < 2 or not fields[0]:
            continue
        genders[fields[0]] = fields[1]
    return genders


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a manifest CSV atomically and reproducibly.

    Durations (and segment bounds) are rounded to milliseconds so the same
    manifest always gives byte-identical files. Required columns come first,
    then optional ones, then any others in their existing order.

    Args:
        df: Manifest with at least the required columns.
        path: Destination CSV; parent folders are created.

    Raises:
        ValueError: If a required column is missing.
    """
    missing = [col for col in REQUIRED_COLUMNS if col not in df.columns]
    if missing:
        raise ValueError(f"{path}: manifest lacks columns {missing}")
    known = [*REQUIRED_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in df.columns)]
    out = df[known + [c for c in df.columns if c not in known]].copy()
    for column in ("duration_s", *SEGMENT_COLUMNS):
        if column in out.columns:
            out[column] = out[column].astype(float).round(3)
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False, lineterminator="\n")


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    The file is parsed in chunks of rows, so reading a million-row manifest
    never holds the parser's copy of the whole text besides the table.

    Args:
        path: CSV written by :func:`write_manifest` (or by hand).

    Returns:
        The manifest; text columns (path, speaker, gender, chapter, video,
        recording) as str, ``duration_s`` float, ``sample_rate`` int, and
        ``start_s``/``end_s`` float (NaN for whole files) when present.

    Raises:
        ValueError: Missing or unparsable file, missing columns, empty or
            non-numeric values in required columns, or a segment that ends
            before it starts; the message names the file.
    """
    try:
        chunks = pd.read_csv(path, dtype={col: str for col in _TEXT_COLUMNS}, chunksize=_CHUNK_ROWS)
        with chunks:
            df = pd.concat(list(chunks), ignore_index=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: manifest not found") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a manifest") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"{path}: not a readable manifest CSV ({reason})") from None
    missing = [col for col in REQUIRED_COLUMNS if col not in df.columns]
    if missing:
        raise ValueError(f"{path}: manifest lacks columns {missing}")
    if df[list(REQUIRED_COLUMNS)].isna().any().any():
        raise ValueError(f"{path}: empty values in required columns")
    try:
        df["duration_s"] = pd.to_numeric(df["duration_s"]).astype(float)
        df["sample_rate"] = pd.to_numeric(df["sample_rate"]).astype(int)
        for column in SEGMENT_COLUMNS:
            if column in df.columns:
                df[column] = pd.to_numeric(df[column]).astype(float)
    except (ValueError, TypeError):
        raise ValueError(f"{path}: non-numeric duration_s, sample_rate, start_s or end_s") from None
    if any(column in df.columns for column in SEGMENT_COLUMNS):
        if not set(SEGMENT_COLUMNS) <= set(df.columns):
            raise ValueError(f"{path}: start_s and end_s go together; the manifest has only one of them")
        start, end = df["start_s"], df["end_s"]
        if (start.isna() != end.isna()).any() or (start < 0).any() or (end <= start).any():
            raise ValueError(f"{path}: a segment with start_s < 0, end_s <= start_s, or only one of the two")
    return df


def utterance_spans(manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Where each row's audio lies in its file.

    Args:
        manifest: Utterance manifest, with or without ``start_s``/``end_s``.

    Returns:
        ``(offsets_s, lengths_s)``, float arrays of one value per row: the
        start of the utterance in its file (0 for a whole file) and how much to
        read from there (NaN: to the end of the file).
    """
    if "start_s" not in manifest.columns:
        return np.zeros(len(manifest)), np.full(len(manifest), np.nan)
    start = manifest["start_s"].to_numpy(dtype=float)
    end = manifest["end_s"].to_numpy(dtype=float)
    return np.nan_to_num(start, nan=0.0), end - start


def load_utterance(path: str | os.PathLike, sample_rate: int, offset_s: float = 0.0,
                   length_s: float = float("nan")) -> np.ndarray:
    """One manifest row's audio: the whole file, or only its segment.

    Args:
        path: The row's audio file.
        sample_rate: Output rate in Hz (see :func:`~data_prep.audio.load_audio`).
        offset_s, length_s: The row's span from :func:`utterance_spans`.

    Returns:
        1-D float32 array.
    """
    length = None if np.isnan(length_s) else float(length_s)
    return load_audio(path, sample_rate, start_s=float(offset_s), duration_s=length)
