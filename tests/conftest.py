"""Shared fixtures: paths to the vendored LibriSpeech sample and small test audio."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.manifest import scan_librispeech

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def librispeech_root() -> Path:
    """The repo's data/LibriSpeech (read only: never write below it)."""
    root = REPO_ROOT / "data" / "LibriSpeech"
    if not (root / "train-clean-100").is_dir():
        pytest.skip(f"vendored LibriSpeech sample not found at {root}")
    return root


@pytest.fixture(scope="session")
def real_flac(librispeech_root) -> Path:
    """One real 16 kHz LibriSpeech utterance."""
    return sorted(librispeech_root.glob("train-clean-100/*/*/*.flac"))[0]


@pytest.fixture(scope="session")
def librispeech_manifest(librispeech_root):
    """Manifest of the whole vendored sample (headers only, fast)."""
    return scan_librispeech(librispeech_root)


@pytest.fixture
def tiny_librispeech(tmp_path, librispeech_root) -> Path:
    """A temporary LibriSpeech-layout copy of 6 speakers plus SPEAKERS.TXT."""
    dst = tmp_path / "LibriSpeech"
    split = librispeech_root / "train-clean-100"
    for speaker in sorted(p for p in split.iterdir() if p.is_dir())[:6]:
        shutil.copytree(speaker, dst / "train-clean-100" / speaker.name)
    shutil.copy2(librispeech_root / "SPEAKERS.TXT", dst / "SPEAKERS.TXT")
    return dst


@pytest.fixture
def write_test_wav(tmp_path):
    """Factory ``(name, audio, sample_rate, subtype="PCM_16") -> Path`` writing under tmp_path."""

    def write(name: str, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), audio, sample_rate, subtype=subtype)
        return path

    return write


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    """The model committed under models/ that the diarizer loads by default (trained on the vendored training speakers)."""
    from siamese.diarizer import DEFAULT_MODEL

    path = DEFAULT_MODEL
    if not path.is_file():
        pytest.skip("no shipped model under models/")
    return path


@pytest.fixture(scope="session")
def test_split(librispeech_manifest):
    """The speaker split of experiments/configs/sincnet_default.yaml (seed 0, 20 val, 30 test)."""
    from data_prep.split import split_speakers

    return split_speakers(librispeech_manifest, val_speakers=20, test_speakers=30, seed=0)


@pytest.fixture(scope="session")
def test_conversations(tmp_path_factory, test_split):
    """Three simulated conversations of held-out test speakers (wav + rttm, seeded)."""
    from data_prep.simulate import write_conversations

    out = tmp_path_factory.mktemp("conversations")
    return write_conversations(test_split["test"], out, num_conversations=3, seed=11)


@pytest.fixture(scope="session")
def tree_digest():
    """A hash of every path and byte under a folder: proves a command left its source untouched."""
    import hashlib

    def digest(root):
        total = hashlib.sha256()
        for path in sorted(Path(root).rglob("*")):
            total.update(str(path.relative_to(root)).encode())
            if path.is_file():
                total.update(path.read_bytes())
        return total.hexdigest()

    return digest
