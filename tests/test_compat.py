"""Contract tests of runtime/compat.py: every private name of Keras Tuner, Keras and TensorFlow the project leans on
still exists in the pinned versions (requirements.txt) and still does what compat relies on. A failure names the
pin that moved, the private name, the compat function that wraps it and what to check before bumping the pin.
No test trains beyond a few steps of a two-layer model."""

from __future__ import annotations

import ast
import inspect
import json
import re
import threading
from concurrent import futures
from importlib import metadata
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import pytest

from pipeline import tuning
from runtime import compat

REPO = Path(__file__).resolve().parents[1]
PINS = dict(re.findall(r"^([\w-]+)==(\S+)", (REPO / "requirements.txt").read_text(), re.MULTILINE))
DISTRIBUTIONS = {"keras_tuner": "keras-tuner", "keras": "keras", "tensorflow": "tensorflow"}
WORKER = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "1", "KERASTUNER_TUNER_ID": "worker-1"}
BASELINE = {"units": 7}

# compat's name -> (the package, the private name it wraps, what leans on it: to check before bumping the pin)
CONTRACTS = {
    "HOOKS": ("keras_tuner", "a private hook tuning.py overrides", "tuning.BaselineFirst and tuning.WholeFiles"),
    "oracle_file": ("keras_tuner", "Oracle._get_oracle_fname", "tuning.WholeFiles, and that a run resumes"),
    "trial_file": ("keras_tuner", "Oracle._get_trial_dir, or trial.json", "tuning.WholeFiles and eta.py's readers"),
    "tuner_file": ("keras_tuner", "Tuner._get_tuner_fname", "tuning.TrialRecorder.save, and that a run resumes"),
    "is_worker": ("keras_tuner", "Tuner._is_worker", "tuning.TrialRecorder.save on a distributed worker"),
    "checkpoint_file": ("keras_tuner", "Tuner._get_checkpoint_fname", "tuning.CheckpointCleanup"),
    "cap_trials": ("keras_tuner", "Oracle.max_trials, as create_trial reads it", "--max-trials on Hyperband"),
    "hyperband_iteration_trials": (
        "keras_tuner",
        "HyperbandOracle._get_num_brackets, _get_num_rounds or _get_size",
        "the trial header's 'Trial k of N' and tuning.schedule_note",
    ),
    "HyperbandWithOracle": ("keras_tuner", "kt.Hyperband.__init__", "what it does besides building its oracle"),
    "local_oracle": ("keras_tuner", "OracleClient._oracle", "the trial header's plan and ETA on a worker"),
    "stopped_by_failures": (
        "keras_tuner",
        "the message of Oracle._check_consecutive_failures",
        "the one sentence tuning.run_search prints when trial after trial fails",
    ),
    "add_oracle_service": ("keras_tuner", "oracle_chief.OracleServicer or protos", "distributed.serve_oracle"),
    "no_trial_left": ("keras_tuner", "OracleServicer.stop_triggered", "distributed.serve_oracle"),
    "chief_may_stop": ("keras_tuner", "oracle_chief.exit_chief", "distributed.serve_oracle"),
    "running_trials": ("keras_tuner", "Oracle.ongoing_trials", "distributed._give_up_running_trials"),
    "forget_waiting_workers": ("keras_tuner", "Oracle.tuner_ids", "distributed._give_up_running_trials"),
    "with_oracle_lock": ("keras_tuner", "kt.synchronized on a function", "runtime/distributed.py's two locked helpers"),
    "loss_tracker": ("keras", "Trainer._loss_tracker", "hypermodel.count_weighted_rows_only"),
    "start_fit_at": ("keras", "Trainer._initial_epoch", "resume.RetrainBackup, which resumes a killed retrain"),
    "custom_gradient_entries": (
        "tensorflow",
        "ops._gradient_registry._registry, or its CustomGradient- entries",
        "tuning.MemoryRelease, or memory grows trial after trial again (README, Memory)",
    ),
    "forget_custom_gradients": ("tensorflow", "ops._gradient_registry._registry", "tuning.MemoryRelease"),
}


