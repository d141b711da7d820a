"""Is the tf.data pair pipeline fast enough to keep training busy on this machine?

    python -m experiments.benchmark_pipeline --config experiments/configs/sincnet_default.yaml

Prints pairs/s of the pipeline alone (decode, resample, crop, normalise) and of
the training step alone (on batches already in memory), for the config's preset.
The pipeline is not the bottleneck when its rate is well above the step's.
"""

import argparse
import sys
import time

import experiments  # noqa: F401
from experiments.config import ConfigError, load_config


def pairs_per_second(iterator, batches, batch_size):
    next(iterator)  # warm-up: graph tracing, thread start-up
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - started)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark_pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML")
    parser.add_argument("--batches", type=int, default=40, help="batches to time for each side")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    import keras
    import numpy as np

    from data_prep.adapters import SCANNERS
    from data_prep.pairs import sample_pairs
    from data_prep.pipeline import pair_dataset
    from siamese.losses import ContrastiveLoss
    from siamese.model import build_siamese
    from sincnet_keras import build_encoder, load_preset

    preset = load_preset(config["model"]["preset"])
    batch = config["training"]["batch_size"]
    manifest = SCANNERS[config["data"]["format"]](config["data"]["root"])
    pairs = sample_pairs(manifest, batch * (args.batches + 1), seed=config["seed"])
    dataset = pair_dataset(manifest, pairs, sample_rate=preset["sample_rate"], window_s=preset["window_s"], batch_size=batch)
    cold_rate = pairs_per_second(iter(dataset), args.batches, batch)  # first pass also decodes into the cache
    pipeline_rate = pairs_per_second(iter(dataset), args.batches, batch)

    siamese = build_siamese(build_encoder(preset))
    siamese.compile(optimizer=keras.optimizers.Adam(1e-3), loss=ContrastiveLoss(config["training"]["margin"]))
    (first, second), labels = next(iter(dataset))
    first, second, labels = np.asarray(first), np.asarray(second), np.asarray(labels)
    steps = iter(lambda: siamese.train_on_batch([first, second], labels), None)
    step_rate = pairs_per_second(steps, args.batches, batch)

    print(f"preset {preset['name']}: {preset['sample_rate']} Hz, {preset['window_s']} s windows, batch {batch}")
    print(f"pipeline, first pass (decoding every utterance): {cold_rate:8.1f} pairs/s")
    print(f"pipeline alone : {pipeline_rate:8.1f} pairs/s")
    print(f"training step  : {step_rate:8.1f} pairs/s")
    print(f"headroom       : {pipeline_rate / step_rate:8.1f}x  (pipeline rate / step rate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
