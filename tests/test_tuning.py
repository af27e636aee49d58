"""tuning.MemoryRelease drops what a trial's fit left in TensorFlow's gradient registry, and only that (README
Performance, Memory); tests/test_compat.py checks the registry itself on the pinned TensorFlow."""

from __future__ import annotations

import keras
import keras_tuner as kt
import numpy as np
import pytest

from pipeline import tuning
from runtime import compat


def fit_a_tiny_model() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    images = np.random.default_rng(0).uniform(size=(8, 3)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(8) % 2, 2)
    model.fit(images, labels, validation_data=(images, labels), epochs=1, batch_size=4, verbose=0)


class Trials:
    """What MemoryRelease extends: a tuner's trial callbacks."""

    def on_trial_begin(self, trial) -> None:
        pass

    def on_trial_end(self, trial) -> None:
        pass


class ReleasingTuner(tuning.MemoryRelease, Trials):
    pass


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the registry is TensorFlow's")
def test_a_trials_custom_gradients_are_dropped_when_it_ends_and_earlier_ones_kept():
    fit_a_tiny_model()  # before the trial: not its registrations
    before = set(compat.custom_gradient_entries())
    tuner = ReleasingTuner()
    tuner.on_trial_begin(None)
    fit_a_tiny_model()
    assert set(compat.custom_gradient_entries()) > before
    tuner.on_trial_end(None)
    assert before and set(compat.custom_gradient_entries()) == before


def _random_points(oracle_seed: int, count: int = 20) -> set[tuple]:
    """The first `count` points Keras Tuner's random sampler draws from the default space with `oracle_seed`."""
    import keras_tuner as kt

    from config import load
    from hypermodel import ChestXRayHyperModel

    settings = load()
    space = kt.HyperParameters()
    ChestXRayHyperModel(80, 1, settings.search_space.as_dict(), settings.augmentation.as_dict()).declare(space)
    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("val_log_loss", "min"), seed=oracle_seed)
    oracle.hyperparameters = space
    return {tuple(sorted(oracle._random_values().items())) for _ in range(count)}


def test_runs_with_neighbouring_seeds_search_different_points():
    # Keras Tuner draws its n-th value with the seed oracle.seed + n: neighbouring seeds share one stream.
    assert len(_random_points(53) & _random_points(54)) >= 10
    assert not _random_points(tuning.sampler_seed(53)) & _random_points(tuning.sampler_seed(54))


def _oracle(local_share: float, seed: int = 5) -> tuning.BaselineFirstRandomSearchOracle:
    import keras_tuner as kt

    from config import load
    from hypermodel import BASELINE, ChestXRayHyperModel

    settings = load()
    space = kt.HyperParameters()
    ChestXRayHyperModel(80, 1, settings.search_space.as_dict(), settings.augmentation.as_dict()).declare(space)
    oracle = tuning.BaselineFirstRandomSearchOracle(
        objective=kt.Objective("val_log_loss", "min"), seed=seed, max_trials=40, baseline_values=BASELINE,
        local_share=local_share, local_changes=2,
    )  # fmt: skip
    oracle.hyperparameters = space
    return oracle


def _search_points(oracle, count: int = 30) -> list[dict]:
    """The points the oracle proposes, trial after trial (each recorded as a trial, as the search records it)."""
    import keras_tuner as kt

    points = []
    for number in range(count):
        values = oracle._random_values()
        hp = oracle.hyperparameters.copy()
        hp.values = dict(values)
        oracle.trials[f"{number:02d}"] = kt.engine.trial.Trial(hp, trial_id=f"{number:02d}")
        points.append(values)
    return points


def _changed(point: dict, baseline: dict) -> int:
    """Values the point changes among those both have (a changed depth counts once, not for each layer it adds)."""
    return sum(point[name] != baseline[name] for name in point.keys() & baseline.keys())


