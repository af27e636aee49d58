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
import signal
import sys
import time
from pathlib import Path
from typing import Any

from config import BACKENDS, PRECISIONS, ConfigError, dump, load_config, read_yaml

# Heavy modules (Keras and its backend, Keras Tuner, matplotlib) are imported inside the steps that
# use them, so `--help` and config mistakes answer at once, and Keras loads the backend chosen.

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
    "distributed.role": "--role",
    "distributed.oracle_address": "--oracle-address",
    "distributed.worker_id": "--worker-id",
    "skip_bad_images": "--skip-bad-images",
    "precision": "--precision",
    "backend": "--backend",
}
# Settings that must match for a search and a baseline run to be compared on test.
PROTOCOL_KEYS = (
    "data_dir", "image_size", "color_mode", "validation_fraction", "class_weights", "batch_size",
    "augmentation", "objective", "final_epochs", "final_schedule", "final_ema_momentum", "threshold", "seed",
)  # fmt: skip
# How a run is spread over processes and devices and whether it logs, not what it computes: a run may resume under other values.
RUNTIME_KEYS = ("distribution", "distributed", "tensorboard")
SYNTHETIC_DIR = Path("data/synthetic")
RETRAIN_BACKUP = "retrain"  # in the run folder: what an interrupted retrain resumes from; removed once reported


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.command = "python search.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    clock = Stopwatch()
    try:
        config = resolve_config(args)
        choose_backend(config, args)  # before anything imports Keras
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from data import DataError
    from report import ReportError
    from tuning import SearchError

    previous_handler = signal.signal(signal.SIGINT, CTRL_C.handle)
    sys.unraisablehook = CTRL_C.unraisable
    try:
        print_devices()
        args.precision_reason = choose_precision(config, args)
        hypermodel = make_hypermodel(config)
        splits = load_data(config, args.synthetic)
        run_dir = prepare_run_dir(config, args)
        clock.lap("data")
        if args.baseline:
            points, trials = [baseline_point()], None
        else:
            points, trials = search(hypermodel, splits, config, run_dir)
            clock.lap("search")
            if points is None:  # a distributed worker: the chief retrains the best and reports
                return 0
        model, history, best_epoch = retrain(
            hypermodel, points[0], splits, config, run_dir / RETRAIN_BACKUP / "best", run_dir / "tensorboard" / "final"
        )
        clock.lap("final_training")
        members = retrain_runners_up(hypermodel, points[1:], splits, config, run_dir / RETRAIN_BACKUP)
        if members:
            clock.lap("ensemble_training")
        metrics, predictions = evaluate(model, members, splits, config)
        write_report(
            run_dir, args, config, splits, points, trials, (model, *members), history, best_epoch, metrics, predictions,
            clock,
        )  # fmt: skip
    except (ConfigError, DataError, SearchError, ReportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nInterrupted: finished trials and retrain epochs are kept; run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = sys.__unraisablehook__
        CTRL_C.reset()
    return 0


class CtrlC:
    """Ctrl-C while a model trains stops it at the end of the current batch; elsewhere, or pressed twice, at once.

    Raised at an arbitrary point, the KeyboardInterrupt can land in a weakref callback of TensorFlow's, where
    Python prints and drops it and the search runs on; raised from a Keras callback it always stops the run.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.training = self.pressed = False

    def handle(self, signum: int, frame: Any) -> None:
        at_once = self.pressed or not self.training
        self.pressed = True  # remembered, so that training stops even if this exception is dropped
        if at_once:
            raise KeyboardInterrupt

    def unraisable(self, unraisable: Any) -> None:
        """sys.unraisablehook: a dropped Ctrl-C is not news, the next batch raises it again; the rest is printed."""
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            sys.__unraisablehook__(unraisable)

    def callback(self):
        """A Keras callback that marks training and raises the pending interrupt after each batch."""
        import keras

        ctrl_c = self

        class StopOnCtrlC(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                ctrl_c.training = True

            def on_train_end(self, logs=None):
                ctrl_c.training = False

            def on_train_batch_end(self, batch, logs=None):
                if ctrl_c.pressed:
                    ctrl_c.training = False
                    raise KeyboardInterrupt

            on_test_batch_end = on_train_batch_end

        return StopOnCtrlC()


CTRL_C = CtrlC()


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
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend (default: KERAS_BACKEND if set, else config.yaml's backend, tensorflow)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="dtype policy (default auto: mixed bfloat16 or float16 where the CPU or GPU computes it natively)",
    )
    distributed = parser.add_argument_group("distributed search (README: Distributed search)")
    distributed.add_argument(
        "--role", choices=("standalone", "chief", "worker"), help="chief serves the search, workers run its trials"
    )
    distributed.add_argument("--oracle-address", metavar="HOST:PORT", help="where the chief listens for workers")
    distributed.add_argument("--worker-id", help="this worker's name, unique per worker (reuse it on restart)")
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        default=None,  # None: config.yaml's skip_bad_images decides
        help="leave out images that do not decode (listed in the report) instead of stopping",
    )
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """config.yaml, then --config, then flags; the run name defaults to a summary of the settings."""
    values = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in FLAGS.values()}
    overrides = {flag: (key, values[flag]) for key, flag in FLAGS.items() if values[flag] is not None}
    config = load_config(args.config, overrides)
    if args.baseline and config["distributed"]["role"] != "standalone":
        raise ConfigError("--baseline runs no search, so it cannot be distributed: drop --role")
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
    data.decode_splits(splits, config["image_size"], config["color_mode"], skip_bad=config["skip_bad_images"])
    skipped = data.skipped_table(splits)
    if len(skipped):
        print(
            f"Warning: left out {len(skipped)} image(s) that could not be decoded (skip_bad_images); "
            "the report lists them in skipped_images.csv",
            file=sys.stderr,
        )
    return splits


def run_folder(config: dict[str, Any]) -> Path:
    return Path(config["reports_dir"]) / config["run_name"]


def started_settings(config_file: Path) -> dict[str, Any]:
    """The settings an unfinished run was started with (runs from before the precision and backend keys
    trained in float32 on TensorFlow)."""
    return {"precision": "float32", "backend": "tensorflow", **read_yaml(config_file)}


def choose_backend(config: dict[str, Any], args: argparse.Namespace) -> None:
    """Settle the Keras backend (--backend, else KERAS_BACKEND, else the config) and load Keras with it."""
    import backends

    config["backend"], source = backends.choose(args.backend, config["backend"])
    backends.activate(config["backend"])
    print(f"Backend: {config['backend']} ({source})")
    if config["tensorboard"] and not backends.load_tensorboard_writer():
        print(
            "Note: no TensorBoard logs: Keras writes them through TensorFlow's summary writer, and TensorFlow is not "
            "installed (pip install tensorflow to get them; tensorboard: false silences this note)."
        )
        config["tensorboard"] = False


def choose_precision(config: dict[str, Any], args: argparse.Namespace) -> str:
    """Settle `precision: auto` on a dtype policy and say why: a resumed run keeps the one it started with."""
    import precision

    started = run_folder(config) / "config.yaml"
    if config["precision"] == "auto" and started.exists() and not args.overwrite:
        config["precision"] = started_settings(started)["precision"]
        reason = "kept from the run being resumed"
    else:
        config["precision"], reason = precision.resolve(config["precision"])
    print(f"Precision: {config['precision']} ({reason})")
    return reason


def prepare_run_dir(config: dict[str, Any], args: argparse.Namespace) -> Path:
    """Create the run folder, or resume it when it holds an unfinished run with the same settings."""
    import report

    run_dir = run_folder(config)
    if config["distributed"]["role"] == "worker":
        # A worker keeps only its trials' checkpoints under tuner/; the chief owns the run's files.
        return run_dir
    if run_dir.exists() and args.overwrite:
        shutil.rmtree(run_dir)
    elif report.is_finished(run_dir):
        raise ConfigError(
            f"{run_dir} holds a finished run: pass --overwrite to redo it or --run-name NAME for a new one"
        )
    elif (run_dir / "config.yaml").exists():
        previous = started_settings(run_dir / "config.yaml")
        changed = [key for key in config if key not in RUNTIME_KEYS and previous.get(key) != config[key]]
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


def print_devices() -> None:
    """Say what trains the models, so a GPU that the backend cannot see is noticed at once."""
    import backends

    gpus = backends.gpus()
    quiet = backends.name() == "tensorflow" and os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3"
    print(
        f"Training on: {', '.join(name for name, _ in gpus)}"
        if gpus
        else f"Training on: CPU only ({os.cpu_count()} cores), no GPU visible"
        + (" (TensorFlow's log says why: set TF_CPP_MIN_LOG_LEVEL=0 to see it)" if quiet else "")
    )


def make_hypermodel(config: dict[str, Any]):
    from data import channel_count
    from hypermodel import ChestXRayHyperModel

    channels = channel_count(config["color_mode"])
    try:
        return ChestXRayHyperModel(
            config["image_size"], channels, config["search_space"], config["augmentation"], config["precision"]
        )
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
    """Run (or resume) the search; the first trial is the baseline. Returns the best points (ensemble_size
    of them, best first) and the trials.

    Distributed, the chief serves the search and returns its result; a worker returns (None, None).
    """
    import keras

    import distributed
    import tuning

    keras.utils.set_random_seed(config["seed"])
    role = config["distributed"]["role"]
    distributed.configure(config["distributed"])  # Keras Tuner reads it when the tuner is built
    tuner = make_tuner(hypermodel, config, run_dir, distributed.choose_strategy(config["distribution"]))
    note = tuning.schedule_note(tuner.oracle, config["epochs"], config["hyperband_factor"])
    if note and role != "worker":
        print(note)
    if role == "chief":
        distributed.serve_oracle(
            tuner, config["distributed"]["oracle_address"], config["distributed"]["running_trial_timeout"]
        )
        return _search_result(tuner, config["ensemble_size"])
    settings = fit_settings(splits, config)
    mode = tuner.oracle.objective.direction
    callbacks = [
        keras.callbacks.EarlyStopping(config["objective"], patience=config["early_stopping_patience"], mode=mode),
        # Raising makes a NaN loss a failed trial with this message, not a finished one with a junk score.
        keras.callbacks.TerminateOnNaN(raise_error=True),
        CTRL_C.callback(),
        *tensorboard_logging(config, run_dir / "tensorboard"),  # Keras Tuner gives each trial a folder
    ]
    with distributed.chief_connection(config["distributed"]["oracle_address"]):
        tuning.run_search(
            tuner,
            settings.pop("x"),
            settings.pop("validation_data"),
            epochs=config["epochs"],
            callbacks=callbacks,
            **settings,
        )
    if role == "worker":
        ran = ", ".join(tuner.trials_run) or "none"
        print(
            f"Worker {config['distributed']['worker_id']} ran trials: {ran}. The chief retrains the best and reports."
        )
        return None, None
    return _search_result(tuner, config["ensemble_size"])


def make_tuner(hypermodel, config: dict[str, Any], run_dir: Path, strategy: Any = None):
    """The run's tuner, baseline first; it picks up the state already in `run_dir`/tuner."""
    import tuning
    from hypermodel import BASELINE

    return tuning.build_tuner(
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
        distribution_strategy=strategy,
    )


def _search_result(tuner, count: int):
    """The best distinct points (up to ensemble_size) and the trials table, with a warning when trials failed."""
    import tuning

    trials = tuning.trials_table(tuner.oracle)
    failed = trials[trials["status"] != "COMPLETED"]
    if len(failed):
        print(
            f"Warning: {len(failed)} of {len(trials)} trials failed; first error: {failed['error'].iloc[0]}",
            file=sys.stderr,
        )
    points = tuning.best_points(tuner, count)
    if len(points) < count:
        print(f"Note: ensemble_size is {count}, but only {len(points)} distinct point(s) completed; using those.")
    return points, trials


def tensorboard_logging(config: dict[str, Any], log_dir: Path) -> list:
    """Keras' TensorBoard callback, or nothing when `tensorboard: false`."""
    import keras

    if not config["tensorboard"]:
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), write_graph=False, profile_batch=0)]


