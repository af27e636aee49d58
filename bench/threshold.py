"""How firmly does validation choose the threshold? Youden's J under resampled validation patients.

    python bench/threshold.py reports/<run> [reports/<other run> ...] [--resamples 2000]
    python bench/threshold.py --smoke    # a check: a committed run, 8 resamples

From each run's predictions.csv, validation rows only: the Youden threshold the run chose, the spread
of the Youden threshold over 2,000 resamples of the validation patients (each resample choosing again),
and Youden's J at the chosen threshold against J at 0.5, with a paired 95% interval of their difference
over the same resamples. Where that interval contains 0, validation cannot tell the two thresholds
apart. Then, per threshold rule (youden, youden_or_half, plateau), the threshold it chooses, J there, and
how far its choice moves over the first quarter (500) of the same resamples (the standard deviation of its
logit): a steady rule moves little at nearly the same J. Only validation is read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from data import patient_id
from evaluation import N_RESAMPLES, choose_threshold, patient_resamples, percentile_interval, youden_j
from runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]

RULES = ("youden", "youden_or_half", "plateau")
SMOKE_RUN = ROOT / "bench" / "results" / "quality" / "tuned-search-seed45"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="*", help="finished run folders")
    parser.add_argument("--resamples", type=int, default=N_RESAMPLES, help="resamples of the validation patients")
    parser.add_argument("--smoke", action="store_true", help=f"a check: {SMOKE_RUN.name} (committed), 8 resamples")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.resamples = [SMOKE_RUN], 8
    if not args.runs:
        parser.error("give at least one run folder (or --smoke)")
    print(pd.DataFrame([measure(run_dir, args.resamples) for run_dir in args.runs]).to_string(index=False))
    print()
    rules = [row for run_dir in args.runs for row in compare_rules(run_dir, max(1, args.resamples // 4))]
    print(pd.DataFrame(rules).to_string(index=False))


def compare_rules(run_dir: Path, resamples: int = N_RESAMPLES // 4) -> list[dict]:
    """Each rule's threshold, J at it, and the spread of its logit over resampled validation patients."""
    rows = RunFolder(run_dir).predictions().query("split == 'validation'")
    labels, scores = rows["label"].to_numpy(), rows["p_pneumonia"].to_numpy()
    patients = np.array([patient_id(Path(file)) for file in rows["file"]])
    weights = patient_resamples(list(patients), resamples).astype(int)  # the first rows of measure()'s draws
    table = []
    for rule in RULES:
        chosen = choose_threshold(labels, scores, rule, list(patients))
        again = np.array(
            [
                choose_threshold(np.repeat(labels, n), np.repeat(scores, n), rule, list(np.repeat(patients, n)))
                for n in weights
            ]
        )
        logits = np.log(np.clip(again, 1e-7, 1 - 1e-7) / (1 - np.clip(again, 1e-7, 1 - 1e-7)))
        table.append(
            {
                "run": run_dir.name,
                "rule": rule,
                "threshold": round(chosen, 3),
                "J": round(float(youden_j(labels, scores, chosen, np.ones((1, len(labels))))[0]), 4),
                "logit sd over resamples": round(float(np.std(logits)), 2),
            }
        )
    return table


def measure(run_dir: Path, resamples: int = N_RESAMPLES) -> dict:
    """The run's Youden threshold, its spread over resampled validation patients, and J there against J at 0.5."""
    rows = RunFolder(run_dir).predictions().query("split == 'validation'")
    labels, scores = rows["label"].to_numpy(), rows["p_pneumonia"].to_numpy()
    patients = [patient_id(Path(file)) for file in rows["file"]]
    weights = patient_resamples(patients, resamples)
    chosen = choose_threshold(labels, scores, "youden")
    resampled = [
        choose_threshold(np.repeat(labels, counts), np.repeat(scores, counts), "youden")
        for counts in weights.astype(int)
    ]
    j_chosen, j_half = youden_j(labels, scores, chosen, weights), youden_j(labels, scores, 0.5, weights)
    low, high = percentile_interval(j_chosen - j_half)
    return {
        "run": run_dir.name,
        "validation images": len(rows),
        "Youden threshold": round(chosen, 3),
        "resampled thresholds 5%/50%/95%": "/".join(f"{value:.3f}" for value in np.percentile(resampled, [5, 50, 95])),
        "J at it": round(float(youden_j(labels, scores, chosen, np.ones((1, len(labels))))[0]), 4),
        "J at 0.5": round(float(youden_j(labels, scores, 0.5, np.ones((1, len(labels))))[0]), 4),
        "J(chosen) - J(0.5) [95%]": f"[{low:+.4f}, {high:+.4f}]",
        "youden_or_half picks": choose_threshold(labels, scores, "youden_or_half", patients),
    }


if __name__ == "__main__":
    main()
