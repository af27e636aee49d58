"""The finalist protocol: exact validation scores per epoch, greedy ensemble selection against the incumbent,
the plateau threshold, the chosen model as one Keras model, and a tiny search end to end (resumed finalist by
finalist after an interruption)."""

from __future__ import annotations

import json
import re
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_ONE_EPOCH
from sklearn.metrics import roc_auc_score

import predict
import runs
import search
from config import ConfigError, load
from evaluation import challenger_minus_incumbent, choose_threshold, image_log_loss
from hypermodel import ChestXRayHyperModel, baseline_hyperparameters, weighted_ensemble, without_augmentation
from pipeline import final_model
from runs import RunFolder


def test_greedy_selection_averages_models_whose_errors_differ_and_keeps_one_that_dominates():
    labels = np.array([0, 0, 1, 1, 0, 1])
    # Each model is sure and wrong on a different image; their mean is right on every image.
    first = np.array([0.05, 0.95, 0.95, 0.9, 0.1, 0.9])
    second = np.array([0.05, 0.05, 0.05, 0.9, 0.1, 0.9])
    counts = final_model.greedy_selection(labels, [first, second])
    assert counts[0] > 0 and counts[1] > 0
    perfect = np.where(labels == 1, 0.99, 0.01)
    assert list(final_model.greedy_selection(labels, [first, perfect, second])) == [0, 1, 0]


def test_the_incumbent_stays_unless_validation_shows_the_challenger_better():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    patients = [f"p{i}" for i in range(400)]
    good = np.where(labels == 1, 0.8, 0.2)
    slightly = np.clip(good + rng.normal(0, 0.01, 400), 0.01, 0.99)
    assert final_model.choose(labels, [good, slightly], patients)["weights"] == [1.0, 0.0]
    poor = np.where(labels == 1, 0.55, 0.45)
    chosen = final_model.choose(labels, [poor, good], patients)
    # The race's record is the challenger's log loss minus the incumbent's, as every comparison is.
    assert chosen["weights"] == [0.0, 1.0] and chosen["race"]["clearly_better"]
    assert chosen["race"]["difference"] < 0 and chosen["race"]["ci95"][1] < 0
    gap = challenger_minus_incumbent(labels, poor, good, patients)
    assert gap["difference"] == pytest.approx(chosen["race"]["difference"]) and gap["clearly_better"]
    worse = challenger_minus_incumbent(labels, good, poor, patients)
    assert worse["difference"] == pytest.approx(-gap["difference"]) and worse["clearly_worse"]
    assert not worse["clearly_better"] and not gap["clearly_worse"]


def test_a_race_recorded_with_the_older_sign_reads_as_the_challenger_minus_the_incumbent():
    # Runs before 2026-12-06 kept the incumbent's log loss minus the challenger's, and `challenger_wins`;
    # RunFolder reads them in today's sign, so the report's sentence and the racing records agree.
    old = {"finalists": [], "selection": {"race": {"difference": 0.02, "ci95": [0.005, 0.04], "challenger_wins": True}}}
    race = runs.upgrade_metrics(old, dict)["selection"]
    assert race["race"] == {"difference": -0.02, "ci95": [-0.04, -0.005], "clearly_better": True}
    assert race["replaced"] and race["incumbent_rule"] == "race"  # recorded before the rule had a choice


def test_the_plateau_threshold_sits_in_the_middle_of_the_gap_in_logit_space():
    # NORMAL images at 0.01 and 0.02, PNEUMONIA ones at 0.98 and 0.99: every threshold between separates them.
    labels = np.array([0] * 50 + [1] * 50)
    probabilities = np.array([0.01, 0.02] * 25 + [0.98, 0.99] * 25)
    youden = choose_threshold(labels, probabilities, "youden")
    plateau = choose_threshold(labels, probabilities, "plateau")
    assert youden == pytest.approx(0.98)  # the near edge of the gap: one image away from a mistake
    assert plateau == pytest.approx(0.5, abs=0.05)  # the middle of 0.02 .. 0.98 in logit space


