"""The search's time estimate (eta.py) and the trial header that carries it (tuning.TrialRecorder)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from budget import format_duration
from pipeline.eta import cpu_budget_hint, recorded_trainings, remaining_seconds, start_estimate, start_lines


def test_remaining_seconds_is_rate_times_epochs_times_trials() -> None:
    # 180 s over 12 epochs is 15 s an epoch; 6 epochs a trial; 10 planned, 2 ended: 8 x 6 x 15.
    assert remaining_seconds([60, 120], [4, 8], planned_trials=10, max_epochs=8) == pytest.approx(720)
    # Failed trials use up places in max_trials: 4 ended leaves 6.
    assert remaining_seconds([60, 120], [4, 8], 10, 8, trials_ended=4) == pytest.approx(540)
    # Mean epochs above the per-trial maximum are capped (a budget lowered on resume).
    assert remaining_seconds([100], [10], planned_trials=3, max_epochs=5) == pytest.approx(2 * 5 * 10)


def test_remaining_seconds_when_little_is_known() -> None:
    assert remaining_seconds([], [], planned_trials=10, max_epochs=8) is None
    assert remaining_seconds([60], [4], planned_trials=None, max_epochs=8) is None
    # A trial without recorded seconds or epochs says nothing of the rate and is skipped.
    assert remaining_seconds([None, math.nan, 40], [4, 4, 2], planned_trials=4, max_epochs=None) == pytest.approx(120)
    assert remaining_seconds([60], [0], planned_trials=4) is None
    assert remaining_seconds([60, 60], [4, 4], planned_trials=2) == 0  # all done


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45.4, "45s"),
        (59.6, "1m 00s"),
        (750, "12m 30s"),
        (3600, "1h 00m"),
        (3929, "1h 05m"),
        (97200, "27h 00m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_of_nothing() -> None:
    assert format_duration(None) == format_duration(math.nan) == format_duration(-1) == "unknown"


def test_trial_header_carries_the_eta(capsys: pytest.CaptureFixture[str]) -> None:
    """TrialRecorder's header on a real Keras Tuner oracle: 2 completed trials, 1 failed, the 4th starting."""
    kt = pytest.importorskip("keras_tuner")
    from pipeline import tuning

    class Base:
        def on_search_begin(self) -> None:
            pass

        def on_trial_begin(self, trial: kt.engine.trial.Trial) -> None:
            pass

    class Recorder(tuning.TrialRecorder, Base):
        pass

    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("val_auc", "max"), max_trials=5)
    status = kt.engine.trial.TrialStatus
    for trial_id, state, seconds, epochs in [
        ("00", status.COMPLETED, 60, 4),
        ("01", status.COMPLETED, 120, 8),
        ("02", status.FAILED, None, None),
        ("03", status.RUNNING, None, None),
    ]:
        trial = kt.engine.trial.Trial(kt.HyperParameters(), trial_id=trial_id, status=state)
        if seconds is not None:
            trial.metrics.update("trial_seconds", seconds)
            trial.metrics.update("epochs_run", epochs)
            trial.score = 0.9
        oracle.trials[trial_id] = trial
    from budget import Budget, Planner
    from pipeline.training import BudgetGate

    class SameWork:  # every point costs the same: the price is the trials' seconds per epoch
        def work(self, values):
            return 1.0

    planner = Planner(Budget(None, lambda: 0.0), 1.0, 1.0, 8, 45, 5, 0, price=None)
    recorder = Recorder()
    recorder.oracle, recorder.trials_run, recorder.search_started = oracle, [], 0.0
    recorder.trial_gate = BudgetGate(planner, SameWork())
    recorder.on_trial_begin(oracle.trials["03"])
    header, point = capsys.readouterr().out.strip().splitlines()
    # 15 s an epoch, 6 epochs a trial, 5 planned less 3 ended: 2 x 6 x 15 = 180 s; then the baseline's retrain,
    # 45 x 15 = 675 s. Trials are named by their ids, as every file and report names them; the count beside the id
    # is a count.
    assert header.startswith("== Trial 03 (4 of 5) | elapsed")
    assert header.endswith(
        "best val_auc so far: 0.9000 (trial 00) | ETA search 3m 00s, run 14m 15s (from this run's 2 finished trials)"
    )
    assert point == "Point: the baseline's"

    # Resumed with those trials kept, the header's time counts from the resume, and says so.
    recorder.on_search_begin()
    recorder.on_trial_begin(oracle.trials["03"])
    assert capsys.readouterr().out.strip().startswith("== Trial 03 (4 of 5) | elapsed 00:00:00 since resuming | best")


