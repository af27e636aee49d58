"""The search's time estimate (eta.py) and the trial header that carries it (tuning.TrialRecorder)."""

from __future__ import annotations

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
from pipeline.eta import cpu_budget_hint, recorded_trainings, start_lines


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


# start_lines and cpu_budget_hint: the whole run's expected time before trial 1, and the CPU advice.

KEPT = Path(__file__).resolve().parents[1] / "bench" / "results" / "quality" / "tuned-search-seed45"
SAME_DATA = {"pool": 4703 + 529, "test": 624}  # the kept run's images: the real data
HERE = json.loads((KEPT / "metrics.json").read_text())["run"]["machine"]  # as if this machine had made the kept run


def kept_beside(reports: Path, name: str = KEPT.name, **changes: object) -> dict:
    """A finished run's files that recorded_trainings reads, copied into `reports`; its config (with `changes`)."""
    folder = reports / name
    folder.mkdir(parents=True)
    for file in (
        "trials.csv",
        "history.csv",
        "report.md",
        "data_summary.csv",
        "best_hyperparameters.yaml",
        "metrics.json",
    ):
        shutil.copy(KEPT / file, folder / file)
    config = {**yaml.safe_load((KEPT / "config.yaml").read_text()), **changes}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return config


def estimate(run_dir: Path, config: dict, counts: dict = SAME_DATA, search: bool = True, **changes) -> list[str]:
    """What a run with these settings prints before trial 1, priced as search.py prices it (training.make_planner)."""
    from config import Settings, read_yaml, upgrade
    from data import channel_count
    from hypermodel import ChestXRayHyperModel
    from pipeline.training import make_planner

    defaults = read_yaml(Path(__file__).resolve().parents[1] / "config.yaml")
    settings = Settings.from_dict({**defaults, **upgrade(config, run_dir)})  # keys the kept run predates: legacy
    settings = settings.replace(**changes)
    space, augmentation = settings.search_space.as_dict(), settings.augmentation.as_dict()
    model = ChestXRayHyperModel(settings.image_size, channel_count(settings.color_mode), space, augmentation)
    recorded = recorded_trainings(run_dir, settings.as_dict(), counts, HERE)
    planner = make_planner(model, settings, recorded, lambda: 0.0)
    return start_lines(planner, recorded, gpus=1, search=search, default_protocol=False), planner


NOT_KNOWN = "Expected wall time: not known yet: no finished run on the same data, image size, colour and precision"


def test_start_estimate_from_a_finished_run_beside(tmp_path: Path) -> None:
    config = kept_beside(tmp_path)
    (line,), planner = estimate(tmp_path / "new-run", config)
    # The kept run's 24 completed trials and its retrain epochs price the run at the mean size of the space's points.
    assert planner.price.source == "tuned-search-seed45's trials and retrain"
    retrain = 45 * planner.price.epoch(planner.baseline_work)
    assert line.endswith(
        "(25 trials of about 7.4 epochs, then 1 retrain of 45 epochs; priced from tuned-search-seed45's trials and "
        "retrain)"
    )
    # It took 45m 31s: its trials drew points cheaper than the space's mean, which another draw need not.
    assert line.startswith("Expected wall time: about 1h 04m ")
    # A baseline run: its one retrain, whatever the config retrains. Finalists and repeats add theirs.
    (line,), _ = estimate(tmp_path / "new-run", config, search=False, finalists=4, repeats=3)
    assert line == f"Expected wall time: about {format_duration(retrain)} (1 retrain of 45 epochs; priced from " + (
        "tuned-search-seed45's trials and retrain)"
    )
    (line,), _ = estimate(tmp_path / "new", config, finalists=3)
    assert "then 4 retrains of 45 epochs" in line and line.startswith("Expected wall time: about ")
    # With repeats the racing may drop challengers' repeats: the estimate is a bound, every repeat of every finalist.
    (line,), _ = estimate(tmp_path / "new", config, finalists=2, repeats=3)
    assert line.startswith("Expected wall time: at most about ") and "then up to 9 retrains of 45 epochs" in line


def test_start_estimate_needs_a_run_at_the_same_size_colour_and_precision(tmp_path: Path) -> None:
    config = kept_beside(tmp_path)
    for key, value in [("precision", "float32"), ("image_size", 128), ("color_mode", "rgb")]:
        (line,), _ = estimate(tmp_path / "new-run", {**config, key: value})
        assert line.startswith(NOT_KNOWN), key
    # The work model prices any point, so other trial settings or another tuner are priced too.
    assert estimate(tmp_path / "new-run", {**config, "epochs": 12})[0][0].startswith("Expected wall time: about")
    assert estimate(tmp_path / "missing" / "new-run", config)[0][0].startswith(NOT_KNOWN)
    # The run itself is not its own yardstick, nor is an unfinished run (no report.md).
    assert estimate(tmp_path / KEPT.name, config)[0][0].startswith(NOT_KNOWN)
    (tmp_path / KEPT.name / "report.md").unlink()
    assert estimate(tmp_path / "new-run", config)[0][0].startswith(NOT_KNOWN)