def changed(wrapper: str, found: object = None) -> str:
    """The failure message: which pin moved, what it broke, and where to look before bumping it."""
    package, name, check = CONTRACTS[wrapper]
    distribution = DISTRIBUTIONS[package]
    seen = "" if found is None else f" (found {found})"
    return (
        f"{package} {PINS[distribution]} -> {metadata.version(distribution)}: {name} is gone or changed{seen} "
        f"(compat.py: {wrapper}); check {check} before bumping the pin"
    )


class Tiny(kt.HyperModel):
    """One searched hyperparameter on a two-layer model: a tuner to poke at, in milliseconds."""

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        return tiny_model(hp.Int("units", 1, 1000, default=BASELINE["units"]))


def tiny_model(units: int = 4) -> keras.Model:
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(2, activation="softmax")]
    )
    model.compile("sgd", "categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny_data(rows: int = 8) -> tuple[np.ndarray, np.ndarray]:
    images = np.random.default_rng(0).uniform(size=(rows, 3)).astype("float32")
    return images, keras.utils.to_categorical(np.arange(rows) % 2, 2)


def tiny_tuner(directory: Path, kind: str = "random", max_trials: int | None = 3, overwrite: bool = True) -> kt.Tuner:
    """The project's tuner of `kind` (pipeline/tuning.py) on the tiny model, baseline first."""
    return tuning.build_tuner(
        Tiny(),
        kind=kind,
        objective="val_accuracy",
        max_trials=max_trials,
        epochs=4,
        hyperband_factor=3,
        seed=1,
        baseline_values=BASELINE,
        directory=directory,
        overwrite=overwrite,
    )


def end(oracle: kt.Oracle, trial: kt.engine.trial.Trial, score: float | None) -> None:
    """End a trial as a tuner would: with its score, or failed without one."""
    if score is None:
        trial.status, trial.message = kt.engine.trial.TrialStatus.FAILED, "it failed"
    else:
        oracle.update_trial(trial.trial_id, {"val_accuracy": score})
        trial.status = kt.engine.trial.TrialStatus.COMPLETED
    oracle.end_trial(trial)


def test_every_name_compat_offers_has_a_contract_checked_here():
    offered = {
        name
        for name, value in vars(compat).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == compat.__name__ and name != "Hook"
    }
    assert offered | {"HOOKS"} == set(CONTRACTS), "give each of compat's names a line in CONTRACTS and a test"
    source = Path(__file__).read_text()
    unchecked = [name for name in CONTRACTS if not re.search(rf'changed\(\s*"{name}"', source)]
    assert unchecked == [], f"no test asserts the contract of {unchecked}"


# Keras Tuner's private hooks, which pipeline/tuning.py overrides under their own names.


@pytest.mark.parametrize("hook", compat.HOOKS, ids=lambda hook: hook.name)
def test_each_overridden_private_hook_still_exists_with_its_parameters(hook):
    method = getattr(hook.owner, hook.name, None)
    found = tuple(inspect.signature(method).parameters) if callable(method) else None
    name = f"{hook.owner.__name__}.{hook.name}"
    what = f"{name}({', '.join(found)})" if found is not None else f"no {name}"
    assert found == hook.parameters, changed("HOOKS", f"{what}, not {name}({', '.join(hook.parameters)})")


@pytest.mark.parametrize("kind", ["random", "bayesian", "hyperband"])
def test_every_oracle_still_calls_the_overridden_hooks(tmp_path, monkeypatch, kind):
    written = []
    monkeypatch.setattr(tuning, "write_json_whole", lambda path, state: written.append(Path(path)))
    oracle = tiny_tuner(tmp_path, kind).oracle
    trial = oracle.create_trial("tuner0")

    searched = {name: value for name, value in trial.hyperparameters.values.items() if not name.startswith("tuner/")}
    assert searched == BASELINE, changed("HOOKS", f"a first trial at {searched}: _random_values was not asked")
    assert Path(compat.trial_file(oracle, trial.trial_id)) in written, changed("HOOKS", "_save_trial was not called")


# Keras Tuner's state files and checkpoints.


def test_the_state_files_written_whole_are_those_keras_tuner_reloads(tmp_path):
    tuner = tiny_tuner(tmp_path)
    trial = tuner.oracle.create_trial(tuner.tuner_id)
    end(tuner.oracle, trial, 0.75)
    tuner.save()
    assert Path(compat.oracle_file(tuner.oracle)).is_file(), changed("oracle_file", "no oracle.json")
    assert Path(compat.trial_file(tuner.oracle, trial.trial_id)).is_file(), changed("trial_file", "no trial.json")
    assert Path(compat.tuner_file(tuner)).is_file(), changed("tuner_file", "no tuner file")

    reloaded = tiny_tuner(tmp_path, overwrite=False).oracle.trials.get(trial.trial_id)
    assert reloaded is not None and reloaded.score == 0.75, changed("tuner_file", "the trial was not reloaded")


def test_trial_json_holds_what_eta_reads_without_keras_tuner(tmp_path):
    oracle = tiny_tuner(tmp_path).oracle
    trial = oracle.create_trial("tuner0")
    oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5, "trial_seconds": 12.0, "epochs_run": 3})
    trial.status = kt.engine.trial.TrialStatus.COMPLETED
    oracle.end_trial(trial)
    state = json.loads(Path(compat.trial_file(oracle, trial.trial_id)).read_text())
    try:  # the paths pipeline/eta.py reads
        read = (
            state["status"],
            state["hyperparameters"]["values"]["units"],
            state["metrics"]["metrics"]["trial_seconds"]["observations"][-1]["value"][-1],
        )
    except (KeyError, IndexError, TypeError) as error:
        read = f"no {error}"
    assert read == ("COMPLETED", BASELINE["units"], 12.0), changed("trial_file", read)


