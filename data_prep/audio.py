"""Audio file I/O shared by the whole data pipeline.

Every reader goes through :func:`load_audio` so that the rest of the project
can rely on one contract: float32 mono at the requested rate, or an
:class:`AudioError` with a one-line message naming the file.

Formats libsndfile reads (wav, flac, ogg, ...) are decoded in process. AAC in
``.m4a``/``.aac`` files (VoxCeleb 2) is decoded by an installed ``ffmpeg``
binary through a pipe, never to a file, so a corpus is only ever read; without
ffmpeg such a file gives an AudioError that names the missing decoder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

logger = logging.getLogger(__name__)

# Long files are decoded in blocks of this many frames and downmixed block by
# block, so a multi-channel 2-hour file never exists in memory un-mixed.
_BLOCK_FRAMES = 1 << 20

# Errors soundfile/libsndfile raise for files it cannot decode.
_DECODE_ERRORS = (sf.SoundFileError, RuntimeError, OSError, EOFError)

# Below this RMS a signal is treated as silence by normalize_level (-160 dBFS).
_SILENCE_RMS = 1e-8

# A corrupt header can claim billions of frames. Memory is reserved for at most
# this many frames per byte of file (far above what any codec packs, even for
# silence) and grown only if a file really decodes to more.
_MAX_FRAMES_PER_BYTE = 1024

# Suffixes libsndfile cannot read, decoded through ffmpeg instead (AAC: VoxCeleb 2 ships .m4a).
FFMPEG_SUFFIXES = (".m4a", ".aac")

# No single ffprobe/ffmpeg call on one file should take this long; a hung decoder becomes an AudioError.
_FFMPEG_TIMEOUT_S = 600


class AudioError(Exception):
    """Audio that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class AudioInfo:
    """Header facts about an audio file, read without decoding it."""

    duration_s: float
    sample_rate: int
    channels: int
    frames: int


def _one_line(exc: BaseException) -> str:
    """Collapse an exception message to one line for AudioError messages.

    soundfile prefixes "Error opening '<path>': "; the path is already at the
    start of every AudioError, so only the reason is kept.
    """
    message = " ".join(str(exc).split())
    message = re.sub(r"^Error opening .*?: ", "", message)
    return message or type(exc).__name__


def _check_path(path: str | os.PathLike) -> Path:
    """Raise AudioError unless ``path`` is an existing regular file."""
    file = Path(path)
    if not file.exists():
        raise AudioError(f"{file}: no such file")
    if file.is_dir():
        raise AudioError(f"{file}: is a directory, not an audio file")
    return file


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read an audio file's header (duration, rate, channels, frames).

    Args:
        path: Audio file readable by soundfile (wav, flac, ogg, ...), or an
            m4a/aac file when ffmpeg is installed (its header read by ffprobe).

    Returns:
        The file's :class:`AudioInfo`.

    Raises:
        AudioError: If the path is missing, a directory, not audio, or empty,
            or m4a/aac while ffmpeg is not installed.
    """
    file = _check_path(path)
    if needs_ffmpeg(file):
        return _probe(file)
    try:
        info = sf.info(str(file))
    except _DECODE_ERRORS as exc:
        raise AudioError(f"{file}: not a readable audio file ({_one_line(exc)})") from None
    if info.frames <= 0:
        raise AudioError(f"{file}: contains no audio frames")
    return AudioInfo(
        duration_s=info.frames / info.samplerate,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
    )


def load_audio(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
) -> np.ndarray:
    """Load (part of) an audio file as float32 mono at ``sample_rate``.

    Only the requested span is decoded: the file is seeked to ``start_s`` and
    read block by block. Multi-channel audio is averaged to mono and resampled
    with soxr (HQ) when the file's rate differs from ``sample_rate``.

    A truncated file whose decoder stops early yields the frames that could be
    read (with a logged warning); a decoder that raises gives AudioError.

    An m4a/aac file is decoded by ffmpeg instead, which then also seeks,
    downmixes and resamples (with its own resampler, not soxr).

    Args:
        path: Audio file readable by soundfile, or m4a/aac with ffmpeg installed.
        sample_rate: Output sample rate in Hz.
        start_s: Offset of the crop in seconds.
        duration_s: Length of the crop in seconds; None reads to the end.

    Returns:
        1-D float32 array.

    Raises:
        AudioError: Missing file, directory, not audio, empty crop, NaN/Inf.
        ValueError: Invalid ``sample_rate``, ``start_s`` or ``duration_s``.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if start_s < 0:
        raise ValueError(f"start_s must be >= 0, got {start_s}")
    if duration_s is not None and duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    file = _check_path(path)
    if needs_ffmpeg(file):
        return _checked(file, _decode_with_ffmpeg(file, sample_rate, start_s, duration_s), total_frames=None)
    try:
        with sf.SoundFile(str(file)) as sound:
            native_rate = sound.samplerate
            total_frames = sound.frames
            start = int(round(start_s * native_rate))
            available = max(total_frames - start, 0)
            wanted = available
            if duration_s is not None:
                wanted = min(int(round(duration_s * native_rate)), available)
            if start and wanted:
                sound.seek(start)
            if native_rate == sample_rate:
                audio = _read_mono(sound, wanted, _frame_budget(file))
                frames_read = audio.size
            else:
                audio, frames_read = _read_resampled(sound, wanted, sample_rate, _frame_budget(file))
            promised = _promised_frames(sound)
    except _DECODE_ERRORS as exc:
        raise AudioError(f"{file}: not a readable audio file ({_one_line(exc)})") from None
    except _RESAMPLE_ERRORS as exc:  # e.g. a corrupt header's absurd rate
        raise AudioError(f"{file}: cannot resample from {native_rate} Hz ({_one_line(exc)})") from None
    if frames_read < wanted:
        logger.warning("%s: file truncated, read %d of %d frames", file, frames_read, wanted)
    elif promised > total_frames:
        logger.warning("%s: file truncated, the header promises %d frames, %d are present", file, promised, total_frames)
    return _checked(file, audio, total_frames)


