"""The figures of a run's report, each drawn from its RunResult onto a matplotlib Figure (no pyplot state)
and saved whole beside report.md.

One concern: plots. It imports runs.py (the result and whole-file saves), tables.py, evaluation.py (Brier
scores) and, for Grad-CAM only, Keras, data.py and explain.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from data import CLASS_NAMES
from evaluation import brier_scores
from runs import RunResult, save_figure
from tables import hyperparameter_columns, maximised

EXAMPLES_PER_OUTCOME = 3


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
        save_figure(run_dir / "search_progress.png", search_progress_figure(result.trials, objective))
        save_figure(run_dir / "search_hyperparameters.png", hyperparameter_figure(result.trials))
    save_figure(
        run_dir / "learning_curves.png",
        learning_curves_figure(result.history, objective, result.metrics["run"]["best_epoch"]),
    )
    save_figure(run_dir / "confusion_matrix.png", confusion_figure(result.metrics))
    save_figure(run_dir / "roc_curve.png", roc_figure(result.predictions, result.metrics))
    save_figure(run_dir / "calibration.png", calibration_figure(result.predictions))
    if (run_dir / "model.keras").exists() and not (run_dir / "gradcam.png").exists():
        save_figure(run_dir / "gradcam.png", gradcam_figure(result))


def learning_curves_figure(history: pd.DataFrame, objective: str, best_epoch: int) -> Figure:
    figure = Figure(figsize=(13, 3.6), layout="constrained")
    for ax, metric in zip(figure.subplots(1, 3), ("loss", "accuracy", "auc")):
        ax.plot(history["epoch"], history[metric], label="train")
        ax.plot(history["epoch"], history[f"val_{metric}"], label="validation")
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
    figure = Figure(figsize=(5, 4.6), layout="constrained")
    ax = figure.subplots()
    for split in ("validation", "test"):
        rows = predictions[predictions["split"] == split]
        RocCurveDisplay.from_predictions(rows["label"], rows["p_pneumonia"], name=split, ax=ax)
        chosen = metrics[split]
        ax.plot(1 - chosen["specificity"], chosen["sensitivity"], "o", color="black")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_title("ROC (dots: the validation-chosen threshold)")
    return figure


def calibration_figure(predictions: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(5, 4.6), layout="constrained")
    ax = figure.subplots()
    for split, brier in brier_scores(predictions).items():
        rows = predictions[predictions["split"] == split]
        CalibrationDisplay.from_predictions(
            rows["label"], rows["p_pneumonia"], n_bins=10, name=f"{split} (Brier {brier:.3f})", ax=ax
        )
    ax.set(xlabel="mean predicted P(pneumonia) in bin", ylabel="share of PNEUMONIA in bin")
    ax.set_title("Reliability diagram (10 equal-width bins)")
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
    import explain

    model = keras.saving.load_model(result.run_dir / "model.keras", safe_mode=True)
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


def search_progress_figure(trials: pd.DataFrame, objective: str) -> Figure:
    figure = Figure(figsize=(7, 3.8), layout="constrained")
    ax = figure.subplots()
    done = trials[trials["status"] == "COMPLETED"]
    order = np.arange(len(trials))[trials["status"].to_numpy() == "COMPLETED"]
    ax.plot(order, done["objective"], "o", label="trial")
    ax.step(
        order,
        done["objective"].cummax() if maximised(objective) else done["objective"].cummin(),
        where="post",
        label="best so far",
    )
    if len(done) and done.index[0] == 0:
        ax.plot(order[0], done["objective"].iloc[0], "s", color="red", markersize=9, label="baseline (trial 0)")
    ax.set(xlabel="trial", ylabel=objective, title="Search progress")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def hyperparameter_figure(trials: pd.DataFrame) -> Figure:
    done = trials[trials["status"] == "COMPLETED"]
    names = [name for name in hyperparameter_columns(trials) if done[name].notna().any()]
    columns = 3
    rows = max(1, math.ceil(len(names) / columns))
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax, name in zip(axes, names):
        ax.plot(done[name], done["objective"], "o", alpha=0.7)
        if name == "learning_rate":
            ax.set_xscale("log")
        ax.set(xlabel=name, ylabel="objective")
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    figure.suptitle("Validation objective against each hyperparameter")
    return figure
