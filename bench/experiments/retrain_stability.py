"""How steady is a retrain on validation? Finished runs compared from their history.csv and predictions.csv.

    python bench/experiments/retrain_stability.py reports/<run> [reports/<other run> ...] [--last 10]

Per run: the kept epoch and its validation AUC and loss (history.csv), the validation log loss and Brier
score of the kept model's predictions (predictions.csv, validation rows), and how much validation
accuracy, AUC and loss move over the last `--last` epochs (standard deviation, and the largest change
from one epoch to the next). Written to compare weight averaging (final_ema_momentum) with plain
weights on the same seed. Only validation is read.
A one-off: its figures (docs/results.md) were recorded at commit 166d7fd.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss

from runs import RunFolder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished run folders")
    parser.add_argument("--last", type=int, default=10, help="epochs at the end whose swings are measured")
    args = parser.parse_args(argv)
    print(pd.DataFrame([steadiness(run_dir, args.last) for run_dir in args.runs]).to_string(index=False))


def steadiness(run_dir: Path, last: int) -> dict:
    """One run's row: the kept epoch's validation figures and the swings of its last epochs."""
    history = RunFolder(run_dir).history()
    predictions = RunFolder(run_dir).predictions()
    validation = predictions[predictions["split"] == "validation"]
    labels, p = validation["label"].to_numpy(), validation["p_pneumonia"].to_numpy()
    kept = _kept_epoch(run_dir)
    tail = history.tail(last)
    row = {
        "run": run_dir.name,
        "kept epoch": kept,
        "val_auc (kept)": round(float(history.loc[history["epoch"] == kept, "val_auc"].iloc[0]), 5),
        "val_loss (kept)": round(float(history.loc[history["epoch"] == kept, "val_loss"].iloc[0]), 4),
        "log loss": round(float(log_loss(labels, np.clip(p, 1e-7, 1 - 1e-7))), 4),
        "Brier": round(float(brier_score_loss(labels, p)), 4),
    }
    for column in ("val_accuracy", "val_auc", "val_loss"):
        row[f"{column} sd (last {last})"] = round(float(tail[column].std()), 4)
        row[f"{column} max step"] = round(float(tail[column].diff().abs().max()), 4)
    return row


def _kept_epoch(run_dir: Path) -> int:
    return int(RunFolder(run_dir).metrics()["run"]["best_epoch"])


if __name__ == "__main__":
    main()
