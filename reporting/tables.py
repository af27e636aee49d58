"""How figures read in the reports: Markdown tables, numbers with their intervals, durations, the threshold
rule in words. One concern: formatting. It imports config.py alone of this project (Keras Tuner's prefix), so
every report module can share it.
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from config import TUNER_PREFIX
from runs import point_name

if TYPE_CHECKING:
    import pandas as pd

METRIC_ROWS = ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1", "threshold", "n_images")


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; floats with three decimals, missing values as a dash."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def cell(value: Any) -> str:
    """One table cell: floats with three decimals (or four significant digits below 0.01), missing as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 2:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 0.01 else f"{value:.3f}"
    return str(value)


def duration(seconds: float) -> str:
    """"4m 05s" or "1h 02m 03s"."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def with_interval(metrics: dict[str, Any], name: str) -> str:
    """A test figure with its 95% interval when the run recorded one: "0.880 [0.857, 0.908]"."""
    interval = metrics.get("ci95", {}).get(name)
    if interval is None or not all(math.isfinite(bound) for bound in interval):
        return cell(metrics[name])
    return f"{metrics[name]:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def interval_sentence(test: dict[str, Any]) -> str:
    """What the brackets mean, in one sentence (empty for a run recorded before intervals)."""
    if "bootstrap" not in test:
        return ""
    drawn = test["bootstrap"]
    return (
        f"In brackets, 95% intervals: the middle 95% of each figure over {drawn['resamples']:,} resamples of the "
        f"{drawn['patients']} test {drawn['unit']} (drawn with replacement, each with all of their images), at the "
        "same validation-chosen threshold; they show how much the figure depends on which patients happened to be "
        "in the test split, not how the model would do on images from elsewhere."
    )


def threshold_rule(rule: str | float) -> str:
    """How the run chose its threshold, in words."""
    rules = {
        "youden": "Youden's J on validation",
        "youden_or_half": "0.5 unless Youden's J on validation is clearly higher at another threshold",
        "plateau": "the middle of the thresholds whose Youden's J on validation is within a few images of the best",
    }
    return rules.get(rule, f"fixed at {rule}")


def type_sensitivity(figures: dict[str, Any]) -> str:
    """One pneumonia type's sensitivity with its interval, from metrics.json's `by_type`."""
    return with_interval(
        {"sensitivity": figures["sensitivity"], "ci95": {"sensitivity": figures["ci95"]}}, "sensitivity"
    )


def is_synthetic(data_dir: str) -> bool:
    """Whether a run trained on generated images (`search.py --synthetic` makes them under data/synthetic), not on
    the chest X-rays, so that no figure of the real data may be set beside its results."""
    return "synthetic" in PurePath(data_dir).parts


def maximised(objective: str) -> bool:
    """Whether a higher value of the objective is better (every objective but a loss)."""
    return not objective.endswith("loss")


def hyperparameter_columns(trials: pd.DataFrame) -> list[str]:
    """The hyperparameter columns of a trials table (not Keras Tuner's bookkeeping)."""
    # started and ended: each trial's wall-clock times, in runs since tuning.py records them.
    fixed = {"trial_id", "status", "objective", "last_objective", "epochs_run", "seconds", "started", "ended", "error"}
    return [name for name in trials.columns if name not in fixed and not name.startswith(TUNER_PREFIX)]


def finalists_table(metrics: dict[str, Any]) -> str:
    """Each full-length finalist beside the chosen model: what the search said of it, its retrained validation
    scores and weight, then its test figures at its own threshold (test was predicted once, after the choice)."""
    header = [
        "finalist", "search score (best epoch)", "search score (last epoch)", "kept epoch", "validation ROC AUC",
        "validation log loss", "weight", "threshold", "test accuracy", "test ROC AUC", "test log loss",
    ]  # fmt: skip
    rows = [
        [
            finalist_name(finalist),
            finalist["search_score"], finalist["search_last_score"], finalist["kept_epoch"],
            finalist["validation"]["roc_auc"], finalist["validation"]["log_loss"], finalist["weight"],
            finalist["test"]["threshold"], with_interval(finalist["test"], "accuracy"),
            with_interval(finalist["test"], "roc_auc"), finalist["test"]["log_loss"],
        ]  # fmt: skip
        for finalist in metrics["finalists"]
    ]
    validation, test = metrics["validation"], metrics["test"]
    rows.append(
        [
            "**the chosen model**", None, None, None, validation["roc_auc"], validation["log_loss"], 1.0,
            test["threshold"], with_interval(test, "accuracy"), with_interval(test, "roc_auc"), test["log_loss"],
        ]  # fmt: skip
    )
    return markdown_table(header, rows)


def selection_sentence(metrics: dict[str, Any]) -> str:
    """How the final model was chosen, and whether validation replaced the baseline's point, in words."""
    selection, finalists = metrics["selection"], metrics["finalists"]
    race, greedy = selection["race"], selection["greedy_weights"]
    names = [finalist_name(finalist) for finalist in finalists]
    bag = ", ".join(f"{name} {weight:.1f}" for name, weight in zip(names, greedy) if weight > 0)
    if sum(weight > 0 for weight in greedy) == 1 and greedy[0] > 0:
        return f"Greedy ensemble selection on validation log loss chose {bag}: it kept the baseline's point alone."
    low, high = race["ci95"]
    replaced = selection.get("replaced", race["challenger_wins"])  # runs recorded before incumbent_rule raced
    if selection.get("incumbent_rule", "race") == "race":
        outcome = "above 0, so it replaced" if replaced else "an interval that reaches 0 or lies below it, so it kept"
    else:
        outcome = "incumbent_rule lower, so it replaced"
    return (
        f"Greedy ensemble selection on validation log loss chose {bag}; the baseline's point's validation log loss "
        f"minus the ensemble's is {race['difference']:+.4f} [{low:+.4f}, {high:+.4f}] (paired 95% interval over "
        f"validation patients): {outcome} the baseline's point."
    )


def finalist_name(finalist: dict[str, Any]) -> str:
    """A finalist's name, from its metrics.json entry."""
    return point_name(finalist["trial_id"], finalist["is_baseline"])


def members_table(metrics: dict[str, Any]) -> str | None:
    """Each repeat of each finalist: its training seed, kept epoch, weight in the delivered model and figures at
    its own validation-chosen threshold; None for a run whose finalists were retrained once."""
    finalists = metrics.get("finalists") or []
    if not any("repeats" in finalist for finalist in finalists):
        return None
    header = [
        "finalist", "repeat", "training seed", "kept epoch", "weight in the model", "validation log loss",
        "validation ROC AUC", "threshold", "test accuracy", "test ROC AUC",
    ]  # fmt: skip
    rows = []
    for finalist in finalists:
        repeats = finalist.get("repeats") or [_only_retrain(finalist)]
        for repeat in repeats:
            rows.append([
                finalist_name(finalist), repeat["repeat"], repeat["training_seed"], repeat["kept_epoch"],
                finalist["weight"] / len(repeats), repeat["validation"]["log_loss"], repeat["validation"]["roc_auc"],
                repeat["validation"]["threshold"], repeat["test"]["accuracy"], repeat["test"]["roc_auc"],
            ])  # fmt: skip
    return markdown_table(header, rows)


def _only_retrain(finalist: dict[str, Any]) -> dict[str, Any]:
    """A finalist retrained once (one that left the race) as its one repeat; runs before 2026-12-03 lack its seed."""
    return {
        "repeat": 1, "training_seed": finalist.get("training_seed"), "kept_epoch": finalist["kept_epoch"],
        "validation": finalist["validation"], "test": finalist["test"],
    }  # fmt: skip


def racing_sentence(metrics: dict[str, Any]) -> str | None:
    """Every comparison of a challenger with the incumbent on their repeats' mean, in words; None without racing."""
    racing = metrics.get("selection", {}).get("racing")
    if racing is None:
        return None
    if not racing and len(metrics.get("finalists") or []) == 1:
        return "Racing: no challenger was retrained (the time budget held none), so none was raced."
    if not racing:
        return "Racing: no challenger had a repeat to compare (the finalists were retrained once each)."
    parts = []
    for record in racing:
        low, high = record["ci95"]
        verdict = "clearly worse: out of the race" if record["clearly_worse"] else "races on"
        parts.append(
            f"round {record['round']}, trial {record['trial_id']} over {record['repeats']} repeat"
            f"{'s' if record['repeats'] != 1 else ''}: {record['difference']:+.4f} [{low:+.4f}, {high:+.4f}], {verdict}"
        )
    return (
        "Racing (challenger's validation log loss minus the incumbent's, each the mean of their repeats, paired 95% "
        "interval over validation patients; a challenger whose whole interval lies above 0 gets no more repeats): "
        + "; ".join(parts)
        + "."
    )