# start_estimate and cpu_budget_hint: the whole run's expected time before trial 1, and the CPU advice.

KEPT = Path(__file__).resolve().parents[1] / "bench" / "results" / "quality" / "tuned-search-seed45"
SAME_DATA = {"pool": 4703 + 529, "test": 624}  # the kept run's images: the real data


def kept_beside(reports: Path, name: str = KEPT.name, **changes: object) -> dict:
    """A finished run's files that start_estimate reads, copied into `reports`; its config (with `changes`)."""
    folder = reports / name
    folder.mkdir(parents=True)
    for file in ("trials.csv", "history.csv", "report.md", "data_summary.csv"):
        shutil.copy(KEPT / file, folder / file)
    config = {**yaml.safe_load((KEPT / "config.yaml").read_text()), **changes}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return config


def kept_seconds() -> tuple[float, float]:
    """The kept run's summed trial seconds and mean retrain epoch seconds."""
    with open(KEPT / "trials.csv", newline="") as file:
        search = sum(float(row["seconds"]) for row in csv.DictReader(file) if row["status"] == "COMPLETED")
    with open(KEPT / "history.csv", newline="") as file:
        epochs = [float(row["seconds"]) for row in csv.DictReader(file)]
    return search, sum(epochs) / len(epochs)


def test_start_estimate_from_a_finished_run_beside(tmp_path: Path) -> None:
    config = kept_beside(tmp_path)
    search, epoch = kept_seconds()
    line = start_estimate(tmp_path / "new-run", config, SAME_DATA)
    # 25 planned trials at the kept run's mean cost is its summed trial time; then 45 retrain epochs.
    assert line == (
        f"Expected wall time: about {format_duration(search + 45 * epoch)} (25 trials x {format_duration(search / 25)} "
        f"from tuned-search-seed45's trials.csv; then 45 retrain epochs x {format_duration(epoch)} "
        "from tuned-search-seed45's history.csv)"
    )
    assert line.startswith("Expected wall time: about 45m")  # the kept run took 45m 31s in all
    # A baseline run: the retrain alone. Four retrained finalists (3 and the baseline's): four retrains.
    assert start_estimate(tmp_path / "new-run", config, SAME_DATA, search=False).startswith(
        f"Expected wall time: about {format_duration(45 * epoch)} (45 retrain epochs"
    )
    assert f"about {format_duration(search + 4 * 45 * epoch)} " in start_estimate(
        tmp_path / "new", {**config, "finalists": 3}, SAME_DATA
    )
    # With repeats the racing may drop challengers' repeats: the estimate is a bound, every repeat of every finalist.
    assert start_estimate(tmp_path / "new", {**config, "finalists": 2, "repeats": 3}, SAME_DATA).startswith(
        f"Expected wall time: at most about {format_duration(search + 9 * 45 * epoch)} "
    )
    assert "then up to 9 retrains x 45 retrain epochs" in start_estimate(
        tmp_path / "new", {**config, "finalists": 2, "repeats": 3}, SAME_DATA
    )
    # A baseline run trains one model even under a config that retrains finalists and repeats them.
    assert start_estimate(
        tmp_path / "new", {**config, "finalists": 4, "repeats": 3}, SAME_DATA, search=False
    ).startswith(f"Expected wall time: about {format_duration(45 * epoch)} (45 retrain epochs")


