"""Diarizing many files on several workers (issue 8): `experiments.diarize --jobs N` and `--dask ADDRESS`.

Whatever runs the files, the outputs are those of one process: the same RTTM bytes, the same
`error:` lines in input order, the same exit code. Workers are real processes here (a spawned
process pool; a Dask `LocalCluster` with two one-thread worker processes on 127.0.0.1).
"""

import socket

import pytest

from experiments.diarize import main as diarize_main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, test_conversations):
    """Three conversations with a missing file and a text file among them."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "notes.wav").write_text("not audio")
    wavs = list(test_conversations["wav_path"])
    return [str(folder / "missing.wav"), wavs[0], str(folder / "notes.wav"), wavs[1], wavs[2]]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, inputs, shipped_model):
    """`(exit code, error lines, {rttm name: bytes})` of the plain single-process run."""
    return run(tmp_path_factory.mktemp("one"), inputs, [])


def run(out, inputs, options):
    """`(exit code, error lines, {rttm name: bytes})` of one in-process call of the command."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = diarize_main([*inputs, "--out-dir", str(out), *options])
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
    return code, errors, {path.name: path.read_bytes() for path in sorted(out.glob("*"))}


def test_the_single_process_run_reports_the_bad_files(one_process, inputs):
    code, errors, rttms = one_process
    assert code == 1 and [line.split()[1].rstrip(":") for line in errors] == [inputs[0], inputs[2]]
    assert sorted(rttms) == ["conv_000.rttm", "conv_001.rttm", "conv_002.rttm"]
    assert all(rttms.values())  # every conversation has speech


def test_two_jobs_give_the_single_process_outputs(tmp_path, inputs, one_process):
    assert run(tmp_path, inputs, ["--jobs", "2"]) == one_process


def test_a_dask_local_cluster_gives_the_single_process_outputs(tmp_path, inputs, one_process):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        assert run(tmp_path, inputs, ["--dask", cluster.scheduler_address]) == one_process


def test_an_unreachable_dask_scheduler_is_one_error_line(tmp_path, inputs, shipped_model):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    code, errors, rttms = run(tmp_path / "out", inputs[1:2], ["--dask", address])
    assert code == 1 and len(errors) == 1 and address in errors[0] and "cannot reach" in errors[0]
    assert rttms == {}


def test_a_bad_model_with_workers_is_one_error_line(tmp_path, inputs):
    """The workers load the model (this process does not): a bad one is still one line, before any file."""
    code, errors, rttms = run(tmp_path / "out", inputs[1:2], ["--jobs", "2", "--model", str(tmp_path / "none.keras")])
    assert code == 1 and errors == [f"error: {tmp_path / 'none.keras'}: model file not found"] and rttms == {}


def test_the_jobs_benchmark_has_help():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "experiments.benchmark_jobs", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--jobs" in result.stdout