def retrain(hypermodel, hp, splits, config: dict[str, Any], backup_dir: Path, log_dir: Path | None = None):
    """Train the chosen point from scratch for final_epochs and keep the epoch best on validation; a retrain
    that was cut off goes on from its last finished epoch, backed up in `backup_dir`."""
    import keras
    import pandas as pd

    import distributed
    import tuning
    from resume import RetrainBackup

    keras.utils.set_random_seed(config["seed"])
    with distributed.strategy_scope(config["distribution"]):
        ema = config["final_ema_momentum"]
        model = hypermodel.build(hp, ema_momentum=ema) if ema else hypermodel.build(hp)
    goal = "min" if config["objective"].endswith("loss") else "max"
    best = RetrainBackup(backup_dir, config["objective"], goal, point=tuning.searched_values(hp))
    logging = tensorboard_logging(config, log_dir) if log_dir else []
    if logging and config["backend"] == "tensorflow":  # Keras Tuner, too, logs HParams on TensorFlow only
        from tensorboard.plugins.hparams import api as hparams_api

        # The retrain joins the trials in TensorBoard's HParams table under the name "final".
        logging.append(hparams_api.KerasCallback(str(logging[0].log_dir), tuning.searched_values(hp), trial_id="final"))
    schedule = learning_rate_schedule(config["final_schedule"], hp.get("learning_rate"), config["final_epochs"])
    settings = fit_settings(splits, config)
    # Validation (and so the kept epoch) sees the averaged weights when the optimizer keeps them.
    averaging = [keras.callbacks.SwapEMAWeights()] if config["final_ema_momentum"] else []
    # The backup comes last, so that its rows hold what the other callbacks logged (the learning rate).
    callbacks = [*schedule, *averaging, CTRL_C.callback(), *logging, best]
    model.fit(epochs=config["final_epochs"], callbacks=callbacks, **settings)
    return model, pd.DataFrame(best.rows), best.best_epoch