def test_start_estimate_needs_a_run_that_costs_the_same(tmp_path: Path) -> None:
    config = kept_beside(tmp_path)
    for key, value in [
        ("precision", "float32"),
        ("epochs", 12),
        ("tuner", "hyperband"),
        ("image_size", 128),
        ("color_mode", "rgb"),
    ]:
        assert start_estimate(tmp_path / "new-run", {**config, key: value}, SAME_DATA) is None, key
    assert start_estimate(tmp_path / "missing" / "new-run", config, SAME_DATA) is None
    # The run itself is not its own yardstick, nor is an unfinished run (no report.md).
    assert start_estimate(tmp_path / KEPT.name, config, SAME_DATA) is None
    (tmp_path / KEPT.name / "report.md").unlink()
    assert start_estimate(tmp_path / "new-run", config, SAME_DATA) is None


def test_start_estimate_is_priced_only_from_runs_on_the_same_data(tmp_path: Path) -> None:
    """A run on generated images, or on a dataset of other image counts, never prices one on the chest X-rays, and
    the other way round (a smoke run's seconds once priced the real-data smoke run at 12 s; it took 71 s)."""
    config = kept_beside(tmp_path)
    assert start_estimate(tmp_path / "new-run", config, SAME_DATA) is not None
    assert start_estimate(tmp_path / "new-run", config, {**SAME_DATA, "test": 16}) is None
    assert start_estimate(tmp_path / "new-run", {**config, "data_dir": "data/synthetic"}, SAME_DATA) is None
    generated = kept_beside(tmp_path, "synthetic-run", data_dir="data/synthetic")
    shutil.rmtree(tmp_path / KEPT.name)
    assert start_estimate(tmp_path / "new-run", config, SAME_DATA) is None
    assert "from synthetic-run's trials.csv" in start_estimate(tmp_path / "new-run", generated, SAME_DATA)
    # The budget's prices follow the same rule, and a run started afresh has no trials of its own.
    assert recorded_trainings(tmp_path / "new-run", config, SAME_DATA) == ([], "")
    points, source = recorded_trainings(tmp_path / "new-run", generated, SAME_DATA)
    assert points and source == "synthetic-run's trials and retrain"
    write_trial(tmp_path / "mine" / "tuner", "00", "COMPLETED", 120.0, 8)
    assert recorded_trainings(tmp_path / "mine", config, SAME_DATA, resumed=False) == ([], "")


def test_start_lines_say_when_nothing_prices_the_run(tmp_path: Path) -> None:
    config = {**kept_beside(tmp_path), "data_dir": "data/synthetic"}
    lines = start_lines(tmp_path / "new-run", config, SAME_DATA, gpus=0, search=True, default_protocol=False)
    assert lines == [
        "Expected wall time: not known yet: no finished run on the same data and settings beside this one to price it "
        "from; each trial's header gives an ETA once a trial has finished"
    ]
    # The CPU note quotes the default protocol's cost: only that protocol's runs print it.
    lines = start_lines(tmp_path / "new-run", config, SAME_DATA, gpus=0, search=True, default_protocol=True)
    assert lines[0].startswith("Note: no GPU. A run of the default protocol took")


def test_start_estimate_takes_the_newest_matching_run_and_its_trial_count(tmp_path: Path) -> None:
    config = kept_beside(tmp_path, "older")
    kept_beside(tmp_path, "newer")
    os.utime(tmp_path / "older" / "report.md", (1, 1))
    assert "from newer's trials.csv" in start_estimate(tmp_path / "new-run", config, SAME_DATA)
    # Hyperband without max_trials runs its own schedule: as many trials as the recorded run ran.
    hyperband = {**config, "max_trials": None}
    assert "(25 trials x" in start_estimate(tmp_path / "new-run", hyperband, SAME_DATA)


def write_trial(
    tuner: Path, trial_id: str, status: str, seconds: float | None = None, epochs: float | None = None
) -> None:
    """A trial.json as Keras Tuner writes it, with the run's own metrics."""
    metrics = {}
    if seconds is not None:
        for name, value in (("trial_seconds", seconds), ("epochs_run", epochs)):
            metrics[name] = {"direction": "min", "observations": [{"value": [value], "step": 0}]}
    folder = tuner / "search" / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    (folder / "trial.json").write_text(
        json.dumps({"trial_id": trial_id, "status": status, "metrics": {"metrics": metrics}})
    )


