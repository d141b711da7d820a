"""Experiment configs: YAML files checked against one schema before anything runs."""

from pathlib import Path

import yaml

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
    },
    "model": {"preset": str},
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
    },
}


class ConfigError(ValueError):
    """A config file that cannot be used as it is."""


def _check(section, schema, where):
    if not isinstance(section, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping")
    for key, value in section.items():
        if key not in schema:
            raise ConfigError(f"unknown key {where}{key!r}; expected one of {sorted(schema)}")
        expected = schema[key]
        if isinstance(expected, dict):
            _check(value, expected, f"{where}{key}.")
        elif expected is float and isinstance(value, int) and not isinstance(value, bool):
            section[key] = float(value)
        elif not isinstance(value, expected) or isinstance(value, bool):
            raise ConfigError(f"{where}{key}: expected {expected.__name__}, got {value!r}")
    missing = sorted(set(schema) - set(section))
    if missing:
        raise ConfigError(f"missing keys in {where or 'config'}: {missing}")


def load_config(path):
    """Reads and validates an experiment config; raises `ConfigError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path) as file:
            config = yaml.safe_load(file)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    try:
        _check(config, SCHEMA, "")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return config


def dump_config(config, path):
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
