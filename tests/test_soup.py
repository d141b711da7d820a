"""Tests for experiments.soup: averaging towers fine-tuned from one start."""

import keras
import numpy as np
import pytest

from experiments.soup import main as soup_main
from sincnet_keras import build_encoder


def _run(folder, seed, manifest="path,speaker\na.flac,1\n"):
    """A minimal training run folder: config, tower card, split and a tiny tower with seeded weights."""
    folder.mkdir()
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "tower.json").write_text('{"sample_rate": 8000, "window_s": 0.5}')
    (folder / "manifests").mkdir()
    (folder / "manifests" / "train.csv").write_text(manifest)
    keras.utils.set_random_seed(seed)
    tower = build_encoder("tiny")
    tower.save(folder / "tower.keras")
    return tower


def test_soup_averages_every_weight_and_writes_a_run_folder(tmp_path):
    towers = [_run(tmp_path / f"run{seed}", seed) for seed in (1, 2, 3)]
    assert soup_main(["--runs", *(str(tmp_path / f"run{seed}") for seed in (1, 2, 3)), "--out", str(tmp_path / "soup")]) == 0
    soup = keras.saving.load_model(tmp_path / "soup" / "tower.keras", safe_mode=True, compile=False)
    for index, weight in enumerate(soup.weights):
        expected = np.mean([np.asarray(tower.weights[index]) for tower in towers], axis=0)
        np.testing.assert_allclose(np.asarray(weight), expected, rtol=1e-6, atol=1e-7)
    assert (tmp_path / "soup" / "manifests" / "train.csv").is_file() and (tmp_path / "soup" / "config.yaml").is_file()
    assert not (tmp_path / "soup.partial").exists()


@pytest.mark.parametrize("problem", ["split", "missing", "exists", "one"])
def test_soup_refuses_bad_runs_with_one_line(tmp_path, capsys, problem):
    _run(tmp_path / "a", 1)
    _run(tmp_path / "b", 2, manifest="path,speaker\nb.flac,2\n" if problem == "split" else "path,speaker\na.flac,1\n")
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    if problem == "missing":
        (tmp_path / "b" / "tower.keras").unlink()
    if problem == "exists":
        (tmp_path / "soup").mkdir()
    if problem == "one":
        runs = runs[:1]
    assert soup_main(["--runs", *runs, "--out", str(tmp_path / "soup")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error:") and len(error.strip().splitlines()) == 1
    if problem != "exists":
        assert not (tmp_path / "soup").exists()


def test_release_facts_of_a_soup_come_from_the_averaged_runs(tmp_path):
    from experiments.release import training_facts

    for seed, seconds in ((1, 600.0), (2, 300.0)):
        _run(tmp_path / f"run{seed}", seed)
        (tmp_path / f"run{seed}" / "log.csv").write_text("epoch,val_loss\n0,0.5\n1,0.4\n2,0.45\n")
        (tmp_path / f"run{seed}" / "train_seconds.txt").write_text(f"3 {seconds}\n")
    assert soup_main(["--runs", str(tmp_path / "run1"), str(tmp_path / "run2"), "--out", str(tmp_path / "soup")]) == 0
    facts = training_facts(tmp_path / "soup")
    assert facts["train_wall_s"] == 900.0 and facts["best_epoch"] == 2 and len(facts["soup_of"]) == 2
