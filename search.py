"""Tune a chest X-ray pneumonia CNN with Keras Tuner and report on the held-out test split.

    python search.py              # search, retrain the best for 45 epochs, report in reports/<run>/
    python search.py --baseline   # the baseline CNN, same protocol, same kind of report

The test split is predicted once, after every choice (trials, checkpoint, threshold) was
made on the validation split carved from train.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from config import ConfigError, dump, load_config, read_yaml

# Heavy modules (TensorFlow, Keras Tuner, matplotlib) are imported inside the steps that use
# them, so `--help` and config mistakes answer at once.

FLAGS = {  # config key -> flag that overrides it
    "data_dir": "--data-dir",
    "tuner": "--tuner",
    "max_trials": "--max-trials",
    "epochs": "--epochs",
    "final_epochs": "--final-epochs",
    "image_size": "--image-size",
    "seed": "--seed",
    "run_name": "--run-name",
    "reports_dir": "--reports-dir",
}
# Settings that must match for a search and a baseline run to be compared on test.
PROTOCOL_KEYS = (
    "data_dir", "image_size", "color_mode", "validation_fraction", "class_weights", "batch_size",
    "augmentation", "objective", "final_epochs", "threshold", "seed",
)  # fmt: skip
SYNTHETIC_DIR = Path("data/synthetic")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.command = "python search.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    from data import DataError
    from tuning import SearchError

    clock = Stopwatch()
    try:
        config = resolve_config(args)
        hypermodel = make_hypermodel(config)
        splits = load_data(config, args.synthetic)
        run_dir = prepare_run_dir(config, args)
        clock.lap("data")
        if args.baseline:
            best, trials = baseline_point(), None
        else:
            best, trials = search(hypermodel, splits, config, run_dir)
            clock.lap("search")
        model, history, best_epoch = retrain(hypermodel, best, splits, config)
        clock.lap("final_training")
        metrics, predictions = evaluate(model, splits, config)
        write_report(
            run_dir, args, config, splits, best, trials, model, history, best_epoch, metrics, predictions, clock
        )
    except (ConfigError, DataError, SearchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted: finished trials are kept; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


class Stopwatch:
    """Seconds spent in each named phase of a run."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = now - self.last
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": time.monotonic() - self.started}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Tune the chest X-ray pneumonia CNN with Keras Tuner, retrain the best and report on held-out test.",
        epilog="Defaults come from config.yaml; flags override them. Reports land in REPORTS_DIR/RUN_NAME/.",
    )
    parser.add_argument("--config", type=Path, help="YAML file with settings to use instead of config.yaml's")
    parser.add_argument(
        "--data-dir", help="folder holding train/ and test/ (default: data/chest_xray, downloaded if absent)"
    )
    parser.add_argument("--synthetic", action="store_true", help="run on a small generated dataset (a smoke test)")
    parser.add_argument(
        "--baseline", action="store_true", help="no search: train the baseline CNN under the same protocol"
    )
    parser.add_argument("--tuner", choices=("hyperband", "random", "bayesian"), help="search algorithm")
    parser.add_argument("--max-trials", type=int, help="most trials to run (hyperband: caps its schedule)")
    parser.add_argument("--epochs", type=int, help="most epochs per trial")
    parser.add_argument("--final-epochs", type=int, help="epochs of the final retrain (default 45)")
    parser.add_argument("--image-size", type=int, help="square input side in pixels (default 80)")
    parser.add_argument("--seed", type=int, help="seed for the split, the search and the training")
    parser.add_argument("--run-name", help="report folder name (default: derived from the settings)")
    parser.add_argument("--reports-dir", help="where run folders go (default: reports)")
    parser.add_argument("--overwrite", action="store_true", help="start the run afresh instead of resuming it")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """config.yaml, then --config, then flags; the run name defaults to a summary of the settings."""
    overrides = {flag: (key, getattr(args, key)) for key, flag in FLAGS.items() if getattr(args, key) is not None}
    config = load_config(args.config, overrides)
    if config["run_name"] is None:
        kind = "baseline" if args.baseline else f"search-{config['tuner']}"
        prefix = "synthetic-" if args.synthetic else ""
        config["run_name"] = f"{prefix}{kind}-{config['image_size']}px-seed{config['seed']}"
    return config


