"""Distillation: the relational loss, teacher banks, their dataset, and `objective: distill` end to end.

The teacher here is a stand-in (band energies of each window), so no torch is needed; the
Resemblyzer teacher itself is checked in test_peers.py when torch is installed.
"""

import keras
import numpy as np
import pytest
import yaml

from data_prep.manifest import scan_librispeech
from data_prep.pairs import sample_speaker_batches
from data_prep.teacher_bank import (
    build_teacher_bank,
    init_signs,
    load_teacher_bank,
    project_teacher_windows,
    save_teacher_bank,
    teacher_dataset,
)
from experiments.config import ConfigError, load_config
from experiments.train import main as train_main
from siamese.losses import BatchContrastiveLoss, RelationalDistillationLoss

RATE = 16000


def band_energies(window_s, bands=12):
    """A deterministic stand-in teacher: log energy of `bands` frequency bands of each window."""

    def embed(audio, starts_s):
        length = int(round(window_s * RATE))
        crops = np.stack([audio[int(round(t * RATE)):][:length] for t in starts_s])
        spectrum = np.abs(np.fft.rfft(crops, axis=1)) ** 2
        return np.log(np.stack([band.sum(axis=1) for band in np.array_split(spectrum, bands, axis=1)], axis=1) + 1e-6)

    return embed


def test_relational_loss_is_zero_for_the_same_geometry_and_positive_otherwise():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(8, 5)).astype("float32")
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    student = (np.pad(teacher, ((0, 0), (0, 1))) @ rotation * 3.0).astype("float32")  # rotated, scaled, wider
    loss = RelationalDistillationLoss()
    assert float(loss(teacher, student)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(teacher, rng.normal(size=(8, 6)).astype("float32"))) > 0.01
    again = keras.losses.deserialize(keras.losses.serialize(RelationalDistillationLoss(0.5, margin=0.8)))
    assert isinstance(again, RelationalDistillationLoss) and (again.contrastive_weight, again.margin) == (0.5, 0.8)


def test_contrastive_weight_adds_the_batch_contrastive_loss_on_the_last_column():
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(6, 5)).astype("float32")
    student = rng.normal(size=(6, 4)).astype("float32")
    codes = np.array([0, 0, 1, 1, 2, 2], "float32")
    with_labels = np.concatenate([teacher, codes[:, None]], axis=1)
    combined = float(RelationalDistillationLoss(contrastive_weight=0.3, margin=0.9)(with_labels, student))
    expected = (float(RelationalDistillationLoss()(teacher, student))
                + 0.3 * float(BatchContrastiveLoss(margin=0.9)(codes, student)))
    assert combined == pytest.approx(expected, rel=1e-5)


def test_embedding_weight_adds_one_minus_the_cosine_to_the_teachers_embedding():
    rng = np.random.default_rng(2)
    teacher = rng.normal(size=(6, 5)).astype("float32")
    student = rng.normal(size=(6, 5)).astype("float32")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cosine = np.sum(unit(teacher) * unit(student), axis=1)
    combined = float(RelationalDistillationLoss(embedding_weight=0.4)(teacher, student))
    assert combined == pytest.approx(float(RelationalDistillationLoss()(teacher, student))
                                     + 0.4 * float(np.mean(1.0 - cosine)), rel=1e-5)
    # The same direction at another scale is learnt; only the labels' column is left out of the target.
    codes = np.array([0, 0, 1, 1, 2, 2], "float32")[:, None]
    both = RelationalDistillationLoss(contrastive_weight=0.2, embedding_weight=1.0)
    only_labels = RelationalDistillationLoss(contrastive_weight=0.2)
    with_labels = np.concatenate([teacher, codes], axis=1)
    assert float(both(with_labels, 3.0 * teacher)) == pytest.approx(float(only_labels(with_labels, 3.0 * teacher)),
                                                                    abs=1e-6)
    again = keras.losses.deserialize(keras.losses.serialize(both))
    assert (again.contrastive_weight, again.embedding_weight) == (0.2, 1.0)