def test_the_weighted_ensemble_is_one_keras_model_that_predicts_the_weighted_mean(tmp_path):
    defaults = load()
    hypermodel = ChestXRayHyperModel(48, 1, defaults.search_space.as_dict(), defaults.augmentation.as_dict())
    keras.utils.set_random_seed(1)
    members = [without_augmentation(hypermodel.build(baseline_hyperparameters())) for _ in range(3)]
    images = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 1)).astype("float32")
    alone = [member.predict(images, verbose=0) for member in members]
    chosen = weighted_ensemble(members, [0.3, 0.0, 0.7], ["00", "05", "09"])
    chosen.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.predict(images, verbose=0) == pytest.approx(0.3 * alone[0] + 0.7 * alone[2], abs=1e-6)
    assert weighted_ensemble(members, [0.0, 1.0, 0.0], ["00", "05", "09"]) is members[1]


@pytest.mark.e2e
def test_exact_validation_scores_match_sklearn_on_the_models_own_predictions(synthetic_root):
    import data
    from pipeline import training

    settings = load(None, {"--image-size": ("image_size", 48)}).replace(objective="val_roc_auc")
    splits = data.load_splits(synthetic_root, settings.validation_fraction, settings.seed)
    data.decode_splits(splits, 48, settings.color_mode)
    (callback,) = training.exact_validation_scores(splits, settings)
    model = ChestXRayHyperModel(48, 1, settings.search_space.as_dict(), settings.augmentation.as_dict()).build(
        baseline_hyperparameters()
    )
    history = model.fit(**training.fit_settings(splits, settings) | {"verbose": 0}, epochs=1, callbacks=[callback])
    predicted = model.predict(data.to_dataset(splits.validation, 64), verbose=0)[: len(splits.validation)]
    probabilities = predicted[:, 1].astype(np.float64)
    labels = np.asarray(splits.validation.labels)
    assert history.history["val_roc_auc"][0] == pytest.approx(roc_auc_score(labels, probabilities))
    assert history.history["val_log_loss"][0] == pytest.approx(image_log_loss(labels, probabilities).mean())
    assert training.exact_validation_scores(splits, settings.replace(objective="val_auc")) == []


def test_ensemble_size_is_gone_and_a_run_made_with_it_above_1_names_the_commit_that_reads_it(tmp_path):
    # The runners-up ensemble (ensemble_size) was removed: a new run's config does not know the key, and a run
    # folder that recorded it above 1 is refused by every reader in one sentence (config.upgrade).
    path = tmp_path / "runners-up.yaml"
    path.write_text("finalists: 0\nensemble_size: 3\n")
    with pytest.raises(ConfigError, match=r"runners-up.yaml: unknown key 'ensemble_size'"):
        load(path)
    folder = RunFolder(tmp_path / "old-run")
    folder.path.mkdir()
    folder.file("config.yaml").write_text("finalists: 0\nensemble_size: 3\n")
    sentence = (
        rf"^{re.escape(str(folder.file('config.yaml')))}: this run was made with ensemble_size 3, removed after "
        r"commit 7f6c4e1, so it predates this version: check out 7f6c4e1 \(git checkout 7f6c4e1\) to render or "
        r"serve it$"
    )
    for read in (folder.config, folder.settings):
        with pytest.raises(ConfigError, match=sentence):
            read()
    # Beside a new run, such a folder is no counterpart to compare with, not a failure after the run's training.
    folder.file("metrics.json").write_text('{"run": {"kind": "baseline"}}')
    folder.file("report.md").write_text("finished")
    settings = load().replace(reports_dir=str(tmp_path))
    assert runs.find_counterpart(settings, "search") is None
    folder.file("config.yaml").write_text("finalists: 0\nensemble_size: 1\n")  # every committed run's
    assert "ensemble_size" not in folder.config() and folder.settings().finalists == 0


FINALISTS = [*TINY_ONE_EPOCH, "--tuner", "random", "--max-trials", "3", "--epochs", "1", "--config", "finalists.yaml"]


