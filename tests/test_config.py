from pathlib import Path

import pytest
import yaml

import config
from config import ConfigError, load


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user.yaml"
    path.write_text(text)
    return path


def test_defaults_hold_the_finalist_protocol():
    loaded = load()
    assert loaded.image_size == 80 and loaded.color_mode == "grayscale"
    assert loaded.final_epochs == 45 and loaded.batch_size == 64 and loaded.final_schedule == "cosine"
    assert loaded.tuner == "random" and loaded.objective == "val_log_loss" and loaded.max_trials == 25
    assert (loaded.finalists, loaded.incumbent_rule, loaded.threshold) == (4, "lower", "plateau")
    assert loaded.validation_fraction == 0.1 and loaded.class_weights is True


def test_user_file_merges_onto_defaults_and_flags_win(tmp_path):
    path = write(tmp_path, "epochs: 4\nsearch_space:\n  dropout: {min: 0.1, max: 0.3, step: 0.1}\n")
    loaded = load(path, {"--epochs": ("epochs", 7)})
    assert loaded.epochs == 7
    assert loaded.search_space.dropout == config.Range(min=0.1, max=0.3, step=0.1)
    assert loaded.search_space.filters == (16, 32, 64, 128)  # untouched default


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("foo: 1\n", "unknown key 'foo'"),
        ("augmentation: {twist: 1}\n", "unknown key 'augmentation.twist'"),
        ("epochs: -1\n", "epochs must be at least 1"),
        ("epochs: ten\n", "epochs must be an integer"),
        ("class_weights: 1\n", "class_weights must be true or false"),
        ("validation_fraction: 0\n", "validation_fraction must lie in (0, 1)"),
        ("validation_fraction: 1\n", "validation_fraction must lie in (0, 1)"),
        ("search_space: {learning_rate: {min: 0.1, max: 0.001}}\n", "search_space.learning_rate is upside down"),
        ("search_space: {filters: []}\n", "search_space.filters must be a non-empty list"),
        ("tuner: grid\n", "tuner must be one of hyperband, random, bayesian"),
        ("threshold: 2\n", "threshold must be youden, youden_or_half, plateau or a probability"),
        ("run_name: ../escape\n", "run_name must be text matching"),
        ("- a list\n", "must hold a mapping"),
        ("epochs: 1.5\n", "epochs must be an integer"),
        ("max_trials: 0\n", "max_trials must be at least 1"),
        ("image_size: 4\n", "image_size must be between 8 and 1024"),
        ("skip_bad_images: sometimes\n", "skip_bad_images must be true or false"),
        (
            "compilation_cache: 3\n",
            "compilation_cache must be true (a folder beside the runs), false (no cache) or a folder",
        ),
        ("search_space: {dropout: {min: 0.0, max: 0.5, step: 0}}\n", "search_space.dropout.step must be above 0"),
        ("search_space: {learning_rate: {min: 0, max: 0.01}}\n", "search_space.learning_rate.min must lie in (0"),
        ("search_space: {conv_blocks: {min: 2}}\n", "search_space.conv_blocks must be a mapping with keys min, max"),
        ("search_space: {pooling: [max]}\n", "search_space.pooling must be a non-empty list of flatten, average"),
        ("search_space: {batch_norm: []}\n", "search_space.batch_norm must be a non-empty list of False, True"),
        (
            "search_space: {label_smoothing: {min: 0, max: 0.9, step: 0.1}}\n",
            "label_smoothing.max must lie in [0, 0.5]",
        ),
        ("final_schedule: linear\n", "final_schedule must be one of constant, cosine"),
        ("candidates: {batch_norm: true}\n", "candidates must be a list of mappings of hyperparameter names"),
        ("candidates: [{batchnorm: true}]\n", "candidates[0] names no hyperparameter: batchnorm (known: conv_blocks"),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert expected in str(error.value)
    assert str(path) in str(error.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "epochs: 3\nseed: [1, 2\n")
    with pytest.raises(ConfigError, match=r"user\.yaml line \d+: YAML syntax error"):
        load(path)


