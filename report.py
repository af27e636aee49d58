"""Turn one run's results into files: tables, plots, the model and report.md, each written whole."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay, brier_score_loss

from data import CLASS_NAMES

PUBLISHED = {
    "accuracy": 0.9295,
    "source": "../shared/BASELINE.md, the original notebook's last of 45 epochs",
    "caveat": (
        "The original notebook's 92.95% (580 of 624) is the last of its 45 epochs, measured on the 624-image "
        'test split that it monitored every epoch as its "validation" data; across those epochs the figure '
        "swung between 70.5% and 94.7%. It is not a held-out result, so it is quoted here, not compared."
    ),
}
EXAMPLES_PER_OUTCOME = 3
ENSEMBLE_DIR = "ensemble"  # in the run folder: member2.keras, ... beside model.keras (the best point, member 1)
OUTCOMES = (  # (name, true label, predicted label)
    ("true positive", 1, 1),
    ("true negative", 0, 0),
    ("false positive", 0, 1),
    ("false negative", 1, 0),
)


class ReportError(RuntimeError):
    """A run's files could not be written; the message names the folder and what to do."""


METRIC_ROWS = ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1", "threshold", "n_images")


@dataclass
class RunResult:
    """Everything a report shows, read back from the run folder's files."""

    run_dir: Path
    config: dict[str, Any]
    data_summary: pd.DataFrame
    trials: pd.DataFrame | None
    best_hyperparameters: dict[str, Any]
    history: pd.DataFrame
    metrics: dict[str, Any]  # "validation", "test", "run"
    predictions: pd.DataFrame  # split, file, label, p_pneumonia
    counterpart: tuple[str, dict[str, Any]] | None = None  # the other kind's run name and metrics
    counterpart_predictions: pd.DataFrame | None = None  # the other run's predictions.csv, for paired differences
    skipped_images: pd.DataFrame | None = None  # split, file, class of images left out as undecodable

    @property
    def kind(self) -> str:
        return self.metrics["run"]["kind"]

    @classmethod
    def load(cls, run_dir: Path, counterpart: tuple[str, dict[str, Any]] | None = None) -> RunResult:
        trials = run_dir / "trials.csv"
        skipped = run_dir / "skipped_images.csv"
        other_predictions = run_dir.parent / counterpart[0] / "predictions.csv" if counterpart else None
        return cls(
            run_dir=run_dir,
            config=yaml.safe_load((run_dir / "config.yaml").read_text()),
            data_summary=pd.read_csv(run_dir / "data_summary.csv", index_col=0),
            trials=_read_trials(trials),
            best_hyperparameters=yaml.safe_load((run_dir / "best_hyperparameters.yaml").read_text()),
            history=pd.read_csv(run_dir / "history.csv"),
            metrics=json.loads((run_dir / "metrics.json").read_text()),
            predictions=pd.read_csv(run_dir / "predictions.csv"),
            counterpart=counterpart,
            counterpart_predictions=pd.read_csv(other_predictions)
            if other_predictions and other_predictions.exists()
            else None,
            skipped_images=pd.read_csv(skipped) if skipped.exists() else None,
        )


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it only once written completely."""
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_run(
    run_dir: Path,
    *,
    data_summary: pd.DataFrame,
    trials: pd.DataFrame | None,
    best_hyperparameters: dict[str, Any],
    history: pd.DataFrame,
    metrics: dict[str, Any],
    predictions: pd.DataFrame,
    model: Any,
    counterpart: tuple[str, dict[str, Any]] | None = None,
    skipped_images: pd.DataFrame | None = None,
    members: Sequence[Any] = (),
) -> None:
    """Write a finished run's tables and model (and its ensemble's other members) beside its config.yaml, then
    render its report."""
    if trials is not None:
        _write_csv(run_dir / "trials.csv", trials)
    if skipped_images is not None and len(skipped_images):
        _write_csv(run_dir / "skipped_images.csv", skipped_images)
    _write_csv(run_dir / "data_summary.csv", data_summary, index=True)
    write_text(run_dir / "best_hyperparameters.yaml", yaml.safe_dump(best_hyperparameters, sort_keys=False))
    _write_csv(run_dir / "history.csv", history)
    _write_csv(run_dir / "predictions.csv", predictions)
    with atomic_path(run_dir / "model.keras") as temporary:
        model.save(temporary)
    for rank, member in enumerate(members, start=2):
        (run_dir / ENSEMBLE_DIR).mkdir(exist_ok=True)
        with atomic_path(run_dir / ENSEMBLE_DIR / f"member{rank}.keras") as temporary:
            member.save(temporary)
    write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    render(run_dir, counterpart)


def is_finished(run_dir: Path) -> bool:
    """A run is finished once its report.md exists: render() writes it last."""
    return (run_dir / "report.md").exists()


def render(run_dir: Path, counterpart: tuple[str, dict[str, Any]] | None = None) -> None:
    """(Re)draw a run's plots and report.md from its files; report.md comes last."""
    result = RunResult.load(run_dir, counterpart)
    objective = result.config["objective"]
    if result.trials is not None:
        _save(run_dir / "search_progress.png", search_progress_figure(result.trials, objective))
        _save(run_dir / "search_hyperparameters.png", hyperparameter_figure(result.trials))
    _save(
        run_dir / "learning_curves.png",
        learning_curves_figure(result.history, objective, result.metrics["run"]["best_epoch"]),
    )
    _save(run_dir / "confusion_matrix.png", confusion_figure(result.metrics))
    _save(run_dir / "roc_curve.png", roc_figure(result.predictions, result.metrics))
    _save(run_dir / "calibration.png", calibration_figure(result.predictions))
    if (run_dir / "model.keras").exists() and not (run_dir / "gradcam.png").exists():
        _save(run_dir / "gradcam.png", gradcam_figure(result))
    import model_card  # it builds on this module's tables

    write_text(run_dir / "model_card.md", model_card.render_model_card(result))
    write_text(run_dir / "report.md", render_markdown(result))
    write_index(run_dir.parent)


