"""A run's report: report.md, section by section, from its RunResult; then its figures, its model card and
the runs index, so that one call (`render`) redraws everything a person reads.

One concern: rendering. It imports runs.py (the result and whole-file writes), tables.py, figures.py,
model_card.py, evaluation.py (paired differences) and study.py (a search's trials as an Optuna study,
study.db, and the importances it reports; Optuna loads only then); nothing here knows how the run was tuned.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation import brier_scores, paired_difference
from reporting import figures, study
from reporting.index import write_index
from reporting.model_card import render_model_card
from reporting.tables import (
    METRIC_ROWS,
    cell,
    duration,
    epochs_trained,
    finalist_name,
    finalists_table,
    hyperparameter_columns,
    interval_sentence,
    is_synthetic,
    markdown_table,
    maximised,
    members_table,
    plural,
    racing_sentence,
    selection_sentence,
    threshold_rule,
    type_sensitivity,
    weights_in_words,
    with_interval,
)
from runs import (
    CARD_FILE,
    MODEL_FILE,
    REPORT_FILE,
    STUDY_FILE,
    RunResult,
    chose_among_finalists,
    disk_usage,
    write_text,
)

PUBLISHED = {
    "accuracy": 0.9295,
    "source": "the original Kaggle notebook's last of its 45 epochs, as docs/baseline.md in this repository records it",
    "caveat": (
        "The original notebook's 92.95% (580 of 624) is the last of its 45 epochs, measured on the 624-image "
        'test split that it monitored every epoch as its "validation" data; across those epochs the figure '
        "swung between 70.5% and 94.7%. It is not a held-out result, so it is quoted here, not compared."
    ),
}

# What a run on generated images says instead of the published figure: why it is left out, and where it is recorded.
UNPUBLISHED = (
    "The original notebook's published accuracy is not set beside this run: it was measured on the real test images "
    "(as docs/baseline.md in this repository records it), and this run's test images are generated."
)

RESAMPLES = 20  # bootstrap resamples of the trials behind fANOVA's range (seeded: a re-render gives the same figures)


def render(run_dir: Path, counterpart: tuple[str, dict[str, Any]] | None = None) -> None:
    """(Re)draw a run's plots, study.db (a search's), model card and report.md from its files; report.md comes last."""
    result = RunResult.load(run_dir, counterpart)
    figures.draw(result)
    if result.trials is not None:
        _write_study(result)
    write_text(run_dir / CARD_FILE, render_model_card(result))
    write_text(run_dir / REPORT_FILE, render_markdown(result))
    write_index(run_dir.parent)


def console_summary(run_dir: Path, test: dict[str, Any]) -> str:
    """What a finished run prints last: where its report is, its size on disk, and the held-out figures."""
    model_mb = (run_dir / MODEL_FILE).stat().st_size / 1e6
    return (
        f"\nReport: {run_dir / REPORT_FILE}\n"
        f"Disk: {disk_usage(run_dir) / 1e6:.1f} MB in {run_dir}, of which model.keras {model_mb:.1f} MB\n"
        f"Test (held out): accuracy {test['accuracy']:.3f}, ROC AUC {test['roc_auc']:.3f}, "
        f"sensitivity {test['sensitivity']:.3f}, specificity {test['specificity']:.3f} at threshold {test['threshold']:.3f}"
    )


def render_markdown(result: RunResult) -> str:
    """report.md: the layout in one place; each section is rendered by its own function."""
    sections = (
        _headline_section,
        _comparison_section,
        _paired_section,
        _what_ran_section,
        _images_section,
        _skipped_section,
        _validation_section,
        _types_section,
        _finalists_section,
        _hyperparameters_section,
        _search_section,
        _learned_section,
        _calibration_section,
        _gradcam_section,
        _plots_section,
        _files_section,
    )
    return "\n".join(line for section in sections for line in section(result))


def _other_kind(result: RunResult) -> str:
    return "baseline" if result.kind == "search" else "tuned"


def _headline_section(result: RunResult) -> list[str]:
    test = result.metrics["test"]
    figures = ", ".join(
        f"{label} {with_interval(test, name)}"
        for label, name in (
            ("accuracy", "accuracy"),
            ("ROC AUC", "roc_auc"),
            ("sensitivity", "sensitivity"),
            ("specificity", "specificity"),
        )
    )
    return [
        f"# Chest X-ray pneumonia classifier: {result.kind} run `{result.config.run_name}`",
        "",
        *_synthetic_lines(result),
        f"**Held-out test ({test['n_images']} images, predicted once at the end):** {figures} at threshold "
        f"{test['threshold']:.3f} ({threshold_rule(result.config.threshold)}). {interval_sentence(test)}".rstrip(),
        "",
    ]


def _synthetic_lines(result: RunResult) -> list[str]:
    """For a run on generated images, the first thing a reader sees: its figures are not about chest X-rays."""
    if not is_synthetic(result.config.data_dir):
        return []
    return [
        f"**This run trained and was tested on generated images (`{result.config.data_dir}`), not on chest X-rays**, "
        "so none of its figures says anything about chest X-rays or pneumonia: it is a check that the pipeline runs "
        "end to end (search, retrain, evaluation, report).",
        "",
    ]


def _comparison_section(result: RunResult) -> list[str]:
    test, config, other = result.metrics["test"], result.config, result.counterpart
    this = "tuned (this run)" if result.kind == "search" else "baseline (this run)"
    header = ["metric", this, f"{_other_kind(result)} (`{other[0]}`)" if other else f"{_other_kind(result)} (no matching run yet)"]  # fmt: skip
    rows = [
        [name, with_interval(test, name), with_interval(other[1]["test"], name) if other else None]
        for name in METRIC_ROWS
    ]
    # The notebook's figure was measured on the real test images: a run on generated ones has nothing to set beside it.
    published = not is_synthetic(config.data_dir)
    published_rows = [["accuracy, original notebook (not held out)", PUBLISHED["accuracy"], ""]] if published else []
    missing_other = (
        []
        if other
        else [
            f"No finished {_other_kind(result)} run on the same split (data, validation fraction and seed) was found "
            f"in `{config.reports_dir}/`; run `python search.py{' --baseline' if result.kind == 'search' else ''}` "
            f"with the same data and `--seed {config.seed}` to fill that column (it is filled when the later of the two "
            "runs writes its report).",
            "",
        ]
    )
    return [
        "## Test: this run against the other kind",
        "",
        markdown_table(header, rows + published_rows),
        "",
        *missing_other,
        f"*Published figure:* {PUBLISHED['caveat']} Source: {PUBLISHED['source']}." if published else UNPUBLISHED,
        "",
    ]


def paired_comparison(result: RunResult) -> dict[str, dict[str, Any]] | None:
    """Tuned minus baseline on the test images both runs predicted, with a paired patient bootstrap."""
    import data

    if result.counterpart is None or result.counterpart_predictions is None:
        return None
    mine = _test_rows(result.predictions)
    theirs = _test_rows(result.counterpart_predictions)
    both = mine.join(theirs, how="inner", rsuffix="_other")
    both = both[both["label"] == both["label_other"]]
    if not len(both):
        return None
    this = (both["p_pneumonia"].to_numpy(), result.metrics["test"]["threshold"])
    other = (both["p_pneumonia_other"].to_numpy(), result.counterpart[1]["test"]["threshold"])
    tuned, baseline = (this, other) if result.kind == "search" else (other, this)
    patients = [data.patient_id(Path(file)) for file in both["file"]]
    differences = paired_difference(both["label"].to_numpy(), [(tuned, baseline)], patients)
    return {"n_images": len(both), "n_patients": len(set(patients)), "metrics": differences}


def _test_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """Test rows indexed by file name: runs on other machines hold other paths to the same images."""
    test = predictions[predictions["split"] == "test"]
    return test[["file", "label", "p_pneumonia"]].set_index(test["file"].map(lambda file: Path(file).name))


def _paired_section(result: RunResult) -> list[str]:
    compared = paired_comparison(result)
    if compared is None:
        return []
    tuned_name, baseline_name = (
        (result.config.run_name, result.counterpart[0])
        if result.kind == "search"
        else (result.counterpart[0], result.config.run_name)
    )
    rows = []
    for name, paired in compared["metrics"].items():
        low, high = paired["ci95"]
        verdict = (
            "no difference shown at this test size"
            if low <= 0 <= high
            else ("tuned higher" if low > 0 else "baseline higher")
        )
        rows.append([name, f"{paired['difference']:+.3f} [{low:+.3f}, {high:+.3f}]", verdict])
    return [
        "## Tuned minus baseline, paired on the same test patients",
        "",
        f"Tuned (`{tuned_name}`) minus baseline (`{baseline_name}`) on the {compared['n_images']} test images both "
        f"predicted, each model at its own validation-chosen threshold. The interval resamples the "
        f"{compared['n_patients']} test patients, the same patients for both models in every resample, so it "
        "measures the difference itself; where it contains 0 the test split is too small to show a difference.",
        "",
        markdown_table(["metric", "difference [95% interval]", "reading"], rows),
        "",
    ]


def _what_ran_section(result: RunResult) -> list[str]:
    config, run, test = result.config, result.metrics["run"], result.metrics["test"]
    search = _search_summary(result) if result.trials is not None else "none: the baseline point, trained directly"
    rows = [
        ["data", f"`{config.data_dir}`"],
        ["input", f"{config.image_size} x {config.image_size} {config.color_mode}"],
        [
            "validation",
            f"{config.validation_fraction:.0%} of train, grouped by patient, stratified by class (seed {config.seed})",
        ],
        ["class weights", "on" if config.class_weights else "off"],
        ["search", search],
        ["final training", _final_training(result)],
        ["threshold", f"{test['threshold']:.3f}, {threshold_rule(config.threshold)}"],
        ["precision", _precision(result)],
        ["backend", f"Keras on {config.backend}"],
        ["wall time", _wall_time(run)],
        *([["time budget", _budget(result)]] if "budget" in result.metrics else []),
        ["versions", ", ".join(f"{k} {v}" for k, v in run["versions"].items())],
        ["machine", run["machine"]],
        ["command", f"`{run['command']}`"],
    ]
    return ["## What ran", "", markdown_table(["setting", "value"], rows), ""]


def _final_training(result: RunResult) -> str:
    """The delivered model's retrain: the epochs it trained of those planned, its schedule and its kept epoch.
    history.csv is that retrain's (with finalists, the heaviest member's first repeat), so its rows are the
    epochs trained."""
    config, metrics = result.config, result.metrics
    trained = epochs_trained(len(result.history), config.final_epochs, "budget" in metrics)
    text = (
        f"{trained}, {config.final_schedule} learning rate, kept epoch {metrics['run']['best_epoch']} "
        f"(best {config.objective})"
    )
    if not chose_among_finalists(metrics):
        return text
    heaviest = max(metrics["finalists"], key=lambda finalist: finalist["weight"])
    return f'{finalist_name(heaviest)}: {text}; every finalist\'s retrain is under "Finalists and the chosen model"'


def _images_section(result: RunResult) -> list[str]:
    summary = result.data_summary
    rows = [[name, *row] for name, row in zip(summary.index, summary.to_numpy().tolist())]
    return ["Images per split:", "", markdown_table(["split", *summary.columns], rows), ""]


def _validation_section(result: RunResult) -> list[str]:
    validation, test = result.metrics["validation"], result.metrics["test"]
    rows = [[name, validation[name], with_interval(test, name)] for name in METRIC_ROWS]
    return [
        "## Validation (where every choice was made)",
        "",
        markdown_table(["metric", "validation", "test"], rows),
        "",
    ]


def _file_names(result: RunResult) -> str:
    """Whose file names tell the pneumonia types: Kaggle's, or the generator's, which only imitate them."""
    return "The generated images' file names" if is_synthetic(result.config.data_dir) else "Kaggle's file names"


def _types_section(result: RunResult) -> list[str]:
    """Sensitivity per pneumonia type (bacterial, viral), from the file names."""
    test = result.metrics["test"]
    if "by_type" not in test:
        return []
    header = ["type", "test images", "patients", "sensitivity [95% interval]"]
    rows = [
        [name, by_type["n_images"], by_type["n_patients"], type_sensitivity(by_type)]
        for name, by_type in test["by_type"].items()
    ]
    return [
        "## Sensitivity by pneumonia type (test)",
        "",
        f"{_file_names(result)} say whether a PNEUMONIA image is bacterial or viral; the share of each type called "
        "PNEUMONIA at the validation-chosen threshold, with the interval from the same patient resamples. "
        "An interval of [1.000, 1.000] means no image of that type was missed in any resample, not that none can be.",
        "",
        markdown_table(header, rows) if rows else "No test image named a pneumonia type.",
        "",
    ]


def _finalists_section(result: RunResult) -> list[str]:
    """The full-length finalists beside the chosen model, and how it was chosen (a finalist run only)."""
    if not chose_among_finalists(result.metrics):
        return []
    which = _finalists_named(len(result.metrics["finalists"]) - 1)
    return [
        "## Finalists and the chosen model",
        "",
        f"{which}, each retrained on a schedule of {plural(result.config.final_epochs, 'epoch')} and kept at its own "
        f"best epoch on validation; the search scores are {result.config.objective} (Keras Tuner keeps a trial's best "
        "epoch; its last is beside it). Test figures are each model's at its own validation-chosen threshold, "
        "predicted once, after the choice.",
        "",
        finalists_table(result.metrics),
        "",
        selection_sentence(result.metrics),
        "",
        *_repeats_lines(result.metrics),
        "Why the search's best trial and the retrained model differ: a finalist below the diagonal scored lower after "
        "the full retrain than in the search (for a loss, better), one above it higher.",
        "",
        "![search score against retrained validation score](finalists.png)",
        "",
    ]


def _finalists_named(others: int) -> str:
    """Which points were finalists, in words, for the count of those besides the baseline's point."""
    if others == 0:
        return "The baseline's point alone (no other point of the search)"
    if others == 1:
        return "The baseline's point and the best other point of the search"
    return f"The baseline's point and the {others} best other points of the search"