def test_projected_teacher_windows_keep_dot_products_on_the_main_directions():
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(3, 8))
    train = [(np.arange(5), (rng.normal(size=(5, 3)) @ basis).astype("float32")) for _ in range(4)]  # rank 3
    val = [(np.arange(2), (rng.normal(size=(2, 3)) @ basis).astype("float32"))]
    projected, kept = project_teacher_windows({"train": train, "val": val}, 3)
    assert kept == pytest.approx(1.0) and projected["val"][0][1].shape == (2, 3)
    for (_, before), (_, after) in zip(train + val, projected["train"] + projected["val"]):
        np.testing.assert_allclose(after @ after.T, before @ before.T, rtol=1e-3, atol=1e-3)
    assert project_teacher_windows({"train": train}, 2)[1] < 1.0
    with pytest.raises(ValueError, match="cannot project 8-dimensional"):
        project_teacher_windows({"train": train}, 9)


def test_teacher_projection_does_not_depend_on_the_signs_lapack_picks():
    """Negated, reordered training windows span the same directions: the targets must not change."""
    rng = np.random.default_rng(1)
    train = [(np.arange(6), rng.normal(size=(6, 8)).astype("float32")) for _ in range(5)]
    val = [(np.arange(3), rng.normal(size=(3, 8)).astype("float32"))]
    flipped = [(starts, -embeddings[::-1]) for starts, embeddings in train[::-1]]
    first, _ = project_teacher_windows({"train": train, "val": val}, 4)
    second, _ = project_teacher_windows({"train": flipped, "val": val}, 4)
    np.testing.assert_allclose(second["val"][0][1], first["val"][0][1], rtol=1e-4, atol=1e-5)


