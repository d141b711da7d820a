"""Calibrate a model's thresholds on annotated development recordings (never the test set).

    python -m experiments.calibrate --model M --audio DIR --rttm DIR [--trials FILE] [--vad webrtc energy]

With `--vad`, first chooses the speech detector setting (among those of
experiments.compare_vad for the named detectors) with the lowest missed + false
alarm speech. Then chooses the agglomerative-clustering threshold (and, with `--windows`, the
embedding window, with `--min-cluster`, the least speech a speaker needs) that minimises the total DER
("full": collar 0, overlap scored) with the number of speakers estimated, and,
given labelled trials, the verification threshold at their equal error rate.
Both are stored in the model's sidecar JSON (`<model>.json`), next to the model.
"""

import argparse
import sys
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)


def embed_recordings(diarizer, recordings):
    """[(uri, Windows, reference)]: every recording embedded once, for many clustering settings."""
    return [(uri, diarizer.embed(path), reference) for uri, path, reference in recordings]


def sweep_threshold(diarizer, embedded, grid):
    """Total DER (full setting) for each threshold in `grid` over already embedded recordings.

    Neighbouring thresholds often give the same labels, so each distinct labelling is scored once.
    """
    import numpy as np

    from siamese.metrics import DER_SETTINGS, diarization_error

    scored_labels = {}
    totals = []
    for threshold in grid:
        errors = scored = 0.0
        for uri, windows, reference in embedded:
            labels = diarizer.cluster(windows.for_clustering, threshold=threshold, region_of=windows.region_of)
            key = (uri, labels.tobytes())
            if key not in scored_labels:
                hypothesis = diarizer.to_annotation(windows, labels, uri=uri)
                scored_labels[key] = diarization_error(reference, hypothesis, **DER_SETTINGS["full"])
            result = scored_labels[key]
            errors += result["der"] * result["scored_s"]
            scored += result["scored_s"]
        totals.append(errors / scored)
    return np.asarray(totals)


def der_by_count(diarizer, recordings, many, other="5to8"):
    """Each validation set's own DER (full, estimated count) at the chosen settings: 2-4 speakers and `many`.

    `other` names `many` in the keys: "5to8" (conversations of 5-8 speakers) or "rooms" (in reverberant rooms).
    """
    from experiments.evaluate import score_recordings, summarize
    from siamese.metrics import DER_SETTINGS

    def der(part):
        rows = score_recordings(diarizer, part, {"full": DER_SETTINGS["full"]}, speaker_counts=("estimated",))
        return summarize(rows)[0]["der"]

    return {"val_der_full_estimated_2to4": der(recordings), f"val_der_full_estimated_{other}": der(many)}


def by_count(calibration):
    """" (2-4 speakers x%, 5-8 speakers y%, in rooms z%)" for the sets calibration also used, else ""."""
    parts = [(key, label) for key, label in (("5to8", "5-8 speakers"), ("rooms", "in rooms"))
             if f"val_der_full_estimated_{key}" in calibration]
    if not parts:
        return ""
    return (f" (2-4 speakers {calibration['val_der_full_estimated_2to4']:.2%}"
            + "".join(f", {label} {calibration[f'val_der_full_estimated_{key}']:.2%}" for key, label in parts) + ")")


def calibrate_vad(diarizer, recordings, methods, speech_model=None):
    """Sets the detector setting with the lowest missed + false alarm speech; returns that row.

    `speech_model`: the learned detector's network, or a list of networks that the learned detector tries in
    turn (default experiments.compare_vad.SPEECH_MODEL); the row names the one chosen (`speech_model`).
    """
    from experiments.compare_vad import SPEECH_MODEL, compare, detector_options

    models = [speech_model] if speech_model is None or isinstance(speech_model, (str, Path)) else list(speech_model)
    best = None
    for index, network in enumerate(model or SPEECH_MODEL for model in models):
        tried = list(methods) if index == 0 else [method for method in methods if method == "learned"]
        if not tried:
            break
        rows, _ = compare(recordings, tried, diarizer.settings.sample_rate, speech_model=network)
        row = {**min(rows, key=lambda row: row["sum"]), "speech_model": str(network)}
        if best is None or row["sum"] < best["sum"]:
            best = row
    diarizer.settings.vad = detector_options(best["method"], best["setting"], best["speech_model"])
    return best