def _repeats_lines(metrics: dict[str, Any]) -> list[str]:
    """For finalists retrained several times: every member of the delivered model, and the race."""
    members = members_table(metrics)
    if members is None:
        return []
    return [
        "The delivered model averages repeats: each finalist retrained with training seeds of its own (the split never "
        "changes), a finalist scored by its repeats' mean, each repeat weighing its finalist's weight over its repeats.",
        "",
        members,
        "",
        racing_sentence(metrics) or "",
        "",
    ]


def _budget(result: RunResult) -> str:
    """The budget, what it bought (trials and finalists), the time used by the moment the report was written,
    and what the budget cut, as recorded."""
    budget = result.metrics["budget"]
    used = f"{duration(budget['used_seconds'])} used when the report was written"
    cuts = "; ".join(budget["cut"]) or "nothing cut"
    return f"{budget['text']} bought {_bought(result)}; {used}; {cuts}"


def _bought(result: RunResult) -> str:
    """What ran within the budget, in words: the search's trials and the finalists retrained besides the
    baseline's point (a run without finalists retrained one point: the baseline's, or the search's best)."""
    if result.trials is None:
        return "the baseline's retrain (a baseline run searches nothing)"
    n_trials = len(result.trials)
    trials = (
        "1 trial (the baseline's point)"
        if n_trials == 1
        else f"{n_trials} trials (the baseline's point and {plural(n_trials - 1, 'other')})"
    )
    finalists = result.metrics["finalists"]
    if chose_among_finalists(result.metrics):
        others = len(finalists) - 1
        retrains = sum(len(finalist.get("repeats") or [finalist]) for finalist in finalists)
        more = f", {plural(retrains, 'retrain')} in all" if retrains != len(finalists) else ""
        retrained = f"{plural(others, 'finalist') if others else 'no finalist'} besides the baseline's point{more}"
        only_baseline = others == 0
    else:
        delivered, only_baseline = _delivered_point(result)
        retrained = "no finalist besides the baseline's point" if only_baseline else f"one retrain, of {delivered}"
    nothing = n_trials <= 1 and only_baseline
    return f"{trials} and {retrained}" + (": no search beyond the baseline" if nothing else "")


