"""experiments.compare --quick: every step of the model comparison, on a few speakers and steps."""

import pandas as pd
import yaml

from experiments.compare import main as compare_main


def test_quick_comparison_fills_every_requested_row(tmp_path, librispeech_root):
    config = yaml.safe_load(open("experiments/configs/compare.yaml"))
    config["output_dir"] = str(tmp_path / "compare")
    models = {}
    for name in ("sincnet-original", "wav2vec"):  # one SincNet and one wav2vec tower keep CI short
        model = yaml.safe_load(open(config["models"][name]))
        model["data"]["root"] = str(librispeech_root)
        models[name] = str(tmp_path / f"{name}.yaml")
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(model))
    config["models"] = models
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(config))
    assert compare_main(["--config", str(tmp_path / "compare.yaml"), "--quick"]) == 0
    results = tmp_path / "compare_quick" / "results"
    runs = pd.read_csv(results / "runs.csv")
    assert list(runs["model"]) == ["sincnet-original", "wav2vec"]
    for column in ("eer", "min_dcf", "pair_accuracy", "der_full_oracle", "der_forgiving_estimated", "rtf", "params"):
        assert runs[column].notna().all() and (runs[column] >= 0).all()
    table = (results / "comparison.md").read_text()
    assert "| sincnet-original | 1 |" in table and "| wav2vec | 1 |" in table and "one seed" in table
    # A second call reuses the trained towers and their stored results.
    assert compare_main(["--config", str(tmp_path / "compare.yaml"), "--quick"]) == 0
    assert pd.read_csv(results / "runs.csv").equals(runs)


def test_unknown_model_is_a_one_line_error(capsys):
    assert compare_main(["--config", "experiments/configs/compare.yaml", "--models", "nope"]) == 1
    err = capsys.readouterr().err
    assert "nope" in err and len(err.strip().splitlines()) == 1


def test_ablation_entries_change_only_what_they_name(tmp_path):
    from experiments.compare import load_compare_config, run_config
    from sincnet_keras import load_preset

    compare = load_compare_config("experiments/configs/ablations.yaml")
    compare["output_dir"] = str(tmp_path)
    reference = run_config(compare, "reference", 1, quick=False)
    assert reference["seed"] == 1 and reference["data"]["split_seed"] == 0
    assert reference["training"]["epochs"] == 12 and reference["training"]["noise_prob"] == 0.5
    eight = run_config(compare, "8-kHz", 1, quick=False)
    preset, default = load_preset(eight["model"]["preset"]), load_preset("default")
    assert preset["sample_rate"] == 8000 and preset["sinc"]["kernel_size"] == 125
    assert preset["conv_filters"] == default["conv_filters"] and preset["sinc"]["filters"] == 64
    margin = run_config(compare, "margin-1.5", 1, quick=False)
    assert margin["training"]["margin"] == 1.5 and margin["training"]["learning_rate"] == reference["training"]["learning_rate"]


def test_earlier_rows_are_kept_for_runs_not_measured_now(tmp_path):
    """Seeds measured in an earlier invocation (whose run folders may be gone) stay in runs.csv."""
    from experiments.compare import with_earlier_rows

    earlier = pd.DataFrame({"model": ["b", "a", "a", "gone"], "seed": [0, 0, 1, 0], "eer": [0.3, 0.1, 0.2, 0.9]})
    earlier.to_csv(tmp_path / "runs.csv", index=False)
    now = pd.DataFrame({"model": ["a"], "seed": [1], "eer": [0.25]})
    merged = with_earlier_rows(now, tmp_path / "runs.csv", models=["a", "b"])
    assert list(zip(merged["model"], merged["seed"], merged["eer"])) == [("a", 0, 0.1), ("a", 1, 0.25), ("b", 0, 0.3)]
    assert with_earlier_rows(now, tmp_path / "missing.csv", models=["a"]).equals(now)
