"""End to end on synthetic data: search, baseline, report files, resume, failures, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import (
    RETRAIN_OPTIONS_EPOCHS,
    TINY,
    TINY_BASELINE,
    TINY_ONE_EPOCH,
    TINY_TRIALS,
    best_point_only,
    write_image,
)

import data
import search
from evaluation import choose_threshold
from hypermodel import BASELINE, ChestXRayHyperModel
from pipeline import tuning

REPO = Path(search.__file__).resolve().parent

REPORT_FILES = {
    "config.yaml",
    "trials.csv",
    "best_hyperparameters.yaml",
    "history.csv",
    "metrics.json",
    "predictions.csv",
    "data_summary.csv",
    "learning_curves.png",
    "confusion_matrix.png",
    "roc_curve.png",
    "calibration.png",
    "gradcam.png",
    "search_progress.png",
    "search_hyperparameters.png",
    "model.keras",
    "model_card.md",
    "report.md",
}
METRIC_KEYS = {
    "accuracy",
    "roc_auc",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "threshold",
    "confusion_matrix",
    "n_images",
}


def run(*flags: str) -> int:
    return search.main([*TINY, *flags])


def run_search_only(workdir: Path, *flags: str) -> int:
    """A run for a check of the search's own trials: the best point alone retrained, for one epoch."""
    return search.main([*TINY_ONE_EPOCH, *best_point_only(workdir), *flags])


def only_run(reports: Path) -> Path:
    (folder,) = [path for path in reports.iterdir() if path.is_dir()]
    return folder


def test_tiny_search_writes_every_report_file(tiny_runs):
    run_dir = tiny_runs.search
    assert REPORT_FILES <= {path.name for path in run_dir.iterdir()}
    for png in run_dir.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000

    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 3 and (trials["status"] == "COMPLETED").all()
    assert {"trial_id", "status", "objective", "epochs_run", "seconds", *BASELINE} <= set(trials.columns)
    first = trials.iloc[0]
    assert {name: first[name] for name in BASELINE} == pytest.approx(BASELINE)  # baseline is trial 0
    assert (trials["epochs_run"] == 1).all() and (trials["seconds"] > 0).all()
    assert_tuner_keeps_no_weights(run_dir, trials=3)
    assert (trials["objective"] >= 0).all()  # the default objective is the validation log loss

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split, count in (("validation", None), ("test", 32)):
        assert METRIC_KEYS <= set(metrics[split])
        assert 0 <= metrics[split]["accuracy"] <= 1
        assert sum(map(sum, metrics[split]["confusion_matrix"])) == metrics[split]["n_images"]
        assert count is None or metrics[split]["n_images"] == count
    assert metrics["validation"]["threshold"] == metrics["test"]["threshold"]

    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2] and {"loss", "val_loss", "val_auc"} <= set(history.columns)
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert set(predictions["split"]) == {"validation", "test"}
    assert predictions["p_pneumonia"].between(0, 1).all()

    best = yaml.safe_load((run_dir / "best_hyperparameters.yaml").read_text())
    assert set(best) >= {"conv_blocks", "dropout", "learning_rate"}
    # One trial's point, with the per-layer values of its own layers only (units_2 where it has three dense layers).
    layers = {"filters": best["conv_blocks"], "units": best["dense_layers"]}
    per_layer = [name for name in best if re.fullmatch(r"(filters|units)_\d+", name)]
    assert sorted(per_layer) == sorted(f"{kind}_{i}" for kind, count in layers.items() for i in range(count))
    assert any(all(row[name] == value for name, value in best.items()) for _, row in trials.iterrows())
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["max_trials"] == 3

    report = (run_dir / "report.md").read_text()
    test = metrics["test"]
    assert f"accuracy {test['accuracy']:.3f}" in report and f"ROC AUC {test['roc_auc']:.3f}" in report
    assert "92.95%" not in report  # the notebook measured the real test images, not generated ones
    for png in ("learning_curves.png", "confusion_matrix.png", "roc_curve.png", "search_progress.png"):
        assert f"]({png})" in report
    assert "Trial 0 is the baseline point" in report


