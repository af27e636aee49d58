"""Training: the search's trials and the final retrains, with what every fit shares (data, class weights,
callbacks), the retrain's learning rate schedule, and Ctrl-C, which stops a fit at the end of a batch.

One concern: calling fit. It imports Keras (inside the functions, so the backend is chosen first),
Keras Tuner through tuning.py, data.py, distributed.py and resume.py; never the report modules.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from config import Settings


class CtrlC:
    """Ctrl-C while a model trains stops it at the end of the current batch; elsewhere, or pressed twice, at once.

    Raised at an arbitrary point, the KeyboardInterrupt can land in a weakref callback of TensorFlow's, where
    Python prints and drops it and the search runs on; raised from a Keras callback it always stops the run.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.training = self.pressed = False

    def handle(self, signum: int, frame: Any) -> None:
        at_once = self.pressed or not self.training
        self.pressed = True  # remembered, so that training stops even if this exception is dropped
        if at_once:
            raise KeyboardInterrupt

    def unraisable(self, unraisable: Any) -> None:
        """sys.unraisablehook: a dropped Ctrl-C is not news, the next batch raises it again; the rest is printed."""
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            sys.__unraisablehook__(unraisable)

    def callback(self):
        """A Keras callback that marks training and raises the pending interrupt after each batch."""
        import keras

        ctrl_c = self

        class StopOnCtrlC(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                ctrl_c.training = True

            def on_train_end(self, logs=None):
                ctrl_c.training = False

            def on_train_batch_end(self, batch, logs=None):
                if ctrl_c.pressed:
                    ctrl_c.training = False
                    raise KeyboardInterrupt

            on_test_batch_end = on_train_batch_end

        return StopOnCtrlC()


CTRL_C = CtrlC()


def fit_settings(splits, settings: Settings) -> dict[str, Any]:
    """What every fit shares: the data, class weights and a log line per epoch when not on a terminal."""
    import data

    return {
        "x": data.to_dataset(splits["train"], settings.batch_size, shuffle=True, seed=settings.seed),
        "validation_data": data.to_dataset(splits["validation"], settings.batch_size),
        "class_weight": data.class_weights(splits["train"].labels) if settings.class_weights else None,
        "verbose": 1 if sys.stdout.isatty() else 2,
        "shuffle": False,  # the training dataset reshuffles itself every epoch
    }


def search(hypermodel, splits, settings: Settings, run_dir: Path):
    """Run (or resume) the search; the first trial is the baseline. Returns the best points (ensemble_size
    of them, best first) and the trials.

    Distributed, the chief serves the search and returns its result; a worker returns (None, None).
    """
    import keras

    import distributed
    import tuning

    keras.utils.set_random_seed(settings.seed)
    role = settings.distributed.role
    distributed.configure(settings.distributed)  # Keras Tuner reads it when the tuner is built
    tuner = make_tuner(hypermodel, settings, run_dir, distributed.choose_strategy(settings.distribution))
    note = tuning.schedule_note(tuner.oracle, settings.epochs, settings.hyperband_factor)
    if note and role != "worker":
        print(note)
    if role == "chief":
        distributed.serve_oracle(
            tuner, settings.distributed.oracle_address, settings.distributed.running_trial_timeout
        )
        return _search_result(tuner, settings.ensemble_size)
    shared = fit_settings(splits, settings)
    mode = tuner.oracle.objective.direction
    callbacks = [
        keras.callbacks.EarlyStopping(settings.objective, patience=settings.early_stopping_patience, mode=mode),
        # Raising makes a NaN loss a failed trial with this message, not a finished one with a junk score.
        keras.callbacks.TerminateOnNaN(raise_error=True),
        CTRL_C.callback(),
        *tensorboard_logging(settings.tensorboard, run_dir / "tensorboard"),  # Keras Tuner gives each trial a folder
    ]
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
        print(
            f"Worker {settings.distributed.worker_id} ran trials: {ran}. The chief retrains the best and reports."
        )
        return None, None
    return _search_result(tuner, settings.ensemble_size)


def make_tuner(hypermodel, settings: Settings, run_dir: Path, strategy: Any = None):
    """The run's tuner, baseline first; it picks up the state already in `run_dir`/tuner."""
    import tuning
    from hypermodel import BASELINE

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
    )


