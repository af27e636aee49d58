"""Every private name of Keras Tuner, Keras and TensorFlow the project leans on, each behind one small function.

A private name may change in any release, without notice. Here each one is used once, with a docstring that
says what it is and why the project needs it, and tests/test_compat.py holds a contract test per name that fails
with a clear message when a new pin of keras-tuner, keras or tensorflow moves it. No other module touches a
private third-party name, except the overrides of Keras Tuner's private hooks in pipeline/tuning.py, which must
keep Keras Tuner's names: `HOOKS` lists them.

One concern: that compatibility. It imports Keras and Keras Tuner; Keras Tuner's gRPC service on a distributed
chief only, and TensorFlow's gradient registry on the TensorFlow backend only; nothing of ours.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import keras_tuner as kt

# Keras Tuner's oracles and tuners.


@dataclass(frozen=True)
class Hook:
    """A private method of a Keras Tuner class that one of the project's mixins overrides under the same name."""

    owner: type
    name: str
    parameters: tuple[str, ...]  # as inspect.signature names them, self first
    overridden_by: str
    why: str


HOOKS = (
    Hook(
        kt.Oracle,
        "_random_values",
        ("self",),
        "pipeline/tuning.py: BaselineFirst",
        "every built-in oracle asks it for a new point: the first trial gets the baseline's instead",
    ),
    Hook(
        kt.Oracle,
        "_save_trial",
        ("self", "trial"),
        "pipeline/tuning.py: WholeFiles",
        "the oracle writes every trial.json through it: ours replaces the file whole",
    ),
)


def oracle_file(oracle: kt.Oracle) -> str:
    """Where the oracle keeps oracle.json (Oracle._get_oracle_fname): WholeFiles writes it whole, and a resumed
    run's oracle reloads from it."""
    return oracle._get_oracle_fname()


def trial_file(oracle: kt.Oracle, trial_id: str) -> str:
    """Where the oracle keeps a trial's trial.json (Oracle._get_trial_dir, the folder made if missing): WholeFiles
    writes it whole, and a resumed run's oracle reloads every trial from it."""
    return os.path.join(oracle._get_trial_dir(trial_id), "trial.json")


def cap_trials(oracle: kt.Oracle, max_trials: int | None) -> None:
    """Stop the search after `max_trials` trials. HyperbandOracle takes no max_trials, but the base Oracle's
    create_trial still reads the attribute, so --max-trials bounds a Hyperband search too."""
    oracle.max_trials = max_trials


def hyperband_iteration_trials(oracle: kt.oracles.HyperbandOracle) -> int:
    """The trials one Hyperband iteration runs, from its max_epochs and factor: the sizes of every round of every
    bracket (HyperbandOracle._get_num_brackets, _get_num_rounds, _get_size), for the trial header's "Trial k of N"
    and the note when max_trials cuts the schedule short."""
    brackets = range(oracle._get_num_brackets())
    return sum(
        oracle._get_size(bracket, round_) for bracket in brackets for round_ in range(oracle._get_num_rounds(bracket))
    )


def local_oracle(oracle: Any) -> kt.Oracle:
    """The oracle itself: on a distributed worker `tuner.oracle` is an OracleClient that forwards calls to the chief
    and keeps the local oracle, with its settings (max_epochs, max_trials), as `_oracle`."""
    return getattr(oracle, "_oracle", oracle)


def stopped_by_failures(error: BaseException) -> bool:
    """Whether `error` is Keras Tuner's stop after max_consecutive_failed_trials failed trials in a row: a plain
    RuntimeError, told apart only by its message (Oracle._check_consecutive_failures)."""
    return isinstance(error, RuntimeError) and "consecutive failures" in str(error)


def is_worker(tuner: kt.Tuner) -> bool:
    """Whether this process is a distributed search's worker, whose oracle lives on the chief (Tuner._is_worker):
    a worker saves only its own state."""
    return tuner._is_worker()


def tuner_file(tuner: kt.Tuner) -> str:
    """Where the tuner keeps its own state file, named after its tuner id (Tuner._get_tuner_fname): TrialRecorder
    writes it whole, and a resumed tuner reloads from it."""
    return tuner._get_tuner_fname()


