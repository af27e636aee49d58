import numpy as np
import pytest

from evaluation import choose_threshold, classification_metrics


def test_youden_threshold_separates_validation():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.array([0.05, 0.2, 0.3, 0.35, 0.8, 0.9])
    threshold = choose_threshold(labels, probabilities, "youden")
    assert 0.3 < threshold <= 0.35
    assert classification_metrics(labels, probabilities, threshold)["accuracy"] == 1.0


def test_youden_ties_resolve_towards_one_half():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([0.0001, 0.0002, 0.9998, 0.9999])
    assert choose_threshold(labels, probabilities, "youden") == pytest.approx(0.9998)


def test_fixed_threshold_is_used_as_given():
    assert choose_threshold(np.array([0, 1]), np.array([0.1, 0.2]), 0.5) == 0.5


def test_metrics_from_a_known_confusion_matrix():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    probabilities = np.array([0.1, 0.2, 0.7, 0.3, 0.9, 0.8, 0.4, 0.6, 0.95, 0.7])
    result = classification_metrics(labels, probabilities, 0.5)
    assert result["confusion_matrix"] == [[3, 1], [1, 5]]
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["sensitivity"] == pytest.approx(5 / 6)
    assert result["specificity"] == pytest.approx(3 / 4)
    assert result["precision"] == pytest.approx(5 / 6)
    assert result["f1"] == pytest.approx(5 / 6)
    assert result["n_images"] == 10 and result["threshold"] == 0.5
    assert 0.5 < result["roc_auc"] <= 1
