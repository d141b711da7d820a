"""Diarize recordings: write who spoke when as one RTTM file per input.

    python -m experiments.diarize meeting.wav call.flac --out-dir rttm/ [--model M] [--num-speakers N]
    python -m experiments.diarize corpus/*.wav --out-dir rttm/ --jobs 4              # a local process pool
    python -m experiments.diarize corpus/*.wav --out-dir rttm/ --dask tcp://host:8786   # a Dask cluster

Writes `DIR/<stem>.rttm` for each input, the RTTM file id being the stem (blanks
become underscores, as RTTM fields are space-separated). Any
sample rate, mono or multi-channel, wav or flac. Without `--model` the shipped
model in `models/` is used. A bad input is reported on one line and skipped,
the other inputs are still diarized, and the exit code is then 1. A recording
with no speech (e.g. digital silence) gives an empty RTTM and a warning. Each
RTTM is written to a temporary file and renamed: never half an output.

With `--jobs N` (N processes on this machine) or `--dask ADDRESS` (the workers of a
running Dask distributed cluster) each worker process loads the model once and
diarizes whole files; the RTTMs come back here and are written as above, so the
outputs, the error lines (in input order) and the exit code are those of `--jobs 1`.
Dask workers must be able to import this project and to read the model and the audio
at the same absolute paths as here (a shared filesystem); the RTTMs need not be shared.
"""

import argparse
import functools
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)

logger = logging.getLogger("experiments.diarize")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.diarize", description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", nargs="+", help="audio files to diarize")
    parser.add_argument("--out-dir", required=True, help="folder for the <stem>.rttm outputs (created)")
    parser.add_argument("--model", help="embedding tower .keras with its .json sidecar (default: the shipped model)")
    parser.add_argument("--num-speakers", type=int, help="number of speakers, if known (default: estimated)")
    parser.add_argument("--verbose", action="store_true", help="log each step")
    workers = parser.add_mutually_exclusive_group()
    workers.add_argument("--jobs", type=int, default=1,
                         help="diarize N files at a time in N local processes, each loading the model once (default 1)")
    workers.add_argument("--dask", metavar="ADDRESS",
                         help="send the files to the Dask distributed scheduler at ADDRESS (e.g. tcp://host:8786)")
    args = parser.parse_args(argv)
    if args.num_speakers is not None and args.num_speakers < 1:
        parser.error("--num-speakers must be at least 1")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def diarize_file(diarizer, path, num_speakers):
    """`(annotation, error line, seconds)` for one input: the annotation, or None and the error line."""
    from data_prep.audio import AudioError

    started = time.perf_counter()
    try:
        # RTTM fields are space-separated, so a stem's blanks become underscores in the file id.
        uri = re.sub(r"\s", "_", Path(path).stem)
        annotation = diarizer.diarize(path, num_speakers=num_speakers, uri=uri)
    except AudioError as error:  # already "<path>: <problem>"
        return None, f"error: {error}", 0.0
    except (OSError, ValueError) as error:
        return None, f"error: {path}: {' '.join(str(error).split())}", 0.0
    return annotation, None, time.perf_counter() - started


# A --jobs worker process keeps its model here: loaded once, by the pool's initializer.
_worker = {}


def _start_worker(model, log_level, threads):
    logging.basicConfig(level=log_level, format="%(levelname)s: %(message)s")
    import tensorflow as tf

    # N workers share the machine's cores: TensorFlow's own thread pools get their share, not all of them.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    _worker["diarizer"], _worker["error"] = _load(model)


def _load(model):
    """`(Diarizer, None)`, or `(None, message)` for a model that cannot be used."""
    from siamese.diarizer import Diarizer

    try:
        return Diarizer.load(model), None
    except (OSError, ValueError) as error:
        return None, str(error)


def _pool_probe():
    return _worker["error"]


def _pool_task(path, num_speakers):
    return diarize_file(_worker["diarizer"], path, num_speakers)


_loading = threading.Lock()


@functools.lru_cache(maxsize=2)
def _load_once(model):
    return _load(model)


def _cached_model(model):
    """This Dask worker process's `_load(model)`: done by the first task that needs it, then kept."""
    with _loading:  # a worker with several threads still loads once
        return _load_once(model)


def _dask_probe(model):
    return _cached_model(model)[1]


def _dask_task(model, path, absolute, num_speakers):
    """Runs on a Dask worker. It reads `absolute` (its working folder is not ours); error lines name `path`."""
    annotation, error, seconds = diarize_file(_cached_model(model)[0], absolute, num_speakers)
    return annotation, error and error.replace(absolute, path), seconds


