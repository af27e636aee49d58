"""The figures of bench/gpu.sh's runs, as a Markdown table; the runs' small files copied flat beside it.

python bench/gpu_summary.py REPORTS_DIR LOG_DIR
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

from runs import HISTORY_FILE, METRICS_FILE, TRIALS_FILE, RunFolder

COPIED = (METRICS_FILE, HISTORY_FILE, TRIALS_FILE)  # flat in LOG_DIR: the device tool returns 2 levels


def summary_row(run_dir: Path) -> list[str]:
    """One run: its device, backend and precision, wall times, retrain epoch times and test figures."""
    metrics = RunFolder(run_dir).metrics()
    run, test = metrics["run"], metrics["test"]
    seconds = RunFolder(run_dir).history()["seconds"].tolist()
    trials = RunFolder(run_dir).trials()
    wall = run["wall_seconds"]
    return [
        run_dir.name,
        run["machine"].split(", ")[-1],
        run["backend"],
        run["precision"]["policy"],
        f"{wall['total']:.0f}",
        f"{wall.get('search', 0):.0f}"
        + (f" ({len(trials)} trials, {int(trials['epochs_run'].sum())} epochs)" if trials is not None else ""),
        f"{wall['final_training']:.0f}",
        f"{seconds[0]:.1f}",
        f"{statistics.median(seconds[1:] or seconds):.2f}",
        compile_share(run),
        f"{test['accuracy']:.3f}",
        f"{test['roc_auc']:.4f}",
    ]


def compile_share(run: dict) -> str:
    """XLA's programs and seconds (compiled or loaded from the cache) against the run's wall time, where the run
    recorded them (JAX runs since the compilation count)."""
    compiled = run.get("compilation")
    if not compiled:
        return "–"
    share = compiled["seconds"] / run["wall_seconds"]["total"]
    return (
        f"{compiled['seconds']:.0f} s, {share:.0%} ({compiled['programs']} programs, "
        f"{compiled['cache_hits']} from the cache)"
    )


def main(reports: Path, log: Path) -> None:
    header = [
        "run", "GPUs", "backend", "precision", "total s", "search s", "retrain s",
        "first epoch s", "median later epoch s", "XLA compile share", "test accuracy", "test AUC",
    ]  # fmt: skip
    rows = []
    for run_dir in sorted(path.parent for path in reports.glob("*/report.md")):
        rows.append(summary_row(run_dir))
        for name in COPIED:
            if (run_dir / name).exists():
                shutil.copy(run_dir / name, log / f"{run_dir.name}-{name}")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    print("\n".join("| " + " | ".join(row) + " |" for row in rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, help="REPORTS_DIR: the folder of bench/gpu.sh's runs")
    parser.add_argument("log", type=Path, help="LOG_DIR: where the runs' small files are copied")
    arguments = parser.parse_args()
    main(arguments.reports, arguments.log)
