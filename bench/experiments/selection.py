"""Which incumbent rule carries over to unseen validation patients? Split-half checks on a finalist run.

    python bench/experiments/selection.py reports/<finalist run> [--splits 200]

From the run's predictions.csv, validation rows only (a column per finalist): the validation patients are split
in two halves at random; the final model is chosen on one half by each rule and scored (log loss) on the other.
Rules: the incumbent alone (the baseline's point), the greedy ensemble (incumbent_rule: lower), the raced one
(incumbent_rule: race), and all finalists averaged with equal weights. Prints each rule's mean held-out log loss
and how often it beats the incumbent. Test rows are never read.
A one-off: its figures (docs/results.md) were recorded at commit e79f6a7.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from data import patient_id
from evaluation import image_log_loss
from pipeline import final_model
from runs import RunFolder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run with finalists")
    parser.add_argument("--splits", type=int, default=200, help="random halvings of the validation patients")
    args = parser.parse_args(argv)
    validation = RunFolder(args.run_dir).predictions().query("split == 'validation'")
    columns = [column for column in validation.columns if column.startswith("p_finalist_")]
    labels = validation["label"].to_numpy()
    finalists = [validation[column].to_numpy() for column in columns]  # the baseline's point first
    patients = np.array([patient_id(Path(file)) for file in validation["file"]])
    held_out = held_out_losses(labels, finalists, patients, args.splits)
    print(f"{args.run_dir.name}: {len(columns)} finalists, {len(labels)} validation images, {args.splits} halvings")
    for rule, losses in held_out.items():
        gain = np.array(held_out["incumbent"]) - np.array(losses)
        print(
            f"{rule:>9}: held-out log loss {np.mean(losses):.4f}; the incumbent's minus it {gain.mean():+.4f}, "
            f"lower than the incumbent's in {np.mean(gain > 0):.0%} of halvings"
        )


def held_out_losses(labels: np.ndarray, finalists: list, patients: np.ndarray, splits: int) -> dict[str, list]:
    """Each rule's log loss on the half of the patients it did not choose on, per random halving."""
    rng, unique = np.random.default_rng(0), np.unique(patients)
    losses: dict[str, list] = {"incumbent": [], "lower": [], "race": [], "equal": []}
    for _ in range(splits):
        chosen_on = np.isin(patients, rng.choice(unique, len(unique) // 2, replace=False))
        scored_on = ~chosen_on
        half = [p[chosen_on] for p in finalists]
        weights = {
            "incumbent": np.eye(len(finalists))[0],
            "lower": final_model.choose(labels[chosen_on], half, list(patients[chosen_on]), "lower")["weights"],
            "race": final_model.choose(labels[chosen_on], half, list(patients[chosen_on]), "race")["weights"],
            "equal": np.ones(len(finalists)),
        }
        for rule, weight in weights.items():
            mixed = np.average(finalists, axis=0, weights=weight)
            losses[rule].append(float(image_log_loss(labels[scored_on], mixed[scored_on]).mean()))
    return losses


if __name__ == "__main__":
    main()