def write_index(reports_dir: Path) -> None:
    """reports/index.md: one row per run folder, finished or not, newest first. A folder whose files cannot be
    read (copied in part, say) gets a row saying so: another folder never stops a run from finishing."""
    rows = [_index_row(config_file.parent) for config_file in sorted(reports_dir.glob("*/config.yaml"))]
    rows.sort(key=lambda row: row[0], reverse=True)
    header = [
        "run", "finished", "kind", "image size", "trials", "best validation objective",
        "test accuracy", "test AUC", "test sensitivity", "test specificity", "wall time", "report", "model card",
    ]  # fmt: skip
    text = "\n".join(
        [
            "# Runs",
            "",
            "Every run folder here, newest first; rewritten after every run. Test figures are held out: "
            "the test split was predicted once, after every choice was made on validation.",
            "",
            markdown_table(header, [cells for _, cells in rows]),
            "",
        ]
    )
    write_text(reports_dir / "index.md", text)


def _index_row(run_dir: Path) -> tuple[str, list[Any]]:
    """The sort key (when it finished) and the cells of one run folder's row in index.md."""
    folder = f"[folder]({run_dir.name}/)"
    if not (run_dir / "metrics.json").exists():
        return "", [run_dir.name, "unfinished", *[None] * 10, folder, None]
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        run, test = metrics["run"], metrics["test"]
        trials = _read_trials(run_dir / "trials.csv")
        best = _best_validation_objective(config["objective"], trials, run_dir / "history.csv", run["best_epoch"])
        cells = [
            run_dir.name, run["finished"], run["kind"], config["image_size"],
            "–" if trials is None else len(trials), best,
            test["accuracy"], test["roc_auc"], test["sensitivity"], test["specificity"],
            _duration(run["wall_seconds"]["total"]), f"[report]({run_dir.name}/report.md)",
            f"[card]({run_dir.name}/model_card.md)" if (run_dir / "model_card.md").exists() else None,
        ]  # fmt: skip
        return run["finished"], cells
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as error:
        filename = getattr(error, "filename", None)
        reason = f"unreadable ({Path(filename).name}: {error.strerror})" if filename else f"unreadable ({error!r})"
        return "", [run_dir.name, reason, *[None] * 10, folder, None]


