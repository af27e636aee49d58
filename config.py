"""Settings: load config.yaml, merge a user's file and command-line flags, validate every key, and
return them as a frozen tree of dataclasses that nothing writes into afterwards. Each key is declared once, as a
field of those dataclasses; HYPERPARAMETERS declares how the search draws from each search_space entry.

One concern: what a run is asked to do. It imports only PyYAML (no Keras, no TensorFlow), so
`search.py --help` and config mistakes answer fast, and every other module may import it.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Iterator, Mapping
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
ROLES = ("standalone", "chief", "worker")  # in a distributed search (docs/distributed.md)
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # a run name or a worker id: safe as a folder name


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


def _points(value: Any, key: str) -> list[dict[str, Any]]:
    """Points given as the values they change from the baseline's (their ranges are checked against search_space
    where the model is made, hypermodel.ChestXRayHyperModel)."""
    if not isinstance(value, list) or any(not isinstance(point, dict) or not point for point in value):
        raise ConfigError(f"{key} must be a list of mappings of hyperparameter names to values, not {value!r}")
    for number, point in enumerate(value):
        unknown = sorted(name for name in point if hyperparameter(name) is None)
        if unknown:
            raise ConfigError(
                f"{key}[{number}] names no hyperparameter: {', '.join(unknown)} (known: {_hyperparameter_names()})"
            )
    return [dict(point) for point in value]


def _hyperparameter_names() -> str:
    return ", ".join(declared.name if declared.per is None else f"{declared.name}_N" for declared in HYPERPARAMETERS)


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


def setting(check: Check, *, flag: str | None = None, legacy: Any = dataclasses.MISSING) -> Any:
    """A settings key, declared once as a field of the dataclasses at the end of this module: its validator, the
    search.py flag that overrides it, and, for a top-level key older runs' config.yaml lack, the value those runs
    computed with. SCHEMA, FLAGS and LEGACY_DEFAULTS are read off these fields."""
    metadata = {"check": check, "flag": flag}
    if legacy is not dataclasses.MISSING:
        metadata["legacy"] = legacy
    return dataclasses.field(metadata=metadata)


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


# `--baseline` trains the notebook's CNN as the notebook did (docs/baseline.md: 80 x 80 RGB, a constant
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
    return Settings.from_dict(config)


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


# The last commit that renders and serves a run made with ensemble_size above 1 (its runners-up ensemble).
LAST_WITH_ENSEMBLE_SIZE = "7f6c4e1"


def recorded(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a plain mapping in today's shape (`upgrade`)."""
    return upgrade(read_yaml(path), path)


def upgrade(values: dict[str, Any], path: Path) -> dict[str, Any]:
    """A run's recorded config.yaml in today's shape, for `recorded` and `load_recorded` (and through them
    runs.RunFolder). Keys the run predates take their legacy values (LEGACY_DEFAULTS); the removed
    `ensemble_size` is dropped where it is 1 (every committed run's) and refused above 1, a runners-up ensemble
    this version can neither render nor serve."""
    values = {**LEGACY_DEFAULTS, **values}
    size = values.pop("ensemble_size", 1)
    if size != 1:
        raise ConfigError(
            f"{path}: this run was made with ensemble_size {size}, removed after commit {LAST_WITH_ENSEMBLE_SIZE}, "
            f"so it predates this version: check out {LAST_WITH_ENSEMBLE_SIZE} (git checkout "
            f"{LAST_WITH_ENSEMBLE_SIZE}) to render or serve it"
        )
    return values


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


class Section:
    """A group of keys as config.yaml nests them: a frozen dataclass of `setting` fields and nested sections."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Any:
        """The section from config.yaml's form: sections nested, ranges as Range, lists as tuples."""
        sections = _sections(cls)
        return cls(
            **{
                field.name: sections[field.name].from_dict(value) if field.name in sections else _frozen(value)
                for field in dataclasses.fields(cls)
                for value in [values[field.name]]
            }
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain YAML-ready values in config.yaml's form, keys in declaration order (what hypermodel.py takes)."""
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(self)}


def _sections(cls: type) -> dict[str, type[Section]]:
    """The fields of `cls` that are sections, with their classes (read from the annotations)."""
    hints = typing.get_type_hints(cls)
    return {name: hint for name, hint in hints.items() if isinstance(hint, type) and issubclass(hint, Section)}


def _frozen(value: Any) -> Any:
    """A value of config.yaml's as the dataclasses keep it: a range as Range, a list as a tuple."""
    if isinstance(value, dict):
        return Range(**value)
    return tuple(value) if isinstance(value, list) else value


def _plain(value: Any) -> Any:
    """A kept value as config.yaml writes it (the inverse of _frozen), a section as a mapping."""
    if isinstance(value, Range | Section):
        return value.as_dict()
    return list(value) if isinstance(value, tuple) else value


