"""Test intervals and pneumonia types for finished runs, recomputed from their predictions.csv.

    python bench/intervals.py reports/example                  # print the figures with their intervals
    python bench/intervals.py reports/example --write          # also add them to metrics.json, re-render the run
    python bench/intervals.py --smoke                          # a check: a committed run, printed only

For runs written before search.py recorded `ci95` and `by_type` (docs/results.md). The threshold is
the one in the run's metrics.json, chosen on validation; the test probabilities are the run's own,
so nothing is predicted again, and the figures are checked against metrics.json first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import data
import runs
from reporting import tables
from runs import METRICS_FILE, RunFolder

ROOT = Path(__file__).resolve().parents[1]
SMOKE_RUN = ROOT / "bench" / "results" / "search-hyperband-seed42"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="finished run folders, e.g. reports/example")
    parser.add_argument("--write", action="store_true", help="add the intervals to metrics.json and re-render")
    parser.add_argument("--smoke", action="store_true", help=f"a check: {SMOKE_RUN.name} (committed), nothing written")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.write = [SMOKE_RUN], False
    if not args.runs:
        parser.error("give at least one run folder (or --smoke)")
    for run_dir in args.runs:
        metrics = with_intervals(run_dir)
        print_figures(run_dir, metrics)
        if args.write:
            from reporting import report

            runs.write_text(RunFolder(run_dir).file(METRICS_FILE), json.dumps(metrics, indent=2))
            report.render(run_dir, counterpart_of(run_dir, metrics))
            print(f"Wrote {run_dir / 'metrics.json'}, re-rendered {run_dir / 'report.md'} and model_card.md")
    return 0


def with_intervals(run_dir: Path) -> dict[str, Any]:
    """The run's metrics.json with `ci95`, `bootstrap` and `by_type` added under `test`."""
    from evaluation import bootstrap_test_metrics, classification_metrics

    metrics = RunFolder(run_dir).metrics()
    predictions = RunFolder(run_dir).predictions()
    test = predictions[predictions["split"] == "test"]
    files = [Path(file) for file in test["file"]]  # names parse wherever the run was made
    patients = [data.patient_id(file) for file in files]
    types = [data.pneumonia_type(file) for file in files]
    figures = metrics["test"]
    labels, probabilities = test["label"].to_numpy(), test["p_pneumonia"].to_numpy()
    again = classification_metrics(labels, probabilities, figures["threshold"])
    for name in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        if not np.isclose(again[name], figures[name]):
            raise SystemExit(f"{run_dir}: {name} from predictions.csv is {again[name]}, not {figures[name]}")
    figures |= bootstrap_test_metrics(labels, probabilities, figures["threshold"], patients, types)
    return metrics


def counterpart_of(run_dir: Path, metrics: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The other kind's finished run beside this one, paired as search.py pairs them, so re-rendering keeps it."""
    settings = RunFolder(run_dir).settings().replace(reports_dir=str(run_dir.parent))
    return runs.find_counterpart(settings, metrics["run"]["kind"])


def print_figures(run_dir: Path, metrics: dict[str, Any]) -> None:
    test = metrics["test"]
    print(f"\n{run_dir}: test at threshold {test['threshold']:.3f}. {tables.interval_sentence(test)}\n")
    rows = [[name, tables.with_interval(test, name)] for name in tables.METRIC_ROWS[:6]]
    print(tables.markdown_table(["metric", "test [95% interval]"], rows) + "\n")
    types = [
        [name, figures["n_images"], figures["n_patients"], tables.type_sensitivity(figures)]
        for name, figures in test["by_type"].items()
    ]
    print(tables.markdown_table(["type", "test images", "patients", "sensitivity [95% interval]"], types))


if __name__ == "__main__":
    sys.exit(main())
