"""Distributed search: a chief and workers as real processes on 127.0.0.1, the config, MirroredStrategy on CPU.
(A chief and a worker on JAX: the JAX run of tests/test_backends.py.)"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import BEST_POINT_ONLY, Cluster, free_port, trials_run

import search
from config import Distributed
from runtime import distributed

pytestmark = pytest.mark.e2e  # every test here trains, or runs a command that does


@pytest.fixture
def cluster(tmp_path, synthetic_root):
    clusters = []

    def make(*flags: str) -> Cluster:
        clusters.append(Cluster(tmp_path, synthetic_root, *flags))
        return clusters[-1]

    yield make
    for started in clusters:
        started.stop_all()


def test_two_workers_share_the_trials_a_killed_one_fails_its_trial_and_only_the_chief_reports(cluster, tmp_path):
    # One cluster for both claims (each process start costs seconds of imports): the trials go to both workers,
    # each exactly once, and the one killed mid-trial leaves its trial failed and the rest to the other.
    (tmp_path / "short_wait.yaml").write_text(f"{BEST_POINT_ONLY}distributed:\n  running_trial_timeout: 2\n")
    run = cluster("--max-trials", "3", "--config", "short_wait.yaml")
    run_dir = Path("reports/short_wait-search-random-48px-seed7")  # a preset's runs carry its name
    run.start("worker-a", "--role", "worker", "--worker-id", "a")
    run.start("worker-b", "--role", "worker", "--worker-id", "b")
    run.start("chief", "--role", "chief")

    deadline = time.monotonic() + 180
    while "== Trial" not in run.log("worker-b"):  # b holds a trial: kill it mid-trial
        assert time.monotonic() < deadline and run.processes["worker-b"].poll() is None, run.log("worker-b")
        time.sleep(0.1)
    run.processes["worker-b"].kill()

    assert run.wait("worker-a") == 0
    assert run.wait("chief") == 0, run.log("chief")
    trials = pd.read_csv(tmp_path / run_dir / "trials.csv", dtype={"trial_id": str}, keep_default_na=False)
    assert len(trials) == 3
    lost = trials[trials["status"] == "FAILED"]
    assert len(lost) == 1 and "worker b sent no result within 2 s" in lost["error"].iloc[0]
    assert sorted(trials_run(run.log("worker-a"))) == sorted(trials[trials["status"] == "COMPLETED"]["trial_id"])
    assert "restart it with --worker-id b" in run.log("chief")
    # One run folder, reported by the chief alone; the workers wrote checkpoints only.
    assert sorted(path.name for path in (tmp_path / "reports").iterdir()) == sorted([run_dir.name, "index.md"])
    assert (tmp_path / run_dir / "report.md").exists() and "Report:" in run.log("chief")
    assert not any("Report:" in run.log(name) for name in ("worker-a", "worker-b"))


def test_mirrored_on_a_cpu_only_machine_trains_on_one_device_with_a_note(capsys, monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])
    distributed.choose_strategy.cache_clear()
    try:
        assert distributed.choose_strategy("mirrored") is None
        assert "distribution: mirrored found no GPU; each trial trains on one device" in capsys.readouterr().out
        assert isinstance(distributed.strategy_scope("mirrored"), contextlib.nullcontext)
        assert distributed.choose_strategy("none") is None and capsys.readouterr().out == ""
    finally:
        distributed.choose_strategy.cache_clear()


def test_roles_set_keras_tuners_variables_and_standalone_clears_them(monkeypatch):
    from keras_tuner.src.distribute import utils

    for name in distributed.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    settings = Distributed(
        role="worker", oracle_address="10.0.0.5:8000", worker_id="gpu-box-1", running_trial_timeout=None
    )
    distributed.configure(settings)
    assert (os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]) == ("10.0.0.5", "8000")
    assert utils.has_chief_oracle() and not utils.is_chief_oracle()
    distributed.configure(dataclasses.replace(settings, role="chief"))
    assert utils.is_chief_oracle()
    distributed.configure(dataclasses.replace(settings, role="standalone"))
    assert not utils.has_chief_oracle() and not set(distributed.ENVIRONMENT) & set(os.environ)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--role", "worker", "--worker-id", "a"], "distributed.oracle_address must be set for role worker"),
        (["--role", "worker", "--oracle-address", "127.0.0.1:8000"], "pass --worker-id NAME"),
        (
            ["--role", "chief", "--oracle-address", "8000"],
            "--oracle-address: distributed.oracle_address must be HOST:PORT",
        ),
        (["--role", "worker", "--oracle-address", "h:1", "--worker-id", "chief2"], "must not contain 'chief'"),
        (["--baseline", "--role", "chief", "--oracle-address", "h:1"], "--baseline runs no search"),
    ],
)
def test_bad_distributed_settings_exit_2_with_one_sentence(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    assert search.main(["--synthetic", "--tuner", "random", "--max-trials", "2", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "reports").exists()


def test_a_chief_that_cannot_listen_and_a_worker_without_chief_stop_with_one_sentence(tmp_path, monkeypatch, capsys):
    from keras_tuner.src.distribute import oracle_client

    monkeypatch.chdir(tmp_path)
    for name in distributed.ENVIRONMENT:  # restored after the test: the roles below set them
        monkeypatch.setenv(name, "")
    monkeypatch.setattr(oracle_client, "TIMEOUT", 1)  # Keras Tuner's worker waits an hour for its chief
    tiny = ["--synthetic", "--image-size", "48", "--tuner", "random", "--max-trials", "2", "--epochs", "1"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        assert search.main([*tiny, "--role", "chief", "--oracle-address", address]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err
        == f"error: the chief cannot listen on {address} (port in use or not an address of this machine): pass another --oracle-address"
    )

    nobody = f"127.0.0.1:{free_port()}"
    assert search.main([*tiny, "--role", "worker", "--oracle-address", nobody, "--worker-id", "w"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: this worker lost the chief at {nobody} (DEADLINE_EXCEEDED)")