# How a hyperparameter draws from its search_space entry: an integer range; a float range on a grid of `step`
# (fixed where min == max); a float range on a log scale; a list of False and True (fixed where it holds one); a
# list of choices. hypermodel.py turns each kind into Keras Tuner's hyperparameter, reporting/study.py into Optuna's.
KINDS = ("int", "stepped", "log", "boolean", "choice")
RANGE_KINDS = ("int", "stepped", "log")  # the kinds drawn from a min/max mapping; the others from a list


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter of the search, declared once: its name, kind, the validator of the search_space entry it
    draws from (`key`, its name by default) and the baseline's value. With `per`, it is one per layer: `name`_0 ..
    `name`_{n-1}, n the most `per` (a count declared before it) allows, and `baseline` holds one value per layer of
    the baseline. The settings' SearchSpace, the baseline's point (hypermodel.BASELINE), Keras Tuner's declaration
    (hypermodel.declare) and Optuna's distributions (reporting/study.py) are all made from these rows."""

    name: str
    kind: str
    check: Check = dataclasses.field(repr=False, compare=False)
    baseline: Any
    per: str | None = None
    key: str = ""  # the search_space key: `name` where left empty

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"hyperparameter {self.name}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not self.key:
            object.__setattr__(self, "key", self.name)

    def names(self, search_space: Mapping[str, Any]) -> list[str]:
        """The names it takes over a search space (config.yaml's form): its own, or one per possible layer."""
        if self.per is None:
            return [self.name]
        return [f"{self.name}_{i}" for i in range(search_space[self.per]["max"])]

    def takes(self, parameter: str) -> bool:
        """Whether `parameter` (a point's or trials.csv's name, such as filters_2) is one of its names."""
        if self.per is None:
            return parameter == self.name
        return re.fullmatch(rf"{re.escape(self.name)}_\d+", parameter) is not None

    def baseline_values(self) -> dict[str, Any]:
        """The baseline's value under each of its names: {"dropout": 0.2}, or {"filters_0": 64, ...} per layer."""
        if self.per is None:
            return {self.name: self.baseline}
        return {f"{self.name}_{i}": value for i, value in enumerate(self.baseline)}


_FRACTION = _number(0, 1, include_high=False)
_FACTOR = _range(_number(0, 1), step=True)

# Every hyperparameter, in the order Keras Tuner declares and so draws them: the order decides which points a
# seeded random search visits, so a new one goes last. The baseline's values are the Kaggle notebook's CNN
# (docs/baseline.md); the options beyond it (batch_norm and after) have values that leave its model as it was.
HYPERPARAMETERS = (
    Hyperparameter("conv_blocks", "int", _range(_integer(1)), 4),
    Hyperparameter("dense_layers", "int", _range(_integer(0)), 2),
    Hyperparameter("dropout", "stepped", _range(_FRACTION, step=True), 0.2),
    Hyperparameter("learning_rate", "log", _range(_number(0, 1, include_low=False)), 1e-3),  # RMSprop's
    Hyperparameter("batch_norm", "boolean", _list_of(False, True), False),
    Hyperparameter("pooling", "choice", _list_of("flatten", "average"), "flatten"),
    Hyperparameter("brightness", "stepped", _FACTOR, 0.0),
    Hyperparameter("contrast", "stepped", _FACTOR, 0.0),
    Hyperparameter("label_smoothing", "stepped", _range(_number(0, 0.5), step=True), 0.0),
    Hyperparameter("filters", "choice", _int_list, (64, 32, 128, 128), per="conv_blocks"),
    Hyperparameter("units", "choice", _int_list, (512, 264), per="dense_layers", key="dense_units"),
)
TUNER_PREFIX = "tuner/"  # Keras Tuner's own values in a point and in trials.csv (Hyperband's tuner/epochs, ...)


def hyperparameter(parameter: str) -> Hyperparameter | None:
    """The declaration `parameter` (dropout, filters_2) comes from; None for a name no hyperparameter takes."""
    return next((declared for declared in HYPERPARAMETERS if declared.takes(parameter)), None)


def baseline_point() -> dict[str, Any]:
    """The baseline's value of every hyperparameter, by name (filters_0 .. filters_3 for its four blocks)."""
    return {name: value for declared in HYPERPARAMETERS for name, value in declared.baseline_values().items()}


# The ranges and lists the search draws from, one field per row above, in its order; the rows say how each is drawn.
SearchSpace = dataclasses.make_dataclass(
    "SearchSpace",
    [
        (declared.key, Range if declared.kind in RANGE_KINDS else tuple, setting(declared.check))
        for declared in HYPERPARAMETERS
    ],
    bases=(Section,),
    frozen=True,
)
SearchSpace.__module__ = __name__  # pickled and named as if written out as a class here
SearchSpace.__doc__ = "The ranges and lists the search draws from (config.yaml's search_space), one per hyperparameter."