def _wall_time(run: dict[str, Any]) -> str:
    """Each phase's time and the total; a resumed run's add up every process that ran it."""
    phases = ", ".join(
        f"{phase.replace('_', ' ')} {duration(seconds)}" for phase, seconds in run["wall_seconds"].items()
    )
    processes = run.get("processes", 1)
    return f"{phases} (over {processes} processes: the run was resumed)" if processes > 1 else phases


def _precision(result: RunResult) -> str:
    """The dtype policy a run trained in and why (runs from before the setting trained in float32)."""
    reason = result.metrics["run"].get("precision", {}).get("reason", "recorded before the precision setting")
    return f"{result.config.precision} ({reason})"


def _hyperparameters_section(result: RunResult) -> list[str]:
    baseline, chosen = result.metrics["run"]["baseline_hyperparameters"], result.best_hyperparameters
    rows = [[name, baseline.get(name), chosen.get(name)] for name in dict.fromkeys([*baseline, *chosen])]
    return [
        "## Hyperparameters: chosen against the baseline's",
        "",
        markdown_table(["hyperparameter", "baseline", "this run"], rows),
        "",
    ]


def _calibration_section(result: RunResult) -> list[str]:
    brier = brier_scores(result.predictions)
    return [
        "## Calibration",
        "",
        f"Brier score (mean squared error of P(pneumonia); lower is better, 0.25 is a constant 0.5): "
        f"validation {brier['validation']:.3f}, test {brier['test']:.3f}. In the reliability diagram a calibrated "
        "model lies on the diagonal; points below it mean the model says PNEUMONIA more confidently than it is right. "
        f"The bars beneath count each bin's images: a hollow point rests on fewer than {figures.FEW_IMAGES}, so its "
        "distance from the diagonal is mostly chance.",
        "",
        "![reliability diagram](calibration.png)",
        "",
    ]


