"""Keras Tuner's tuners, set up so the baseline is the first trial and every trial's cost is kept.

One concern: Keras Tuner. It imports Keras, Keras Tuner, config.py (TUNER_PREFIX), errors.py, runs.py (whole-file
writes) and runtime/compat.py (Keras Tuner's and TensorFlow's private names) of ours.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd

from config import TUNER_PREFIX
from errors import SearchError
from runs import plural, write_text
from runtime import compat


class BaselineFirst:
    """Oracle mixin: the first trial evaluates the baseline, so every search is compared with it, and the next ones
    the `candidates` (whole points) in their order, as Optuna's enqueued trials; after them, a share of the points
    (`local_share`) are the baseline's point with 1 to `local_changes` of its values drawn anew, the rest drawn
    over the whole space as Keras Tuner draws them.

    A point drawn over the whole space changes 8 to 15 of the baseline's 15 values (bench/search_evidence.py), so a
    search never asks what one or two changes to a good point would do; SMAC3 and Optuna start from the default
    too, and the prior-guided searches (piBO, PriorBand) draw near it."""

    def __init__(
        self,
        *args: Any,
        baseline_values: dict[str, Any],
        local_share: float = 0.0,
        local_changes: int = 3,
        candidates: Sequence[dict[str, Any]] = (),
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.baseline_values = baseline_values
        self.local_share, self.local_changes = local_share, local_changes
        self.candidates = [dict(point) for point in candidates]

    def _random_values(self) -> dict[str, Any] | None:  # Keras Tuner's private hook (compat.HOOKS)
        first = [dict(self.baseline_values), *self.candidates]
        if len(self.trials) < len(first):
            return first[len(self.trials)]
        # Seeded by the trial's number, so a resumed or distributed search draws the same points.
        rng = np.random.default_rng([self.seed, len(self.trials)])
        if rng.random() < self.local_share:
            values = near_point(self.hyperparameters, self.baseline_values, self.local_changes, rng, self._tried())
            if values is not None:
                return values
        return super()._random_values()

    def _tried(self) -> list[dict[str, Any]]:
        return [trial.hyperparameters.values for trial in self.trials.values()]


def near_point(
    space: kt.HyperParameters, centre: dict[str, Any], most: int, rng: np.random.Generator, tried: list[dict]
) -> dict[str, Any] | None:
    """`centre` with 1 to `most` of its values drawn anew from their own ranges (each different from the centre's),
    the per-layer values a changed depth brings drawn too; None when 20 draws gave only points already tried."""
    names = [hp.name for hp in space.space if hp.name in centre]
    for _ in range(20):
        changed = set(rng.choice(names, size=int(rng.integers(1, min(most, len(names)) + 1)), replace=False))
        point = kt.HyperParameters()
        for hp in space.space:  # Keras Tuner's own order, so a condition's parent is set before its children
            point.merge([hp])
            if point.is_active(hp):
                keep = hp.name in centre and hp.name not in changed
                point.values[hp.name] = centre[hp.name] if keep else _other_value(hp, centre.get(hp.name), rng)
        if point.values not in tried:
            return dict(point.values)
    return None


def _other_value(hp: Any, current: Any, rng: np.random.Generator) -> Any:
    """A draw of `hp` over its range that differs from `current` where its range holds another value."""
    value = current
    for _ in range(50):
        value = hp.random_sample(int(rng.integers(2**31)))
        if value != current:
            break
    return value


class TrialGate(Protocol):
    """What decides whether a new trial starts (the time budget's, training.BudgetGate), given to the tuner once,
    where it is made."""

    planned: int | None  # the trials its latest plan fits, which the trial headers count to

    def allows(self, oracle: kt.Oracle, values: dict[str, Any]) -> bool: ...

    def eta(self, oracle: kt.Oracle, planned: int | None, trials_ended: int) -> str: ...


class Gated:
    """Oracle mixin: a new trial starts only where the `trial_gate` allows its point; otherwise the search ends, as
    when max_trials is reached."""

    def __init__(self, *args: Any, trial_gate: TrialGate | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.trial_gate = trial_gate

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        response = super().populate_space(trial_id)
        allowed = self.trial_gate is None or response.get("status") != kt.engine.trial.TrialStatus.RUNNING
        if allowed or self.trial_gate.allows(self, response["values"]):
            return response
        return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}


class WholeFiles:
    """Oracle mixin: oracle.json and each trial.json are replaced whole, never rewritten in place.

    Keras Tuner truncates and rewrites them; a run killed in between would leave a file that
    stops the next run from resuming.
    """

    def save(self) -> None:
        write_json_whole(compat.oracle_file(self), self.get_state())

    def _save_trial(self, trial: kt.engine.trial.Trial) -> None:  # Keras Tuner's private hook (compat.HOOKS)
        write_json_whole(compat.trial_file(self, trial.trial_id), trial.get_state())


class TrialsById:
    """Oracle mixin: Keras Tuner's own progress lines count trials from 1 ("Running Trial #1", "Trial 1 Complete")
    while its trial ids, which every file and report shows, start at 0 (trial 0 is the baseline's point). They are
    kept silent through the public `verbose` property; TrialRecorder prints each trial's lines by its id."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        kt.Oracle.verbose.fset(self, 0)

    @property
    def verbose(self) -> int:
        return 0

    @verbose.setter
    def verbose(self, value: Any) -> None:  # Keras Tuner sets it from fit's verbose at every search
        kt.Oracle.verbose.fset(self, 0)


def write_json_whole(path: str, state: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path` in one step."""
    write_text(Path(path), json.dumps(state))


class BaselineFirstHyperbandOracle(WholeFiles, Gated, BaselineFirst, TrialsById, kt.oracles.HyperbandOracle):
    pass


class BaselineFirstRandomSearchOracle(WholeFiles, Gated, BaselineFirst, TrialsById, kt.oracles.RandomSearchOracle):
    pass


class BaselineFirstBayesianOracle(WholeFiles, Gated, BaselineFirst, TrialsById, kt.oracles.BayesianOptimizationOracle):
    pass


class TrialRecorder:
    """Tuner mixin: prints progress and records each trial's epochs and seconds with its metrics."""

    resumed = False  # whether trials had ended before this process began the search

    def __init__(
        self,
        *args: Any,
        baseline_values: dict[str, Any] | None = None,
        trial_gate: TrialGate | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.baseline_values = baseline_values or {}  # the baseline's point, which each trial's header compares with
        self.trial_gate = trial_gate  # the oracle's, whose plan the headers count to

    def save(self) -> None:
        # As kt.Tuner.save, with the tuner's own JSON replaced whole (see WholeFiles).
        if not compat.is_worker(self):
            self.oracle.save()
        write_json_whole(compat.tuner_file(self), self.get_state())

    def on_search_begin(self) -> None:
        super().on_search_begin()
        self.search_started = time.monotonic()
        self.trials_run: list[str] = []  # by this process; a distributed worker runs a share
        # A resumed search's headers count from the resume: the trials kept from before are not in that time.
        self.resumed = bool(ended_trials(self.oracle))

    def on_trial_begin(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_begin(trial)
        self.trials_run.append(trial.trial_id)
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - self.search_started))
        since = " since resuming" if self.resumed else ""
        # Under a time budget, the trials its latest plan fits, else max_trials.
        planned = (self.trial_gate and self.trial_gate.planned) or planned_trials(self.oracle)
        # get_best_trials and trial ids work the same on a worker, whose oracle is a gRPC client.
        best = [trial for trial in self.oracle.get_best_trials(1) if trial.score is not None]
        best_text = f"{best[0].score:.4f} (trial {best[0].trial_id})" if best else "none yet"
        # The gate prices the rest as the time budget's plan does; a distributed worker has none.
        eta = (
            self.trial_gate.eta(self.oracle, planned, len(ended_trials(self.oracle)))
            if self.trial_gate
            else "ETA: not estimated on a worker (its trials run beside other workers')"
        )
        print(
            f"\n== Trial {trial.trial_id} ({int(trial.trial_id) + 1} of {planned or '?'}) | elapsed {elapsed}{since} | "
            f"best {self.oracle.objective.name} so far: {best_text} | {eta}\n{point_line(trial.hyperparameters, self.baseline_values)}",
            flush=True,
        )

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        score = "no score" if trial.score is None else f"{self.oracle.objective.name} {trial.score:.4f}"
        print(f"Trial {trial.trial_id} {str(trial.status).lower()}: {score}", flush=True)

    def run_trial(self, trial: kt.engine.trial.Trial, *args: Any, **kwargs: Any) -> dict[str, float]:
        started, started_at = time.monotonic(), time.time()
        (history,) = super().run_trial(trial, *args, **kwargs)
        objective = self.oracle.objective
        scores = np.asarray(history.history[objective.name], dtype=float)
        if np.all(np.isnan(scores)):
            raise kt.errors.FailedTrialError(f"{objective.name} was NaN in every epoch")
        best = int(np.nanargmax(scores) if objective.direction == "max" else np.nanargmin(scores))
        metrics = {name: float(values[best]) for name, values in history.history.items()}
        # Keras Tuner scores a trial by its best epoch, a maximum that flatters; the last epoch's score is kept
        # beside it, so a report can show how far the two lie apart.
        metrics["last_objective"] = float(scores[-1])
        metrics["epochs_run"] = len(scores)
        metrics["trial_seconds"] = time.monotonic() - started
        # When it ran, on the wall clock (Unix seconds): study.db shows each trial at its real start and end.
        metrics["trial_started"], metrics["trial_ended"] = started_at, time.time()
        return metrics


class CheckpointCleanup:
    """Tuner mixin: drops trial weights once nothing can read them; trial.json files stay.

    The final model is retrained from scratch, so a finished search needs no trial's weights
    (Keras Tuner keeps one checkpoint per trial otherwise, keras-tuner issue 288), while
    trial.json and oracle.json keep the run explainable and resumable.
    """

    def delete_checkpoint(self, trial_id: str) -> None:
        Path(compat.checkpoint_file(self, trial_id)).unlink(missing_ok=True)

    def on_search_end(self) -> None:
        super().on_search_end()
        # From the folders, not oracle.trials: a distributed worker's oracle is a client without them.
        for trial_dir in Path(self.project_dir).glob("trial_*"):
            self.delete_checkpoint(trial_dir.name.removeprefix("trial_"))


class MemoryRelease:
    """Tuner mixin: hands a finished trial's memory back before the next trial starts.

    Keras Tuner clears the Keras session only when it builds the next model, and glibc keeps
    freed blocks of large models mapped, so resident memory crept up trial after trial
    (keras-tuner issues 873, 1031, 395; bench/memory.py measures it).

    Above all, TensorFlow registers a gradient function in its process-wide gradient registry
    for every tf.custom_gradient it traces (two per fit(): the train and the test step) and
    never removes it; that function's closure holds the traced graph, and the graph holds the
    model's variables, so every trial's weights and optimizer slots outlived the trial
    (bench/experiments/fit_growth.py shows it without Keras Tuner). The entries a trial added are dropped
    when it ends: nothing computes gradients through a finished trial's graphs.
    """

    def on_trial_begin(self, trial: kt.engine.trial.Trial) -> None:
        self._gradients_before = set(compat.custom_gradient_entries())
        super().on_trial_begin(trial)

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        keras.backend.clear_session(free_memory=False)  # one full collection below, once the gradients are gone
        compat.forget_custom_gradients(getattr(self, "_gradients_before", set()))
        gc.collect()
        _release_freed_memory()


def _release_freed_memory() -> None:
    """Return freed heap pages to the system (glibc's malloc_trim); a no-op elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class HyperbandTuner(CheckpointCleanup, MemoryRelease, TrialRecorder, compat.HyperbandWithOracle):
    """Hyperband keeps checkpoints until the search ends: promoted trials start from their parent's weights.
    Its oracle is built beforehand, as for the other searches: ours puts the baseline first."""


class SearchTuner(CheckpointCleanup, MemoryRelease, TrialRecorder, kt.Tuner):
    """Random and Bayesian search never reload a trial's weights: drop them as soon as it ends."""

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        self.delete_checkpoint(trial.trial_id)


def build_tuner(
    hypermodel: kt.HyperModel,
    *,
    kind: str,
    objective: str,
    max_trials: int | None,
    epochs: int,
    hyperband_factor: int,
    seed: int,
    baseline_values: dict[str, Any],
    directory: Path,
    overwrite: bool,
    distribution_strategy: Any = None,
    local_share: float = 0.0,
    local_changes: int = 3,
    candidates: Sequence[dict[str, Any]] = (),
    trial_gate: TrialGate | None = None,
) -> kt.Tuner:
    """A tuner of the given kind whose first trial is the baseline, the next ones the `candidates`, a `local_share`
    of the later points near the baseline; it resumes from `directory`. A `trial_gate` decides whether each new trial starts (a time budget) and
    gives the trial headers' ETA."""
    goal = kt.Objective(objective, direction="min" if objective.endswith("loss") else "max")
    common = {
        "objective": goal, "seed": sampler_seed(seed), "baseline_values": baseline_values,
        "local_share": local_share, "local_changes": local_changes, "candidates": candidates,
        "trial_gate": trial_gate,
    }  # fmt: skip
    if kind == "hyperband":
        oracle = BaselineFirstHyperbandOracle(max_epochs=epochs, factor=hyperband_factor, **common)
        compat.cap_trials(oracle, max_trials)  # Hyperband takes no max_trials
        tuner_class = HyperbandTuner
    elif kind == "random":
        oracle = BaselineFirstRandomSearchOracle(max_trials=max_trials, **common)
        tuner_class = SearchTuner
    else:
        oracle = BaselineFirstBayesianOracle(max_trials=max_trials, **common)
        tuner_class = SearchTuner
    return tuner_class(
        oracle=oracle,
        hypermodel=hypermodel,
        directory=str(directory),
        project_name="search",
        overwrite=overwrite,
        distribution_strategy=distribution_strategy,
        baseline_values=baseline_values,
        trial_gate=trial_gate,
    )


def ended_trials(oracle: kt.Oracle) -> list[kt.engine.trial.Trial]:
    """The oracle's trials that have ended (completed, failed or invalid); none on a worker, whose oracle client
    holds no trials."""
    return [t for t in getattr(oracle, "trials", {}).values() if t.status not in ("RUNNING", "IDLE")]


def sampler_seed(seed: int) -> int:
    """The seed of Keras Tuner's sampler for a run's `seed`, spread over [1, 2^31).

    Keras Tuner draws the n-th value of a search with the seed oracle.seed + n, so runs whose seeds are close draw
    from overlapping streams and, once their counts align, propose the same points: before this, seeds 49 and 50
    searched 22 of the same 24 points. Spread seeds keep each run's stream (a few hundred draws) apart."""
    return int(np.random.SeedSequence(seed).generate_state(1)[0] % (2**31 - 1)) + 1


def planned_trials(oracle: kt.Oracle) -> int | None:
    """How many trials the search will run: max_trials, or Hyperband's schedule if smaller."""
    schedule = hyperband_schedule(oracle)
    max_trials = compat.local_oracle(oracle).max_trials
    if schedule is None:
        return max_trials
    return min(schedule, max_trials) if max_trials else schedule


def hyperband_schedule(oracle: kt.Oracle) -> int | None:
    """The trials in Hyperband's own schedule for its max_epochs and factor; None for other searches."""
    oracle = compat.local_oracle(oracle)
    if not isinstance(oracle, kt.oracles.HyperbandOracle):
        return None
    return compat.hyperband_iteration_trials(oracle) * oracle.hyperband_iterations


def schedule_note(oracle: kt.Oracle, epochs: int, factor: int) -> str | None:
    """One sentence when Hyperband's schedule, not max_trials, decides how many trials run, or cuts it short."""
    schedule, max_trials = hyperband_schedule(oracle), compat.local_oracle(oracle).max_trials
    if schedule is None or max_trials is None or schedule == max_trials:
        return None
    settings = f"Hyperband's schedule for epochs {epochs} and hyperband_factor {factor} has {schedule} trial(s)"
    if schedule < max_trials:
        return f"Note: {settings}, fewer than max_trials {max_trials}: the search runs {schedule} (raise --epochs for more)."
    return f"Note: {settings}; max_trials {max_trials} stops it after {max_trials}, before the schedule ends."


def run_search(tuner: kt.Tuner, train: Any, validation: Any, **fit_kwargs: Any) -> None:
    """tuner.search(), with Keras Tuner's stop after repeated failures turned into one sentence."""
    try:
        tuner.search(train, validation_data=validation, **fit_kwargs)
    except RuntimeError as error:
        if not compat.stopped_by_failures(error):
            raise
        raise SearchError(
            f"the search stopped after repeated failed trials; last error: {_last_line(str(error))}"
        ) from None


def trials_table(oracle: kt.Oracle) -> pd.DataFrame:
    """One row per trial: id, status, objective, epochs, seconds, every hyperparameter, error."""
    rows = []
    for trial in sorted(oracle.trials.values(), key=lambda t: t.trial_id):
        recorded = {
            name: trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None
            for name in ("last_objective", "epochs_run", "trial_seconds", "trial_started", "trial_ended")
        }
        values = trial.hyperparameters.values
        rows.append(
            {
                "trial_id": trial.trial_id,
                "status": trial.status,
                "objective": trial.score,
                "last_objective": recorded["last_objective"],
                "epochs_run": recorded["epochs_run"],
                "seconds": recorded["trial_seconds"],
                "started": _moment(recorded["trial_started"]),
                "ended": _moment(recorded["trial_ended"]),
                **{name: value for name, value in values.items() if not name.startswith(TUNER_PREFIX)},
                **{name: value for name, value in values.items() if name.startswith(TUNER_PREFIX)},
                "error": _last_line(trial.message) if trial.message else "",
            }
        )
    return pd.DataFrame(rows)


def completed_trials(oracle: kt.Oracle) -> list[tuple[dict[str, Any], float, float]]:
    """Each completed trial's point, epochs run and seconds, as TrialRecorder recorded them."""
    done = []
    for trial in oracle.trials.values():
        if trial.status == kt.engine.trial.TrialStatus.COMPLETED and trial.metrics.exists("trial_seconds"):
            epochs, seconds = (trial.metrics.get_last_value(name) for name in ("epochs_run", "trial_seconds"))
            done.append((searched_values(trial.hyperparameters), float(epochs), float(seconds)))
    return done


def ranked_points(oracle: kt.Oracle, baseline_values: dict[str, Any]) -> list[dict[str, Any]]:
    """The completed trials' points other than the baseline's, in finalist order, each once: the finalists so far."""
    return [searched_values(t.hyperparameters) for t in _challengers(oracle, baseline_values)]


def _challengers(oracle: kt.Oracle, baseline_values: dict[str, Any]) -> list[kt.engine.trial.Trial]:
    """The completed trials at points other than the baseline's, each once: the candidates first, in their order
    (finalists whatever their trial's score: a short trial ranks points poorly as their full-length retrains
    would), then the others, best first."""
    others = [t for t in _distinct_completed(oracle) if not is_baseline_point(t.hyperparameters, baseline_values)]
    candidates = getattr(oracle, "candidates", [])  # the oracles of build_tuner have them; a plain one has none

    def place(trial: kt.engine.trial.Trial) -> int:
        hits = [n for n, point in enumerate(candidates) if is_baseline_point(trial.hyperparameters, point)]
        return hits[0] if hits else len(candidates)

    return sorted(others, key=place)  # stable: the others keep their ranking


def _distinct_completed(oracle: kt.Oracle) -> list[kt.engine.trial.Trial]:
    """The completed trials, best first, each point once (Hyperband scores a point at several budgets)."""
    trials, seen = [], []
    for trial in oracle.get_best_trials(len(oracle.trials)):
        if trial.status != kt.engine.trial.TrialStatus.COMPLETED:  # Keras Tuner pads the list with these
            continue
        values = searched_values(trial.hyperparameters)
        if values not in seen:
            seen.append(values)
            trials.append(trial)
    return trials


def best_trials(tuner: kt.Tuner, count: int = 1) -> list[kt.engine.trial.Trial]:
    """The best completed trials, best first, each point once (Hyperband scores a point at several budgets); an
    error naming the cause when every trial failed."""
    trials = _distinct_completed(tuner.oracle)
    if not trials:
        failed = [trial for trial in tuner.oracle.trials.values() if trial.message]
        cause = _last_line(failed[-1].message) if failed else "no trial completed"
        raise SearchError(f"every trial failed, so there is no best model; last error: {cause}")
    return trials[:count]


def finalist_trials(tuner: kt.Tuner, count: int, baseline_values: dict[str, Any]) -> list[kt.engine.trial.Trial]:
    """The baseline's trial first, then `count` completed trials at other points (the candidates', then the best
    others'): what the finalist protocol retrains for final_epochs each."""
    best_trials(tuner)  # an error naming the cause when every trial failed
    trials = tuner.oracle.trials.values()
    baseline = [trial for trial in trials if is_baseline_point(trial.hyperparameters, baseline_values)]
    return baseline[:1] + _challengers(tuner.oracle, baseline_values)[:count]


def point_line(hp: kt.HyperParameters, baseline_values: dict[str, Any]) -> str:
    """A trial's point as its header shows it: the values that differ from the baseline's point."""
    changed = {name: value for name, value in searched_values(hp).items() if baseline_values.get(name) != value}
    if not changed:
        return "Point: the baseline's"
    values = ", ".join(
        f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}" for name, value in changed.items()
    )
    return f"Point: the baseline's with {plural(len(changed), 'value')} changed: {values}"


def is_baseline_point(hp: kt.HyperParameters, baseline_values: dict[str, Any]) -> bool:
    """Whether a point is the baseline's (its active values; inactive ones do not count)."""
    values = searched_values(hp)
    return all(values.get(name) == value for name, value in baseline_values.items() if name in values)


def searched_values(hp: kt.HyperParameters) -> dict[str, Any]:
    """A point's hyperparameter values without Keras Tuner's bookkeeping."""
    return {name: value for name, value in hp.values.items() if not name.startswith(TUNER_PREFIX)}


def _moment(unix_seconds: float | None) -> str | None:
    """A wall-clock moment as trials.csv keeps it: ISO 8601 in UTC ("2026-12-01T06:43:15.355+00:00")."""
    if unix_seconds is None:
        return None
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat(timespec="milliseconds")


def _last_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
