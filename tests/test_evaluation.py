import numpy as np
import pytest

from evaluation import (
    INTERVAL_METRICS,
    bootstrap_test_metrics,
    choose_threshold,
    classification_metrics,
    paired_difference,
    patient_resamples,
    resampled_metrics,
)


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


def test_youden_or_half_keeps_youden_only_where_validation_clearly_prefers_it():
    rng = np.random.default_rng(0)
    patients = [f"p{i}" for i in range(200)]
    labels = np.repeat([0, 1], 100)
    # Every PNEUMONIA image below 0.5: Youden's threshold (about 0.3) is far better than 0.5 on every resample.
    low = np.concatenate([rng.uniform(0.0, 0.2, 100), rng.uniform(0.3, 0.45, 100)])
    assert choose_threshold(labels, low, "youden_or_half", patients) == choose_threshold(labels, low, "youden")
    assert choose_threshold(labels, low, "youden") < 0.45
    # One image fewer misclassified at 0.3 than at 0.5: no resampling of patients could call that clear.
    close = np.concatenate([rng.uniform(0.0, 0.2, 100), [0.35], rng.uniform(0.6, 1.0, 99)])
    assert choose_threshold(labels, close, "youden") < 0.5
    assert choose_threshold(labels, close, "youden_or_half", patients) == 0.5
    with pytest.raises(ValueError, match="needs the patient of every image"):
        choose_threshold(labels, close, "youden_or_half")


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


def test_a_resample_draws_whole_patients_with_replacement():
    patients = ["b", "a", "a", "c", "c", "c"]
    weights = patient_resamples(patients, 300, seed=5)
    # By hand: the same generator draws 3 patients of the sorted ["a", "b", "c"] per resample.
    drawn = np.random.default_rng(5).integers(3, size=(300, 3))
    per_patient = np.stack([(drawn == index).sum(axis=1) for index in range(3)], axis=1)
    assert weights.tolist() == per_patient[:, [1, 0, 0, 2, 2, 2]].tolist()
    assert (weights[:, 1] == weights[:, 2]).all() and (weights[:, 3] == weights[:, 5]).all()
    assert len({tuple(row) for row in weights}) > 5  # the resamples differ


def test_resampled_metrics_by_hand_and_against_sklearn_on_the_repeated_images():
    labels = np.array([1, 1, 0, 0])
    probabilities = np.array([0.9, 0.4, 0.6, 0.1])
    # Image 0 twice (two true positives), image 1 not drawn, one false positive, one true negative.
    result = resampled_metrics(labels, probabilities, 0.5, np.array([[2.0, 0, 1, 1]]))
    by_hand = {"accuracy": 3 / 4, "roc_auc": 1.0, "sensitivity": 1.0, "specificity": 1 / 2, "precision": 2 / 3}
    for name, value in by_hand.items():
        assert result[name][0] == pytest.approx(value)
    assert result["f1"][0] == pytest.approx(2 * (2 / 3) / (1 + 2 / 3))

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    probabilities = np.round(rng.random(40) * 0.6 + labels * 0.3, 1)  # rounded: many ties
    weights = rng.integers(0, 3, (20, 40)).astype(float)
    resampled = resampled_metrics(labels, probabilities, 0.45, weights)
    for row, counts in enumerate(weights.astype(int)):
        drawn = np.repeat(np.arange(40), counts)
        expected = classification_metrics(labels[drawn], probabilities[drawn], 0.45)
        for name in INTERVAL_METRICS:
            assert resampled[name][row] == pytest.approx(expected[name])


def simulated_test_set(patients: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One or two images a patient, each patient's images of one class, a model right about 85% of the time."""
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 3, patients)
    patient_labels = rng.integers(0, 2, patients)
    labels = np.repeat(patient_labels, images)
    probabilities = np.clip(0.5 + (labels - 0.5) * 0.6 + rng.normal(0, 0.3, len(labels)), 0, 1)
    return labels, probabilities, [f"p{index}" for index in np.repeat(np.arange(patients), images)]


