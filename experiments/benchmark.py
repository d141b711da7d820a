"""Diarization speed on long recordings built from held-out speakers.

    python -m experiments.benchmark [--minutes 5] [--model M]

For each length, concatenates simulated conversations of test speakers into one
recording (wav + exact RTTM), diarizes it end to end (decode, speech
detection, embeddings, clustering) with the model already loaded and warmed
up, and prints wall time, real-time factor (wall time / audio duration), peak
resident memory of the process that diarized it (a fresh one per length) and
the DER (full setting, estimated count; long recordings reuse the same test
speakers across many conversations, so their speaker count is large).
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)
from experiments.config import ConfigError, load_config
from experiments.quickstart import DEFAULT_CONFIG


def long_recording(manifest, minutes, out_dir, sample_rate, seed):
    """Concatenates seeded conversations until `minutes` of audio; returns (wav, rttm) paths."""
    import numpy as np

    from data_prep.audio import load_audio, write_wav
    from data_prep.rttm import read_rttm, write_rttm
    from data_prep.simulate import turns_to_annotation, write_conversations

    uri = f"long_{minutes:g}min"
    wav, rttm = out_dir / f"{uri}.wav", out_dir / f"{uri}.rttm"
    if wav.is_file() and rttm.is_file():
        return wav, rttm
    pieces, turns, offset_s, index = [], [], 0.0, 0
    while offset_s < minutes * 60:
        part = write_conversations(manifest, out_dir / "parts", num_conversations=1, seed=seed + index,
                                   sample_rate=sample_rate).iloc[0]
        audio = load_audio(part["wav_path"], sample_rate)
        for segment, _, speaker in read_rttm(part["rttm_path"])[part["uri"]].itertracks(yield_label=True):
            turns.append((offset_s + segment.start, offset_s + segment.end, speaker))
        pieces.append(audio)
        offset_s += len(audio) / sample_rate
        index += 1
    write_wav(wav, np.concatenate(pieces), sample_rate)
    write_rttm(turns_to_annotation(turns, uri), rttm)
    return wav, rttm


def measure(model, shared_frames, wav, uri):
    """Runs in a fresh process: load the model, warm up, time one diarization, report peak RSS."""
    from data_prep.audio import load_audio
    from siamese.diarizer import Diarizer

    diarizer = Diarizer.load(model)
    if shared_frames is not None:
        diarizer.settings.shared_frames = shared_frames
    diarizer.diarize(load_audio(wav, diarizer.settings.sample_rate, duration_s=60.0), uri="warmup")  # not timed
    started = time.perf_counter()
    hypothesis = diarizer.diarize(wav, uri=uri)
    wall_s = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return wall_s, peak_mb, hypothesis, diarizer.settings.shared_frames


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0], help="recording lengths in minutes (default 5)")
    parser.add_argument("--model", help="embedding tower .keras (default: the shipped model)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="config whose split defines the test speakers")
    parser.add_argument("--out-dir", default="runs/benchmark", help="folder for the built recordings")
    parser.add_argument("--seed", type=int, default=7000, help="seed of the simulated conversations")
    parser.add_argument("--shared-frames", choices=("on", "off"), help="override the model's shared_frames setting")
    args = parser.parse_args(argv)
    import multiprocessing
    import os

    import soundfile

    from data_prep.rttm import read_rttm
    from experiments.train import prepare_manifests
    from siamese.diarizer import DEFAULT_MODEL, DiarizerSettings, sidecar_path
    from siamese.metrics import DER_SETTINGS, diarization_error

    out_dir = Path(args.out_dir)
    model = Path(args.model) if args.model else DEFAULT_MODEL
    try:
        manifests = prepare_manifests(load_config(args.config), out_dir)
        sample_rate = DiarizerSettings.from_file(sidecar_path(model)).sample_rate
    except (ConfigError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    shared = None if args.shared_frames is None else args.shared_frames == "on"
    print(f"model: {model}; CPU threads available: {os.cpu_count()}; each length diarized in a fresh process "
          "(peak RSS = TensorFlow + model + one diarization)")
    print(f"{'minutes':>8} {'shared':>7} {'wall s':>8} {'RTF':>8} {'peak RSS MB':>12} {'DER full':>9} {'speakers ref/hyp':>17}")
    context = multiprocessing.get_context("spawn")
    for minutes in args.minutes:
        wav, rttm = long_recording(manifests["test"], minutes, out_dir, sample_rate, args.seed)
        reference = next(iter(read_rttm(rttm).values()))
        with context.Pool(1) as pool:
            wall_s, peak_mb, hypothesis, used_shared = pool.apply(measure, (str(model), shared, str(wav), reference.uri))
        duration_s = soundfile.info(str(wav)).duration
        der = diarization_error(reference, hypothesis, **DER_SETTINGS["full"])["der"]
        print(f"{minutes:8g} {str(used_shared):>7} {wall_s:8.2f} {wall_s / duration_s:8.4f} {peak_mb:12.0f} {der:9.2%} "
              f"{len(reference.labels()):>8}/{len(hypothesis.labels())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