def test_test_metrics_carry_patient_bootstrap_intervals_and_types(tiny_runs):
    import data
    import evaluation

    run_dir = tiny_runs.search
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    rows = pd.read_csv(run_dir / "predictions.csv").query("split == 'test'")
    files = [Path(file) for file in rows["file"]]
    patients = {data.patient_id(file) for file in files}
    assert test["bootstrap"] == {
        "unit": "patients", "patients": len(patients), "resamples": 2000, "seed": 0, "method": "percentile"
    }  # fmt: skip
    assert set(test["ci95"]) == set(evaluation.INTERVAL_METRICS)
    for name, (low, high) in test["ci95"].items():
        assert low <= test[name] <= high
    # The same figures from predictions.csv, at the threshold chosen on validation.
    again = evaluation.bootstrap_test_metrics(
        rows["label"].to_numpy(), rows["p_pneumonia"].to_numpy(), metrics["validation"]["threshold"],
        [data.patient_id(file) for file in files], [data.pneumonia_type(file) for file in files],
    )  # fmt: skip
    assert again["ci95"] == test["ci95"] and again["by_type"] == test["by_type"]
    kinds = [data.pneumonia_type(file) for file in files]
    assert {name: figures["n_images"] for name, figures in test["by_type"].items()} == {
        "bacteria": kinds.count("bacteria"), "virus": kinds.count("virus")
    }  # fmt: skip

    report = (run_dir / "report.md").read_text()
    low, high = test["ci95"]["accuracy"]
    assert f"accuracy {test['accuracy']:.3f} [{low:.3f}, {high:.3f}]" in report
    assert f"resamples of the {len(patients)} test patients" in report
    assert "## Sensitivity by pneumonia type (test)" in report
    virus = test["by_type"]["virus"]
    assert f"| virus | {virus['n_images']} | {virus['n_patients']} | {virus['sensitivity']:.3f} [" in report


def test_model_card_in_hugging_face_layout(tiny_runs):
    import keras

    run_dir = tiny_runs.baseline
    card = (run_dir / "model_card.md").read_text()
    _, front, body = card.split("---\n", 2)
    header = yaml.safe_load(front)
    assert {"license", "tags", "datasets", "metrics", "model-index"} <= set(header)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (result,) = header["model-index"][0]["results"]
    assert {entry["type"]: entry["value"] for entry in result["metrics"]}["accuracy"] == pytest.approx(
        metrics["test"]["accuracy"], abs=1e-4
    )
    for heading in ("## Model details", "## Intended use", "## Training data", "## Evaluation", "## Limitations", "## How to use"):  # fmt: skip
        assert heading in body
    assert "Not a medical device." in body and "Not for diagnosis" in body
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    assert f"{model.count_params():,} parameters" in body and "| Conv2D |" in body
    assert "48 x 48 rgb" in body and "mixed_bfloat16" in body
    gap = metrics["test"]["specificity"] - metrics["validation"]["specificity"]
    assert (
        f"| specificity | {metrics['validation']['specificity']:.3f} | {metrics['test']['specificity']:.3f} | {gap:+.3f} |"
        in body
    )
    assert f"python predict.py xray.jpeg more_xrays/ --run reports/{run_dir.name}" in body
    assert f"[card]({run_dir.name}/model_card.md)" in (run_dir.parent / "index.md").read_text()


