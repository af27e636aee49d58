"""The final model: retrained for final_epochs, chosen among full-length finalists on validation alone, then
evaluated once on test.

The search's scores after a few epochs barely rank its best points (docs/results.md), so the best few
points and the baseline's are each retrained for final_epochs, and the choice is made between those
models: greedy ensemble selection with replacement on validation log loss (Caruana et al. 2004, what
auto-sklearn and AutoGluon do), where an ensemble of one is allowed. The baseline's point is the
incumbent: it is replaced only where a paired bootstrap over validation patients shows the chosen
model's log loss lower (SMAC's intensification races a challenger against the incumbent the same way).
Then, and only then, the test split is predicted, once, for every finalist.

Without finalists (`finalists: 0`), or for a --baseline run, the one point retrained is the only finalist: the
same retrains, the same scoring and the same metrics.json shape (`chose_among_finalists` says whether there was a
choice to make).

One concern: the final model. It imports training.py (the retrains), evaluation.py (the scores), runs.py
(the retrain backups' folder), hypermodel.py (the saved forms) and data.py (each image's patient).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluation import (
    challenger_minus_incumbent,
    classification_metrics,
    image_log_loss,
    predict_split,
    predictions_table,
    scored,
    validation_threshold,
)
from runs import RETRAIN_BACKUP, no_race, only_finalist_selection

if TYPE_CHECKING:
    import pandas as pd

    from config import Settings
    from data import Splits
    from pipeline.context import RunContext


@dataclass
class FinalModel:
    """What the run delivers and reports."""

    model: Any  # saved as model.keras: the chosen model, without the training-only augmentation
    history: pd.DataFrame  # the retrain of the model (an ensemble's heaviest member), per epoch
    best_epoch: int
    point: dict[str, Any]  # the hyperparameters of that model
    metrics: dict[str, Any]
    predictions: pd.DataFrame


def train_and_evaluate(context: RunContext, candidates: list) -> FinalModel:
    """Retrain the finalists for final_epochs, choose the final model among them and evaluate once on test. The
    best point alone (`finalists: 0`, or a --baseline run) is one finalist, scored by the same code. With a time
    budget (the context's planner), only the finalists that fit in the time left are retrained, the first always."""
    from hypermodel import weighted_ensemble
    from pipeline import repeats, tuning

    settings, hypermodel, planner = context.settings, context.hypermodel, context.time_budget
    backups = context.run_dir / RETRAIN_BACKUP
    if not settings.finalists:
        candidates = candidates[:1]
    elif planner is not None:
        works = [hypermodel.work(tuning.searched_values(c.point)) for c in candidates]
        candidates = candidates[
            : planner.finalists_that_fit(works, begun=repeats.first_retrains_begun(candidates, backups))
        ]
    finalists, comparisons = repeats.retrain_repeats(context, candidates)
    context.clock.lap("final_training")
    metrics, predictions, weights = evaluate_finalists(finalists, context.splits, settings)
    if settings.repeats > 1:
        metrics["selection"]["racing"] = comparisons
    heaviest = finalists[int(np.argmax(weights))]
    members = [(model, weight / len(f.models), _member_name(f, k)) for f, weight in zip(finalists, weights)
               for k, model in enumerate(f.models, start=1)]  # fmt: skip
    chosen = weighted_ensemble(*(list(column) for column in zip(*members)))
    point = tuning.searched_values(heaviest.candidate.point)
    return FinalModel(chosen, heaviest.histories[0], heaviest.kept_epochs[0], point, metrics, predictions)


def _member_name(finalist: Any, repeat: int) -> str:
    """A member's name in the delivered model: its trial, and its repeat where the finalist has several."""
    trial_id = finalist.candidate.trial_id
    return trial_id if len(finalist.models) == 1 else f"{trial_id}_r{repeat}"


def finalist_record(finalist: Any) -> dict[str, Any]:
    """What metrics.json keeps of a finalist besides its scores (its first repeat's kept epoch and training seed)."""
    from pipeline import tuning

    candidate = finalist.candidate
    record = {
        "trial_id": candidate.trial_id,
        "is_baseline": candidate.is_baseline,
        "point": tuning.searched_values(candidate.point),
        "search_score": candidate.search_score,
        "search_last_score": candidate.search_last_score,
        "kept_epoch": finalist.kept_epochs[0],
        "epochs_trained": len(finalist.histories[0]),  # fewer than final_epochs where the time budget stopped it
        "training_seed": finalist.seeds[0],
    }
    if finalist.left_race:
        record["left_race"] = finalist.left_race
    return record


SELECTION_ROUNDS = 10  # greedy additions: weights in tenths; more rounds fit validation's noise finer


def greedy_selection(
    labels: np.ndarray, probabilities: Sequence[np.ndarray], rounds: int = SELECTION_ROUNDS
) -> np.ndarray:
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


def choose(
    labels: np.ndarray, probabilities: Sequence[np.ndarray], patients: Sequence[str], rule: str = "race"
) -> dict[str, Any]:
    """The weights of the finalists (the incumbent, the baseline's point, first) in the final model. The greedy
    ensemble's validation log loss is never above the incumbent's (its first pick is the best single model);
    `race` replaces the incumbent only where the paired interval of the choice's log loss minus the incumbent's
    lies below 0 (`challenger_minus_incumbent`'s `clearly_better`), `lower` wherever
    the greedy ensemble differs from the incumbent alone. The race's interval is recorded under either rule."""
    counts = greedy_selection(labels, probabilities)
    challenger = np.average(probabilities, axis=0, weights=counts)
    incumbent_alone = np.eye(len(probabilities), dtype=int)[0]
    if np.array_equal(counts > 0, incumbent_alone > 0):
        race = no_race()
    else:
        gap = challenger_minus_incumbent(labels, probabilities[0], challenger, patients)
        race = {"difference": gap["difference"], "ci95": gap["ci95"], "clearly_better": gap["clearly_better"]}
    replaced = race["clearly_better"] if rule == "race" else not np.array_equal(counts > 0, incumbent_alone > 0)
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
    finalists: Sequence[Any], splits: Splits, settings: Settings
) -> tuple[dict[str, Any], pd.DataFrame, list[float]]:
    """Choose the final model on validation, then predict test once for every repeat of every finalist. A finalist
    is scored by its repeats' mean; one that left the race clearly worse takes no part in the choice. Returns
    metrics.json's figures (the chosen model's at the top, each finalist's under "finalists", each with its repeats
    where it has several, the choice under "selection"), predictions.csv, and each finalist's weight."""
    import data

    labels = np.asarray(splits.validation.labels)
    validation = [finalist.mean_validation() for finalist in finalists]
    patients = [data.patient_id(path) for path in splits.validation.files]
    racing = [i for i, finalist in enumerate(finalists) if not finalist.clearly_worse]
    if len(finalists) == 1:  # the best point alone, or the budget held no challenger
        selection = {**only_finalist_selection(), "incumbent_rule": settings.incumbent_rule}
    else:
        selection = choose(labels, [validation[i] for i in racing], patients, settings.incumbent_rule)
    weights = np.zeros(len(finalists))
    weights[racing] = selection["weights"]
    chosen_validation = np.average(validation, axis=0, weights=weights)
    repeat_tests = [predict_split(finalist.models, splits.test, settings.batch_size) for finalist in finalists]
    test = [np.mean(each, axis=0) for each in repeat_tests]  # once, after every choice
    chosen_test = np.average(test, axis=0, weights=weights)

    threshold = validation_threshold(splits, chosen_validation, settings)
    metrics = scored(splits, {"validation": chosen_validation, "test": chosen_test}, threshold)
    metrics["finalists"] = [
        {
            **finalist_record(finalist),
            "weight": float(weight),
            **scored(splits, {"validation": ours, "test": theirs}, validation_threshold(splits, ours, settings)),
            **_repeat_records(finalist, tests, splits, settings),
        }
        for finalist, weight, ours, theirs, tests in zip(finalists, weights, validation, test, repeat_tests)
    ]
    greedy = np.zeros(len(finalists))
    greedy[racing] = selection["greedy_weights"]
    metrics["selection"] = {**selection, "greedy_weights": greedy.tolist(), "weights": weights.tolist()}
    columns = _prediction_columns(finalists, chosen_validation, chosen_test, test, repeat_tests)
    return metrics, predictions_table(splits, columns), weights.tolist()


