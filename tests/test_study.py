"""The search as an Optuna study (study.py) and its figures (search_plots.py), on committed and made-up trials."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest
from conftest import free_port
from matplotlib.figure import Figure

import config
from hypermodel import BASELINE, ChestXRayHyperModel
from reporting import search_plots, study, tables

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ROOT / "bench" / "results" / "quality" / "tuned-search-seed45"  # a committed 25-trial random search
EXAMPLE = ROOT / "reports" / "example"


@pytest.fixture(scope="module")
def committed() -> tuple[pd.DataFrame, dict, str]:
    return study.read_run(SEARCH)


@pytest.fixture
def written(tmp_path: Path, committed: tuple[pd.DataFrame, dict, str]) -> Path:
    run_dir = tmp_path / SEARCH.name
    run_dir.mkdir()
    return study.write_study(run_dir, *committed)


def made_up_trials(count: int, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """`count` trials of a small space whose objective is driven by the learning rate alone, plus noise."""
    rng = np.random.default_rng(seed)
    space = {
        "conv_blocks": {"min": 2, "max": 3},
        "filters": [16, 32],
        "dropout": {"min": 0.0, "max": 0.5, "step": 0.1},
        "learning_rate": {"min": 1e-4, "max": 1e-2},
        "pooling": ["flatten", "average"],
    }
    blocks = rng.integers(2, 4, count)
    learning_rate = 10 ** rng.uniform(-4, -2, count)
    trials = pd.DataFrame(
        {
            "trial_id": [f"{i:02d}" for i in range(count)],
            "status": "COMPLETED",
            "objective": 0.95 - 0.2 * (np.log10(learning_rate) + 3) ** 2 + rng.normal(0, 0.002, count),
            "epochs_run": 4.0,
            "seconds": rng.uniform(30, 90, count),
            "conv_blocks": blocks,
            "filters_0": rng.choice([16, 32], count),
            "filters_1": rng.choice([16, 32], count),
            "filters_2": np.where(blocks > 2, rng.choice([16, 32], count), np.nan),
            "dropout": rng.integers(0, 6, count) / 10,
            "learning_rate": learning_rate,
            "pooling": rng.choice(["flatten", "average"], count),
            "error": "",
        }
    )
    return trials, space


def test_distributions_follow_the_search_space(committed: tuple[pd.DataFrame, dict, str]) -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = study.distributions(committed[1])
    assert space["learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["dropout"] == FloatDistribution(0.0, 0.5, step=0.1)
    assert space["conv_blocks"] == IntDistribution(2, 4)
    assert space["batch_norm"] == CategoricalDistribution([False, True])
    assert space["filters_3"] == CategoricalDistribution([16, 32, 64, 128])
    assert space["units_2"] == CategoricalDistribution([64, 128, 264, 512])
    assert "filters" not in space and "dense_units" not in space
    # Every hyperparameter column of trials.csv has its distribution.
    assert set(tables.hyperparameter_columns(committed[0])) <= set(space)


def test_study_file_reads_back_as_trials_csv(written: Path, committed: tuple[pd.DataFrame, dict, str]) -> None:
    import optuna

    trials, search_space, objective = committed
    loaded = optuna.load_study(study_name=None, storage=f"sqlite:///{written}")
    assert loaded.direction == optuna.study.StudyDirection.MAXIMIZE and loaded.metric_names == [objective]
    assert loaded.user_attrs["search_space"] == search_space
    frozen = loaded.get_trials()
    assert len(frozen) == len(trials) == 25
    for (_, row), trial in zip(trials.iterrows(), frozen):
        assert trial.state == (
            optuna.trial.TrialState.COMPLETE if row["status"] == "COMPLETED" else optuna.trial.TrialState.FAIL
        )
        assert trial.value == pytest.approx(row["objective"])
        used = {name: row[name] for name in tables.hyperparameter_columns(trials) if pd.notna(row[name])}
        assert set(trial.params) == set(used)
        for name, value in used.items():
            expected = value if isinstance(value, str) else pytest.approx(float(value))
            assert trial.params[name] == expected, (row["trial_id"], name)
        assert type(trial.params["conv_blocks"]) is int and type(trial.params["batch_norm"]) is bool
        assert trial.user_attrs["trial_id"] == row["trial_id"]
        assert trial.user_attrs["seconds"] == pytest.approx(row["seconds"])
        assert trial.user_attrs["epochs_run"] == int(row["epochs_run"])
        assert trial.user_attrs["baseline"] == (row["trial_id"] == "00")
    assert frozen[0].params == {name: value for name, value in BASELINE.items()}
    assert [path.name for path in written.parent.iterdir()] == ["study.db"]  # no temporary left beside it


def load_trials(path: Path) -> list:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=None, storage=f"sqlite:///{path}").get_trials()


def test_trials_last_their_recorded_seconds(tmp_path: Path, committed: tuple[pd.DataFrame, dict, str]) -> None:
    trials, search_space, objective = committed
    ended = datetime(2026, 12, 1, 6, 43, 15)
    frozen = load_trials(study.write_study(tmp_path, trials, search_space, objective, search_ended=ended))
    durations = [trial.duration.total_seconds() for trial in frozen]
    assert durations == pytest.approx(list(trials["seconds"]), abs=1e-5) and min(durations) > 10
    # Only seconds were recorded: the trials lie end to end in trial order, the last ending with the search.
    for earlier, later in zip(frozen, frozen[1:]):
        assert earlier.datetime_complete == later.datetime_start
    assert frozen[-1].datetime_complete == ended
    first_start = ended - timedelta(seconds=trials["seconds"].sum())
    assert abs((frozen[0].datetime_start - first_start).total_seconds()) < 1e-3


def test_recorded_start_and_end_times_are_kept() -> None:
    trials, space = made_up_trials(4)
    # Trial 0 ran before times were recorded (a run resumed across the change); trial 2 failed without seconds.
    started = [None, "2026-12-01T10:00:00+00:00", "2026-12-01T10:05:00+00:00", "2026-12-01T10:06:30+00:00"]
    ended = [None, "2026-12-01T10:04:00+00:00", "2026-12-01T10:05:02+00:00", "2026-12-01T10:08:00+00:00"]
    trials = trials.assign(started=started, ended=ended)
    trials.loc[0, "seconds"] = 90.0
    made = study.to_study(trials, space, "val_auc")
    assert "not_in_search_space" not in made.user_attrs  # started and ended are no hyperparameters
    local = [None] + [datetime.fromisoformat(moment).astimezone().replace(tzinfo=None) for moment in started[1:]]
    for trial, start, end in zip(made.trials[1:], local[1:], ended[1:]):
        assert trial.datetime_start == start
        assert trial.datetime_complete == datetime.fromisoformat(end).astimezone().replace(tzinfo=None)
    assert [trial.duration.total_seconds() for trial in made.trials[1:]] == [240, 2, 90]
    assert made.trials[0].datetime_complete == local[1] and made.trials[0].duration == timedelta(seconds=90)
    assert "1 of 4 trials recorded only their seconds" in made.user_attrs["trial_times"]
    unix = trials.assign(started=[None, 1.7646e9, 1.7646e9 + 300, 1.7646e9 + 400], ended=ended)
    assert study.to_study(unix, space, "val_auc").trials[1].datetime_start == datetime.fromtimestamp(1.7646e9)


def test_the_search_ends_before_the_retrains_that_followed_it() -> None:
    run = json.loads((EXAMPLE / "metrics.json").read_text())["run"]
    finished = datetime.fromisoformat(run["finished"])
    assert study.search_ended(run) == finished - timedelta(seconds=run["wall_seconds"]["final_training"])
    baseline = {"finished": run["finished"], "wall_seconds": {"data": 1.0, "final_training": 9.0, "total": 10.0}}
    assert study.search_ended(baseline) is None
    assert study.search_ended({"wall_seconds": run["wall_seconds"]}) is None
    assert study.search_ended({**run, "finished": "yesterday"}) is None  # trials still laid out, ending now


def test_failed_trials_and_a_loss_objective() -> None:
    import optuna

    trials, space = made_up_trials(4)
    trials.loc[2, ["status", "objective", "seconds", "error"]] = ["FAILED", np.nan, np.nan, "ResourceExhaustedError"]
    made = study.to_study(trials, space, "val_loss")
    assert made.direction == optuna.study.StudyDirection.MINIMIZE
    failed = made.trials[2]
    assert failed.state == optuna.trial.TrialState.FAIL and failed.value is None
    assert failed.user_attrs["seconds"] is None and failed.user_attrs["error"] == "ResourceExhaustedError"
    for trial, blocks in zip(made.trials, trials["conv_blocks"]):
        assert ("filters_2" in trial.params) == (blocks > 2)  # a conditional hyperparameter only where used


def test_a_failed_write_keeps_the_old_study(tmp_path: Path) -> None:
    trials, space = made_up_trials(4)
    path = study.write_study(tmp_path, trials, space, "val_auc")
    before = path.read_bytes()
    outside = trials.assign(pooling="max")  # not one of the space's choices
    with pytest.raises(ValueError, match="pooling"):
        study.write_study(tmp_path, outside, space, "val_auc")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["study.db"]


def test_importances_rank_the_driving_hyperparameter_first() -> None:
    trials, space = made_up_trials(40)
    table = study.importances(trials, space, "val_auc", resamples=5)
    assert table["parameter"].iloc[0] == "learning_rate" and table["rank"].iloc[0] == 1
    assert table["fanova"].iloc[0] > 0.5 and table.sort_values("ped_anova")["parameter"].iloc[-1] == "learning_rate"
    assert (table["fanova_low"] <= table["fanova_high"]).all()
    assert table.attrs["n_trials"] == 40 and "filters_2" in table.attrs["left_out"]
    assert "filters_2" not in set(table["parameter"])
    sentence = study.importance_sentence(table)
    assert sentence.startswith("Over 40 completed trials, fANOVA finds learning_rate")


def test_importances_cope_with_a_tiny_search() -> None:
    trials, space = made_up_trials(3)
    table = study.importances(trials, space, "val_auc")
    assert table.empty and list(table.columns) == study.IMPORTANCE_COLUMNS
    assert table.attrs["n_trials"] == 3 and "3 completed" in table.attrs["reason"]
    assert study.importance_sentence(table).startswith("Which hyperparameters mattered cannot be said yet")
    failed = trials.assign(status="FAILED")
    assert study.importances(failed, space, "val_auc").attrs["n_trials"] == 0


def test_importances_on_a_committed_search(committed: tuple[pd.DataFrame, dict, str]) -> None:
    table = study.importances(*committed, resamples=3)
    assert len(table) == 12 and table.attrs["n_trials"] == 25
    assert table["fanova"].sum() == pytest.approx(1) and table["ped_anova"].sum() == pytest.approx(1)
    assert set(table.attrs["left_out"]) == {"filters_2", "filters_3", "units_1", "units_2"}
    assert "even share (1/12 = 0.08)" in study.importance_sentence(table)


def test_importing_the_modules_does_not_import_optuna() -> None:
    code = "import sys; import reporting.study, pipeline.eta, reporting.search_plots; print('optuna' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def _degenerate(trials: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {
        "all": trials,
        "none": trials.head(0),
        "one": trials.head(1),
        "all failed": trials.assign(status="FAILED", objective=np.nan),
    }


@pytest.mark.parametrize("case", ["all", "none", "one", "all failed"])
def test_each_figure_draws_real_and_degenerate_searches(case: str, committed: tuple[pd.DataFrame, dict, str]) -> None:
    trials, space, objective = committed
    table = _degenerate(trials)[case]
    figures = [
        search_plots.objective_by_hyperparameter_figure(table, objective, space),
        search_plots.objective_by_hyperparameter_figure(table, objective),
        search_plots.parallel_coordinates_figure(table, objective, space, BASELINE),
        search_plots.parallel_coordinates_figure(table, objective),
        search_plots.best_so_far_figure(table, objective),
    ]
    for figure in figures:
        assert isinstance(figure, Figure)
        figure.canvas.draw()  # lays it out for real: errors in drawing show here


def test_best_so_far_follows_the_cumulative_time(committed: tuple[pd.DataFrame, dict, str]) -> None:
    trials, _, objective = committed
    ax = search_plots.best_so_far_figure(trials, objective).axes[0]
    steps = ax.get_lines()[0]
    assert steps.get_xdata()[-1] == pytest.approx(trials["seconds"].sum() / 60)
    assert steps.get_ydata()[-1] == pytest.approx(trials["objective"].max())


def test_finalists_figure() -> None:
    figure = search_plots.finalists_figure([0.98, 0.97, 0.975], [0.96, 0.972, 0.95], ["07", "12", "03"], "val_auc")
    assert isinstance(figure, Figure) and len(figure.axes[0].texts) == 3
    assert isinstance(search_plots.finalists_figure([], [], []), Figure)
    assert isinstance(search_plots.finalists_figure([0.9], [0.9], ["00"]), Figure)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.e2e
def test_optuna_dashboard_opens_the_study_file(written: Path, committed: tuple[pd.DataFrame, dict, str]) -> None:
    pytest.importorskip("optuna_dashboard")
    executable = Path(sys.executable).with_name("optuna-dashboard")
    command = str(executable) if executable.exists() else shutil.which("optuna-dashboard")
    assert command, "optuna-dashboard is installed but its command is not on the PATH"
    port = free_port()
    server = subprocess.Popen(
        [command, f"sqlite:///{written}", "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base, deadline, studies = f"http://127.0.0.1:{port}", time.monotonic() + 60, None
        while studies is None:
            try:
                studies = _get_json(f"{base}/api/studies")["study_summaries"]
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, f"optuna-dashboard exited: {server.stderr.read().decode()[-2000:]}"
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.5)
        assert [(s["study_name"], s["directions"]) for s in studies] == [(SEARCH.name, ["maximize"])]
        detail = _get_json(f"{base}/api/studies/{studies[0]['study_id']}")
        trials = committed[0]
        assert len(detail["trials"]) == len(trials)
        values = [trial["values"][0] if "values" in trial else math.nan for trial in detail["trials"]]
        assert values == pytest.approx(list(trials["objective"]), nan_ok=True)
        assert detail["best_trials"][0]["number"] == int(trials["objective"].idxmax())
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stderr.close()


def _as_optuna(parameter: kt.engine.hyperparameters.HyperParameter) -> Any:
    """What a Keras Tuner hyperparameter draws, as the Optuna distribution that should mirror it; a Fixed one's value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kinds = kt.engine.hyperparameters
    if isinstance(parameter, kinds.Int):
        return IntDistribution(parameter.min_value, parameter.max_value)
    if isinstance(parameter, kinds.Float):
        log = parameter.sampling == "log"
        return FloatDistribution(parameter.min_value, parameter.max_value, log=log, step=parameter.step)
    if isinstance(parameter, kinds.Boolean):
        return CategoricalDistribution([False, True])
    if isinstance(parameter, kinds.Choice):
        return CategoricalDistribution(parameter.values)
    return parameter.value


