"""Long recordings of a few speakers ("meetings"): does the speaker count hold up over 10-30 minutes?

    python -m experiments.meetings [--split val] [--speakers 3 5] [--minutes 10 30] [--seeds 2]
    python -m experiments.meetings --link-threshold none 1.0 1.1 1.2 --long-minutes 30 60   # choose a setting

Each meeting draws `K` speakers of the split (seeded), concatenates clean
simulated conversations among them until the length is reached, and adds one
background noise (white, pink or brown, 15-25 dB SNR) over the whole recording,
as one room would. It is diarized with the estimated and with the oracle count;
the DER (full: collar 0, overlap scored) and the speakers found are printed, and
written to `--report` as Markdown. `--long-minutes` adds the opposite case, long
recordings of all the split's speakers (`experiments.benchmark.long_recording`,
seed 7), and `--link-threshold` tries values of the blockwise count
(`DiarizerSettings.link_threshold`) on the same embeddings.

A caveat that decides how to read the figures: each LibriSpeech speaker here has
one utterance of about 12 s, so a 30-minute meeting of 3 speakers replays each
utterance about 50 times. Windows of the same replayed audio are near copies, so
a voice shows up as a few tight groups: harder for a threshold than a real
speaker's continuously varying speech, easier for the oracle count.
"""

import argparse
import sys
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)
from experiments.config import ConfigError, load_config
from experiments.quickstart import DEFAULT_CONFIG

NOISE_SNR_DB = (15.0, 25.0)