def _gradcam_section(result: RunResult) -> list[str]:
    if not (result.run_dir / "gradcam.png").exists():
        return []
    return [
        "## Where the model looked (Grad-CAM)",
        "",
        f"For each outcome on test at threshold {result.metrics['test']['threshold']:.3f}, the {figures.EXAMPLES_PER_OUTCOME} "
        "images the model was most confident about, with the Grad-CAM heatmap of the class it predicted (last conv "
        "layer; red = most evidence). Heat outside the lungs (labels, borders, devices) is a warning sign. These "
        "images were chosen after the test prediction and influence nothing.",
        "",
        "![Grad-CAM examples](gradcam.png)",
        "",
    ]


def _plots_section(result: RunResult) -> list[str]:
    lines = [
        "## Plots",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "![confusion matrices](confusion_matrix.png) ![ROC curves](roc_curve.png)",
        "",
    ]
    return lines


def _files_section(result: RunResult) -> list[str]:
    return [
        "## Files",
        "",
        "`config.yaml` settings as resolved · `metrics.json` validation and test metrics (test with intervals and "
        "types) · `model_card.md` the model card · `history.csv` final training per epoch · "
        "`predictions.csv` every validation and test probability · `best_hyperparameters.yaml` · "
        + ("`trials.csv` one row per trial · " if result.trials is not None else "")
        + ("`study.db` the search as an Optuna study · " if (result.run_dir / STUDY_FILE).exists() else "")
        + "`model.keras` the kept model (takes raw 0-255 pixels; `python predict.py --run` uses it) · "
        "`tensorboard/` logs for `tensorboard --logdir` (when on).",
        "",
    ]


