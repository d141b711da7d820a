"""Compare the speech detectors (energy, spectral, learned, WebRTC, Silero) against reference RTTMs.

    python -m experiments.compare_vad --audio DIR --rttm DIR [--methods energy spectral learned webrtc silero]
        [--speech-model models/speech_detector_rooms.keras] [--out FILE]

Recordings pair `DIR/<uri>.{wav,flac}` with `<uri>` in the RTTM files (as in
experiments.evaluate). For each detector and each setting tried, the union of
the reference speaker turns is compared with the detected regions:
missed = duration(reference - detected) / duration(reference) and
false alarm = duration(detected - reference) / duration(reference), both summed
over all recordings before dividing. The real-time factor is the detector's
compute time (resampling included, file decoding excluded) over the audio
duration. "missed, quiet" is the part of the missed speech where the recording itself is
within 3 dB of its noise floor (its quietest 10% of 10 ms frames), so that the speech
there is at most about as loud as the noise: references marked on the clean source
(`data_prep.simulate`) reach into soft onsets, endings and breaths that the mix buries.
Prints the table and writes it as Markdown to `--out`.
"""

import argparse
import datetime
import sys
import time
from pathlib import Path

import experiments

# Settings tried per detector: (label, keyword arguments for the detector).
SETTINGS = {
    "energy": [
        (f"threshold_db={value}" + (f", noise_margin_db={margin}" if margin is not None else ""),
         {"threshold_db": float(value), "noise_margin_db": margin})
        for value in (-40, -30) for margin in (None, 3.0, 6.0)
    ],
    "webrtc": [(f"aggressiveness={value}", {"aggressiveness": value}) for value in (0, 1, 2, 3)],
    # WebRTC frames that must also rise above the recording's noise floor (data_prep.vad.webrtc_vad's
    # noise_margin_db); the settings it runs name the detector, so a sidecar stores method "webrtc".
    "webrtc-trimmed": [(f"aggressiveness={value}, noise_margin_db={margin}",
                        {"method": "webrtc", "aggressiveness": value, "noise_margin_db": margin})
                       for value in (0, 1) for margin in (1.0, 2.0, 3.0, 6.0)],
    "silero": [(f"threshold={value}", {"threshold": value}) for value in (0.2, 0.3, 0.5)],
    # Mean per-band SNR (nepers) over the recording's own noise (data_prep.vad.spectral_vad). Thresholds below
    # 0.25 call steady noise alone speech (a 10 s recording of white, pink or brown noise at 8 or 16 kHz: 17-95%
    # of it at 0.2 and 0.15, none at 0.25 and above), so they are not tried.
    # low_threshold: frames next to speech that score above it join it (hysteresis; equal to threshold: none).
    # min_silence_s: shorter pauses between detected regions are bridged.
    "spectral": [(f"threshold={value}, low_threshold={low or value}, noise_quantile={quantile}, min_silence_s={pause}",
                  {"threshold": value, "low_threshold": low or value, "noise_quantile": quantile, "min_silence_s": pause})
                 for pause in (0.3, 0.2) for quantile in (0.1, 0.2) for value in (0.25, 0.3, 0.35)
                 for low in (None, 0.2, 0.15)],
    # The learned detector (data_prep.vad.learned_vad) at its network's speech probability thresholds; the network
    # file is `--speech-model` (default SPEECH_MODEL). It already bridges the references' short pauses itself.
    "learned": [(f"threshold={value}, min_silence_s={pause}", {"threshold": value, "min_silence_s": pause})
                for pause in (0.1, 0.2) for value in (0.3, 0.4, 0.5, 0.6)],
}
SAMPLE_RATE = 16000
# The learned detector's networks (python -m experiments.train_vad): trained on dry conversations (stop 25), and with
# 40% of them in reverberant rooms (stop 30, what the shipped model uses). Release calibration tries both.
SPEECH_MODELS = ("models/speech_detector.keras", "models/speech_detector_rooms.keras")
SPEECH_MODEL = SPEECH_MODELS[1]


def detector_options(method, setting, speech_model=SPEECH_MODEL):
    """Keyword arguments of data_prep.vad.speech_regions (``method`` included) for one row of SETTINGS."""
    options = {"method": method, **dict(SETTINGS[method])[setting]}
    if method == "learned":
        options["model"] = str(speech_model)
    return {key: value for key, value in options.items() if value is not None}


QUIET_MARGIN_DB = 3.0  # "missed, quiet": missed speech no louder than the noise floor plus this
_FRAME_S = 0.01


