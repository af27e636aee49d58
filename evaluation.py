"""The evaluation protocol and its metrics: the threshold chosen on validation only, then the single test
prediction; the metrics of each split, patient-bootstrap intervals and paired differences.

One concern: scoring predictions. It imports numpy and scikit-learn; `predict_split` alone also uses data.py
and the trained Keras models it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn import metrics

if TYPE_CHECKING:
    import pandas as pd

    from config import Settings
    from data import Splits


# The plateau rule's width: J within this many images of the smaller class of the best J. On the validation
# predictions of seeds 45-47 (bench/threshold.py), 3 images cut the spread of the chosen threshold over patient
# resamples by a third against Youden's argmax (logit sd 0.20-0.90 against 0.22-1.32), J 0.008 lower on average.
PLATEAU_IMAGES = 3


def choose_threshold(
    labels: np.ndarray, probabilities: np.ndarray, rule: str | float, patients: Sequence[str] | None = None
) -> float:
    """A fixed probability; Youden's J (max sensitivity + specificity - 1) on these labels (`youden`);
    `youden_or_half`: 0.5 unless Youden's threshold is clearly better on these labels (see youden_beats_half);
    or `plateau`: the middle, in logit space, of every threshold whose J is within PLATEAU_IMAGES images (of the
    smaller class) of the best.

    Among equally good Youden thresholds the one nearest 0.5 wins, so a saturated validation
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
    if rule == "plateau":
        return plateau_middle(np.clip(thresholds, 0.0, 1.0), youden, PLATEAU_IMAGES / np.bincount(labels).min())
    candidates = np.clip(thresholds[youden == youden.max()], 0.0, 1.0)
    best = float(candidates[np.argmin(np.abs(candidates - 0.5))])
    if rule == "youden":
        return best
    if patients is None:
        raise ValueError("the youden_or_half threshold rule needs the patient of every image")
    return best if youden_beats_half(labels, probabilities, best, patients) else 0.5


def plateau_middle(thresholds: np.ndarray, youden: np.ndarray, tolerance: float) -> float:
    """The middle, in logit space, of the thresholds whose J lies within `tolerance` of the best.

    `thresholds` are the ROC curve's, in decreasing order; J at each holds for every threshold down to, not
    including, the next. With validation AUC near 1, J is flat across the whole gap between the classes, and
    its argmax lands anywhere in that gap, moved by one or two images; the middle of the near-best stretch moves
    less. Where the stretch is not one piece and its middle scores worse, the middle of the near-best piece
    closest to it wins.
    """
    floor = youden.max() - tolerance - 1e-12
    spans = [
        (lower, upper) for lower, upper, j in zip(np.append(thresholds[1:], 0.0), thresholds, youden) if j >= floor
    ]
    middle = _logit_middle(min(lower for lower, _ in spans), max(upper for _, upper in spans))
    above = thresholds >= middle  # J at a threshold is J at the lowest ROC threshold at or above it
    if above.any() and youden[above][np.argmin(thresholds[above])] >= floor:
        return middle
    pieces = [_logit_middle(lower, upper) for lower, upper in spans]
    return min(pieces, key=lambda piece: abs(_logit(piece) - _logit(middle)))


def _logit_middle(lower: float, upper: float) -> float:
    return float(_sigmoid((_logit(lower) + _logit(upper)) / 2))


def _logit(p: Any) -> Any:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1 / (1 + np.exp(-z))


def youden_beats_half(labels: np.ndarray, probabilities: np.ndarray, threshold: float, patients: Sequence[str]) -> bool:
    """Whether Youden's J at `threshold` exceeds J at 0.5 with a paired 95% interval above 0 (patient bootstrap).

    On a saturated validation split many thresholds score nearly the same J, and the maximum moves
    from resample to resample (bench/threshold.py); 0.5 is where class-weighted training puts the balance.
    """
    weights = patient_resamples(patients)
    difference = youden_j(labels, probabilities, threshold, weights) - youden_j(labels, probabilities, 0.5, weights)
    return percentile_interval(difference)[0] > 0


def youden_j(labels: np.ndarray, probabilities: np.ndarray, threshold: float, weights: np.ndarray) -> np.ndarray:
    """Sensitivity + specificity - 1 at `threshold`, for each row of weights (a resample of the images)."""
    resampled = resampled_metrics(labels, probabilities, threshold, weights)
    return resampled["sensitivity"] + resampled["specificity"] - 1