def load_data(config: dict[str, Any], synthetic: bool):
    """Find (or download, or generate) the data, split it by patient, decode it once."""
    import data

    if synthetic:
        shutil.rmtree(SYNTHETIC_DIR, ignore_errors=True)
        root = data.make_synthetic_dataset(SYNTHETIC_DIR, seed=config["seed"])
    else:
        root = data.resolve_data_dir(config["data_dir"])
    config["data_dir"] = str(root)
    splits = data.load_splits(root, config["validation_fraction"], config["seed"])
    print(f"Data: {root}")
    print(data.summary_table(splits).to_string())
    shared = splits["test"].patients & (splits["train"].patients | splits["validation"].patients)
    if shared:
        print(
            f"Note: {len(shared)} file-name patient ids of train/validation also occur in Kaggle's test split (see README)."
        )
    data.decode_splits(splits, config["image_size"], config["color_mode"])
    return splits


def prepare_run_dir(config: dict[str, Any], args: argparse.Namespace) -> Path:
    """Create the run folder, or resume it when it holds an unfinished run with the same settings."""
    import report

    run_dir = Path(config["reports_dir"]) / config["run_name"]
    if run_dir.exists() and args.overwrite:
        shutil.rmtree(run_dir)
    elif (run_dir / "metrics.json").exists():
        raise ConfigError(
            f"{run_dir} holds a finished run: pass --overwrite to redo it or --run-name NAME for a new one"
        )
    elif (run_dir / "config.yaml").exists():
        previous = read_yaml(run_dir / "config.yaml")
        changed = [key for key in config if previous.get(key) != config[key]]
        if changed:
            raise ConfigError(
                f"{run_dir} was started with other settings ({', '.join(changed)}): "
                "pass --overwrite to start afresh or --run-name NAME for a new run"
            )
        print(f"Resuming {run_dir}: finished trials are kept.")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        report.write_text(run_dir / "config.yaml", dump(config))
    except OSError as error:
        raise ConfigError(f"cannot write to {run_dir} ({error.strerror}): pass a writable --reports-dir") from None
    return run_dir


def make_hypermodel(config: dict[str, Any]):
    from hypermodel import ChestXRayHyperModel

    channels = 3 if config["color_mode"] == "rgb" else 1
    try:
        return ChestXRayHyperModel(config["image_size"], channels, config["search_space"], config["augmentation"])
    except ValueError as error:
        raise ConfigError(str(error)) from None


def baseline_point():
    from hypermodel import baseline_hyperparameters

    return baseline_hyperparameters()


def fit_settings(splits, config: dict[str, Any]) -> dict[str, Any]:
    """What every fit shares: the data, class weights and a log line per epoch when not on a terminal."""
    import data

    return {
        "x": data.to_dataset(splits["train"], config["batch_size"], shuffle=True, seed=config["seed"]),
        "validation_data": data.to_dataset(splits["validation"], config["batch_size"]),
        "class_weight": data.class_weights(splits["train"].labels) if config["class_weights"] else None,
        "verbose": 1 if sys.stdout.isatty() else 2,
        "shuffle": False,  # the training dataset reshuffles itself every epoch
    }


def search(hypermodel, splits, config: dict[str, Any], run_dir: Path):
    """Run (or resume) the search; the first trial is the baseline. Returns the best point and trials."""
    import keras

    import tuning
    from hypermodel import BASELINE

    keras.utils.set_random_seed(config["seed"])
    tuner = tuning.build_tuner(
        hypermodel,
        kind=config["tuner"],
        objective=config["objective"],
        max_trials=config["max_trials"],
        epochs=config["epochs"],
        hyperband_factor=config["hyperband_factor"],
        seed=config["seed"],
        baseline_values=BASELINE,
        directory=run_dir / "tuner",
        overwrite=False,
    )
    settings = fit_settings(splits, config)
    mode = tuner.oracle.objective.direction
    callbacks = [
        keras.callbacks.EarlyStopping(config["objective"], patience=config["early_stopping_patience"], mode=mode),
        keras.callbacks.TerminateOnNaN(),
    ]
    tuning.run_search(
        tuner,
        settings.pop("x"),
        settings.pop("validation_data"),
        epochs=config["epochs"],
        callbacks=callbacks,
        **settings,
    )
    trials = tuning.trials_table(tuner.oracle)
    failed = trials[trials["status"] != "COMPLETED"]
    if len(failed):
        print(
            f"Warning: {len(failed)} of {len(trials)} trials failed; first error: {failed['error'].iloc[0]}",
            file=sys.stderr,
        )
    return tuning.best_hyperparameters(tuner), trials


