"""Average the weights of towers fine-tuned from the same start into one ("model soup").

    python -m experiments.soup --runs RUN [RUN ...] --out RUN_DIR

Towers fine-tuned from one pretrained tower on the same data often sit in one basin of
the loss, so their weight average can be better than each (Wortsman et al., "Model soups",
2022) at no extra cost at run time. The runs must share an architecture and a speaker
split (their `manifests/` must be identical): otherwise a validation speaker of one run
could be a training speaker of another. The output is a run folder (`config.yaml`,
`manifests/`, `tower.json` from the first run, and the averaged `tower.keras`) that
`python -m experiments.release --run RUN_DIR` calibrates and measures like any other.
"""

import argparse
import filecmp
import json
import sys
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)

RUN_FILES = ("config.yaml", "tower.json")


def average_towers(towers):
    """A tower whose every weight (BatchNorm statistics included) is the mean over `towers`; the first is modified."""
    import numpy as np

    shapes = [[tuple(weight.shape) for weight in tower.weights] for tower in towers]
    if any(shape != shapes[0] for shape in shapes[1:]):
        raise ValueError("the towers have different architectures: their weights cannot be averaged")
    soup = towers[0]
    for index, weight in enumerate(soup.weights):
        weight.assign(np.mean([np.asarray(tower.weights[index]) for tower in towers], axis=0))
    return soup


def check_runs(runs):
    for run in runs:
        for name in (*RUN_FILES, "tower.keras", "manifests"):
            if not (run / name).exists():
                raise ValueError(f"{run}: not a training run folder (no {name})")
    first = runs[0] / "manifests"
    for run in runs[1:]:
        compared = filecmp.dircmp(first, run / "manifests")
        if compared.left_only or compared.right_only or compared.diff_files or compared.funny_files:
            raise ValueError(f"{run}: its speaker split (manifests/) differs from {runs[0]}'s")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.soup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="training run folders (at least two)")
    parser.add_argument("--out", required=True, help="run folder to write (must not exist yet)")
    args = parser.parse_args(argv)
    runs, out = [Path(run) for run in args.runs], Path(args.out)
    try:
        if len(runs) < 2:
            raise ValueError("give at least two runs to average")
        if out.exists():
            raise ValueError(f"{out}: already exists (choose a new run folder)")
        check_runs(runs)
        import keras

        import siamese  # noqa: F401  (registers the project's layers for loading)
        import sincnet_keras  # noqa: F401

        towers = []
        for run in runs:
            try:
                towers.append(keras.saving.load_model(run / "tower.keras", safe_mode=True, compile=False))
            except Exception as error:  # Keras raises many types for a bad file.
                raise ValueError(f"{run / 'tower.keras'}: not a loadable Keras model ({' '.join(str(error).split())[:200]})") from None
        soup = average_towers(towers)
        card = json.loads((runs[0] / "tower.json").read_text())  # ValueError if not JSON
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from experiments.train import write_derived_run

    write_derived_run(out, runs[0], soup, card, extra={"soup.txt": "".join(f"{run}\n" for run in runs)})
    print(f"averaged {len(runs)} towers into {out / 'tower.keras'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
