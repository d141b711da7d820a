"""Corpus adapters: other layouts of speech data, read into the one utterance manifest.

Each ``scan_*`` function takes the corpus (a folder, or for a user's list a CSV/TSV
file), reads it without writing anything, and returns the manifest of
`data_prep.manifest` (``path, speaker, duration_s, sample_rate`` and optional
columns), sorted by speaker, with unusable inputs listed as ``(path, reason)`` in
``df.attrs["skipped"]``. Rows that are a segment of a file carry ``start_s`` and
``end_s`` (seconds into the file; ``duration_s`` is then the segment's length), and
every stage that loads audio reads only the segment.

- ``voxceleb``: ``<root>/<speaker id>/<video id>/<n>.wav|m4a`` (VoxCeleb 1 and 2).
  m4a is decoded on the fly by ffmpeg (`data_prep.audio`), never converted: the
  corpus is only read and no second copy is made.
- ``manifest``: a CSV or TSV file with a header naming ``path, speaker`` and
  optionally ``start, end`` (seconds; a segment of the file).
- ``rttm``: recordings with who-spoke-when references (AMI, VoxConverse, DIHARD):
  every speaker turn becomes a training segment, minus overlapped speech, within
  the scored regions of an optional ``.uem``, and only if it lasts ``min_duration_s``.

`SCANNERS` maps each ``--format`` / ``data.format`` name to its scanner.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from pyannote.core import Annotation, Segment, Timeline
from tqdm import tqdm

from data_prep.audio import FFMPEG_SUFFIXES, AudioError, AudioInfo, audio_info, check_audio, needs_ffmpeg, require_decoders
from data_prep.manifest import _build_manifest, _check_root, scan_folders, scan_librispeech
from data_prep.rttm import read_rttm

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", *FFMPEG_SUFFIXES)

# A user's segment may end this far past the end of its file (rounding in another tool); it is then clipped.
_END_TOLERANCE_S = 0.01


def scan_voxceleb(root: str | os.PathLike, *, verify: bool = False) -> pd.DataFrame:
    """Build a manifest from VoxCeleb 1 or 2: ``<speaker id>/<video id>/<n>.wav|m4a`` (or flac).

    The speaker folders may sit at any depth under ``root`` (``vox1_dev_wav/wav/``,
    ``vox2_dev_aac/dev/aac/``, or both under one folder): every audio file two
    folders deep is taken, its grandparent folder naming the speaker and its parent
    the video (column ``video``). Genders come from ``vox1_meta.csv`` or
    ``vox2_meta.csv`` in ``root`` or a folder above it, when present.

    Args:
        root: Folder holding the speaker folders, at any depth.
        verify: Decode every file in full (see `data_prep.manifest.scan_librispeech`).

    Returns:
        Manifest sorted by (speaker, path) with a ``video`` column, plus ``gender``
        when a meta file was found; unreadable files in ``df.attrs["skipped"]``.

    Raises:
        ValueError: ``root`` is not a folder, holds no usable audio, or holds m4a
            files while ffmpeg is not installed (one line naming a file and ffmpeg).
    """
    root = _check_root(root)
    files = [file for file in sorted(root.rglob("*"))
             if file.suffix.lower() in AUDIO_SUFFIXES and len(file.relative_to(root).parts) >= 3
             and file.is_file()]
    _require_decoders_for(files)
    entries = [(file, file.parent.parent.name, {"video": file.parent.name}) for file in files]
    df = _build_manifest(entries, root, verify)
    genders = _read_voxceleb_genders(root)
    if genders:
        df.insert(4, "gender", df["speaker"].map(genders))
    return df


def scan_user_manifest(path: str | os.PathLike, *, verify: bool = False) -> pd.DataFrame:
    """Build a manifest from a user's CSV or TSV list of files.

    The first line must be a header naming the columns ``path`` and ``speaker``
    and optionally ``start`` and ``end`` (or ``start_s``, ``end_s``), in seconds:
    a row with either is the segment ``[start, end)`` of its file (``start``
    defaults to 0 and ``end`` to the end of the file); a row with neither is the
    whole file. A ``gender`` column is kept; other columns are ignored (a
    manifest written by ``python -m data_prep`` reads back as it was). The
    delimiter is a tab for ``.tsv``/``.tab`` files and a comma otherwise, unless
    the header line holds only another of tab, comma, semicolon or bar; relative
    paths are taken from the list's own folder.

    Args:
        path: The CSV/TSV file.
        verify: Decode every file in full (see `data_prep.manifest.scan_librispeech`).

    Returns:
        Manifest sorted by (speaker, path, start), with ``start_s``/``end_s``
        when some row is a segment. Each rejected row is in ``df.attrs["skipped"]``
        as ``(path or "<list>:<line>", reason)``, the reason naming list and line.

    Raises:
        ValueError: Missing or unparsable list, no header with ``path`` and
            ``speaker``, or no usable row.
    """
    source = Path(path)
    if source.is_dir():
        raise ValueError(f"{source}: is a directory; give the CSV/TSV manifest file")
    if not source.is_file():
        raise ValueError(f"{source}: no such file")
    table = _read_table(source)
    columns = {str(name).strip().lower(): name for name in table.columns}
    if "path" not in columns or "speaker" not in columns:
        found = ", ".join(str(name) for name in table.columns)
        raise ValueError(f"{source}: the first line must be a header naming the columns path and speaker "
                         f"(and optionally start, end); found: {found}")
    names = ("path", "speaker", "start", "end", "gender")
    picked = [columns.get(name, columns.get(f"{name}_s")) for name in names]
    cells = [table[column] if column is not None else [""] * len(table) for column in picked]
    inspect = _Inspector(verify)
    rows, skipped = [], []
    records = tqdm(zip(*cells), total=len(table), desc="reading manifest", unit="row", disable=None)
    for index, values in enumerate(records):
        where = f"{source}:{index + 2}"  # line 1 is the header
        # A short line leaves NaN in its last cells: read as empty.
        audio, speaker, start_text, end_text, gender = (value.strip() if isinstance(value, str) else ""
                                                        for value in values)
        if not audio or not speaker:
            skipped.append((where, f"{where}: empty path or speaker"))
            continue
        try:
            start = _seconds(start_text, "start")
            end = _seconds(end_text, "end")
        except ValueError as error:
            skipped.append((where, f"{where}: {error}"))
            continue
        file = Path(audio) if Path(audio).is_absolute() else source.parent / audio
        try:
            info = inspect(file)
        except AudioError as error:
            if inspect.first_failure(file):  # one report per file, however many rows name it
                skipped.append((str(file), f"{where}: {error}"))
            continue
        row = {"path": str(file), "speaker": speaker, "duration_s": info.duration_s, "sample_rate": info.sample_rate,
               "start_s": np.nan, "end_s": np.nan}
        if start is not None or end is not None:
            start, end = start or 0.0, info.duration_s if end is None else end
            reason = _segment_problem(start, end, info)
            if reason:
                skipped.append((where, f"{where}: {file}: {reason}"))
                continue
            end = min(end, info.duration_s)
            row.update(start_s=start, end_s=end, duration_s=end - start)
        if picked[-1] is not None:
            row["gender"] = gender or np.nan
        rows.append(row)
    return _finish(rows, skipped, source, sort=["speaker", "path", "start_s"])


def scan_rttm(root: str | os.PathLike, *, verify: bool = False, min_duration_s: float = 1.0,
              global_speakers: bool = False) -> pd.DataFrame:
    """Build a manifest of speaker turns from recordings annotated with RTTM.

    Under ``root`` (searched recursively) lie audio files and ``.rttm`` files whose
    file ids are the audio files' stems, and optionally ``.uem`` files
    (``<uri> <channel> <start> <end>``) that limit each recording to its scored
    regions. For each recording and speaker, the speaker's turns (merged where
    they touch) are cut to the scored regions and the file's length, the
    stretches where two or more speakers talk are cut out, and each remaining
    piece of at least ``min_duration_s`` becomes a row: a segment of the file.

    Args:
        root: Folder holding the audio, RTTM and UEM files.
        verify: Decode every recording in full (see `data_prep.manifest.scan_librispeech`).
        min_duration_s: Shortest piece kept, in seconds: the model's window
            (shorter crops would be zero-padded).
        global_speakers: Speaker labels name the same person in every recording
            (as in AMI's); by default they are only unique within a recording,
            and the speaker becomes ``<uri>/<label>``.

    Returns:
        Manifest sorted by (speaker, path, start_s) with ``start_s``, ``end_s`` and
        ``recording``; ``df.attrs["skipped"]`` lists unusable RTTM, UEM and audio
        files and recordings without audio; ``df.attrs["excluded"]`` gives the
        seconds of overlapped speech cut out (``overlap_s``, counted once however
        many talk), of speaker time outside the scored regions or the audio
        (``unscored_s``), the pieces too short (``short_pieces``, ``short_s``:
        speaker time) and the audio files no RTTM mentions (``unannotated_files``).

    Raises:
        ValueError: ``root`` is not a folder, holds no RTTM file, ``min_duration_s``
            is not positive, or no turn is usable.
    """
    root = _check_root(root)
    if not min_duration_s > 0:
        raise ValueError(f"min_duration_s must be > 0, got {min_duration_s}")
    everything = sorted(root.rglob("*"))
    audio_of: dict[str, list[Path]] = {}
    for file in everything:
        if file.suffix.lower() in AUDIO_SUFFIXES and file.is_file():
            audio_of.setdefault(file.stem, []).append(file)
    rttm_files = [file for file in everything if file.suffix.lower() == ".rttm" and file.is_file()]
    if not rttm_files:
        raise ValueError(f"{root}: no .rttm files found")
    skipped: list[tuple[str, str]] = []
    annotations = _read_annotations(rttm_files, skipped)
    scored_regions = _read_uems([file for file in everything if file.suffix.lower() == ".uem" and file.is_file()],
                                skipped)
    inspect = _Inspector(verify)
    excluded = {"overlap_s": 0.0, "unscored_s": 0.0, "short_pieces": 0, "short_s": 0.0,
                "unannotated_files": sum(len(files) for stem, files in audio_of.items() if stem not in annotations)}
    rows = []
    for uri, (annotation, rttm) in tqdm(sorted(annotations.items()), desc="reading recordings", unit="recording",
                                        disable=None):
        files = audio_of.get(uri, [])
        if len(files) != 1:
            problem = "no audio file" if not files else f"{len(files)} audio files ({', '.join(map(str, files))})"
            skipped.append((uri, f"{rttm}: recording {uri}: {problem} named {uri}.wav|flac|m4a under {root}"))
            continue
        try:
            info = inspect(files[0])
        except AudioError as error:
            skipped.append((str(files[0]), str(error)))
            continue
        scored = Timeline([Segment(0.0, info.duration_s)], uri=uri)
        if uri in scored_regions:
            scored = scored_regions[uri].crop(scored)
        overlap = annotation.get_overlap()
        excluded["overlap_s"] += overlap.crop(scored).duration()
        for label in sorted(annotation.labels(), key=str):
            turns = annotation.label_support(label)
            inside = turns.crop(scored)
            pieces = inside.extrude(overlap)
            excluded["unscored_s"] += turns.duration() - inside.duration()
            for piece in pieces:
                start, end = _inward_to_ms(piece.start, piece.end)
                if end - start < min_duration_s - 1e-9:  # 5.3 - 4.3 is a 1 s piece, not 0.9999999999999996
                    excluded["short_pieces"] += 1
                    excluded["short_s"] += piece.duration
                    continue
                rows.append({"path": str(files[0]), "speaker": f"{label}" if global_speakers else f"{uri}/{label}",
                             "duration_s": round(end - start, 3), "sample_rate": info.sample_rate,
                             "start_s": start, "end_s": end, "recording": uri})
    if not rows and not skipped:
        raise ValueError(f"{root}: no speaker turn of {min_duration_s:g} s or more outside overlapped speech")
    df = _finish(rows, skipped, root, sort=["speaker", "path", "start_s"])
    df.attrs["excluded"] = excluded
    return df


SCANNERS = {
    "librispeech": scan_librispeech,
    "voxceleb": scan_voxceleb,
    "folders": scan_folders,
    "manifest": scan_user_manifest,
    "rttm": scan_rttm,
}


class _Inspector:
    """`audio_info` (or `check_audio`) of each file once, however many rows name it."""

    def __init__(self, verify: bool):
        self.read = check_audio if verify else audio_info
        self.seen: dict[Path, AudioInfo | AudioError] = {}
        self.reported: set[Path] = set()

    def __call__(self, file: Path) -> AudioInfo:
        if file not in self.seen:
            try:
                self.seen[file] = self.read(file)
            except AudioError as error:
                logger.debug("skipping %s", error)
                self.seen[file] = error
        if isinstance(self.seen[file], AudioError):
            raise self.seen[file]
        return self.seen[file]

    def first_failure(self, file: Path) -> bool:
        """True the first time a failed file is asked about, so it is reported once."""
        if file in self.reported:
            return False
        self.reported.add(file)
        return True


def _finish(rows: list[dict], skipped: list, source: Path, sort: list[str]) -> pd.DataFrame:
    """The sorted manifest of ``rows`` (segment columns only if some row is a segment)."""
    if not rows and skipped:
        raise ValueError(f"{source}: nothing usable; all {len(skipped)} inputs were rejected, e.g. {skipped[0][1]}")
    if not rows:
        raise ValueError(f"{source}: no speakers found")
    df = pd.DataFrame(rows)
    if "start_s" in df.columns and df["start_s"].isna().all():
        df = df.drop(columns=["start_s", "end_s"])
    df = df.sort_values([key for key in sort if key in df.columns], ignore_index=True, na_position="first")
    df.attrs["skipped"] = skipped
    return df


def _require_decoders_for(files: list[Path]) -> None:
    """One clear error up front, rather than one per file, when m4a files meet a missing ffmpeg."""
    needing = [file for file in files if needs_ffmpeg(file)]
    if needing:
        try:
            require_decoders(needing[0])
        except AudioError as error:
            raise ValueError(f"{error} (needed for {len(needing)} file(s))") from None


def _read_voxceleb_genders(root: Path) -> dict[str, str]:
    """Map speaker id -> 'F'/'M' from vox1_meta.csv / vox2_meta.csv in ``root`` or up to 3 folders above."""
    genders = {}
    for folder in (root, *list(root.resolve().parents)[:3]):
        for table in sorted(folder.glob("vox[12]_meta.[ct]sv")):
            lines = table.read_text(encoding="utf-8", errors="replace").splitlines()
            if not lines:
                continue
            delimiter = "\t" if "\t" in lines[0] else ","
            header = [field.strip().lower() for field in lines[0].split(delimiter)]
            if "gender" not in header:
                continue
            column = header.index("gender")
            for line in lines[1:]:
                fields = [field.strip() for field in line.split(delimiter)]
                if len(fields) > column and fields[0] and fields[column].lower() in ("m", "f"):
                    genders.setdefault(fields[0], fields[column].upper())
        if genders:
            break
    return genders


def _read_table(source: Path) -> pd.DataFrame:
    """The user's list as strings, with its delimiter worked out from the extension and header."""
    preferred = "\t" if source.suffix.lower() in (".tsv", ".tab") else ","
    try:
        with open(source, encoding="utf-8-sig", newline="") as file:
            header = next((line for line in file if line.strip()), "")
    except UnicodeDecodeError:
        raise ValueError(f"{source}: not a text file") from None
    delimiter = next((d for d in (preferred, "\t", ",", ";", "|") if d in header), preferred)
    try:
        return pd.read_csv(source, sep=delimiter, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                           skip_blank_lines=True, quoting=csv.QUOTE_MINIMAL)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"{source}: not a readable CSV/TSV manifest ({reason})") from None


