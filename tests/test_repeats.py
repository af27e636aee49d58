"""Repeats and racing (pipeline/repeats.py): each finalist retrained with training seeds of its own, challengers
raced against the incumbent on their repeats' mean, and a delivered model that averages repeats."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_ONE_EPOCH

import predict
import search
from pipeline import final_model, repeats


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


@pytest.mark.e2e
def test_finalists_repeat_resume_repeat_by_repeat_and_the_model_averages_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "repeats.yaml").write_text("finalists: 1\nrepeats: 2\nobjective: val_log_loss\n")
    flags = [*TINY_ONE_EPOCH, "--tuner", "random", "--max-trials", "2", "--epochs", "1", "--config", "repeats.yaml"]
    evaluate = final_model.evaluate_finalists
    monkeypatch.setattr(final_model, "evaluate_finalists", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert search.main(flags) == 130
    capsys.readouterr()
    monkeypatch.setattr(final_model, "evaluate_finalists", evaluate)
    assert search.main(flags) == 0
    out = capsys.readouterr().out
    # Every repeat of every finalist was backed up whole: the second run trains none of them again.
    assert out.count("Resuming the retrain after epoch 1") == 4 and "repeat 2 of 2" in out

    run_dir = tmp_path / "reports" / "synthetic-repeats-search-random-48px-seed7"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    finalists = metrics["finalists"]
    assert [[r["training_seed"] for r in f["repeats"]] for f in finalists] == [[7, 1007], [7, 1007]]
    assert [r["round"] for r in metrics["selection"]["racing"]] == [1]
    predictions = pd.read_csv(run_dir / "predictions.csv")
    for f in finalists:
        column = f"p_finalist_{f['trial_id']}"
        mean = (predictions[f"{column}_r1"] + predictions[f"{column}_r2"]) / 2
        assert predictions[column].to_numpy() == pytest.approx(mean.to_numpy(), abs=1e-12)
        assert not np.allclose(predictions[f"{column}_r1"], predictions[f"{column}_r2"])  # seeds of their own
    mixed = sum(f["weight"] * predictions[f"p_finalist_{f['trial_id']}"] for f in finalists)
    assert predictions["p_pneumonia"].to_numpy() == pytest.approx(mixed.to_numpy(), abs=1e-6)
    text = (run_dir / "report.md").read_text()
    assert "The delivered model averages repeats" in text and "Racing (challenger's validation log loss" in text
    assert text.count("| the baseline's point | 2 | 1007 |") == 1
    assert "The delivered model's members" in (run_dir / "model_card.md").read_text()

    # predict.py serves the repeats' average as one model.
    csv = tmp_path / "served.csv"
    assert predict.main([str(tmp_path / "data" / "synthetic" / "test"), "--run", str(run_dir), "--csv", str(csv)]) == 0
    served = pd.read_csv(csv).merge(predictions.query("split == 'test'"), on="file")
    assert served["p_pneumonia_x"].to_numpy() == pytest.approx(served["p_pneumonia_y"].to_numpy(), abs=1e-5)


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
    now[0] = 300.0  # 100 s left, one of the incumbent's repeats still to come: a challenger's (45 + 45 + 20) does not fit
    assert planner.repeat_fits(1.0, later_incumbent_repeats=0, what="trial 3's repeat 2")
    assert not planner.repeat_fits(1.0, later_incumbent_repeats=1, what="trial 3's repeat 2")
    assert "trial 3's repeat 2 not retrained" in planner.budget.cuts[-1]
