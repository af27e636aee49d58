"""Choosing the Keras backend, and the JAX smoke test: a tiny distributed search on JAX (a worker trains the
trials, a chief retrains the finalists and reports), predict.py and Grad-CAM on JAX in their own processes, with a
JAX-written model that TensorFlow loads and predicts alike."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import Cluster, trials_run

import predict
from config import ConfigError
from runtime import backends

pytestmark = pytest.mark.e2e  # every test here trains, or runs a command that does

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "reporting", "runtime")
# float32, so that TensorFlow can reproduce its probabilities to 1e-5 (bfloat16 rounds differently per backend).
JAX_SEARCH = ["--max-trials", "2", "--precision", "float32"]
# The JAX run is made once, by whichever xdist worker takes this group (pyproject: --dist loadgroup).
JAX = pytest.mark.xdist_group("jax")
JAX_RUN = "search-random-48px-seed7"


def test_the_flag_beats_keras_backend_which_beats_the_config(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backends.choose("torch", "tensorflow") == ("torch", "--backend")
    assert backends.choose(None, "tensorflow") == ("jax", "KERAS_BACKEND")
    monkeypatch.delenv("KERAS_BACKEND")
    assert backends.choose(None, "tensorflow") == ("tensorflow", "config")


def test_an_unknown_keras_backend_is_named(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "numpy")
    with pytest.raises(ConfigError, match="KERAS_BACKEND is 'numpy'.*one of tensorflow, jax, torch"):
        backends.choose(None, "tensorflow")


def test_keras_cannot_switch_backend_inside_a_process():
    import keras

    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    with pytest.raises(ConfigError, match=f"already loaded with the {keras.backend.backend()} backend.*new process"):
        backends.activate(other)


def test_a_backend_that_is_not_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ConfigError, match="needs the jax package, which is not installed: pip install -r requirements-jax"
    ):
        backends.activate("jax")


def test_only_the_cross_model_retracing_warning_is_dropped():
    retracing = logging.LogRecord("tensorflow", logging.WARNING, "", 0, "5 out of the last 13 calls to <f> "
                                  "triggered tf.function retracing. Tracing is expensive", None, None)  # fmt: skip
    other = logging.LogRecord("tensorflow", logging.WARNING, "", 0, "something else went wrong", None, None)
    keep = backends._CrossModelRetracing()
    assert not keep.filter(retracing)
    assert keep.filter(other)


def test_output_of_c_code_to_stderr_is_caught_and_stderr_restored(capfd):
    with backends._captured_stderr():
        os.write(2, b"I0000 a C++ log line\n")
    os.write(2, b"after\n")
    captured_text = capfd.readouterr().err
    assert "a C++ log line" not in captured_text and "after" in captured_text


def _run(arguments: list[str], workdir: Path, **environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **environment}
    return subprocess.run(
        [sys.executable, *arguments], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory, synthetic_root) -> Path:
    """A tiny distributed search on JAX: a worker (backend from KERAS_BACKEND) trains the trials, the chief (from
    --backend) retrains the finalists and writes the report. One run for the JAX smoke test and the JAX cluster,
    since each JAX process pays its compilation."""
    pytest.importorskip("jax", reason="requirements-jax.txt (part of requirements-dev.txt) installs it")
    workdir = tmp_path_factory.mktemp("jax_run")
    cluster = Cluster(workdir, synthetic_root, *JAX_SEARCH)
    try:
        cluster.start("worker", "--role", "worker", "--worker-id", "a", KERAS_BACKEND="jax")
        cluster.start("chief", "--role", "chief", "--backend", "jax")
        assert [cluster.wait(name, timeout=400) for name in ("worker", "chief")] == [0, 0], cluster.log("chief")[-3000:]
    finally:
        cluster.stop_all()
    return workdir / "reports" / JAX_RUN


def _files(run_dir: Path) -> set[str]:
    return {path.name for path in run_dir.iterdir()}


@JAX
def test_a_jax_run_writes_the_same_report_files_as_tensorflow(jax_run, tiny_runs):
    assert _files(jax_run) == _files(tiny_runs.search)
    run = json.loads((jax_run / "metrics.json").read_text())["run"]
    assert run["backend"] == "jax" and "jax" in run["versions"] and "tensorflow" not in run["versions"]
    assert yaml.safe_load((jax_run / "config.yaml").read_text())["backend"] == "jax"
    assert "| backend | Keras on jax |" in (jax_run / "report.md").read_text()
    assert "on Keras' jax backend" in (jax_run / "model_card.md").read_text()
    assert (jax_run / "gradcam.png").stat().st_size > 0


@JAX
def test_a_worker_on_jax_runs_the_trials_and_a_chief_on_jax_retrains_and_reports(jax_run):
    worker, chief = ((jax_run.parents[1] / f"{name}.log").read_text() for name in ("worker", "chief"))
    assert "Backend: jax (KERAS_BACKEND)" in worker and "Backend: jax (--backend)" in chief
    trials = pd.read_csv(jax_run / "trials.csv", dtype={"trial_id": str})
    assert trials_run(worker) == list(trials["trial_id"]) == ["0", "1"]
    assert "Report:" in chief and "Report:" not in worker


@JAX
def test_jax_compiles_each_step_function_once_a_model_and_caches_programs_beside_the_runs(jax_run):
    metrics = json.loads((jax_run / "metrics.json").read_text())
    retrains = len(metrics["finalists"])
    compiled = metrics["run"]["compilation"]  # the chief's: the worker compiled the trials' programs
    steps = compiled["step_functions"]
    # Padded last batches: one train and one test program per model, not one more for each short batch.
    assert steps["train_step"] == steps["test_step"] == retrains == 2
    assert compiled["programs"] > sum(steps.values())  # the initializers' and other small ones
    assert any((jax_run.parent / ".compilation-cache").iterdir())
    # The retrains load from the cache on disk the programs the worker compiled for the same points.
    assert compiled["cache_hits"] > 0


@JAX
def test_a_model_written_under_jax_predicts_the_same_under_tensorflow(jax_run, tmp_path, monkeypatch):
    import keras

    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # predict.py would otherwise use the run's, JAX
    assert keras.backend.backend() == "tensorflow"
    run_dir = jax_run
    test_folder = Path(yaml.safe_load((run_dir / "config.yaml").read_text())["data_dir"]) / "test"
    csv = tmp_path / "tensorflow.csv"
    assert predict.main([str(run_dir.parents[1] / test_folder), "--run", str(run_dir), "--csv", str(csv)]) == 0
    ours = pd.read_csv(csv)
    theirs = pd.read_csv(run_dir / "predictions.csv").query("split == 'test'")
    ours["name"], theirs["name"] = ours["file"].map(lambda f: Path(f).name), theirs["file"].map(lambda f: Path(f).name)
    merged = ours.merge(theirs, on="name")
    assert len(merged) == len(theirs) > 0
    assert np.abs(merged["p_pneumonia_x"] - merged["p_pneumonia_y"]).max() < 1e-5


@JAX
def test_predict_and_grad_cam_run_on_jax(jax_run, tmp_path):
    run_dir = jax_run
    test_folder = Path(yaml.safe_load((run_dir / "config.yaml").read_text())["data_dir"]) / "test" / "PNEUMONIA"
    environment = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    done = subprocess.run(  # no KERAS_BACKEND: predict.py takes the run's own backend
        [sys.executable, str(REPO / "predict.py"), str(test_folder), "--run", str(run_dir), "--explain", str(tmp_path / "maps")],
        cwd=run_dir.parents[1], env={**environment, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "maps").iterdir())) == len(list(test_folder.iterdir()))
    assert "tensorflow" not in done.stderr.lower()


def test_no_module_imports_tensorflow_on_jax(tmp_path):
    pytest.importorskip("jax", reason="requirements-jax.txt (part of requirements-dev.txt) installs it")
    modules = sorted(path.stem for path in REPO.glob("*.py"))
    modules += sorted(f"{path.parent.name}.{path.stem}" for path in REPO.glob("*/*.py") if path.parent.name in PACKAGES)
    code = (
        f"import sys\nfor name in {modules!r}:\n    __import__(name)\n"
        "from runtime import backends, precision\nbackends.gpus(); precision.resolve('auto')\n"
        "print('loaded:', 'tensorflow' in sys.modules)"
    )
    done = _run(["-c", code], tmp_path, KERAS_BACKEND="jax")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("loaded: False")