def test_a_trials_checkpoint_is_where_keras_tuner_saves_it(tmp_path):
    tuner = tiny_tuner(tmp_path)
    trial = tuner.oracle.create_trial(tuner.tuner_id)
    images, labels = tiny_data()
    tuner.run_trial(trial, images, labels, validation_data=(images, labels), epochs=1, verbose=0)
    saved = sorted(path.name for path in Path(tuner.get_trial_dir(trial.trial_id)).iterdir())
    assert Path(compat.checkpoint_file(tuner, trial.trial_id)).is_file(), changed("checkpoint_file", saved)


def test_is_worker_follows_keras_tuners_distributed_variables(tmp_path, monkeypatch):
    tuner = tiny_tuner(tmp_path)
    roles = {"standalone": compat.is_worker(tuner)}
    for tuner_id in ("chief", "worker-1"):
        for name, value in {**WORKER, "KERASTUNER_TUNER_ID": tuner_id}.items():
            monkeypatch.setenv(name, value)
        roles[tuner_id] = compat.is_worker(tuner)
    assert roles == {"standalone": False, "chief": False, "worker-1": True}, changed("is_worker", roles)


# Keras Tuner's Hyperband.


def test_hyperband_on_an_oracle_is_kt_hyperband_but_for_where_its_oracle_comes_from(tmp_path):
    oracle = kt.oracles.HyperbandOracle(objective="val_accuracy", max_epochs=4)
    ours = compat.HyperbandWithOracle(oracle, hypermodel=Tiny(), directory=tmp_path / "ours", project_name="p")
    theirs = kt.Hyperband(Tiny(), "val_accuracy", max_epochs=4, directory=tmp_path / "theirs", project_name="p")
    assert ours.oracle is oracle
    missing = sorted(set(vars(theirs)) - set(vars(ours)))
    assert missing == [], changed("HyperbandWithOracle", f"kt.Hyperband.__init__ also sets {missing}")


def test_hyperbands_schedule_counts_the_trials_its_oracle_creates(tmp_path):
    oracle = tiny_tuner(tmp_path, "hyperband", max_trials=None).oracle
    created = []
    while len(created) < 100:
        trial = oracle.create_trial("tuner0")
        if trial.status != kt.engine.trial.TrialStatus.RUNNING:
            break
        created.append(trial.trial_id)
        end(oracle, trial, len(created) / 100)
    counted = compat.hyperband_iteration_trials(oracle)
    found = f"{len(created)} trials ran, then {trial.status}; {counted} counted"
    assert (len(created), trial.status) == (counted, "STOPPED"), changed("hyperband_iteration_trials", found)


