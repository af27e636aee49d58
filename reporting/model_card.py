"""A model card per run (model_card.md, Hugging Face layout), written from the run's own files.

One concern: the card's text. It imports runs.py (the RunResult), tables.py and evaluation.py (Brier
scores), the same modules report.py renders with; Keras only to list a kept model's layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from evaluation import brier_scores
from reporting.tables import (
    METRIC_ROWS,
    epochs_trained,
    finalists_table,
    interval_sentence,
    is_synthetic,
    markdown_table,
    members_table,
    selection_sentence,
    threshold_rule,
    type_sensitivity,
    with_interval,
)
from runs import MODEL_FILE, RunResult, chose_among_finalists

# No license has been chosen for this project's code or weights; Hugging Face's "other" says so
# instead of claiming one. The training data's own license (CC BY 4.0) is named in the card.
LICENSE = "other"
DATASET = "paultimothymooney/chest-xray-pneumonia"
CITATION = (
    "Kermany D, Zhang K, Goldbaum M (2018). Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images "
    "for Classification. Mendeley Data, v2, doi:10.17632/rscbjbr9sj.2; Kermany et al. (2018), Cell 172(5), 1122-1131"
)
CONFIDENT = 0.9  # a wrong answer with P(pneumonia) above this or below 1 - this is a confident mistake
REAL_DATASET = {"name": "Chest X-Ray Images (Pneumonia)", "type": DATASET}
TAGS = ["image-classification", "medical-imaging", "chest-x-ray", "pneumonia", "keras-tuner"]
# A run on generated images is a check of the pipeline: its card names no real dataset, and its figures are the
# generated test split's, so it claims nothing about chest X-rays or their patients.
SYNTHETIC_TAGS = ["image-classification", "keras-tuner", "synthetic-data", "pipeline-check"]
SYNTHETIC_DATASET = {"name": "generated images (a pipeline check, not chest X-rays)", "type": "synthetic"}
PIPELINE_CHECK = (
    "This model was trained and tested on generated images (`data.make_synthetic_dataset`), not on chest X-rays: "
    "it is a check that the pipeline runs end to end, and nothing in this card says how it would do on a chest X-ray."
)


def render_model_card(result: RunResult) -> str:
    """model_card.md: YAML front matter, then one short section per heading of the layout."""
    sections = (
        _front_matter,
        _details_section,
        _intended_use_section,
        _training_data_section,
        _evaluation_section,
        _limitations_section,
        _how_to_use_section,
    )
    return "\n".join(line for section in sections for line in section(result))


def _synthetic(result: RunResult) -> bool:
    return is_synthetic(result.config.data_dir)


def _front_matter(result: RunResult) -> list[str]:
    test, synthetic = result.metrics["test"], _synthetic(result)
    dataset = {**(SYNTHETIC_DATASET if synthetic else REAL_DATASET), "split": "test"}
    tested_on = "test {} on generated images" if synthetic else "test {}"
    header = {
        "license": LICENSE,
        "library_name": "keras",
        "pipeline_tag": "image-classification",
        "tags": SYNTHETIC_TAGS if synthetic else TAGS,
        "datasets": [] if synthetic else [DATASET],
        "metrics": list(METRIC_ROWS[:6]),
        "model-index": [
            {
                "name": result.config.run_name,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "NORMAL vs PNEUMONIA"},
                        "dataset": dataset,
                        "metrics": [
                            {"type": name, "name": tested_on.format(name), "value": round(float(test[name]), 4)}
                            for name in METRIC_ROWS[:6]
                        ],
                    }
                ],
            }
        ],
    }
    return ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", ""]


def _details_section(result: RunResult) -> list[str]:
    config, run = result.config, result.metrics["run"]
    size = config.image_size
    trained = epochs_trained(len(result.history), config.final_epochs, "budget" in result.metrics)
    return [
        f"# Model card: `{config.run_name}`",
        "",
        _intro(result),
        "",
        "## Model details",
        "",
        f"- **Input**: {size} x {size} {config.color_mode}, raw 0-255 pixels (rescaled inside the model); any "
        "JPEG or PNG is decoded and resized (bilinear, antialiased) to this size by `predict.py`.",
        "- **Output**: softmax over (NORMAL, PNEUMONIA); PNEUMONIA when P(pneumonia) >= "
        f"{result.metrics['test']['threshold']:.3f}, the threshold chosen on validation.",
        f"- **Precision and backend**: trained in `{config.precision}` on Keras' {config.backend} backend; "
        "the output layer computes in float32. `model.keras` loads under any Keras 3 backend.",
        "- **Training**: RMSprop, class-weighted cross-entropy"
        + ("" if config.class_weights else " (class weights off)")
        + f", {trained} with a {config.final_schedule} learning rate; "
        f"the weights of epoch {run['best_epoch']} (best {config.objective}) were kept"
        + (
            " (for an ensemble, by its heaviest member; each member kept its own)."
            if chose_among_finalists(result.metrics)
            else "."
        ),
        *_chosen_lines(result),
        "",
        *_architecture_lines(result),
    ]


def _intro(result: RunResult) -> str:
    """What the model is, in one paragraph; a run on generated images says first that it is a pipeline check. The
    notebook's CNN is cited where a clone has it (docs/baseline.md), not on the development machine's notes."""
    origin = (
        f"from a {result.kind} run of this project (Keras Tuner over the Kaggle notebook's CNN, specified in the "
        "repository's `docs/baseline.md`; the best point retrained and evaluated once on test)"
    )
    if _synthetic(result):
        return f"**A pipeline check.** {PIPELINE_CHECK} It comes {origin}."
    return f"A small convolutional network that gives P(pneumonia) for a chest X-ray, {origin}."


def _chosen_lines(result: RunResult) -> list[str]:
    """For a finalist run: which of the full-length finalists the model is, and why."""
    if not chose_among_finalists(result.metrics):
        return []
    return [f"- **Chosen among finalists** (see Evaluation): {selection_sentence(result.metrics)}"]


def _architecture_lines(result: RunResult) -> list[str]:
    """The layers as built, from model.keras when the run kept it, else from best_hyperparameters.yaml."""
    model_file = result.run_dir / MODEL_FILE
    if not model_file.exists():
        chosen = result.best_hyperparameters
        rows = [[name, value] for name, value in chosen.items()]
        return [
            "Architecture (this run's `model.keras` was not kept: the point from `best_hyperparameters.yaml`, "
            "which `hypermodel.py` builds as Conv2D 3x3 ReLU + MaxPool blocks, Flatten or average pooling, "
            "dropout, dense ReLU layers and a 2-unit softmax):",
            "",
            markdown_table(["hyperparameter", "value"], rows),
            "",
        ]
    import keras

    model = keras.saving.load_model(model_file, safe_mode=True)
    rows = [
        [layer.name, type(layer).__name__, str(tuple(layer.output.shape[1:])), f"{layer.count_params():,}"]
        for layer in model.layers
    ]
    return [
        f"Architecture (from `model.keras`; {model.count_params():,} parameters):",
        "",
        markdown_table(["layer", "type", "output shape", "parameters"], rows),
        "",
    ]


def _intended_use_section(result: RunResult) -> list[str]:
    use = (
        "- **For checking an install or a change to the pipeline only**: trained on generated images, it is no model "
        "of chest X-rays; `python search.py` trains one on the real data."
        if _synthetic(result)
        else "- **For research and teaching**: how a small CNN, its tuning and an honest held-out evaluation behave on "
        "a public chest X-ray dataset."
    )
    return [
        "## Intended use",
        "",
        use,
        "- **Not a medical device.** Not for diagnosis, screening, triage or any decision about a patient. It was "
        "not validated clinically, and its test images come from the same source as its training images.",
        "",
    ]


def _training_data_section(result: RunResult) -> list[str]:
    config, summary = result.config, result.data_summary
    source = (
        "Synthetic images generated by `data.make_synthetic_dataset` (a test run, not the real data)."
        if _synthetic(result)
        else f"The Kaggle dataset `{DATASET}` (Chest X-Ray Images (Pneumonia); {CITATION}), license CC BY 4.0: "
        "anterior-posterior chest X-rays of children aged one to five from Guangzhou Women and Children's Medical "
        "Center, labelled NORMAL or PNEUMONIA (bacterial or viral)."
    )
    rows = [[name, *row] for name, row in zip(summary.index, summary.to_numpy().tolist())]
    val, test = (
        ("the generated `val/` folder", "the generated test split")
        if _synthetic(result)
        else ("Kaggle's 16-image `val/` folder", "Kaggle's own test split")
    )
    return [
        "## Training data",
        "",
        source,
        "",
        markdown_table(["split", *summary.columns], rows),
        "",
        f"Validation is {config.validation_fraction:.0%} of train ({val} joins the train pool first), whole patients "
        f"only, stratified by class, seed {config.seed}: no patient's images are in both train and validation. Test "
        f"is {test}, predicted once at the end.",
        "",
    ]


def _evaluation_section(result: RunResult) -> list[str]:
    validation, test, config = result.metrics["validation"], result.metrics["test"], result.config
    brier = brier_scores(result.predictions)
    rows = [[name, validation[name], with_interval(test, name)] for name in METRIC_ROWS]
    lines = [
        "## Evaluation",
        "",
        f"The kept epoch ({result.metrics['run']['best_epoch']} of {len(result.history)} trained) was chosen by validation "
        f"{config.objective}, the threshold {test['threshold']:.3f} by {threshold_rule(config.threshold)}; the test split changed neither. "
        + interval_sentence(test),
        "",
        markdown_table(["metric", "validation", "test [95% interval]"], rows),
        "",
        f"Calibration: Brier score validation {brier['validation']:.3f}, test {brier['test']:.3f} (0 is perfect, "
        "0.25 a constant 0.5).",
        "",
    ]
    if chose_among_finalists(result.metrics):
        lines += [
            "Each finalist after its retrain, beside the chosen model (search scores are "
            f"{config.objective}; test figures at each model's own validation-chosen threshold, scored once, after "
            "the choice):",
            "",
            finalists_table(result.metrics),
            "",
        ]
        members = members_table(result.metrics)
        if members:
            lines += ["The delivered model's members: each repeat of each finalist and its weight:", "", members, ""]
    by_type = test.get("by_type", {})
    if by_type:
        type_rows = [
            [name, figures["n_images"], figures["n_patients"], type_sensitivity(figures)]
            for name, figures in by_type.items()
        ]
        names = "the generated" if _synthetic(result) else "Kaggle's"
        lines += [
            f"Sensitivity by pneumonia type (from {names} file names):",
            "",
            markdown_table(["type", "test images", "patients", "sensitivity [95% interval]"], type_rows),
            "",
        ]
    return lines


def _limitations_section(result: RunResult) -> list[str]:
    """What this run itself measured going wrong between validation and test."""
    validation, test = result.metrics["validation"], result.metrics["test"]
    rows = [
        [name, validation[name], test[name], f"{test[name] - validation[name]:+.3f}"]
        for name in ("roc_auc", "specificity")
    ]
    table = [
        markdown_table(["metric", "validation", "test", "test minus validation"], rows),
        "",
        _confidence_sentence(result),
        "",
    ]
    if _synthetic(result):
        return [
            "## Limitations (measured by this run)",
            "",
            f"{PIPELINE_CHECK} Validation and test on the generated images:",
            "",
            *table,
            "- No patient, hospital or X-ray machine is behind these images: the figures measure the pipeline, not a "
            "model of chest X-rays.",
            "",
        ]
    return [
        "## Limitations (measured by this run)",
        "",
        "Validation, carved from Kaggle's train split, scores higher than test: the threshold and the kept epoch "
        "chosen there do not carry over whole.",
        "",
        *table,
        "- One source: every image comes from one hospital's paediatric patients; nothing here measures adults, "
        "other hospitals or other X-ray machines.",
        "- The test split is small (see the intervals), and Kaggle's test patients may overlap train's "
        "(file-name ids repeat; see docs/protocol.md).",
        "",
    ]


def _confidence_sentence(result: RunResult) -> str:
    """How confident the model is on test where it is wrong."""
    test = result.predictions[result.predictions["split"] == "test"]
    threshold = result.metrics["test"]["threshold"]
    probability, label = test["p_pneumonia"].to_numpy(), test["label"].to_numpy()
    wrong = (probability >= threshold).astype(int) != label
    confident = wrong & ((probability > CONFIDENT) | (probability < 1 - CONFIDENT))
    normal = probability[label == 0]
    return (
        f"Confidence on test: {int(wrong.sum())} of {len(test)} test images are wrong at the threshold, "
        f"{int(confident.sum())} of them with P(pneumonia) above {CONFIDENT} or below {1 - CONFIDENT:.1f}; the test "
        f"NORMAL images get a median P(pneumonia) of {np.median(normal) if len(normal) else float('nan'):.3f}."
    )


def _how_to_use_section(result: RunResult) -> list[str]:
    run = command_folder(result)
    lines = [
        "## How to use",
        "",
        "```bash",
        f"python predict.py xray.jpeg more_xrays/ --run {run}",
        f"python predict.py more_xrays/ --run {run} --csv predictions.csv --explain gradcam/",
        "```",
        "",
        "`predict.py` loads `model.keras` in Keras safe mode and this run's threshold, and prints the threshold, then "
        "file, P(pneumonia) and label per image (`--csv` saves the table, `--explain` writes Grad-CAM overlays at "
        "each image's own size, captioned with its label). In "
        "Python: `keras.saving.load_model('model.keras', safe_mode=True)` takes (N, "
        f"{result.config.image_size}, {result.config.image_size}, channels) raw 0-255 pixels and returns "
        "(P(normal), P(pneumonia)) per image.",
        "",
    ]
    if not (result.run_dir / MODEL_FILE).exists():
        lines += [
            "This folder holds no `model.keras` (a run's model is not committed to git, and a copied run may leave "
            "it out), so these commands need one first: train a model, e.g. in about 40 s with "
            "`python search.py --smoke`, and pass the folder it prints as `--run`.",
            "",
        ]
    return lines


def command_folder(result: RunResult) -> Path:
    """The run folder as the card's commands name it: the folder the card is written to, relative to the working
    directory (the repository root, where search.py runs), so a copied run (reports/example) names itself.

    A folder outside the working directory is another machine's: it is shown as reports_dir/<folder name>."""
    folder = result.run_dir
    if not folder.is_absolute():
        return folder
    try:
        return folder.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        reports_dir = Path(result.config.reports_dir)
        return (reports_dir if not reports_dir.is_absolute() else Path(reports_dir.name)) / folder.name