def calibrate_clustering(diarizer, recordings, windows_s, grid, penalties=None, min_clusters_s=None, smoothings=None,
                         cluster_windows_s=None):
    """Sets the (window, switch penalty, smallest speaker, smoothing, cluster window, threshold) with the lowest
    development DER; returns that DER.

    `penalties` (resegmentation switch penalties) are only tried when the settings resegment;
    `min_clusters_s` (the least speech a cluster needs to count as a speaker) default to the settings' own.
    `smoothings` (neighbours each side that clustering averages in, `DiarizerSettings.smooth_windows`) and
    `cluster_windows_s` (`DiarizerSettings.cluster_window_s`; None or the window's own length: the windows
    themselves) are tried in a second stage, each pair with every smallest speaker, at the window and penalty
    the first stage chose: the full product would multiply the time of calibration, already its longest step.
    The first stage keeps the settings' own smoothing if `smoothings` has it, else takes the first of them.
    """
    settings = diarizer.settings
    embedded, best = {}, None
    if smoothings and settings.smooth_windows not in smoothings:
        settings.smooth_windows = smoothings[0]  # the choice stays among the values given

    def sweep(window_s, penalty, min_cluster_s, smoothing, cluster_window_s):
        nonlocal best
        settings.window_s, settings.min_cluster_s, settings.smooth_windows = window_s, min_cluster_s, smoothing
        settings.cluster_window_s = cluster_window_s
        if penalty is not None:
            settings.resegment = {**settings.resegment, "switch_penalty": penalty}
        if (window_s, cluster_window_s) not in embedded:
            embedded[(window_s, cluster_window_s)] = embed_recordings(diarizer, recordings)
        totals = sweep_threshold(diarizer, embedded[(window_s, cluster_window_s)], grid)
        if best is None or totals.min() < best[0]:
            best = (float(totals.min()), window_s, penalty, min_cluster_s, smoothing, cluster_window_s,
                    round(float(grid[int(totals.argmin())]), 4))

    for window_s in windows_s:
        cluster_window_s = None if settings.cluster_window_s == window_s else settings.cluster_window_s
        for penalty in (penalties or [None]) if settings.resegment else [None]:
            for min_cluster_s in min_clusters_s or [settings.min_cluster_s]:
                sweep(window_s, penalty, min_cluster_s, settings.smooth_windows, cluster_window_s)
        embedded = {key: value for key, value in embedded.items() if key[0] == best[1]}  # one window's at a time
    first = best
    cluster_windows = {None if length in (None, first[1]) else float(length) for length in cluster_windows_s or []}
    for smoothing in smoothings or [first[4]]:
        for cluster_window_s in sorted(cluster_windows | {first[5]}, key=lambda length: length or 0.0):
            if (smoothing, cluster_window_s) != (first[4], first[5]):
                for min_cluster_s in min_clusters_s or [first[3]]:
                    sweep(first[1], first[2], min_cluster_s, smoothing, cluster_window_s)
    _, settings.window_s, penalty, settings.min_cluster_s, settings.smooth_windows, settings.cluster_window_s, \
        settings.threshold = best
    if penalty is not None:
        settings.resegment = {**settings.resegment, "switch_penalty": penalty}
    return best[0]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="embedding tower .keras (default: the shipped model)")
    parser.add_argument("--audio", required=True, help="folder of development recordings (wav/flac)")
    parser.add_argument("--rttm", required=True, help="folder of their reference RTTM files")
    parser.add_argument("--trials", help="labelled development trials for the verification threshold")
    parser.add_argument("--grid", type=float, nargs=3, default=(0.1, 1.8, 0.02), metavar=("START", "STOP", "STEP"),
                        help="thresholds to try (default 0.1 1.8 0.02)")
    parser.add_argument("--windows", type=float, nargs="+", help="embedding window lengths to try, in seconds "
                        "(default: keep the model's)")
    parser.add_argument("--min-cluster", type=float, nargs="+", metavar="SECONDS",
                        help="least speech a cluster needs to count as a speaker, values to try "
                        "(default: keep the model's)")
    parser.add_argument("--smooth", type=int, nargs="+", metavar="K",
                        help="neighbouring windows each side that clustering averages in, values to try "
                        "(default: keep the model's)")
    parser.add_argument("--cluster-window", type=float, nargs="+", metavar="SECONDS",
                        help="lengths of the windows clustering compares (the window's own length: the windows "
                        "themselves), values to try (default: keep the model's)")
    parser.add_argument("--vad", nargs="+", choices=("energy", "spectral", "learned", "webrtc", "webrtc-trimmed", "silero"),
                        help="speech detectors whose settings to try (default: keep the model's)")
    parser.add_argument("--speech-model", help="the learned detector's network (default models/speech_detector_rooms.keras)")
    args = parser.parse_args(argv)
    import numpy as np

    from data_prep.audio import AudioError, atomic_path
    from experiments.evaluate import annotated_recordings, score_trials
    from siamese.diarizer import DEFAULT_MODEL, Diarizer, sidecar_path

    try:
        diarizer = Diarizer.load(args.model)
        grid = np.arange(*args.grid)
        recordings = annotated_recordings(args.audio, args.rttm)
        if args.vad:
            vad = calibrate_vad(diarizer, recordings, args.vad, args.speech_model)
            print(f"speech detection {diarizer.settings.vad} (development missed {vad['missed']:.2%}, "
                  f"false alarm {vad['false_alarm']:.2%})")
        der = calibrate_clustering(diarizer, recordings, args.windows or [diarizer.settings.window_s], grid,
                                   min_clusters_s=args.min_cluster, smoothings=args.smooth,
                                   cluster_windows_s=args.cluster_window)
        if args.trials:
            diarizer.settings.verification_threshold = score_trials(diarizer, args.trials)["eer_threshold"]
    except (OSError, ValueError, AudioError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with atomic_path(sidecar_path(args.model or DEFAULT_MODEL)) as tmp:
        diarizer.settings.to_file(tmp)
    print(f"window {diarizer.settings.window_s} s, clustering threshold {diarizer.settings.threshold}, "
          f"smallest speaker {diarizer.settings.min_cluster_s} s, {diarizer.settings.smooth_windows} neighbours averaged, "
          f"cluster windows {diarizer.settings.cluster_window_s or diarizer.settings.window_s} s (development DER full, estimated count: {der:.2%})")
    if args.trials:
        print(f"verification threshold {diarizer.settings.verification_threshold:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
