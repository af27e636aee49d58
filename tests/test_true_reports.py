"""Every sentence a report writes is true of its run (issue 38): the notebook's specification cited where a clone has
it, runs on generated images that say so, a search section and a selection that agree with the delivered model, a
budget row that says what it bought and what it cut, counts in the number they take, trials by their Keras Tuner
ids, and figures readable at one epoch and where two splits' points meet. Built from the committed runs
(reports/example: a budgeted search that delivered the baseline's point; bench/results/dev-finalists-seed42: five
finalists) changed in memory, so nothing trains."""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import runs
from reporting import figures, report, search_plots, tables
from reporting.index import write_index
from reporting.model_card import render_model_card
from runs import RunResult

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "reports" / "example"
FINALISTS = ROOT / "bench" / "results" / "dev-finalists-seed42"
GENERATED = "data/synthetic/chest_xray"
NOTES = "shared/" + "BASELINE"  # the development machine's notes, which a clone lacks (split: this file names them)
# A count of one with its noun in the plural: "1 trials", "1 epochs", "1 completed trials", "the 1 best other points".
ONE_IN_THE_PLURAL = re.compile(r"\b1 (?:\w+ ){0,2}(?:trials|epochs|finalists|points|others|images|retrains)\b")


@pytest.fixture(autouse=True)
def one_resample(monkeypatch):
    """fANOVA's resamples give only its ranges, which no test here reads: one keeps a render under a second."""
    monkeypatch.setattr(report, "RESAMPLES", 1)


def example(**changes) -> RunResult:
    """The committed example run, read back, with these fields of its RunResult replaced."""
    return dataclasses.replace(RunResult.load(EXAMPLE), **changes)


def on_generated_images(result: RunResult) -> RunResult:
    return dataclasses.replace(result, config=result.config.replace(data_dir=GENERATED))


def section(text: str, title: str) -> str:
    """One `## title` section of a report, up to the next heading of its level."""
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def setting(text: str, name: str) -> str:
    """The value cell of one row of the "What ran" table."""
    (row,) = [line for line in text.splitlines() if line.startswith(f"| {name} |")]
    return row.split(" | ", 1)[1].rstrip(" |")


# 1. The notebook's specification lives in the repository, and everything cites that copy.


def test_the_notebooks_specification_is_in_the_repository_with_its_source():
    spec = (ROOT / "docs" / "baseline.md").read_text()
    for fact in ("931,130", "92.95%", "RMSprop", "45 epochs", "Dense 264"):
        assert fact in spec, fact
    assert "kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia" in spec  # where the data comes from
    assert "Where this comes from" in spec


def test_no_module_names_the_development_machines_notes():
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    citing = [name for name in tracked.stdout.split() if NOTES in (ROOT / name).read_text(errors="replace")]
    assert not citing, f"modules citing ../{NOTES}.md, which a clone has not: {citing}"


@pytest.mark.parametrize("generated", [False, True])
def test_reports_and_cards_cite_docs_baseline_md(generated):
    result = on_generated_images(example()) if generated else example()
    for text in (report.render_markdown(result), render_model_card(result)):
        assert NOTES not in text and "docs/baseline.md" in text


def test_the_committed_example_cites_the_repositorys_copy():
    for name in ("report.md", "model_card.md"):
        text = (EXAMPLE / name).read_text()
        assert NOTES not in text and "docs/baseline.md" in text, name


# 2. A run on generated images says so, claims nothing about the real data, and stands apart in the index.


def test_a_report_on_generated_images_says_so_in_its_first_lines():
    text = report.render_markdown(on_generated_images(example()))
    opening = [line for line in text.splitlines() if line.strip()][:2]
    assert "generated images" in opening[1] and "not on chest X-rays" in opening[1]
    assert "Kaggle's file names" not in text  # the generator only imitates them
    assert "generated images" not in report.render_markdown(example()).split("## ")[0]  # a real run's opening


def test_a_model_card_on_generated_images_claims_nothing_about_the_dataset_or_its_patients():
    card = render_model_card(on_generated_images(example()))
    front = card.split("\n---\n", 1)[0]
    assert "Chest X-Ray Images (Pneumonia)" not in card and "chest-x-ray" not in front and "datasets: []" in front
    assert "type: synthetic" in front and "name: test accuracy on generated images" in front
    for claim in ("paediatric", "one hospital's", "Guangzhou", "Kaggle's own test split", "Kaggle's 16-image"):
        assert claim not in card, claim
    assert "**A pipeline check.**" in card.split("## Model details")[0]