def test_start_estimate_of_a_resumed_run_uses_its_own_trials(tmp_path: Path) -> None:
    config = kept_beside(tmp_path)
    _, epoch = kept_seconds()
    run_dir = tmp_path / "resumed"
    write_trial(run_dir / "tuner", "00", "COMPLETED", 120.0, 8)
    write_trial(run_dir / "tuner", "01", "COMPLETED", 60.0, 4)
    write_trial(run_dir / "tuner", "02", "FAILED")
    write_trial(run_dir / "tuner", "03", "RUNNING")
    # 180 s over 12 epochs, 6 epochs a trial: 90 s a trial; 25 planned less 3 ended.
    line = start_estimate(run_dir, config, SAME_DATA)
    assert line == (
        f"Expected time left: about {format_duration(22 * 90 + 45 * epoch)} (22 of 25 trials left x 1m 30s from "
        f"this run's finished trials; then 45 retrain epochs x {format_duration(epoch)} from tuned-search-seed45's "
        "history.csv)"
    )
    # With no finished run beside it, the search part alone, and the line says the retrain is missing.
    shutil.rmtree(tmp_path / KEPT.name)
    assert start_estimate(run_dir, config, SAME_DATA) == (
        "Expected time left: about 33m 00s (22 of 25 trials left x 1m 30s from this run's finished trials; "
        "the retrain is not included: no finished run at 80 px grayscale in mixed_bfloat16 beside this one to go by)"
    )


def test_cpu_budget_hint_names_a_command_that_starts(tmp_path) -> None:
    """The CPU advice, run after the default in one reports folder, starts: no "other settings" refusal."""
    import re

    import runs
    import search
    from pipeline import start

    hint = cpu_budget_hint(gpus=0, default_protocol=True, time_budget=None)
    assert "1.8 to 2.4 hours" in hint
    command = re.search(r"`python search.py ([^`]*)`", hint).group(1).split()
    reports = ["--reports-dir", str(tmp_path / "reports")]
    default_args = search.parse_args(reports)
    default = start.load_settings(default_args)
    runs.prepare_run_dir(default.replace(run_name=start.default_run_name(default, "search", False)), False)
    advised_args = search.parse_args([*command, *reports])
    advised = start.load_settings(advised_args)
    advised = advised.replace(run_name=start.default_run_name(advised, "search", False, advised_args.config))
    assert (runs.prepare_run_dir(advised, False) / "config.yaml").is_file()
    assert advised.time_budget == "1h" and advised.run_name.endswith("-budget1h")
    assert cpu_budget_hint(gpus=1, default_protocol=True, time_budget=None) is None
    assert cpu_budget_hint(gpus=0, default_protocol=False, time_budget=None) is None  # --baseline, --smoke, a preset
    assert cpu_budget_hint(gpus=0, default_protocol=True, time_budget="1h") is None  # already bounded


def test_eta_imports_neither_keras_nor_pandas() -> None:
    code = "import sys; import pipeline.eta; print(sorted({'keras', 'pandas', 'tensorflow'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_a_trial_header_names_what_its_point_changes_and_keras_tuner_counts_nothing(capsys) -> None:
    """Keras Tuner's own lines ("Running Trial #1" for trial 0) are silent: one numbering, the trial ids."""
    kt = pytest.importorskip("keras_tuner")
    from hypermodel import BASELINE, baseline_hyperparameters
    from pipeline import tuning

    point = baseline_hyperparameters()
    assert tuning.point_line(point, BASELINE) == "Point: the baseline's"
    point.values.update({"dropout": 0.3, "learning_rate": 0.00662622})
    assert tuning.point_line(point, BASELINE) == (
        "Point: the baseline's with 2 values changed: dropout 0.3, learning_rate 0.00663"
    )
    oracle = tuning.BaselineFirstRandomSearchOracle(
        objective=kt.Objective("val_auc", "max"), max_trials=2, baseline_values=BASELINE
    )
    oracle.verbose = 2  # what Keras Tuner's search sets from fit's verbose
    assert oracle.verbose == 0
    assert kt.Oracle.verbose.fget(oracle) == 0  # the display's own flag, read through Keras Tuner's property
