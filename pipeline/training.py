"""Training: the search's trials and the final retrains, with what every fit shares (data, class weights,
callbacks), the retrain's learning rate schedule, and the callback through which Ctrl-C stops a fit at the end
of a batch.

One concern: calling fit. It imports Keras (search.py imports it once the backend is chosen), Keras Tuner through
tuning.py, data.py, distributed.py and resume.py; never the report modules.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

import budget
import data
from budget import Planner
from config import EXACT_OBJECTIVES, Settings
from data import Splits
from evaluation import image_log_loss
from hypermodel import BASELINE, baseline_hyperparameters
from pipeline import tuning
from pipeline.context import RunContext
from pipeline.eta import Recorded
from pipeline.resume import RetrainBackup
from runs import plural
from runtime import distributed
from runtime.interrupt import CTRL_C


@dataclass
class Candidate:
    """A point the search hands over for a full-length retrain, with what the search said of it."""

    trial_id: str  # Keras Tuner's, or "baseline" for a --baseline run
    point: Any  # keras_tuner.HyperParameters
    search_score: float | None = None  # the objective at the trial's best epoch
    search_last_score: float | None = None  # the objective at its last epoch
    is_baseline: bool = False


def ctrl_c_callback() -> keras.callbacks.Callback:
    """A Keras callback that marks training and raises a pending Ctrl-C (runtime/interrupt.py) after each batch."""

    class StopOnCtrlC(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            CTRL_C.training = True

        def on_train_end(self, logs=None):
            CTRL_C.training = False

        def on_train_batch_end(self, batch, logs=None):
            if CTRL_C.pressed:
                CTRL_C.training = False
                raise KeyboardInterrupt

        on_test_batch_end = on_train_batch_end

    return StopOnCtrlC()


def fit_settings(splits, settings: Settings, training_seed: int | None = None) -> dict[str, Any]:
    """What every fit shares: the data (the training images weighted by class when `class_weights` is on, in an
    order drawn from `training_seed`, the run's seed by default) and a log line per epoch when not on a terminal."""
    weights = data.class_weights(splits.train.labels) if settings.class_weights else None
    seed = settings.seed if training_seed is None else training_seed
    return {
        "x": data.to_dataset(splits.train, settings.batch_size, shuffle=True, seed=seed, class_weights=weights),
        "validation_data": data.to_dataset(splits.validation, settings.batch_size),
        "verbose": 1 if sys.stdout.isatty() else 2,
        "shuffle": False,  # the training dataset reshuffles itself every epoch
    }


def search(context: RunContext):
    """Run (or resume) the search; the first trial is the baseline. Returns the candidates for the final retrain
    (the baseline's point and the `finalists` best others; or, with no finalists, the best point) and the trials.

    Distributed, the chief serves the search and returns its result; a worker returns (None, None). With a time
    budget (the context's planner), a trial starts only where the plan leaves the final stage its time.
    """
    settings, hypermodel, splits, run_dir, planner = (
        context.settings,
        context.hypermodel,
        context.splits,
        context.run_dir,
        context.planner,
    )
    keras.utils.set_random_seed(settings.seed)
    role = settings.distributed.role
    distributed.configure(settings.distributed)  # Keras Tuner reads it when the tuner is built
    tuner = make_tuner(hypermodel, settings, run_dir, distributed.choose_strategy(settings.distribution), planner)
    note = tuning.schedule_note(tuner.oracle, settings.epochs, settings.hyperband_factor)
    if note and role != "worker":
        print(note)
    if role == "chief":
        distributed.serve_oracle(tuner, settings.distributed.oracle_address, settings.distributed.running_trial_timeout)
        return _search_result(tuner, settings)
    shared = fit_settings(splits, settings)
    mode = tuner.oracle.objective.direction
    callbacks = [
        keras.callbacks.EarlyStopping(settings.objective, patience=settings.early_stopping_patience, mode=mode),
        # Raising makes a NaN loss a failed trial with this message, not a finished one with a junk score.
        keras.callbacks.TerminateOnNaN(raise_error=True),
        ctrl_c_callback(),
        *tensorboard_logging(settings.tensorboard, run_dir / "tensorboard"),  # Keras Tuner gives each trial a folder
        *budget_deadline(planner, final_stage=True),
    ]
    # First, so that the exact scores are in the logs that EarlyStopping and Keras Tuner read.
    callbacks[:0] = exact_validation_scores(splits, settings)
    with distributed.chief_connection(settings.distributed.oracle_address):
        tuning.run_search(
            tuner,
            shared.pop("x"),
            shared.pop("validation_data"),
            epochs=settings.epochs,
            callbacks=callbacks,
            **shared,
        )
    if role == "worker":
        ran = ", ".join(tuner.trials_run) or "none"
        print(f"Worker {settings.distributed.worker_id} ran trials: {ran}. The chief retrains the best and reports.")
        return None, None
    return _search_result(tuner, settings)


class BudgetGate:
    """What the oracle asks before each new trial (tuning.TrialGate): re-price from the trials finished so far and,
    under a time budget, print the plan and say whether a trial at this point still fits; the trial header's ETA at
    the same prices."""

    def __init__(self, planner: Planner, hypermodel: Any):
        self.planner, self.hypermodel = planner, hypermodel
        self.planned: int | None = None  # the trial header's "Trial k of N"

    def allows(self, oracle: Any, values: dict[str, Any]) -> bool:
        planner, work = self.planner, self.hypermodel.work
        trial_epochs = self._reprice(oracle)
        if not planner.budget.limited:
            return True
        started = len(oracle.trials)
        plan = planner.plan(started, trial_epochs)
        line = planner.plan_line(plan, started)
        planner.budget.plans.append(line)
        print(line, flush=True)
        self.planned = started + max(plan.trials, 1)
        ranked = [work(v) for v in tuning.ranked_points(oracle, BASELINE)]
        return planner.may_start(work(values), started, ranked, trial_epochs or planner.epochs)

    def eta(self, oracle: Any, planned: int | None, trials_ended: int) -> str:
        """The trial header's estimate, at the price the plan uses (budget.Planner.eta_line)."""
        trial_epochs = self._reprice(oracle) or self.planner.epochs
        ranked = [self.hypermodel.work(v) for v in tuning.ranked_points(oracle, BASELINE)]
        return self.planner.eta_line(trials_ended, planned, trial_epochs, ranked)

    def _reprice(self, oracle: Any) -> float | None:
        """Prices from the trials finished so far; their mean epochs (None before the first)."""
        done = tuning.completed_trials(oracle)
        if not done:
            return None
        work = self.hypermodel.work
        self.planner.reprice([(work(v), e, s) for v, e, s in done], f"this run's {plural(len(done), 'finished trial')}")
        return sum(e for _, e, _ in done) / len(done)


def budget_deadline(planner: Planner | None, final_stage: bool) -> list:
    """A callback that ends a fit after the epoch past which the next would eat into the time the rest of the run
    needs (the final stage for a trial, the report for a retrain); nothing without a time budget."""
    if planner is None or not planner.budget.limited:
        return []

    class BudgetDeadline(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            budget = planner.budget
            reserve = planner.minimum_final_seconds() if final_stage else budget.report_seconds
            planned = self.params.get("epochs")
            if epoch + 1 == planned:  # the fit ends here anyway: nothing is cut
                return
            if budget.left() - (time.monotonic() - self.started) < reserve:
                self.model.stop_training = True
                what = "a trial" if final_stage else "a retrain"
                budget.cuts.append(
                    f"{what} stopped after epoch {epoch + 1} of {planned}: the time budget was running out"
                )

    return [BudgetDeadline()]


def mean_trial_work(hypermodel, settings: Settings, samples: int = 400) -> float:
    """The mean work of the points this search draws (budget.point_work): the space's mean for draws over the whole
    space, the mean of points near the baseline's for the `local_share` drawn there (they cost about what the
    baseline's does, much less than the space's mean), the price of trials not yet drawn."""
    whole = hypermodel.mean_work(samples)
    if not settings.local_share:
        return whole
    space = kt.HyperParameters()
    hypermodel.declare(space)
    rng = np.random.default_rng(0)
    near = [tuning.near_point(space, BASELINE, settings.local_changes, rng, []) for _ in range(samples)]
    near_mean = float(np.mean([hypermodel.work(point) for point in near if point is not None]))
    return settings.local_share * near_mean + (1 - settings.local_share) * whole


def candidate_points(hypermodel, settings: Settings) -> list[dict[str, Any]]:
    """The config's candidates as whole points (the baseline's with their changes made), in their order."""
    return [hypermodel.point_from(changes, "candidates") for changes in settings.candidates]


def make_planner(hypermodel, settings: Settings, recorded: Recorded, used: Callable[[], float]) -> Planner:
    """The run's planner (budget.Planner), priced from what this machine recorded (eta.recorded_trainings; None
    where nothing was), its budget the settings' (none: no limit) on the run clock `used`."""
    trainings = [(hypermodel.work(point), e, s) for point, e, s in recorded.trainings]
    seconds = budget.parse_duration(settings.time_budget) if settings.time_budget else None
    return Planner(
        budget.Budget(seconds, used),
        mean_work=mean_trial_work(hypermodel, settings),
        baseline_work=hypermodel.work(BASELINE),
        epochs=settings.epochs,
        final_epochs=settings.final_epochs,
        max_trials=settings.max_trials,
        max_finalists=settings.finalists,
        price=budget.Price.fitted(trainings, recorded.source),
        repeats=settings.repeats,
        candidate_works=[hypermodel.work(point) for point in candidate_points(hypermodel, settings)],
    )


def make_tuner(hypermodel, settings: Settings, run_dir: Path, strategy: Any = None, planner: Planner | None = None):
    """The run's tuner, baseline first; it picks up the state already in `run_dir`/tuner. With a time budget
    (`planner`), each new trial starts only where its plan allows."""
    return tuning.build_tuner(
        hypermodel,
        kind=settings.tuner,
        objective=settings.objective,
        max_trials=settings.max_trials,
        epochs=settings.epochs,
        hyperband_factor=settings.hyperband_factor,
        seed=settings.seed,
        baseline_values=BASELINE,
        directory=run_dir / "tuner",
        overwrite=False,
        distribution_strategy=strategy,
        local_share=settings.local_share,
        local_changes=settings.local_changes,
        candidates=candidate_points(hypermodel, settings),
        trial_gate=BudgetGate(planner, hypermodel) if planner is not None else None,
    )


def _search_result(tuner, settings: Settings) -> tuple[list[Candidate], Any]:
    """The candidates for the final retrain and the trials table, with a warning when trials failed."""
    trials = tuning.trials_table(tuner.oracle)
    failed = trials[trials["status"] != "COMPLETED"]
    if len(failed):
        print(
            f"Warning: {len(failed)} of {len(trials)} trials failed; first error: {failed['error'].iloc[0]}",
            file=sys.stderr,
        )
    chosen = (
        tuning.finalist_trials(tuner, settings.finalists, BASELINE) if settings.finalists else tuning.best_trials(tuner)
    )
    return [_candidate(trial, trials) for trial in chosen], trials


def _candidate(trial: Any, trials: Any) -> Candidate:
    row = trials[trials["trial_id"] == trial.trial_id].iloc[0]
    last = row.get("last_objective")
    return Candidate(
        trial.trial_id,
        trial.hyperparameters,
        trial.score,
        None if last is None or last != last else float(last),
        tuning.is_baseline_point(trial.hyperparameters, BASELINE),
    )


def exact_validation_scores(splits: Splits, settings: Settings) -> list:
    """A callback that adds the exact validation ROC AUC and log loss to each epoch's logs, where the objective
    is one of them (config.EXACT_OBJECTIVES): from the validation predictions, unbinned, without label
    smoothing or class weights. Nothing otherwise."""
    if settings.objective not in EXACT_OBJECTIVES:
        return []

    images = data.to_dataset(splits.validation, settings.batch_size)
    labels = np.asarray(splits.validation.labels)

    class ExactValidationScores(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            # Scored on the weights validation saw: the averaged ones where the optimizer keeps them.
            swap = [keras.callbacks.SwapEMAWeights()] if getattr(self.model.optimizer, "use_ema", False) else []
            predicted = self.model.predict(images, verbose=0, callbacks=swap)[: len(labels)]  # padding rows last
            probabilities = predicted[:, 1].astype(np.float64)
            if logs is not None and np.all(np.isfinite(probabilities)):
                logs["val_roc_auc"] = float(roc_auc_score(labels, probabilities))
                logs["val_log_loss"] = float(image_log_loss(labels, probabilities).mean())
            elif logs is not None:
                logs["val_roc_auc"] = logs["val_log_loss"] = float("nan")

        def __deepcopy__(self, memo):  # Keras Tuner copies callbacks per trial; the images need no copy
            return copy.copy(self)

    return [ExactValidationScores()]


def tensorboard_logging(enabled: bool, log_dir: Path) -> list:
    """Keras' TensorBoard callback, or nothing when `tensorboard: false`."""
    if not enabled:
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), write_graph=False, profile_batch=0)]