def checkpoint_file(tuner: kt.Tuner, trial_id: str) -> str:
    """Where the tuner keeps a trial's weights (Tuner._get_checkpoint_fname), which CheckpointCleanup deletes
    once nothing can load them."""
    return tuner._get_checkpoint_fname(trial_id)


class HyperbandWithOracle(kt.Hyperband):
    """kt.Hyperband on an oracle built beforehand. kt.Hyperband.__init__ only builds its own HyperbandOracle and
    hands it to kt.Tuner.__init__; skipping it is what lets the project's Hyperband oracle put the baseline first."""

    def __init__(self, oracle: kt.Oracle, **kwargs: Any):
        kt.Tuner.__init__(self, oracle=oracle, **kwargs)


# Keras Tuner's distributed chief, which the project serves itself so that it can give up on a dead worker.


def add_oracle_service(server: Any, oracle: kt.Oracle) -> Any:
    """Add Keras Tuner's gRPC service of `oracle` to a grpc server; return its servicer. Keras Tuner serves an oracle
    only through its own start_server (keras_tuner.src.distribute.oracle_chief), which waits forever for a
    trial whose worker died."""
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    return servicer


def no_trial_left(servicer: Any) -> bool:
    """Whether a worker has been told there is no trial left to run (OracleServicer.stop_triggered)."""
    return servicer.stop_triggered


def chief_may_stop(oracle: kt.Oracle) -> bool:
    """Whether no trial runs and no worker waits for one, so the chief may stop serving (oracle_chief.exit_chief,
    under the oracle's lock)."""
    from keras_tuner.src.distribute import oracle_chief

    return oracle_chief.exit_chief(oracle)


def with_oracle_lock(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function(oracle, ...)` run under the oracle's lock, as its gRPC handlers run create_trial and end_trial, so
    that the chief's own reads and writes of the running trials do not race a worker's call. kt.synchronized is
    documented for Oracle methods only; it locks on the first argument, which here is the oracle."""
    return kt.synchronized(function)


def running_trials(oracle: kt.Oracle) -> dict[str, kt.engine.trial.Trial]:
    """The trials running now, by the tuner id of the worker that runs each (Oracle.ongoing_trials); end_trial
    removes a trial from it."""
    return oracle.ongoing_trials


def forget_waiting_workers(oracle: kt.Oracle) -> None:
    """Forget the workers that asked for a trial and were never heard of again (Oracle.tuner_ids), which would
    otherwise keep the chief waiting (chief_may_stop)."""
    oracle.tuner_ids.clear()


# Keras' trainer.


def loss_tracker(model: keras.Model) -> keras.metrics.Mean:
    """The mean behind a compiled model's `loss` log (Trainer._loss_tracker): every train and test step adds the
    batch's loss to it weighted by the batch's row count, and Keras offers no public hook for that weight, which
    hypermodel.count_weighted_rows_only corrects for a batch's padding rows."""
    return model._loss_tracker


def start_fit_at(model: keras.Model, epoch: int) -> None:
    """Make the fit() that is starting count its epochs from `epoch` (Trainer._initial_epoch, read after
    on_train_begin), as keras.callbacks.BackupAndRestore does: a resumed retrain goes on where it stopped."""
    model._initial_epoch = epoch


# TensorFlow's gradient registry.

CUSTOM_GRADIENT_PREFIX = "CustomGradient-"  # how tf.custom_gradient names what it registers


def _gradient_registry() -> dict[str, Any]:
    """TensorFlow's process-wide registry of gradient functions by op type name (ops._gradient_registry._registry);
    empty where there is none (the other backends, or a TensorFlow that moved it)."""
    if keras.backend.backend() != "tensorflow":
        return {}
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else {}


def custom_gradient_entries() -> list[str]:
    """The gradient functions tf.custom_gradient has registered so far, one per traced call, never removed: each
    holds its traced graph, and with it the variables of the model that traced it (tuning.MemoryRelease)."""
    return [name for name in _gradient_registry() if name.startswith(CUSTOM_GRADIENT_PREFIX)]


def forget_custom_gradients(keep: set[str]) -> int:
    """Drop tf.custom_gradient's registrations other than `keep`, so that their graphs can be freed; how many."""
    registry = _gradient_registry()
    stale = [name for name in custom_gradient_entries() if name not in keep]
    for name in stale:
        registry.pop(name, None)
    return len(stale)
