"""Experiment configs: YAML files checked against one schema before anything runs."""

from pathlib import Path

import yaml

from data_prep.augment import REVERB_RT60_S

# Every key an experiment config may hold, with its type. A typo or a wrong type
# is a clear error up front instead of a silent default halfway through training.
SCHEMA = {
    "seed": int,
    "output_dir": str,
    "data": {
        "format": str,
        "root": str,
        "val_speakers": int,
        "test_speakers": int,
        "split_seed": int,
        "speed_perturb": list,
    },
    "model": {"preset": str, "frontend_weights": str},
    "training": {
        "epochs": int,
        "pairs_per_epoch": int,
        "val_pairs": int,
        "batch_size": int,
        "learning_rate": float,
        "margin": float,
        "patience": int,
        "lr_decay_patience": int,
        "lr_decay_factor": float,
        "accuracy_threshold": float,
        "noise_prob": float,
        "noise_snr_low": float,
        "noise_snr_high": float,
        "reverb_prob": float,
        "reverb_rt60_low": float,
        "reverb_rt60_high": float,
        "objective": str,
        "crops_per_speaker": int,
        "freeze": str,
        "teacher": str,
        "teacher_window_s": float,
        "teacher_hop_s": float,
        "contrastive_weight": float,
        "embedding_weight": float,
        "teacher_signs": str,
    },
}

# A self-supervised pretraining config (experiments.pretrain_wav2vec): same seed and data
# sections, hence the same speaker split; only training speakers' audio is used, without labels.
PRETRAIN_SCHEMA = {
    "seed": int,
    "output_dir": str,
    "data": {key: kind for key, kind in SCHEMA["data"].items() if key != "speed_perturb"},
    "encoder": {"norm": str},
    "pretraining": {
        "epochs": int,
        "steps_per_epoch": int,
        "val_steps": int,
        "batch_size": int,
        "crop_s": float,
        "learning_rate": float,
        "prediction_steps": int,
        "num_negatives": int,
        "context_layers": int,
        "patience": int,
    },
}

# A speech detector config (experiments.train_vad): same seed and data sections, hence the same speaker
# split; conversations are simulated from training speakers (validation speakers for early stopping).
SPEECH_DETECTOR_SCHEMA = {
    "seed": int,
    "output_dir": str,
    "data": PRETRAIN_SCHEMA["data"],
    "conversations": {
        "train": int,
        "val": int,
        "min_speakers": int,
        "max_speakers": int,
        "noise_snr_low": float,
        "noise_snr_high": float,
        "telephone_share": float,
        "long_pause_share": float,
        "noise_only_share": float,
        "reverb_share": float,
        "reverb_rt60_low": float,
        "reverb_rt60_high": float,
    },
    "detector": {"channels": int, "kernel_size": int, "dilations": list},
    "training": {"epochs": int, "batch_size": int, "learning_rate": float, "crop_s": float, "patience": int},
}

# Keys a speech detector config may leave out (configs from before reverberation stay valid).
SPEECH_DETECTOR_OPTIONAL = {"conversations": {"reverb_share": 0.0, "reverb_rt60_low": REVERB_RT60_S[0],
                                               "reverb_rt60_high": REVERB_RT60_S[1]}}

# Keys a config may leave out, with the value they then take (older configs stay valid).
OPTIONAL = {"data": {"speed_perturb": []},
            "model": {"frontend_weights": ""},
            "training": {"noise_prob": 0.0, "noise_snr_low": 5.0, "noise_snr_high": 30.0,
                         "reverb_prob": 0.0, "reverb_rt60_low": REVERB_RT60_S[0], "reverb_rt60_high": REVERB_RT60_S[1],
                         "objective": "pairs", "crops_per_speaker": 4, "freeze": "none",
                         "teacher": "resemblyzer", "teacher_window_s": 1.5, "teacher_hop_s": 0.2,
                         "contrastive_weight": 0.0, "embedding_weight": 0.0, "teacher_signs": "largest"}}


# Smallest value each number may take: a zero batch size or epoch count is a
# one-line error here, not a ZeroDivisionError deep inside training.
MINIMUM = {
    "data.val_speakers": 0,
    "data.test_speakers": 0,
    "training.epochs": 1,
    "training.pairs_per_epoch": 1,
    "training.val_pairs": 1,
    "training.batch_size": 1,
    "training.learning_rate": 0.0,
    "training.margin": 0.0,
    "training.patience": 1,
    "training.lr_decay_patience": 0,
    "training.lr_decay_factor": 0.0,
    "training.accuracy_threshold": 0.0,
    "training.noise_prob": 0.0,
    "training.crops_per_speaker": 2,
    "training.teacher_window_s": 0.1,
    "training.teacher_hop_s": 0.01,
    "training.contrastive_weight": 0.0,
    "training.embedding_weight": 0.0,
    "pretraining.epochs": 1,
    "pretraining.steps_per_epoch": 1,
    "pretraining.val_steps": 1,
    "pretraining.batch_size": 1,
    "pretraining.crop_s": 0.5,
    "pretraining.learning_rate": 0.0,
    "pretraining.prediction_steps": 1,
    "pretraining.num_negatives": 1,
    "pretraining.context_layers": 1,
    "pretraining.patience": 1,
    "conversations.train": 1,
    "conversations.val": 1,
    "conversations.min_speakers": 2,
    "conversations.max_speakers": 2,
    "conversations.telephone_share": 0.0,
    "conversations.long_pause_share": 0.0,
    "conversations.noise_only_share": 0.0,
    "detector.channels": 1,
    "detector.kernel_size": 1,
    "training.crop_s": 1.0,
}
# Numbers that must be strictly above their minimum (a rate or factor of 0 does nothing).
STRICT = {"training.learning_rate", "training.margin", "training.lr_decay_factor", "pretraining.learning_rate"}
# Strings with a fixed set of values.
CHOICES = {"training.freeze": ("none", "frontend", "encoder"), "data.format": ("folders", "librispeech", "voxceleb", "manifest", "rttm"),
           "training.objective": ("pairs", "batch_all", "distill"), "training.teacher": ("resemblyzer",),
           "training.teacher_signs": ("largest", "init"),
           "encoder.norm": ("group", "layer")}


