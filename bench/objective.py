"""Does the search's objective predict the retrained model? Retrain a finished search's best points and rank them again.

    python bench/objective.py reports/<search run> [--top 5]

Reads the run's config.yaml and Keras Tuner state, takes its `--top` best distinct points by the
search's objective, retrains each from scratch as search.py's final training does (final_epochs,
final_schedule, the run's seed, the kept epoch the best on validation by the run's objective) and
prints, per point, its search score and its retrained validation AUC and loss at the kept epoch, then
Spearman's rank correlation between the search score and each retrained score. Each retrained point
is added to `objective_bench.csv` in the run folder as it finishes, so a stopped benchmark goes on
where it stopped. Only validation is read: nothing here predicts the test split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import load_config, read_yaml  # noqa: E402

RESULTS = "objective_bench.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished search run folder")
    parser.add_argument("--top", type=int, default=5, help="how many of the best distinct points to retrain")
    args = parser.parse_args()
    # Keys added since the run started keep their defaults (they change nothing it did).
    config = {**load_config(), **read_yaml(args.run_dir / "config.yaml")}
    import backends

    backends.activate(config["backend"])
    results = args.run_dir / RESULTS
    done = pd.read_csv(results, dtype={"trial_id": str}) if results.exists() else pd.DataFrame()
    rows = done.to_dict("records")
    for trial_id, score, point in best_points(args.run_dir, config, args.top):
        if trial_id in set(done.get("trial_id", [])):
            continue
        rows.append({"trial_id": trial_id, "search_score": score, **retrained_scores(args.run_dir, config, point)})
        pd.DataFrame(rows).to_csv(results, index=False)
    print_table(pd.DataFrame(rows), config["objective"])


def best_points(run_dir: Path, config: dict, count: int) -> list[tuple[str, float, object]]:
    """(trial id, search score, point) of the best distinct points, best first, from the run's tuner state."""
    import search
    import tuning

    tuner = search.make_tuner(search.make_hypermodel(config), config, run_dir)
    chosen, seen = [], []
    for trial in tuner.oracle.get_best_trials(len(tuner.oracle.trials)):
        values = tuning.searched_values(trial.hyperparameters)
        if trial.score is not None and values not in seen:
            seen.append(values)
            chosen.append((trial.trial_id, float(trial.score), trial.hyperparameters))
    return chosen[:count]


def retrained_scores(run_dir: Path, config: dict, point) -> dict[str, float]:
    """The point retrained as the run's final training: validation AUC and loss at the kept epoch."""
    import search

    splits = _splits(config)
    _, history, kept = search.retrain(
        search.make_hypermodel(config), point, splits, config, run_dir / "objective-bench-retrain"
    )
    row = history.iloc[kept - 1]
    return {
        "kept_epoch": kept,
        "val_auc": row["val_auc"],
        "val_loss": row["val_loss"],
        "val_accuracy": row["val_accuracy"],
    }


def _splits(config: dict, cache: dict = {}):  # noqa: B006  (decoded once per process on purpose)
    import search

    if not cache:
        cache["splits"] = search.load_data(dict(config), synthetic=False)
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


if __name__ == "__main__":
    main()