def test_hyperband_runs_its_schedule_with_the_baseline_first_and_says_it_decides(workdir, capsys):
    assert run_search_only(workdir, "--tuner", "hyperband", "--epochs", "2", "--max-trials", "3") == 0
    trials = pd.read_csv(only_run(workdir / "reports") / "trials.csv")
    assert len(trials) == 2  # Hyperband's schedule for max_epochs=2, factor=3
    assert trials.iloc[0]["learning_rate"] == BASELINE["learning_rate"]
    assert "tuner/epochs" in trials.columns
    output = capsys.readouterr().out
    assert "Hyperband's schedule for epochs 2 and hyperband_factor 3 has 2 trial(s), fewer than max_trials 3" in output
    assert "== Trial 1 (2 of 2)" in output
    assert "Training on: CPU only" in output or "Training on: NVIDIA" in output
    assert_tuner_keeps_no_weights(only_run(workdir / "reports"), trials=2)
    assert re.search(r"Disk: \d+\.\d MB in .*, of which model.keras \d+\.\d MB", output)


def test_a_class_of_one_patient_is_named_before_anything_trains(workdir, capsys):
    root = workdir / "one_patient"
    for split, count in (("train", 4), ("test", 1)):
        for i in range(count):
            write_image(root / split / "NORMAL" / f"IM-0001-000{i}.jpeg")
            write_image(root / split / "PNEUMONIA" / f"person{i}_virus_1.jpeg")
    assert search.main(["--data-dir", str(root), "--baseline"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {root / 'train' / 'NORMAL'}: train and validation each need at least one NORMAL")
    assert "all 4 NORMAL images belong to one patient (IM-0001" in err and "\n" not in err
    assert "undecodable" not in err


@pytest.mark.e2e
def test_tensorflow_start_up_log_is_quiet_unless_asked_for(tmp_path):
    code = "from runtime import backends\nbackends.activate('tensorflow')\nimport tensorflow as tf\ntf.config.list_physical_devices('GPU')"
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=environment)
    assert quiet.returncode == 0 and quiet.stderr.strip() == ""
    loud = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**environment, "TF_CPP_MIN_LOG_LEVEL": "0"},
    )
    assert loud.returncode == 0 and loud.stderr.strip() != ""


def assert_tuner_keeps_no_weights(run_dir: Path, trials: int) -> None:
    """A finished run keeps each trial's trial.json (to explain and resume it) but no trial weights."""
    tuner_dir = run_dir / "tuner" / "search"
    assert len(list(tuner_dir.glob("trial_*/trial.json"))) == trials and (tuner_dir / "oracle.json").exists()
    assert not [path for path in tuner_dir.rglob("*") if path.suffix in {".h5", ".keras", ".index"}]


def test_bayesian_search_starts_from_the_baseline(workdir):
    assert run_search_only(workdir, "--tuner", "bayesian", "--max-trials", "2", "--epochs", "1") == 0
    trials = pd.read_csv(only_run(workdir / "reports") / "trials.csv")
    assert len(trials) == 2
    assert {name: trials.iloc[0][name] for name in BASELINE} == pytest.approx(BASELINE)
    assert trials.iloc[1]["learning_rate"] != BASELINE["learning_rate"]


def test_baseline_and_search_reports_compare_on_test(tiny_runs):
    baseline_dir = tiny_runs.baseline  # ran first, then the search
    assert not (baseline_dir / "trials.csv").exists()
    assert yaml.safe_load((baseline_dir / "best_hyperparameters.yaml").read_text()) == BASELINE
    assert "no matching run yet" in tiny_runs.baseline_report_alone

    search_report = (tiny_runs.search / "report.md").read_text()
    baseline_metrics = json.loads((baseline_dir / "metrics.json").read_text())
    assert "baseline (`synthetic-baseline-48px-seed7`)" in search_report
    search_metrics = json.loads((tiny_runs.search / "metrics.json").read_text())
    tuned, base = search_metrics["test"]["sensitivity"], baseline_metrics["test"]["sensitivity"]
    assert f"| sensitivity | {tuned:.3f} [" in search_report and f"] | {base:.3f} [" in search_report
    # The earlier baseline report is refreshed to show the search beside it.
    baseline_report = (baseline_dir / "report.md").read_text()
    assert "tuned (`synthetic-search-random-48px-seed7`)" in baseline_report

    # Both reports give tuned minus baseline with the same paired interval.
    difference = search_metrics["test"]["accuracy"] - baseline_metrics["test"]["accuracy"]
    row = next(line for line in search_report.splitlines() if line.startswith(f"| accuracy | {difference:+.3f} ["))
    assert row in baseline_report and "## Tuned minus baseline, paired on the same test patients" in baseline_report
    low, high = (float(bound) for bound in re.search(r"\[(\S+), (\S+)\]", row).groups())
    assert low <= difference <= high
    assert row.endswith("| no difference shown at this test size |") == (low <= 0 <= high)