def retrain(hypermodel, hp, splits, config: dict[str, Any]):
    """Train the chosen point from scratch for final_epochs; keep the epoch best on validation."""
    import keras
    import pandas as pd

    keras.utils.set_random_seed(config["seed"])
    model = hypermodel.build(hp)
    goal = "min" if config["objective"].endswith("loss") else "max"
    # Patience as long as training: it never stops early, it only restores the best epoch's weights.
    best = keras.callbacks.EarlyStopping(
        config["objective"], mode=goal, patience=config["final_epochs"], restore_best_weights=True
    )
    settings = fit_settings(splits, config)
    history = model.fit(epochs=config["final_epochs"], callbacks=[best], **settings)
    table = pd.DataFrame(history.history)
    table.insert(0, "epoch", range(1, len(table) + 1))
    return model, table, best.best_epoch + 1


def evaluate(model, splits, config: dict[str, Any]):
    """Threshold from validation; then, and only then, the single prediction of the test split."""
    import pandas as pd

    import data
    from evaluation import choose_threshold, classification_metrics

    def probabilities(name: str):
        return model.predict(data.to_dataset(splits[name], config["batch_size"]), verbose=0)[:, 1]

    validation = probabilities("validation")
    threshold = choose_threshold(splits["validation"].labels, validation, config["threshold"])
    test = probabilities("test")
    scores = {"validation": validation, "test": test}
    metrics = {name: classification_metrics(splits[name].labels, scores[name], threshold) for name in scores}
    predictions = pd.concat(
        pd.DataFrame(
            {
                "split": name,
                "file": map(str, splits[name].files),
                "label": splits[name].labels,
                "p_pneumonia": scores[name],
            }
        )
        for name in scores
    )
    return metrics, predictions


def find_counterpart(config: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]] | None:
    """The newest finished run of the other kind (search or baseline) with the same protocol."""
    finished = sorted(
        Path(config["reports_dir"]).glob("*/metrics.json"), key=lambda path: path.stat().st_mtime, reverse=True
    )
    for metrics_file in finished:
        other = json.loads(metrics_file.read_text())
        other_config = read_yaml(metrics_file.with_name("config.yaml"))
        if other.get("run", {}).get("kind") != kind and all(
            other_config.get(key) == config[key] for key in PROTOCOL_KEYS
        ):
            return metrics_file.parent.name, other
    return None


def write_report(
    run_dir, args, config, splits, best, trials, model, history, best_epoch, metrics, predictions, clock
) -> None:
    """Record how the run went, write its files, and refresh the other kind's report to compare with this one."""
    import keras
    import keras_tuner
    import numpy
    import tensorflow as tf

    import data
    import report
    import tuning
    from hypermodel import BASELINE

    kind = "baseline" if args.baseline else "search"
    metrics["run"] = {
        "kind": kind,
        "run_name": config["run_name"],
        "best_epoch": best_epoch,
        "baseline_hyperparameters": BASELINE,
        "wall_seconds": clock.total(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": args.command,
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "keras_tuner": keras_tuner.__version__,
            "numpy": numpy.__version__,
        },
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores, {len(tf.config.list_physical_devices('GPU'))} GPU(s)",
    }
    counterpart = find_counterpart(config, kind)
    report.write_run(
        run_dir,
        data_summary=data.summary_table(splits),
        trials=trials,
        best_hyperparameters=tuning.searched_values(best),
        history=history,
        metrics=metrics,
        predictions=predictions,
        model=model,
        counterpart=counterpart,
    )
    if counterpart:
        report.render(run_dir.parent / counterpart[0], (config["run_name"], metrics))
    print(f"\nReport: {run_dir / 'report.md'}")
    model_mb = (run_dir / "model.keras").stat().st_size / 1e6
    print(f"Disk: {report.disk_usage(run_dir) / 1e6:.1f} MB in {run_dir}, of which model.keras {model_mb:.1f} MB")
    test = metrics["test"]
    print(
        f"Test (held out): accuracy {test['accuracy']:.3f}, ROC AUC {test['roc_auc']:.3f}, "
        f"sensitivity {test['sensitivity']:.3f}, specificity {test['specificity']:.3f} at threshold {test['threshold']:.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