def _both_forms(search_space: dict) -> tuple[dict, dict]:
    """Keras Tuner's hyperparameters (hypermodel.py) and Optuna's distributions (study.py) of one search space."""
    declared = kt.HyperParameters()
    ChestXRayHyperModel(80, 1, search_space, {}).declare(declared)
    return {parameter.name: parameter for parameter in declared.space}, study.distributions(search_space)


@pytest.mark.parametrize("preset", [None, "configs/smoke.yaml", "configs/archive/cpu-hyperband.yaml"])
def test_one_declaration_makes_both_the_keras_tuner_and_the_optuna_forms(preset: str | None) -> None:
    search_space = config.load(ROOT / preset if preset else None).search_space.as_dict()
    search_space["brightness"] = {"min": 0.0, "max": 0.0, "step": 0.1}  # a fixed one too
    tuner_form, optuna_form = _both_forms(search_space)
    assert list(tuner_form) == list(optuna_form)
    for name, parameter in tuner_form.items():
        mirrored, distribution = _as_optuna(parameter), optuna_form[name]
        if isinstance(parameter, kt.engine.hyperparameters.Fixed):  # Optuna's: a range or list of that one value
            assert distribution.single() and mirrored in (getattr(distribution, "choices", None) or [distribution.low])
        else:
            assert distribution == mirrored, name
        assert study.space_key(name) == config.hyperparameter(name).key


