"""Train a SincNet Siamese model with contrastive loss on same/different-speaker pairs.

    python -m experiments.train --config experiments/configs/sincnet_default.yaml
    python -m experiments.train --config experiments/configs/sincnet_default.yaml --resume

The run folder (`output_dir` in the config) receives the resolved config, the
speaker-disjoint manifests, `log.csv`, `checkpoints/last.keras` (every epoch,
with optimizer state, for `--resume`), `checkpoints/best.keras` (lowest
validation loss over speakers never seen in training) and `tower.keras`, the
embedding tower of the best epoch, which is what diarization loads.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)
from experiments.config import ConfigError, dump_config, load_config

logger = logging.getLogger("experiments.train")


def prepare_manifests(config, run_dir):
    """Scans the dataset once and writes the seeded speaker-disjoint split."""
    from data_prep.manifest import read_manifest, scan_folders, scan_librispeech, write_manifest
    from data_prep.split import split_speakers

    manifest_dir = run_dir / "manifests"
    names = ("train", "val", "test")
    if all((manifest_dir / f"{name}.csv").is_file() for name in names):
        return {name: read_manifest(manifest_dir / f"{name}.csv") for name in names}
    data = config["data"]
    scanners = {"librispeech": scan_librispeech, "folders": scan_folders}
    if data["format"] not in scanners:
        raise ConfigError(f"data.format must be one of {sorted(scanners)}, got {data['format']!r}")
    manifest = scanners[data["format"]](data["root"])
    splits = split_speakers(
        manifest, val_speakers=data["val_speakers"], test_speakers=data["test_speakers"], seed=config["seed"]
    )
    for name in names:
        write_manifest(splits[name], manifest_dir / f"{name}.csv")
    return splits


def make_pairs(manifests, config):
    """Fresh training pairs for every epoch, one fixed validation set; all seeded."""

    from data_prep.pairs import sample_pairs

    training, seed = config["training"], config["seed"]
    per_epoch = training["pairs_per_epoch"] // training["batch_size"] * training["batch_size"]
    train_pairs = [sample_pairs(manifests["train"], per_epoch, seed=[seed, epoch]) for epoch in range(training["epochs"])]
    val_pairs = sample_pairs(manifests["val"], training["val_pairs"], seed=[seed, 1_000_003])
    return train_pairs, val_pairs, per_epoch // training["batch_size"]


def completed_epochs(log_path):
    """Epochs already finished according to the CSV log, and their validation losses."""
    if not log_path.is_file():
        return []
    import pandas as pd

    log = pd.read_csv(log_path)
    return log["val_loss"].tolist() if "val_loss" in log else []


def build_callbacks(run_dir, training, val_losses):
    import keras

    class ResumableEarlyStopping(keras.callbacks.Callback):
        """Early stopping whose patience survives `--resume` (state comes from log.csv)."""

        def __init__(self):
            super().__init__()
            self.best = min(val_losses, default=float("inf"))
            best_index = val_losses.index(self.best) if val_losses else -1
            self.wait = len(val_losses) - 1 - best_index if val_losses else 0

        def on_epoch_end(self, epoch, logs=None):
            if logs["val_loss"] < self.best:
                self.best, self.wait = logs["val_loss"], 0
            else:
                self.wait += 1
                if self.wait >= training["patience"]:
                    logger.info("early stopping: no lower validation loss for %d epochs", training["patience"])
                    self.model.stop_training = True

    best = min(val_losses, default=None)
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(run_dir / "checkpoints" / "last.keras")),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "checkpoints" / "best.keras"), monitor="val_loss", save_best_only=True,
            initial_value_threshold=best,
        ),
        keras.callbacks.CSVLogger(str(run_dir / "log.csv"), append=True),
        ResumableEarlyStopping(),
    ]
    if training["lr_decay_patience"] > 0:
        # Shrink the step size when validation stalls; the rate lives in the optimizer, so it survives --resume.
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            factor=training["lr_decay_factor"], patience=training["lr_decay_patience"],
            min_lr=training["learning_rate"] / 64))
    return callbacks


def train(config, resume=False, verbose=2):
    """Runs one training described by a validated config; returns the run folder."""
    import keras

    from data_prep.pipeline import pair_dataset
    from siamese.losses import ContrastiveLoss
    from siamese.metrics import PairAccuracy
    from siamese.model import build_siamese, tower_of
    from sincnet_keras import build_encoder, load_preset

    run_dir = Path(config["output_dir"])
    checkpoint = run_dir / "checkpoints" / "last.keras"
    if run_dir.exists() and not resume and (run_dir / "log.csv").exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume or choose another output_dir")
    preset = load_preset(config["model"]["preset"])
    training = config["training"]
    keras.utils.set_random_seed(config["seed"])

    manifests = prepare_manifests(config, run_dir)  # fails on a bad dataset before anything is written
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    train_pairs, val_pairs, steps = make_pairs(manifests, config)
    val_losses = completed_epochs(run_dir / "log.csv") if resume else []
    initial_epoch = len(val_losses)
    if resume and initial_epoch and checkpoint.is_file():
        siamese = keras.saving.load_model(checkpoint, safe_mode=True)
        logger.info("resuming from %s after %d epochs", checkpoint, initial_epoch)
    else:
        initial_epoch, val_losses = 0, []
        (run_dir / "log.csv").unlink(missing_ok=True)
        siamese = build_siamese(build_encoder(preset))
        siamese.compile(
            optimizer=keras.optimizers.Adam(training["learning_rate"]),
            loss=ContrastiveLoss(margin=training["margin"]),
            metrics=[PairAccuracy(threshold=training["accuracy_threshold"])],
        )
    if initial_epoch >= training["epochs"]:
        logger.info("nothing to do: %d epochs already done", initial_epoch)
    else:
        import pandas as pd

        rate, window_s, batch = preset["sample_rate"], preset["window_s"], training["batch_size"]
        remaining = pd.concat(train_pairs[initial_epoch:], ignore_index=True)
        train_data = pair_dataset(manifests["train"], remaining, sample_rate=rate, window_s=window_s,
                                  batch_size=batch, drop_remainder=True)
        val_data = pair_dataset(manifests["val"], val_pairs, sample_rate=rate, window_s=window_s, batch_size=batch)
        started = time.time()
        history = siamese.fit(
            train_data, validation_data=val_data, epochs=training["epochs"], initial_epoch=initial_epoch,
            steps_per_epoch=steps, callbacks=build_callbacks(run_dir, training, val_losses),
            verbose=verbose,
        )
        logger.info("trained for %.0f s", time.time() - started)
        with open(run_dir / "train_seconds.txt", "a") as file:  # one line per (resumed) session
            file.write(f"{len(history.epoch)} {time.time() - started:.1f}\n")
    best = keras.saving.load_model(run_dir / "checkpoints" / "best.keras", safe_mode=True)
    tower = tower_of(best)
    tower.save(run_dir / "tower.keras")
    card = {"preset": preset, "sample_rate": preset["sample_rate"], "window_s": preset["window_s"],
            "seed": config["seed"], "train_speakers": int(manifests["train"]["speaker"].nunique())}
    (run_dir / "tower.json").write_text(json.dumps(card, indent=2))
    return run_dir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML (see experiments/configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--epochs", type=int, help="override training.epochs")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch Keras output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        if args.epochs is not None:
            config["training"]["epochs"] = args.epochs
        if args.output_dir:
            config["output_dir"] = args.output_dir
        run_dir = train(config, resume=args.resume, verbose=0 if args.quiet else 2)
    except (ConfigError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"saved {run_dir / 'tower.keras'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