def test_a_capped_hyperband_oracle_stops_at_max_trials(tmp_path):
    oracle = tiny_tuner(tmp_path, "hyperband", max_trials=2).oracle
    statuses = [oracle.create_trial(f"worker-{index}").status for index in range(3)]
    assert statuses == ["RUNNING", "RUNNING", "STOPPED"], changed("cap_trials", statuses)


def test_keras_tuners_stop_after_failed_trials_is_told_apart(tmp_path):
    oracle = tiny_tuner(tmp_path, max_trials=10).oracle
    stop = None
    try:
        for _ in range(oracle.max_consecutive_failed_trials):
            end(oracle, oracle.create_trial("tuner0"), None)
    except RuntimeError as error:
        stop = error
    assert stop is not None and compat.stopped_by_failures(stop), changed("stopped_by_failures", repr(stop))
    assert not compat.stopped_by_failures(RuntimeError("something else"))


# Keras Tuner's distributed search.


def test_a_workers_oracle_client_keeps_its_local_oracle(tmp_path, monkeypatch):
    for name, value in WORKER.items():
        monkeypatch.setenv(name, value)
    client = tiny_tuner(tmp_path, "hyperband").oracle  # a worker's: it reaches the chief only when asked
    local = compat.local_oracle(client)
    found = type(local).__name__
    assert isinstance(local, tuning.BaselineFirstHyperbandOracle) and local.max_epochs == 4, changed(
        "local_oracle", found
    )
    assert compat.local_oracle(local) is local


def test_the_chief_serves_the_oracle_and_knows_when_no_one_is_left(tmp_path):
    import grpc
    from keras_tuner.src import protos

    oracle = tiny_tuner(tmp_path, max_trials=1).oracle
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    try:
        servicer = compat.add_oracle_service(server, oracle)
        asks = protos.get_service().CreateTrialRequest
        assert not compat.no_trial_left(servicer), changed("no_trial_left", "True before any trial")
        assert compat.chief_may_stop(oracle), changed("chief_may_stop", "False before any trial")

        servicer.CreateTrial(asks(tuner_id="worker-1"), None)  # as a worker's gRPC call does
        running = compat.running_trials(oracle)
        assert list(running) == ["worker-1"], changed("add_oracle_service", f"running {running}")
        assert not compat.chief_may_stop(oracle), changed("chief_may_stop", "True while a trial runs")

        servicer.CreateTrial(asks(tuner_id="worker-2"), None)  # max_trials 1: nothing left for it
        assert compat.no_trial_left(servicer), changed("no_trial_left", "False once a worker was sent away")
        end(oracle, running["worker-1"], None)  # as distributed._give_up_running_trials does
        assert compat.running_trials(oracle) == {}, changed("running_trials", "the ended trial")
        assert not compat.chief_may_stop(oracle), changed("chief_may_stop", "True while worker-1 is awaited")
        compat.forget_waiting_workers(oracle)
        assert compat.chief_may_stop(oracle), changed("forget_waiting_workers", "worker-1 still awaited")
    finally:
        server.stop(grace=None)


def test_with_oracle_lock_holds_the_oracles_lock_and_lets_its_own_calls_in(tmp_path):
    from keras_tuner.src.engine.oracle import LOCKS

    oracle = tiny_tuner(tmp_path).oracle
    seen = {}

    @compat.with_oracle_lock
    def inside(oracle: kt.Oracle) -> None:
        seen["locked"] = LOCKS[oracle].locked()
        seen["may stop"] = compat.chief_may_stop(oracle)  # itself under the lock: it must not deadlock

    caller = threading.Thread(target=inside, args=(oracle,), daemon=True)
    caller.start()
    caller.join(timeout=30)
    found = seen if not caller.is_alive() else "a deadlock"
    assert found == {"locked": True, "may stop": True}, changed("with_oracle_lock", found)
    assert not LOCKS[oracle].locked()


# Keras' trainer.