def frame_levels_db(audio, sample_rate):
    """Energy (dB) of each 10 ms frame and the noise floor, the 10th percentile of them."""
    import numpy as np

    hop = max(1, int(round(_FRAME_S * sample_rate)))
    frames = np.asarray(audio, dtype=np.float64)[:len(audio) // hop * hop].reshape(-1, hop)
    levels = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    return levels, float(np.quantile(levels, 0.1)) if len(levels) else 0.0


def speech_errors(reference, regions, levels=None):
    """(missed s, false alarm s, reference speech s, quiet missed s) of ``regions`` against a reference Annotation.

    ``levels`` (``frame_levels_db``) measures how much of the missed speech lies within
    ``QUIET_MARGIN_DB`` of the noise floor (0 without it).
    """
    from pyannote.core import Segment, Timeline

    speech = reference.get_timeline().support()
    detected = Timeline([Segment(start, end) for start, end in regions if end > start]).support()
    missed = speech.extrude(detected)
    false_alarm = detected.extrude(speech).duration()
    quiet = 0.0
    if levels is not None:
        energy, floor = levels
        for segment in missed:
            span = energy[int(round(segment.start / _FRAME_S)):int(round(segment.end / _FRAME_S))]
            quiet += float((span <= floor + QUIET_MARGIN_DB).sum()) * _FRAME_S
    return missed.duration(), false_alarm, speech.duration(), min(quiet, missed.duration())


def compare(recordings, methods, sample_rate=SAMPLE_RATE, speech_model=SPEECH_MODEL):
    """One row per (method, setting): missed, false alarm, their sum and the real-time factor."""
    from data_prep.audio import load_audio
    from data_prep.vad import speech_regions

    loaded = [(uri, load_audio(path, sample_rate), reference) for uri, path, reference in recordings]
    levels = [frame_levels_db(audio, sample_rate) for _, audio, _ in loaded]
    audio_s = sum(len(audio) for _, audio, _ in loaded) / sample_rate
    rows = []
    for method in methods:
        for label, _ in SETTINGS[method]:
            kwargs = detector_options(method, label, speech_model)
            detector = kwargs.pop("method")
            speech_regions(loaded[0][1][:sample_rate], sample_rate, detector)  # warm up (loads a model once)
            missed = false_alarm = speech = quiet = seconds = 0.0
            for (_, audio, reference), file_levels in zip(loaded, levels):
                started = time.perf_counter()
                regions = speech_regions(audio, sample_rate, detector, **kwargs)
                seconds += time.perf_counter() - started
                errors = speech_errors(reference, regions, file_levels)
                missed, false_alarm, speech, quiet = (total + part for total, part in
                                                      zip((missed, false_alarm, speech, quiet), errors))
            rows.append({
                "method": method, "setting": label,
                "missed": missed / speech if speech else 0.0,
                "missed_quiet": quiet / speech if speech else 0.0,
                "false_alarm": false_alarm / speech if speech else 0.0,
                "rtf": seconds / audio_s,
            })
            rows[-1]["sum"] = rows[-1]["missed"] + rows[-1]["false_alarm"]
    return rows, audio_s


def markdown(rows):
    lines = ["| method | setting | missed | missed, quiet | false alarm | missed + false alarm | RTF |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {row['method']} | {row['setting']} | {row['missed']:.2%} | {row.get('missed_quiet', 0.0):.2%} | "
              f"{row['false_alarm']:.2%} | {row['sum']:.2%} | {row['rtf']:.4f} |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.compare_vad", description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", required=True, help="folder of recordings (wav/flac)")
    parser.add_argument("--rttm", required=True, help="folder of reference RTTM files")
    parser.add_argument("--methods", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS),
                        help="detectors to compare (default: all; webrtc-trimmed is WebRTC with an energy floor)")
    parser.add_argument("--speech-model", default=SPEECH_MODEL,
                        help=f"the learned detector's network (default {SPEECH_MODEL}; python -m experiments.train_vad)")
    parser.add_argument("--out", default="results/vad_comparison.md",
                        help="Markdown table to write (default results/vad_comparison.md)")
    parser.add_argument("--data", help="description of the recordings for the table's header "
                        "(default: how many recordings and from which folder)")
    parser.add_argument("--note", action="append", default=[], help="extra line for the table's header (repeatable)")
    args = parser.parse_args(argv)
    for flag, folder in (("--audio", args.audio), ("--rttm", args.rttm)):
        if not Path(folder).is_dir():
            print(f"error: {flag} {folder}: not a folder", file=sys.stderr)
            return 1
    from data_prep.audio import AudioError, atomic_path
    from experiments.evaluate import annotated_recordings

    methods = list(dict.fromkeys(args.methods))
    try:
        recordings = annotated_recordings(args.audio, args.rttm)
        rows, audio_s = compare(recordings, methods, speech_model=args.speech_model)
    except (OSError, ValueError, AudioError, ImportError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    table = markdown(rows)
    best = min(rows, key=lambda row: row["sum"])
    command = experiments.command_line("experiments.compare_vad", argv)
    header = [
        "# Speech detector comparison", "",
        f"- command: `{command}`",
        f"- date: {datetime.date.today().isoformat()}",
        (f"- data: {args.data or f'{len(recordings)} recordings'} (`{args.audio}`, {len(recordings)} files, "
         f"{audio_s / 60:.1f} min; references `{args.rttm}`)"),
        ("- missed and false alarm are fractions of the reference speech (union of the reference turns), "
         "summed over recordings; RTF = detector compute time / audio duration (one CPU thread, decoding excluded)"),
        (f"- missed, quiet: the missed speech where the recording is within {QUIET_MARGIN_DB:g} dB of its noise floor "
         "(its quietest 10% of 10 ms frames), included in missed"),
        f"- lowest missed + false alarm: {best['method']} {best['setting']} ({best['sum']:.2%})",
        *(f"- note: {note}" for note in args.note), "",
    ]
    print(table, end="")
    print(f"lowest missed + false alarm: {best['method']} {best['setting']} ({best['sum']:.2%})")
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(header) + "\n" + table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
