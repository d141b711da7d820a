"""Tests for data_prep.manifest, data_prep.split and the ``python -m data_prep`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from data_prep.__main__ import main
from data_prep.manifest import read_manifest, scan_folders, scan_librispeech, write_manifest
from data_prep.split import split_speakers


def test_scan_librispeech_vendored(librispeech_manifest):
    df = librispeech_manifest
    assert list(df.columns) == ["path", "speaker", "duration_s", "sample_rate", "gender", "chapter"]
    assert df["speaker"].nunique() == 251 and len(df) == 251
    assert (df["sample_rate"] == 16000).all() and (df["duration_s"] > 0).all()
    assert set(df["gender"]) == {"F", "M"}
    assert df.equals(df.sort_values(["speaker", "path"], ignore_index=True))
    assert df.attrs["skipped"] == []


def test_scan_librispeech_accepts_split_folder(tiny_librispeech):
    df = scan_librispeech(tiny_librispeech / "train-clean-100")
    assert df["speaker"].nunique() == 6 and df["gender"].notna().all()


def test_scan_folders_generic_layout(tmp_path, write_test_wav):
    tone = np.sin(np.arange(8000) / 10).astype(np.float32) * 0.1
    write_test_wav("corpus/alice/a1.wav", tone, 16000)
    write_test_wav("corpus/alice/session2/a2.FLAC", tone, 8000)
    write_test_wav("corpus/bob/b1.WAV", tone, 16000)
    write_test_wav("corpus/loose.wav", tone, 16000)  # not in a speaker folder: ignored
    (tmp_path / "corpus/bob/notes.txt").write_text("ignored")
    (tmp_path / "corpus/bob/broken.wav").write_text("not audio")
    df = scan_folders(tmp_path / "corpus")
    assert list(df["speaker"]) == ["alice", "alice", "bob"]
    assert list(df["sample_rate"]) == [16000, 8000, 16000]
    assert df["duration_s"].tolist() == pytest.approx([0.5, 1.0, 0.5])
    assert [os.path.basename(p) for p, _ in df.attrs["skipped"]] == ["broken.wav"]


def test_empty_root_raises(tmp_path):
    with pytest.raises(ValueError, match="no speakers found"):
        scan_folders(tmp_path)
    with pytest.raises(ValueError, match="no such directory"):
        scan_librispeech(tmp_path / "missing")


def test_write_read_roundtrip_is_byte_identical(librispeech_manifest, tmp_path):
    first, second = tmp_path / "a" / "m.csv", tmp_path / "b.csv"
    write_manifest(librispeech_manifest, first)
    write_manifest(librispeech_manifest, second)
    assert first.read_bytes() == second.read_bytes()
    back = read_manifest(first)
    expected = librispeech_manifest.assign(duration_s=librispeech_manifest["duration_s"].round(3))
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    assert back["speaker"].map(type).eq(str).all()
    write_manifest(back, second)
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.csv", "m.csv"]


def test_read_manifest_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,speaker\nx.wav,1\n")
    with pytest.raises(ValueError, match="bad.csv.*duration_s"):
        read_manifest(bad)
    with pytest.raises(ValueError, match="nope.csv"):
        read_manifest(tmp_path / "nope.csv")


def test_split_is_disjoint_sized_and_seeded(librispeech_manifest):
    parts = split_speakers(librispeech_manifest, val_speakers=20, test_speakers=30, seed=0)
    speakers = {name: set(part["speaker"]) for name, part in parts.items()}
    assert [len(speakers[n]) for n in ("train", "val", "test")] == [201, 20, 30]
    assert not (speakers["train"] & speakers["val"] or speakers["train"] & speakers["test"])
    assert not speakers["val"] & speakers["test"]
    assert sum(len(p) for p in parts.values()) == len(librispeech_manifest)
    assert parts["test"]["gender"].value_counts().to_dict() == {"F": 15, "M": 15}
    again = split_speakers(librispeech_manifest, val_speakers=20, test_speakers=30, seed=0)
    assert all(parts[n].equals(again[n]) for n in parts)
    other = split_speakers(librispeech_manifest, val_speakers=20, test_speakers=30, seed=1)
    assert set(other["test"]["speaker"]) != speakers["test"]


def test_split_needs_a_training_speaker(librispeech_manifest):
    with pytest.raises(ValueError):
        split_speakers(librispeech_manifest, val_speakers=200, test_speakers=51, seed=0)
    with pytest.raises(ValueError):
        split_speakers(librispeech_manifest, val_speakers=-1, test_speakers=0, seed=0)


def _run_cli(repo_root, *args):
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *map(str, args)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=120,
    )


def test_cli_help(repo_root):
    result = _run_cli(repo_root, "--help")
    assert result.returncode == 0 and "--val-speakers" in result.stdout


def test_cli_writes_manifests_and_leaves_source_alone(repo_root, tiny_librispeech, tmp_path, tree_digest):
    before = tree_digest(tiny_librispeech)
    out = tmp_path / "manifests"
    result = _run_cli(
        repo_root, "--format", "librispeech", "--root", tiny_librispeech, "--out", out,
        "--val-speakers", 1, "--test-speakers", 2,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["all.csv", "test.csv", "train.csv", "val.csv"]
    assert read_manifest(out / "test.csv")["speaker"].nunique() == 2
    assert "train" in result.stdout and tree_digest(tiny_librispeech) == before


def test_cli_missing_root_is_one_line_error(repo_root, tmp_path):
    result = _run_cli(
        repo_root, "--format", "folders", "--root", tmp_path / "nope", "--out", tmp_path / "out"
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra", [["--val-speakers", "abc"], ["--val-speakers", "5", "--test-speakers", "5"]]
)
def test_cli_user_errors_exit_1_without_outputs(tiny_librispeech, tmp_path, capsys, extra):
    out = tmp_path / "out"
    args = ["--format", "librispeech", "--root", str(tiny_librispeech), "--out", str(out)]
    code = main([*args, *extra])
    assert code == 1 and capsys.readouterr().err.startswith("error:") and not out.exists()