def test_init_signs_follow_the_embeddings_of_the_tower_to_fine_tune(tmp_path, tiny_librispeech):
    """A tower that learned some directions with the other sign gets targets with those signs flipped."""
    manifest = scan_librispeech(tiny_librispeech)

    def shares(crops):  # level-free log band shares: the tower hears level-normalised crops
        spectrum = np.abs(np.fft.rfft(crops, axis=1)) ** 2
        energies = np.stack([band.sum(axis=1) for band in np.array_split(spectrum, 6, axis=1)], axis=1)
        return np.log(energies / energies.sum(axis=1, keepdims=True) + 1e-9)

    bank = build_teacher_bank(manifest, lambda audio, starts: shares(np.stack([audio[int(t * RATE):][:RATE // 2]
                                                                                for t in starts])),
                              sample_rate=RATE, window_s=0.5, hop_s=0.25, teacher="shares", progress=False)
    save_teacher_bank(bank, tmp_path / "bank.npz")
    windows = load_teacher_bank(tmp_path / "bank.npz", manifest, sample_rate=RATE, window_s=0.5, hop_s=0.25,
                                teacher="shares")
    centre = np.concatenate([embeddings for _, embeddings in windows]).mean(axis=0)
    learned = np.array([1, -1, -1, 1, 1, -1], "float32")  # the signs the tower was distilled with

    class Tower:  # the teacher's embedding of the same crop, centred, in the tower's own signs
        def predict(self, crops, batch_size, verbose):
            return (shares(crops[..., 0]) - centre) * learned

    targets = [(starts, embeddings - centre) for starts, embeddings in windows]
    signs = init_signs(Tower(), manifest, targets, sample_rate=RATE, window_s=0.5, rows=4, every=1)
    np.testing.assert_array_equal(signs, learned)
    flipped = [(starts, embeddings * learned) for starts, embeddings in targets]
    np.testing.assert_array_equal(init_signs(Tower(), manifest, flipped, sample_rate=RATE, window_s=0.5, rows=4,
                                             every=1), np.ones(6, "float32"))


def test_teacher_bank_round_trip_and_refusals(tmp_path, tiny_librispeech):
    manifest = scan_librispeech(tiny_librispeech).iloc[:3].reset_index(drop=True)
    bank = build_teacher_bank(manifest, band_energies(1.0), sample_rate=RATE, window_s=1.0, hop_s=0.5,
                              teacher="bands", progress=False)
    assert bank["embedding"].shape == (len(bank["start"]), 12)
    assert set(bank["utterance"]) == {0, 1, 2}  # every utterance keeps at least one window
    assert np.all(bank["start"] % 8000 == 0)
    path = tmp_path / "bank.npz"
    save_teacher_bank(bank, path)
    settings = {"sample_rate": RATE, "window_s": 1.0, "hop_s": 0.5, "teacher": "bands"}
    reordered = manifest.iloc[::-1].reset_index(drop=True)
    windows = load_teacher_bank(path, reordered, **settings)
    first = bank["utterance"] == 2  # the reordered manifest's row 0 is the bank's utterance 2
    np.testing.assert_array_equal(windows[0][0], bank["start"][first])
    np.testing.assert_allclose(windows[0][1], bank["embedding"][first].astype("float32"))
    with pytest.raises(ValueError, match="made with"):
        load_teacher_bank(path, manifest, **{**settings, "teacher": "other"})
    with pytest.raises(ValueError, match="no teacher embeddings"):
        load_teacher_bank(path, scan_librispeech(tiny_librispeech), **settings)


def test_teacher_dataset_pairs_each_crop_with_its_windows_embedding(tmp_path, tiny_librispeech):
    manifest = scan_librispeech(tiny_librispeech)
    embed = band_energies(1.0)
    bank = build_teacher_bank(manifest, embed, sample_rate=RATE, window_s=1.0, hop_s=0.5, teacher="bands",
                              progress=False)
    save_teacher_bank(bank, tmp_path / "bank.npz")
    windows = load_teacher_bank(tmp_path / "bank.npz", manifest, sample_rate=RATE, window_s=1.0, hop_s=0.5,
                                teacher="bands")
    crops = sample_speaker_batches(manifest, 3, 4, 2, seed=1)
    data = teacher_dataset(manifest, crops, windows, sample_rate=RATE, window_s=1.0, hop_s=0.5, batch_size=8)
    batches = list(data.as_numpy_iterator())
    assert len(batches) == 3 and batches[0][0].shape == (8, RATE, 1) and batches[0][1].shape == (8, 12)
    again = list(data.as_numpy_iterator())
    np.testing.assert_array_equal(batches[1][0], again[1][0])  # crops are a pure function of their seeds
    targets = {tuple(row) for row in bank["embedding"].astype("float32")}
    assert all(tuple(row) in targets for _, batch in batches for row in batch)
    labelled = teacher_dataset(manifest, crops, windows, sample_rate=RATE, window_s=1.0, hop_s=0.5, batch_size=8,
                               with_speaker=True)
    first = next(labelled.as_numpy_iterator())[1]
    np.testing.assert_array_equal(first[:, :-1], batches[0][1])
    np.testing.assert_array_equal(first[:, -1], crops["speaker"].to_numpy()[:8])


def test_distill_objective_trains_and_saves_a_bare_tower(tmp_path, tiny_librispeech, monkeypatch):
    import experiments.peers

    monkeypatch.setattr(experiments.peers, "teacher", lambda name, rate, window_s: (band_energies(window_s), "bands"))
    preset = yaml.safe_load(open("sincnet_keras/presets/tiny.yaml"))
    preset.update(name="tiny16k", sample_rate=RATE)
    (tmp_path / "tiny16k.yaml").write_text(yaml.safe_dump(preset))
    config = yaml.safe_load(open("experiments/configs/tiny.yaml"))
    config.update(output_dir=str(tmp_path / "run"))
    config["data"].update(root=str(tiny_librispeech), val_speakers=2, test_speakers=1)
    config["model"]["preset"] = str(tmp_path / "tiny16k.yaml")
    config["training"].update(objective="distill", teacher_window_s=0.5, teacher_hop_s=0.25, epochs=1,
                              contrastive_weight=0.1,
                              batch_size=6, crops_per_speaker=2, pairs_per_epoch=12, val_pairs=8)
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(path), "--quiet"]) == 0
    run = tmp_path / "run"
    assert (run / "teacher" / "train.npz").is_file() and (run / "teacher" / "val.npz").is_file()
    log = np.genfromtxt(run / "log.csv", delimiter=",", names=True)
    assert np.isfinite(log["val_loss"])
    tower = keras.saving.load_model(run / "tower.keras", safe_mode=True)
    assert not getattr(tower, "compiled", False)
    assert tower(np.zeros((1, 8000, 1), "float32")).shape == (1, 32)
    assert yaml.safe_load((run / "tower.json").read_text())["teacher"] == "resemblyzer"
    assert train_main(["--config", str(path), "--quiet", "--resume", "--epochs", "2"]) == 0  # banks are reused