def _skipped_section(result: RunResult, shown: int = 20) -> list[str]:
    """The images left out because they did not decode (`skip_bad_images`), if any."""
    skipped = result.skipped_images
    if skipped is None or not len(skipped):
        return []
    lines = [
        "## Images left out",
        "",
        f"{plural(len(skipped), 'image')} could not be decoded and {'was' if len(skipped) == 1 else 'were'} left "
        "out (`skip_bad_images`); "
        "every one is listed in `skipped_images.csv`.",
        "",
        markdown_table(["split", "class", "file"], skipped[["split", "class", "file"]].head(shown).to_numpy().tolist()),
        "",
    ]
    if len(skipped) > shown:
        lines += [f"... and {len(skipped) - shown} more.", ""]
    return lines


def _search_summary(result: RunResult) -> str:
    trials, config = result.trials, result.config
    completed = int((trials["status"] == "COMPLETED").sum())
    epochs = int(trials["epochs_run"].fillna(0).sum())
    budget = f"max {plural(config.max_trials, 'trial')}" if config.max_trials else "its full schedule"
    return (
        f"{config.tuner} ({budget}, up to {plural(config.epochs, 'epoch')} a trial, objective {config.objective}): "
        f"{plural(len(trials), 'trial')}, {completed} completed, {plural(epochs, 'epoch')} in all"
    )