class ConfigError(ValueError):
    """A config file that cannot be used as it is."""


def _check(section, schema, where):
    if not isinstance(section, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: expected a mapping, got {type(section).__name__}")
    for key, value in section.items():
        if key not in schema:
            raise ConfigError(f"unknown key '{where}{key}'; expected one of {sorted(schema)}")
        expected = schema[key]
        if isinstance(expected, dict):
            _check(value, expected, f"{where}{key}.")
        elif expected is float and isinstance(value, int) and not isinstance(value, bool):
            section[key] = float(value)
        elif not isinstance(value, expected) or isinstance(value, bool):
            raise ConfigError(f"{where}{key}: expected {expected.__name__}, got {value!r}")
    missing = sorted(set(schema) - set(section))
    if missing:
        raise ConfigError(f"missing keys in {where.rstrip('.') or 'config'}: {missing}")
    for key, value in section.items():
        name = f"{where}{key}"
        if name in CHOICES and value not in CHOICES[name]:
            raise ConfigError(f"{name} must be one of {list(CHOICES[name])}, got {value!r}")
        if name not in MINIMUM:
            continue
        strict = name in STRICT
        if not (value > MINIMUM[name] if strict else value >= MINIMUM[name]):  # NaN fails both
            raise ConfigError(f"{name}: must be {'>' if strict else '>='} {MINIMUM[name]}, got {value!r}")
    if where == "data." and "speed_perturb" in section:
        factors = section["speed_perturb"]
        if not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0.5 <= f <= 2.0 and f != 1.0
                   for f in factors) or len(set(factors)) != len(factors):
            raise ConfigError(f"data.speed_perturb: expected distinct factors in [0.5, 2] other than 1, got {factors!r}")
        section["speed_perturb"] = [float(f) for f in factors]
    if where == "conversations.":
        shares = ("telephone_share", "long_pause_share", "noise_only_share", "reverb_share")
        if section["min_speakers"] > section["max_speakers"] or section["noise_snr_low"] > section["noise_snr_high"] \
                or not all(0.0 <= section[share] <= 1.0 for share in shares) \
                or not 0.0 < section["reverb_rt60_low"] <= section["reverb_rt60_high"] <= 5.0:
            raise ConfigError("conversations: need min_speakers <= max_speakers, noise_snr_low <= noise_snr_high, "
                              "shares in [0, 1] and 0 < reverb_rt60_low <= reverb_rt60_high <= 5 s")
    if where == "detector." and not (section["dilations"] and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in section["dilations"])):
        raise ConfigError(f"detector.dilations: expected a list of positive integers, got {section['dilations']!r}")
    if where == "training." and "lr_decay_factor" in section:
        if section["lr_decay_factor"] >= 1.0:
            raise ConfigError(f"training.lr_decay_factor: must be < 1, got {section['lr_decay_factor']!r}")
        if section["noise_prob"] > 1.0 or section["noise_snr_low"] > section["noise_snr_high"]:
            raise ConfigError("training.noise_prob must be <= 1 and noise_snr_low <= noise_snr_high")
        if not (0.0 <= section["reverb_prob"] <= 1.0 and 0.0 < section["reverb_rt60_low"] <= section["reverb_rt60_high"] <= 5.0):
            raise ConfigError("training: need 0 <= reverb_prob <= 1 and 0 < reverb_rt60_low <= reverb_rt60_high <= 5 s")
        if section["objective"] == "batch_all" and (
                section["batch_size"] % section["crops_per_speaker"] or
                section["batch_size"] < 2 * section["crops_per_speaker"]):
            raise ConfigError(f"training.batch_size ({section['batch_size']}) must be a multiple of "
                              f"training.crops_per_speaker ({section['crops_per_speaker']}) covering 2+ speakers")
        if section["embedding_weight"] > 0 and section["objective"] != "distill":
            raise ConfigError("training.embedding_weight needs training.objective: distill (it compares with a teacher)")
        if section["pairs_per_epoch"] < section["batch_size"]:
            raise ConfigError(f"training.pairs_per_epoch ({section['pairs_per_epoch']}) must be at least "
                              f"training.batch_size ({section['batch_size']})")


def load_config(path, schema=SCHEMA, optional=OPTIONAL):
    """Reads and validates an experiment config; raises `ConfigError` on any problem.

    `schema` and `optional` default to the training config's; pass `PRETRAIN_SCHEMA`
    (and `{}`) for a pretraining config.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as file:
            config = yaml.safe_load(file)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    try:
        for section, defaults in optional.items():
            if isinstance(config, dict) and isinstance(config.get(section), dict):
                config[section] = {**defaults, **config[section]}
        if isinstance(config, dict) and isinstance(config.get("data"), dict) and "split_seed" not in config["data"]:
            # The speaker split follows `seed` unless pinned: experiments.compare keeps one split across seeds.
            config["data"]["split_seed"] = config.get("seed")
        _check(config, schema, "")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return config


def dump_config(config, path):
    """Writes the resolved config atomically (a kill never leaves half of it)."""
    from data_prep.audio import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