def _read_trials(path: Path) -> pd.DataFrame | None:
    """A search's trials.csv (trial ids kept as written), or None for a baseline run."""
    if not path.exists():
        return None
    return pd.read_csv(path, dtype={"trial_id": str}, keep_default_na=False, na_values=[""])


def _best_validation_objective(objective: str, trials: pd.DataFrame | None, history: Path, best_epoch: int) -> str:
    """The search's best trial score, or for a baseline the kept epoch's validation objective."""
    if trials is not None:
        done = trials[trials["status"] == "COMPLETED"]["objective"]
        value = done.max() if _maximised(objective) else done.min()
    else:
        value = pd.read_csv(history)[objective].iloc[best_epoch - 1]
    return f"{objective} {_cell(float(value))}"


def disk_usage(folder: Path) -> int:
    """Bytes taken by the files under `folder`."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _write_csv(path: Path, table: pd.DataFrame, index: bool = False) -> None:
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=index)


def _save(path: Path, figure: Figure) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, bbox_inches="tight")


def learning_curves_figure(history: pd.DataFrame, objective: str, best_epoch: int) -> Figure:
    figure = Figure(figsize=(13, 3.6), layout="constrained")
    for ax, metric in zip(figure.subplots(1, 3), ("loss", "accuracy", "auc")):
        ax.plot(history["epoch"], history[metric], label="train")
        ax.plot(history["epoch"], history[f"val_{metric}"], label="validation")
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept: epoch {best_epoch} (best {objective})")
        ax.set(title=metric, xlabel="epoch")
        ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    figure.suptitle("Final training: train vs validation (test never seen)")
    return figure


def confusion_figure(metrics: dict[str, Any]) -> Figure:
    figure = Figure(figsize=(9, 3.8), layout="constrained")
    for ax, split in zip(figure.subplots(1, 2), ("validation", "test")):
        matrix = np.array(metrics[split]["confusion_matrix"])
        ConfusionMatrixDisplay(matrix, display_labels=list(CLASS_NAMES)).plot(ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(f"{split} (threshold {metrics[split]['threshold']:.3f})")
    return figure


def roc_figure(predictions: pd.DataFrame, metrics: dict[str, Any]) -> Figure:
    figure = Figure(figsize=(5, 4.6), layout="constrained")
    ax = figure.subplots()
    for split in ("validation", "test"):
        rows = predictions[predictions["split"] == split]
        RocCurveDisplay.from_predictions(rows["label"], rows["p_pneumonia"], name=split, ax=ax)
        chosen = metrics[split]
        ax.plot(1 - chosen["specificity"], chosen["sensitivity"], "o", color="black")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_title("ROC (dots: the validation-chosen threshold)")
    return figure


def brier_scores(predictions: pd.DataFrame) -> dict[str, float]:
    """Mean squared error of P(pneumonia) per split: 0 is perfect, 0.25 is a constant 0.5."""
    return {
        split: float(brier_score_loss(rows["label"], rows["p_pneumonia"]))
        for split, rows in predictions.groupby("split", sort=False)
    }


def calibration_figure(predictions: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(5, 4.6), layout="constrained")
    ax = figure.subplots()
    for split, brier in brier_scores(predictions).items():
        rows = predictions[predictions["split"] == split]
        CalibrationDisplay.from_predictions(
            rows["label"], rows["p_pneumonia"], n_bins=10, name=f"{split} (Brier {brier:.3f})", ax=ax
        )
    ax.set(xlabel="mean predicted P(pneumonia) in bin", ylabel="share of PNEUMONIA in bin")
    ax.set_title("Reliability diagram (10 equal-width bins)")
    return figure


def test_examples(predictions: pd.DataFrame, threshold: float) -> list[tuple[str, pd.DataFrame]]:
    """Per outcome (TP, TN, FP, FN), the test images the model was most confident about."""
    test = predictions[predictions["split"] == "test"]
    predicted = (test["p_pneumonia"] >= threshold).astype(int)
    chosen = []
    for name, label, guess in OUTCOMES:
        rows = test[(test["label"] == label) & (predicted == guess)]
        confidence = (rows["p_pneumonia"] - threshold).abs()
        chosen.append((name, rows.loc[confidence.sort_values(ascending=False).index[:EXAMPLES_PER_OUTCOME]]))
    return chosen


def gradcam_figure(result: RunResult) -> Figure:
    """Test images of each outcome with the Grad-CAM heatmap of the class the model predicted."""
    import keras

    import data
    import explain

    model = keras.saving.load_model(result.run_dir / "model.keras", safe_mode=True)
    threshold = result.metrics["test"]["threshold"]
    examples = test_examples(result.predictions, threshold)
    files = [Path(file) for _, rows in examples for file in rows["file"]]
    images = data.decode_images(files, result.config["image_size"], data.channel_count(result.config["color_mode"]))
    figure = Figure(figsize=(2.4 * EXAMPLES_PER_OUTCOME, 2.7 * len(OUTCOMES)), layout="constrained")
    axes = figure.subplots(len(OUTCOMES), EXAMPLES_PER_OUTCOME, squeeze=False)
    start = 0
    for row_axes, (name, rows) in zip(axes, examples):
        batch, start = images[start : start + len(rows)], start + len(rows)
        predicted = (rows["p_pneumonia"] >= threshold).to_numpy(int)
        heatmaps = explain.grad_cam(model, batch, predicted) if len(rows) else []
        for ax, image, heatmap, probability, file in zip(row_axes, batch, heatmaps, rows["p_pneumonia"], rows["file"]):
            ax.imshow(explain.overlay(image, heatmap))
            ax.set_title(f"P={probability:.3f}\n{Path(file).name}", fontsize=7)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row_axes[max(len(rows), 1) :]:
            ax.set_visible(False)
        row_axes[0].set_ylabel(f"{name}" if len(rows) else f"{name}\n(none on test)", fontsize=9)
    figure.suptitle(f"Grad-CAM on test (threshold {threshold:.3f}): where the last conv layer found the evidence")
    return figure


def search_progress_figure(trials: pd.DataFrame, objective: str) -> Figure:
    figure = Figure(figsize=(7, 3.8), layout="constrained")
    ax = figure.subplots()
    done = trials[trials["status"] == "COMPLETED"]
    order = np.arange(len(trials))[trials["status"].to_numpy() == "COMPLETED"]
    ax.plot(order, done["objective"], "o", label="trial")
    ax.step(
        order,
        done["objective"].cummax() if _maximised(objective) else done["objective"].cummin(),
        where="post",
        label="best so far",
    )
    if len(done) and done.index[0] == 0:
        ax.plot(order[0], done["objective"].iloc[0], "s", color="red", markersize=9, label="baseline (trial 0)")
    ax.set(xlabel="trial", ylabel=objective, title="Search progress")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def hyperparameter_figure(trials: pd.DataFrame) -> Figure:
    done = trials[trials["status"] == "COMPLETED"]
    names = [name for name in _hyperparameter_columns(trials) if done[name].notna().any()]
    columns = 3
    rows = max(1, math.ceil(len(names) / columns))
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax, name in zip(axes, names):
        ax.plot(done[name], done["objective"], "o", alpha=0.7)
        if name == "learning_rate":
            ax.set_xscale("log")
        ax.set(xlabel=name, ylabel="objective")
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    figure.suptitle("Validation objective against each hyperparameter")
    return figure


def _hyperparameter_columns(trials: pd.DataFrame) -> list[str]:
    fixed = {"trial_id", "status", "objective", "epochs_run", "seconds", "error"}
    return [name for name in trials.columns if name not in fixed and not name.startswith("tuner/")]


def _maximised(objective: str) -> bool:
    return not objective.endswith("loss")


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; floats with three decimals, missing values as a dash."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 2:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 0.01 else f"{value:.3f}"
    return str(value)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


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
        _ensemble_section,
        _hyperparameters_section,
        _search_section,
        _calibration_section,
        _gradcam_section,
        _plots_section,
        _files_section,
    )
    return "\n".join(line for section in sections for line in section(result))


def with_interval(metrics: dict[str, Any], name: str) -> str:
    """A test figure with its 95% interval when the run recorded one: "0.880 [0.857, 0.908]"."""
    interval = metrics.get("ci95", {}).get(name)
    if interval is None or not all(math.isfinite(bound) for bound in interval):
        return _cell(metrics[name])
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


def threshold_rule(config: dict[str, Any]) -> str:
    """How the run chose its threshold, in words."""
    rules = {
        "youden": "Youden's J on validation",
        "youden_or_half": "0.5 unless Youden's J on validation is clearly higher at another threshold",
    }
    return rules.get(config["threshold"], f"fixed at {config['threshold']}")


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
        f"# Chest X-ray pneumonia classifier: {result.kind} run `{result.config['run_name']}`",
        "",
        f"**Held-out test ({test['n_images']} images, predicted once at the end):** {figures} at threshold "
        f"{test['threshold']:.3f} ({threshold_rule(result.config)}). {interval_sentence(test)}".rstrip(),
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
    published_row = ["accuracy, original notebook (not held out)", PUBLISHED["accuracy"], ""]
    missing_other = (
        []
        if other
        else [
            f"No finished {_other_kind(result)} run with the same data, image size, seed and protocol was found in "
            f"`{config['reports_dir']}/`; run `python search.py{' --baseline' if result.kind == 'search' else ''}` "
            "with the same settings to fill that column (it is filled when the later of the two runs writes its "
            "report).",
            "",
        ]
    )
    return [
        "## Test: this run against the other kind",
        "",
        markdown_table(header, rows + [published_row]),
        "",
        *missing_other,
        f"*Published figure:* {PUBLISHED['caveat']} Source: {PUBLISHED['source']}.",
        "",
    ]


def paired_comparison(result: RunResult) -> dict[str, dict[str, Any]] | None:
    """Tuned minus baseline on the test images both runs predicted, with a paired patient bootstrap."""
    import data
    from evaluation import paired_difference

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
        (result.config["run_name"], result.counterpart[0])
        if result.kind == "search"
        else (result.counterpart[0], result.config["run_name"])
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
        ["data", f"`{config['data_dir']}`"],
        ["input", f"{config['image_size']} x {config['image_size']} {config['color_mode']}"],
        [
            "validation",
            f"{config['validation_fraction']:.0%} of train, grouped by patient, stratified by class (seed {config['seed']})",
        ],
        ["class weights", "on" if config["class_weights"] else "off"],
        ["search", search],
        [
            "final training",
            f"{config['final_epochs']} epochs, {config.get('final_schedule', 'constant')} learning rate, "
            f"kept epoch {run['best_epoch']} (best {config['objective']})",
        ],
        ["threshold", f"{test['threshold']:.3f}, {threshold_rule(config)}"],
        ["precision", _precision(run)],
        ["backend", f"Keras on {run.get('backend', 'tensorflow')}"],
        [
            "wall time",
            ", ".join(
                f"{phase.replace('_', ' ')} {_duration(seconds)}" for phase, seconds in run["wall_seconds"].items()
            ),
        ],
        ["versions", ", ".join(f"{k} {v}" for k, v in run["versions"].items())],
        ["machine", run["machine"]],
        ["command", f"`{run['command']}`"],
    ]
    return ["## What ran", "", markdown_table(["setting", "value"], rows), ""]


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


def _types_section(result: RunResult) -> list[str]:
    """Sensitivity per pneumonia type (bacterial, viral), from Kaggle's file names."""
    test, ensemble = result.metrics["test"], result.metrics.get("ensemble")
    if "by_type" not in test:
        return []
    header = ["type", "test images", "patients", "sensitivity [95% interval]"]
    if ensemble and "by_type" in ensemble["test"]:
        header.append("ensemble")
    rows = []
    for name, figures in test["by_type"].items():
        row = [name, figures["n_images"], figures["n_patients"], type_sensitivity(figures)]
        if len(header) == 5:
            row.append(type_sensitivity(ensemble["test"]["by_type"][name]))
        rows.append(row)
    return [
        "## Sensitivity by pneumonia type (test)",
        "",
        "Kaggle's file names say whether a PNEUMONIA image is bacterial or viral; the share of each type called "
        "PNEUMONIA at the validation-chosen threshold, with the interval from the same patient resamples. "
        "An interval of [1.000, 1.000] means no image of that type was missed in any resample, not that none can be.",
        "",
        markdown_table(header, rows) if rows else "No test image named a pneumonia type.",
        "",
    ]