def _repeat_records(finalist: Any, tests: Sequence[np.ndarray], splits: Splits, settings: Settings) -> dict:
    """Each repeat's training seed, kept epoch and figures at its own validation threshold (none for one repeat)."""
    if len(finalist.models) == 1:
        return {}
    records = []
    retrains = zip(finalist.seeds, finalist.kept_epochs, finalist.histories, finalist.validation, tests)
    for k, (seed, kept, history, ours, theirs) in enumerate(retrains):
        threshold = validation_threshold(splits, ours, settings)
        records.append({
            "repeat": k + 1, "training_seed": seed, "kept_epoch": kept, "epochs_trained": len(history),
            "validation": classification_metrics(splits.validation.labels, ours, threshold),
            "test": classification_metrics(splits.test.labels, theirs, threshold),
        })  # fmt: skip
    return {"repeats": records}


def _prediction_columns(
    finalists, chosen_validation, chosen_test, test, repeat_tests
) -> dict[str, dict[str, np.ndarray]]:
    """predictions.csv's columns: the chosen model's, each finalist's (its repeats' mean) and, where a finalist has
    several repeats, each repeat's."""
    scores = {"validation": {"p_pneumonia": chosen_validation}, "test": {"p_pneumonia": chosen_test}}
    for finalist, theirs, tests in zip(finalists, test, repeat_tests):
        column = f"p_finalist_{finalist.candidate.trial_id}"
        scores["validation"][column], scores["test"][column] = finalist.mean_validation(), theirs
        if len(finalist.models) > 1:
            for k, (ours, other) in enumerate(zip(finalist.validation, tests), start=1):
                scores["validation"][f"{column}_r{k}"], scores["test"][f"{column}_r{k}"] = ours, other
    return scores