def _search_result(tuner, count: int):
    """The best distinct points (up to ensemble_size) and the trials table, with a warning when trials failed."""
    import tuning

    trials = tuning.trials_table(tuner.oracle)
    failed = trials[trials["status"] != "COMPLETED"]
    if len(failed):
        print(
            f"Warning: {len(failed)} of {len(trials)} trials failed; first error: {failed['error'].iloc[0]}",
            file=sys.stderr,
        )
    points = tuning.best_points(tuner, count)
    if len(points) < count:
        print(f"Note: ensemble_size is {count}, but only {len(points)} distinct point(s) completed; using those.")
    return points, trials


def tensorboard_logging(enabled: bool, log_dir: Path) -> list:
    """Keras' TensorBoard callback, or nothing when `tensorboard: false`."""
    import keras

    if not enabled:
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), write_graph=False, profile_batch=0)]


def retrain(hypermodel, hp, splits, settings: Settings, backup_dir: Path, log_dir: Path | None = None):
    """Train the chosen point from scratch for final_epochs and keep the epoch best on validation; a retrain
    that was cut off goes on from its last finished epoch, backed up in `backup_dir`."""
    import keras
    import pandas as pd

    import distributed
    import tuning
    from resume import RetrainBackup

    keras.utils.set_random_seed(settings.seed)
    with distributed.strategy_scope(settings.distribution):
        ema = settings.final_ema_momentum
        model = hypermodel.build(hp, ema_momentum=ema) if ema else hypermodel.build(hp)
    goal = "min" if settings.objective.endswith("loss") else "max"
    best = RetrainBackup(backup_dir, settings.objective, goal, point=tuning.searched_values(hp))
    logging = tensorboard_logging(settings.tensorboard, log_dir) if log_dir else []
    if logging and settings.backend == "tensorflow":  # Keras Tuner, too, logs HParams on TensorFlow only
        from tensorboard.plugins.hparams import api as hparams_api

        # The retrain joins the trials in TensorBoard's HParams table under the name "final".
        logging.append(hparams_api.KerasCallback(str(logging[0].log_dir), tuning.searched_values(hp), trial_id="final"))
    schedule = learning_rate_schedule(settings.final_schedule, hp.get("learning_rate"), settings.final_epochs)
    shared = fit_settings(splits, settings)
    # Validation (and so the kept epoch) sees the averaged weights when the optimizer keeps them.
    averaging = [keras.callbacks.SwapEMAWeights()] if settings.final_ema_momentum else []
    # The backup comes last, so that its rows hold what the other callbacks logged (the learning rate).
    callbacks = [*schedule, *averaging, CTRL_C.callback(), *logging, best]
    model.fit(epochs=settings.final_epochs, callbacks=callbacks, **shared)
    return model, pd.DataFrame(best.rows), best.best_epoch


def learning_rate_schedule(kind: str, learning_rate: float, epochs: int) -> list:
    """Nothing for a constant rate; for cosine, a callback that decays it from the tuned rate towards 0."""
    import math

    import keras

    if kind == "constant":
        return []
    return [
        keras.callbacks.LearningRateScheduler(
            lambda epoch: learning_rate * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        )
    ]


def retrain_runners_up(hypermodel, points, splits, settings: Settings, backup_dir: Path) -> list:
    """The ensemble's other members: each runner-up point retrained as the best one was (not logged, not saved)."""
    members = []
    for rank, hp in enumerate(points, start=2):
        print(f"\nEnsemble: retraining the number {rank} point of the search ({rank} of {len(points) + 1})")
        model, _, _ = retrain(hypermodel, hp, splits, settings, backup_dir / f"member{rank}")
        members.append(model)
    return members
