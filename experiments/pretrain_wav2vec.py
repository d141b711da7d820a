"""Pretrain the wav2vec 2.0 feature encoder on unlabelled speech (wav2vec 1.0's objective).

    python -m experiments.pretrain_wav2vec --config experiments/configs/wav2vec2_pretrain.yaml
    python -m experiments.pretrain_wav2vec --config experiments/configs/wav2vec2_pretrain.yaml --resume

No speaker labels are used: random crops of the training speakers' audio go
through the encoder and a small causal context network that learns to tell
frames up to K steps ahead from distractors. The run folder receives the
resolved config, the speaker-disjoint manifests, `log.csv` (loss and
prediction accuracy per epoch), checkpoints for `--resume`, `encoder.keras`
(the feature encoder of the epoch with the lowest validation loss: what the
`wav2vec` presets load through `model.frontend_weights`) and
`pretrain_seconds.txt`.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)
from data_prep.audio import AudioError, atomic_path
from experiments.config import PRETRAIN_SCHEMA, ConfigError, dump_config, load_config
from experiments.train import build_callbacks, load_checkpoint, prepare_manifests, read_log, save_model, write_log

logger = logging.getLogger("experiments.pretrain_wav2vec")
SAMPLE_RATE = 16000  # Hz: the wav2vec 2.0 encoder's rate


def crop_batches(manifest, num_steps, batch_size, crop_s, seed):
    """A tf.data stream of unlabelled waveform batches `(batch, crop samples, 1)`, drawn from `seed`."""
    from data_prep.pairs import sample_crops
    from data_prep.pipeline import crop_dataset

    crops = sample_crops(manifest, num_steps * batch_size, seed=seed)
    data = crop_dataset(manifest, crops, sample_rate=SAMPLE_RATE, window_s=crop_s, batch_size=batch_size)
    return data.map(lambda audio, speaker: audio)


def pretrain(config, resume=False, verbose=2):
    """Runs one pretraining described by a validated config; returns the run folder."""
    run_dir = Path(config["output_dir"])
    checkpoint = run_dir / "checkpoints" / "last.keras"
    if run_dir.exists() and not resume and (run_dir / "log.csv").exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume or choose another output_dir")
    settings = config["pretraining"]
    manifests = prepare_manifests(config, run_dir)

    import keras

    from sincnet_keras.wav2vec2 import build_wav2vec2_feature_encoder
    from sincnet_keras.wav2vec_pretraining import build_pretrainer, encoder_of

    keras.utils.set_random_seed(config["seed"])
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    fields, rows = read_log(run_dir / "log.csv") if resume else ([], [])
    steps = settings["steps_per_epoch"]
    model = None
    if resume and rows and checkpoint.is_file():
        model = load_checkpoint(checkpoint)
        done = int(model.optimizer.iterations.numpy()) // steps
        if len(rows) > done:
            rows = rows[:done]
            write_log(run_dir / "log.csv", fields, rows)
        logger.info("resuming from %s after %d epochs", checkpoint, len(rows))
    if model is None or not rows:
        fields, rows = [], []
        encoder = build_wav2vec2_feature_encoder(norm=config["encoder"]["norm"])
        model = build_pretrainer(encoder, context_layers=settings["context_layers"],
                                 prediction_steps=settings["prediction_steps"],
                                 num_negatives=settings["num_negatives"], seed=config["seed"])
        model.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]))
    initial_epoch = len(rows)
    if initial_epoch < settings["epochs"]:
        batch, crop_s, seed = settings["batch_size"], settings["crop_s"], config["seed"]
        # Each epoch's crops come from its own seed, as training pairs do: a resumed run continues where the
        # killed one was, and a shorter run is exactly the start of a longer one.
        train_data = None
        for epoch in range(initial_epoch, settings["epochs"]):
            epoch_data = crop_batches(manifests["train"], steps, batch, crop_s, [seed, 7, epoch])
            train_data = epoch_data if train_data is None else train_data.concatenate(epoch_data)
        val_data = crop_batches(manifests["val"], settings["val_steps"], batch, crop_s, [seed, 1_000_003])
        # Early stopping and checkpoints as in experiments.train; a constant learning rate.
        callbacks = build_callbacks(run_dir, {**settings, "lr_decay_patience": 0}, fields, rows)
        started = time.time()
        history = model.fit(train_data, validation_data=val_data, epochs=settings["epochs"], steps_per_epoch=steps,
                            initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose)
        seconds = run_dir / "pretrain_seconds.txt"
        earlier = seconds.read_text() if seconds.is_file() else ""
        with atomic_path(seconds) as tmp:  # one line per (resumed) session: epochs, seconds
            tmp.write_text(f"{earlier}{len(history.epoch)} {time.time() - started:.1f}\n")
    best = load_checkpoint(run_dir / "checkpoints" / "best.keras")
    encoder = build_wav2vec2_feature_encoder(norm=config["encoder"]["norm"])
    encoder.set_weights(encoder_of(best).get_weights())  # a bare copy: no optimizer, no context network
    save_model(encoder, run_dir / "encoder.keras")
    return run_dir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.pretrain_wav2vec",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="pretraining YAML (experiments/configs/wav2vec2_pretrain.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--epochs", type=int, help="override pretraining.epochs")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch Keras output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    try:
        config = load_config(args.config, schema=PRETRAIN_SCHEMA, optional={})
        if args.epochs is not None:
            config["pretraining"]["epochs"] = args.epochs
        if args.output_dir:
            config["output_dir"] = args.output_dir
        run_dir = pretrain(config, resume=args.resume, verbose=0 if args.quiet else 2)
    except (ConfigError, ValueError, OSError, AudioError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; completed epochs are kept, continue with --resume", file=sys.stderr)
        return 130
    print(f"saved {run_dir / 'encoder.keras'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
