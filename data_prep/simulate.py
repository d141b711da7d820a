"""Simulated multi-speaker conversations for diarization evaluation.

Single-speaker corpora such as LibriSpeech have no conversations, so we build
them: turns cut from held-out speakers' utterances, placed one after another
with pauses and occasional overlaps, and mixed. The reference (RTTM) is exact
because we know where every turn was placed, and, by default, where inside each
turn the speaker pauses: pauses of 0.3 s or more in the clean source utterance
(``energy_vad``) are not speech, the convention of corpora annotated from word
alignments, so a speech detector that finds them is not counted as missing speech.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pyannote.core import Annotation, Segment
from tqdm import tqdm

from data_prep.augment import DRR_DB, coloured_noise, reverberate, room_impulse_response
from data_prep.audio import AudioError, atomic_path, normalize_level, write_wav
from data_prep.manifest import load_utterance, read_manifest, utterance_spans
from data_prep.rttm import write_rttm
from data_prep.vad import energy_vad

logger = logging.getLogger(__name__)

_FADE_S = 0.005  # ramp at turn edges so cuts inside speech do not click
_PEAK = 0.9  # peak level of the final mix
_MAX_ATTEMPTS = 20  # speaker draws tried per conversation before giving up


class NotEnoughSpeechError(ValueError):
    """The drawn speakers cannot give every speaker two turns."""


@dataclass
class _SpeakerStream:
    """One speaker's utterances, consumed in order as speech-trimmed turns."""

    utterances: list[tuple[str, float, float]]  # (path, offset_s, length_s): see data_prep.manifest.utterance_spans
    sample_rate: int
    min_piece: int  # shortest speech remainder (samples) worth starting a turn on
    utterance: int = -1
    position: int = 0
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def next_turn(self, length: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Cut the next turn of about ``length`` samples; None when out of audio.

        The turn starts at the next speech onset. Its end is ``length`` samples
        later if that falls inside speech, otherwise the end of the last speech
        region before it, so both boundaries lie on speech.

        Returns:
            ``(audio, speech)``: the turn's samples and its speech regions as
            ``(start, end)`` sample offsets into it, shape ``(regions, 2)``.
        """
        while True:
            k = int(np.searchsorted(self.ends, self.position + self.min_piece))
            if k < len(self.ends):
                break
            if not self._load_next():
                return None
        start = max(int(self.starts[k]), self.position)
        target = start + length
        j = int(np.searchsorted(self.ends, target))
        inside = j < len(self.ends) and self.starts[j] < target
        end = target if inside else int(self.ends[j - 1])
        self.position = end
        last = j + 1 if inside else j
        speech = np.clip(np.stack([self.starts[k:last], self.ends[k:last]], axis=1) - start, 0, end - start)
        return self.audio[start:end].copy(), speech[speech[:, 1] > speech[:, 0]]

    def _load_next(self) -> bool:
        """Load the next utterance and its speech regions; False if none left."""
        self.utterance += 1
        if self.utterance >= len(self.utterances):
            return False
        path, offset_s, length_s = self.utterances[self.utterance]
        self.audio = normalize_level(load_utterance(path, self.sample_rate, offset_s, length_s))
        regions = np.array(energy_vad(self.audio, self.sample_rate), dtype=float).reshape(-1, 2)
        samples = np.round(regions * self.sample_rate).astype(np.int64)
        self.starts, self.ends = samples[:, 0], samples[:, 1]
        self.position = 0
        return True


def simulate_conversation(
    manifest: pd.DataFrame,
    *,
    num_speakers: int,
    sample_rate: int = 16000,
    rng: np.random.Generator,
    min_turn_s: float = 1.5,
    max_turn_s: float = 5.0,
    pause_s: tuple[float, float] = (0.1, 0.8),
    overlap_prob: float = 0.1,
    overlap_s: tuple[float, float] = (0.2, 0.8),
    max_duration_s: float = 60.0,
    level_db_range: tuple[float, float] = (-6.0, 6.0),
    noise_snr_db: tuple[float, float] | None = (10.0, 30.0),
    reference: str = "turns",
    reverb_rt60_s: tuple[float, float] | None = None,
    reverb_drr_db: tuple[float, float] = DRR_DB,
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Simulate one conversation between distinct speakers of a manifest.

    Only speakers with at least ``2 * max_turn_s`` of audio are drawn. Each
    speaker's utterances (shuffled, loaded lazily at ``sample_rate`` and
    level-normalised) are consumed as turns whose drawn length lies in
    ``[min_turn_s, max_turn_s]``, then trimmed so both edges are speech
    (``energy_vad``); a trimmed turn can therefore be shorter. The next
    speaker is a random one among those other than the current speaker with
    the fewest turns. Turns follow each other after a random pause, or with
    probability ``overlap_prob`` start ``overlap_s`` before the previous one
    ends (at most two speakers overlap). The conversation stops when the next
    speaker runs out of audio or the next turn would pass ``max_duration_s``.
    Speakers differ in level, and a stationary background noise (white, pink
    or brown, drawn per conversation) is added under the whole recording, so
    silences are not digital zeros and the speech detector has work to do.
    With ``reverb_rt60_s`` the conversation happens in one room (its
    reverberation time drawn per conversation) and each speaker stands
    somewhere else in it (their own response and direct-to-reverberant ratio,
    :func:`data_prep.augment.room_impulse_response`); the references still mark
    the dry speech, as annotators mark what was said, not its echo.

    Args:
        manifest: Utterance manifest (``path``, ``speaker``, ``duration_s``).
        num_speakers: Number of distinct speakers, >= 2.
        sample_rate: Output sample rate in Hz.
        rng: Source of all randomness.
        min_turn_s: Shortest drawn turn length in seconds.
        max_turn_s: Longest drawn turn length in seconds.
        pause_s: Range of pauses between turns in seconds (also used as
            leading and trailing silence).
        overlap_prob: Probability that a turn overlaps the previous one.
        overlap_s: Range of overlap lengths in seconds.
        max_duration_s: Longest conversation in seconds.
        level_db_range: Range of the random per-speaker gain in dB.
        noise_snr_db: Range of the speech-to-noise ratio in dB (speech power
            over the samples where someone speaks); None adds no noise.
        reference: What the returned segments mark: ``"turns"``, whole turns
            (pauses inside a turn included), or ``"speech"``, each turn's
            speech regions (pauses of 0.3 s or more inside it left out). The
            audio is the same either way.
        reverb_rt60_s: Range of the room's reverberation time in seconds;
            None (the default) keeps the speech dry.
        reverb_drr_db: Range of each speaker's direct-to-reverberant ratio in dB.

    Returns:
        ``(audio, segments)``: float32 mono mix with peak 0.9, and the
        ``(start_s, end_s, speaker)`` of every turn (or speech region), in
        order of start.

    Raises:
        NotEnoughSpeechError: (a ValueError) Too few eligible speakers, or a
            speaker got fewer than two turns.
        AudioError: An utterance could not be loaded.
    """
    if num_speakers < 2:
        raise ValueError(f"num_speakers must be >= 2, got {num_speakers}")
    if reference not in ("turns", "speech"):
        raise ValueError(f"reference must be 'turns' or 'speech', got {reference!r}")
    if not 0 < min_turn_s <= max_turn_s:
        raise ValueError(f"need 0 < min_turn_s <= max_turn_s, got {min_turn_s}, {max_turn_s}")
    totals = manifest.groupby(manifest["speaker"].astype(str))["duration_s"].sum()
    eligible = sorted(totals.index[totals >= 2 * max_turn_s])
    if len(eligible) < num_speakers:
        raise NotEnoughSpeechError(
            f"need {num_speakers} speakers with >= {2 * max_turn_s:g} s of audio, "
            f"found {len(eligible)}"
        )
    speakers = [str(s) for s in rng.choice(eligible, size=num_speakers, replace=False)]
    gains = 10.0 ** (rng.uniform(*level_db_range, size=num_speakers) / 20.0)
    streams = []
    offsets, lengths = utterance_spans(manifest)
    for speaker in speakers:
        rows = np.flatnonzero((manifest["speaker"].astype(str) == speaker).to_numpy())
        utterances = sorted((str(manifest["path"].iat[row]), offsets[row], lengths[row]) for row in rows)
        streams.append(
            _SpeakerStream(
                utterances=[utterances[i] for i in rng.permutation(len(utterances))],
                sample_rate=sample_rate,
                min_piece=int(round(0.25 * sample_rate)),
            )
        )

    def seconds(range_s: tuple[float, float]) -> int:
        return int(round(rng.uniform(*range_s) * sample_rate))

    max_samples = int(max_duration_s * sample_rate)
    placed: list[tuple[int, np.ndarray, int, np.ndarray]] = []  # (start sample, audio, speaker, speech regions)
    counts = [0] * num_speakers
    timeline_end = 0  # end of the last turn (turns always extend the timeline)
    busy_until = 0  # end of all turns before the previous one: no 3-way overlap
    current = -1
    while True:
        others = [k for k in range(num_speakers) if k != current]
        fewest = min(counts[k] for k in others)
        current = int(rng.choice([k for k in others if counts[k] == fewest]))
        turn = streams[current].next_turn(seconds((min_turn_s, max_turn_s)))
        if turn is None:
            break
        chunk, speech = turn
        start = timeline_end + seconds(pause_s)
        if placed and rng.random() < overlap_prob:
            prev_start = placed[-1][0]
            room = timeline_end - max(prev_start, busy_until)
            overlap = min(seconds(overlap_s), room, len(chunk) - 1)
            if overlap >= overlap_s[0] * sample_rate:
                start = timeline_end - overlap
        if start + len(chunk) > max_samples:
            break
        if placed:
            busy_until = max(busy_until, placed[-1][0] + len(placed[-1][1]))
        placed.append((start, _fade(chunk, sample_rate) * gains[current], current, speech))
        counts[current] += 1
        timeline_end = start + len(chunk)

    short = [speakers[k] for k in range(num_speakers) if counts[k] < 2]
    if short:
        raise NotEnoughSpeechError(f"speakers {short} got fewer than 2 turns")
    total = min(timeline_end + seconds(pause_s), max_samples)  # trailing silence
    audio = np.zeros(total, dtype=np.float32)
    active = np.zeros(total, dtype=bool)
    if reverb_rt60_s is None:
        for start, chunk, _, _ in placed:
            audio[start : start + len(chunk)] += chunk
            active[start : start + len(chunk)] = True
    else:
        rt60_s = rng.uniform(*reverb_rt60_s)
        for k in range(num_speakers):  # each speaker's dry track through their own response
            track = np.zeros(total, dtype=np.float32)
            for start, chunk, speaker, _ in placed:
                if speaker == k:
                    track[start : start + len(chunk)] += chunk
                    active[start : start + len(chunk)] = True
            response = room_impulse_response(rt60_s, sample_rate, rng, drr_db=rng.uniform(*reverb_drr_db))
            audio += reverberate(track, response)
    if noise_snr_db is not None:
        speech_power = float(np.mean(audio[active] ** 2))
        noise = coloured_noise(total, exponent=float(rng.choice([0.0, 1.0, 2.0])), rng=rng)
        audio += noise * np.sqrt(speech_power / 10.0 ** (rng.uniform(*noise_snr_db) / 10.0))
    audio *= _PEAK / max(float(np.abs(audio).max()), 1e-9)
    if reference == "turns":
        spans = [(start, [(0, len(chunk))], k) for start, chunk, k, _ in placed]
    else:
        spans = [(start, speech.tolist(), k) for start, _, k, speech in placed]
    segments = [
        ((start + begin) / sample_rate, (start + end) / sample_rate, speakers[k])
        for start, regions, k in spans
        for begin, end in regions
    ]
    return audio, sorted(segments, key=lambda segment: segment[0])


def _fade(chunk: np.ndarray, sample_rate: int) -> np.ndarray:
    """Apply short linear fade-in/out to a turn."""
    n = min(int(_FADE_S * sample_rate), len(chunk) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, endpoint=False, dtype=np.float32)
        chunk[:n] *= ramp
        chunk[-n:] *= ramp[::-1]
    return chunk


def turns_to_annotation(turns: list[tuple[float, float, str]], uri: str) -> Annotation:
    """Convert ``(start_s, end_s, speaker)`` turns to a pyannote Annotation.

    Args:
        turns: Speaker turns in seconds.
        uri: File identifier (used as the RTTM file id).

    Returns:
        Annotation with one track per turn.
    """
    annotation = Annotation(uri=uri)
    for track, (start_s, end_s, speaker) in enumerate(turns):
        annotation[Segment(start_s, end_s), track] = speaker
    return annotation


def write_conversations(
    manifest: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    num_conversations: int,
    seed: int,
    min_speakers: int = 2,
    max_speakers: int = 4,
    sample_rate: int = 16000,
    reference: str = "speech",
    **kwargs,
) -> pd.DataFrame:
    """Write simulated conversations (WAV + RTTM) and an index CSV.

    Conversation ``i`` draws everything from ``default_rng([seed, i])``, so it
    does not depend on the others and the same seed gives byte-identical
    files. Speaker draws that cannot give everyone two turns are retried.

    Args:
        manifest: Utterance manifest of the speakers to use.
        out_dir: Output folder (created): ``conv_000.wav``, ``conv_000.rttm``,
            ..., and ``conversations.csv``.
        num_conversations: Number of conversations.
        seed: Base seed.
        min_speakers: Fewest speakers per conversation (>= 2).
        max_speakers: Most speakers per conversation.
        sample_rate: Sample rate of the WAVs in Hz.
        reference: ``"speech"`` (default: pauses of 0.3 s or more inside a
            turn are not speech) or ``"turns"`` (whole turns); see
            :func:`simulate_conversation`.
        **kwargs: Passed on to :func:`simulate_conversation`.

    Returns:
        The index: ``uri, wav_path, rttm_path, num_speakers, duration_s``.

    Raises:
        ValueError: Bad counts, or a conversation that could not be built.
        AudioError: An utterance could not be loaded.
    """
    if num_conversations < 1:
        raise ValueError(f"num_conversations must be >= 1, got {num_conversations}")
    if not 2 <= min_speakers <= max_speakers:
        raise ValueError(
            f"need 2 <= min_speakers <= max_speakers, got {min_speakers}, {max_speakers}"
        )
    out = Path(out_dir)
    rows = []
    for index in tqdm(range(num_conversations), desc="simulating", unit="conv", disable=None):
        rng = np.random.default_rng([seed, index])
        uri = f"conv_{index:03d}"
        for attempt in range(_MAX_ATTEMPTS):
            num_speakers = int(rng.integers(min_speakers, max_speakers + 1))
            try:
                audio, turns = simulate_conversation(
                    manifest, num_speakers=num_speakers, sample_rate=sample_rate, rng=rng,
                    reference=reference, **kwargs
                )
                break
            except NotEnoughSpeechError as exc:
                failure = str(exc)
                logger.info("%s: attempt %d failed: %s", uri, attempt + 1, failure)
        else:
            raise ValueError(f"{uri}: no conversation after {_MAX_ATTEMPTS} tries ({failure})")
        wav_path, rttm_path = out / f"{uri}.wav", out / f"{uri}.rttm"
        write_wav(wav_path, audio, sample_rate)
        write_rttm(turns_to_annotation(turns, uri), rttm_path)
        rows.append(
            {
                "uri": uri,
                "wav_path": str(wav_path),
                "rttm_path": str(rttm_path),
                "num_speakers": num_speakers,
                "duration_s": round(len(audio) / sample_rate, 3),
            }
        )
    index_df = pd.DataFrame(rows)
    with atomic_path(out / "conversations.csv") as tmp:
        index_df.to_csv(tmp, index=False, lineterminator="\n")
    logger.info("wrote %d conversations to %s", len(rows), out)
    return index_df


def main(argv: list[str] | None = None) -> int:
    """Command line: simulate conversations from a manifest."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.simulate",
        description="Simulate multi-speaker conversations (WAV + RTTM) from a manifest.",
    )
    parser.add_argument("--manifest", required=True, help="utterance manifest CSV (e.g. test.csv)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num", type=int, default=10, help="number of conversations (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--min-speakers", type=int, default=2, help="fewest speakers (default 2)")
    parser.add_argument("--max-speakers", type=int, default=4, help="most speakers (default 4)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="Hz (default 16000)")
    parser.add_argument(
        "--max-duration", type=float, default=60.0, help="longest conversation in s (default 60)"
    )
    parser.add_argument(
        "--snr", type=float, nargs=2, default=(10.0, 30.0), metavar=("LOW", "HIGH"),
        help="range of the speech-to-background-noise ratio in dB (default 10 30)",
    )
    parser.add_argument("--no-noise", action="store_true", help="add no background noise")
    parser.add_argument(
        "--level-db", type=float, default=6.0,
        help="per-speaker gains are drawn in +-LEVEL_DB dB (default 6)",
    )
    parser.add_argument(
        "--reference", choices=("speech", "turns"), default="speech",
        help="what the RTTM marks: speech (default; pauses of 0.3 s or more inside a turn left out) "
        "or whole turns",
    )
    parser.add_argument(
        "--reverb", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
        help="put the conversation in a room whose reverberation time (RT60, s) is drawn in [LOW, HIGH] "
        "(default: dry speech)",
    )
    parser.add_argument(
        "--drr", type=float, nargs=2, default=DRR_DB, metavar=("LOW", "HIGH"),
        help=f"range of each speaker's direct-to-reverberant ratio in dB, with --reverb (default {DRR_DB[0]:g} {DRR_DB[1]:g})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.reverb is not None and not 0.0 < args.reverb[0] <= args.reverb[1] <= 5.0:
        print(f"error: --reverb needs 0 < LOW <= HIGH <= 5 seconds, got {args.reverb[0]:g} {args.reverb[1]:g}",
              file=sys.stderr)
        return 2
    if args.drr[0] > args.drr[1]:
        print(f"error: --drr needs LOW <= HIGH, got {args.drr[0]:g} {args.drr[1]:g}", file=sys.stderr)
        return 2
    try:
        index_df = write_conversations(
            read_manifest(args.manifest),
            args.out,
            num_conversations=args.num,
            seed=args.seed,
            min_speakers=args.min_speakers,
            max_speakers=args.max_speakers,
            sample_rate=args.sample_rate,
            max_duration_s=args.max_duration,
            noise_snr_db=None if args.no_noise else tuple(args.snr),
            level_db_range=(-abs(args.level_db), abs(args.level_db)),
            reference=args.reference,
            reverb_rt60_s=None if args.reverb is None else tuple(args.reverb),
            reverb_drr_db=tuple(args.drr),
        )
    except (ValueError, AudioError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    hours = index_df["duration_s"].sum() / 3600
    print(f"wrote {len(index_df)} conversations ({hours:.2f} h) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