def test_a_finalist_search_repeats_its_finalists_chooses_on_validation_and_resumes_repeat_by_repeat(
    workdir, monkeypatch, capsys
):
    # One finalist besides the baseline's point (the better of the two other trials on the search's score), each
    # retrained twice with training seeds of their own (pipeline/repeats.py), under a time budget.
    (workdir / "finalists.yaml").write_text(
        "finalists: 1\nrepeats: 2\nobjective: val_log_loss\nthreshold: plateau\ntime_budget: 1h\n"
    )
    evaluate = final_model.evaluate_finalists

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(final_model, "evaluate_finalists", interrupted)
    assert search.main(FINALISTS) == 130
    capsys.readouterr()
    monkeypatch.setattr(final_model, "evaluate_finalists", evaluate)
    # The budget all but spent when the run resumes: the retrains it finished are still its finalists' repeats.
    run_dir = workdir / "reports" / "synthetic-finalists-search-random-48px-seed7-budget1h"
    clock = json.loads((run_dir / "wall_seconds.json").read_text())
    (run_dir / "wall_seconds.json").write_text(json.dumps({**clock, "total": 3600 - 10}))
    assert search.main(FINALISTS) == 0
    out = capsys.readouterr().out
    # Every repeat of every finalist was backed up whole: the second run trains none of them again.
    assert out.count("Resuming the retrain after epoch 1") == 4 and "Trial 1 of" not in out and "repeat 2 of 2" in out

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert not any("not retrained" in cut for cut in metrics["budget"]["cut"])
    finalists = metrics["finalists"]
    assert (
        len(finalists) == 2 and finalists[0]["is_baseline"] and sum(f["weight"] for f in finalists) == pytest.approx(1)
    )
    assert all("log_loss" in f["validation"] and "search_last_score" in f for f in finalists)
    trials = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    others = trials[trials["trial_id"] != finalists[0]["trial_id"]]
    assert len(others) == 2 and finalists[1]["trial_id"] == others.loc[others["objective"].idxmin(), "trial_id"]
    assert finalists[1]["search_score"] == pytest.approx(others["objective"].min())
    assert [[r["training_seed"] for r in f["repeats"]] for f in finalists] == [[7, 1007], [7, 1007]]
    assert [r["round"] for r in metrics["selection"]["racing"]] == [1]
    predictions = pd.read_csv(run_dir / "predictions.csv")
    for f in finalists:  # a finalist's column is its repeats' mean; the repeats differ (seeds of their own)
        column = f"p_finalist_{f['trial_id']}"
        mean = (predictions[f"{column}_r1"] + predictions[f"{column}_r2"]) / 2
        assert predictions[column].to_numpy() == pytest.approx(mean.to_numpy(), abs=1e-12)
        assert not np.allclose(predictions[f"{column}_r1"], predictions[f"{column}_r2"])
    columns = [f"p_finalist_{f['trial_id']}" for f in finalists]
    mixed = sum(f["weight"] * predictions[column] for f, column in zip(finalists, columns))
    assert predictions["p_pneumonia"].to_numpy() == pytest.approx(mixed.to_numpy(), abs=1e-6)
    assert "last_objective" in trials.columns
    text = (run_dir / "report.md").read_text()
    assert "## Finalists and the chosen model" in text and "| **the chosen model** |" in text
    assert "Greedy ensemble selection on validation log loss" in text
    # Its row among the finalists, then one per repeat among the members, with the race.
    assert text.count("| the baseline's point |") == 3 and "| the baseline's point | 2 | 1007 |" in text
    assert "The delivered model averages repeats" in text and "Racing (challenger's validation log loss" in text
    assert (run_dir / "finalists.png").exists()
    card = (run_dir / "model_card.md").read_text()
    assert "**Chosen among finalists**" in card and "The delivered model's members" in card

    csv = workdir / "served.csv"  # the repeats' weighted average, served as one model
    assert predict.main([str(workdir / "data" / "synthetic" / "test"), "--run", str(run_dir), "--csv", str(csv)]) == 0
    served = pd.read_csv(csv).merge(predictions.query("split == 'test'"), on="file")
    assert served["p_pneumonia_x"].to_numpy() == pytest.approx(served["p_pneumonia_y"].to_numpy(), abs=1e-5)


