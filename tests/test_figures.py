"""The report's figures read as they should (ROC, reliability diagram, parallel coordinates), and a run on
synthetic data sets no published figure beside its results; on made-up predictions and reports/example."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from sklearn.calibration import calibration_curve
from test_study import made_up_trials

import runs
from reporting import figures, report, search_plots

EXAMPLE = Path(__file__).resolve().parents[1] / "reports" / "example"


def made_up_predictions(seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Validation nearly separable (ROC AUC about 0.999), test less so, with a few images in the middle bins."""
    rng = np.random.default_rng(seed)
    frames = []
    for split, spread in (("validation", 0.15), ("test", 0.3)):
        labels = rng.integers(0, 2, 400)
        probabilities = np.clip(np.where(labels == 1, 0.85, 0.15) + rng.normal(0, spread, 400), 0, 1)
        frames.append(pd.DataFrame({"split": split, "label": labels, "p_pneumonia": probabilities}))
    metrics = {split: {"sensitivity": 0.95, "specificity": 0.9} for split in ("validation", "test")}
    return pd.concat(frames, ignore_index=True), metrics


def test_roc_axes_read_plainly_and_the_auc_keeps_three_decimals() -> None:
    from sklearn.metrics import roc_auc_score

    predictions, metrics = made_up_predictions()
    validation = predictions[predictions["split"] == "validation"]
    auc = roc_auc_score(validation["label"], validation["p_pneumonia"])
    assert 0.995 < auc < 0.9995  # two decimals would print it as 1.00
    ax = figures.roc_figure(predictions, metrics).axes[0]
    assert ax.get_xlabel() == "False positive rate (1 - specificity)"
    assert ax.get_ylabel() == "True positive rate (sensitivity)"
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert f"validation (AUC {auc:.3f})" in legend and not any("1.00)" in text for text in legend)


def test_reliability_bins_are_sklearns_with_their_image_counts() -> None:
    predictions, _ = made_up_predictions()
    test = predictions[predictions["split"] == "test"]
    table = figures.reliability_bins(test["label"], test["p_pneumonia"])
    share, mean = calibration_curve(test["label"], test["p_pneumonia"], n_bins=10)
    assert table["share_positive"].to_numpy() == pytest.approx(share)
    assert table["mean_predicted"].to_numpy() == pytest.approx(mean)
    assert table["images"].sum() == len(test) and (table["images"] > 0).all()


def test_the_reliability_diagram_shows_each_bins_count() -> None:
    predictions, _ = made_up_predictions()
    diagram, counts = figures.calibration_figure(predictions).axes
    for split in ("validation", "test"):
        rows = predictions[predictions["split"] == split]
        expected = figures.reliability_bins(rows["label"], rows["p_pneumonia"])["images"]
        assert {str(n) for n in expected} <= {text.get_text() for text in counts.texts}  # each bar labelled
    few = sum(
        (figures.reliability_bins(rows["label"], rows["p_pneumonia"])["images"] < figures.FEW_IMAGES).sum()
        for _, rows in predictions.groupby("split")
    )
    hollow = [line for line in diagram.lines if line.get_markerfacecolor() == "white" and len(line.get_xdata())]
    assert few > 0 and sum(len(line.get_xdata()) for line in hollow) == few  # the bins of few images stand apart


def trial_lines(figure) -> list:
    """The parallel coordinates' trial lines (not the axes, nor the baseline's red one), in drawing order."""
    ax = figure.axes[0]
    width = len(ax.get_xticks())
    return [line for line in ax.lines if len(line.get_xdata()) == width and line.get_color() != "red"]


def darkness(line) -> float:
    return 1 - float(np.mean(to_rgb(line.get_color())))


@pytest.mark.parametrize("objective", ["val_loss", "val_auc"])
def test_the_best_trials_stand_out_whether_minimised_or_maximised(objective: str) -> None:
    trials, space = made_up_trials(20)
    if objective == "val_loss":
        trials["objective"] = 1 - trials["objective"]  # the same trials, now a loss: lowest is best
    lines = trial_lines(search_plots.parallel_coordinates_figure(trials, objective, space))
    assert len(lines) in (9, 10)  # the best ten, trial 0 (the baseline) drawn apart in red
    best, worst = lines[-1], lines[0]  # the best is drawn last, on top
    assert darkness(best) > darkness(worst) + 0.3 and best.get_linewidth() > worst.get_linewidth()
    assert best.get_zorder() > worst.get_zorder()
    assert best.get_ydata()[-1] == pytest.approx(1.0)  # on the objective's axis, the best value is at the top


def test_parallel_coordinates_labels_have_room() -> None:
    result = runs.RunResult.load(EXAMPLE)
    space = result.config.search_space.as_dict()
    figure = search_plots.parallel_coordinates_figure(result.trials, result.config.objective, space)
    axes = len(figure.axes[0].get_xticks())
    assert figure.get_figwidth() >= 0.8 * axes  # no axis squeezed under its neighbour's labels
    values = figure.axes[0].texts
    assert values and all(text.get_bbox_patch() is not None for text in values)  # lines do not overprint them


@pytest.mark.parametrize("data_dir", ["../shared/data/chest_xray", "data/synthetic/chest_xray"])
def test_only_a_run_on_the_real_data_quotes_the_published_accuracy(data_dir: str) -> None:
    result = runs.RunResult.load(EXAMPLE)
    result = dataclasses.replace(result, config=result.config.replace(data_dir=data_dir), trials=None)
    text = report.render_markdown(result)
    real = "synthetic" not in data_dir
    assert ("accuracy, original notebook (not held out) | 0.929" in text) == real
    assert ("*Published figure:*" in text) == real


def test_every_threshold_rule_is_said_in_words() -> None:
    from config import THRESHOLD_RULES
    from reporting.tables import threshold_rule

    for rule in THRESHOLD_RULES:
        assert "fixed" not in threshold_rule(rule), rule  # "fixed at plateau" said the opposite of the rule
    assert threshold_rule(0.5) == "fixed at 0.5"


def test_a_finalist_without_a_search_score_is_left_off_the_finalists_figure(tmp_path) -> None:
    """The baseline's trial can fail (its worker died) and still be retrained as a finalist: no score to place."""
    from reporting.search_plots import finalists_figure
    from runs import save_figure

    figure = finalists_figure([None, 0.3, 0.2], [0.1, 0.25, float("nan")], ["baseline", "01", "02"], "val_log_loss")
    save_figure(tmp_path / "finalists.png", figure)
    (ax,) = figure.axes
    assert [text.get_text() for text in ax.texts] == ["01"]
