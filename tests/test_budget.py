"""The time budget's arithmetic (budget.py), its config key and flag, and the presets and run names that go
with the default protocol. Unit tests: no training."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import budget
import config
import search
from errors import ConfigError
from hypermodel import BASELINE
from pipeline import start

REPO = Path(search.__file__).resolve().parent
KEPT = REPO / "bench" / "results" / "quality"
# Keys that say where and how a run ran, not what it computed.
PLACE_KEYS = {"data_dir", "reports_dir", "run_name", "precision", "backend", "tensorboard", "compilation_cache",
              "distribution", "distributed", "time_budget", "seed", "skip_bad_images"}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400), ("1h30m", 5400), ("600s", 600), ("1.5h", 5400), ("2m", 120), ("1h 5m", 3900), (45, 45)],
)
def test_durations_in_the_forms_people_write(text, seconds) -> None:
    assert budget.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "90", "1d", "0m", "m", "-5m", True])
def test_a_bad_duration_names_the_forms(text) -> None:
    with pytest.raises(ValueError, match="90m, 1h30m, 600s"):
        budget.parse_duration(text)


def test_duration_text_is_one_spelling() -> None:
    assert [budget.duration_text(s) for s in (5400, 600, 45, 3600, 3661)] == ["1h30m", "10m", "45s", "1h", "1h1m1s"]


def test_a_point_costs_by_its_size() -> None:
    from hypermodel import model_size

    def work(values: dict, channels: int = 1) -> float:
        return budget.point_work(*model_size(values, 80, channels), bool(values["batch_norm"]))

    small = {**BASELINE, "conv_blocks": 2, "filters_0": 16, "filters_1": 16}
    wide = {**BASELINE, "filters_0": 128, "filters_1": 128}
    baseline = work(BASELINE)
    assert work(small) < baseline < work(wide)
    assert work({**BASELINE, "batch_norm": True}) > 2 * baseline  # batch normalisation's passes cost more than its sums
    assert work(BASELINE, channels=3) > baseline  # RGB's first convolution
    # Inactive per-layer values (a deeper point's leftovers) change nothing.
    assert work({**small, "filters_3": 128}) == work(small)


def test_the_price_is_seconds_over_work_epochs() -> None:
    price = budget.Price.fitted([(2.0, 4, 16.0), (4.0, 2, 16.0), (1.0, 0, 5.0)], "two trials")
    assert price.scale == pytest.approx(32 / 16)
    assert price.epoch(3.0) == pytest.approx(6.0)
    assert budget.Price.fitted([], "nothing") is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def planner(seconds: float, clock: FakeClock, *, max_trials: int = 25, finalists: int = 4) -> budget.Planner:
    """A planner whose trial (8 epochs of work 1 at 1 s) costs 8 s and whose retrain (45 epochs) 45 s."""
    return budget.Planner(
        budget.Budget(seconds, clock),
        mean_work=1.0,
        baseline_work=1.0,
        epochs=8,
        final_epochs=45,
        max_trials=max_trials,
        max_finalists=finalists,
        price=budget.Price(1.0, "a test"),
    )


def test_without_a_budget_the_header_eta_prices_the_rest_as_a_plan_would() -> None:
    # One price model: 5 of 25 trials ended, 6 epochs each at work 1 (1 s an epoch), then the final stage: the
    # baseline's point and 4 finalists (two known, of work 2 and 3; two at the mean), 3 repeats each, 45 epochs.
    free = budget.Planner(budget.Budget(None, FakeClock()), 1.0, 1.0, 8, 45, 25, 4, budget.Price(1.0, "a test"), 3)
    assert not free.budget.limited and free.budget.left() == float("inf")
    final = 45 * 3 * (1 + 2 + 3 + 1 + 1)
    line = free.eta_line(5, 25, 6.0, [2.0, 3.0])
    assert line == f"ETA search {budget.format_duration(120)}, run {budget.format_duration(120 + final)} (from a test)"
    assert free.eta_line(5, None, 6.0, []) == "ETA search unknown (number of trials unknown)"
    free.price = None
    assert free.eta_line(0, 25, 8.0, []) == "ETA search unknown (no finished trial to go by)"
    assert planner(600, FakeClock()).eta_line(5, 25, 6.0, []) == "ETA: within the time budget (the plan above)"


def test_a_candidate_is_priced_at_its_own_point_before_its_trial_and_a_near_search_at_near_points() -> None:
    from hypermodel import ChestXRayHyperModel
    from pipeline.training import mean_trial_work

    clock = FakeClock()
    free = planner(600, clock, max_trials=60, finalists=1)
    costly = planner(600, clock, max_trials=60, finalists=1)
    costly.candidate_works = [3.0]  # its retrain 135 s, not the mean point's 45 s
    assert costly.plan(0).final_seconds == free.plan(0).final_seconds + 90
    assert costly.plan(0).trials < free.plan(0).trials
    # Points near the baseline's cost about what it does, well under the whole space's mean.
    settings = config.load()
    model = ChestXRayHyperModel(80, 1, settings.search_space.as_dict(), settings.augmentation.as_dict())
    whole = mean_trial_work(model, settings)
    near = mean_trial_work(model, settings.replace(local_share=1.0, local_changes=2))
    assert whole == pytest.approx(model.mean_work()) and model.work(BASELINE) < near < 0.7 * whole


def test_the_plan_keeps_finalists_first_each_with_its_five_trials() -> None:
    clock = FakeClock()
    # 600 s: report 20 s; t trials x 8 s + (1 + f) x 45 s with f = (t - 1) // 5.
    plan = planner(600, clock).plan(0)
    assert plan.finalists == (plan.trials - 1) // 5
    assert plan.trials * 8 + (1 + plan.finalists) * 45 + 20 <= 600
    bigger = planner(600, clock).plan(0)
    assert (bigger.trials, bigger.finalists) == (plan.trials, plan.finalists)
    assert planner(60 * 60, clock).plan(0).trials == 25  # max_trials caps it
    assert planner(60 * 60, clock).plan(0).finalists == 4
    assert planner(90, clock).plan(0).trials == 3  # 3 x 8 + 45 + 20 = 89


def test_the_plan_is_made_again_with_the_time_left() -> None:
    clock = FakeClock()
    ahead = planner(400, clock)
    # 4 finalists would need 21 trials (168 s) and 5 retrains and the report (245 s): 413 s. 3 need 16 trials and
    # 200 s, which leaves room for 25 trials in all: 25 x 8 s + 4 x 45 s + 20 s = 400 s.
    first = ahead.plan(0)
    assert (first.trials, first.finalists) == (25, 3)
    clock.now = 200.0  # slower than planned: 10 trials done, 200 s left
    later = ahead.plan(10)  # 3 finalists' 4 retrains alone take 200 s; 2 need 1 more trial: 5 x 8 s + 155 s = 195 s
    assert (later.trials, later.finalists) == (5, 2)


def test_finalists_are_not_starved_by_trials_done() -> None:
    """18 trials done make room for 3 finalists by the protocol's share, but only the baseline's retrain fits the
    time left: the plan keeps it and fills the rest with trials, instead of planning none."""
    clock = FakeClock()
    ahead = planner(1000, clock)
    clock.now = 1000 - 100.0  # 100 s left: the baseline's retrain and the report (3% of 1000 s) take 75 s
    plan = ahead.plan(18)
    assert (plan.trials, plan.finalists) == (3, 0)
    clock.now = 1000 - 130.0  # 130 s: one finalist more (45 s) fits, with 1 trial
    assert (ahead.plan(18).trials, ahead.plan(18).finalists) == (1, 1)


def test_a_trial_starts_only_where_it_leaves_the_final_stage_its_time() -> None:
    clock = FakeClock()
    ahead = planner(100, clock, finalists=0)
    assert ahead.may_start(work=1.0, trials_done=0, finalist_works=[], trial_epochs=8)  # the baseline's, always
    clock.now = 20.0  # 80 s left: 8 s trial + 45 s retrain + 20 s report = 73 s
    assert ahead.may_start(work=1.0, trials_done=1, finalist_works=[], trial_epochs=8)
    assert not ahead.may_start(work=2.0, trials_done=1, finalist_works=[], trial_epochs=8)  # a point twice the size
    assert ahead.budget.cuts and "stopped after 1 of 25 trials" in ahead.budget.cuts[0]


def test_the_final_stage_shrinks_rather_than_overrun() -> None:
    clock = FakeClock()
    ahead = planner(200, clock)
    clock.now = 50.0  # 150 s left: two retrains (90 s) and the report (20 s) fit, three (135 s + 20 s) do not
    assert ahead.finalists_that_fit([1.0, 1.0, 1.0, 1.0]) == 2
    assert "2 of 3 finalists not retrained" in ahead.budget.cuts[-1]
    clock.now = 199.0
    assert ahead.finalists_that_fit([1.0, 1.0]) == 1  # the baseline's point is always retrained


def test_the_final_stage_retrains_no_more_finalists_than_the_last_plan_funded() -> None:
    """Every plan line of a search said "2 finalists ... fit", and its final stage then retrained 4: the time was
    there at the end, but the plan had spent it on trials."""
    clock = FakeClock()
    ahead = planner(600, clock)
    assert ahead.plan(trials_done=20).finalists == ahead.funded == 4
    clock.now = 430.0  # 170 s left: the plan prices finalists at the space's mean work and keeps 2 (135 s + 20 s)
    assert ahead.plan(trials_done=24).finalists == ahead.funded == 2
    # The chosen finalists are smaller than the mean: all four would fit (65 s + 4 x 22.5 s), the plan funded two.
    assert ahead.finalists_that_fit([1.0, 0.5, 0.5, 0.5, 0.5]) == 3
    assert ahead.budget.cuts == ["2 of 4 finalists not retrained: the search's last plan kept time for 2"]


def test_a_budget_too_small_for_the_baseline_says_what_would_fit() -> None:
    message = planner(60, FakeClock()).too_small()
    assert message.startswith("time budget 1m is too small")
    assert "pass --time-budget 2m" in message  # 8 s trial + 45 s retrain + 20 s report = 73 s, with a margin
    # Or fewer retrain epochs in the same minute: 60 s / 1.25 less the trial and the report leaves 20 one-second epochs.
    assert message.endswith("or keep this budget with --final-epochs 20")
    assert "--final-epochs" not in planner(20, FakeClock()).too_small()  # not even one epoch fits beside the report
    assert "the baseline's retrain (45 epochs)" in planner(60, FakeClock()).too_small(search=False)  # 65 s
    assert planner(70, FakeClock()).too_small(search=False) is None  # a baseline run has no trial
    assert planner(120, FakeClock()).too_small() is None


def test_the_budget_key_takes_one_spelling_and_refuses_a_bad_one(tmp_path) -> None:
    settings = config.load(None, {"--time-budget": ("time_budget", "90m")})
    assert settings.time_budget == "1h30m"
    preset = tmp_path / "mine.yaml"
    preset.write_text("time_budget: soon\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: time_budget: 'soon' is not a duration: write it as 90m"):
        config.load(preset)
    assert config.load().time_budget is None


def test_baseline_runs_the_notebook_whatever_config_yaml_says(tmp_path) -> None:
    notebook = config.load(notebook=True)
    assert (notebook.color_mode, notebook.image_size, notebook.final_schedule) == ("rgb", 80, "constant")
    assert (notebook.objective, notebook.threshold) == ("val_auc", "youden")
    assert config.load().color_mode == "grayscale"  # what config.yaml says
    experiment = tmp_path / "ema.yaml"
    experiment.write_text("final_ema_momentum: 0.9\nthreshold: plateau\n")
    changed = config.load(experiment, {"--image-size": ("image_size", 48)}, notebook=True)
    # A --config file and flags still say what an experiment on the baseline changes.
    assert (changed.final_ema_momentum, changed.threshold, changed.image_size) == (0.9, "plateau", 48)
    assert changed.color_mode == "rgb"


def comparable(settings: dict) -> dict:
    return {key: value for key, value in settings.items() if key not in PLACE_KEYS}


@pytest.mark.parametrize(
    ("preset", "kept_run", "notebook"),
    [
        (None, "finalists-search-seed49", False),  # config.yaml is the finalist protocol
        ("configs/archive/finalists.yaml", "finalists-search-seed50", False),
        ("configs/archive/tuned.yaml", "tuned-search-seed45", False),
        (None, "baseline-80px-seed49", True),  # --baseline, whatever config.yaml says
    ],
)
def test_every_preset_gives_the_settings_its_committed_runs_recorded(preset, kept_run, notebook) -> None:
    """A preset lists only what it changes, so a change of config.yaml would move it: this keeps it true."""
    recorded = config.recorded(KEPT / kept_run / "config.yaml")
    loaded = config.load(REPO / preset if preset else None, notebook=notebook).as_dict()
    recorded = {key: value for key, value in recorded.items() if key in loaded}
    if notebook:  # a baseline run searches nothing: its search keys say nothing of what it trained
        loaded = {key: value for key, value in loaded.items() if key in config.NOTEBOOK_SETTINGS}
        recorded = {key: value for key, value in recorded.items() if key in config.NOTEBOOK_SETTINGS}
    assert comparable(loaded) == comparable(recorded)


def test_no_two_presets_share_a_run_folder() -> None:
    presets = [None, *sorted((REPO / "configs").rglob("*.yaml"))]
    names = set()
    for preset in presets:
        settings = config.load(preset)
        for budget_text in (None, "1h"):
            named = settings.replace(time_budget=budget_text)
            names.add(start.default_run_name(named, "search", False, preset if preset else None))
    assert len(names) == 2 * len(presets)
    assert start.default_run_name(config.load(), "search", False) == "search-random-80px-seed42"
    smoke = config.load(REPO / "configs" / "smoke.yaml")
    assert start.default_run_name(smoke, "search", True, Path("configs/smoke.yaml")) == (
        "synthetic-smoke-search-random-48px-seed42"
    )


def test_every_preset_loads_and_lists_only_what_it_changes() -> None:
    default = yaml.safe_load((REPO / "config.yaml").read_text())
    for preset in sorted((REPO / "configs").rglob("*.yaml")):
        values = yaml.safe_load(preset.read_text()) or {}
        config.load(preset)
        for key, value in values.items():
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if default[key].get(k) != v}
                assert value, f"{preset.name}: {key} repeats config.yaml"
            else:
                assert default[key] != value, f"{preset.name}: {key} repeats config.yaml's {value!r}"


@pytest.mark.e2e
def test_a_budgeted_run_prints_and_records_its_plan_and_a_budget_too_small_is_refused(tmp_path, monkeypatch, capsys):
    import json
    import re

    from conftest import TINY, TINY_ONE_EPOCH, best_point_only

    monkeypatch.chdir(tmp_path)
    flags = [*TINY_ONE_EPOCH, *best_point_only(tmp_path), "--tuner", "random", "--max-trials", "2", "--epochs", "1"]
    assert search.main([*flags, "--time-budget", "10m"]) == 0
    out = capsys.readouterr().out
    assert out.count("Time budget 10m, ") == 2  # before each trial, re-planned
    assert "more trials (0 done of 2)" in out and "priced from a timed epoch of the baseline's point" in out
    assert "priced from this run's 1 finished trial)" in out
    run_dir = tmp_path / "reports" / "synthetic-best_point-search-random-48px-seed7-budget10m"
    recorded = json.loads((run_dir / "metrics.json").read_text())["budget"]
    assert (recorded["seconds"], recorded["text"], recorded["cut"], len(recorded["plans"])) == (600, "10m", [], 2)
    assert (
        "| time budget | 10m bought 2 trials (the baseline's point and 1 other)" in (run_dir / "report.md").read_text()
    )

    assert search.main([*TINY, "--time-budget", "5s"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: time budget 5s is too small: the baseline's trial, its retrain (2 epochs)")
    # What it asks for is whole minutes that hold what it needs (1m on an idle machine; more on a busy one, where
    # loading the data already took part of the budget).
    need, enough = re.search(r"need about (.+?) here .* pass --time-budget (\d+)m", error).groups()
    assert 1 <= int(enough) and budget.parse_duration(need) <= 60 * int(enough) < budget.parse_duration(need) + 180


@pytest.mark.e2e
def test_a_refused_budget_leaves_nothing_behind_and_each_advice_starts_as_printed(tmp_path, monkeypatch, capsys):
    """A budget refused at the start writes no run folder, so each flag its advice names, added to the same command,
    starts a run in the same reports folder (it once said "was started with other settings: pass --overwrite")."""
    import re

    from conftest import TINY, best_point_only

    monkeypatch.chdir(tmp_path)
    flags = [*TINY, *best_point_only(tmp_path), "--tuner", "random", "--max-trials", "1", "--epochs", "1"]
    assert search.main([*flags, "--time-budget", "2s"]) == 2
    error = capsys.readouterr().err
    assert not list((tmp_path / "reports").glob("*/config.yaml")), "the refused run left its folder behind"
    advice = re.findall(r"(--time-budget \S+|--final-epochs \d+)", error.split("; ", 1)[1])
    assert advice and advice[0].startswith("--time-budget")
    for suggestion in advice:
        argv = [*flags, "--time-budget", "2s", *suggestion.split()]
        assert search.main(argv) == 0, f"the advice {suggestion!r} did not start: {capsys.readouterr().err}"
        capsys.readouterr()


def test_a_retrain_that_ran_its_whole_schedule_records_no_cut() -> None:
    """With --final-epochs 5 the report once said "a retrain stopped after epoch 5: the time budget was running
    out", though 5 was the whole schedule; a fit stopped early says which epoch of how many."""
    import keras

    from pipeline import training

    clock = FakeClock()
    ahead = planner(100, clock)
    (deadline,) = training.budget_deadline(ahead, final_stage=False)
    deadline.set_params({"epochs": 5})
    deadline.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    deadline.model.stop_training = False
    clock.now = 99.0  # 1 s left, less than the report's 20 s
    deadline.on_epoch_begin(4)
    deadline.on_epoch_end(4)
    assert ahead.budget.cuts == [] and not deadline.model.stop_training
    deadline.on_epoch_begin(2)
    deadline.on_epoch_end(2)
    assert ahead.budget.cuts == ["a retrain stopped after epoch 3 of 5: the time budget was running out"]
    assert deadline.model.stop_training


def test_a_plan_that_buys_no_search_says_so_in_words() -> None:
    """A 5-minute budget's plan read "0 more trials ... and 0 finalists" and nothing said what that meant."""
    clock = FakeClock()
    ahead = planner(200, clock)
    clock.now = 130.0  # 70 s left: the baseline's retrain and the report (65 s), nothing more
    plan = ahead.plan(trials_done=1)
    assert (plan.trials, plan.finalists) == (0, 0)
    assert (
        "1 more trial (0 done of 25) and 0 finalists besides the baseline's point fit: the budget buys no search beyond "
        "the baseline's own trial, and the final stage retrains the baseline's point alone"
    ) in ahead.plan_line(ahead.plan(trials_done=0), 0)  # the baseline's trial always runs: the plan counts it
    assert (
        ahead.plan_line(plan, 12)
        .split(" (a trial")[0]
        .endswith(
            "0 more trials (12 done of 25) and 0 finalists besides the baseline's point fit: no more trials, and the final "
            "stage retrains the baseline's point alone"
        )
    )
    assert "buys no search" not in ahead.plan_line(planner(600, FakeClock()).plan(0), 0)