def _search_section(result: RunResult) -> list[str]:
    if result.trials is None:
        return []
    trials, objective = result.trials, result.config.objective
    done = trials[trials["status"] == "COMPLETED"]
    lines = ["## Search", ""]
    if len(done):
        first = trials.iloc[0]
        lines.append(
            f"Trial {first['trial_id']} is the baseline point at the search's first budget "
            f"({_epochs(first['epochs_run'])}): validation objective {cell(first['objective'])} "
            f"({first['status'].lower()})."
        )
        lines += [_ranking_sentence(done, objective), _delivered_sentence(result, done)]
    failed = trials[trials["status"] != "COMPLETED"]
    if len(failed):
        lines += ["", f"**{plural(len(failed), 'trial')} failed**:", ""]
        lines += [f"- trial {row.trial_id}: {row.error}" for row in failed.itertuples()]
    top = done.sort_values("objective", ascending=not maximised(objective)).head(5)
    shown = ["trial_id", "objective", "epochs_run", "seconds", *hyperparameter_columns(trials)]
    lines += ["", "Top trials:", "", markdown_table(shown, top[shown].to_numpy().tolist()), ""]
    return lines


def _ranked(done: pd.DataFrame, objective: str) -> pd.DataFrame:
    """Completed trials best first by their short-trial score (the earlier trial first at a tie)."""
    return done.sort_values("objective", ascending=not maximised(objective), kind="stable")


def _ranking_sentence(done: pd.DataFrame, objective: str) -> str:
    """Which trial the search's short trials ranked first, and where the baseline's point ranked."""
    ranked = _ranked(done, objective)
    best = ranked.iloc[0]
    scored = f"{cell(best['objective'])} after {_epochs(best['epochs_run'])}"
    lead = (
        "The only completed trial is trial"
        if len(ranked) == 1
        else f"Ranked by that short-trial score, the best of the {len(ranked)} completed trials is trial"
    )
    if study.is_baseline_trial(best["trial_id"]):
        return f"{lead} {best['trial_id']}, the baseline's point itself ({scored})."
    baseline = [rank for rank, trial_id in enumerate(ranked["trial_id"], start=1) if study.is_baseline_trial(trial_id)]
    where = (
        f"the baseline's point ranks {_ordinal(baseline[0])}" if baseline else "the baseline's point did not complete"
    )
    return f"{lead} {best['trial_id']} ({scored}); {where}."


def _epochs(value: Any) -> str:
    """A trial's epochs from trials.csv, "1 epoch" or "8 epochs" (a dash where it recorded none)."""
    return f"{cell(value)} epochs" if pd.isna(value) else plural(int(value), "epoch")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _delivered_sentence(result: RunResult, done: pd.DataFrame) -> str:
    """What the run delivered, said against the short-trial ranking: the final stage (finalists retrained on the
    full schedule) can deliver another point than the best short trial, and only what it delivered says whether
    the search found anything better than the baseline."""
    if chose_among_finalists(result.metrics):
        return _delivered_among_finalists(result.metrics["finalists"])
    delivered, is_baseline = _delivered_point(result)
    if not is_baseline:
        return f'The delivered model is {delivered}, retrained (its hyperparameters are under "Hyperparameters").'
    if study.is_baseline_trial(_ranked(done, result.config.objective).iloc[0]["trial_id"]):
        return "The delivered model is the baseline's point, retrained: this search found nothing better."
    why = " (the time budget left no time for a finalist)" if "budget" in result.metrics else ""
    return (
        f"The delivered model is the baseline's point, retrained; no other point was retrained{why}, so the better "
        "short-trial scores above were never tested by a retrain."
    )


def _delivered_among_finalists(finalists: list[dict[str, Any]]) -> str:
    """The delivered model of a finalist run in words, and what it says of the search."""
    others = plural(len(finalists) - 1, "other finalist")
    where = '(see "Finalists and the chosen model")'
    weights = {finalist["is_baseline"]: 0.0 for finalist in finalists}
    for finalist in finalists:
        weights[finalist["is_baseline"]] += finalist["weight"]
    if len(finalists) == 1:  # the time budget held no challenger's retrain (a recorded cut)
        return (
            f"The delivered model is the baseline's point: the final stage retrained no other point {where}, so no "
            "point of the search was tested against it."
        )
    if not weights.get(False):
        return (
            f"The delivered model is the baseline's point: the final stage retrained it and {others} and kept it "
            f"{where}, so this search found nothing to replace the baseline's point."
        )
    members = weights_in_words([finalist_name(f) for f in finalists], [f["weight"] for f in finalists])
    found = (
        "mixing the baseline's point with the search's points did better on validation than the baseline's point alone"
        if weights.get(True)
        else "the search found what did better on validation than the baseline's point, after retraining"
    )
    return (
        f"The delivered model is {members}: the final stage retrained the baseline's point and {others} and chose it "
        f"on validation {where}, so {found}."
    )


