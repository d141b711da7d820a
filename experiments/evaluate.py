"""Evaluate a model: verification EER on trials, DER on annotated recordings.

    python -m experiments.evaluate --model M --trials trials.txt --out-dir results/eval
    python -m experiments.evaluate --model M --audio DIR --rttm DIR --out-dir results/eval

Trials are `<path1> <path2> <label>` lines (label 1 = same speaker), as written
by `python -m data_prep.trials`. Recordings pair `DIR/<uri>.{wav,flac}` with
`<uri>` in the RTTM files. DER comes from pyannote.metrics, in the "full"
(collar 0, overlap scored) and "forgiving" (collar 0.25 s, overlap skipped)
settings unless `--collar`/`--skip-overlap` ask for one other setting, each
with the oracle and with the estimated number of speakers. Writes
`per_file.csv`, `summary.json` and `summary.md` to `--out-dir`.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)

AUDIO_SUFFIXES = (".wav", ".flac")


def annotated_recordings(audio_dir, rttm_dir):
    """[(uri, audio path, reference Annotation)] for every recording with a reference."""
    from data_prep.rttm import read_rttm

    references = {}
    for rttm in sorted(Path(rttm_dir).glob("*.rttm")):
        references.update(read_rttm(rttm))
    audio = {path.stem: path for path in sorted(Path(audio_dir).iterdir()) if path.suffix.lower() in AUDIO_SUFFIXES}
    pairs = [(uri, audio[uri], references[uri]) for uri in sorted(audio) if uri in references]
    if not pairs:
        raise ValueError(f"no recording in {audio_dir} has a reference in {rttm_dir}")
    return pairs


def score_trials(diarizer, trials_path, scores=None):
    """EER, minDCF and accuracy at the model's verification threshold on labelled trials.

    `scores` (a list) receives one `(distance, label)` per trial, for ROC/DET curves.
    """
    import numpy as np

    from siamese.metrics import accuracy_at, equal_error_rate, min_dcf

    rows = [line.split() for line in Path(trials_path).read_text().splitlines() if line.strip()]
    if any(len(row) < 3 for row in rows):
        raise ValueError(f"{trials_path}: every trial needs a third column, the label (1 = same speaker)")
    paths = sorted({path for row in rows for path in row[:2]})
    embeddings = {path: diarizer.embed_utterance(path) for path in paths}
    distances = np.array([np.linalg.norm(embeddings[row[0]] - embeddings[row[1]]) for row in rows])
    labels = np.array([int(row[2]) for row in rows])
    if scores is not None:
        scores.extend(zip(distances.tolist(), labels.tolist()))
    eer, eer_threshold = equal_error_rate(distances, labels)
    threshold = diarizer.settings.verification_threshold
    return {
        "trials": len(rows), "target_trials": int(labels.sum()), "eer": eer, "eer_threshold": eer_threshold,
        "min_dcf_p0.01": min_dcf(distances, labels),
        "verification_threshold": threshold,
        "accuracy_at_threshold": accuracy_at(distances, labels, threshold) if threshold is not None else None,
    }


def score_recordings(diarizer, recordings, settings, speaker_counts=("oracle", "estimated"), uems=None,
                     oracle_speech=False):
    """Per-file DER rows for every (setting, speaker count), and the real-time factor.

    `uems` ({uri: Timeline}) limits scoring to each file's evaluated regions; a file without one
    is scored over the span either side covers. `oracle_speech` takes each reference's speech
    regions instead of the speech detector's: what the rest of the pipeline would score with a
    perfect detector.
    """
    from siamese.metrics import diarization_error

    rows = []
    for uri, path, reference in recordings:
        started = time.perf_counter()
        speech = None
        if oracle_speech:
            speech = [(segment.start, segment.end) for segment in reference.get_timeline().support()]
        windows = diarizer.embed(path, regions=speech)
        embed_s = time.perf_counter() - started
        duration_s = len(diarizer.load_audio(path)) / diarizer.settings.sample_rate
        for count in speaker_counts:
            started = time.perf_counter()
            num_speakers = len(reference.labels()) if count == "oracle" else None
            labels = diarizer.cluster(windows.for_clustering, num_speakers=num_speakers,
                                      region_of=windows.region_of)
            hypothesis = diarizer.to_annotation(windows, labels, uri=uri)
            seconds = embed_s + time.perf_counter() - started
            for name, setting in settings.items():
                errors = diarization_error(reference, hypothesis, uem=(uems or {}).get(uri), **setting)
                rows.append({"uri": uri, "setting": name, "speakers": count, **errors,
                             "ref_speakers": len(reference.labels()), "hyp_speakers": len(hypothesis.labels()),
                             "duration_s": duration_s, "rtf": seconds / duration_s})
    return rows


def summarize(rows):
    """Total DER per (setting, speaker count), weighted by scored speech, as pyannote does."""
    import pandas as pd

    table = pd.DataFrame(rows)
    summary = []
    for (setting, count), group in table.groupby(["setting", "speakers"], sort=False):
        weight = group["scored_s"]
        summary.append({
            "setting": setting, "speakers": count, "files": len(group),
            **{name: float((group[name] * weight).sum() / weight.sum()) for name in ("der", "missed", "false_alarm", "confusion")},
            "count_exact": float((group["ref_speakers"] == group["hyp_speakers"]).mean()),
            "rtf": float(group["rtf"].mean()),
        })
    return summary


def markdown(summary, verification):
    lines = []
    if verification:
        lines += ["| trials | target | EER | minDCF(0.01) | accuracy at threshold |", "|---|---|---|---|---|",
                  f"| {verification['trials']} | {verification['target_trials']} | {verification['eer']:.2%} | "
                  f"{verification['min_dcf_p0.01']:.3f} | "
                  + (f"{verification['accuracy_at_threshold']:.2%} |" if verification["accuracy_at_threshold"] is not None else "n/a |"), ""]
    if summary:
        lines += ["| setting | speakers | files | DER | missed | false alarm | confusion | count exact | RTF |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {row['setting']} | {row['speakers']} | {row['files']} | {row['der']:.2%} | {row['missed']:.2%} | "
                  f"{row['false_alarm']:.2%} | {row['confusion']:.2%} | {row['count_exact']:.0%} | {row['rtf']:.4f} |"
                  for row in summary]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="embedding tower .keras with its sidecar (default: the shipped model)")
    parser.add_argument("--trials", help="labelled trials '<path1> <path2> <label>' for EER")
    parser.add_argument("--audio", help="folder of recordings (wav/flac) for DER")
    parser.add_argument("--rttm", help="folder of reference RTTM files for DER")
    parser.add_argument("--collar", type=float, help="one custom DER setting: collar in seconds (pyannote.metrics)")
    parser.add_argument("--skip-overlap", action="store_true", help="one custom DER setting: do not score overlap")
    parser.add_argument("--uem", help="folder of UEM files: score only each recording's evaluated regions")
    parser.add_argument("--oracle-speech", action="store_true",
                        help="use the references' speech regions instead of the speech detector (DER without "
                        "detection errors: what clustering and resegmentation alone cost)")
    parser.add_argument("--out-dir", required=True, help="folder for per_file.csv, summary.json, summary.md")
    args = parser.parse_args(argv)
    if not args.trials and not (args.audio and args.rttm):
        parser.error("give --trials, or --audio and --rttm, or both")
    from data_prep.audio import AudioError, atomic_path
    from siamese.diarizer import Diarizer
    from siamese.metrics import DER_SETTINGS

    settings = DER_SETTINGS
    if args.collar is not None or args.skip_overlap:
        settings = {"custom": {"collar": args.collar or 0.0, "skip_overlap": args.skip_overlap}}
    try:
        diarizer = Diarizer.load(args.model)
        verification = score_trials(diarizer, args.trials) if args.trials else None
        uems = {}
        if args.uem:
            from data_prep.rttm import read_uem

            if not Path(args.uem).is_dir():
                raise ValueError(f"{args.uem}: not a folder of UEM files")
            for uem in sorted(Path(args.uem).glob("*.uem")):
                uems.update(read_uem(uem))
        rows = (score_recordings(diarizer, annotated_recordings(args.audio, args.rttm), settings, uems=uems,
                                 oracle_speech=args.oracle_speech) if args.audio else [])
    except (OSError, ValueError, AudioError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = summarize(rows) if rows else []
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rows:
        import pandas as pd

        with atomic_path(out_dir / "per_file.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.5f")
    report = {"model": str(args.model or "shipped"), "verification": verification, "diarization": summary}
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(markdown(summary, verification))
    print(markdown(summary, verification), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
