"""Spread a search over machines with Keras Tuner's chief/worker mode, and a trial over GPUs.

Keras Tuner runs distributed when three environment variables are set before the tuner is
built: the chief serves the oracle over gRPC, and each worker asks it for hyperparameters,
trains, and sends back its metrics. `configure` sets them from the `distributed:` config block,
so users pass `--role`, `--oracle-address` and `--worker-id` instead.

One concern: processes and devices. It imports Keras Tuner, config.py, errors.py and compat.py (Keras Tuner's
gRPC service and the oracle's bookkeeping of running trials).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import keras_tuner as kt

from config import Distributed
from errors import SearchError
from runtime import compat

ENVIRONMENT = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
CHIEF_ID = "chief"  # Keras Tuner treats any tuner id containing "chief" as the chief


def configure(settings: Distributed) -> None:
    """Set (or, standalone, clear) Keras Tuner's variables; call before the tuner is built."""
    if settings.role == "standalone":
        # A variable left exported from another run must not turn this run into a worker.
        for name in ENVIRONMENT:
            os.environ.pop(name, None)
        return
    host, _, port = settings.oracle_address.rpartition(":")
    os.environ["KERASTUNER_ORACLE_IP"] = host
    os.environ["KERASTUNER_ORACLE_PORT"] = port
    os.environ["KERASTUNER_TUNER_ID"] = CHIEF_ID if settings.role == "chief" else settings.worker_id


def serve_oracle(tuner: kt.Tuner, address: str, running_trial_timeout: int | None) -> None:
    """The chief's search: serve the oracle to the workers until every trial has ended.

    Keras Tuner's own `tuner.search()` on the chief does the same, but it waits forever for a
    trial whose worker died, and polls every 20 s. Here the trials still running when the last
    one was handed out get `running_trial_timeout` seconds, and are then recorded as failed.
    """
    import grpc

    oracle = tuner.oracle
    tuner.save()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = compat.add_oracle_service(server, oracle)
    try:
        server.add_insecure_port(address)
    except RuntimeError:
        raise SearchError(
            f"the chief cannot listen on {address} (port in use or not an address of this machine): "
            "pass another --oracle-address"
        ) from None
    server.start()
    print(f"Chief: serving the search on {address}; workers join with --role worker --oracle-address {address}")
    try:
        handed_out = None
        while not (compat.no_trial_left(servicer) and compat.chief_may_stop(oracle)):
            time.sleep(1)
            if not compat.no_trial_left(servicer):
                continue
            if handed_out is None:
                handed_out = time.monotonic()
                _say_who_is_awaited(oracle, running_trial_timeout)
            if running_trial_timeout is not None and time.monotonic() - handed_out > running_trial_timeout:
                _give_up_running_trials(oracle, running_trial_timeout)
    finally:
        server.stop(grace=None)


@contextlib.contextmanager
def chief_connection(address: str | None) -> Iterator[None]:
    """Turn a worker's lost or unreachable chief into one sentence instead of a gRPC traceback."""
    import grpc

    try:
        yield
    except grpc.RpcError as error:
        raise SearchError(
            f"this worker lost the chief at {address} ({error.code().name}): "
            "check that the chief runs and that --oracle-address reaches it, then start the worker again"
        ) from None


@compat.with_oracle_lock
def _say_who_is_awaited(oracle: kt.Oracle, timeout: int | None) -> None:
    for tuner_id, trial in compat.running_trials(oracle).items():
        limit = "as long as it takes" if timeout is None else f"at most {timeout} s"
        print(
            f"Chief: every trial is handed out; waiting {limit} for trial {trial.trial_id} on worker {tuner_id}. "
            f"If that worker died, restart it with --worker-id {tuner_id} to run the trial again.",
            flush=True,
        )


@compat.with_oracle_lock
def _give_up_running_trials(oracle: kt.Oracle, timeout: int) -> None:
    """Record trials whose worker sent nothing in time as failed, so the chief can report."""
    for tuner_id, trial in list(compat.running_trials(oracle).items()):
        trial.status = kt.engine.trial.TrialStatus.FAILED
        trial.message = f"worker {tuner_id} sent no result within {timeout} s after the last trial was handed out"
        print(f"Warning: trial {trial.trial_id} failed: {trial.message}.", flush=True)
        oracle.end_trial(trial)  # also removes it from the running trials
    compat.forget_waiting_workers(oracle)


@functools.cache
def choose_strategy(distribution: str) -> Any:
    """For `mirrored` with two or more GPUs: TensorFlow's MirroredStrategy, returned for Keras Tuner and
    strategy_scope; on JAX, Keras' DataParallel over the GPUs, set for the whole process (None returned)."""
    if distribution == "none":
        return None
    from runtime import backends

    backend, gpus = backends.name(), backends.gpus()
    if len(gpus) < 2:
        found = "no GPU" if not gpus else "one GPU"
        print(f"Note: distribution: mirrored found {found}; each trial trains on one device.")
        return None
    print(f"Distribution: each trial data-parallel over {len(gpus)} GPUs; batch_size is split among them.")
    if backend == "jax":
        import keras

        keras.distribution.set_distribution(keras.distribution.DataParallel(keras.distribution.list_devices("gpu")))
        return None
    if backend != "tensorflow":
        raise SearchError(
            f"distribution: mirrored runs on the tensorflow and jax backends, not {backend}: "
            "pass --backend jax or tensorflow, or set distribution: none"
        )
    import tensorflow as tf

    return tf.distribute.MirroredStrategy([f"/gpu:{index}" for index in range(len(gpus))])


def strategy_scope(distribution: str) -> contextlib.AbstractContextManager:
    """Where a model must be built to train under the chosen strategy."""
    strategy = choose_strategy(distribution)
    return contextlib.nullcontext() if strategy is None else strategy.scope()