def test_a_local_share_of_the_points_change_one_or_two_of_the_baselines_values():
    """Drawn over the whole space a point changes 8 to 15 of the baseline's 15 values; near it, 1 to local_changes."""
    from hypermodel import BASELINE

    whole = _search_points(_oracle(0.0))
    assert whole[0] == BASELINE and min(_changed(point, BASELINE) for point in whole[1:]) >= 5
    near = _search_points(_oracle(1.0))
    assert near[0] == BASELINE
    changes = [_changed(point, BASELINE) for point in near[1:]]
    assert set(changes) <= {1, 2} and changes.count(1) >= 5 and changes.count(2) >= 5
    assert len({tuple(sorted(point.items())) for point in near}) == len(near)  # never a point twice
    mixed = [_changed(point, BASELINE) for point in _search_points(_oracle(0.5))[1:]]
    assert 5 <= sum(change <= 2 for change in mixed) <= 25
    # The same seed proposes the same points: a resumed or distributed search draws them again.
    assert _search_points(_oracle(0.5)) == _search_points(_oracle(0.5))
    assert _search_points(_oracle(0.5, seed=6)) != _search_points(_oracle(0.5))


class _Units(kt.HyperModel):
    """One searched value on a two-layer model: a tuner that trains in milliseconds."""

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        model = keras.Sequential([
            keras.Input((3,)), keras.layers.Dense(hp.Int("units", 1, 64, default=4), activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ])  # fmt: skip
        model.compile("sgd", "categorical_crossentropy", metrics=["accuracy"])
        return model


class _OneTrialGate:
    """A trial gate that lets the first trial start and no other, and says its plan holds 7."""

    def __init__(self):
        self.planned, self.asked = None, []

    def allows(self, oracle, values) -> bool:
        self.asked.append(oracle)
        self.planned = 7
        return len(self.asked) == 1

    def eta(self, oracle, planned, trials_ended) -> str:
        return f"ETA: the gate's, {trials_ended} ended of {planned}"


def test_a_trial_gate_given_where_the_tuner_is_made_decides_each_trial_and_sets_the_headers_count(tmp_path, capsys):
    # The time budget reaches the search through build_tuner only: nothing is set on the tuner or its oracle later.
    gate = _OneTrialGate()
    tuner = tuning.build_tuner(
        _Units(), kind="random", objective="val_accuracy", max_trials=5, epochs=1, hyperband_factor=3, seed=1,
        baseline_values={"units": 4}, directory=tmp_path, overwrite=True, trial_gate=gate,
    )  # fmt: skip
    x = np.random.default_rng(0).uniform(size=(8, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(8) % 2, 2)
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert len(tuner.oracle.trials) == 1 and gate.asked[0] is tuner.oracle and len(gate.asked) == 2
    out = capsys.readouterr().out
    assert "== Trial 0 (1 of 7)" in out and "ETA: the gate's, 0 ended of 7" in out


def test_candidates_are_tried_after_the_baseline_and_are_the_first_finalists_whatever_their_score(tmp_path):
    # A short trial ranks points poorly as their full-length retrains would (docs/results.md): a candidate the
    # config names is retrained however its trial scored.
    tuner = tuning.build_tuner(
        _Units(), kind="random", objective="val_accuracy", max_trials=4, epochs=1, hyperband_factor=3, seed=1,
        baseline_values={"units": 4}, directory=tmp_path, overwrite=True, candidates=[{"units": 60}, {"units": 2}],
    )  # fmt: skip
    x = np.random.default_rng(0).uniform(size=(8, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(8) % 2, 2)
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    trials = [tuner.oracle.trials[trial_id] for trial_id in sorted(tuner.oracle.trials)]
    assert [trial.hyperparameters.values["units"] for trial in trials[:3]] == [4, 60, 2]
    for trial in trials:  # the candidates score worst, the other point best
        trial.score = {60: 0.1, 2: 0.2}.get(trial.hyperparameters.values["units"], 0.9)
    finalists = tuning.finalist_trials(tuner, 2, {"units": 4})
    assert [trial.hyperparameters.values["units"] for trial in finalists] == [4, 60, 2]
    ranked = tuning.ranked_points(tuner.oracle, {"units": 4})
    assert ranked[:2] == [{"units": 60}, {"units": 2}] and len(ranked) == 3
