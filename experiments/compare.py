"""Evaluation of different models: train each on one split with one budget, measure each the same way.

    python -m experiments.compare --config experiments/configs/compare.yaml
    python -m experiments.compare --config experiments/configs/compare.yaml --quick
    python -m experiments.compare --config experiments/configs/compare.yaml --models sincnet wav2vec --seeds 0

For every model and seed: train (skipped when the run folder already holds a
tower; resumed when it holds a partial run), then calibrate the clustering
threshold and window on simulated conversations of the validation speakers,
and measure on the test speakers: verification EER, minDCF and pair accuracy
at the validation threshold, DER full and forgiving with oracle and estimated
speaker count, the real-time factor, parameters and training time. Writes
`runs.csv` (one row per run) and `comparison.csv` / `comparison.md` (mean and
standard deviation over seeds per model) under `results_dir`.

`--quick` runs every model for a few steps on a 16-speaker subset, with tiny
held-out sets and no pretraining, into `<output_dir>_quick/` (never into the
committed results): it checks the whole path in minutes, its numbers mean nothing.
"""

import argparse
import json
import logging
import sys
import time
from datetime import date
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)
from data_prep.audio import AudioError, atomic_path
from experiments.config import ConfigError, load_config

logger = logging.getLogger("experiments.compare")
VAL_SEED, TEST_SEED, TRIALS_SEED, BENCHMARK_SEED = 1, 2, 3, 7000
PENALTIES = (0.5, 1.0, 2.0)  # resegmentation switch penalties tried during calibration
# Columns of the tables: (key in a run's result, header, format).
METRICS = [
    ("params", "parameters", "{:,.0f}"),
    ("train_min", "training (min)", "{:.1f}"),
    ("eer", "EER", "{:.2%}"),
    ("min_dcf", "minDCF(0.01)", "{:.3f}"),
    ("pair_accuracy", "pair accuracy", "{:.1%}"),
    ("der_full_oracle", "DER full, oracle", "{:.2%}"),
    ("der_full_estimated", "DER full, estimated", "{:.2%}"),
    ("der_forgiving_oracle", "DER forgiving, oracle", "{:.2%}"),
    ("der_forgiving_estimated", "DER forgiving, estimated", "{:.2%}"),
    ("count_exact", "count exact", "{:.0%}"),
    ("rtf", "RTF", "{:.4f}"),
]
COMPARE_KEYS = {"split_seed", "seeds", "output_dir", "results_dir", "budget", "evaluation", "pretrain", "models"}