def meeting_recording(manifest, num_speakers, minutes, out_dir, seed, min_speaker_s=12.0):
    """`(wav, rttm, speakers)` of a seeded meeting of `num_speakers` of `manifest`'s speakers, built once."""
    import numpy as np

    from data_prep.audio import write_wav
    from data_prep.augment import add_noise
    from data_prep.rttm import write_rttm
    from data_prep.simulate import turns_to_annotation
    from experiments.benchmark import concatenated_conversations

    rng = np.random.default_rng([seed, num_speakers, int(minutes * 60)])
    # Speakers with enough audio for two turns each in every conversation they join.
    durations = manifest.groupby("speaker")["duration_s"].sum()
    eligible = sorted(durations[durations >= min_speaker_s].index)
    if len(eligible) < num_speakers:
        raise ValueError(f"{num_speakers} speakers asked, {len(eligible)} have {min_speaker_s:g} s of audio")
    speakers = sorted(rng.choice(eligible, num_speakers, replace=False).tolist())
    uri = f"meeting_{num_speakers}spk_{minutes:g}min_seed{seed}"
    wav, rttm = out_dir / f"{uri}.wav", out_dir / f"{uri}.rttm"
    if wav.is_file() and rttm.is_file():
        return wav, rttm, speakers
    # Clean parts (noise_snr_db None), then one noise over the whole meeting.
    audio, turns = concatenated_conversations(manifest[manifest["speaker"].isin(speakers)], minutes,
                                              out_dir / "parts" / uri, 16000, seed * 1000,
                                              max_speakers=min(4, num_speakers), noise_snr_db=None)
    audio = add_noise(audio, float(rng.uniform(*NOISE_SNR_DB)), rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_wav(wav, audio, 16000)
    write_rttm(turns_to_annotation(turns, uri), rttm)
    return wav, rttm, speakers


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.meetings", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="embedding tower .keras (default: the shipped model)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="config whose split defines the speakers")
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="speakers to build meetings from (default val: choose settings there, report test)")
    parser.add_argument("--speakers", type=int, nargs="+", default=[3, 5], help="speakers per meeting (default 3 5)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 30.0], help="lengths (default 10 30)")
    parser.add_argument("--seeds", type=int, default=2, help="meetings of each size and length (default 2)")
    parser.add_argument("--link-threshold", nargs="+", type=_threshold, help="values of link_threshold to try "
                        "('none': counted as a whole; default: the model's own)")
    parser.add_argument("--block-windows", type=int, help="override the model's count_block_windows")
    parser.add_argument("--long-minutes", type=float, nargs="*", default=[], help="also long recordings of all the "
                        "split's speakers, of these lengths (e.g. 30 60)")
    parser.add_argument("--out-dir", default="runs/meetings", help="folder for the built meetings")
    parser.add_argument("--report", help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    if min(args.speakers) < 2 or min(args.minutes) <= 0 or args.seeds < 1:
        parser.error("--speakers must be >= 2, --minutes > 0 and --seeds >= 1")
    if args.block_windows is not None and args.block_windows < 2:
        parser.error("--block-windows must be at least 2")
    import dataclasses

    import numpy as np

    from data_prep.rttm import read_rttm
    from experiments.benchmark import long_recording
    from experiments.train import prepare_manifests
    from siamese.diarizer import DEFAULT_MODEL, Diarizer
    from siamese.metrics import DER_SETTINGS, diarization_error

    out_dir = Path(args.out_dir)
    model = args.model or str(DEFAULT_MODEL)
    try:
        manifest = prepare_manifests(load_config(args.config), out_dir)[args.split]
        diarizer = Diarizer.load(model)
    except (ConfigError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.block_windows is not None:
        diarizer.settings.count_block_windows = args.block_windows
    base = diarizer.settings
    links = args.link_threshold if args.link_threshold else [base.link_threshold]
    recordings = []  # (wav, rttm, speakers as text)
    try:
        for num_speakers in args.speakers:
            for minutes in args.minutes:
                for seed in range(args.seeds):
                    wav, rttm, speakers = meeting_recording(manifest, num_speakers, minutes, out_dir / args.split, seed)
                    recordings.append((wav, rttm, ", ".join(map(str, speakers))))
        for minutes in args.long_minutes:
            wav, rttm = long_recording(manifest, minutes, out_dir / f"{args.split}_all", 16000, 7)
            recordings.append((wav, rttm, f"all {args.split} speakers"))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"model {model}, {args.split} speakers, count_block_windows {base.count_block_windows}")
    header = " | ".join(f"link {link}: DER est. (found)" for link in links)
    lines = [f"| recording | speakers | {header} | DER full, oracle count |", "|---" * (3 + len(links)) + "|"]
    results = []  # per recording: ([(der, found)] per link, oracle der, true count)
    for wav, rttm, speakers in recordings:
        reference = next(iter(read_rttm(rttm).values()))
        true_count = len(reference.labels())
        windows = diarizer.embed(str(wav))
        row = []
        for link in links:
            diarizer.settings = dataclasses.replace(base, link_threshold=link)
            labels = diarizer.cluster(windows.for_clustering, region_of=windows.region_of)
            hypothesis = diarizer.to_annotation(windows, labels, uri=reference.uri)
            row.append((diarization_error(reference, hypothesis, **DER_SETTINGS["full"])["der"], len(hypothesis.labels())))
        diarizer.settings = base
        labels = diarizer.cluster(windows.for_clustering, num_speakers=true_count, region_of=windows.region_of)
        oracle = diarization_error(reference, diarizer.to_annotation(windows, labels, uri=reference.uri),
                                   **DER_SETTINGS["full"])["der"]
        results.append((row, oracle, true_count))
        cells = " | ".join(f"{der:.2%} ({found} of {true_count})" for der, found in row)
        lines.append(f"| {reference.uri} | {speakers} | {cells} | {oracle:.2%} |")
        print(lines[-1], flush=True)
    means = " | ".join(f"{np.mean([r[0][i][0] for r in results]):.2%} "
                       f"(count exact {sum(r[0][i][1] == r[2] for r in results)} of {len(results)})"
                       for i in range(len(links)))
    lines.append(f"| mean | | {means} | {np.mean([r[1] for r in results]):.2%} |")
    print(lines[-1])
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(sys.argv[1:] if argv is None else argv)
        Path(args.report).write_text(f"# Meetings: {model}, {args.split} speakers\n\n"
                                     f"`python -m experiments.meetings {command}`\n\n" + "\n".join(lines) + "\n")
        print(f"wrote {args.report}")
    return 0


def _threshold(text):
    """A link threshold from the command line: a distance > 0, or 'none'."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'none': {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