def test_embedding_weight_trains_against_a_teacher_as_wide_as_the_tower(tmp_path, tiny_librispeech, monkeypatch,
                                                                         capsys):
    import experiments.peers

    preset = yaml.safe_load(open("sincnet_keras/presets/tiny.yaml"))  # embeddings of 32
    preset.update(name="tiny16k", sample_rate=RATE)
    (tmp_path / "tiny16k.yaml").write_text(yaml.safe_dump(preset))
    config = yaml.safe_load(open("experiments/configs/tiny.yaml"))
    config["data"].update(root=str(tiny_librispeech), val_speakers=2, test_speakers=1)
    config["model"]["preset"] = str(tmp_path / "tiny16k.yaml")
    config["training"].update(objective="distill", teacher_window_s=0.5, teacher_hop_s=0.25, epochs=1,
                              contrastive_weight=0.1, embedding_weight=0.5,
                              batch_size=6, crops_per_speaker=2, pairs_per_epoch=12, val_pairs=8)
    for bands, status in ((12, 1), (32, 0), (40, 0)):
        monkeypatch.setattr(experiments.peers, "teacher",
                            lambda name, rate, window_s, bands=bands: (band_energies(window_s, bands), "bands"))
        config.update(output_dir=str(tmp_path / f"run{bands}"))
        path = tmp_path / f"distill{bands}.yaml"
        path.write_text(yaml.safe_dump(config))
        assert train_main(["--config", str(path), "--quiet"]) == status
    assert "at most as wide as the teacher's (12)" in capsys.readouterr().err
    for bands in (32, 40):  # the same width, and a wider teacher seen on its 32 main directions
        log = np.genfromtxt(tmp_path / f"run{bands}" / "log.csv", delimiter=",", names=True)
        assert np.isfinite(log["val_loss"])
    config["training"].update(objective="batch_all")
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="embedding_weight needs training.objective: distill"):
        load_config(path)


def test_teacher_signs_from_the_init_tower_need_one(tmp_path, tiny_librispeech, capsys):
    config = yaml.safe_load(open("experiments/configs/tiny.yaml"))
    config.update(output_dir=str(tmp_path / "run"))
    config["data"].update(root=str(tiny_librispeech), val_speakers=2, test_speakers=1)
    config["training"].update(objective="distill", teacher_signs="init")
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(path)]) == 1
    assert "give --init" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    config["training"].update(teacher_signs="random")
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="teacher_signs must be one of"):
        load_config(path)


def test_distill_refuses_a_tower_at_another_rate(tmp_path, tiny_librispeech, capsys):
    config = yaml.safe_load(open("experiments/configs/tiny.yaml"))  # the tiny preset hears 8 kHz
    config.update(output_dir=str(tmp_path / "run"))
    config["data"].update(root=str(tiny_librispeech), val_speakers=2, test_speakers=1)
    config["training"].update(objective="distill")
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(path)]) == 1
    assert "16 kHz" in capsys.readouterr().err


def test_model_card_describes_a_distilled_tower():
    from experiments.config import load_config
    from experiments.release import model_card
    from siamese.diarizer import DiarizerSettings

    config = load_config("experiments/configs/sincnet_distilled_labels.yaml")
    facts = {"epochs_run": 3, "best_epoch": 2, "train_wall_s": 600.0, "train_speakers": 201}
    verification = {"trials": 10, "target_trials": 2, "eer": 0.1, "min_dcf_p0.01": 0.5, "accuracy_at_threshold": 0.9}
    summary = [{"setting": setting, "speakers": count, "der": 0.2, "files": 5, "count_exact": 0.6}
               for setting in ("full", "forgiving") for count in ("oracle", "estimated")]
    card = model_card("distilled", config, facts, verification, summary, {"minutes": 5, "rtf": 0.002},
                      DiarizerSettings(verification_threshold=0.5))
    assert "knowledge distillation" in card and "`resemblyzer`" in card
    assert "0.1 x contrastive loss (margin 1) on speaker labels" in card


def test_model_card_names_the_validation_sets_calibration_used():
    from experiments.release import calibration_sets

    assert calibration_sets(None) == "" and calibration_sets({"val_eer": 0.05}) == ""  # older releases: no line
    line = calibration_sets({"val_conversations": 100, "val_room_conversations": 100, "val_many_conversations": 20})
    assert line == ("- On 100 conversations of 2-4 speakers, the same 100 in reverberant rooms, 20 of 5-8 speakers; "
                    "speech detection on the 2-4 speaker ones.\n")
    assert "rooms" not in calibration_sets({"val_conversations": 30, "val_room_conversations": 0})


def test_release_summary_records_every_option_of_its_command():
    from experiments import command_line

    argv = ["--run", "runs/a b", "--name", "m", "--count-power", "0.5", "--speech-model", "x.keras", "y.keras"]
    assert command_line("experiments.release", argv) == ("python -m experiments.release --run 'runs/a b' --name m "
                                                         "--count-power 0.5 --speech-model x.keras y.keras")