def test_binary_config_file_is_one_sentence(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"PK\x03\x04\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=r"model\.keras is not UTF-8 text"):
        load(path)


def test_bad_flag_value_names_the_flag():
    with pytest.raises(ConfigError, match=r"^--final-epochs: final_epochs must be at least 1"):
        load(None, {"--final-epochs": ("final_epochs", 0)})


def test_random_and_bayesian_need_max_trials(tmp_path):
    unbounded = write(tmp_path, "max_trials: null\n")
    with pytest.raises(ConfigError, match="max_trials must be set for tuner random"):
        load(unbounded, {"--tuner": ("tuner", "random")})
    with pytest.raises(ConfigError, match="max_trials must be set for tuner bayesian"):
        load(unbounded, {"--tuner": ("tuner", "bayesian")})


def test_missing_config_file_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "absent.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load(path)


def test_dump_round_trips(tmp_path):
    loaded = load()
    path = write(tmp_path, config.dump(loaded))
    assert load(path) == loaded


@pytest.mark.parametrize(
    "preset", sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml")), ids=lambda p: p.name
)
def test_every_preset_is_valid_and_keeps_the_baseline_inside(preset):
    from data import channel_count
    from hypermodel import ChestXRayHyperModel

    loaded = load(preset)
    space, augmentation = loaded.search_space.as_dict(), loaded.augmentation.as_dict()
    model = ChestXRayHyperModel(loaded.image_size, channel_count(loaded.color_mode), space, augmentation)
    assert all(model.point_from(changes, "candidates") for changes in loaded.candidates)


def test_settings_are_frozen_and_nested():
    import dataclasses

    loaded = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.seed = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.search_space.learning_rate.min = 0.5
    assert loaded.distributed.role == "standalone" and loaded.augmentation.zoom == 0.2
    changed = loaded.replace(seed=3)
    assert (changed.seed, loaded.seed) == (3, 42)


def test_a_run_recorded_before_newer_keys_loads_with_their_legacy_values(tmp_path):
    old = config.dump(load()).splitlines()
    dropped = ("precision:", "backend:", "final_schedule:", "final_ema_momentum:")
    # Runs also recorded ensemble_size: 1 (every committed run's config.yaml), a key removed since.
    kept = [line for line in old if not line.startswith(dropped)]
    path = write(tmp_path, "\n".join(kept) + "\nensemble_size: 1\nretired_key: 1\n")
    recorded = config.load_recorded(path)
    assert (recorded.precision, recorded.backend, recorded.final_schedule) == ("float32", "tensorflow", "constant")
    assert recorded.final_ema_momentum is None and not hasattr(recorded, "ensemble_size")
    assert recorded.image_size == 80  # what the run did record is kept
    mapping = config.recorded(path)  # the plain mapping, in today's shape too
    assert "ensemble_size" not in mapping and mapping["precision"] == "float32"


def test_the_compilation_cache_sits_beside_the_runs_unless_moved_or_off():
    from runtime import compilation

    assert compilation.cache_folder(True, "reports") == Path("reports") / ".compilation-cache"
    assert compilation.cache_folder(False, "reports") is None
    assert compilation.cache_folder("/scratch/xla", "reports") == Path("/scratch/xla")
    assert compilation.start("tensorflow", Path("anywhere")) is None  # nothing compiles ahead of time there


def test_each_key_is_declared_once_as_a_field():
    import dataclasses

    def field_names(section: type) -> list[str]:
        return [field.name for field in dataclasses.fields(section)]

    # SCHEMA, FLAGS and LEGACY_DEFAULTS are read off the dataclasses, in their order (config.yaml's).
    assert list(config.SCHEMA) == field_names(config.Settings)
    assert list(config.SCHEMA["search_space"]) == field_names(config.SearchSpace)
    assert list(config.SCHEMA["distributed"]) == field_names(config.Distributed)
    assert config.FLAGS["distributed.worker_id"] == "--worker-id" and config.FLAGS["image_size"] == "--image-size"
    assert config.LEGACY_DEFAULTS == {
        "backend": "tensorflow",
        "precision": "float32",
        "skip_bad_images": False,
        "local_share": 0.0,
        "local_changes": 3,
        "candidates": [],
        "time_budget": None,
        "final_schedule": "constant",
        "final_ema_momentum": None,
        "finalists": 0,
        "repeats": 1,
        "incumbent_rule": "race",
    }
    assert list(yaml.safe_load(config.dump(load()))) == list(config.SCHEMA)


def test_every_flag_of_a_key_is_a_search_py_option():
    import search

    options = vars(search.parse_args([]))
    assert all(flag[2:].replace("-", "_") in options for flag in config.FLAGS.values())
    parsed = vars(search.parse_args(["--tuner", "bayesian", "--role", "chief", "--skip-bad-images"]))
    assert config.flag_overrides(parsed) == {
        "--tuner": ("tuner", "bayesian"),
        "--role": ("distributed.role", "chief"),
        "--skip-bad-images": ("skip_bad_images", True),
    }


def test_every_search_space_key_is_drawn_by_one_declared_hyperparameter():
    import dataclasses

    declared = config.HYPERPARAMETERS
    assert sorted(h.key for h in declared) == sorted(field.name for field in dataclasses.fields(config.SearchSpace))
    space = load().search_space.as_dict()
    for position, hyperparameter in enumerate(declared):
        bounds = space[hyperparameter.key]
        if hyperparameter.kind in config.RANGE_KINDS:  # a min/max mapping, with a step for a stepped one
            assert isinstance(bounds, dict) and ("step" in bounds) == (hyperparameter.kind == "stepped"), hyperparameter
        else:
            assert isinstance(bounds, list), hyperparameter
        if hyperparameter.per:  # its count is an integer range declared before it (Keras Tuner's condition)
            count = next(h for h in declared[:position] if h.name == hyperparameter.per)
            assert count.kind == "int" and count.per is None
    assert config.hyperparameter("units_2").key == "dense_units" and config.hyperparameter("filters") is None
    with pytest.raises(ValueError, match="kind must be one of"):
        config.Hyperparameter("momentum", "uniform", config._number(0, 1), 0.9)
