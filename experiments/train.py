"""Train a SincNet Siamese model with contrastive loss on same/different-speaker pairs.

With `training.objective: batch_all` the same loss is applied to every pair inside
batches of P speakers x K crops, which gives far more pairs per decoded crop.
With `training.objective: distill` the tower learns, over the same speaker batches, to
reproduce a pretrained peer's cosine similarities between the crops (knowledge
distillation; the teacher, e.g. Resemblyzer, needs requirements-peers.txt only to
build its bank of embeddings once, in the run folder's `teacher/`).

    python -m experiments.train --config experiments/configs/sincnet_default.yaml
    python -m experiments.train --config experiments/configs/sincnet_default.yaml --resume
    python -m experiments.train --config ... --strategy mirrored      # every GPU of this machine
    TF_CONFIG=... python -m experiments.train --config ... --strategy multiworker   # on every machine

With `--strategy mirrored` or `multiworker`, `training.batch_size` is the batch of one
replica (see experiments/distribute.py); only the chief writes the run folder.

The run folder (`output_dir` in the config) receives the resolved config, the
speaker-disjoint manifests, `log.csv`, `checkpoints/last.keras` (every epoch,
with optimizer state, for `--resume`), `checkpoints/best.keras` (lowest
validation loss over speakers never seen in training) and `tower.keras`, the
embedding tower of the best epoch, which is what diarization loads.

Every file is written to a temporary name and renamed, so a run killed at any
moment (even SIGKILL) leaves only whole files, and `--resume` continues from the
last completed epoch. Every dataset file is decoded once before training; one
that cannot be used is reported and left out, and the exit code is then 1.
"""

import argparse
import contextlib
import csv
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)
from data_prep.audio import AudioError, atomic_path
from experiments.config import ConfigError, dump_config, load_config

logger = logging.getLogger("experiments.train")


def prepare_manifests(config, run_dir, skipped=None):
    """Scans the dataset once and writes the seeded speaker-disjoint split.

    Files are decoded in full, so a truncated file or NaN samples are found now
    rather than mid-epoch; each unusable file is logged and left out, and its
    `(path, reason)` is appended to `skipped` when a list is given.
    """
    from data_prep.manifest import (
        read_manifest,
        scan_folders,
        scan_librispeech,
        write_manifest,
    )
    from data_prep.split import split_speakers

    manifest_dir = run_dir / "manifests"
    names = ("train", "val", "test")
    if all((manifest_dir / f"{name}.csv").is_file() for name in names):
        return {name: read_manifest(manifest_dir / f"{name}.csv") for name in names}
    data = config["data"]
    from data_prep.adapters import scan_rttm, scan_user_manifest, scan_voxceleb

    scanners = {"librispeech": scan_librispeech, "voxceleb": scan_voxceleb, "folders": scan_folders,
                "manifest": scan_user_manifest, "rttm": scan_rttm}
    if data["format"] not in scanners:
        raise ConfigError(f"data.format must be one of {sorted(scanners)}, got {data['format']!r}")
    manifest = scanners[data["format"]](data["root"], verify=True)
    for path, reason in manifest.attrs.get("skipped", []):
        logger.warning("left out %s", reason)
        if skipped is not None:
            skipped.append((path, reason))
    try:
        splits = split_speakers(
            manifest, val_speakers=data["val_speakers"], test_speakers=data["test_speakers"], seed=data["split_seed"]
        )
    except ValueError as error:
        raise ConfigError(f"{data['root']}: {error}") from None
    for name in names:
        write_manifest(splits[name], manifest_dir / f"{name}.csv")
    return splits


def check_preset(config, source):
    """The encoder preset must exist; checked with the config, so the error names the config file.

    Found the way `sincnet_keras.load_preset` finds it (a name in its presets folder, or a
    YAML path), without importing Keras: a config error is one line, in well under a second.
    """
    name = config["model"]["preset"]
    presets = Path(__file__).resolve().parents[1] / "sincnet_keras" / "presets"
    path = Path(name) if Path(name).suffix else presets / f"{name}.yaml"
    if not path.is_file():
        known = sorted(preset.stem for preset in presets.glob("*.yaml"))
        raise ConfigError(f"{source}: model.preset: unknown encoder preset {name!r}; known: {known}")


