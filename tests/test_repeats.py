"""Repeats and racing (pipeline/repeats.py): each finalist retrained with training seeds of its own, challengers
raced against the incumbent on their repeats' mean, within a time budget. A finalist run with repeats end to end
(resumed repeat by repeat, its model averaging them, served by predict.py) is in tests/test_final_model.py."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import runs
from pipeline import repeats
from pipeline.context import RunContext


def test_the_first_repeat_trains_with_the_runs_seed_and_each_other_with_one_of_its_own():
    assert [repeats.repeat_seed(53, k) for k in (1, 2, 3)] == [53, 1053, 2053]
    # The first repeat's backup keeps the folder name a run without repeats gives it.
    assert repeats._backup_name("04", 1) == "finalist-04" and repeats._backup_name("04", 2) == "finalist-04-repeat2"


def finalist(trial_id: str, *validation: np.ndarray) -> repeats.Finalist:
    candidate = SimpleNamespace(trial_id=trial_id, is_baseline=trial_id == "00")
    return repeats.Finalist(candidate, validation=list(validation))


def test_a_clearly_worse_challenger_leaves_the_race_and_a_close_one_races_on():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    patients = [f"p{i // 2}" for i in range(400)]
    good = np.where(labels == 1, 0.85, 0.15)
    close = np.clip(good + rng.normal(0, 0.02, 400), 0.01, 0.99)
    poor = np.where(labels == 1, 0.6, 0.4)
    incumbent, near, worse = finalist("00", good, good), finalist("03", close, close), finalist("07", poor)
    records = repeats.race_round([incumbent, near, worse], labels, patients, repeat=1)
    # Each challenger is compared over the repeats both have: trial 07 has one, so one of the incumbent's.
    assert [(r["trial_id"], r["repeats"], r["clearly_worse"]) for r in records] == [("03", 2, False), ("07", 1, True)]
    assert records[1]["ci95"][0] > 0 and records[1]["difference"] > 0
    assert worse.clearly_worse and "clearly worse" in worse.left_race and near.left_race is None
    # Out of the race, it is compared no more.
    assert [r["trial_id"] for r in repeats.race_round([incumbent, near, worse], labels, patients, 2)] == ["03"]


def test_a_budget_keeps_the_baselines_repeats_and_races_challengers_only_while_they_fit():
    import budget

    now = [0.0]
    planner = budget.Planner(
        budget.Budget(400, lambda: now[0]), mean_work=1.0, baseline_work=1.0, epochs=8, final_epochs=45,
        max_trials=25, max_finalists=4, price=budget.Price(1.0, "a test"), repeats=3,
    )  # fmt: skip
    # A retrain costs 45 s, the report 20 s: three of the baseline's point (135 s) are kept before any finalist.
    assert planner.minimum_final_seconds() == pytest.approx(3 * 45 + 20)
    now[0] = 200.0  # 200 s left: the baseline's three repeats and one finalist (180 s + 20 s) fit, two do not
    assert planner.finalists_that_fit([1.0, 1.0, 1.0]) == 2
    now[0] = (
        300.0  # 100 s left, one of the incumbent's repeats still to come: a challenger's (45 + 45 + 20) does not fit
    )
    assert planner.repeat_fits(1.0, later_incumbent_repeats=0, what="trial 3's repeat 2")
    assert not planner.repeat_fits(1.0, later_incumbent_repeats=1, what="trial 3's repeat 2")
    assert "trial 3's repeat 2 not retrained" in planner.budget.cuts[-1]
    # A resumed run keeps the finalists whose retrains it had begun, whatever is left, and records no cut for them.
    cuts = len(planner.budget.cuts)
    assert planner.finalists_that_fit([1.0, 1.0, 1.0]) == 1 and len(planner.budget.cuts) == cuts + 1
    assert planner.finalists_that_fit([1.0, 1.0, 1.0], begun=3) == 3 and len(planner.budget.cuts) == cuts + 1


def test_the_racing_sentence_says_why_nothing_was_raced_or_gives_every_comparison():
    from reporting.tables import racing_sentence

    finalist = {"trial_id": "00", "is_baseline": True}
    assert racing_sentence({"selection": {}}) is None  # a run without repeats
    alone = {"finalists": [finalist], "selection": {"racing": []}}
    assert "the time budget held none" in racing_sentence(alone)
    once = {"finalists": [finalist, {"trial_id": "03", "is_baseline": False}], "selection": {"racing": []}}
    assert "retrained once each" in racing_sentence(once)
    record = {
        "round": 1,
        "trial_id": "03",
        "repeats": 1,
        "difference": 0.012,
        "ci95": [0.004, 0.02],
        "clearly_worse": True,
    }
    once["selection"]["racing"] = [record]
    assert "round 1, trial 03 over 1 repeat: +0.0120 [+0.0040, +0.0200], clearly worse" in racing_sentence(once)


def test_the_members_table_gives_a_challenger_that_left_the_race_its_one_retrains_seed():
    from reporting.tables import members_table

    scores = {"log_loss": 0.1, "roc_auc": 0.99, "threshold": 0.5, "accuracy": 0.9}
    repeat = {"training_seed": 7, "kept_epoch": 30, "validation": scores, "test": scores}
    incumbent = {"trial_id": "00", "is_baseline": True, "weight": 1.0, "kept_epoch": 30,
                 "repeats": [{**repeat, "repeat": 1}, {**repeat, "repeat": 2, "training_seed": 1007}]}  # fmt: skip
    left = {"trial_id": "03", "is_baseline": False, "weight": 0.0, "kept_epoch": 12, "training_seed": 7,
            "validation": scores, "test": scores, "left_race": "clearly worse"}  # fmt: skip
    table = members_table({"finalists": [incumbent, left]})
    assert "| the baseline's point | 2 | 1007 | 30 |" in table and "| trial 03 | 1 | 7 | 12 |" in table


def test_a_short_budget_drops_challengers_before_the_incumbents_repeats(tmp_path, monkeypatch):
    """Challengers that train slower than priced: the budget's last retrains go to the incumbent's repeats, and
    every retrain left out is a recorded cut (an independent run once retrained four challengers and then had no
    time for the baseline's point's repeats 2 and 3)."""
    from pathlib import Path

    import budget
    import config
    import hypermodel
    from pipeline import training

    now = [0.0]
    planner = budget.Planner(
        budget.Budget(250, lambda: now[0]), mean_work=1.0, baseline_work=1.0, epochs=8, final_epochs=45,
        max_trials=25, max_finalists=2, price=budget.Price(1.0, "a test"), repeats=3,
    )  # fmt: skip
    assert planner.finalists_that_fit([1.0, 1.0, 1.0]) == 3  # priced at 45 s each: 5 retrains and the report fit
    labels = np.array([0, 1] * 20)
    files = [Path(f"person{i}_bacteria_{i}.jpeg") for i in range(40)]
    splits = SimpleNamespace(validation=SimpleNamespace(labels=labels, files=files))
    trained = []

    def retrain(context, point, backup, log_dir=None, *, training_seed):
        trained.append((point.name, training_seed))
        now[0] += 45.0 if point.name == "00" else 90.0  # each challenger takes twice its price
        return SimpleNamespace(), None, 1

    monkeypatch.setattr(training, "retrain", retrain)
    monkeypatch.setattr(hypermodel, "without_augmentation", lambda model: model)
    monkeypatch.setattr(repeats, "predict_split", lambda models, split, batch: [np.where(labels == 1, 0.8, 0.2)])
    candidates = [
        SimpleNamespace(trial_id=name, is_baseline=name == "00", point=SimpleNamespace(name=name, values={}))
        for name in ("00", "03", "07")
    ]
    settings = config.load().replace(repeats=3, final_epochs=45, seed=53)
    space = SimpleNamespace(work=lambda values: 1.0)
    context = RunContext(settings, space, splits, tmp_path / "run", runs.Stopwatch(), planner)
    finalists, _ = repeats.retrain_repeats(context, candidates)
    assert [f.candidate.trial_id for f in finalists] == ["00", "03"]  # trial 07's retrain did not fit: no finalist
    assert trained.count(("00", 53)) == 1 and ("00", 1053) in trained and ("00", 2053) in trained
    assert len(finalists[0].models) == 3  # the incumbent's three repeats, which the delivered model averages
    assert any(cut.startswith("trial 07's repeat 1 not retrained") for cut in planner.budget.cuts)
    assert any(cut.startswith("trial 03's repeat 2 not retrained") for cut in planner.budget.cuts)
    assert now[0] <= 250