def type_sensitivity(figures: dict[str, Any]) -> str:
    """One pneumonia type's sensitivity with its interval, from metrics.json's `by_type`."""
    return with_interval(
        {"sensitivity": figures["sensitivity"], "ci95": {"sensitivity": figures["ci95"]}}, "sensitivity"
    )


def _ensemble_section(result: RunResult) -> list[str]:
    """The averaged prediction of the top points' retrained models, beside the best model alone."""
    ensemble, validation, test = (result.metrics.get(key) for key in ("ensemble", "validation", "test"))
    if not ensemble:
        return []
    rows = [
        [
            name,
            validation[name],
            ensemble["validation"][name],
            with_interval(test, name),
            with_interval(ensemble["test"], name),
        ]
        for name in METRIC_ROWS
    ]
    return [
        f"## Ensemble of the {ensemble['size']} best points",
        "",
        f"The {ensemble['size']} best distinct points of the search, each retrained like the best one, their "
        "P(pneumonia) averaged; its threshold was chosen on validation by the same rule. `model.keras` and "
        "`predict.py` are the best model alone; `predictions.csv` holds the ensemble's probabilities too.",
        "",
        markdown_table(
            ["metric", "validation: best model", "validation: ensemble", "test: best model", "test: ensemble"], rows
        ),
        "",
    ]