def test_the_index_keeps_runs_on_generated_images_apart(tmp_path):
    reports = tmp_path / "reports"
    for name in ("real-run", "generated-run"):
        shutil.copytree(EXAMPLE, reports / name, ignore=shutil.ignore_patterns("*.png", "*.db"))
    config = reports / "generated-run" / "config.yaml"
    config.write_text(config.read_text().replace("data_dir: ../shared/data/chest_xray", f"data_dir: {GENERATED}"))
    write_index(reports)
    index = (reports / "index.md").read_text()
    real, checks = index.split("## Pipeline checks on generated images")
    assert "| real-run |" in real and "| generated-run |" not in real
    assert "| generated-run |" in checks and "| real-run |" not in checks


def test_the_rule_for_generated_images_is_written_once():
    assert tables.is_synthetic is runs.is_synthetic
    assert runs.is_synthetic(GENERATED) and not runs.is_synthetic("../shared/data/chest_xray")


# 3. The search section and the selection agree with the delivered model, in plain words.


def delivered_another_trial() -> RunResult:
    """The issue's case: the short trials ranked the baseline's point (trial 00) first, and the final stage, under
    the rule that replaces it wherever the greedy choice's validation log loss is lower, delivered trial 07."""
    result = RunResult.load(FINALISTS)
    metrics = copy.deepcopy(result.metrics)
    weights = [0.0, 0.0, 0.0, 0.0, 1.0]
    for finalist, weight in zip(metrics["finalists"], weights):
        finalist["weight"] = weight
    metrics["selection"].update(incumbent_rule="lower", replaced=True, greedy_weights=weights, weights=weights)
    point = metrics["finalists"][-1]["point"]
    return dataclasses.replace(result, metrics=metrics, best_hyperparameters=point)


def test_the_search_section_names_the_delivered_trial_not_the_baseline():
    result = delivered_another_trial()
    assert result.trials.sort_values("objective").iloc[0]["trial_id"] == "00"  # the short trials' best
    text = report.render_markdown(result)
    search = section(text, "Search")
    assert "nothing better" not in text and "nothing to replace" not in text
    assert "The delivered model is trial 07 alone" in search
    assert "incumbent_rule" not in text  # a config key is no sentence


def test_the_selection_sentence_ends_on_the_model_it_delivered():
    replaced = tables.selection_sentence(delivered_another_trial().metrics)
    assert replaced.endswith("so the delivered model is trial 07 alone.") and "incumbent_rule" not in replaced
    kept = tables.selection_sentence(RunResult.load(FINALISTS).metrics)  # the race kept the baseline's point
    assert kept.endswith("so the delivered model is the baseline's point alone.")


def test_a_budget_that_retrained_only_the_baseline_says_so_when_a_trial_ranked_higher():
    result = example()
    trials = result.trials.copy()
    trials.loc[trials["trial_id"] == "05", "objective"] = 0.01  # now the short trials' best (a loss)
    search = section(report.render_markdown(dataclasses.replace(result, trials=trials)), "Search")
    assert "is trial 05" in search and "The delivered model is the baseline's point" in search
    assert "nothing better" not in search and "never tested by a retrain" in search


# 4. The budget row says what the budget bought and what it cut; the retrain's row the epochs it trained.


def test_the_budget_row_says_what_it_bought_and_lists_every_recorded_cut():
    result = example()
    row = setting(report.render_markdown(result), "time budget")
    assert row.startswith("30m bought 18 trials (the baseline's point and 17 others) and no finalist besides")
    for cut in result.metrics["budget"]["cut"]:
        assert cut in row


def test_a_budget_that_bought_no_search_says_so_in_words():
    result = example()
    trials = result.trials.iloc[:1]
    row = setting(report.render_markdown(dataclasses.replace(result, trials=trials)), "time budget")
    assert "bought 1 trial (the baseline's point) and no finalist besides the baseline's point" in row
    assert "no search beyond the baseline" in row