def learning_rate_schedule(kind: str, learning_rate: float, epochs: int) -> list:
    """Nothing for a constant rate; for cosine, a callback that decays it from the tuned rate towards 0."""
    import math

    import keras

    if kind == "constant":
        return []
    return [
        keras.callbacks.LearningRateScheduler(
            lambda epoch: learning_rate * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        )
    ]


def retrain_runners_up(hypermodel, points, splits, config: dict[str, Any], backup_dir: Path) -> list:
    """The ensemble's other members: each runner-up point retrained as the best one was (not logged, not saved)."""
    members = []
    for rank, hp in enumerate(points, start=2):
        print(f"\nEnsemble: retraining the number {rank} point of the search ({rank} of {len(points) + 1})")
        model, _, _ = retrain(hypermodel, hp, splits, config, backup_dir / f"member{rank}")
        members.append(model)
    return members


def evaluate(model, members: list, splits, config: dict[str, Any]):
    """Thresholds from validation; then, and only then, the single prediction of the test split.

    With ensemble members, the ensemble's probability is the mean of every model's (the best one's
    included), with a threshold of its own, also chosen on validation.
    """
    import numpy as np
    import pandas as pd

    import data
    from evaluation import bootstrap_test_metrics, choose_threshold, classification_metrics

    def probabilities(name: str) -> dict[str, np.ndarray]:
        images = data.to_dataset(splits[name], config["batch_size"])
        # float64, so that predictions.csv holds each float32 probability exactly and reproduces the metrics.
        each = [trained.predict(images, verbose=0)[:, 1].astype(np.float64) for trained in (model, *members)]
        columns = {"p_pneumonia": each[0]}
        if members:
            columns["p_pneumonia_ensemble"] = np.mean(each, axis=0)
        return columns

    validation = probabilities("validation")
    validation_patients = [data.patient_id(path) for path in splits["validation"].files]
    thresholds = {
        column: choose_threshold(splits["validation"].labels, scores, config["threshold"], validation_patients)
        for column, scores in validation.items()
    }
    scores = {"validation": validation, "test": probabilities("test")}

    test_patients = [data.patient_id(path) for path in splits["test"].files]
    test_types = [data.pneumonia_type(path) for path in splits["test"].files]

    def scored(column: str) -> dict[str, Any]:
        result = {
            name: classification_metrics(splits[name].labels, scores[name][column], thresholds[column])
            for name in scores
        }
        # Intervals over resampled test patients, at the threshold validation chose: test is only described.
        result["test"] |= bootstrap_test_metrics(
            splits["test"].labels, scores["test"][column], thresholds[column], test_patients, test_types
        )
        return result

    metrics = scored("p_pneumonia")
    if members:
        metrics["ensemble"] = {"size": 1 + len(members), **scored("p_pneumonia_ensemble")}
    predictions = pd.concat(
        pd.DataFrame(
            {"split": name, "file": map(str, splits[name].files), "label": splits[name].labels, **scores[name]}
        )
        for name in scores
    )
    return metrics, predictions