def image_log_loss(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Each image's log loss, unsmoothed (probabilities clipped to [1e-7, 1 - 1e-7] before the logarithm)."""
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, ROC AUC, sensitivity, specificity, precision, F1, log loss and the confusion matrix."""
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
        "log_loss": float(image_log_loss(np.asarray(labels), probabilities).mean()) if len(labels) else float("nan"),
        # Rows are true NORMAL, PNEUMONIA; columns predicted NORMAL, PNEUMONIA.
        "confusion_matrix": metrics.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        "n_images": int(len(labels)),
    }


# Intervals on the test figures: a bootstrap over patients, not images, because a patient's images
# are not independent (427 patients hold the 624 test images). The threshold stays the one chosen on
# validation; the intervals describe how the figures vary with the sample of test patients only.
INTERVAL_METRICS = ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1", "log_loss")
N_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # one seed for every run, so that two runs on the same test images share their draws


def patient_resamples(
    patients: Sequence[str], n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> np.ndarray:
    """How many times each image is drawn in each resample: an (n_resamples, n_images) array.

    Each resample draws as many patients as there are, with replacement; a patient drawn twice
    brings every one of its images twice.
    """
    unique, patient_of_image = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    drawn = np.random.default_rng(seed).integers(len(unique), size=(n_resamples, len(unique)))
    offsets = np.arange(n_resamples)[:, None] * len(unique)  # one bincount for every resample at once
    per_patient = np.bincount((drawn + offsets).ravel(), minlength=n_resamples * len(unique))
    return per_patient.reshape(n_resamples, len(unique))[:, patient_of_image].astype(float)


def resampled_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Each of INTERVAL_METRICS on every resample (a row of `weights`); NaN where it is undefined.

    A row of weights counts each image as often as it was drawn, so these equal sklearn's metrics
    on the resampled images (a test checks this); computed for all rows at once.
    """
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    predicted = probabilities >= threshold
    positive = labels == 1
    tp, fn = weights @ (positive & predicted), weights @ (positive & ~predicted)
    tn, fp = weights @ (~positive & ~predicted), weights @ (~positive & predicted)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "accuracy": (tp + tn) / weights.sum(axis=1),
            "roc_auc": weighted_roc_auc(labels, probabilities, weights),
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "precision": tp / (tp + fp),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "log_loss": weights @ image_log_loss(labels, probabilities) / weights.sum(axis=1),
        }


