"""Does the search's objective predict the retrained model? Retrain a finished search's best points and rank them again.

    python bench/experiments/objective.py reports/<search run> [--top 5]

Reads the run's config.yaml and Keras Tuner state, takes its `--top` best distinct points by the
search's objective, retrains each from scratch as search.py's final training does (final_epochs,
final_schedule, the run's seed, the kept epoch the best on validation by the run's objective) and
prints, per point, its search score and its retrained validation AUC and loss at the kept epoch, then
Spearman's rank correlation between the search score and each retrained score. Then the ensembles
of the top k retrained points (mean P(pneumonia)), for each k, against the best point alone: validation
ROC AUC and log loss, with paired 95% intervals over resampled validation patients. Each retrained
point is added to `objective_bench.csv` (scores) and `objective_bench_validation.csv` (its validation
probabilities) in the run folder as it finishes, so a stopped benchmark goes on where it stopped.
Only validation is read: nothing here predicts the test split.
A one-off: its figures (docs/results.md) were recorded at commit f7a5665.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from config import Settings
from pipeline.context import RunContext
from runs import RunFolder, Stopwatch

RESULTS = "objective_bench.csv"
VALIDATION = "objective_bench_validation.csv"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished search run folder")
    parser.add_argument("--top", type=int, default=5, help="how many of the best distinct points to retrain")
    args = parser.parse_args(argv)
    # Keys added since the run started keep their legacy values or defaults (they change nothing it did).
    config = RunFolder(args.run_dir).settings()
    from runtime import backends

    backends.activate(config.backend)
    results, validation = args.run_dir / RESULTS, args.run_dir / VALIDATION
    done = pd.read_csv(results, dtype={"trial_id": str}) if results.exists() else pd.DataFrame()
    probabilities = pd.read_csv(validation) if validation.exists() else _validation_frame(config)
    rows = done.to_dict("records")
    for trial_id, score, point in best_points(args.run_dir, config, args.top):
        if trial_id in set(done.get("trial_id", [])):
            continue
        scores, probabilities[f"p_{trial_id}"] = retrained_scores(args.run_dir, config, point)
        probabilities.to_csv(validation, index=False)  # before the scores: a row there means its column is here
        rows.append({"trial_id": trial_id, "search_score": score, **scores})
        pd.DataFrame(rows).to_csv(results, index=False)
    table = pd.DataFrame(rows)
    print_table(table, config.objective)
    print_ensembles(probabilities, list(table["trial_id"]))


def best_points(run_dir: Path, config: Settings, count: int) -> list[tuple[str, float, object]]:
    """(trial id, search score, point) of the best distinct points, best first, from the run's tuner state."""
    from pipeline import start, training, tuning

    tuner = training.make_tuner(start.make_hypermodel(config), config, run_dir)
    chosen, seen = [], []
    for trial in tuner.oracle.get_best_trials(len(tuner.oracle.trials)):
        values = tuning.searched_values(trial.hyperparameters)
        if trial.score is not None and values not in seen:
            seen.append(values)
            chosen.append((trial.trial_id, float(trial.score), trial.hyperparameters))
    return chosen[:count]


def retrained_scores(run_dir: Path, config: Settings, point) -> tuple[dict[str, float], np.ndarray]:
    """The point retrained as the run's final training: validation AUC and loss at the kept epoch, and its
    validation P(pneumonia)."""
    import data
    from pipeline import start, training

    splits = _splits(config)
    context = RunContext(config, start.make_hypermodel(config), splits, run_dir, Stopwatch())
    model, history, kept = training.retrain(
        context, point, run_dir / "objective-bench-retrain", training_seed=config.seed
    )
    row = history.iloc[kept - 1]
    scores = {
        "kept_epoch": kept,
        "val_auc": row["val_auc"],
        "val_loss": row["val_loss"],
        "val_accuracy": row["val_accuracy"],
    }
    images = data.to_dataset(splits.validation, config.batch_size)
    return scores, model.predict(images, verbose=0)[: len(splits.validation), 1].astype(np.float64)


def _validation_frame(config: Settings) -> pd.DataFrame:
    import data

    validation = _splits(config).validation
    return pd.DataFrame(
        {
            "file": map(str, validation.files),
            "patient": map(data.patient_id, validation.files),
            "label": validation.labels,
        }
    )


def _splits(config: Settings, cache: dict = {}):  # noqa: B006  (decoded once per process on purpose)
    import search

    if not cache:
        cache["splits"] = search.load_data(config)
    return cache["splits"]


def print_table(table: pd.DataFrame, objective: str) -> None:
    from scipy.stats import spearmanr

    print(table.to_string(index=False))
    searched = table["search_score"] * (-1 if objective.endswith("loss") else 1)  # higher is better from here on
    for retrained in ("val_auc", "val_loss"):
        sign = -1 if retrained.endswith("loss") else 1  # lower loss ranks higher
        rho = spearmanr(searched, sign * table[retrained]).statistic if len(table) > 2 else float("nan")
        print(
            f"Spearman rank correlation, search {objective} against retrained {retrained}: {rho:.2f} ({len(table)} points)"
        )


def print_ensembles(probabilities: pd.DataFrame, trial_ids: list[str]) -> None:
    """Validation AUC and log loss of the mean of the top k points, each k, minus the best point alone (paired)."""
    from evaluation import patient_resamples, percentile_interval, weighted_roc_auc

    labels = probabilities["label"].to_numpy()
    weights = patient_resamples(probabilities["patient"].astype(str))
    whole = np.ones((1, len(labels)))

    def figures(p: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        clipped = np.clip(p, 1e-7, 1 - 1e-7)
        losses = -(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
        return {"roc_auc": weighted_roc_auc(labels, p, rows), "log_loss": rows @ losses / rows.sum(axis=1)}

    best = probabilities[f"p_{trial_ids[0]}"].to_numpy()
    best_observed, best_resampled = figures(best, whole), figures(best, weights)
    lines = []
    for k in range(1, len(trial_ids) + 1):
        mean = probabilities[[f"p_{trial_id}" for trial_id in trial_ids[:k]]].to_numpy().mean(axis=1)
        observed, resampled = figures(mean, whole), figures(mean, weights)
        line = {"top k": k}
        for name in ("roc_auc", "log_loss"):
            difference = resampled[name] - best_resampled[name]
            low, high = percentile_interval(difference)
            line[name] = f"{observed[name][0]:.5f}"
            line[f"{name} - best"] = f"{observed[name][0] - best_observed[name][0]:+.5f} [{low:+.5f}, {high:+.5f}]"
        lines.append(line)
    print("\nEnsembles of the top k retrained points (mean P(pneumonia)) on validation, paired 95% intervals:")
    print(pd.DataFrame(lines).to_string(index=False))


if __name__ == "__main__":
    main()