def load_compare_config(path):
    """The comparison config, checked: every key present, every model config readable."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict) or set(config) != COMPARE_KEYS:
        found = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ConfigError(f"{path}: expected the keys {sorted(COMPARE_KEYS)}, found {found}")
    if not config["seeds"] or not all(isinstance(seed, int) for seed in config["seeds"]):
        raise ConfigError(f"{path}: seeds must be a non-empty list of integers")
    if not isinstance(config["models"], dict) or not config["models"]:
        raise ConfigError(f"{path}: models must map names to training configs")
    for name in config["models"]:
        load_config(model_entry(config, name)["config"])  # raises a ConfigError naming the file
    return config


def quick_dataset(root, out_dir, speakers=16):
    """A LibriSpeech-layout folder of links to the first `speakers` speakers (nothing copied)."""
    source = Path(root) / "train-clean-100"
    target = Path(out_dir) / "LibriSpeech"
    (target / "train-clean-100").mkdir(parents=True, exist_ok=True)
    for speaker in sorted(path for path in source.iterdir() if path.is_dir())[:speakers]:
        link = target / "train-clean-100" / speaker.name
        if not link.exists():
            link.symlink_to(speaker.resolve(), target_is_directory=True)
    if not (target / "SPEAKERS.TXT").exists() and (Path(root) / "SPEAKERS.TXT").is_file():
        (target / "SPEAKERS.TXT").symlink_to((Path(root) / "SPEAKERS.TXT").resolve())
    return target


def model_entry(compare, name):
    """A model entry as a dict: `config` (training YAML), optional `preset` and `training`
    overrides (ablations), and an optional evaluation `window_s`."""
    entry = compare["models"][name]
    entry = {"config": entry} if isinstance(entry, str) else dict(entry)
    unknown = set(entry) - {"config", "preset", "training", "window_s"}
    if "config" not in entry or unknown:
        raise ConfigError(f"models.{name}: needs 'config' and may add 'preset', 'training', 'window_s'; "
                          f"unknown {sorted(unknown)}")
    return entry


def merged(base, overrides):
    """`base` with `overrides` applied, nested mappings merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run_config(compare, name, seed, quick):
    """One model's training config with the comparison's seed, split, budget and folder."""
    from experiments.train import check_preset

    entry = model_entry(compare, name)
    config = load_config(entry["config"])
    budget = compare["budget"]
    config["seed"] = seed
    config["data"]["split_seed"] = compare["split_seed"]
    config["output_dir"] = str(Path(compare["output_dir"]) / f"{name}_seed{seed}")
    config["training"] = merged(config["training"], entry.get("training", {}))
    training = config["training"]
    if entry.get("preset"):
        # An ablation: the model's preset with some numbers changed, written beside the run.
        import yaml

        from sincnet_keras import load_preset

        preset = merged(load_preset(config["model"]["preset"]), entry["preset"])
        path = Path(config["output_dir"]) / "preset.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            with atomic_path(path) as tmp:
                tmp.write_text(yaml.safe_dump(preset, sort_keys=False))
        config["model"]["preset"] = str(path)
    check_preset(config, entry["config"])
    training.update(epochs=budget["epochs"], pairs_per_epoch=budget["pairs_per_epoch"], patience=budget["patience"],
                    noise_prob=budget["noise_prob"], noise_snr_low=budget["noise_snr_low"],
                    noise_snr_high=budget["noise_snr_high"])
    if quick:
        config["data"].update(root=compare["quick_root"], val_speakers=3, test_speakers=3)
        training.update(pairs_per_epoch=2 * training["batch_size"], val_pairs=training["batch_size"])
        config["model"]["frontend_weights"] = ""  # no pretraining in quick mode: a random frozen front end
    return config


def heldout_sets(manifests, out_dir, evaluation, quick):
    """Validation and test conversations, trials and a benchmark recording, simulated once at 16 kHz."""
    from data_prep.simulate import write_conversations
    from data_prep.trials import write_trials
    from experiments.benchmark import long_recording
    from experiments.evaluate import annotated_recordings

    out_dir = Path(out_dir)
    segments = 2 if quick else 6
    sets = {}
    for split, count, seed in (("val", evaluation["val_conversations"], VAL_SEED),
                               ("test", evaluation["test_conversations"], TEST_SEED)):
        folder = out_dir / f"{split}_conversations"
        if not folder.is_dir():
            write_conversations(manifests[split], folder, num_conversations=count, seed=seed, sample_rate=16000,
                                reference=evaluation.get("reference", "speech"))
        trials = out_dir / f"{split}_trials" / "trials.txt"
        if not trials.is_file():
            trials = write_trials(manifests[split], out_dir / f"{split}_trials", sample_rate=16000, seed=TRIALS_SEED,
                                  max_segments_per_speaker=segments)
        sets[split] = (annotated_recordings(folder, folder), trials)
    wav, _ = long_recording(manifests["test"], evaluation["benchmark_minutes"], out_dir, 16000, seed=BENCHMARK_SEED)
    return sets, wav


