"""The final model: retrained for final_epochs, chosen among full-length finalists on validation alone, then
evaluated once on test.

The search's scores after a few epochs barely rank its best points (docs/results.md), so the best few
points and the baseline's are each retrained for final_epochs, and the choice is made between those
models: greedy ensemble selection with replacement on validation log loss (Caruana et al. 2004, what
auto-sklearn and AutoGluon do), where an ensemble of one is allowed. The baseline's point is the
incumbent: it is replaced only where a paired bootstrap over validation patients shows the chosen
model's log loss lower (SMAC's intensification races a challenger against the incumbent the same way).
Then, and only then, the test split is predicted, once, for every finalist.

Without finalists (`finalists: 0`), the best point alone is retrained.

One concern: the final model. It imports training.py (the retrains), evaluation.py (the scores), runs.py
(the retrain backups' folder), hypermodel.py (the saved forms) and data.py (each image's patient).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluation import (
    image_log_loss,
    paired_difference,
    predict_split,
    predictions_table,
    scored,
    validation_threshold,
)
from runs import RETRAIN_BACKUP

if TYPE_CHECKING:
    import pandas as pd

    from config import Settings

@dataclass
class FinalModel:
    """What the run delivers and reports."""

    model: Any  # saved as model.keras: the chosen model, without the training-only augmentation
    history: pd.DataFrame  # the retrain of the model (an ensemble's heaviest member), per epoch
    best_epoch: int
    point: dict[str, Any]  # the hyperparameters of that model
    metrics: dict[str, Any]
    predictions: pd.DataFrame


def train_and_evaluate(
    hypermodel: Any, candidates: list, splits: dict[str, Any], settings: Settings, run_dir: Path, clock: Any,
    planner: Any = None,
) -> FinalModel:
    """Retrain for final_epochs and evaluate once on test: the finalists and the model chosen among them, or the
    best point alone. With a time budget (`planner`), only the finalists that fit in the time left are retrained,
    the baseline's point always."""
    from evaluation import evaluate
    from hypermodel import weighted_ensemble, without_augmentation
    from pipeline import training, tuning

    backups = run_dir / RETRAIN_BACKUP
    if planner is not None and settings.finalists:
        candidates = candidates[: planner.finalists_that_fit([hypermodel.work(tuning.searched_values(c.point)) for c in candidates])]
    if settings.finalists and len(candidates) > 1:
        trained = training.retrain_finalists(hypermodel, candidates, splits, settings, backups, planner)
        clock.lap("final_training")
        records = [finalist_record(candidate, kept) for candidate, (_, _, kept) in zip(candidates, trained)]
        models = [without_augmentation(model) for model, _, _ in trained]
        metrics, predictions, weights = evaluate_finalists(models, records, splits, settings)
        heaviest = int(np.argmax(weights))
        chosen = weighted_ensemble(models, weights, [candidate.trial_id for candidate in candidates])
        _, history, kept = trained[heaviest]
        point = tuning.searched_values(candidates[heaviest].point)
        return FinalModel(chosen, history, kept, point, metrics, predictions)
    best = candidates[0].point
    model, history, kept = training.retrain(
        hypermodel, best, splits, settings, backups / "best", run_dir / "tensorboard" / "final", planner
    )
    clock.lap("final_training")
    metrics, predictions = evaluate(model, splits, settings)
    return FinalModel(without_augmentation(model), history, kept, tuning.searched_values(best), metrics, predictions)


def finalist_record(candidate: Any, kept_epoch: int) -> dict[str, Any]:
    """What metrics.json keeps of a finalist besides its scores."""
    from pipeline import tuning

    return {
        "trial_id": candidate.trial_id,
        "is_baseline": candidate.is_baseline,
        "point": tuning.searched_values(candidate.point),
        "search_score": candidate.search_score,
        "search_last_score": candidate.search_last_score,
        "kept_epoch": kept_epoch,
    }


SELECTION_ROUNDS = 10  # greedy additions: weights in tenths; more rounds fit validation's noise finer

def greedy_selection(labels: np.ndarray, probabilities: Sequence[np.ndarray], rounds: int = SELECTION_ROUNDS) -> np.ndarray:
    """How many times each model enters the ensemble: each round adds, with replacement, the model whose addition
    gives the bag's mean probability the lowest log loss; the best bag of any round is kept (the earliest at a
    tie, so fewer members win). Ties between models go to the one listed first: the incumbent."""
    counts, best_counts, best_loss = np.zeros(len(probabilities), int), None, np.inf
    total = np.zeros_like(probabilities[0])
    for size in range(1, rounds + 1):
        losses = [image_log_loss(labels, (total + p) / size).mean() for p in probabilities]
        chosen = int(np.argmin(losses))
        counts[chosen] += 1
        total += probabilities[chosen]
        if losses[chosen] < best_loss - 1e-12:
            best_loss, best_counts = losses[chosen], counts.copy()
    return best_counts


