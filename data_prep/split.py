"""Speaker-disjoint train/val/test splits of a manifest.

Evaluating speaker embeddings or diarization on speakers seen in training
overstates performance, so splits are made over speakers, never utterances.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def split_speakers(
    manifest: pd.DataFrame, *, val_speakers: int, test_speakers: int, seed: int
) -> dict[str, pd.DataFrame]:
    """Split a manifest into speaker-disjoint train/val/test parts.

    Speakers are sorted, then permuted with ``numpy.random.default_rng(seed)``.
    When a ``gender`` column exists, the permuted speakers are interleaved by
    gender before val and test are taken, so those sets are gender-balanced.

    Args:
        manifest: Utterance manifest with a ``speaker`` column.
        val_speakers: Number of validation speakers (>= 0).
        test_speakers: Number of test speakers (>= 0).
        seed: Seed of the permutation; same seed gives the same split.

    Returns:
        ``{"train": df, "val": df, "test": df}``, rows in manifest order.

    Raises:
        ValueError: Negative counts, or too few speakers to leave one for
            training.
    """
    if val_speakers < 0 or test_speakers < 0:
        raise ValueError(
            f"speaker counts must be >= 0, got val={val_speakers}, test={test_speakers}"
        )
    speakers = np.array(sorted(manifest["speaker"].astype(str).unique()), dtype=object)
    if val_speakers + test_speakers >= len(speakers):
        raise ValueError(
            f"need more than val+test={val_speakers + test_speakers} speakers "
            f"to keep one for training, found {len(speakers)}"
        )
    order = list(speakers[np.random.default_rng(seed).permutation(len(speakers))])
    if "gender" in manifest.columns:
        order = _interleave_by_gender(order, manifest)
    held_out = {
        "val": set(order[:val_speakers]),
        "test": set(order[val_speakers : val_speakers + test_speakers]),
    }
    speaker_col = manifest["speaker"].astype(str)
    parts = {
        "train": manifest[~speaker_col.isin(held_out["val"] | held_out["test"])],
        "val": manifest[speaker_col.isin(held_out["val"])],
        "test": manifest[speaker_col.isin(held_out["test"])],
    }
    return {name: part.reset_index(drop=True) for name, part in parts.items()}


def _interleave_by_gender(order: list[str], manifest: pd.DataFrame) -> list[str]:
    """Round-robin over genders, keeping each gender's permuted order."""
    gender_of = (
        manifest.assign(speaker=manifest["speaker"].astype(str))
        .groupby("speaker")["gender"]
        .first()
        .fillna("?")
        .astype(str)
    )
    groups: dict[str, list[str]] = {}
    for speaker in order:
        groups.setdefault(gender_of[speaker], []).append(speaker)
    queues = [groups[gender] for gender in sorted(groups)]
    interleaved = []
    for rank in range(max(len(queue) for queue in queues)):
        interleaved.extend(queue[rank] for queue in queues if rank < len(queue))
    return interleaved