def _precision(run: dict[str, Any]) -> str:
    """The dtype policy a run trained in and why (runs from before the setting trained in float32)."""
    chosen = run.get("precision", {"policy": "float32", "reason": "recorded before the precision setting"})
    return f"{chosen['policy']} ({chosen['reason']})"


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
        "model lies on the diagonal; points below it mean the model says PNEUMONIA more confidently than it is right.",
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
        f"For each outcome on test at threshold {result.metrics['test']['threshold']:.3f}, the {EXAMPLES_PER_OUTCOME} "
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
    if result.trials is not None:
        lines += [
            "![search progress](search_progress.png)",
            "",
            "![objective against hyperparameters](search_hyperparameters.png)",
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
        f"{len(skipped)} image(s) could not be decoded and were left out (`skip_bad_images`); "
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
    budget = f"max {config['max_trials']} trials" if config["max_trials"] else "its full schedule"
    return (
        f"{config['tuner']} ({budget}, up to {config['epochs']} epochs a trial, objective {config['objective']}): "
        f"{len(trials)} trials, {completed} completed, {epochs} epochs in all"
    )


def _search_section(result: RunResult) -> list[str]:
    if result.trials is None:
        return []
    trials, objective = result.trials, result.config["objective"]
    baseline = result.metrics["run"]["baseline_hyperparameters"]
    done = trials[trials["status"] == "COMPLETED"]
    lines = ["## Search", ""]
    if len(done):
        best = done.loc[done["objective"].idxmax() if _maximised(objective) else done["objective"].idxmin()]
        first = trials.iloc[0]
        lines.append(
            f"Trial {first['trial_id']} is the baseline point at the search's first budget ({_cell(first['epochs_run'])} "
            f"epochs): validation objective {_cell(first['objective'])} ({first['status'].lower()})."
        )
        same = all(best.get(name) == value for name, value in baseline.items())
        lines.append(
            f"The best trial, {best['trial_id']}, reached {_cell(best['objective'])} after {_cell(best['epochs_run'])} "
            + (
                "epochs; it is the baseline point itself, so this search found nothing better than the baseline."
                if same
                else 'epochs at the point shown under "Hyperparameters".'
            )
        )
    failed = trials[trials["status"] != "COMPLETED"]
    if len(failed):
        lines += ["", f"**{len(failed)} trial(s) failed**:", ""]
        lines += [f"- trial {row.trial_id}: {row.error}" for row in failed.itertuples()]
    top = done.sort_values("objective", ascending=not _maximised(objective)).head(5)
    shown = ["trial_id", "objective", "epochs_run", "seconds", *_hyperparameter_columns(trials)]
    lines += ["", "Top trials:", "", markdown_table(shown, top[shown].to_numpy().tolist()), ""]
    return lines