def test_a_run_recorded_before_intervals_still_renders(tiny_runs, tmp_path):
    """Old metrics.json files (no ci95, bootstrap or by_type) render, also as a counterpart."""
    from reporting import report

    for run_dir in (tiny_runs.baseline, tiny_runs.search):
        copy = shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns("model.keras", "*.md"))
        metrics = json.loads((copy / "metrics.json").read_text())
        for key in ("ci95", "bootstrap", "by_type"):
            del metrics["test"][key]
        (copy / "metrics.json").write_text(json.dumps(metrics))
    old_baseline = json.loads((tmp_path / tiny_runs.baseline.name / "metrics.json").read_text())
    report.render(tmp_path / tiny_runs.search.name, (tiny_runs.baseline.name, old_baseline))
    text = (tmp_path / tiny_runs.search.name / "report.md").read_text()
    headline = next(line for line in text.splitlines() if line.startswith("**Held-out test"))
    assert f"accuracy {metrics['test']['accuracy']:.3f}," in headline and "[" not in headline
    assert "In brackets, 95% intervals" not in text and "Sensitivity by pneumonia type" not in text
    assert "## Tuned minus baseline, paired" in text  # computed from the two predictions.csv
    assert "this run's `model.keras` was not kept" in (tmp_path / tiny_runs.search.name / "model_card.md").read_text()
    assert "[card](" in (tmp_path / "index.md").read_text()


def test_cosine_schedule_decays_the_retrain_learning_rate(retrain_options_run):
    run_dir = retrain_options_run  # cosine, weight averaging and youden_or_half, four epochs
    rates = pd.read_csv(run_dir / "history.csv")["learning_rate"].tolist()
    start = BASELINE["learning_rate"]
    # Epoch e trains at start * (1 + cos(pi * e / 4)) / 2.
    assert len(rates) == RETRAIN_OPTIONS_EPOCHS == 4
    assert rates == pytest.approx([start, start * 0.8536, start * 0.5, start * 0.1464], rel=1e-3)
    assert "cosine learning rate" in (run_dir / "report.md").read_text()


def test_a_retrain_with_weight_averaging_runs_to_its_report(retrain_options_run):
    run_dir = retrain_options_run
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["final_ema_momentum"] == 0.9
    assert len(pd.read_csv(run_dir / "history.csv")) == RETRAIN_OPTIONS_EPOCHS and (run_dir / "report.md").exists()


def test_the_youden_or_half_rule_chooses_on_validation_patients(retrain_options_run):
    run_dir = retrain_options_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    predictions = pd.read_csv(run_dir / "predictions.csv").query("split == 'validation'")
    patients = [data.patient_id(Path(file)) for file in predictions["file"]]
    expected = choose_threshold(
        predictions["label"].to_numpy(), predictions["p_pneumonia"].to_numpy(), "youden_or_half", patients
    )
    assert metrics["validation"]["threshold"] == metrics["test"]["threshold"] == pytest.approx(expected)
    assert "0.5 unless Youden's J on validation is clearly higher" in (run_dir / "report.md").read_text()


