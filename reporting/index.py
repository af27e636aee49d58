"""reports/index.md: one row per run folder, rewritten after every run.

One concern: the index of the reports folder. It reads run folders through runs.py and writes with tables.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from errors import ConfigError
from reporting.tables import cell, duration, is_synthetic, markdown_table, maximised
from runs import CARD_FILE, CONFIG_FILE, METRICS_FILE, REPORT_FILE, RunFolder, write_text

if TYPE_CHECKING:
    import pandas as pd


HEADER = [
    "run", "finished", "kind", "image size", "trials", "best validation objective",
    "test accuracy", "test AUC", "test sensitivity", "test specificity", "wall time", "report", "model card",
]  # fmt: skip


def write_index(reports_dir: Path) -> None:
    """reports/index.md: one row per run folder, finished or not, newest first. A folder whose files cannot be
    read (copied in part, say) gets a row saying so: another folder never stops a run from finishing. Runs on
    generated images get a table of their own after the real ones: their figures say nothing about chest X-rays,
    so they are never set among the real runs' figures."""
    folders = [config_file.parent for config_file in sorted(reports_dir.glob(f"*/{CONFIG_FILE}"))]
    rows = [(_index_row(folder), _on_generated_images(folder)) for folder in folders]
    rows.sort(key=lambda row: row[0][0], reverse=True)
    real = [cells for (_, cells), generated in rows if not generated]
    checks = [cells for (_, cells), generated in rows if generated]
    lines = [
        "# Runs",
        "",
        "Every run folder here, newest first; rewritten after every run. Test figures are held out: "
        "the test split was predicted once, after every choice was made on validation.",
        "",
        markdown_table(HEADER, real) if real else "No run on the chest X-rays here yet.",
        "",
    ]
    if checks:
        lines += [
            "## Pipeline checks on generated images",
            "",
            "Runs on generated images (`--smoke`, `--synthetic`): they check that the pipeline runs end to end, and "
            "their figures say nothing about chest X-rays.",
            "",
            markdown_table(HEADER, checks),
            "",
        ]
    write_text(reports_dir / "index.md", "\n".join(lines))


def _on_generated_images(run_dir: Path) -> bool:
    """Whether a run folder's config.yaml names generated images; a folder whose config cannot be read counts as
    real, so that its row (saying it is unreadable) stays in the main table."""
    try:
        return is_synthetic(str(RunFolder(run_dir).config().get("data_dir", "")))
    except (ConfigError, OSError, ValueError, AttributeError):
        return False


def _index_row(run_dir: Path) -> tuple[str, list[Any]]:
    """The sort key (when it finished) and the cells of one run folder's row in index.md."""
    run_folder = RunFolder(run_dir)
    folder = f"[folder]({run_dir.name}/)"
    if not run_folder.file(METRICS_FILE).exists():
        return "", [run_dir.name, "unfinished", *[None] * 10, folder, None]
    try:
        config, metrics = run_folder.config(), run_folder.metrics()
        run, test = metrics["run"], metrics["test"]
        trials = run_folder.trials()
        best = _best_validation_objective(config["objective"], trials, run_folder, run["best_epoch"])
        cells = [
            run_dir.name, run["finished"], run["kind"], config["image_size"],
            "–" if trials is None else len(trials), best,
            test["accuracy"], test["roc_auc"], test["sensitivity"], test["specificity"],
            duration(run["wall_seconds"]["total"]), f"[report]({run_dir.name}/{REPORT_FILE})",
            f"[card]({run_dir.name}/{CARD_FILE})" if run_folder.file(CARD_FILE).exists() else None,
        ]  # fmt: skip
        return run["finished"], cells
    except ConfigError as error:  # config.yaml unreadable or not YAML: the error names the file
        return "", [run_dir.name, f"unreadable ({error})", *[None] * 10, folder, None]
    except (OSError, ValueError, KeyError, TypeError) as error:
        filename = getattr(error, "filename", None)
        reason = f"unreadable ({Path(filename).name}: {error.strerror})" if filename else f"unreadable ({error!r})"
        return "", [run_dir.name, reason, *[None] * 10, folder, None]


def _best_validation_objective(objective: str, trials: pd.DataFrame | None, folder: RunFolder, best_epoch: int) -> str:
    """The search's best trial score, or for a baseline the kept epoch's validation objective."""
    if trials is not None:
        done = trials[trials["status"] == "COMPLETED"]["objective"]
        value = done.max() if maximised(objective) else done.min()
    else:
        value = folder.history()[objective].iloc[best_epoch - 1]
    return f"{objective} {cell(float(value))}"
