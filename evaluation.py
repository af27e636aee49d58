"""Decision threshold (chosen on validation only) and the metrics reported for each split."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray, rule: str | float) -> float:
    """A fixed probability, or Youden's J (max sensitivity + specificity - 1) on these labels.

    Among equally good thresholds the one nearest 0.5 wins, so a saturated validation
    split does not push the threshold to an extreme.
    """
    if not isinstance(rule, str):
        return float(rule)
    if len(np.unique(labels)) < 2:
        return 0.5
    false_positive_rate, true_positive_rate, thresholds = metrics.roc_curve(
        labels, probabilities, drop_intermediate=False
    )
    youden = true_positive_rate - false_positive_rate
    candidates = np.clip(thresholds[youden == youden.max()], 0.0, 1.0)
    return float(candidates[np.argmin(np.abs(candidates - 0.5))])


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, ROC AUC, sensitivity, specificity, precision, F1 and the confusion matrix."""
    predicted = (probabilities >= threshold).astype(int)
    both_classes = len(np.unique(labels)) == 2
    return {
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "roc_auc": float(metrics.roc_auc_score(labels, probabilities)) if both_classes else float("nan"),
        "sensitivity": float(metrics.recall_score(labels, predicted, pos_label=1, zero_division=0)),
        "specificity": float(metrics.recall_score(labels, predicted, pos_label=0, zero_division=0)),
        "precision": float(metrics.precision_score(labels, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(labels, predicted, zero_division=0)),
        "threshold": float(threshold),
        # Rows are true NORMAL, PNEUMONIA; columns predicted NORMAL, PNEUMONIA.
        "confusion_matrix": metrics.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        "n_images": int(len(labels)),
    }