def race_against_incumbent(
    labels: np.ndarray, incumbent: np.ndarray, challenger: np.ndarray, patients: Sequence[str]
) -> dict[str, Any]:
    """The incumbent's validation log loss minus the challenger's, with a paired 95% interval over resampled
    validation patients; the challenger wins only where the interval lies above 0."""
    paired = paired_difference(labels, [((incumbent, 0.5), (challenger, 0.5))], patients)["log_loss"]
    return {**paired, "challenger_wins": bool(paired["ci95"][0] > 0)}


def choose(
    labels: np.ndarray, probabilities: Sequence[np.ndarray], patients: Sequence[str], rule: str = "race"
) -> dict[str, Any]:
    """The weights of the finalists (the incumbent, the baseline's point, first) in the final model. The greedy
    ensemble's validation log loss is never above the incumbent's (its first pick is the best single model);
    `race` replaces the incumbent only where the paired interval of the difference lies above 0, `lower` wherever
    the greedy ensemble differs from the incumbent alone. The race's interval is recorded under either rule."""
    counts = greedy_selection(labels, probabilities)
    challenger = np.average(probabilities, axis=0, weights=counts)
    incumbent_alone = np.eye(len(probabilities), dtype=int)[0]
    if np.array_equal(counts > 0, incumbent_alone > 0):
        race = {"difference": 0.0, "ci95": [0.0, 0.0], "challenger_wins": False}
    else:
        race = race_against_incumbent(labels, probabilities[0], challenger, patients)
    replaced = race["challenger_wins"] if rule == "race" else not np.array_equal(counts > 0, incumbent_alone > 0)
    weights = counts / counts.sum() if replaced else incumbent_alone.astype(float)
    return {
        "rule": f"greedy selection with replacement on validation log loss ({SELECTION_ROUNDS} rounds), "
        + (
            "replacing the baseline's point only where a paired patient bootstrap shows a lower log loss"
            if rule == "race"
            else "replacing the baseline's point wherever the ensemble's validation log loss is lower"
        ),
        "incumbent_rule": rule,
        "replaced": bool(replaced),
        "greedy_weights": (counts / counts.sum()).tolist(),
        "race": race,
        "weights": weights.tolist(),
    }


def evaluate_finalists(
    models: Sequence[Any], finalists: Sequence[dict[str, Any]], splits: dict[str, Any], settings: Settings
) -> tuple[dict[str, Any], pd.DataFrame, list[float]]:
    """Choose the final model on validation, then predict test once for every finalist. Returns metrics.json's
    figures (the chosen model's at the top, each finalist's under "finalists", the choice under "selection"),
    predictions.csv, and each finalist's weight in the chosen model."""
    import data

    labels = np.asarray(splits["validation"].labels)
    validation = predict_split(models, splits["validation"], settings.batch_size)
    patients = [data.patient_id(path) for path in splits["validation"].files]
    selection = choose(labels, validation, patients, settings.incumbent_rule)
    weights = np.asarray(selection["weights"])
    chosen_validation = np.average(validation, axis=0, weights=weights)
    test = predict_split(models, splits["test"], settings.batch_size)  # once, after every choice
    chosen_test = np.average(test, axis=0, weights=weights)

    metrics = scored(splits, {"validation": chosen_validation, "test": chosen_test}, validation_threshold(splits, chosen_validation, settings))
    metrics["finalists"] = [
        {
            **finalist,
            "weight": float(weight),
            **scored(splits, {"validation": ours, "test": theirs}, validation_threshold(splits, ours, settings)),
        }
        for finalist, weight, ours, theirs in zip(finalists, weights, validation, test)
    ]
    metrics["selection"] = selection
    columns = [f"p_finalist_{finalist['trial_id']}" for finalist in finalists]
    scores = {
        "validation": {"p_pneumonia": chosen_validation, **{columns[i]: p for i, p in enumerate(validation)}},
        "test": {"p_pneumonia": chosen_test, **{columns[i]: p for i, p in enumerate(test)}},
    }
    return metrics, predictions_table(splits, scores), weights.tolist()