def retrain(context: RunContext, hp, backup_dir: Path, log_dir: Path | None = None, *, training_seed: int):
    """Train the chosen point from scratch for final_epochs and keep the epoch best on validation; a retrain
    that was cut off goes on from its last finished epoch, backed up in `backup_dir`. `training_seed` draws its
    weights, augmentation and batch order; the split is the run's (settings.seed) whatever it is."""
    settings, hypermodel, splits, planner = context.settings, context.hypermodel, context.splits, context.planner
    keras.utils.set_random_seed(training_seed)
    with distributed.strategy_scope(settings.distribution):
        ema = settings.final_ema_momentum
        model = hypermodel.build(hp, ema_momentum=ema) if ema else hypermodel.build(hp)
    goal = "min" if settings.objective.endswith("loss") else "max"
    best = RetrainBackup(backup_dir, settings.objective, goal, point=tuning.searched_values(hp))
    logging = tensorboard_logging(settings.tensorboard, log_dir) if log_dir else []
    if logging and settings.backend == "tensorflow":  # Keras Tuner, too, logs HParams on TensorFlow only
        from tensorboard.plugins.hparams import api as hparams_api

        # The retrain joins the trials in TensorBoard's HParams table under the name "final".
        logging.append(
            hparams_api.KerasCallback(str(logging[0].log_dir), tuning.searched_values(hp), trial_id=Path(log_dir).name)
        )
    schedule = learning_rate_schedule(settings.final_schedule, hp.get("learning_rate"), settings.final_epochs)
    shared = fit_settings(splits, settings, training_seed)
    # Validation (and so the kept epoch) sees the averaged weights when the optimizer keeps them.
    averaging = [keras.callbacks.SwapEMAWeights()] if settings.final_ema_momentum else []
    # The exact scores come first and the backup last, so that its rows hold what the others logged.
    deadline = budget_deadline(planner, final_stage=False)
    callbacks = [
        *exact_validation_scores(splits, settings),
        *schedule,
        *averaging,
        ctrl_c_callback(),
        *logging,
        *deadline,
        best,
    ]
    model.fit(epochs=settings.final_epochs, callbacks=callbacks, **shared)
    return model, pd.DataFrame(best.rows), best.best_epoch