def _delivered_point(result: RunResult) -> tuple[str, bool]:
    """The delivered point by name ("the baseline's point", "trial 04") and whether it is the baseline's, from
    best_hyperparameters.yaml matched against the baseline's values and the search's trials."""
    point, baseline = result.best_hyperparameters, result.metrics["run"]["baseline_hyperparameters"]
    if all(_same(point.get(name), value) for name, value in baseline.items()):
        return "the baseline's point", True
    trials = result.trials
    if trials is not None:
        columns = set(hyperparameter_columns(trials))
        for row in trials.to_dict("records"):
            if all(_same(row.get(name), value) for name, value in point.items() if name in columns):
                return f"trial {row['trial_id']}", False
    return 'the point shown under "Hyperparameters"', False


def _same(a: Any, b: Any) -> bool:
    """One hyperparameter's value read from two files (YAML, CSV): numbers equal to rounding, others exactly."""
    if isinstance(a, numbers.Number) and isinstance(b, numbers.Number):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _write_study(result: RunResult) -> None:
    """study.db beside the report, from trials.csv and config.yaml, written whole. Trials that do not fit the
    recorded search space leave none (the section says why), never a stale one."""
    try:
        config = result.config
        study.write_study(
            result.run_dir,
            result.trials,
            config.search_space.as_dict(),
            config.objective,
            config.run_name,
            search_ended=study.search_ended(result.metrics["run"]),
        )
    except ValueError:
        (result.run_dir / STUDY_FILE).unlink(missing_ok=True)


def _learned_section(result: RunResult) -> list[str]:
    """Which hyperparameters moved the objective (study.importances), in words and figures, then the search's plots."""
    if result.trials is None:
        return []
    config = result.config
    table = study.importances(result.trials, config.search_space.as_dict(), config.objective, resamples=RESAMPLES)
    lines = ["## What the search learned", "", study.importance_sentence(table), ""]
    if not table.empty:
        lines += _importance_lines(table, config.objective, len(result.trials))
    if (result.run_dir / STUDY_FILE).exists():
        lines += [
            f"Every trial is also in `{STUDY_FILE}`, an Optuna study: from this folder, "
            f"`optuna-dashboard sqlite:///{STUDY_FILE}` opens it in a browser, with its own importance, slice, "
            "contour and history plots.",
            "",
        ]
    lines.append(
        "The validation objective against each hyperparameter (learning rate on a log axis; the baseline's value "
        "dotted red, its trial a red square), the best trials in parallel coordinates (the darker and thicker the "
        "line, the better the trial; the baseline dashed red), "
        "and the best objective so far against the trials' summed time:"
    )
    lines.append("")
    for name, alt in figures.SEARCH_FIGURES:
        lines += [f"![{alt}]({name})", ""]
    return lines


def _importance_lines(table: pd.DataFrame, objective: str, n_trials: int) -> list[str]:
    """The importance table, what it rests on and what it left out."""
    attrs = table.attrs
    rows = [
        [row.rank, row.parameter, f"{row.fanova:.2f}", _range(row.fanova_low, row.fanova_high), _share(row.ped_anova)]
        for row in table.itertuples()
    ]
    lines = [
        f"Importance to the validation {objective}, over the {attrs['n_trials']} completed of {n_trials} trials: "
        "fANOVA's share of the objective's variance each hyperparameter explains (the shares sum to 1), with its "
        f"5–95% range over {attrs['resamples']} resamples of the trials, and PED-ANOVA's, which asks what sets the "
        "best trials apart from the rest. Importance says a hyperparameter moved the objective, not which value is "
        "best; the plots below show that.",
        "",
        markdown_table(["rank", "hyperparameter", "fANOVA", "fANOVA 5–95% (resampled)", "PED-ANOVA"], rows),
        "",
    ]
    reasons: dict[str, list[str]] = {}
    for name, why in (attrs.get("left_out") or {}).items():
        reasons.setdefault(why, []).append(name)
    if reasons:
        lines += ["Left out: " + "; ".join(f"{', '.join(names)} ({why})" for why, names in reasons.items()) + ".", ""]
    lines += [f"Note: {note.rstrip('.')}." for note in attrs.get("notes") or []]
    return lines + ([""] if attrs.get("notes") else [])


def _range(low: float, high: float) -> str:
    return "–" if pd.isna(low) or pd.isna(high) else f"{low:.2f}-{high:.2f}"


def _share(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.2f}"
