"""The figures of a run's report, each drawn from its RunResult onto a matplotlib Figure (no pyplot state)
and saved whole beside report.md.

One concern: plots. It imports runs.py (the result and whole-file saves), evaluation.py (Brier scores),
search_plots.py (a search's figures) and, for Grad-CAM only, Keras, data.py and explain.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, roc_curve
from sklearn.metrics import auc as area_under

from data import CLASS_NAMES
from evaluation import brier_scores
from reporting import search_plots
from runs import MODEL_FILE, RunResult, chose_among_finalists, save_figure

EXAMPLES_PER_OUTCOME = 3
FEW_IMAGES = 10  # a reliability bin with fewer images is drawn hollow: its share of PNEUMONIA is mostly chance
# A learning curve of this many epochs or fewer marks each epoch: one epoch is a single point, which a line alone
# does not draw (a 1-epoch run's figure was blank), and a few points read better as points.
FEW_EPOCHS = 10
# The reliability diagram's splits: validation's large circles beneath, test's small squares on top, so that where
# the two fall on the same point both still show (test drawn alike on top hid validation's).
SPLIT_STYLE = {
    "validation": {"marker": "o", "markersize": 10, "zorder": 3},
    "test": {"marker": "s", "markersize": 5, "zorder": 4},
}
# A search's figures, in the order report.md shows them: file name, alt text. search_progress.png and
# search_hyperparameters.png keep the names of the figures they replaced (objective per trial and per
# hyperparameter): the same questions, now against search time and with the baseline's values marked.
SEARCH_FIGURES = (
    ("search_hyperparameters.png", "validation objective against each hyperparameter"),
    ("search_parallel_coordinates.png", "the best trials in parallel coordinates"),
    ("search_progress.png", "best objective so far against search time"),
)


OUTCOMES = (  # (name, true label, predicted label)
    ("true positive", 1, 1),
    ("true negative", 0, 0),
    ("false positive", 0, 1),
    ("false negative", 1, 0),
)


def draw(result: RunResult) -> None:
    """(Re)draw every figure of a run from its files; Grad-CAM only once, and only where the model was kept."""
    run_dir, objective = result.run_dir, result.config.objective
    if result.trials is not None:
        for name, _ in SEARCH_FIGURES:
            save_figure(run_dir / name, search_figure(result, name))
    save_figure(
        run_dir / "learning_curves.png",
        learning_curves_figure(result.history, objective, result.metrics["run"]["best_epoch"]),
    )
    save_figure(run_dir / "confusion_matrix.png", confusion_figure(result.metrics))
    save_figure(run_dir / "roc_curve.png", roc_figure(result.predictions, result.metrics))
    save_figure(run_dir / "calibration.png", calibration_figure(result.predictions))
    if chose_among_finalists(result.metrics):
        save_figure(run_dir / "finalists.png", finalists_figure(result.metrics, objective))
    if (run_dir / MODEL_FILE).exists() and not (run_dir / "gradcam.png").exists():
        save_figure(run_dir / "gradcam.png", gradcam_figure(result))


# The retrained validation figure that answers each search objective (val_loss is smoothed and weighted in the
# search; the retrained log loss is not, so that pair compares only roughly).
RETRAINED_SCORE = {"val_log_loss": "log_loss", "val_loss": "log_loss", "val_roc_auc": "roc_auc", "val_auc": "roc_auc"}


def finalists_figure(metrics: dict[str, Any], objective: str) -> Figure:
    """Each finalist's search score against its validation score after the full retrain."""
    finalists = metrics["finalists"]
    retrained = RETRAINED_SCORE.get(objective, "accuracy")
    return search_plots.finalists_figure(
        [finalist["search_score"] for finalist in finalists],
        [finalist["validation"][retrained] for finalist in finalists],
        ["baseline" if finalist["is_baseline"] else f"trial {finalist['trial_id']}" for finalist in finalists],
        objective,
    )


