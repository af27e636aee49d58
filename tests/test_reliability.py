"""Reliability: a killed or interrupted search resumes, failures are recorded, nothing unsafe loads. (That a config
and seed repeat their trial sequence: test_search.py, on an interrupted search against the tiny search.)"""

from __future__ import annotations

import ast
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pandas as pd
import pytest
from conftest import TINY_DATA, TINY_ONE_EPOCH, best_point_only

import runs
import search
from config import load
from hypermodel import BASELINE, ChestXRayHyperModel, baseline_hyperparameters, without_augmentation
from pipeline import tuning
from reporting import figures

pytestmark = pytest.mark.e2e  # every test here trains, or runs a command that does

REPO = Path(search.__file__).resolve().parent
RANDOM = ["--tuner", "random", "--epochs", "1"]


def trial_states(tuner_dir: Path) -> dict[str, dict]:
    """Keras Tuner's own record of each trial, as written so far (a file being written is skipped)."""
    states = {}
    for path in tuner_dir.glob("trial_*/trial.json"):
        try:
            state = json.loads(path.read_text())
        except ValueError:
            continue
        states[state["trial_id"]] = state
    return states


def stop_mid_trial(process: subprocess.Popen, tuner_dir: Path, completed: int, sig: signal.Signals) -> dict:
    """Send `sig` once `completed` trials have finished and the oracle has saved the next as running."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        states = trial_states(tuner_dir)
        done = [tid for tid, state in states.items() if state["status"] == "COMPLETED"]
        running = {tid for tid, state in states.items() if state["status"] == "RUNNING"}
        try:
            ongoing = set(json.loads((tuner_dir / "oracle.json").read_text())["ongoing_trials"].values())
        except (OSError, ValueError):
            ongoing = set()
        # The oracle writes a finished trial's file before oracle.json, so a trial listed as ongoing
        # may already be complete: wait until the ongoing trial's own file says it is running.
        if len(done) >= completed and ongoing and ongoing <= running:
            process.send_signal(sig)
            process.wait(timeout=120)
            return states
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"the search never reached {completed} finished trials (exit {process.wait()})")


def test_killed_then_interrupted_search_resumes_to_its_full_count(tmp_path, monkeypatch):
    # Three processes: SIGKILL during trial 1, Ctrl-C (SIGINT) during trial 2, then a run to the end (in this one,
    # whose TensorFlow is loaded already). The best point alone is retrained (best_point_only): the finalists'
    # retrains show nothing more here.
    flags = [*TINY_ONE_EPOCH, *best_point_only(tmp_path), *RANDOM, "--max-trials", "3", "--epochs", "2"]
    command = [sys.executable, str(REPO / "search.py"), *flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    tuner_dir = tmp_path / "reports" / "synthetic-best_point-search-random-48px-seed7" / "tuner" / "search"

    errors: list[Path] = []

    def start() -> subprocess.Popen:
        # Output goes to files: an unread pipe would fill up and stall the search.
        errors.append(tmp_path / f"run{len(errors)}.err")
        with open(errors[-1].with_suffix(".out"), "w") as out, errors[-1].open("w") as err:
            return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=err)

    killed = start()
    stop_mid_trial(killed, tuner_dir, completed=1, sig=signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    after_kill = trial_states(tuner_dir)
    finished = {tid: state for tid, state in after_kill.items() if state["status"] == "COMPLETED"}
    assert "0" in finished and any(state["status"] == "RUNNING" for state in after_kill.values())

    interrupted = start()
    stop_mid_trial(interrupted, tuner_dir, completed=len(finished) + 1, sig=signal.SIGINT)
    err = errors[-1].read_text()
    assert interrupted.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    after_interrupt = trial_states(tuner_dir)

    monkeypatch.chdir(tmp_path)
    assert search.main(flags) == 0
    run_dir = tuner_dir.parents[1]
    assert (run_dir / "report.md").exists()
    trials = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    assert list(trials["trial_id"]) == ["0", "1", "2"] and (trials["status"] == "COMPLETED").all()
    run = json.loads((run_dir / "metrics.json").read_text())["run"]
    assert run["processes"] == 3  # its clock went on over the kill and the Ctrl-C
    # Every trial recorded before a stop keeps its id and point (a cut-off one is run again at the same
    # point), and every finished one its score.
    rows = trials.set_index("trial_id")
    for states in (after_kill, after_interrupt):
        for tid, state in states.items():
            point = {name: value for name, value in state["hyperparameters"]["values"].items() if name in BASELINE}
            assert {name: rows.loc[tid, name] for name in point} == pytest.approx(point)
            if state["status"] == "COMPLETED":
                assert rows.loc[tid, "objective"] == pytest.approx(state["score"])


def test_a_retrain_killed_half_way_goes_on_from_its_last_finished_epoch(tmp_path, monkeypatch, capsys):
    epochs = 8
    flags = [*TINY_DATA, "--baseline", "--final-epochs", str(epochs), "--run-name", "retrain"]
    command = [sys.executable, str(REPO / "search.py"), *flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run_dir = tmp_path / "reports" / "retrain"
    state_file = run_dir / runs.RETRAIN_BACKUP / "finalist-baseline" / "state.json"  # its one finalist
    with open(tmp_path / "killed.out", "w") as out:
        killed = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while killed.poll() is None and time.monotonic() < deadline:
        if state_file.exists() and json.loads(state_file.read_text())["epoch"] >= 3:
            killed.kill()
        time.sleep(0.02)
    assert killed.wait() == -signal.SIGKILL, (tmp_path / "killed.out").read_text()
    before = json.loads(state_file.read_text())
    assert 3 <= before["epoch"] < epochs
    killed_clock = json.loads((run_dir / runs.CLOCK_FILE).read_text())

    monkeypatch.chdir(tmp_path)  # resumed in this process, whose TensorFlow is loaded already
    assert search.main(flags) == 0
    assert f"Resuming the retrain after epoch {before['epoch']}" in capsys.readouterr().out
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == list(range(1, epochs + 1))
    written = pd.DataFrame(before["rows"])
    pd.testing.assert_frame_equal(history.iloc[: len(written)][written.columns], written, check_dtype=False)
    # The kept epoch is chosen over every epoch, those before the kill included.
    kept = json.loads((run_dir / "metrics.json").read_text())["run"]["best_epoch"]
    assert history["val_auc"].iloc[kept - 1] == history["val_auc"].max()
    assert not (run_dir / runs.RETRAIN_BACKUP).exists()  # reported: nothing left to resume
    # The run's time adds up both processes, and its report says so.
    run = json.loads((run_dir / "metrics.json").read_text())["run"]
    assert run["processes"] == 2 and run["wall_seconds"]["data"] > killed_clock["phases"]["data"]
    assert run["wall_seconds"]["total"] > killed_clock["total"]
    assert "(over 2 processes: the run was resumed)" in (run_dir / "report.md").read_text()


def test_tuner_state_is_replaced_whole_so_a_write_cut_short_leaves_the_old_file(tmp_path, monkeypatch):
    defaults = load()
    tuner = tuning.build_tuner(
        ChestXRayHyperModel(48, 3, defaults.search_space.as_dict(), defaults.augmentation.as_dict()),
        kind="random",
        objective="val_auc",
        max_trials=2,
        epochs=1,
        hyperband_factor=3,
        seed=1,
        baseline_values=BASELINE,
        directory=tmp_path,
        overwrite=True,
    )
    tuner.save()
    saved = {path: path.read_text() for path in tmp_path.rglob("*.json")}
    assert {path.name for path in saved} == {"oracle.json", "tuner0.json"}
    # The state cannot be encoded: the write fails, and the file on disk must be the old one.
    monkeypatch.setattr(type(tuner.oracle), "get_state", lambda self: {"start": 1, "broken": object()})
    with pytest.raises(TypeError):
        tuner.oracle.save()
    assert {path: path.read_text() for path in tmp_path.rglob("*.json")} == saved
    assert not list(tmp_path.rglob("*.partial*"))


def test_nan_loss_and_build_errors_fail_their_trial_and_the_search_goes_on(workdir, monkeypatch):
    build = ChestXRayHyperModel.build
    points = []

    def failing_build(self, hp):
        model = build(self, hp)
        if hp.values["learning_rate"] == BASELINE["learning_rate"]:
            return model
        if hp.values["learning_rate"] not in points:
            points.append(hp.values["learning_rate"])
        if points.index(hp.values["learning_rate"]) == 0:
            raise ValueError("cannot build this point")
        # Any other point trains on a loss that is NaN from the first batch.
        model.compile(
            optimizer=model.optimizer,
            loss=lambda y_true, y_pred: keras.ops.mean(y_pred) * float("nan"),
            metrics=["accuracy", keras.metrics.AUC(name="auc", multi_label=True, num_labels=2)],
        )
        return model

    monkeypatch.setattr(ChestXRayHyperModel, "build", failing_build)
    assert search.main([*TINY_ONE_EPOCH, *RANDOM, "--max-trials", "3"]) == 0
    run_dir = workdir / "reports" / "synthetic-search-random-48px-seed7"
    trials = pd.read_csv(run_dir / "trials.csv", keep_default_na=False)
    assert list(trials["status"]) == ["COMPLETED", "FAILED", "FAILED"]
    assert trials["error"][1] == "ValueError: cannot build this point"
    assert trials["error"][2].startswith("RuntimeError: NaN or Inf loss encountered")
    assert trials["objective"][1:].eq("").all()  # no junk score for a NaN trial
    report_text = (run_dir / "report.md").read_text()
    assert "cannot build this point" in report_text and "NaN or Inf loss" in report_text


def test_a_report_that_cannot_be_written_keeps_the_trials_and_resumes(workdir, monkeypatch, capsys):
    flags = [*TINY_ONE_EPOCH, *best_point_only(workdir), *RANDOM, "--max-trials", "2"]
    save = figures.save_figure

    def disk_full(path, figure):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(figures, "save_figure", disk_full)
    assert search.main(flags) == 2
    err = capsys.readouterr().err.strip()
    run_dir = workdir / "reports" / "synthetic-best_point-search-random-48px-seed7"
    assert err == (
        f"error: cannot write the report in {run_dir.relative_to(workdir)} (No space left on device): free space "
        "or fix permissions there and run the same command again (finished trials are kept)"
    )
    assert not (run_dir / "report.md").exists()
    scores = {tid: state["score"] for tid, state in trial_states(run_dir / "tuner" / "search").items()}
    assert len(scores) == 2

    monkeypatch.setattr(figures, "save_figure", save)
    assert search.main(flags) == 0
    trials = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    assert dict(zip(trials["trial_id"], trials["objective"])) == pytest.approx(scores)
    assert (run_dir / "report.md").exists()


def test_bad_images_stop_the_run_or_are_left_out_and_reported(workdir, synthetic_root, capsys):
    import shutil

    root = Path(shutil.copytree(synthetic_root, workdir / "chest_xray"))
    bad = [root / "train" / "NORMAL" / "IM-9999-0001.jpeg", root / "test" / "PNEUMONIA" / "person999_virus_1.jpeg"]
    bad[0].write_bytes(b"")
    bad[1].write_text("not a JPEG")
    flags = ["--data-dir", str(root), "--image-size", "48", "--final-epochs", "1", "--baseline"]

    assert search.main(flags) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "2 file(s) could not be decoded" in err and "--skip-bad-images" in err
    assert all(str(path) in err for path in bad)
    assert not (workdir / "reports").exists()

    assert search.main([*flags, "--skip-bad-images"]) == 0
    run_dir = workdir / "reports" / "baseline-48px-seed42"
    skipped = pd.read_csv(run_dir / "skipped_images.csv")
    assert sorted(skipped["file"]) == sorted(map(str, bad))
    assert set(skipped["split"]) == {"test", "train"} or set(skipped["split"]) == {"test", "validation"}
    report_text = (run_dir / "report.md").read_text()
    assert "## Images left out" in report_text and all(str(path) in report_text for path in bad)
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert not set(predictions["file"]) & set(map(str, bad))
    assert len(predictions[predictions["split"] == "test"]) == 32  # the 33 test files less the bad one


def test_a_depth_that_does_not_fit_the_image_exits_2(workdir, capsys):
    # Too small for the baseline's depth is tested in test_search; here the configured minimum depth.
    (workdir / "deep.yaml").write_text("search_space: {conv_blocks: {min: 5, max: 5}}\n")
    assert search.main([*TINY_ONE_EPOCH, "--config", "deep.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: search_space.conv_blocks.min 5 does not fit image_size 48: at most 4 blocks fit"
    assert not (workdir / "reports").exists()


def test_saved_model_loads_in_keras_safe_mode(tmp_path):
    defaults = load()
    hypermodel = ChestXRayHyperModel(48, 3, defaults.search_space.as_dict(), defaults.augmentation.as_dict())
    model = hypermodel.build(baseline_hyperparameters())
    without_augmentation(model).save(tmp_path / "model.keras")  # what search.py saves
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    images = keras.random.uniform((2, 48, 48, 3), 0, 255, seed=1)
    assert keras.ops.all(keras.ops.isclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0)))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func), {keyword.arg: keyword.value for keyword in node.keywords}


def test_nothing_loads_unsafely():
    """YAML only through safe_load, models only in Keras safe mode, no pickle, eval or shell anywhere."""
    sources = project_sources()
    assert len(sources) >= 10 and REPO / "search.py" in sources
    problems = []
    for path in sources:
        tree = ast.parse(path.read_text(), str(path))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        unsafe = imported & {"pickle", "dill", "joblib", "shelve", "marshal"}
        problems += [f"{path.name} imports {name}" for name in sorted(unsafe)]
        for node, name, keywords in _calls(tree):
            where = f"{path.name}:{node.lineno} {name}"
            if name.startswith("yaml.") and name.split(".")[-1] in {"load", "load_all", "unsafe_load", "full_load"}:
                problems.append(where)
            if name.endswith("load_model") and not (
                isinstance(keywords.get("safe_mode"), ast.Constant) and keywords["safe_mode"].value is True
            ):
                problems.append(f"{where} without safe_mode=True")
            if name in {"eval", "exec"} or (
                isinstance(keywords.get("allow_pickle"), ast.Constant) and keywords["allow_pickle"].value
            ):
                problems.append(where)
            if isinstance(keywords.get("shell"), ast.Constant) and keywords["shell"].value:
                problems.append(f"{where} with shell=True")
    assert problems == []


def project_sources() -> list[Path]:
    """The project's own .py files, as git lists them: never a virtual environment or data inside the clone."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode == 0:
        paths = [REPO / name for name in listed.stdout.splitlines()]
    else:  # not a git checkout (an unpacked archive)
        paths = list(REPO.rglob("*.py"))
    outside = {"data", "reports", ".git", ".venv", "venv", "env", "site-packages"}
    return [path for path in paths if path.is_file() and not outside & set(path.relative_to(REPO).parts)]
