"""Files per second of `experiments.diarize --jobs N` against `--jobs 1`, on simulated conversations.

    python -m experiments.benchmark_jobs [--files 20] [--jobs 1 2] [--repeats 1] [--model M]

Simulates `--files` conversations of held-out test speakers (`data_prep.simulate.write_conversations`
on the test split of `--config`, as experiments.benchmark builds its recordings), then measures
each `--jobs` value twice over:

- end to end: the whole `python -m experiments.diarize FILES --jobs N` command in a fresh process,
  start-up included (TensorFlow, the model, and the N worker processes): what a user waits for;
- warm: in a fresh process, after the workers have started and each diarized a file, the time to
  diarize all the files (`--jobs 1`: the same, in the process itself, as the command does).

It prints wall times, files per second and the speed-up over the first `--jobs` value, and checks
that every run wrote the same RTTM bytes.
"""

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)
from experiments.config import ConfigError, load_config
from experiments.quickstart import DEFAULT_CONFIG


def conversations(config, out_dir, count, seed):
    """`count` simulated conversations of the config's test speakers (built once, then reused)."""
    from data_prep.simulate import write_conversations
    from experiments.train import prepare_manifests

    folder = out_dir / f"conversations_{count}_seed{seed}"
    wavs = sorted(folder.glob("conv_*.wav"))
    if len(wavs) == count:
        return wavs
    manifests = prepare_manifests(load_config(config), out_dir)
    table = write_conversations(manifests["test"], folder, num_conversations=count, seed=seed)
    return [Path(path) for path in table["wav_path"]]


def end_to_end(wavs, jobs, model, out_dir):
    """Wall seconds of the diarize command, run in a fresh process."""
    command = [sys.executable, "-m", "experiments.diarize", *map(str, wavs), "--out-dir", str(out_dir),
               "--jobs", str(jobs)] + (["--model", model] if model else [])
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def warm(wavs, jobs, model, out_dir):
    """Runs in a fresh process: seconds to diarize `wavs` once the workers are started and warmed up."""
    from data_prep.rttm import write_rttm
    from experiments.diarize import diarize_file, open_workers

    if jobs == 1:
        from siamese.diarizer import Diarizer

        diarizer = Diarizer.load(model)
        diarize_file(diarizer, str(wavs[0]), None)
        started = time.perf_counter()
        outcomes = [diarize_file(diarizer, str(wav), None) for wav in wavs]
    else:
        submit, close = open_workers(argparse.Namespace(dask=None, jobs=jobs, model=model, num_speakers=None))
        # Two warm-up files per worker: every worker is up, has its model, and has run it once.
        for future in [submit(str(wavs[index % len(wavs)])) for index in range(2 * jobs)]:
            future.result()
        started = time.perf_counter()
        outcomes = [future.result() for future in [submit(str(wav)) for wav in wavs]]
    seconds = time.perf_counter() - started
    if jobs > 1:
        close()
    for wav, (annotation, error, _) in zip(wavs, outcomes):
        if error:
            raise RuntimeError(error)
        write_rttm(annotation, Path(out_dir) / f"{wav.stem}.rttm")
    return seconds


def outputs(folder):
    return {path.name: path.read_bytes() for path in sorted(Path(folder).glob("*.rttm"))}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark_jobs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20, help="number of simulated conversations (default 20)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values to compare (default 1 2)")
    parser.add_argument("--repeats", type=int, default=1, help="measurements of each value, interleaved (default 1)")
    parser.add_argument("--model", help="embedding tower .keras (default: the shipped model)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="config whose split defines the test speakers")
    parser.add_argument("--out-dir", default="runs/benchmark_jobs", help="folder for the simulated conversations")
    parser.add_argument("--seed", type=int, default=8000, help="seed of the simulated conversations")
    args = parser.parse_args(argv)
    if args.files < 1 or args.repeats < 1 or min(args.jobs) < 1:
        parser.error("--files, --repeats and --jobs must be at least 1")
    import soundfile

    try:
        wavs = conversations(args.config, Path(args.out_dir), args.files, args.seed)
    except (ConfigError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    audio_s = sum(soundfile.info(str(wav)).duration for wav in wavs)
    cores = len(os.sched_getaffinity(0))
    print(f"{len(wavs)} conversations, {audio_s / 60:.1f} min of audio; {cores} CPU cores; load average before: "
          f"{os.getloadavg()[0]:.1f}")
    context = multiprocessing.get_context("spawn")
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for jobs in args.jobs:
                folder = Path(scratch) / f"jobs{jobs}_{repeat}"
                total = end_to_end(wavs, jobs, args.model, folder / "command")
                # A fresh process (not a daemonic Pool worker: it starts workers of its own).
                with ProcessPoolExecutor(1, mp_context=context) as pool:
                    warm_s = pool.submit(warm, wavs, jobs, args.model, folder / "warm").result()
                for name in ("command", "warm"):
                    reference = reference or outputs(folder / name)
                    if outputs(folder / name) != reference:
                        print(f"error: --jobs {jobs} ({name}) wrote other RTTMs than the first run", file=sys.stderr)
                        return 1
                rows.append((jobs, repeat, total, warm_s))
                print(f"  measured --jobs {jobs} (repeat {repeat + 1}): {total:.1f} s end to end, {warm_s:.1f} s warm",
                      file=sys.stderr, flush=True)
    base = {kind: min(row[index] for row in rows if row[0] == args.jobs[0]) for kind, index in (("total", 2),
                                                                                                 ("warm", 3))}
    print("\n| --jobs | repeat | end to end s | files/s | speed-up | warm s | files/s | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for jobs, repeat, total, warm_s in rows:
        print(f"| {jobs} | {repeat + 1} | {total:.1f} | {len(wavs) / total:.2f} | {base['total'] / total:.2f} | "
              f"{warm_s:.1f} | {len(wavs) / warm_s:.2f} | {base['warm'] / warm_s:.2f} |")
    print(f"\nRTTMs identical across all runs: yes ({len(reference)} files). Speed-up: against the fastest "
          f"--jobs {args.jobs[0]} run. Load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