def find_counterpart(config: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]] | None:
    """The newest finished run of the other kind (search or baseline) with the same protocol."""
    import report

    finished = sorted(
        Path(config["reports_dir"]).glob("*/metrics.json"), key=lambda path: path.stat().st_mtime, reverse=True
    )
    for metrics_file in finished:
        if not report.is_finished(metrics_file.parent):
            continue
        other = json.loads(metrics_file.read_text())
        other_config = read_yaml(metrics_file.with_name("config.yaml"))
        if other.get("run", {}).get("kind") != kind and all(
            other_config.get(key) == config[key] for key in PROTOCOL_KEYS
        ):
            return metrics_file.parent.name, other
    return None


def write_report(
    run_dir, args, config, splits, points, trials, models, history, best_epoch, metrics, predictions, clock
) -> None:
    """Record how the run went, write its files (the best model, then any other ensemble members), and refresh
    the other kind's report to compare with this one."""
    import keras
    import keras_tuner
    import numpy

    import backends
    import data
    import report
    import tuning
    from hypermodel import BASELINE, without_augmentation

    kind = "baseline" if args.baseline else "search"
    if "ensemble" in metrics:
        metrics["ensemble"]["points"] = [tuning.searched_values(hp) for hp in points]
    metrics["run"] = {
        "kind": kind,
        "run_name": config["run_name"],
        "best_epoch": best_epoch,
        "precision": {"policy": config["precision"], "reason": args.precision_reason},
        "backend": config["backend"],
        "baseline_hyperparameters": BASELINE,
        "wall_seconds": clock.total(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": args.command,
        "versions": {
            "python": platform.python_version(),
            config["backend"]: backends.version(),
            "keras": keras.__version__,
            "keras_tuner": keras_tuner.__version__,
            "numpy": numpy.__version__,
        },
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores, {len(backends.gpus())} GPU(s)",
    }
    counterpart = find_counterpart(config, kind)
    try:
        report.write_run(
            run_dir,
            data_summary=data.summary_table(splits),
            trials=trials,
            best_hyperparameters=tuning.searched_values(points[0]),
            history=history,
            metrics=metrics,
            predictions=predictions,
            model=without_augmentation(models[0]),
            counterpart=counterpart,
            skipped_images=data.skipped_table(splits),
            members=[without_augmentation(member) for member in models[1:]],
        )
        if counterpart:
            report.render(run_dir.parent / counterpart[0], (config["run_name"], metrics))
    except OSError as error:
        raise report.ReportError(
            f"cannot write the report in {run_dir} ({error.strerror or error}): free space or fix permissions there and "
            "run the same command again (finished trials are kept)"
        ) from None
    shutil.rmtree(run_dir / RETRAIN_BACKUP, ignore_errors=True)  # the run is finished: nothing left to resume
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
