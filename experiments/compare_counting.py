"""How many speakers? Compare speaker-count estimators on annotated recordings.

    python -m experiments.compare_counting --audio DIR --rttm DIR [--model M] [--out results/speaker_count.md]

For each estimator (the calibrated AHC threshold, the same threshold with other values of
the least speech a cluster needs to be a speaker, and the eigengap of a pruned
affinity matrix at several pruning levels) prints how often the count is exactly
right and the resulting DER (full: collar 0, overlap scored). Embeddings are
computed once per recording. Choose on development data, never on test data.
"""

import argparse
import sys
from dataclasses import replace
from datetime import date

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)

# (speaker_count, other settings): the calibrated threshold with the model's own smallest speaker, the same
# threshold with other smallest speakers, and the eigengap estimator at several pruning levels.
ESTIMATORS = [("threshold", {}), *[("threshold", {"min_cluster_s": seconds}) for seconds in (2.0, 3.0, 4.0, 5.0)],
              *[("eigengap", {"eigengap_prune": prune}) for prune in (0.1, 0.2, 0.3)]]

NAMES = {"min_cluster_s": "smallest speaker {} s", "eigengap_prune": "prune {}"}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.compare_counting", description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", required=True, help="folder of development recordings (wav/flac)")
    parser.add_argument("--rttm", required=True, help="folder of their reference RTTM files")
    parser.add_argument("--model", help="embedding tower .keras (default: the shipped model)")
    parser.add_argument("--out", default="results/speaker_count.md", help="Markdown table to write")
    args = parser.parse_args(argv)
    from data_prep.audio import AudioError, atomic_path
    from experiments.evaluate import annotated_recordings
    from siamese.diarizer import Diarizer
    from siamese.metrics import DER_SETTINGS, diarization_error

    try:
        diarizer = Diarizer.load(args.model)
        recordings = [(uri, diarizer.embed(path), reference)
                      for uri, path, reference in annotated_recordings(args.audio, args.rttm)]
    except (OSError, ValueError, AudioError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    lines = [f"Speaker-count estimators on {len(recordings)} recordings of `{args.audio}` "
             f"({date.today().isoformat()}, `python -m experiments.compare_counting --audio {args.audio} --rttm {args.rttm}`)",
             "", "| estimator | count exact | DER full |", "|---|---|---|"]
    shipped = diarizer.settings
    for method, options in ESTIMATORS:
        if options.get("min_cluster_s") == shipped.min_cluster_s:
            continue  # the first row already has it
        diarizer.settings = replace(shipped, speaker_count=method, **options)
        exact, errors, scored = 0, 0.0, 0.0
        for uri, windows, reference in recordings:
            hypothesis = diarizer.to_annotation(windows, diarizer.cluster(windows.for_clustering, region_of=windows.region_of), uri=uri)
            exact += len(hypothesis.labels()) == len(reference.labels())
            result = diarization_error(reference, hypothesis, **DER_SETTINGS["full"])
            errors, scored = errors + result["der"] * result["scored_s"], scored + result["scored_s"]
        name = method + "".join(f" ({NAMES[key].format(value)})" for key, value in options.items())
        if not options:
            name += f" (calibrated, smallest speaker {shipped.min_cluster_s} s)"
        lines.append(f"| {name} | {exact}/{len(recordings)} ({exact / len(recordings):.0%}) | {errors / scored:.2%} |")
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