def test_a_run_from_another_machine_prices_nothing(tmp_path: Path) -> None:
    """A copied run (the committed reports/example is one) timed someone else's machine: a fresh clone's first
    estimate and plan were priced from it, and called what this machine recorded."""
    config = kept_beside(tmp_path)
    assert recorded_trainings(tmp_path / "new-run", config, SAME_DATA, HERE).trainings
    assert recorded_trainings(tmp_path / "new-run", config, SAME_DATA, "another machine").trainings == []
    (tmp_path / KEPT.name / "metrics.json").unlink()  # a run that records no machine is no one's to trust
    assert recorded_trainings(tmp_path / "new-run", config, SAME_DATA, HERE).trainings == []


def test_start_estimate_is_priced_only_from_runs_on_the_same_data(tmp_path: Path) -> None:
    """A run on generated images, or on a dataset of other image counts, never prices one on the chest X-rays, and
    the other way round (a smoke run's seconds once priced the real-data smoke run at 12 s; it took 71 s)."""
    config = kept_beside(tmp_path)
    assert not estimate(tmp_path / "new-run", config)[0][0].startswith(NOT_KNOWN)
    assert estimate(tmp_path / "new-run", config, {**SAME_DATA, "test": 16})[0][0].startswith(NOT_KNOWN)
    assert estimate(tmp_path / "new-run", {**config, "data_dir": "data/synthetic"})[0][0].startswith(NOT_KNOWN)
    generated = kept_beside(tmp_path, "synthetic-run", data_dir="data/synthetic")
    shutil.rmtree(tmp_path / KEPT.name)
    assert estimate(tmp_path / "new-run", config)[0][0].startswith(NOT_KNOWN)
    assert "priced from synthetic-run's trials and retrain" in estimate(tmp_path / "new-run", generated)[0][0]
    # The budget's prices follow the same rule, and a run started afresh has no trials of its own.
    assert recorded_trainings(tmp_path / "new-run", config, SAME_DATA, HERE).trainings == []
    recorded = recorded_trainings(tmp_path / "new-run", generated, SAME_DATA, HERE)
    assert recorded.trainings and recorded.source == "synthetic-run's trials and retrain"
    write_trial(tmp_path / "mine" / "tuner", "00", "COMPLETED", 120.0, 8)
    assert recorded_trainings(tmp_path / "mine", config, SAME_DATA, HERE, resumed=False).trainings == []


def test_start_lines_say_when_nothing_prices_the_run(tmp_path: Path) -> None:
    config = {**kept_beside(tmp_path), "data_dir": "data/synthetic"}
    (line,), planner = estimate(tmp_path / "new-run", config)
    assert (
        line
        == f"{NOT_KNOWN} beside this one to price it from; each trial's header gives an ETA once a trial has finished"
    )
    # The CPU note quotes the default protocol's cost: only that protocol's runs print it.
    recorded = recorded_trainings(tmp_path / "new-run", config, SAME_DATA, HERE)
    lines = start_lines(planner, recorded, gpus=0, search=True, default_protocol=True)
    assert lines[0].startswith("Note: no GPU. A run of the default protocol took")


def test_start_estimate_takes_the_newest_matching_run_and_leaves_hyperbands_count_to_its_schedule(tmp_path) -> None:
    config = kept_beside(tmp_path, "older")
    kept_beside(tmp_path, "newer")
    os.utime(tmp_path / "older" / "report.md", (1, 1))
    assert "priced from newer's trials and retrain" in estimate(tmp_path / "new-run", config)[0][0]
    # Hyperband without max_trials runs its own schedule, which the tuner draws: the trial headers price it.
    (line,), _ = estimate(tmp_path / "new-run", config, tuner="hyperband", max_trials=None)
    assert line.startswith("Expected wall time: not known yet: Hyperband's schedule sets the number of trials")


def write_trial(
    tuner: Path, trial_id: str, status: str, seconds: float | None = None, epochs: float | None = None
) -> None:
    """A trial.json as Keras Tuner writes it, at the baseline's point, with the run's own metrics."""
    from hypermodel import BASELINE

    metrics = {}
    if seconds is not None:
        for name, value in (("trial_seconds", seconds), ("epochs_run", epochs)):
            metrics[name] = {"direction": "min", "observations": [{"value": [value], "step": 0}]}
    folder = tuner / "search" / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    state = {"trial_id": trial_id, "status": status, "metrics": {"metrics": metrics}}
    (folder / "trial.json").write_text(json.dumps({**state, "hyperparameters": {"values": BASELINE}}))


def test_start_estimate_of_a_resumed_run_uses_its_own_trials(tmp_path: Path) -> None:
    config = kept_beside(tmp_path)
    run_dir = tmp_path / "resumed"
    write_trial(run_dir / "tuner", "00", "COMPLETED", 120.0, 8)
    write_trial(run_dir / "tuner", "01", "COMPLETED", 60.0, 4)
    write_trial(run_dir / "tuner", "02", "FAILED")
    write_trial(run_dir / "tuner", "03", "RUNNING")
    # 180 s over 12 epochs at the baseline's point: its price; 6 epochs a trial; 25 planned less 3 ended.
    (line,), planner = estimate(run_dir, config)
    assert planner.price.epoch(planner.baseline_work) == pytest.approx(15.0)
    expected = 22 * 6 * planner.price.epoch(planner.mean_work) + 45 * 15.0
    assert line == (
        f"Expected time left: about {format_duration(expected)} (22 of 25 trials left of about 6 epochs, then 1 "
        "retrain of 45 epochs; priced from this run's 2 finished trials)"
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
