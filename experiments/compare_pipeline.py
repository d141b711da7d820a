"""What each step of the diarization pipeline buys in DER.

    python -m experiments.compare_pipeline --dev DIR --test DIR [--model M] [--out results/pipeline_steps.md]

The steps are added one at a time (`STEPS`, cumulative). For each one the
embedding window, the clustering threshold, once resegmentation is on its
switch penalty, and in the last step the least speech a speaker needs are calibrated on the development recordings (validation
speakers) exactly as `experiments.calibrate` does; then the test recordings
(test speakers) are scored with the oracle and the estimated number of
speakers. Speech detection is the model's setting throughout. Writes a
Markdown table and a CSV beside it.
"""

import argparse
import datetime
import sys
from dataclasses import replace
from pathlib import Path

import experiments  # first: quiets TensorFlow before it is imported

# Cumulative pipeline steps: (label, settings changed from the step before). "min_clusters_s" is not a
# setting but the values of the least speech a speaker needs that calibration tries (else 2 s, the old fixed value).
STEPS = [
    ("windows, AHC threshold, nearest-window turns",
     {"center": False, "clustering": "ahc", "resegment": None, "min_cluster_s": 2.0}),
    ("+ embeddings centred per recording", {"center": True}),
    ("+ spectral split (count from AHC)", {"clustering": "spectral"}),
    ("+ frame-level Viterbi resegmentation", {"resegment": {"frame_s": 0.05, "switch_penalty": 1.0}}),
    ("+ smallest speaker calibrated (2-5 s)", {"min_clusters_s": (2.0, 3.0, 4.0, 5.0)}),
]
WINDOWS_S = (1.0, 1.5)
GRID = (0.1, 1.8, 0.02)
PENALTIES = (0.5, 1.0, 2.0)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.compare_pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="embedding tower .keras with its sidecar (default: the shipped model)")
    parser.add_argument("--dev", required=True, help="folder of development recordings + RTTM (validation speakers)")
    parser.add_argument("--test", required=True, help="folder of test recordings + RTTM (test speakers)")
    parser.add_argument("--out", default="results/pipeline_steps.md", help="Markdown table (a .csv is written beside it)")
    args = parser.parse_args(argv)
    import numpy as np
    import pandas as pd

    from data_prep.audio import AudioError, atomic_path
    from experiments.calibrate import calibrate_clustering
    from experiments.evaluate import annotated_recordings, score_recordings, summarize
    from siamese.diarizer import Diarizer
    from siamese.metrics import DER_SETTINGS

    try:
        diarizer = Diarizer.load(args.model)
        dev = annotated_recordings(args.dev, args.dev)
        test = annotated_recordings(args.test, args.test)
    except (OSError, ValueError, AudioError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    settings, rows = diarizer.settings, []
    for label, change in STEPS:
        change = dict(change)
        min_clusters_s = change.pop("min_clusters_s", None)
        settings = replace(settings, **change)
        diarizer.settings = replace(settings)
        dev_der = calibrate_clustering(diarizer, dev, WINDOWS_S, np.arange(*GRID), PENALTIES, min_clusters_s)
        summary = {(row["setting"], row["speakers"]): row for row in summarize(score_recordings(diarizer, test, DER_SETTINGS))}
        rows.append({
            "step": label, "window_s": diarizer.settings.window_s, "threshold": diarizer.settings.threshold,
            "switch_penalty": (diarizer.settings.resegment or {}).get("switch_penalty"),
            "min_cluster_s": diarizer.settings.min_cluster_s, "dev_der_full_est": dev_der,
            **{f"test_der_{setting}_{count[:3]}": summary[(setting, count)]["der"]
               for setting in DER_SETTINGS for count in ("oracle", "estimated")},
            "test_confusion_full_est": summary[("full", "estimated")]["confusion"],
            "test_count_exact": summary[("full", "estimated")]["count_exact"],
        })
        print(f"{label}: dev {dev_der:.2%}, test full est {rows[-1]['test_der_full_est']:.2%}", flush=True)
    table = pd.DataFrame(rows)
    lines = [
        "# What each pipeline step buys", "",
        f"- command: `{experiments.command_line('experiments.compare_pipeline', argv)}`",
        f"- date: {datetime.date.today().isoformat()}; model: `{args.model or 'shipped'}`; speech detection: `{settings.vad}`",
        f"- development (calibration of window, threshold, switch penalty): {len(dev)} recordings in `{args.dev}`; "
        f"test: {len(test)} recordings in `{args.test}`",
        "- DER full: collar 0, overlap scored; forgiving: collar 0.25 s, overlap skipped; est = estimated speaker count", "",
        "| step | window s | threshold | switch penalty | smallest speaker s | dev DER full est | test DER full est | "
        "test DER full oracle | test DER forgiving est | test confusion full est | test count exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r.step} | {r.window_s:g} | {r.threshold:g} | {'' if pd.isna(r.switch_penalty) else f'{r.switch_penalty:g}'} | "
              f"{r.min_cluster_s:g} | "
              f"{r.dev_der_full_est:.2%} | {r.test_der_full_est:.2%} | {r.test_der_full_ora:.2%} | "
              f"{r.test_der_forgiving_est:.2%} | {r.test_confusion_full_est:.2%} | {r.test_count_exact:.0%} |"
              for r in table.itertuples()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.5f")
    print("\n".join(lines[-len(rows) - 2:]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