@dataclass(frozen=True)
class Augmentation(Section):
    """The notebook's ImageDataGenerator shifts, shear and zoom (hypermodel.py applies them in training)."""

    width_shift: float = setting(_number(0, 1, include_high=False))
    height_shift: float = setting(_number(0, 1, include_high=False))
    shear_degrees: float = setting(_number(0, 89))
    zoom: float = setting(_number(0, 1, include_high=False))


@dataclass(frozen=True)
class Distributed(Section):
    """A distributed search's part for this process (docs/distributed.md)."""

    role: str = setting(_choice(*ROLES), flag="--role")
    oracle_address: str | None = setting(_optional(_address), flag="--oracle-address")
    worker_id: str | None = setting(_optional(_text(NAME)), flag="--worker-id")
    running_trial_timeout: int | None = setting(_optional(_integer(1)))


@dataclass(frozen=True)
class Settings(Section):
    """Every key of config.yaml, validated, in config.yaml's order; docs/config.md documents each."""

    data_dir: str | None = setting(_optional(_text()), flag="--data-dir")
    image_size: int = setting(_integer(8, 1024), flag="--image-size")
    color_mode: str = setting(_choice("rgb", "grayscale"))
    validation_fraction: float = setting(_number(0, 1, include_low=False, include_high=False))
    class_weights: bool = setting(_boolean)
    batch_size: int = setting(_integer(1))
    backend: str = setting(_choice(*BACKENDS), flag="--backend", legacy="tensorflow")  # before it: TensorFlow
    precision: str = setting(_choice(*PRECISIONS), flag="--precision", legacy="float32")  # before it: float32
    skip_bad_images: bool = setting(_boolean, flag="--skip-bad-images", legacy=False)
    augmentation: Augmentation
    tuner: str = setting(_choice(*TUNERS), flag="--tuner")
    objective: str = setting(_choice(*OBJECTIVES))
    max_trials: int | None = setting(_optional(_integer(1)), flag="--max-trials")
    epochs: int = setting(_integer(1), flag="--epochs")
    hyperband_factor: int = setting(_integer(2))
    early_stopping_patience: int = setting(_integer(1))
    seed: int = setting(_integer(0), flag="--seed")
    local_share: float = setting(_number(0, 1), legacy=0.0)  # before it, every point was drawn over the whole space
    local_changes: int = setting(_integer(1, 15), legacy=3)
    candidates: tuple = setting(_points, legacy=[])  # before it, no point was tried after the baseline's on purpose
    search_space: SearchSpace
    final_epochs: int = setting(_integer(1), flag="--final-epochs")
    time_budget: str | None = setting(_optional(_duration), flag="--time-budget", legacy=None)  # ran to its end
    final_schedule: str = setting(_choice("constant", "cosine"), legacy="constant")
    final_ema_momentum: float | None = setting(
        _optional(_number(0, 1, include_low=False, include_high=False)), legacy=None
    )
    finalists: int = setting(_integer(0, 10), legacy=0)  # before finalists, the best point alone was retrained
    repeats: int = setting(_integer(1, 10), legacy=1)  # before repeats, each finalist was retrained once
    incumbent_rule: str = setting(_choice("race", "lower"), legacy="race")
    threshold: str | float = setting(_threshold)
    reports_dir: str = setting(_text(), flag="--reports-dir")
    tensorboard: bool = setting(_boolean)
    compilation_cache: bool | str = setting(_cache_setting)
    run_name: str | None = setting(_optional(_text(NAME)), flag="--run-name")
    distribution: str = setting(_choice("none", "mirrored"))
    distributed: Distributed

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values settled (the run's resolve step); this object stays as it was."""
        return dataclasses.replace(self, **changes)


def _schema(section: type[Section]) -> dict[str, Any]:
    """Each key's validator, nested as config.yaml nests the sections, in declaration order."""
    sections = _sections(section)
    return {
        field.name: _schema(sections[field.name]) if field.name in sections else field.metadata["check"]
        for field in dataclasses.fields(section)
    }


def _leaves(section: type[Section], prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """Every key with its field, sections flattened to dotted names (distributed.role)."""
    sections = _sections(section)
    for field in dataclasses.fields(section):
        if field.name in sections:
            yield from _leaves(sections[field.name], f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", field


SCHEMA: dict[str, Any] = _schema(Settings)
FLAGS: dict[str, str] = {name: field.metadata["flag"] for name, field in _leaves(Settings) if field.metadata["flag"]}
# What a run recorded before a key existed computed as these values (older runs' config.yaml lack them).
LEGACY_DEFAULTS: dict[str, Any] = {
    field.name: field.metadata["legacy"] for field in dataclasses.fields(Settings) if "legacy" in field.metadata
}