def test_keras_weights_each_batchs_loss_by_its_rows_in_the_loss_tracker():
    model = tiny_model()
    images, labels = tiny_data(8)
    loss = model.evaluate(images, labels, batch_size=6, verbose=0, return_dict=True)["loss"]  # batches of 6 and 2
    tracker = compat.loss_tracker(model)
    counted = float(tracker.count) if isinstance(tracker, keras.metrics.Mean) else tracker
    assert counted == 8 and np.isclose(float(tracker.result()), loss), changed("loss_tracker", f"{counted} rows")


def test_a_callback_can_make_fit_start_at_a_later_epoch():
    class StartAtTwo(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            compat.start_fit_at(self.model, 2)

    images, labels = tiny_data()
    history = tiny_model().fit(images, labels, epochs=3, verbose=0, callbacks=[StartAtTwo()])
    assert history.epoch == [2], changed("start_fit_at", f"fit ran epochs {history.epoch}")


# TensorFlow's gradient registry.


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the registry is TensorFlow's")
def test_a_fit_registers_custom_gradients_that_can_be_forgotten():
    before = set(compat.custom_gradient_entries())
    images, labels = tiny_data()
    tiny_model().fit(images, labels, validation_data=(images, labels), epochs=1, batch_size=4, verbose=0)

    added = set(compat.custom_gradient_entries()) - before
    assert added, changed("custom_gradient_entries", "none registered by fit()")
    assert compat.forget_custom_gradients(before) == len(added), changed("forget_custom_gradients", "some kept")
    assert set(compat.custom_gradient_entries()) == before, changed("forget_custom_gradients", "others dropped")


# No module but compat touches a private third-party name.

PRIVATE_MODULES = ("keras_tuner.src", "keras.src", "tensorflow.python")


def third_party_private_names(directory: Path) -> set[str]:
    """The private attribute names of the Keras Tuner and Keras classes the project uses, and of their instances (a
    worker's tuner among them, whose oracle is an OracleClient)."""
    classes = [
        *(kt.oracles.HyperbandOracle, kt.oracles.RandomSearchOracle, kt.oracles.BayesianOptimizationOracle),
        *(kt.Hyperband, kt.HyperModel, kt.HyperParameters, kt.engine.trial.Trial),
        *(keras.Model, keras.layers.Layer, keras.callbacks.Callback, keras.optimizers.Optimizer, keras.metrics.Metric),
    ]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in WORKER.items():
            patch.setenv(name, value)
        tuner, model = tiny_tuner(directory, "hyperband"), tiny_model()
    instances = [tuner, tuner.oracle, compat.local_oracle(tuner.oracle), model]
    names = {name for owner in classes for name in dir(owner)} | {name for each in instances for name in vars(each)}
    return {name for name in names if re.match(r"_[a-zA-Z]", name)}


def project_sources() -> list[Path]:
    """The project's modules, tests and bench scripts aside."""
    packages = [path for package in ("pipeline", "reporting", "runtime") for path in (REPO / package).glob("*.py")]
    return sorted(REPO.glob("*.py")) + sorted(packages)


def private_uses(path: Path, private: set[str]) -> list[str]:
    """Where a module touches a private third-party name: an import from a private module, an attribute, a method
    defined over one (the hooks compat.HOOKS lists aside), or a name passed to getattr."""
    allowed = {hook.name for hook in compat.HOOKS}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        modules += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names = [node.attr] if isinstance(node, ast.Attribute) else []
        names += [node.name] if isinstance(node, ast.FunctionDef) else []
        names += [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []
        found += [f"{path.name}:{node.lineno} imports {name}" for name in modules if name.startswith(PRIVATE_MODULES)]
        found += [f"{path.name}:{node.lineno} uses {name}" for name in names if name in private - allowed]
    return found


def test_no_module_but_compat_touches_a_private_third_party_name(tmp_path):
    private = third_party_private_names(tmp_path)
    sources = [path for path in project_sources() if path != REPO / "runtime" / "compat.py"]
    assert len(sources) >= 20 and REPO / "pipeline" / "tuning.py" in sources
    found = [use for path in sources for use in private_uses(path, private)]
    assert found == [], f"private names of Keras Tuner, Keras or TensorFlow outside runtime/compat.py: {found}"