def test_incumbent_rule_lower_takes_the_greedy_ensemble_that_the_race_would_not():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    patients = [f"p{i}" for i in range(400)]
    good = np.where(labels == 1, 0.8, 0.2)
    # A little better on average, noisy image by image: averaging helps, but not surely enough for the race.
    noisy = np.clip(good + np.where(labels == 1, 0.01, -0.01) + rng.normal(0, 0.1, 400), 0.01, 0.99)
    raced = final_model.choose(labels, [good, noisy], patients, "race")
    lower = final_model.choose(labels, [good, noisy], patients, "lower")
    assert raced["weights"] == [1.0, 0.0] and not raced["replaced"] and raced["race"]["ci95"][1] > 0
    assert lower["weights"] == [0.5, 0.5] and lower["replaced"] and lower["race"] == raced["race"]


def test_the_point_alone_is_one_finalist_scored_by_the_finalists_code(tiny_runs):
    # A --baseline run retrains one point: it goes through the finalists' retrains and scoring, so its metrics.json
    # has the shape of every other run's, written so (no upgrade applies), and its report calls it one retrain.
    folder = RunFolder(tiny_runs.baseline)
    written = json.loads(folder.file("metrics.json").read_text())
    assert folder.metrics() == written
    (only,) = written["finalists"]
    assert only["is_baseline"] and only["trial_id"] == "baseline" and only["weight"] == 1.0
    assert only["validation"] == written["validation"] and only["test"] == written["test"]
    assert written["selection"]["weights"] == [1.0] and not written["selection"]["replaced"]
    assert not runs.chose_among_finalists(written)
    predictions = folder.predictions()
    assert predictions["p_finalist_baseline"].equals(predictions["p_pneumonia"])
    assert "## Finalists and the chosen model" not in folder.file("report.md").read_text()


def test_a_metrics_json_from_before_every_run_had_finalists_reads_in_todays_shape(tiny_runs, tmp_path):
    # Runs recorded before the one final-stage path kept no "finalists" for the best point alone; RunFolder reads
    # them as one finalist of weight 1, named from best_hyperparameters.yaml, and their report renders as before.
    from reporting import report

    copy, search_copy = tmp_path / tiny_runs.baseline.name, tmp_path / tiny_runs.search.name
    shutil.copytree(tiny_runs.baseline, copy)
    shutil.copytree(tiny_runs.search, search_copy)  # the report compares with it
    today = RunFolder(copy).metrics()
    old = {key: value for key, value in today.items() if key not in ("finalists", "selection")}
    RunFolder(copy).file("metrics.json").write_text(json.dumps(old))
    upgraded = RunFolder(copy).metrics()
    (only,) = upgraded["finalists"]
    assert only["is_baseline"] and only["point"] == RunFolder(copy).best_point() and only["weight"] == 1.0
    assert only["validation"] == today["validation"] and only["kept_epoch"] == today["run"]["best_epoch"]
    assert upgraded["selection"]["weights"] == [1.0] and not runs.chose_among_finalists(upgraded)
    before = (copy / "report.md").read_text()
    report.render(copy, (search_copy.name, RunFolder(search_copy).metrics()))
    assert (copy / "report.md").read_text() == before
    # A search's old best point that is not the baseline's is no baseline finalist.
    old["run"] = {**old["run"], "kind": "search"}
    RunFolder(copy).file("metrics.json").write_text(json.dumps(old))
    (copy / "best_hyperparameters.yaml").write_text(
        (copy / "best_hyperparameters.yaml").read_text().replace("dropout: 0.2", "dropout: 0.5")
    )
    assert not RunFolder(copy).metrics()["finalists"][0]["is_baseline"]