def evaluate_run(run_dir, sets, benchmark_wav, evaluation, margin):
    """Calibrates on validation speakers and measures on test speakers; returns one result row."""
    import numpy as np
    import pandas as pd

    from experiments.calibrate import calibrate_clustering
    from experiments.evaluate import score_recordings, score_trials, summarize
    from experiments.release import training_facts
    from siamese.diarizer import Diarizer
    from siamese.metrics import DER_SETTINGS

    diarizer = Diarizer.load(run_dir / "tower.keras")
    if "vad" in evaluation:  # the same speech detection for every model and seed
        diarizer.settings.vad = dict(evaluation["vad"])
    fixed = diarizer.tower.input_shape[1] is not None
    window = diarizer.settings.window_s if fixed else evaluation["window_s"]
    # Thresholds scale with the embedding: [0, 2] when L2-normalised, else up to twice the contrastive margin.
    normalised = any(layer.name == "l2_normalize" for layer in diarizer.tower.layers)
    grid = np.arange(0.02, 2.0, 0.02) * (1.0 if normalised else margin)
    val_recordings, val_trials = sets["val"]
    val_der = calibrate_clustering(diarizer, val_recordings, [window], grid, PENALTIES)
    diarizer.settings.verification_threshold = score_trials(diarizer, val_trials)["eer_threshold"]
    test_recordings, test_trials = sets["test"]
    scores = []
    verification = score_trials(diarizer, test_trials, scores)
    pd.DataFrame(scores, columns=["distance", "label"]).to_csv(run_dir / "test_scores.csv", index=False)
    summary = {(row["setting"], row["speakers"]): row
               for row in summarize(score_recordings(diarizer, test_recordings, DER_SETTINGS))}
    rtf = real_time_factor(diarizer, benchmark_wav)
    facts = training_facts(run_dir)
    return {
        "params": diarizer.tower.count_params(),
        "trainable_params": int(sum(np.prod(weight.shape) for weight in diarizer.tower.trainable_weights)),
        "train_min": facts["train_wall_s"] / 60, "epochs_run": facts["epochs_run"], "best_epoch": facts["best_epoch"],
        "window_s": window, "threshold": diarizer.settings.threshold, "val_der_full_estimated": val_der,
        "eer": verification["eer"], "min_dcf": verification["min_dcf_p0.01"],
        "pair_accuracy": verification["accuracy_at_threshold"],
        **{f"der_{setting}_{count}": summary[(setting, count)]["der"]
           for setting in DER_SETTINGS for count in ("oracle", "estimated")},
        "count_exact": summary[("full", "estimated")]["count_exact"], "rtf": rtf,
    }


def real_time_factor(diarizer, wav):
    """End-to-end diarization wall time over audio duration (the second of two runs: no tracing)."""
    import soundfile

    diarizer.diarize(wav)
    started = time.perf_counter()
    diarizer.diarize(wav)
    return (time.perf_counter() - started) / soundfile.info(str(wav)).duration


def retime(run_dir, result, benchmark_wav, vad=None):
    """The real-time factor again, with the calibrated window and threshold (for a quiet machine)."""
    from siamese.diarizer import Diarizer

    diarizer = Diarizer.load(run_dir / "tower.keras")
    if vad:
        diarizer.settings.vad = dict(vad)
    diarizer.settings.window_s, diarizer.settings.threshold = result["window_s"], result["threshold"]
    return real_time_factor(diarizer, benchmark_wav)


def comparison_tables(runs, models, command):
    """Mean and standard deviation per model (CSV frame and Markdown text)."""
    import pandas as pd

    rows, lines = [], []
    header = "| model | seeds | " + " | ".join(title for _, title, _ in METRICS) + " |"
    lines += [header, "|" + "---|" * (len(METRICS) + 2)]
    for name in models:
        group = runs[runs["model"] == name] if len(runs) else runs
        if group.empty:
            rows.append({"model": name, "seeds": 0})
            lines.append(f"| {name} | 0 | " + " | ".join("missing" for _ in METRICS) + " |")
            continue
        row, cells = {"model": name, "seeds": len(group)}, []
        for key, _, fmt in METRICS:
            values = group[key].astype(float)
            row[f"{key}_mean"], row[f"{key}_std"] = values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0
            spread = f" ± {fmt.format(row[f'{key}_std'])}" if len(values) > 1 and key != "params" else ""
            cells.append(fmt.format(row[f"{key}_mean"]) + spread)
        rows.append(row)
        lines.append(f"| {name} | {len(group)} | " + " | ".join(cells) + " |")
    table = pd.DataFrame(rows)
    lines += ["", "Mean ± standard deviation over seeds. EER, minDCF and pair accuracy on trials of 2 s segments of "
              "held-out test speakers; DER on simulated test conversations: full = collar 0, overlap scored; "
              "forgiving = collar 0.25 s, overlap skipped; RTF = end-to-end wall time / audio duration on the "
              "benchmark recording, 2-core CPU.", ""]
    lines += differences(table)
    lines += ["", f"Produced by `{command}` on {date.today().isoformat()}."]
    return table, "\n".join(lines) + "\n"