def learning_rate_schedule(kind: str, learning_rate: float, epochs: int) -> list:
    """Nothing for a constant rate; for cosine, a callback that decays it from the tuned rate towards 0."""
    if kind == "constant":
        return []
    return [
        keras.callbacks.LearningRateScheduler(
            lambda epoch: learning_rate * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        )
    ]


def final_log_dir(backup: Path, rank: int) -> Path:
    """TensorBoard's folder of a finalist: the first is "final", as for a single retrain."""
    run_dir = backup.parents[1]
    return run_dir / "tensorboard" / ("final" if rank == 1 else f"final-{backup.name}")


def epoch_timer():
    """A Keras callback that keeps each epoch's wall seconds, in order, in its `seconds` list."""

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    return EpochTimer()


def time_one_epoch(hypermodel, splits, settings: Settings) -> float:
    """Seconds of one training epoch of the baseline's point, validation included: the price of a time budget on
    a machine that has recorded nothing yet. Two epochs are run and the second timed: the first also builds the
    step functions."""
    keras.utils.set_random_seed(settings.seed)
    model, timer = hypermodel.build(baseline_hyperparameters()), epoch_timer()
    model.fit(epochs=2, callbacks=[timer, ctrl_c_callback()], **{**fit_settings(splits, settings), "verbose": 0})
    keras.backend.clear_session()
    return timer.seconds[-1]