def _seconds(text: str, name: str) -> float | None:
    """A ``start``/``end`` cell in seconds; None when empty (or the column absent)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} {text!r} must be a finite number of seconds >= 0")
    return value


def _segment_problem(start: float, end: float, info: AudioInfo) -> str:
    """Why ``[start, end)`` is not a usable segment of a file described by ``info``; empty if it is."""
    if end <= start:
        return f"segment ends before it starts (start {start:g} s, end {end:g} s)"
    if start >= info.duration_s:
        return f"segment starts after the end of the file (start {start:g} s, file {info.duration_s:.3f} s)"
    if end > info.duration_s + _END_TOLERANCE_S:
        return f"segment ends after the end of the file (end {end:g} s, file {info.duration_s:.3f} s)"
    return ""


def _read_annotations(rttm_files: list[Path], skipped: list) -> dict[str, tuple[Annotation, Path]]:
    """Every recording's turns across all RTTM files, with the (first) RTTM file naming it."""
    annotations: dict[str, tuple[Annotation, Path]] = {}
    for rttm in rttm_files:
        try:
            found = read_rttm(rttm)
        except UnicodeDecodeError:
            skipped.append((str(rttm), f"{rttm}: not a text RTTM file"))
            continue
        except (ValueError, OSError) as error:
            skipped.append((str(rttm), " ".join(str(error).split())))
            continue
        for uri, annotation in found.items():
            if uri not in annotations:
                annotations[uri] = (annotation, rttm)
                continue
            merged = annotations[uri][0]
            for segment, _, label in annotation.itertracks(yield_label=True):
                merged[segment, merged.new_track(segment)] = label
    return annotations


def _read_uems(uem_files: list[Path], skipped: list) -> dict[str, Timeline]:
    """Scored regions per recording from UEM files; an unreadable or malformed one is skipped."""
    from data_prep.rttm import read_uem

    regions: dict[str, list[Segment]] = {}
    for uem in uem_files:
        try:
            found = read_uem(uem)
        except ValueError as error:
            skipped.append((str(uem), " ".join(str(error).split())))
            continue
        for uri, timeline in found.items():
            regions.setdefault(uri, []).extend(timeline)
    return {uri: Timeline(segments, uri=uri).support() for uri, segments in regions.items()}


def _inward_to_ms(start: float, end: float) -> tuple[float, float]:
    """``[start, end]`` rounded inwards to whole milliseconds, so a segment never grows into its neighbours."""
    return math.ceil(round(start * 1000, 6)) / 1000, math.floor(round(end * 1000, 6)) / 1000
