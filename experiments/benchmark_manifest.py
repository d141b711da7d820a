"""Does a million-utterance manifest fit in memory, and how long does it take to read and pair?

    python -m experiments.benchmark_manifest                 # 1,000,000 rows, ~5,000 speakers
    python -m experiments.benchmark_manifest --rows 200000 --pairs 64000

Writes a synthetic manifest CSV (fake paths in a VoxCeleb-like layout, random
durations) to a temporary folder, then measures each stage in a fresh Python
process, so one stage's memory never counts in another's: peak resident memory
(VmHWM from /proc/self/status) and wall time of

- ``imports``: Python with pandas and the data_prep modules, the floor of the rest;
- ``read``: reading the manifest with `data_prep.manifest.read_manifest`;
- ``pairs``: reading it, then drawing ``--pairs`` training pairs with
  `data_prep.pairs.sample_pairs` (wall time of the sampling alone);
- ``loader``: reading it, then setting up the training crop loader
  (`data_prep.pipeline.crop_loader`, which indexes paths and durations).

Nothing is decoded: the paths do not exist. Linux only (reads /proc).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("imports", "read", "pairs", "loader")


def write_synthetic_manifest(path, rows, speakers, seed=0):
    """A manifest CSV of `rows` fake utterances of `speakers` speakers (ids `id00000`...), sorted like a scan."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    # Talkative and quiet speakers, as in VoxCeleb: utterance counts drawn log-normally, every speaker kept.
    weights = rng.lognormal(0.0, 0.7, speakers)
    speaker = np.sort(rng.choice(speakers, rows - speakers, p=weights / weights.sum()))
    speaker = np.sort(np.concatenate([np.arange(speakers), speaker]))
    video = rng.integers(0, 36**11, rows)
    video_ids = np.array([np.base_repr(v, 36).lower().rjust(11, "0") for v in video])
    number = np.arange(rows) - np.searchsorted(speaker, speaker)  # running count within the speaker
    speaker_ids = np.char.add("id", np.char.zfill(speaker.astype(str), 5))
    paths = np.char.add(np.char.add(np.char.add(np.char.add("/data/voxceleb2/dev/aac/", speaker_ids), "/"),
                                    video_ids), np.char.add("/", np.char.add(np.char.zfill(number.astype(str), 5),
                                                                             ".m4a")))
    table = pd.DataFrame({
        "path": paths,
        "speaker": speaker_ids,
        "duration_s": np.round(rng.uniform(4.0, 20.0, rows), 3),
        "sample_rate": 16000,
    })
    table.to_csv(path, index=False, lineterminator="\n")


def measure(stage, manifest_path, num_pairs):
    """Runs one stage in this process; returns wall seconds of its main step."""
    import numpy as np  # noqa: F401  (counted in the floor, like pandas)
    import pandas as pd  # noqa: F401

    from data_prep.manifest import read_manifest
    from data_prep.pairs import sample_pairs
    from data_prep.pipeline import crop_loader

    if stage == "imports":
        return 0.0
    started = time.perf_counter()
    manifest = read_manifest(manifest_path)
    if stage == "read":
        return time.perf_counter() - started
    started = time.perf_counter()
    if stage == "pairs":
        pairs = sample_pairs(manifest, num_pairs, seed=0)
        assert len(pairs) == num_pairs
    else:
        crop_loader(manifest, sample_rate=16000, window_s=1.0, cache_mb=2048)
    return time.perf_counter() - started


def peak_rss_mb():
    """This process's peak resident memory (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status (not Linux?)")


def run_stage(stage, manifest_path, num_pairs):
    """Runs a stage in a fresh interpreter; returns its figures as a dict."""
    command = [sys.executable, "-m", "experiments.benchmark_manifest", "--measure", stage,
               "--manifest", str(manifest_path), "--pairs", str(num_pairs)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"stage {stage} failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark_manifest",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="utterances in the synthetic manifest (default 1,000,000)")
    parser.add_argument("--speakers", type=int, default=5_000, help="speakers (default 5,000)")
    parser.add_argument("--pairs", type=int, default=64_000, help="training pairs to draw (default 64,000)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to measure (default all)")
    parser.add_argument("--measure", choices=STAGES, help=argparse.SUPPRESS)  # internal: run one stage here
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        wall_s = measure(args.measure, args.manifest, args.pairs)
        print(json.dumps({"stage": args.measure, "wall_s": wall_s, "peak_rss_mb": peak_rss_mb()}))
        return 0
    if args.rows < 2 or not 2 <= args.speakers <= args.rows or args.pairs < 1:
        print("error: need rows >= speakers >= 2 and pairs >= 1", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="benchmark_manifest_") as folder:
        manifest_path = Path(folder) / "manifest.csv"
        started = time.perf_counter()
        write_synthetic_manifest(manifest_path, args.rows, args.speakers)
        size_mb = manifest_path.stat().st_size / 2**20
        print(f"synthetic manifest: {args.rows:,} rows, {args.speakers:,} speakers, {size_mb:.0f} MB CSV "
              f"(written in {time.perf_counter() - started:.1f} s)")
        print(f"{'stage':<9}{'wall s':>9}{'peak RSS MB':>13}  what is timed")
        timed = {"imports": "-", "read": "read_manifest", "pairs": f"sample_pairs({args.pairs:,}) after reading",
                 "loader": "crop_loader setup after reading"}
        for stage in args.stages:
            figures = run_stage(stage, manifest_path, args.pairs)
            print(f"{stage:<9}{figures['wall_s']:>9.2f}{figures['peak_rss_mb']:>13.0f}  {timed[stage]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
