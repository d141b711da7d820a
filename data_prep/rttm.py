"""RTTM files: the interchange format of who-spoke-when references and hypotheses.

Inside the project a diarization is a `pyannote.core.Annotation`; RTTM is only
read and written at the edges, here.
"""

from __future__ import annotations

import os

from pyannote.core import Annotation, Segment

from data_prep.audio import atomic_path


def write_rttm(annotation: Annotation, path: str | os.PathLike) -> None:
    """Write an annotation as RTTM, atomically.

    Args:
        annotation: Annotation whose ``uri`` becomes the RTTM file id.
        path: Destination file; parent folders are created.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as file:
            annotation.write_rttm(file)


def read_rttm(path: str | os.PathLike) -> dict[str, Annotation]:
    """Read the SPEAKER lines of an RTTM file.

    Args:
        path: RTTM file (``SPEAKER <uri> 1 <start> <dur> <NA> <NA> <spk> ...``).

    Returns:
        One Annotation per file id, in order of appearance.

    Raises:
        ValueError: A malformed SPEAKER line; the message names file and line.
    """
    annotations: dict[str, Annotation] = {}
    with open(path, encoding="utf-8") as file:
        for line_no, line in enumerate(file, start=1):
            fields = line.split()
            if not fields or fields[0] != "SPEAKER":
                continue
            try:
                uri, speaker = fields[1], fields[7]
                start_s, dur_s = float(fields[3]), float(fields[4])
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{line_no}: malformed RTTM line") from None
            annotation = annotations.setdefault(uri, Annotation(uri=uri))
            annotation[Segment(start_s, start_s + dur_s), len(annotation)] = speaker
    return annotations


def read_uem(path: str | os.PathLike) -> dict:
    """Scored regions per file id from a UEM file (``<uri> <channel> <start> <end>`` lines).

    Raises:
        ValueError: Unreadable file or a malformed line (named with its number).
    """
    from pyannote.core import Segment, Timeline

    found: dict[str, list] = {}
    try:
        with open(path, encoding="utf-8") as file:
            for line_no, line in enumerate(file, start=1):
                fields = line.split()
                if not fields or fields[0].startswith(";"):
                    continue
                try:
                    found.setdefault(fields[0], []).append(Segment(float(fields[2]), float(fields[3])))
                except (IndexError, ValueError):
                    raise ValueError(f"{path}:{line_no}: malformed UEM line") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text UEM file") from None
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror or error}") from None
    return {uri: Timeline(segments, uri=uri).support() for uri, segments in found.items()}
