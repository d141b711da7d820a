"""Train the learned speech detector on simulated conversations of the training speakers.

    python -m experiments.train_vad --config experiments/configs/speech_detector.yaml

Conversations are simulated as for evaluation (data_prep.simulate: turns,
pauses, ~10% overlap, level differences, white, pink or brown noise), here from
the training speakers, with a wider noise range, a share with long pauses, a
share sent through a telephone channel, and a share of recordings of noise alone. Each 10 ms frame's band SNRs (data_prep.vad.band_snr) are
the input and "inside a reference speech region" is the target, so the network
learns the references' convention: pauses of 0.3 s or more are not speech.
Validation conversations (validation speakers) pick the epoch. The run folder
receives the resolved config, the split's manifests, `log.csv`,
`speech_detector.keras` (the best epoch) and `summary.json` (validation missed
and false alarm speech at threshold 0.5). `experiments.compare_vad --speech-model`
and `experiments.release` then measure it beside the other detectors; ship it
by copying it into `models/` and naming it in `experiments.release --speech-model`
(`models/speech_detector_rooms.keras` is the shipped one, `models/speech_detector.keras`
its dry-trained predecessor).
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)
import numpy as np
from data_prep.audio import AudioError, atomic_path
from experiments.config import SPEECH_DETECTOR_OPTIONAL, SPEECH_DETECTOR_SCHEMA, ConfigError, dump_config, load_config

logger = logging.getLogger("experiments.train_vad")
SAMPLE_RATE = 16000
HOP_S, FRAME_S = 0.01, 0.025  # band_snr's frames
# Pauses between turns in the `long_pause_share` of conversations: without them the network had only ever heard
# noise for under a second between speech, and called 30-40% of a recording of noise alone speech.
LONG_PAUSES_S = (0.1, 4.0)


def frame_targets(num_frames, segments):
    """1 for each frame whose centre lies inside a reference segment ``(start_s, end_s, speaker)``, else 0."""
    centres = np.arange(num_frames) * HOP_S + FRAME_S / 2
    target = np.zeros(num_frames, dtype=np.float32)
    for start_s, end_s, _ in segments:
        target[np.searchsorted(centres, start_s):np.searchsorted(centres, end_s)] = 1.0
    return target


def noise_alone(rng):
    """5-30 s of white, pink or brown noise and nothing else (no speech to find), at a random level."""
    from data_prep.augment import coloured_noise

    noise = coloured_noise(int(rng.uniform(5.0, 30.0) * SAMPLE_RATE), exponent=float(rng.choice([0.0, 1.0, 2.0])),
                           rng=rng)
    return (noise * 10.0 ** (rng.uniform(-40.0, -6.0) / 20.0) / max(float(np.abs(noise).max()), 1e-9)).astype(np.float32)


def simulated_frames(manifest, count, settings, seed, desc):
    """``[(band SNRs (frames, 24), targets (frames,), segments, duration_s)]`` of ``count`` simulated conversations."""
    from tqdm import tqdm

    from data_prep.channel import TELEPHONE_RATE, telephone
    from data_prep.simulate import NotEnoughSpeechError, simulate_conversation
    from data_prep.vad import band_snr

    conversations = []
    for index in tqdm(range(count), desc=desc, unit="conv", disable=None):
        rng = np.random.default_rng([seed, index])
        if rng.random() < settings["noise_only_share"]:
            audio, segments = noise_alone(rng), []
        else:
            pauses = LONG_PAUSES_S if rng.random() < settings["long_pause_share"] else (0.1, 0.8)
            # No draw without reverberation: a config without it simulates the same conversations as before.
            reverb = settings["reverb_share"] > 0.0 and rng.random() < settings["reverb_share"]
            room = (settings["reverb_rt60_low"], settings["reverb_rt60_high"]) if reverb else None
            for _ in range(20):
                try:
                    audio, segments = simulate_conversation(
                        manifest, num_speakers=int(rng.integers(settings["min_speakers"], settings["max_speakers"] + 1)),
                        rng=rng, reference="speech", pause_s=pauses,
                        noise_snr_db=(settings["noise_snr_low"], settings["noise_snr_high"]), reverb_rt60_s=room)
                    break
                except NotEnoughSpeechError:
                    continue
            else:
                raise ValueError(f"could not simulate conversation {index} from {manifest['speaker'].nunique()} speakers")
        rate = SAMPLE_RATE
        if rng.random() < settings["telephone_share"]:
            audio, rate = telephone(audio, SAMPLE_RATE, rng), TELEPHONE_RATE
        features = band_snr(audio, rate)
        conversations.append((features, frame_targets(len(features), segments), segments, len(audio) / rate))
    return conversations


def crops(conversations, length):
    """Half-overlapping crops of ``length`` frames: ``(x (n, length, bands), y (n, length, 1))``."""
    xs, ys = [], []
    for features, target, _, _ in conversations:
        for start in range(0, max(len(features) - length, 0) + 1, length // 2):
            x, y = features[start:start + length], target[start:start + length]
            if len(x) < length:  # a conversation shorter than one crop: zero-padded (silence)
                x = np.pad(x, ((0, length - len(x)), (0, 0)))
                y = np.pad(y, (0, length - len(y)))
            xs.append(x)
            ys.append(y)
    return np.stack(xs), np.stack(ys)[..., None]


def speech_errors_at(network, conversations, threshold=0.5, min_silence_s=0.1):
    """(missed, false alarm) speech of the detector on simulated conversations, as shares of the reference speech."""
    from pyannote.core import Annotation, Segment

    from data_prep.vad import merge_band_frames
    from experiments.compare_vad import speech_errors

    missed = false_alarm = speech = 0.0
    for features, _, segments, duration_s in conversations:
        reference = Annotation()
        for start_s, end_s, speaker in segments:
            reference[Segment(start_s, end_s)] = speaker
        regions = merge_band_frames(network(features) > threshold, duration_s, min_speech_s=0.25,
                                    min_silence_s=min_silence_s)
        file_missed, file_false_alarm, file_speech, _ = speech_errors(reference, regions)
        missed, false_alarm, speech = missed + file_missed, false_alarm + file_false_alarm, speech + file_speech
    return missed / speech, false_alarm / speech


def train_vad(config, verbose=2):
    """Runs one speech detector training described by a validated config; returns the run folder."""
    from experiments.train import prepare_manifests, save_model

    run_dir = Path(config["output_dir"])
    if (run_dir / "speech_detector.keras").exists():
        raise ConfigError(f"{run_dir} already holds a speech detector; choose another output_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    manifests = prepare_manifests(config, run_dir)
    started = time.perf_counter()
    conversations = config["conversations"]
    train = simulated_frames(manifests["train"], conversations["train"], conversations, [config["seed"], 0], "train")
    val = simulated_frames(manifests["val"], conversations["val"], conversations, [config["seed"], 1], "validation")

    import keras

    from data_prep.speech_net import SpeechNet, build_speech_net

    settings, detector = config["training"], config["detector"]
    length = int(round(settings["crop_s"] / HOP_S))
    (train_x, train_y), (val_x, val_y) = crops(train, length), crops(val, length)
    logger.info("%d training crops (%.0f%% speech frames), %d validation crops", len(train_x),
                100 * train_y.mean(), len(val_x))
    keras.utils.set_random_seed(config["seed"])
    model = build_speech_net(train_x.shape[-1], detector["channels"], detector["kernel_size"], detector["dilations"])
    model.compile(keras.optimizers.Adam(settings["learning_rate"]), "binary_crossentropy")
    history = model.fit(
        train_x, train_y, batch_size=settings["batch_size"], epochs=settings["epochs"], verbose=verbose,
        validation_data=(val_x, val_y), shuffle=True,
        callbacks=[keras.callbacks.EarlyStopping(patience=settings["patience"], restore_best_weights=True),
                   keras.callbacks.CSVLogger(str(run_dir / "log.csv"))])
    save_model(model, run_dir / "speech_detector.keras")
    missed, false_alarm = speech_errors_at(SpeechNet.from_keras(model), val)
    summary = {"val_missed": round(missed, 5), "val_false_alarm": round(false_alarm, 5),
               "best_val_loss": round(float(min(history.history["val_loss"])), 5),
               "epochs_run": len(history.history["loss"]), "parameters": int(model.count_params()),
               "train_conversations": len(train), "val_conversations": len(val),
               "train_seconds": round(time.perf_counter() - started, 1)}
    with atomic_path(run_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("validation (threshold 0.5): missed %.2f%%, false alarm %.2f%%", 100 * missed, 100 * false_alarm)
    return run_dir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.train_vad", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="speech detector YAML (experiments/configs/speech_detector.yaml)")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch Keras output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, schema=SPEECH_DETECTOR_SCHEMA, optional=SPEECH_DETECTOR_OPTIONAL)
        if args.output_dir:
            config["output_dir"] = args.output_dir
        run_dir = train_vad(config, verbose=0 if args.quiet else 2)
    except (ConfigError, ValueError, OSError, AudioError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(f"saved {run_dir / 'speech_detector.keras'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