def test_interrupted_search_resumes_keeping_finished_trials_and_repeats_the_seeds_sequence(
    workdir, tiny_runs, monkeypatch, capsys
):
    original = tuning.TrialRecorder.run_trial
    ran = []

    def interrupt_second_trial(self, trial, *args, **kwargs):
        ran.append(trial.trial_id)
        if len(ran) == 2:
            raise KeyboardInterrupt
        return original(self, trial, *args, **kwargs)

    monkeypatch.setattr(tuning.TrialRecorder, "run_trial", interrupt_second_trial)
    assert run_search_only(workdir, *TINY_TRIALS) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    run_dir = only_run(workdir / "reports")
    assert not (run_dir / "report.md").exists()
    first_score = json.loads(next((run_dir / "tuner" / "search").glob("trial_0/trial.json")).read_text())["score"]

    ran.clear()
    monkeypatch.setattr(
        tuning.TrialRecorder,
        "run_trial",
        lambda self, trial, *a, **k: ran.append(trial.trial_id) or original(self, trial, *a, **k),
    )
    assert run_search_only(workdir, *TINY_TRIALS) == 0
    assert ran == ["1", "2"]  # trial 0 was kept, not run again
    trials = pd.read_csv(run_dir / "trials.csv")
    assert list(trials["trial_id"]) == [0, 1, 2]
    assert trials.iloc[0]["objective"] == pytest.approx(first_score)
    # The same search settings and seed repeat the trial sequence: this run, stopped and resumed, drew the points
    # that the tiny search (run through, in this process or another xdist worker) drew. (Only the retrain differs.)
    uninterrupted = pd.read_csv(tiny_runs.search / "trials.csv")
    columns = [name for name in uninterrupted.columns if name in BASELINE]
    pd.testing.assert_frame_equal(trials[columns], uninterrupted[columns])
    assert len(trials[columns].drop_duplicates()) == 3  # three different points, not one repeated


def test_finished_run_is_not_overwritten_by_accident(workdir, tiny_runs, capsys):
    finished = workdir / "reports" / tiny_runs.baseline.name
    shutil.copytree(tiny_runs.baseline, finished)
    assert search.main(TINY_BASELINE) == 2
    assert "holds a finished run: pass --overwrite" in capsys.readouterr().err
    assert (finished / "report.md").read_text() == (tiny_runs.baseline / "report.md").read_text()
    assert search.main([*TINY_BASELINE, "--overwrite"]) == 0
    assert (
        json.loads((finished / "metrics.json").read_text())["run"]["finished"]
        != json.loads((tiny_runs.baseline / "metrics.json").read_text())["run"]["finished"]
    )


def test_changed_settings_do_not_resume_a_run(workdir, capsys, monkeypatch):
    flags = ("--tuner", "random", "--max-trials", "2", "--epochs", "1", "--run-name", "mine")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning.TrialRecorder, "run_trial", stop)
    assert run(*flags) == 130
    assert run("--tuner", "random", "--max-trials", "3", "--epochs", "1", "--run-name", "mine") == 2
    assert "was started with other settings (max_trials)" in capsys.readouterr().err


def test_a_resumed_run_keeps_its_precision(workdir, capsys, monkeypatch):
    from runtime import precision

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning.TrialRecorder, "run_trial", stop)
    flags = ("--tuner", "random", "--max-trials", "2", "--epochs", "1", "--run-name", "mine")
    assert run(*flags, "--precision", "mixed_bfloat16") == 130
    assert "Precision: mixed_bfloat16 (as configured)" in capsys.readouterr().out
    # Resumed on a machine where auto would choose float32, the run goes on in the precision it started with.
    monkeypatch.setattr(precision, "resolve", lambda requested: ("float32", "auto: no bfloat16 here"))
    assert run(*flags) == 130
    assert "Precision: mixed_bfloat16 (kept from the run being resumed)" in capsys.readouterr().out
    assert run(*flags, "--precision", "float32") == 2
    assert "was started with other settings (precision)" in capsys.readouterr().err