def learning_curves_figure(history: pd.DataFrame, objective: str, best_epoch: int) -> Figure:
    figure = Figure(figsize=(13, 3.6), layout="constrained")
    marker = "o" if len(history) <= FEW_EPOCHS else None
    for ax, metric in zip(figure.subplots(1, 3), ("loss", "accuracy", "auc")):
        ax.plot(history["epoch"], history[metric], marker=marker, label="train")
        ax.plot(history["epoch"], history[f"val_{metric}"], marker=marker, label="validation")
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept: epoch {best_epoch} (best {objective})")
        ax.set(title=metric, xlabel="epoch")
        ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    figure.suptitle("Final training: train vs validation (test never seen)")
    return figure


def confusion_figure(metrics: dict[str, Any]) -> Figure:
    figure = Figure(figsize=(9, 3.8), layout="constrained")
    for ax, split in zip(figure.subplots(1, 2), ("validation", "test")):
        matrix = np.array(metrics[split]["confusion_matrix"])
        ConfusionMatrixDisplay(matrix, display_labels=list(CLASS_NAMES)).plot(ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(f"{split} (threshold {metrics[split]['threshold']:.3f})")
    return figure


def roc_figure(predictions: pd.DataFrame, metrics: dict[str, Any]) -> Figure:
    """ROC curves of validation and test, each AUC with three decimals (two would round 0.999 up to 1.00)."""
    figure = Figure(figsize=(5, 4.6), layout="constrained")
    ax = figure.subplots()
    for split in ("validation", "test"):
        rows = predictions[predictions["split"] == split]
        false_positive_rate, true_positive_rate, _ = roc_curve(rows["label"], rows["p_pneumonia"])
        # As roc_auc_score, but NaN, not an error, for a split of one class.
        auc = area_under(false_positive_rate, true_positive_rate)
        (curve,) = ax.plot(false_positive_rate, true_positive_rate, label=f"{split} (AUC {auc:.3f})")
        chosen = metrics[split]
        ax.plot(1 - chosen["specificity"], chosen["sensitivity"], "o", color=curve.get_color(), markeredgecolor="black")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    # Plain names: sklearn's own labels add "(Positive label: 1)", which reads as jargon here.
    ax.set(
        xlabel="False positive rate (1 - specificity)",
        ylabel="True positive rate (sensitivity)",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        aspect="equal",
        title="ROC (dots: the validation-chosen threshold)",
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def reliability_bins(labels: pd.Series, probabilities: pd.Series, bins: int = 10) -> pd.DataFrame:
    """Per equal-width bin of P(pneumonia) (empty ones left out): the mean prediction, the share of PNEUMONIA and
    how many images it holds. Bins as sklearn's calibration_curve draws them (a value on an edge goes below)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    frame = pd.DataFrame(
        {
            "bin": np.searchsorted(edges[1:-1], probabilities.to_numpy(float)),
            "label": labels.to_numpy(),
            "p": probabilities.to_numpy(float),
        }
    )
    grouped = frame.groupby("bin")
    return pd.DataFrame(
        {
            "low": edges[grouped.size().index],
            "mean_predicted": grouped["p"].mean(),
            "share_positive": grouped["label"].mean(),
            "images": grouped.size(),
        }
    ).reset_index(drop=True)


def calibration_figure(predictions: pd.DataFrame, bins: int = 10) -> Figure:
    """The reliability diagram of validation and test, with each bin's image count beneath it. A bin of a few
    images strays from the diagonal by chance alone, so its point is drawn hollow: it says little."""
    figure = Figure(figsize=(6.2, 6.4), layout="constrained")
    diagram, counts = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1.3))
    diagram.plot([0, 1], [0, 1], ":", color="black", label="perfectly calibrated")
    splits = brier_scores(predictions)
    width = 1 / bins / (len(splits) + 1)  # the splits' bars side by side within a bin, a gap between bins
    for i, (split, brier) in enumerate(splits.items()):
        rows = predictions[predictions["split"] == split]
        table = reliability_bins(rows["label"], rows["p_pneumonia"], bins)
        style = SPLIT_STYLE.get(split, SPLIT_STYLE["test"])
        # Every bin a filled marker on the line (so the legend shows the split's marker), those of few images
        # drawn again hollow on top.
        (line,) = diagram.plot(
            table["mean_predicted"], table["share_positive"], "-", label=f"{split} (Brier {brier:.3f})", **style
        )
        hollow = table[table["images"] < FEW_IMAGES]
        diagram.plot(
            hollow["mean_predicted"],
            hollow["share_positive"],
            linestyle="none",
            color=line.get_color(),
            markerfacecolor="white",
            **style,
        )
        bars = counts.bar(table["low"] + width * (i + 1), table["images"], width=width, color=line.get_color())
        counts.bar_label(bars, fontsize=6.5, padding=1)
    diagram.plot([], [], "o", color="grey", markerfacecolor="white", label=f"bin of fewer than {FEW_IMAGES} images")
    diagram.set(
        ylabel="share of PNEUMONIA in bin",
        xlim=(0, 1),
        ylim=(-0.02, 1.02),
        title=f"Reliability diagram ({bins} equal-width bins)",
    )
    diagram.legend(loc="upper left", fontsize=8)
    diagram.grid(alpha=0.3)
    # A log scale: the end bins hold hundreds of images, the middle ones a few, and both must be read.
    counts.set_yscale("log")
    counts.set_ylim(0.7, counts.get_ylim()[1] * 3)
    counts.set(xlabel="predicted P(pneumonia)", ylabel="images in bin")
    counts.set_xticks(np.linspace(0, 1, bins + 1))
    counts.grid(alpha=0.3, axis="y")
    return figure


def test_examples(predictions: pd.DataFrame, threshold: float) -> list[tuple[str, pd.DataFrame]]:
    """Per outcome (TP, TN, FP, FN), the test images the model was most confident about."""
    test = predictions[predictions["split"] == "test"]
    predicted = (test["p_pneumonia"] >= threshold).astype(int)
    chosen = []
    for name, label, guess in OUTCOMES:
        rows = test[(test["label"] == label) & (predicted == guess)]
        confidence = (rows["p_pneumonia"] - threshold).abs()
        chosen.append((name, rows.loc[confidence.sort_values(ascending=False).index[:EXAMPLES_PER_OUTCOME]]))
    return chosen


def gradcam_figure(result: RunResult) -> Figure:
    """Test images of each outcome with the Grad-CAM heatmap of the class the model predicted."""
    import keras

    import data
    from reporting import explain

    model = keras.saving.load_model(result.run_dir / MODEL_FILE, safe_mode=True)
    threshold = result.metrics["test"]["threshold"]
    examples = test_examples(result.predictions, threshold)
    files = [Path(file) for _, rows in examples for file in rows["file"]]
    images = data.decode_images(files, result.config.image_size, data.channel_count(result.config.color_mode))
    figure = Figure(figsize=(2.4 * EXAMPLES_PER_OUTCOME, 2.7 * len(OUTCOMES)), layout="constrained")
    axes = figure.subplots(len(OUTCOMES), EXAMPLES_PER_OUTCOME, squeeze=False)
    start = 0
    for row_axes, (name, rows) in zip(axes, examples):
        batch, start = images[start : start + len(rows)], start + len(rows)
        predicted = (rows["p_pneumonia"] >= threshold).to_numpy(int)
        heatmaps = explain.grad_cam(model, batch, predicted) if len(rows) else []
        for ax, image, heatmap, probability, file in zip(row_axes, batch, heatmaps, rows["p_pneumonia"], rows["file"]):
            ax.imshow(explain.overlay(image, heatmap))
            ax.set_title(f"P={probability:.3f}\n{Path(file).name}", fontsize=7)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row_axes[max(len(rows), 1) :]:
            ax.set_visible(False)
        row_axes[0].set_ylabel(f"{name}" if len(rows) else f"{name}\n(none on test)", fontsize=9)
    figure.suptitle(f"Grad-CAM on test (threshold {threshold:.3f}): where the last conv layer found the evidence")
    return figure


def search_figure(result: RunResult, name: str) -> Figure:
    """One of SEARCH_FIGURES, drawn from the run's trials, its search space and the baseline's hyperparameters."""
    trials, objective = result.trials, result.config.objective
    space, baseline = result.config.search_space.as_dict(), result.metrics["run"]["baseline_hyperparameters"]
    if name == "search_hyperparameters.png":
        return search_plots.objective_by_hyperparameter_figure(trials, objective, space, baseline)
    if name == "search_parallel_coordinates.png":
        return search_plots.parallel_coordinates_figure(trials, objective, space, baseline)
    return search_plots.best_so_far_figure(trials, objective)