def check_pairable(manifests, root):
    """Pairs need two speakers in training and in validation; say so before any work."""
    for name, key in (("train", None), ("val", "data.val_speakers")):
        count = manifests[name]["speaker"].nunique()
        if count < 2:
            hint = f"; raise {key}" if key else "; lower data.val_speakers or data.test_speakers"
            raise ConfigError(f"{root}: the {name} split has {count} speaker(s), pairs need at least 2{hint}")


def make_pairs(manifests, config, replicas=1):
    """Fresh training pairs for every epoch, one fixed validation set; all seeded.

    With `objective: batch_all` (or `distill`) the tables are speaker batches instead (P speakers x
    K crops per batch, `batch_size` crops), and every pair inside a batch is trained on.
    Tables are drawn in global batches of `batch_size x replicas` (see experiments.distribute).
    """
    from data_prep.pairs import sample_pairs, sample_speaker_batches

    training, seed = config["training"], config["seed"]
    batch = training["batch_size"] * replicas
    steps = training["pairs_per_epoch"] // batch
    if training["objective"] in ("batch_all", "distill"):
        crops = training["crops_per_speaker"]

        def draw(split, num_batches, draw_seed):
            return sample_speaker_batches(manifests[split], num_batches, batch // crops, crops, seed=draw_seed)

        train_pairs = [draw("train", steps, [seed, epoch]) for epoch in range(training["epochs"])]
        val_batches = max(1, training["val_pairs"] // batch)
        return train_pairs, draw("val", val_batches, [seed, 1_000_003]), steps
    per_epoch = steps * batch
    train_pairs = [sample_pairs(manifests["train"], per_epoch, seed=[seed, epoch]) for epoch in range(training["epochs"])]
    val_pairs = sample_pairs(manifests["val"], training["val_pairs"], seed=[seed, 1_000_003])
    return train_pairs, val_pairs, steps


def read_log(log_path):
    """The CSV log's column names and rows (dicts of strings); nothing yet gives `([], [])`."""
    if not log_path.is_file():
        return [], []
    try:
        with open(log_path, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            fields = list(reader.fieldnames or [])
        for row in rows:
            float(row["val_loss"])
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError):
        raise ConfigError(f"{log_path}: not a readable training log; move the run aside or start another") from None
    return fields, rows


def write_log(log_path, fields, rows):
    """Rewrites the whole log through a temp file: a kill never leaves half a row."""
    with atomic_path(log_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def save_model(model, path):
    """`model.save` into a hidden folder beside `path`, then one rename: never a half-written `.keras`.

    Keras insists on the `.keras` suffix, so `atomic_path`'s temp name cannot be used directly.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as staging:
        staged = Path(staging) / path.name
        model.save(staged)
        os.replace(staged, path)


def write_derived_run(out, source, tower, card, extra=None):
    """A run folder made from `source`'s without training (a weight average, an appended projection).

    It keeps `source`'s config and speaker split, so `experiments.release` calibrates and measures it
    on the same validation and test speakers; `card` becomes `tower.json`, `tower` `tower.keras`, and
    `extra` ({file name: text}) is written beside them. Built beside `out` and renamed: a kill leaves
    no half-made run folder.
    """
    out, source = Path(out), Path(source)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copyfile(source / "config.yaml", partial / "config.yaml")
    shutil.copytree(source / "manifests", partial / "manifests")
    (partial / "tower.json").write_text(json.dumps(card, indent=2))
    for name, text in (extra or {}).items():
        (partial / name).write_text(text)
    tower.save(partial / "tower.keras")
    partial.rename(out)

def early_stopping_state(val_losses):
    """(best validation loss, epochs since it) from the log, so patience survives `--resume`."""
    if not val_losses:
        return float("inf"), 0
    best = min(val_losses)
    return best, len(val_losses) - 1 - val_losses.index(best)


def build_callbacks(run_dir, training, fields, rows):
    """Early stopping, learning-rate decay, then the writes: log row first, checkpoints after.

    The order matters after a kill: the log is never behind `last.keras`, and
    `train` drops any log row the checkpoint does not have, so that epoch is
    simply run again.
    """
    import keras

    val_losses = [float(row["val_loss"]) for row in rows]

    class ResumableEarlyStopping(keras.callbacks.Callback):
        """Early stopping whose patience survives `--resume` (state comes from log.csv)."""

        def __init__(self):
            super().__init__()
            self.best, self.wait = early_stopping_state(val_losses)

        def on_epoch_end(self, epoch, logs=None):
            if logs["val_loss"] < self.best:
                self.best, self.wait = logs["val_loss"], 0
            else:
                self.wait += 1
                if self.wait >= training["patience"]:
                    logger.info("early stopping: no lower validation loss for %d epochs", training["patience"])
                    self.model.stop_training = True

    class AtomicCSVLog(keras.callbacks.Callback):
        """keras.callbacks.CSVLogger's rows, the whole file rewritten and renamed each epoch."""

        def __init__(self):
            super().__init__()
            self.fields, self.rows = list(fields), list(rows)

        def on_epoch_end(self, epoch, logs=None):
            if not self.fields:
                self.fields = ["epoch", *sorted(logs)]
            self.rows.append({"epoch": epoch, **logs})
            write_log(run_dir / "log.csv", self.fields, self.rows)

    class AtomicCheckpoint(keras.callbacks.Callback):
        """The model after every epoch, or only after one with a new lowest validation loss."""

        def __init__(self, path, best_only=False):
            super().__init__()
            self.path, self.best_only = path, best_only
            self.best = min(val_losses, default=float("inf"))

        def on_epoch_end(self, epoch, logs=None):
            if self.best_only:
                if not logs["val_loss"] < self.best:
                    return
                self.best = logs["val_loss"]
            save_model(self.model, self.path)

    callbacks = [ResumableEarlyStopping()]
    if training["lr_decay_patience"] > 0:
        # Shrink the step size when validation stalls; the rate lives in the optimizer, so it survives --resume.
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            factor=training["lr_decay_factor"], patience=training["lr_decay_patience"],
            min_lr=training["learning_rate"] / 64))
    return callbacks + [
        AtomicCSVLog(),
        AtomicCheckpoint(run_dir / "checkpoints" / "best.keras", best_only=True),
        AtomicCheckpoint(run_dir / "checkpoints" / "last.keras"),
    ]


def load_checkpoint(path):
    """The Siamese model of a checkpoint (safe mode); a damaged file is a one-line error."""
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # noqa: BLE001  (Keras raises many types for a bad file)
        message = " ".join(str(error).split())[:200]
        raise ConfigError(f"{path}: not a loadable checkpoint ({message})") from None


def pipeline_error(error):
    """The AudioError inside a tf.data failure, if that is what stopped training."""
    found = re.search(r"AudioError: ([^\n]+)", getattr(error, "message", str(error)))
    return AudioError(found.group(1)) if found else None


def frozen_frontend(tower, config, run_dir):
    """`(frontend, head)` when the tower starts with a frozen front end, else None.

    The front end's weights come from `model.frontend_weights` (a pretrained
    encoder) on a fresh run and are kept in `frontend.keras` in the run folder, so
    a resumed run and the saved tower use exactly the features it trained on.
    """
    from sincnet_keras.encoder import load_frontend_weights, split_frontend

    split = split_frontend(tower)
    if split is None or split[0].trainable:
        return None
    if config["training"]["objective"] == "batch_all":
        raise ConfigError("training.objective batch_all is not available with a frozen front end; use pairs")
    kept = run_dir / "frontend.keras"
    source = kept if kept.is_file() else config["model"]["frontend_weights"]
    if source:
        try:
            load_frontend_weights(tower, source)
        except (ValueError, OSError) as error:
            raise ConfigError(f"model.frontend_weights: {' '.join(str(error).split())}") from None
        logger.info("front end weights from %s", source)
    else:
        logger.warning("model.frontend_weights is empty: the frozen front end keeps its random initialisation")
    if not kept.is_file():
        save_model(split[0], kept)
    return split


def freeze_layers(tower, what):
    """Fine-tuning with part of the tower fixed: `frontend` (the sinc, log-mel or wav2vec layers) or
    `encoder` (everything but the last layer with weights, the embedding projection); `none` trains all.

    Frozen layers run in inference mode (BatchNorm keeps its statistics). Returns the names frozen.
    """
    from sincnet_keras.log_mel import LogMelSpectrogram
    from sincnet_keras.sinc_conv import SincConv1D

    if what == "none":
        return []
    weighted = [layer for layer in tower.layers if layer.weights]
    if what == "frontend":
        chosen = [layer for layer in weighted
                  if isinstance(layer, (SincConv1D, LogMelSpectrogram)) or layer.name == "frontend"]
        if not chosen:
            raise ConfigError("training.freeze frontend: this tower has no sinc, log-mel or wav2vec front end")
    else:
        chosen = weighted[:-1]
    for layer in chosen:
        layer.trainable = False
    logger.info("frozen layers: %s", ", ".join(layer.name for layer in chosen))
    return [layer.name for layer in chosen]


def frontend_bank(frontend, manifest, audio, seed):
    """The frozen front end's features for one split, one array per utterance (see `data_prep.feature_bank`)."""
    from data_prep.feature_bank import feature_bank

    return feature_bank(manifest, lambda batch: frontend(batch, training=False), sample_rate=audio["sample_rate"],
                        noise_prob=audio["noise_prob"], noise_snr_db=audio["noise_snr_db"], seed=seed)


def teacher_windows(config, manifests, run_dir):
    """Per split, the teacher bank's `(starts, embeddings)` per utterance; built (needs the teacher) if missing.

    Banks live in the run folder (`teacher/train.npz`, `teacher/val.npz`): a resumed run reuses them.
    """
    from data_prep.teacher_bank import build_teacher_bank, load_teacher_bank, save_teacher_bank
    from experiments.peers import teacher

    training, rate = config["training"], 16000  # Resemblyzer, the only teacher so far, hears 16 kHz
    settings = {"sample_rate": rate, "window_s": training["teacher_window_s"], "hop_s": training["teacher_hop_s"]}
    banks, embed = {}, None
    for split in ("train", "val"):
        path = run_dir / "teacher" / f"{split}.npz"
        if not path.is_file():
            if embed is None:
                embed, described = teacher(training["teacher"], rate, settings["window_s"])
            logger.info("teacher bank of %s speakers (%s): %s", split, described, path)
            save_teacher_bank(build_teacher_bank(manifests[split], embed, teacher=training["teacher"], **settings), path)
        banks[split] = load_teacher_bank(path, manifests[split], teacher=training["teacher"], **settings)
    return banks


def train(config, resume=False, verbose=2, skipped=None, init=None, strategy="default"):
    """Runs one training described by a validated config; returns the run folder.

    `skipped` (a list) receives the dataset files left out as unusable. `init` (a tower
    `.keras` of the same preset) starts training from its weights: fine-tuning.
    `strategy` (`default`, `mirrored`, `multiworker`): see `experiments.distribute`;
    `training.batch_size` is then the batch of one replica.
    """
    from experiments import distribute

    role = distribute.worker_role(strategy)  # a bad TF_CONFIG fails here, before any work
    chief_dir = Path(config["output_dir"])
    run_dir = distribute.worker_run_dir(chief_dir, role)  # only the chief writes the run folder itself
    if strategy != "default" and (run_dir / "backup").is_dir():
        resume = True  # a distributed job restarted after a failure continues from its BackupAndRestore state
    checkpoint = run_dir / "checkpoints" / "last.keras"
    if run_dir.exists() and not resume and (run_dir / "log.csv").exists():
        raise ConfigError(f"{chief_dir} already holds a run; pass --resume or choose another output_dir")
    if chief_dir.resolve().is_relative_to(Path(config["data"]["root"]).resolve()):
        raise ConfigError(f"{chief_dir}: output_dir must not be inside the dataset folder {config['data']['root']}")
    training = config["training"]
    if training["teacher_signs"] == "init" and init is None:
        raise ConfigError("training.teacher_signs: init takes the signs from the --init tower; give --init")
    # The dataset first: a bad one fails before anything is written and before TensorFlow loads.
    manifests = prepare_manifests(config, run_dir, skipped)
    check_pairable(manifests, config["data"]["root"])

    import keras

    from data_prep.pipeline import crop_dataset, pair_dataset
    from siamese.losses import BatchContrastiveLoss, ContrastiveLoss, RelationalDistillationLoss
    from siamese.metrics import PairAccuracy
    from siamese.model import build_siamese, tower_of
    from sincnet_keras import build_encoder, load_preset

    strategy_name, strategy = strategy, distribute.make_strategy(strategy)  # before TensorFlow runs any op
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if strategy is not None:
        logger.info("%s strategy: %d replica(s), global batch %d", strategy_name, replicas,
                    training["batch_size"] * replicas)
        if training["pairs_per_epoch"] < training["batch_size"] * replicas:
            raise ConfigError(f"training.pairs_per_epoch ({training['pairs_per_epoch']}) must be at least the global "
                              f"batch, training.batch_size x {replicas} replicas")
    try:
        preset = load_preset(config["model"]["preset"])
    except ValueError as error:
        raise ConfigError(f"model.preset: {error}") from None
    if config["data"]["speed_perturb"]:  # training speakers only: validation stays the real speakers
        from data_prep.augment import speed_perturbed_speakers

        manifests = {**manifests, "train": speed_perturbed_speakers(
            manifests["train"], config["data"]["speed_perturb"], run_dir / "speed_perturbed", preset["sample_rate"])}
    keras.utils.set_random_seed(config["seed"])
    batch_all, distill = training["objective"] == "batch_all", training["objective"] == "distill"
    if distill and (preset["sample_rate"] != 16000 or config["model"]["frontend_weights"]):
        raise ConfigError("objective distill needs a 16 kHz waveform tower without frozen front end")
    # The teacher also hears the speed-perturbed copies: each is a new voice it describes consistently.
    banks = teacher_windows(config, manifests, run_dir) if distill else None
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    fields, rows = read_log(run_dir / "log.csv") if resume else ([], [])
    steps = training["pairs_per_epoch"] // (training["batch_size"] * replicas)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:  # every variable made or loaded here is mirrored over the replicas
        siamese = None
        if resume and rows and checkpoint.is_file():
            siamese = load_checkpoint(checkpoint)
            # The checkpoint is the truth: a kill between writing an epoch's log row and its
            # checkpoint leaves one row too many, and that epoch is run again.
            done = int(siamese.optimizer.iterations.numpy()) // steps
            if len(rows) > done:
                logger.info("dropping %d log row(s) newer than %s", len(rows) - done, checkpoint)
                rows = rows[:done]
                write_log(run_dir / "log.csv", fields, rows)
        tower = build_encoder(preset)
        if init is not None:
            start = load_checkpoint(init)
            try:
                tower.set_weights(start.get_weights())
            except ValueError as error:
                raise ConfigError(
                    f"--init {init}: not a tower of preset {config['model']['preset']!r} ({error})") from None
            logger.info("starting from the weights of %s", init)
        if distill and training["embedding_weight"] > 0 and tower.output.shape[-1] != banks["train"][0][1].shape[1]:
            # A narrower student is compared with the teacher's embeddings on their main directions.
            from data_prep.teacher_bank import project_teacher_windows

            width, teacher_dims = tower.output.shape[-1], banks["train"][0][1].shape[1]
            if width > teacher_dims:
                raise ConfigError(f"training.embedding_weight needs the tower's embedding ({width}) at most "
                                  f"as wide as the teacher's ({teacher_dims})")
            banks, kept = project_teacher_windows(banks, width)
            logger.info("teacher embeddings projected to %d dimensions (%.1f%% of their energy kept)", width,
                        100 * kept)
            if training["teacher_signs"] == "init":  # fine-tuning a distilled tower: keep the signs it learned
                from data_prep.teacher_bank import init_signs

                signs = init_signs(tower, manifests["train"], banks["train"], sample_rate=preset["sample_rate"],
                                   window_s=training["teacher_window_s"], seed=config["seed"])
                banks = {split: [(starts, embeddings * signs) for starts, embeddings in windows]
                         for split, windows in banks.items()}
                logger.info("projected directions signed as --init's embeddings: %d of %d flipped",
                            int((signs < 0).sum()), width)
        frozen = frozen_frontend(tower, config, run_dir)  # (frontend, head) when features can be computed once
        freeze_layers(tower, training["freeze"])
        if siamese is None or not rows:
            fields, rows = [], []
            (run_dir / "log.csv").unlink(missing_ok=True)
            if frozen is not None:
                # The front end never changes: train a Siamese model over the head, on precomputed features.
                siamese = build_siamese(frozen[1])
                siamese.compile(
                    optimizer=keras.optimizers.Adam(training["learning_rate"]),
                    loss=ContrastiveLoss(margin=training["margin"]),
                    metrics=[PairAccuracy(threshold=training["accuracy_threshold"])],
                )
            elif batch_all or distill:
                # Every pair in a batch of speaker groups: the tower is trained directly on its embeddings,
                # against speaker labels (batch-all) or against the teacher's similarities (distillation).
                siamese = tower
                siamese.compile(optimizer=keras.optimizers.Adam(training["learning_rate"]),
                                loss=RelationalDistillationLoss(training["contrastive_weight"], training["margin"],
                                                                training["embedding_weight"])
                                if distill else
                                BatchContrastiveLoss(margin=training["margin"]))
            else:
                siamese = build_siamese(tower)
                siamese.compile(
                    optimizer=keras.optimizers.Adam(training["learning_rate"]),
                    loss=ContrastiveLoss(margin=training["margin"]),
                    metrics=[PairAccuracy(threshold=training["accuracy_threshold"])],
                )
        else:
            logger.info("resuming from %s after %d epochs", checkpoint, len(rows))
    initial_epoch = len(rows)
    _, wait = early_stopping_state([float(row["val_loss"]) for row in rows])
    if initial_epoch >= training["epochs"] or (rows and wait >= training["patience"]):
        logger.info("nothing to do: %d epochs already done", initial_epoch)
    else:
        import pandas as pd
        import tensorflow as tf

        rate, window_s, batch = preset["sample_rate"], preset["window_s"], training["batch_size"]
        audio = {"sample_rate": rate, "window_s": window_s, "noise_prob": training["noise_prob"],
                 "noise_snr_db": (training["noise_snr_low"], training["noise_snr_high"]),
                 "reverb_prob": training["reverb_prob"],
                 "reverb_rt60_s": (training["reverb_rt60_low"], training["reverb_rt60_high"])}
        if frozen is not None and training["reverb_prob"] > 0.0:
            raise ConfigError("training.reverb_prob: a frozen front end's features are computed once per utterance, "
                              "without reverberation; set it to 0")
        if frozen is not None:
            banks = {name: frontend_bank(frozen[0], manifests[name], audio, [config["seed"], index])
                     for index, name in enumerate(("train", "val"))}
            train_pairs, val_pairs, steps = make_pairs({name: bank[1] for name, bank in banks.items()}, config,
                                                       replicas)
        else:
            train_pairs, val_pairs, steps = make_pairs(manifests, config, replicas)
        remaining = pd.concat(train_pairs[initial_epoch:], ignore_index=True)
        # Validation batches hold whole speaker groups in batch_all (fewer speakers when val has fewer than P).
        val_rows = len(val_pairs) // max(1, training["val_pairs"] // (batch * replicas))
        val_batch = val_rows // replicas  # per replica
        if strategy is not None:
            # Each worker reads only its own replicas' chunks of every global batch (experiments.distribute).
            if (batch_all or distill) and val_rows % (replicas * training["crops_per_speaker"]):
                raise ConfigError(f"batch_all validation batches of {val_rows} crops cannot be split into whole "
                                  f"speaker groups over {replicas} replicas; change data.val_speakers")
            if not (batch_all or distill):
                val_pairs = distribute.whole_batches(val_pairs, batch * replicas)
                if val_pairs.empty:
                    raise ConfigError(f"training.val_pairs must be at least the global batch ({batch * replicas})")
            remaining = distribute.shard_table(remaining, batch, role)
            val_pairs = distribute.shard_table(val_pairs, val_batch if batch_all or distill else batch, role)
        if frozen is not None:
            from data_prep.feature_bank import bank_pair_dataset
            from sincnet_keras.wav2vec2 import num_frames

            frames = num_frames(int(round(window_s * rate)))
            train_data = bank_pair_dataset(banks["train"][0], remaining, window_frames=frames, batch_size=batch,
                                           drop_remainder=True)
            val_data = bank_pair_dataset(banks["val"][0], val_pairs, window_frames=frames, batch_size=batch)
        elif distill:
            from data_prep.teacher_bank import teacher_dataset

            crops = {**audio, "window_s": training["teacher_window_s"], "hop_s": training["teacher_hop_s"],
                     "with_speaker": training["contrastive_weight"] > 0}
            train_data = teacher_dataset(manifests["train"], remaining, banks["train"], batch_size=batch, **crops)
            val_data = teacher_dataset(manifests["val"], val_pairs, banks["val"], batch_size=val_batch, **crops)
        elif batch_all:
            train_data = crop_dataset(manifests["train"], remaining, batch_size=batch, **audio)
            val_data = crop_dataset(manifests["val"], val_pairs, batch_size=val_batch, **audio)
        else:
            train_data = pair_dataset(manifests["train"], remaining, batch_size=batch, drop_remainder=True, **audio)
            # Validation pairs get the same augmentation, so early stopping judges the task being trained.
            val_data = pair_dataset(manifests["val"], val_pairs, batch_size=batch, **audio)
        callbacks = build_callbacks(run_dir, training, fields, rows)
        if strategy is not None:
            train_data, val_data = (distribute.distribute(strategy, data, role) for data in (train_data, val_data))
            # Backed up after last.keras every epoch (deleted when fit ends); a stale one is dropped first.
            distribute.drop_stale_backup(run_dir / "backup", initial_epoch)
            callbacks.append(keras.callbacks.BackupAndRestore(str(run_dir / "backup")))
        started = time.time()
        try:
            with warnings.catch_warnings() if strategy is not None else contextlib.nullcontext():
                if strategy is not None:
                    # A distributed dataset counts per-replica batches, so Keras expects one validation step
                    # per replica and warns when the (whole) global batches end; the training steps are exact.
                    warnings.filterwarnings("ignore", message="Your input ran out of data")
                history = siamese.fit(
                    train_data, validation_data=val_data, epochs=training["epochs"], initial_epoch=initial_epoch,
                    steps_per_epoch=steps, callbacks=callbacks, verbose=verbose,
                )
        except tf.errors.OpError as error:
            audio_error = pipeline_error(error)
            if audio_error is None:
                raise
            # A file changed or broke after the scan: say which, keep every completed epoch.
            raise AudioError(f"{audio_error}; training stopped, completed epochs are kept for --resume") from None
        logger.info("trained for %.0f s", time.time() - started)
        seconds = run_dir / "train_seconds.txt"
        earlier = seconds.read_text() if seconds.is_file() else ""
        with atomic_path(seconds) as tmp:  # one line per (resumed) session
            tmp.write_text(f"{earlier}{len(history.epoch)} {time.time() - started:.1f}\n")
    best = load_checkpoint(run_dir / "checkpoints" / "best.keras")
    card = {"preset": preset, "sample_rate": preset["sample_rate"], "window_s": preset["window_s"],
            "seed": config["seed"], "train_speakers": int(manifests["train"]["speaker"].nunique())}
    if distill:
        card["teacher"] = training["teacher"]
    if init is not None:
        card["init"] = str(init)  # fine-tuned: the model card names where it started
    if config["model"]["frontend_weights"]:
        card["frontend_weights"] = config["model"]["frontend_weights"]
    # The sidecar first: a kill between the two leaves no tower that would load with wrong settings.
    with atomic_path(run_dir / "tower.json") as tmp:
        tmp.write_text(json.dumps(card, indent=2))
    if frozen is not None:  # the trained head goes back behind its front end
        frozen[1].set_weights(tower_of(best).get_weights())
    elif batch_all or distill:  # the checkpoint is the compiled tower: save a bare copy, without optimizer or loss
        tower = build_encoder(preset)
        tower.set_weights(best.get_weights())
    else:
        tower = tower_of(best)
    save_model(tower, run_dir / "tower.keras")
    if not role.chief:  # a worker's copy of the run is not kept: the chief's run folder is the result
        shutil.rmtree(run_dir, ignore_errors=True)
    return chief_dir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML (see experiments/configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--epochs", type=int, help="override training.epochs")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch Keras output")
    parser.add_argument("--init", help="start from this trained tower (.keras, same preset): fine-tuning")
    parser.add_argument("--freeze", choices=("none", "frontend", "encoder"),
                        help="override training.freeze: keep the front end, or everything but the last layer, fixed")
    parser.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                        help="default: one device; mirrored: every GPU (or logical CPU) of this machine; multiworker: "
                             "the machines in TF_CONFIG. training.batch_size is per replica (see experiments/distribute.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    skipped = []
    try:
        config = load_config(args.config)
        check_preset(config, args.config)
        if args.epochs is not None:
            config["training"]["epochs"] = args.epochs
        if args.output_dir:
            config["output_dir"] = args.output_dir
        if args.freeze:
            config["training"]["freeze"] = args.freeze
        run_dir = train(config, resume=args.resume, verbose=0 if args.quiet else 2, skipped=skipped, init=args.init,
                        strategy=args.strategy)
    except (ConfigError, ValueError, OSError, AudioError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; completed epochs are kept, continue with --resume", file=sys.stderr)
        return 130
    print(f"saved {run_dir / 'tower.keras'}")
    if skipped:
        print(f"error: {len(skipped)} dataset file(s) could not be used and were left out (listed above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