def test_failed_trials_are_recorded_and_the_search_goes_on(workdir, monkeypatch, capsys):
    def fit(self, hp, model, *args, **kwargs):
        if hp.values["learning_rate"] != BASELINE["learning_rate"]:
            raise RuntimeError("synthetic failure for this point")
        return model.fit(*args, **kwargs)

    monkeypatch.setattr(ChestXRayHyperModel, "fit", fit)
    assert search.main([*TINY_ONE_EPOCH, "--tuner", "random", "--max-trials", "3", "--epochs", "1"]) == 0
    run_dir = only_run(workdir / "reports")
    trials = pd.read_csv(run_dir / "trials.csv", keep_default_na=False)
    assert list(trials["status"]) == ["COMPLETED", "FAILED", "FAILED"]
    assert (trials["error"][1:] == "RuntimeError: synthetic failure for this point").all()
    assert "2 of 3 trials failed" in capsys.readouterr().err
    assert "**2 trials failed**" in (run_dir / "report.md").read_text()


def test_every_trial_failing_stops_with_one_sentence(workdir, monkeypatch, capsys):
    def fit(self, hp, model, *args, **kwargs):
        raise RuntimeError("nothing trains here")

    monkeypatch.setattr(ChestXRayHyperModel, "fit", fit)
    assert run("--tuner", "random", "--max-trials", "3", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "error: the search stopped after repeated failed trials" in err
    assert "nothing trains here" in err
    assert not (only_run(workdir / "reports") / "report.md").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "--epochs: epochs must be at least 1"),
        (["--image-size", "32"], "image_size 32 (--image-size or the config's image_size) is too small"),
        (["--tuner", "random", "--config", "unbounded.yaml"], "max_trials must be set for tuner random"),
        (["--config", "absent.yaml"], "cannot read config file absent.yaml"),
    ],
)
def test_bad_input_exits_2_with_one_sentence_and_no_run_folder(workdir, capsys, flags, message):
    (workdir / "unbounded.yaml").write_text("max_trials: null\n")
    assert run(*flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (workdir / "reports").exists() or not any((workdir / "reports").iterdir())


def test_every_flag_is_checked_before_any_data_is_read_or_downloaded(workdir, capsys, monkeypatch):
    """--image-size 20 passed the flag's range and failed only once the data was found (without data, after the
    1.2 GB download had started); now the model's checks come first."""
    import data

    monkeypatch.setattr(data, "download_dataset", lambda *a: pytest.fail("the download started"))
    assert search.main(["--image-size", "20", "--baseline"]) == 2
    err = capsys.readouterr().err
    assert "image_size 20 (--image-size or the config's image_size) is too small" in err
    assert err.strip().endswith("pass --image-size 46 or more")
    assert search.main(["--image-size", "20", "--data-dir", "nowhere"]) == 2
    assert "image_size 20" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--smoke", "--data-dir", "/nonexistent"], "--smoke runs on generated images, so --data-dir /nonexistent "
         "would be ignored: drop --data-dir, or drop --smoke to use that folder (`python search.py --config "
         "configs/smoke.yaml --data-dir /nonexistent`)"),
        (["--synthetic", "--data-dir", "x"], "--synthetic runs on generated images, so --data-dir x would be ignored"),
        (["--baseline", "--tuner", "hyperband"], "--baseline runs no search, so --tuner would be ignored: drop --tuner"),
        (["--baseline", "--max-trials", "3"], "--baseline runs no search, so --max-trials would be ignored"),
        (["--baseline", "--epochs", "3"], "--baseline runs no search, so --epochs would be ignored"),
    ],
)  # fmt: skip
def test_a_flag_the_mode_would_ignore_is_refused(workdir, capsys, flags, message):
    assert search.main(flags) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}" or (err.startswith(f"error: {message}") and "\n" not in err)
    assert not (workdir / "reports").exists() and not (workdir / "data").exists()


def test_missing_data_dir_names_the_path(workdir, capsys):
    assert search.main(["--data-dir", "nowhere/chest_xray"]) == 2
    assert "data directory nowhere/chest_xray does not exist" in capsys.readouterr().err


def test_unwritable_reports_dir_is_one_sentence(workdir, capsys):
    (workdir / "blocker").write_text("a file where a folder should be")
    assert run("--baseline", "--reports-dir", "blocker/reports") == 2
    assert "pass a writable --reports-dir" in capsys.readouterr().err