def _checked(file: Path, audio: np.ndarray, total_frames: int | None) -> np.ndarray:
    """``audio`` as contiguous float32, or AudioError if it is empty or holds NaN/Inf."""
    if audio.size == 0:
        if total_frames == 0:
            raise AudioError(f"{file}: contains no audio frames")
        raise AudioError(f"{file}: no audio in the requested range")
    if not np.isfinite(audio).all():
        raise AudioError(f"{file}: contains NaN or Inf samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


def check_audio(path: str | os.PathLike) -> AudioInfo:
    """Decode a whole file once and vouch that :func:`load_audio` can use all of it.

    :func:`audio_info` reads only the header, which a truncated file or one
    with NaN samples passes. Manifests that feed training are checked with
    this instead, so a bad file is reported when the dataset is scanned, not
    halfway through an epoch.

    Args:
        path: Audio file readable by soundfile, or m4a/aac with ffmpeg installed
            (decoded at its own rate; the duration returned is the decoded one).

    Returns:
        The file's :class:`AudioInfo` (from its header, which then is true).

    Raises:
        AudioError: Anything :func:`audio_info` rejects, plus undecodable or
            truncated data and NaN/Inf samples.
    """
    info = audio_info(path)
    file = Path(path)
    if needs_ffmpeg(file):
        decoded = _checked(file, _decode_with_ffmpeg(file, info.sample_rate, 0.0, None), total_frames=0).size
        # AAC decodes to a little more than the container's duration (encoder padding), never much less.
        if decoded < info.frames - info.sample_rate // 10:
            raise AudioError(f"{file}: truncated, the header promises {info.frames} frames but only {decoded} decode")
        return info
    decoded = 0
    try:
        with sf.SoundFile(str(file)) as sound:
            promised = max(info.frames, _promised_frames(sound))
            while True:
                block = sound.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                if not np.isfinite(block).all():
                    raise AudioError(f"{file}: contains NaN or Inf samples")
                decoded += len(block)
    except _DECODE_ERRORS as exc:
        raise AudioError(f"{file}: not a readable audio file ({_one_line(exc)})") from None
    if decoded < promised:
        raise AudioError(f"{file}: truncated, the header promises {promised} frames but only {decoded} decode")
    return info


def needs_ffmpeg(path: str | os.PathLike) -> bool:
    """Whether ``path`` is decoded through ffmpeg (m4a/aac) rather than libsndfile."""
    return Path(path).suffix.lower() in FFMPEG_SUFFIXES


def find_decoder(name: str) -> str | None:
    """Path of the ``ffmpeg`` or ``ffprobe`` binary, or None when it is not installed."""
    return shutil.which(name)


def require_decoders(path: str | os.PathLike) -> None:
    """Raise AudioError, naming the missing binary, if ``path`` needs ffmpeg/ffprobe and one is not installed."""
    if needs_ffmpeg(path):
        for name in ("ffmpeg", "ffprobe"):
            _decoder(Path(path), name)


def _decoder(file: Path, name: str) -> str:
    """The binary ``name`` (ffmpeg or ffprobe), or an AudioError naming it and the file."""
    binary = find_decoder(name)
    if binary is None:
        needed = "ffmpeg" if name == "ffmpeg" else f"{name} (part of ffmpeg)"
        raise AudioError(f"{file}: {file.suffix.lower().lstrip('.')} needs {needed}, which is not installed")
    return binary


def _decoder_failure(file: Path, messages: bytes) -> AudioError:
    """AudioError carrying the last line ffmpeg or ffprobe wrote, without the path it repeats."""
    lines = [line.strip() for line in messages.decode("utf-8", errors="replace").splitlines() if line.strip()]
    reason = " ".join(lines[-1].replace(str(file), "").split()).strip(": ") if lines else ""
    return AudioError(f"{file}: not a readable audio file ({reason or 'the decoder failed'})")


def _probe(file: Path) -> AudioInfo:
    """Header facts of an m4a/aac file (its first audio stream), from ffprobe."""
    command = [_decoder(file, "ffprobe"), "-v", "error", "-select_streams", "a:0", "-show_entries",
               "stream=sample_rate,channels,duration:format=duration", "-of", "json", str(file)]
    try:
        result = subprocess.run(command, capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioError(f"{file}: ffprobe failed ({_one_line(exc)})") from None
    if result.returncode != 0:
        raise _decoder_failure(file, result.stderr)
    try:
        facts = json.loads(result.stdout or b"{}")
        streams = facts.get("streams") or []
        if not streams:
            raise AudioError(f"{file}: not a readable audio file (no audio stream)")
        sample_rate, channels = int(streams[0]["sample_rate"]), int(streams[0]["channels"])
        duration = streams[0].get("duration") or facts.get("format", {}).get("duration")
        frames = int(round(float(duration) * sample_rate))
    except (ValueError, KeyError, TypeError):
        raise AudioError(f"{file}: not a readable audio file (ffprobe found no rate, channels or duration)") from None
    if frames <= 0 or sample_rate <= 0:
        raise AudioError(f"{file}: contains no audio frames")
    return AudioInfo(duration_s=frames / sample_rate, sample_rate=sample_rate, channels=channels, frames=frames)


def _decode_with_ffmpeg(file: Path, sample_rate: int, start_s: float, duration_s: float | None) -> np.ndarray:
    """Decode (part of) ``file`` with ffmpeg into float32 mono at ``sample_rate``.

    ffmpeg seeks, downmixes and resamples, and streams raw float32 through a
    pipe; at most ``duration_s`` is read. Its messages go to an unnamed
    temporary file, so a decoder that complains about every frame of a damaged
    file cannot fill a pipe and stall.
    """
    command = [_decoder(file, "ffmpeg"), "-nostdin", "-v", "error"]
    if start_s > 0:
        command += ["-ss", f"{start_s:.6f}"]  # before -i: a fast seek, then exact decoding to the position
    command += ["-i", str(file), "-map", "0:a:0"]
    if duration_s is not None:
        command += ["-t", f"{duration_s:.6f}"]
    command += ["-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    wanted_bytes = 4 * int(round(duration_s * sample_rate)) if duration_s is not None else -1
    with tempfile.TemporaryFile() as messages:
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=messages)
        except OSError as exc:
            raise AudioError(f"{file}: cannot run ffmpeg ({_one_line(exc)})") from None
        try:
            data = process.stdout.read(wanted_bytes)
            process.stdout.close()
            returncode = process.wait(timeout=_FFMPEG_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AudioError(f"{file}: ffmpeg did not finish within {_FFMPEG_TIMEOUT_S} s") from None
        finally:
            if process.poll() is None:  # stopped reading early, or timed out
                process.kill()
                process.wait()
        if returncode != 0 and len(data) != wanted_bytes:  # a read cut short may see ffmpeg die of the closed pipe
            messages.seek(0)
            raise _decoder_failure(file, messages.read())
    return np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4").astype(np.float32)


def _promised_frames(sound: sf.SoundFile) -> int:
    """Frames a WAV header promises when its data chunk runs past the end of the file, else 0.

    libsndfile quietly shortens such a file to the frames present and only notes
    the mismatch in its log ("data : 192000 (should be 63970)"). Sizes of 2 GiB
    and more are taken as the placeholder of a writer that could not seek back
    (a pipe), not as a promise.
    """
    log = sound.extra_info
    data = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", log, re.MULTILINE)
    align = re.search(r"Block Align\s*:\s*(\d+)", log)
    if not data or not align or int(align[1]) <= 0:
        return 0
    claimed, present = int(data[1]), int(data[2])
    if claimed <= present or claimed >= 1 << 31:
        return 0
    return claimed // int(align[1])


def _frame_budget(file: Path) -> int:
    """Frames worth reserving memory for up front (see ``_MAX_FRAMES_PER_BYTE``)."""
    try:
        size = file.stat().st_size
    except OSError:
        size = 0
    return max(_BLOCK_FRAMES, size * _MAX_FRAMES_PER_BYTE)


_RESAMPLE_ERRORS = (ValueError, RuntimeError)


def _read_resampled(sound: sf.SoundFile, num_frames: int, sample_rate: int, budget: int | None = None):
    """Like :func:`_read_mono`, resampled to ``sample_rate`` block by block as it is read.

    A two-hour 48 kHz recording is never held at its native rate (1.4 GB as
    float32 mono); only the 16 kHz result is. soxr's stream gives the same
    samples as resampling the whole signal at once.

    Returns:
        ``(audio, frames_read)``: the resampled mono signal and how many native
        frames were read (fewer than ``num_frames`` for a truncated file).
    """
    stream = soxr.ResampleStream(sound.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
    ratio = sample_rate / sound.samplerate
    out = np.empty(int(np.ceil(min(num_frames, budget or num_frames) * ratio)) + 64, dtype=np.float32)
    filled = frames_read = 0

    def append(chunk):
        nonlocal out, filled
        if filled + len(chunk) > len(out):
            grown = np.empty(max(2 * len(out), filled + len(chunk)), dtype=np.float32)
            grown[:filled] = out[:filled]
            out = grown
        out[filled:filled + len(chunk)] = chunk
        filled += len(chunk)

    while frames_read < num_frames:
        block = sound.read(min(_BLOCK_FRAMES, num_frames - frames_read), dtype="float32", always_2d=True)
        if len(block) == 0:
            break
        frames_read += len(block)
        mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
        append(stream.resample_chunk(np.ascontiguousarray(mono), last=frames_read >= num_frames))
    if frames_read < num_frames:  # truncated: flush what the filter still holds
        append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return out[:filled], frames_read


def _read_mono(sound: sf.SoundFile, num_frames: int, budget: int | None = None) -> np.ndarray:
    """Read up to ``num_frames`` frames from the current position, as mono.

    Blocks are written into one preallocated array, so a long file never
    exists twice in memory (blocks plus their concatenation). At most
    ``budget`` frames are reserved at first, so a header that lies about the
    length cannot exhaust memory; the array doubles if the data is really longer.
    """
    audio = np.empty(min(num_frames, budget or num_frames), dtype=np.float32)
    filled = 0
    while filled < num_frames:
        if filled == len(audio):
            grown = np.empty(min(num_frames, 2 * len(audio)), dtype=np.float32)
            grown[:filled] = audio
            audio = grown
        block = sound.read(min(_BLOCK_FRAMES, len(audio) - filled), dtype="float32", always_2d=True)
        if len(block) == 0:
            break
        audio[filled:filled + len(block)] = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
        filled += len(block)
    return audio[:filled]


def normalize_level(audio: np.ndarray, target_rms_db: float = -20.0) -> np.ndarray:
    """Scale audio to a target RMS level so sources mix at comparable loudness.

    Silent (all-zero or near-zero) audio is returned unchanged rather than
    amplified into noise.

    Args:
        audio: Samples in [-1, 1].
        target_rms_db: Target RMS in dB relative to full scale.

    Returns:
        A float32 copy at the target level.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        return audio.copy()
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms < _SILENCE_RMS:
        return audio.copy()
    gain = 10.0 ** (target_rms_db / 20.0) / rms
    return (audio * gain).astype(np.float32)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; move it onto ``path`` on success.

    Readers never see a half-written file, and a failure leaves no temp file
    behind. Parent folders are created.

    Args:
        path: Final destination.

    Yields:
        Temporary path in the same folder to write to.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write audio as 16-bit PCM WAV, atomically.

    Args:
        path: Destination file.
        audio: Samples in [-1, 1], shape (frames,) or (frames, channels);
            values outside the range are clipped.
        sample_rate: Sample rate in Hz.
    """
    data = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, sample_rate, subtype="PCM_16", format="WAV")