def differences(table):
    """Sentences naming which gaps to the best model exceed the seeds' spread (sum of standard deviations).

    Gaps between error rates are differences of percentages: percentage points ("pts").
    """
    lines = []

    def points(value, fmt):
        return fmt.format(value).replace("%", " pts")

    for key, title, fmt in METRICS:
        if key not in ("eer", "der_full_estimated", "der_full_oracle") or f"{key}_mean" not in table:
            continue
        present = table.dropna(subset=[f"{key}_mean"])
        if len(present) < 2:
            continue
        best = present.loc[present[f"{key}_mean"].idxmin()]
        for _, other in present.iterrows():
            if other["model"] == best["model"]:
                continue
            gap = other[f"{key}_mean"] - best[f"{key}_mean"]
            if min(best["seeds"], other["seeds"]) < 2:
                lines.append(f"- {title}: {best['model']} is lower than {other['model']} by {points(gap, fmt)} "
                             "(one seed: the spread is unknown).")
                continue
            spread = best[f"{key}_std"] + other[f"{key}_std"]
            verdict = "larger than" if gap > spread else "within"
            lines.append(f"- {title}: {best['model']} is lower than {other['model']} by {points(gap, fmt)}, "
                         f"{verdict} the spread (sum of the two standard deviations, {points(spread, fmt)}).")
    return lines