def test_intervals_hold_the_estimate_and_widen_when_the_test_set_shrinks():
    labels, probabilities, patients = simulated_test_set(400)
    small = np.isin(patients, [f"p{index}" for index in range(100)])
    types = [None] * len(labels)
    whole = bootstrap_test_metrics(labels, probabilities, 0.5, patients, types)
    part = bootstrap_test_metrics(labels[small], probabilities[small], 0.5, list(np.array(patients)[small]), types)
    assert whole["bootstrap"] == {
        "unit": "patients",
        "patients": 400,
        "resamples": 2000,
        "seed": 0,
        "method": "percentile",
    }
    point = classification_metrics(labels, probabilities, 0.5)
    for name in INTERVAL_METRICS:
        low, high = whole["ci95"][name]
        assert low < point[name] < high
        assert part["ci95"][name][1] - part["ci95"][name][0] > 1.4 * (high - low)  # about 2x for a quarter


def test_sensitivity_by_type_counts_each_type_of_pneumonia_image():
    labels = np.array([1, 1, 1, 1, 0, 0])
    probabilities = np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.6])
    patients = ["p1", "p1", "p2", "p3", "n1", "n2"]
    types = ["bacteria", "bacteria", "bacteria", "virus", None, None]
    by_type = bootstrap_test_metrics(labels, probabilities, 0.5, patients, types)["by_type"]
    assert set(by_type) == {"bacteria", "virus"}
    assert by_type["bacteria"]["sensitivity"] == pytest.approx(2 / 3)
    assert (by_type["bacteria"]["n_images"], by_type["bacteria"]["n_patients"]) == (3, 2)
    assert by_type["virus"] == {"sensitivity": 1.0, "ci95": [1.0, 1.0], "n_images": 1, "n_patients": 1}
    low, high = by_type["bacteria"]["ci95"]
    assert low < 2 / 3 < high  # p1 alone gives 1/2, p2 alone 1


def test_paired_difference_resamples_the_same_patients_for_both_models():
    labels = np.array([1, 0, 0, 1])
    patients = ["a", "b", "b", "c"]
    right = np.array([0.9, 0.1, 0.2, 0.8])
    wrong_on_b = np.array([0.9, 0.1, 0.7, 0.8])  # one of b's two images called PNEUMONIA at 0.5
    paired = paired_difference(labels, [((right, 0.5), (wrong_on_b, 0.5))], patients, n_resamples=400, seed=3)
    assert paired["accuracy"]["difference"] == pytest.approx(1 / 4)
    # By hand: each resample's accuracy difference is (draws of b) / (images drawn), b having 2 images.
    drawn = np.random.default_rng(3).integers(3, size=(400, 3))  # patients sorted: a, b, c
    count = {patient: (drawn == index).sum(axis=1) for index, patient in enumerate("abc")}
    by_hand = count["b"] / (count["a"] + 2 * count["b"] + count["c"])
    assert paired["accuracy"]["ci95"] == pytest.approx(list(np.percentile(by_hand, [2.5, 97.5])))

    same = paired_difference(labels, [((right, 0.5), (right, 0.5))], patients, n_resamples=400)
    assert all(same[name] == {"difference": 0.0, "ci95": [0.0, 0.0]} for name in INTERVAL_METRICS)
    swapped = paired_difference(labels, [((wrong_on_b, 0.5), (right, 0.5))], patients, n_resamples=400, seed=3)
    assert swapped["accuracy"]["ci95"] == pytest.approx([-bound for bound in reversed(paired["accuracy"]["ci95"])])
    # Over two pairs (two seeds), the mean difference; one pair with no difference halves it.
    mean = paired_difference(labels, [((right, 0.5), (wrong_on_b, 0.5)), ((right, 0.5), (right, 0.5))], patients)
    assert mean["accuracy"]["difference"] == pytest.approx(1 / 8)