def test_a_retrain_the_budget_cut_gives_the_epochs_it_trained():
    result = example()
    metrics = copy.deepcopy(result.metrics)
    metrics["run"]["best_epoch"] = 10
    metrics["budget"]["cut"] = ["a retrain stopped after epoch 11 of 45: the time budget was running out"]
    cut = dataclasses.replace(result, history=result.history.iloc[:11], metrics=metrics)
    text = report.render_markdown(cut)
    assert setting(text, "final training").startswith("11 of 45 epochs (stopped by the time budget)")
    assert "a retrain stopped after epoch 11 of 45" in setting(text, "time budget")
    card = render_model_card(cut)
    assert "11 of 45 epochs (stopped by the time budget)" in card and "(10 of 11 trained)" in card


def test_a_retrain_that_ran_its_schedule_is_not_called_cut():
    assert setting(report.render_markdown(example()), "final training").startswith("45 epochs,")


# 5. Counts in the number they take; trials by their Keras Tuner ids.


def one_of_everything() -> RunResult:
    """A search of one 1-epoch trial, retrained 1 epoch, whose final stage retrained one other finalist."""
    result = RunResult.load(FINALISTS)
    metrics = copy.deepcopy(result.metrics)
    metrics["finalists"] = metrics["finalists"][:2]
    for key in ("greedy_weights", "weights"):
        metrics["selection"][key] = [1.0, 0.0]
    metrics["run"]["best_epoch"] = 1
    trials = result.trials.iloc[:1].assign(epochs_run=1)
    config = result.config.replace(final_epochs=1, max_trials=1, epochs=1)
    return dataclasses.replace(result, metrics=metrics, trials=trials, history=result.history.iloc[:1], config=config)


def test_a_count_of_one_takes_the_singular():
    text = report.render_markdown(one_of_everything())
    assert not ONE_IN_THE_PLURAL.search(text), ONE_IN_THE_PLURAL.search(text)
    assert "the best other point of the search" in text and "a schedule of 1 epoch" in text
    assert "1 trial, 1 completed, 1 epoch in all" in setting(text, "search")
    assert "The only completed trial is trial 00" in text and "the best of the 1 " not in text
    assert not ONE_IN_THE_PLURAL.search(render_model_card(one_of_everything()))


@pytest.mark.parametrize(("failed", "words"), [(1, "**1 trial failed**"), (2, "**2 trials failed**")])
def test_failed_trials_are_counted_in_words(failed, words):
    result = example()
    trials = result.trials.astype({"error": object})
    trials.loc[trials.index[1 : 1 + failed], ["status", "error"]] = ["FAILED", "RuntimeError: out of memory"]
    assert words in report.render_markdown(dataclasses.replace(result, trials=trials))


def test_the_search_figures_name_the_baseline_by_its_trial_id():
    result = example()
    assert result.trials["trial_id"].iloc[0] == "00"
    for figure in (
        search_plots.best_so_far_figure(result.trials, result.config.objective),
        search_plots.objective_by_hyperparameter_figure(result.trials, result.config.objective),
    ):
        legend = [text.get_text() for ax in figure.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
        assert "baseline (trial 00)" in legend and "baseline (trial 0)" not in legend


# 6. Figures readable in the edge cases.


def test_a_one_epoch_learning_curve_marks_its_points():
    history = pd.DataFrame({"epoch": [1], **{name: [0.5] for name in ("loss", "accuracy", "auc")}})
    history = history.assign(**{f"val_{name}": [0.4] for name in ("loss", "accuracy", "auc")})
    figure = figures.learning_curves_figure(history, "val_auc", best_epoch=1)
    curves = [line for ax in figure.axes for line in ax.lines if line.get_label() in ("train", "validation")]
    assert len(curves) == 6 and all(line.get_marker() not in (None, "", "None", " ") for line in curves)


def test_the_validation_point_shows_beneath_the_test_point_where_they_meet():
    # Both splits' probabilities alike: every bin's point of one split falls on the other's.
    same = pd.DataFrame({"label": [0, 1] * 50, "p_pneumonia": [0.1, 0.9] * 50})
    predictions = pd.concat([same.assign(split="validation"), same.assign(split="test")], ignore_index=True)
    diagram = figures.calibration_figure(predictions).axes[0]
    lines = {line.get_label().split(" ")[0]: line for line in diagram.lines if "Brier" in line.get_label()}
    validation, test = lines["validation"], lines["test"]
    assert validation.get_marker() != test.get_marker()
    assert validation.get_markersize() > test.get_markersize()  # wider, so its rim shows around the test point
    assert validation.get_zorder() < test.get_zorder()
