"""The main job: diarize a simulated conversation of held-out speakers with the shipped model.

    python -m experiments.quickstart [--model M] [--seed S] [--out-dir runs/quickstart]

Re-creates the seeded speaker split of `experiments/configs/sincnet_default.yaml`
on the vendored LibriSpeech speakers, simulates one conversation among test
speakers (never seen in training or calibration), diarizes it, writes the
reference and hypothesis RTTM files, and prints the DER.
"""

import argparse
import sys
import time
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)
from experiments.config import ConfigError, load_config

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "sincnet_default.yaml"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="embedding tower .keras (default: the shipped model)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="config whose data split defines the test speakers")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the simulated conversation")
    parser.add_argument("--out-dir", default="runs/quickstart", help="folder for manifests, audio and RTTM files")
    args = parser.parse_args(argv)
    from data_prep.rttm import read_rttm, write_rttm
    from data_prep.simulate import write_conversations
    from experiments.train import prepare_manifests
    from siamese.diarizer import Diarizer
    from siamese.metrics import DER_SETTINGS, diarization_error

    out_dir = Path(args.out_dir)
    try:
        config = load_config(args.config)
        manifests = prepare_manifests(config, out_dir)
        diarizer = Diarizer.load(args.model)
        index = write_conversations(manifests["test"], out_dir / "conversation", num_conversations=1, seed=args.seed,
                                    sample_rate=diarizer.settings.sample_rate)
    except (ConfigError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    row = index.iloc[0]
    reference = read_rttm(row["rttm_path"])[row["uri"]]
    started = time.perf_counter()
    hypothesis = diarizer.diarize(row["wav_path"], uri=row["uri"])
    seconds = time.perf_counter() - started
    write_rttm(hypothesis, out_dir / "hypothesis" / f"{row['uri']}.rttm")
    print(f"conversation: {row['wav_path']} ({row['duration_s']:.1f} s, {row['num_speakers']} test speakers)")
    print(f"reference   : {row['rttm_path']}")
    print(f"hypothesis  : {out_dir / 'hypothesis' / (row['uri'] + '.rttm')} "
          f"({len(hypothesis.labels())} speakers found, {seconds:.2f} s, real-time factor {seconds / row['duration_s']:.4f})")
    for name, setting in DER_SETTINGS.items():
        errors = diarization_error(reference, hypothesis, **setting)
        print(f"DER {name:9s} (collar {setting['collar']} s, overlap {'skipped' if setting['skip_overlap'] else 'scored'}): "
              f"{errors['der']:.2%}  [missed {errors['missed']:.2%}, false alarm {errors['false_alarm']:.2%}, "
              f"confusion {errors['confusion']:.2%}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