def test_help_lists_every_flag_without_loading_tensorflow():
    code = "import sys, search\ntry:\n    search.parse_args(['--help'])\nexcept SystemExit:\n    pass\nprint('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(search.__file__).parent
    )
    for flag in ("--config", "--data-dir", "--synthetic", "--baseline", "--tuner", "--max-trials", "--epochs",
                 "--final-epochs", "--image-size", "--seed", "--run-name", "--reports-dir", "--overwrite", "--precision",
                 "--backend"):  # fmt: skip
        assert flag in result.stdout
    assert result.stdout.strip().endswith("False")


def test_the_python_versions_stated_are_the_ones_enforced():
    """README said "Python 3.10 to 3.12, as requirements.txt pins it" while nothing pinned it and numpy 2.4 needs
    3.11: the versions README and requirements.txt state are pyproject.toml's requires-python, which pip enforces."""
    import tomllib

    from packaging.specifiers import SpecifierSet

    repo = Path(search.__file__).parent
    allowed = SpecifierSet(tomllib.loads((repo / "pyproject.toml").read_text())["project"]["requires-python"])
    low, high = re.search(
        r"Python (3\.\d+) to (3\.\d+), as `pyproject.toml`", (repo / "README.md").read_text()
    ).groups()
    assert f"Python {low}-{high}, pyproject.toml's requires-python" in (repo / "requirements.txt").read_text()
    minor = lambda version: int(version.split(".")[1])  # noqa: E731
    stated = {f"3.{n}" for n in range(minor(low), minor(high) + 1)}
    assert {f"3.{n}" for n in range(8, 16) if f"3.{n}" in allowed} == stated
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in allowed  # the suite runs on one of them


def test_the_smoke_runs_time_is_one_figure_wherever_it_is_stated():
    """predict.py said a smoke model takes "about a minute", README "about 40 s"."""
    repo = Path(search.__file__).parent
    texts = {name: (repo / name).read_text() for name in ("README.md", "predict.py", "configs/smoke.yaml")}
    assert all("about 40 s" in text for text in texts.values()), [n for n, t in texts.items() if "about 40 s" not in t]
    assert not any("about a minute" in text for text in texts.values())


@pytest.mark.e2e
def test_a_search_near_the_baseline_runs_end_to_end_with_its_study(workdir):
    """local_share: 1: every trial after the baseline's changes 1 to local_changes of its values, the candidate is
    trial 1 and the first finalist, and the report's Optuna study and "What the search learned" read such trials as
    any others."""
    near = "finalists: 1\nlocal_share: 1.0\nlocal_changes: 2\ncandidates: [{dropout: 0.4}]\n"
    (workdir / "near.yaml").write_text(near)
    flags = [*TINY_ONE_EPOCH, "--config", str(workdir / "near.yaml"), "--tuner", "random", "--max-trials", "3"]
    assert search.main([*flags, "--epochs", "1"]) == 0
    run_dir = only_run(workdir / "reports")
    trials = pd.read_csv(run_dir / "trials.csv")

    def differs(value, baseline) -> bool:
        if isinstance(baseline, bool) or isinstance(baseline, str):
            return str(value) != str(baseline)
        return abs(float(value) - float(baseline)) > 1e-9

    for _, row in trials.iloc[1:].iterrows():  # the values both points have (a changed depth counts once)
        shared = [name for name in BASELINE if name in trials.columns and pd.notna(row[name])]
        assert 1 <= sum(differs(row[name], BASELINE[name]) for name in shared) <= 2, row.to_dict()
    assert (run_dir / "study.db").is_file() and "local_share: 1.0" in (run_dir / "config.yaml").read_text()
    assert trials["dropout"].iloc[1] == pytest.approx(0.4)
    finalists = json.loads((run_dir / "metrics.json").read_text())["finalists"]
    assert [int(f["trial_id"]) for f in finalists] == [0, 1] and finalists[1]["point"]["dropout"] == pytest.approx(0.4)