def weighted_roc_auc(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for each row of weights: the weighted share of (positive, negative) pairs ranked right, ties half."""
    _, level = np.unique(probabilities, return_inverse=True)  # images with equal probability share a level
    by_level = np.zeros((len(labels), level.max() + 1))
    by_level[np.arange(len(labels)), level] = 1
    positives = weights @ (by_level * (labels == 1)[:, None])
    negatives = weights @ (by_level * (labels == 0)[:, None])
    below = np.cumsum(negatives, axis=1) - negatives
    with np.errstate(divide="ignore", invalid="ignore"):
        return (positives * (below + negatives / 2)).sum(axis=1) / (positives.sum(axis=1) * negatives.sum(axis=1))


def percentile_interval(values: np.ndarray) -> list[float]:
    """The central 95% of the resampled values, leaving out resamples where the metric is undefined."""
    values = values[np.isfinite(values)]
    if not len(values):
        return [float("nan"), float("nan")]
    return [float(bound) for bound in np.percentile(values, [2.5, 97.5])]


def bootstrap_test_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    patients: Sequence[str],
    types: Sequence[str | None],
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """95% intervals of the test metrics (`ci95`), how they were drawn, and the sensitivity per pneumonia type."""
    labels = np.asarray(labels)
    weights = patient_resamples(patients, n_resamples, seed)
    resampled = resampled_metrics(labels, probabilities, threshold, weights)
    return {
        "ci95": {name: percentile_interval(values) for name, values in resampled.items()},
        "bootstrap": {
            "unit": "patients",
            "patients": len(set(patients)),
            "resamples": n_resamples,
            "seed": seed,
            "method": "percentile",
        },
        "by_type": sensitivity_by_type(labels, probabilities, threshold, patients, types, weights),
    }


def sensitivity_by_type(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    patients: Sequence[str],
    types: Sequence[str | None],
    weights: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Per pneumonia type: the share of its PNEUMONIA images called PNEUMONIA, with interval and counts."""
    detected = np.asarray(probabilities) >= threshold
    types = np.asarray(types, dtype=object)
    result = {}
    for name in sorted({kind for kind, label in zip(types, labels) if kind and label == 1}):
        mine = (types == name) & (np.asarray(labels) == 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            resampled = (weights[:, mine] @ detected[mine]) / weights[:, mine].sum(axis=1)
        result[name] = {
            "sensitivity": float(detected[mine].mean()),
            "ci95": percentile_interval(resampled),
            "n_images": int(mine.sum()),
            "n_patients": len({patient for patient, chosen in zip(patients, mine) if chosen}),
        }
    return result


def paired_difference(
    labels: np.ndarray,
    pairs: Sequence[tuple[tuple[np.ndarray, float], tuple[np.ndarray, float]]],
    patients: Sequence[str],
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, dict[str, Any]]:
    """Metric of model A minus model B, each at its own threshold, averaged over `pairs`, with a paired interval.

    `pairs` holds ((probabilities A, threshold A), (probabilities B, threshold B)) on the same test
    images, one pair per seed. Every resample draws the same patients for both models and for every
    pair, so the interval reflects only how the difference varies with the sample of test patients.
    """
    weights = patient_resamples(patients, n_resamples, seed)
    whole = np.ones((1, len(labels)))  # the observed test set, as a resample that draws each patient once
    observed, resampled = [], []
    for (p_a, t_a), (p_b, t_b) in pairs:
        for target, rows in ((observed, whole), (resampled, weights)):
            a, b = resampled_metrics(labels, p_a, t_a, rows), resampled_metrics(labels, p_b, t_b, rows)
            target.append({name: a[name] - b[name] for name in INTERVAL_METRICS})
    return {
        name: {
            "difference": float(np.mean([each[name][0] for each in observed])),
            "ci95": percentile_interval(np.mean([each[name] for each in resampled], axis=0)),
        }
        for name in INTERVAL_METRICS
    }


def challenger_minus_incumbent(
    labels: np.ndarray, incumbent: np.ndarray, challenger: np.ndarray, patients: Sequence[str]
) -> dict[str, Any]:
    """The challenger's log loss minus the incumbent's on one split, with a paired 95% interval over resampled
    patients: `clearly_better` where the whole interval lies below 0, `clearly_worse` where it lies above."""
    paired = paired_difference(labels, [((challenger, 0.5), (incumbent, 0.5))], patients)["log_loss"]
    low, high = paired["ci95"]
    return {**paired, "clearly_better": bool(high < 0), "clearly_worse": bool(low > 0)}


def brier_scores(predictions: pd.DataFrame) -> dict[str, float]:
    """Mean squared error of P(pneumonia) per split: 0 is perfect, 0.25 is a constant 0.5."""
    return {
        split: float(metrics.brier_score_loss(rows["label"], rows["p_pneumonia"]))
        for split, rows in predictions.groupby("split", sort=False)
    }


def predict_split(models: Sequence[Any], split: Any, batch_size: int) -> list[np.ndarray]:
    """P(pneumonia) of each model on one split, in float64, so that predictions.csv holds each float32
    probability exactly and reproduces the metrics."""
    import data

    images = data.to_dataset(split, batch_size)
    # The last batch's padding rows come after the split's own.
    return [model.predict(images, verbose=0)[: len(split), 1].astype(np.float64) for model in models]


def validation_threshold(splits: Splits, probabilities: np.ndarray, settings: Settings) -> float:
    """The threshold `settings.threshold` chooses on the validation split alone."""
    import data

    patients = [data.patient_id(path) for path in splits.validation.files]
    return choose_threshold(splits.validation.labels, probabilities, settings.threshold, patients)


def scored(splits: Splits, probabilities: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    """Validation and test metrics at one threshold; test also with intervals over resampled test patients and
    sensitivity per pneumonia type (test is only described: nothing is chosen from it)."""
    import data

    result = {
        name: classification_metrics(splits.split(name).labels, scores, threshold)
        for name, scores in probabilities.items()
    }
    files = splits.test.files
    patients, types = [data.patient_id(path) for path in files], [data.pneumonia_type(path) for path in files]
    result["test"] |= bootstrap_test_metrics(splits.test.labels, probabilities["test"], threshold, patients, types)
    return result


def predictions_table(splits: Splits, scores: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """predictions.csv: one row per validation and test image, one column per scored model."""
    import pandas as pd

    return pd.concat(
        pd.DataFrame(
            {
                "split": name,
                "file": map(str, splits.split(name).files),
                "label": splits.split(name).labels,
                **scores[name],
            }
        )
        for name in scores
    )
