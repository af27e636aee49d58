"""How figures read in the reports: Markdown tables, numbers with their intervals, durations, the threshold
rule in words. One concern: formatting. It imports config.py (Keras Tuner's prefix) and runs.py (point names,
plurals, which data is generated) alone of this project, so every report module can share it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from config import TUNER_PREFIX

# is_synthetic and plural are runs.py's, re-exported so that every report module formats from this one: the rule for
# generated images is written once, for the reports and for the estimates that must not price a run from other data.
from runs import is_synthetic as is_synthetic
from runs import plural, point_name

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
    """Minutes and seconds, "4m 05s", or with hours, "1h 02m 03s"."""
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
    scores and weight, then its test figures at its own threshold (test was predicted once, after the choice).
    Where the run recorded how many epochs each retrain trained, its kept epoch says of how many."""
    finalists = metrics["finalists"]
    header = [
        "finalist", "search score (best epoch)", "search score (last epoch)", "kept epoch", "validation ROC AUC",
        "validation log loss", "weight", "threshold", "test accuracy", "test ROC AUC", "test log loss",
    ]  # fmt: skip
    rows = [_finalist_row(finalist) for finalist in finalists]
    validation, test = metrics["validation"], metrics["test"]
    rows.append([
        "**the chosen model**", None, None, None, validation["roc_auc"], validation["log_loss"], 1.0,
        test["threshold"], with_interval(test, "accuracy"), with_interval(test, "roc_auc"), test["log_loss"],
    ])  # fmt: skip
    return markdown_table(header, rows)


def _finalist_row(finalist: dict[str, Any]) -> list[Any]:
    return [
        finalist_name(finalist), finalist["search_score"], finalist["search_last_score"], kept_epoch(finalist),
        finalist["validation"]["roc_auc"], finalist["validation"]["log_loss"], finalist["weight"],
        finalist["test"]["threshold"], with_interval(finalist["test"], "accuracy"),
        with_interval(finalist["test"], "roc_auc"), finalist["test"]["log_loss"],
    ]  # fmt: skip


# A retrain's record (a finalist's, a repeat's) may say how many epochs it trained: the time budget can stop one
# before its schedule ends, and then its kept epoch is of fewer epochs than the schedule's.
EPOCHS_TRAINED = "epochs_trained"


def kept_epoch(record: dict[str, Any]) -> Any:
    """A retrain's kept epoch, "10 of 11 trained" where the record says how many epochs it trained."""
    if record.get(EPOCHS_TRAINED) is None:
        return record["kept_epoch"]
    return f"{record['kept_epoch']} of {record[EPOCHS_TRAINED]} trained"


def epochs_trained(trained: int, planned: int, budgeted: bool) -> str:
    """The epochs a retrain trained, in words: "45 epochs", or "11 of 45 epochs (stopped by the time budget)". Only
    the time budget (or Ctrl-C, which leaves the run unfinished) stops a retrain before its schedule ends."""
    if trained >= planned:
        return plural(planned, "epoch")
    return f"{trained} of {plural(planned, 'epoch')} ({'stopped by the time budget' if budgeted else 'stopped early'})"


def selection_sentence(metrics: dict[str, Any]) -> str:
    """How the final model was chosen, and whether validation replaced the baseline's point, in words: the rule is
    said as what it does, never by its config key, and the sentence ends on the model the run delivered (metrics'
    `replaced`), so that it cannot contradict the weights in the table above it."""
    selection, finalists = metrics["selection"], metrics["finalists"]
    race, greedy = selection["race"], selection["greedy_weights"]
    bag = weights_in_words([finalist_name(finalist) for finalist in finalists], greedy)
    chose = f"Greedy ensemble selection on validation log loss chose {bag}"
    if sum(weight > 0 for weight in greedy) == 1 and greedy[0] > 0:
        return f"{chose}, so the delivered model is the baseline's point."
    low, high = race["ci95"]
    replaced = selection["replaced"]
    if selection["incumbent_rule"] == "race":
        rule = "only where that interval lies below 0"
        verdict = "it does" if replaced else "it reaches 0 or lies above it"
    else:
        rule = "wherever the greedy choice's validation log loss is lower"
        verdict = "it is" if replaced else "it is not"
    delivered = bag if replaced else "the baseline's point alone"
    return (
        f"{chose}; that choice's validation log loss minus the baseline's point's is {race['difference']:+.4f} "
        f"[{low:+.4f}, {high:+.4f}] (paired 95% interval over validation patients). The final stage replaces the "
        f"baseline's point {rule}: {verdict}, so the delivered model is {delivered}."
    )


def weights_in_words(names: list[str], weights: list[float]) -> str:
    """The members of a weighted model in words: "trial 03 alone", or "the baseline's point at weight 0.7 and
    trial 03 at weight 0.3"."""
    members = [(name, weight) for name, weight in zip(names, weights) if weight > 0]
    if len(members) == 1:
        return f"{members[0][0]} alone"
    parts = [f"{name} at weight {weight:.1f}" for name, weight in members]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def finalist_name(finalist: dict[str, Any]) -> str:
    """A finalist's name, from its metrics.json entry."""
    return point_name(finalist["trial_id"], finalist["is_baseline"])


def members_table(metrics: dict[str, Any]) -> str | None:
    """Each repeat of each finalist: its training seed, kept epoch, weight in the delivered model and figures at
    its own validation-chosen threshold; None for a run whose finalists were retrained once."""
    finalists = metrics["finalists"]
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
                finalist_name(finalist), repeat["repeat"], repeat["training_seed"], kept_epoch(repeat),
                finalist["weight"] / len(repeats), repeat["validation"]["log_loss"], repeat["validation"]["roc_auc"],
                repeat["validation"]["threshold"], repeat["test"]["accuracy"], repeat["test"]["roc_auc"],
            ])  # fmt: skip
    return markdown_table(header, rows)


def _only_retrain(finalist: dict[str, Any]) -> dict[str, Any]:
    """A finalist retrained once (one that left the race) as its one repeat; runs before 2026-12-03 lack its seed."""
    return {
        "repeat": 1, "training_seed": finalist.get("training_seed"), "kept_epoch": finalist["kept_epoch"],
        EPOCHS_TRAINED: finalist.get(EPOCHS_TRAINED), "validation": finalist["validation"], "test": finalist["test"],
    }  # fmt: skip


def racing_sentence(metrics: dict[str, Any]) -> str | None:
    """Every comparison of a challenger with the incumbent on their repeats' mean, in words; None without racing."""
    racing = metrics["selection"].get("racing")  # recorded where finalists repeat
    if racing is None:
        return None
    if not racing and len(metrics["finalists"]) == 1:
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