def test_a_new_declared_hyperparameter_reaches_both_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    # One row each: its kind, its search_space entry's check and the baseline's value.
    added = (
        config.Hyperparameter("weight_decay", "log", config._range(config._number(0, 1, include_low=False)), 1e-4),
        config.Hyperparameter(
            "kernel", "choice", config._int_list, (3, 3, 3, 3), per="conv_blocks", key="kernel_sizes"
        ),
    )
    monkeypatch.setattr(config, "HYPERPARAMETERS", config.HYPERPARAMETERS + added)
    search_space = {
        **config.load().search_space.as_dict(),
        "weight_decay": {"min": 1e-6, "max": 1e-2},
        "kernel_sizes": [3, 5],
    }
    tuner_form, optuna_form = _both_forms(search_space)
    new = ["weight_decay", "kernel_0", "kernel_1", "kernel_2", "kernel_3"]
    assert list(tuner_form)[-5:] == list(optuna_form)[-5:] == new  # drawn last: earlier seeded points stay put
    assert tuner_form["weight_decay"].sampling == "log" and optuna_form["weight_decay"].log
    assert tuner_form["weight_decay"].default == 1e-4 and tuner_form["kernel_0"].default == 3  # the rows' baseline
    assert tuner_form["kernel_3"].conditions[0].values == [4] and optuna_form["kernel_3"].choices == (3, 5)
    assert study.space_key("kernel_2") == "kernel_sizes"
