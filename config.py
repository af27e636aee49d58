"""Settings: load config.yaml, merge a user's file and command-line flags, validate every key, and
return them as a frozen tree of dataclasses that nothing writes into afterwards.

One concern: what a run is asked to do. It imports only PyYAML (no Keras, no TensorFlow), so
`search.py --help` and config mistakes answer fast, and every other module may import it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import budget
from errors import ConfigError

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")
TUNERS = ("hyperband", "random", "bayesian")
OBJECTIVES = ("val_auc", "val_loss", "val_accuracy", "val_roc_auc", "val_log_loss")
# Scored exactly from the validation predictions each epoch (training.py), unbinned, without label smoothing or
# class weights, so two points compare on the same footing; Keras' val_auc bins and val_loss smooths.
EXACT_OBJECTIVES = ("val_roc_auc", "val_log_loss")
THRESHOLD_RULES = ("youden", "youden_or_half", "plateau")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")  # auto: precision.py chooses
BACKENDS = ("tensorflow", "jax", "torch")  # Keras 3 backends; backends.py picks and activates one


Check = Callable[[Any, str], Any]


def _integer(low: int | None = None, high: int | None = None) -> Check:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, not {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ConfigError(f"{key} must be {bounds}, not {value}")
        return value

    return check


def _number(low: float, high: float, *, include_low: bool = True, include_high: bool = True) -> Check:
    def check(value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, not {value!r}")
        above = value >= low if include_low else value > low
        below = value <= high if include_high else value < high
        if not (above and below):
            left, right = "[" if include_low else "(", "]" if include_high else ")"
            raise ConfigError(f"{key} must lie in {left}{low}, {high}{right}, not {value}")
        return float(value)

    return check


def _choice(*options: Any) -> Check:
    def check(value: Any, key: str) -> Any:
        if value not in options:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, options))}, not {value!r}")
        return value

    return check


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, not {value!r}")
    return value


def _optional(check: Check) -> Check:
    return lambda value, key: None if value is None else check(value, key)


def _text(pattern: str = r".+") -> Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            raise ConfigError(f"{key} must be text matching {pattern}, not {value!r}")
        return value

    return check


def _int_list(value: Any, key: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key} must be a non-empty list of positive integers, not {value!r}")
    return sorted({_integer(1)(item, key) for item in value})


def _list_of(*options: Any) -> Check:
    def check(value: Any, key: str) -> list[Any]:
        if not isinstance(value, list) or not value or any(item not in options for item in value):
            raise ConfigError(f"{key} must be a non-empty list of {', '.join(map(str, options))}, not {value!r}")
        return list(dict.fromkeys(value))

    return check


def _range(kind: Check, *, step: bool = False) -> Check:
    def check(value: Any, key: str) -> dict[str, Any]:
        wanted = ["min", "max", "step"] if step else ["min", "max"]
        if not isinstance(value, dict) or set(value) != set(wanted):
            raise ConfigError(f"{key} must be a mapping with keys {', '.join(wanted)}")
        checked = {name: kind(value[name], f"{key}.{name}") for name in wanted}
        if checked["min"] > checked["max"]:
            raise ConfigError(f"{key} is upside down: min {checked['min']} is above max {checked['max']}")
        if step and checked["step"] <= 0:
            raise ConfigError(f"{key}.step must be above 0, not {checked['step']}")
        return checked

    return check


def _address(value: Any, key: str) -> str:
    host, _, port = str(value).rpartition(":")
    if not isinstance(value, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key} must be HOST:PORT, such as 10.0.0.5:8000, not {value!r}")
    return value


def _threshold(value: Any, key: str) -> str | float:
    if value in THRESHOLD_RULES:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
        return float(value)
    raise ConfigError(f"{key} must be {', '.join(THRESHOLD_RULES)} or a probability between 0 and 1, not {value!r}")


def _duration(value: Any, key: str) -> str:
    """A time budget ("90m", "1h30m", "600s"), kept in one spelling so that the run name and the report agree."""
    try:
        return budget.duration_text(budget.parse_duration(value))
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None


def _cache_setting(value: Any, key: str) -> bool | str:
    if isinstance(value, bool) or (isinstance(value, str) and value.strip()):
        return value
    raise ConfigError(f"{key} must be true (a folder beside the runs), false (no cache) or a folder, not {value!r}")


SCHEMA: dict[str, Any] = {
    "data_dir": _optional(_text()),
    "image_size": _integer(8, 1024),
    "color_mode": _choice("rgb", "grayscale"),
    "validation_fraction": _number(0, 1, include_low=False, include_high=False),
    "class_weights": _boolean,
    "batch_size": _integer(1),
    "backend": _choice(*BACKENDS),
    "precision": _choice(*PRECISIONS),
    "skip_bad_images": _boolean,
    "augmentation": {
        "width_shift": _number(0, 1, include_high=False),
        "height_shift": _number(0, 1, include_high=False),
        "shear_degrees": _number(0, 89),
        "zoom": _number(0, 1, include_high=False),
    },
    "tuner": _choice(*TUNERS),
    "objective": _choice(*OBJECTIVES),
    "max_trials": _optional(_integer(1)),
    "epochs": _integer(1),
    "hyperband_factor": _integer(2),
    "early_stopping_patience": _integer(1),
    "seed": _integer(0),
    "search_space": {
        "conv_blocks": _range(_integer(1)),
        "filters": _int_list,
        "dropout": _range(_number(0, 1, include_high=False), step=True),
        "dense_layers": _range(_integer(0)),
        "dense_units": _int_list,
        "learning_rate": _range(_number(0, 1, include_low=False)),
        "batch_norm": _list_of(False, True),
        "pooling": _list_of("flatten", "average"),
        "brightness": _range(_number(0, 1), step=True),
        "contrast": _range(_number(0, 1), step=True),
        "label_smoothing": _range(_number(0, 0.5), step=True),
    },
    "final_epochs": _integer(1),
    "time_budget": _optional(_duration),
    "final_schedule": _choice("constant", "cosine"),
    "final_ema_momentum": _optional(_number(0, 1, include_low=False, include_high=False)),
    "ensemble_size": _integer(1, 10),
    "finalists": _integer(0, 10),
    "incumbent_rule": _choice("race", "lower"),
    "threshold": _threshold,
    "reports_dir": _text(),
    "tensorboard": _boolean,
    "compilation_cache": _cache_setting,
    "run_name": _optional(_text(r"[A-Za-z0-9][A-Za-z0-9._-]*")),
    "distribution": _choice("none", "mirrored"),
    "distributed": {
        "role": _choice("standalone", "chief", "worker"),
        "oracle_address": _optional(_address),
        "worker_id": _optional(_text(r"[A-Za-z0-9][A-Za-z0-9._-]*")),
        "running_trial_timeout": _optional(_integer(1)),
    },
}


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with safe_load; syntax errors name the file and line."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text: pass a YAML file") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: YAML syntax error ({problem}); fix the file") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, not {type(loaded).__name__}")
    return loaded


def _merge(base: dict[str, Any], update: dict[str, Any], schema: dict[str, Any], source: str, prefix: str = "") -> None:
    for key, value in update.items():
        name = f"{prefix}{key}"
        if key not in schema:
            known = ", ".join(schema)
            raise ConfigError(f"{source}: unknown key '{name}' (known keys: {known})")
        if isinstance(schema[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: key '{name}' must be a mapping")
            _merge(base[key], value, schema[key], source, f"{name}.")
        else:
            base[key] = value


def _validate(config: dict[str, Any], schema: dict[str, Any], origin: dict[str, str], prefix: str = "") -> None:
    for key, check in schema.items():
        name = f"{prefix}{key}"
        if isinstance(check, dict):
            _validate(config[key], check, origin, f"{name}.")
            continue
        try:
            config[key] = check(config[key], name)
        except ConfigError as error:
            raise ConfigError(f"{origin.get(name, DEFAULT_CONFIG.name)}: {error}") from None


# `--baseline` trains the notebook's CNN as the notebook did (../shared/BASELINE.md: 80 x 80 RGB, a constant
# learning rate, the epoch of best validation AUC, Youden's threshold), whatever config.yaml says; a --config
# file and flags still override these keys (an experiment on the baseline says what it changes).
NOTEBOOK_SETTINGS: dict[str, Any] = {
    "image_size": 80,
    "color_mode": "rgb",
    "validation_fraction": 0.1,
    "class_weights": True,
    "batch_size": 64,
    "augmentation": {"width_shift": 0.2, "height_shift": 0.2, "shear_degrees": 0.2, "zoom": 0.2},
    "objective": "val_auc",
    "final_epochs": 45,
    "final_schedule": "constant",
    "final_ema_momentum": None,
    "threshold": "youden",
}


FLAGS = {  # config key -> the search.py flag that overrides it
    "data_dir": "--data-dir",
    "tuner": "--tuner",
    "max_trials": "--max-trials",
    "epochs": "--epochs",
    "final_epochs": "--final-epochs",
    "time_budget": "--time-budget",
    "image_size": "--image-size",
    "seed": "--seed",
    "run_name": "--run-name",
    "reports_dir": "--reports-dir",
    "distributed.role": "--role",
    "distributed.oracle_address": "--oracle-address",
    "distributed.worker_id": "--worker-id",
    "skip_bad_images": "--skip-bad-images",
    "precision": "--precision",
    "backend": "--backend",
}
def flag_overrides(arguments: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """The overrides that `load` takes (flag -> (key, value)) from parsed arguments (argparse's `vars`); a flag
    left out (None) overrides nothing."""
    values = {flag: arguments.get(flag[2:].replace("-", "_")) for flag in FLAGS.values()}
    return {flag: (key, values[flag]) for key, flag in FLAGS.items() if values[flag] is not None}


def load(path: Path | None = None, overrides: dict[str, Any] | None = None, notebook: bool = False) -> Settings:
    """Defaults from config.yaml, then the notebook's settings for a `--baseline` run (`notebook`), then `path`
    if given, then flag overrides (flag name -> (key, value))."""
    config = read_yaml(DEFAULT_CONFIG)
    origin: dict[str, str] = {}
    layers = [(NOTEBOOK_SETTINGS, "--baseline")] if notebook else []
    if path is not None:
        layers.append((read_yaml(path), str(path)))
    for values, source in layers:
        _merge(config, values, SCHEMA, source)
        origin.update(dict.fromkeys(_flat_keys(values, SCHEMA), source))
    for flag, (key, value) in (overrides or {}).items():
        *parents, leaf = key.split(".")  # "distributed.role" sets config["distributed"]["role"]
        target = config
        for parent in parents:
            target = target[parent]
        target[leaf] = value
        origin[key] = flag
    _validate(config, SCHEMA, origin)
    if config["tuner"] != "hyperband" and config["max_trials"] is None:
        raise ConfigError(f"max_trials must be set for tuner {config['tuner']}: pass --max-trials N")
    _check_distributed(config["distributed"], origin)
    if config["ensemble_size"] > 1:  # older runs made with it still load, render and serve (load_recorded)
        raise ConfigError(
            f"{origin.get('ensemble_size', DEFAULT_CONFIG.name)}: ensemble_size {config['ensemble_size']} is retired "
            "(it retrained the best point's runners-up beside it): set ensemble_size: 1 and finalists: N, which "
            "retrains the N best points beside the baseline's and chooses their ensemble on validation"
        )
    return Settings.from_dict(config)


load_config = load  # the name bench scripts and older code use


def _check_distributed(settings: dict[str, Any], origin: dict[str, str]) -> None:
    """A chief needs an address to listen on; a worker an address and an id of its own."""
    role = settings["role"]
    if role != "standalone" and settings["oracle_address"] is None:
        raise ConfigError(
            f"distributed.oracle_address must be set for role {role}: pass --oracle-address HOST:PORT (the chief's)"
        )
    worker_id = settings["worker_id"]
    if role == "worker" and worker_id is None:
        raise ConfigError("distributed.worker_id must be set for a worker: pass --worker-id NAME, unique per worker")
    # Keras Tuner takes any tuner id containing "chief" for the chief.
    if role == "worker" and "chief" in worker_id:
        where = origin.get("distributed.worker_id", DEFAULT_CONFIG.name)
        raise ConfigError(f"{where}: distributed.worker_id must not contain 'chief', not {worker_id!r}")


def _flat_keys(mapping: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in mapping.items():
        if isinstance(schema.get(key), dict):
            keys += _flat_keys(value, schema[key], f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def dump(settings: Settings) -> str:
    """The settings as YAML, keys in schema order: a run's config.yaml."""
    return yaml.safe_dump(settings.as_dict(), sort_keys=False)


# What a run recorded before a key existed computed as these values (older runs' config.yaml lack them).
LEGACY_DEFAULTS: dict[str, Any] = {
    "precision": "float32",  # before the precision key, every run trained in float32
    "backend": "tensorflow",  # before the backend key, every run used TensorFlow
    "final_schedule": "constant",
    "final_ema_momentum": None,
    "ensemble_size": 1,
    "finalists": 0,  # before finalists, the best point alone was retrained
    "incumbent_rule": "race",
    "skip_bad_images": False,
    "time_budget": None,  # before time budgets, every run ran to its end
}


def recorded(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a plain mapping, with the legacy values of keys it predates."""
    return {**LEGACY_DEFAULTS, **read_yaml(path)}


def load_recorded(path: Path) -> Settings:
    """A run's config.yaml as Settings: keys it predates take their legacy value, else config.yaml's default;
    keys this version no longer knows are dropped. Not validated again: a run is shown as it was."""
    values = read_yaml(DEFAULT_CONFIG)
    _overlay(values, recorded(path), SCHEMA)
    return Settings.from_dict(values)


def _overlay(base: dict[str, Any], update: dict[str, Any], schema: dict[str, Any]) -> None:
    for key, value in update.items():
        if key not in schema:
            continue
        if isinstance(schema[key], dict) and isinstance(value, dict):
            _overlay(base[key], value, schema[key])
        else:
            base[key] = value


@dataclass(frozen=True)
class Range:
    """A search range; `step` for stepped floats, None for integer and log-sampled ranges."""

    min: Any
    max: Any
    step: Any = None

    def as_dict(self) -> dict[str, Any]:
        bounds = {"min": self.min, "max": self.max}
        return bounds if self.step is None else {**bounds, "step": self.step}


@dataclass(frozen=True)
class SearchSpace:
    conv_blocks: Range
    filters: tuple[int, ...]
    dropout: Range
    dense_layers: Range
    dense_units: tuple[int, ...]
    learning_rate: Range
    batch_norm: tuple[bool, ...]
    pooling: tuple[str, ...]
    brightness: Range
    contrast: Range
    label_smoothing: Range

    def as_dict(self) -> dict[str, Any]:
        """The space as config.yaml writes it: ranges as mappings, choices as lists (what hypermodel.py takes)."""
        return {
            field.name: value.as_dict() if isinstance(value, Range) else list(value)
            for field in dataclasses.fields(self)
            for value in [getattr(self, field.name)]
        }


@dataclass(frozen=True)
class Augmentation:
    width_shift: float
    height_shift: float
    shear_degrees: float
    zoom: float

    def as_dict(self) -> dict[str, float]:
        """The settings as config.yaml writes them (what hypermodel.py takes)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Distributed:
    role: str
    oracle_address: str | None
    worker_id: str | None
    running_trial_timeout: int | None


@dataclass(frozen=True)
class Settings:
    """Every key of config.yaml, validated; docs/config.md documents each."""

    data_dir: str | None
    image_size: int
    color_mode: str
    validation_fraction: float
    class_weights: bool
    batch_size: int
    backend: str
    precision: str
    skip_bad_images: bool
    augmentation: Augmentation
    tuner: str
    objective: str
    max_trials: int | None
    epochs: int
    hyperband_factor: int
    early_stopping_patience: int
    seed: int
    search_space: SearchSpace
    final_epochs: int
    time_budget: str | None
    final_schedule: str
    final_ema_momentum: float | None
    ensemble_size: int
    finalists: int
    incumbent_rule: str
    threshold: str | float
    reports_dir: str
    tensorboard: bool
    compilation_cache: bool | str
    run_name: str | None
    distribution: str
    distributed: Distributed

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Settings:
        space = {
            name: Range(**value) if isinstance(value, dict) else tuple(value)
            for name, value in values["search_space"].items()
        }
        return cls(
            **{
                **{field.name: values[field.name] for field in dataclasses.fields(cls)},
                "augmentation": Augmentation(**values["augmentation"]),
                "search_space": SearchSpace(**space),
                "distributed": Distributed(**values["distributed"]),
            }
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain YAML-ready values, keys in schema order."""
        return {
            **dataclasses.asdict(self),
            "augmentation": self.augmentation.as_dict(),
            "search_space": self.search_space.as_dict(),
            "distributed": dataclasses.asdict(self.distributed),
        }

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values settled (the run's resolve step); this object stays as it was."""
        return dataclasses.replace(self, **changes)