def compare(compare_config, quick=False, models=None, seeds=None, command="", retime_speed=False, collect=False):
    """Trains and evaluates every (model, seed); returns the results folder."""
    import pandas as pd

    from experiments.pretrain_wav2vec import pretrain
    from experiments.train import prepare_manifests, train

    models = models or list(compare_config["models"])
    unknown = sorted(set(models) - set(compare_config["models"]))
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; the config has {sorted(compare_config['models'])}")
    seeds = seeds if seeds is not None else compare_config["seeds"][:1] if quick else compare_config["seeds"]
    evaluation = dict(compare_config["evaluation"])
    if quick:
        out = Path(f"{compare_config['output_dir'].rstrip('/')}_quick")
        compare_config = {**compare_config, "output_dir": str(out), "results_dir": str(out / "results"),
                          "budget": {**compare_config["budget"], "epochs": 1},
                          "quick_root": str(quick_dataset(
                              load_config(model_entry(compare_config, models[0])["config"])["data"]["root"], out / "data"))}
        evaluation.update(val_conversations=2, test_conversations=2, benchmark_minutes=0.25)
    out_dir, results_dir = Path(compare_config["output_dir"]), Path(compare_config["results_dir"])
    first = run_config(compare_config, models[0], seeds[0], quick)
    manifests = prepare_manifests({**first, "seed": compare_config["split_seed"]}, out_dir)
    sets, benchmark_wav = heldout_sets(manifests, out_dir / "heldout", evaluation, quick)
    rows = []
    for name in models:
        for seed in seeds:
            config = run_config(compare_config, name, seed, quick)
            run_dir = Path(config["output_dir"])
            if collect and not (run_dir / "comparison.json").is_file():
                logger.info("%s, seed %d: not evaluated here (a row of an earlier runs.csv is kept)", name, seed)
                continue
            weights = config["model"]["frontend_weights"]
            if weights and not Path(weights).is_file():
                logger.info("%s needs %s: pretraining first", name, weights)
                pretrain(load_config(compare_config["pretrain"], **pretrain_schema()))
            if not (run_dir / "tower.keras").is_file():
                logger.info("training %s, seed %d", name, seed)
                (run_dir / "manifests").mkdir(parents=True, exist_ok=True)
                for split in ("train", "val", "test"):  # the shared split: no second scan of the dataset
                    target = run_dir / "manifests" / f"{split}.csv"
                    if not target.is_file():
                        with atomic_path(target) as tmp:
                            tmp.write_bytes((out_dir / "manifests" / f"{split}.csv").read_bytes())
                train(config, resume=(run_dir / "log.csv").is_file(), verbose=0)
            result_file = run_dir / "comparison.json"
            if result_file.is_file() and result_file.stat().st_mtime >= (run_dir / "tower.keras").stat().st_mtime:
                result = json.loads(result_file.read_text())
                if retime_speed:
                    logger.info("timing %s, seed %d", name, seed)
                    result["rtf"] = retime(run_dir, result, benchmark_wav, evaluation.get("vad"))
                    with atomic_path(result_file) as tmp:
                        tmp.write_text(json.dumps(result, indent=2))
            else:
                logger.info("evaluating %s, seed %d", name, seed)
                window = {"window_s": model_entry(compare_config, name).get("window_s", evaluation["window_s"])}
                result = evaluate_run(run_dir, sets, benchmark_wav, {**evaluation, **window},
                                      config["training"]["margin"])
                with atomic_path(result_file) as tmp:
                    tmp.write_text(json.dumps(result, indent=2))
            rows.append({"model": name, "seed": seed, **result})
            scores = results_dir / "scores" / f"{name}_seed{seed}.csv"  # trial distances, for ROC/DET curves
            scores.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(scores) as tmp:
                tmp.write_bytes((run_dir / "test_scores.csv").read_bytes())
    runs = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["model", "seed", *(key for key, _, _ in METRICS)])
    if not quick:  # the table covers every configured model, however few were run now
        models = list(compare_config["models"])
        runs = with_earlier_rows(runs, results_dir / "runs.csv", models=models)
    table, text = comparison_tables(runs, models, command)
    results_dir.mkdir(parents=True, exist_ok=True)
    for file_name, write in (("runs.csv", lambda tmp: runs.to_csv(tmp, index=False, float_format="%.6g")),
                             ("comparison.csv", lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g")),
                             ("comparison.md", lambda tmp: tmp.write_text(text))):
        with atomic_path(results_dir / file_name) as tmp:
            write(tmp)
    return results_dir, text


def with_earlier_rows(runs, runs_csv, models):
    """`runs` plus the rows of an earlier `runs.csv` for (model, seed) pairs not measured now.

    Runs are measured a few at a time (and their folders under runs/ may be gone on a new
    machine); the committed table keeps every row measured so far, for models still configured."""
    import pandas as pd

    if not Path(runs_csv).is_file():
        return runs
    earlier = pd.read_csv(runs_csv)
    measured = set(zip(runs["model"], runs["seed"].astype(int)))
    keep = [(model in models and (model, int(seed)) not in measured)
            for model, seed in zip(earlier["model"], earlier["seed"])]
    merged_runs = pd.concat([runs, earlier[keep]], ignore_index=True) if any(keep) else runs
    order = {name: index for index, name in enumerate(models)}
    return merged_runs.sort_values(["model", "seed"], key=lambda column: column.map(order)
                                   if column.name == "model" else column).reset_index(drop=True)


def pretrain_schema():
    from experiments.config import PRETRAIN_SCHEMA

    return {"schema": PRETRAIN_SCHEMA, "optional": {}}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="comparison YAML (experiments/configs/compare.yaml)")
    parser.add_argument("--quick", action="store_true", help="a few steps per model on 16 speakers: checks the path")
    parser.add_argument("--models", nargs="+", help="only these models (names from the config)")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds")
    parser.add_argument("--collect", action="store_true",
                        help="only tabulate runs already evaluated (train nothing); the others show as missing")
    parser.add_argument("--retime", action="store_true",
                        help="measure the real-time factor of already evaluated runs again (run it on a quiet machine)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = "python -m experiments.compare " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        config = load_compare_config(args.config)
        results_dir, text = compare(config, quick=args.quick, models=args.models, seeds=args.seeds, command=command,
                                    retime_speed=args.retime, collect=args.collect)
    except (ConfigError, ValueError, OSError, AudioError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    print(text, end="")
    print(f"wrote {results_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