class WorkerError(Exception):
    """The workers cannot be reached, cannot start, or cannot load the model: the one error line."""


def open_workers(args):
    """`(submit, close)` once a worker has loaded the model: `submit(path)` returns a future of `diarize_file`."""
    if args.dask:
        from distributed import Client

        try:
            client = Client(args.dask, timeout="10s")
        except (OSError, TimeoutError, ValueError) as error:
            raise WorkerError(f"--dask {args.dask}: cannot reach the scheduler ({' '.join(str(error).split())})") from None
        # Workers load the model by path (and read the audio by path): give them one that does not depend on our cwd.
        model = str(Path(args.model).resolve()) if args.model else None
        probe, close = client.submit(_dask_probe, model, pure=False), client.close

        def submit(path):
            return client.submit(_dask_task, model, path, str(Path(path).absolute()), args.num_speakers, pure=False)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # TensorFlow does not survive fork: each worker is a fresh (spawned) interpreter.
        threads = max(1, len(os.sched_getaffinity(0)) // args.jobs)
        pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(args.model, logging.getLogger().level, threads))
        probe = pool.submit(_pool_probe)

        def submit(path):
            return pool.submit(_pool_task, path, args.num_speakers)

        def close():
            pool.shutdown(cancel_futures=True)
    try:
        error = probe.result()
    except Exception as failure:  # noqa: BLE001  (e.g. a worker that cannot import this project)
        error = f"the workers cannot start ({' '.join(str(failure).split()) or type(failure).__name__})"
    if error:
        close()
        raise WorkerError(error)
    return submit, close


def diarize_all(paths, args, diarizer, out_dir):
    """Writes `out_dir/<stem>.rttm` per input; yields `(path, annotation, error line, seconds)` in input order.

    An input whose stem an earlier input was already written under is not diarized (its error
    line says so); one whose earlier namesake failed is, once that failure is known. With
    workers every other input is submitted at once and the results are read in order; the
    RTTMs are written here, by this process, in every case.
    """
    from data_prep.rttm import write_rttm

    submit = None
    if args.dask or args.jobs > 1:
        submit, close = open_workers(args)
    try:
        first = {}
        for index, path in enumerate(paths):
            first.setdefault(Path(path).stem, index)
        pending = {index: submit(path) for index, path in enumerate(paths)
                   if submit is not None and first[Path(path).stem] == index}
        written = {}
        for index, path in enumerate(paths):
            stem = Path(path).stem
            if stem in written:  # one output per stem: never overwrite an earlier input's result
                yield path, None, f"error: {path}: same output name as {written[stem]}; skipped", 0.0
                continue
            if submit is None:
                outcome = diarize_file(diarizer, path, args.num_speakers)
            else:
                # Submitted with the others, or (a failed namesake's successor) now that it is its turn.
                future = pending.pop(index) if index in pending else submit(path)
                try:
                    outcome = future.result()
                except Exception as failure:  # noqa: BLE001  (a worker that died or could not start)
                    outcome = None, f"error: {path}: {' '.join(str(failure).split()) or type(failure).__name__}", 0.0
            annotation, error, seconds = outcome
            if annotation is not None:
                try:
                    write_rttm(annotation, out_dir / f"{stem}.rttm")
                    written[stem] = path  # only a written result blocks a later input of the same stem
                except (OSError, ValueError) as failure:  # e.g. an unwritable output folder
                    annotation, error = None, f"error: {path}: {' '.join(str(failure).split())}"
            yield path, annotation, error, seconds
    finally:
        if submit is not None:
            close()


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: {out_dir}: not a directory", file=sys.stderr)
        return 1
    if args.model and Path(args.model).is_dir():
        print(f"error: {args.model}: is a directory, not a model file", file=sys.stderr)
        return 1
    diarizer = None  # with workers, they load the model (and report a bad one, on one line, before any file)
    if args.jobs == 1 and not args.dask:
        from siamese.diarizer import Diarizer

        try:
            diarizer = Diarizer.load(args.model)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    failures = 0
    try:
        for path, annotation, error, seconds in diarize_all(args.audio, args, diarizer, out_dir):
            if error is not None:
                print(error, file=sys.stderr)
                failures += 1
                continue
            logger.info("%s: %d speakers, %.1f s -> %s", path, len(annotation.labels()), seconds,
                        out_dir / f"{Path(path).stem}.rttm")
    except WorkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
