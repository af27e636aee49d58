"""Tune a chest X-ray pneumonia CNN with Keras Tuner and report on the held-out test split.

    python search.py                    # the default protocol: search, finalists retrained 45 epochs, report
    python search.py --time-budget 1h   # the same, fitted into an hour
    python search.py --smoke            # the whole pipeline in under a minute, on generated images
    python search.py --baseline         # the notebook's CNN under its own settings, the same kind of report

The test split is predicted once, after every choice (trials, checkpoint, threshold) was
made on the validation split carved from train.

This module is the command line and the flow: it settles what the run is (pipeline/start.py's `resolve_run`),
then hands each step to its module: data.py, training.py, final_model.py, runs.py and report.py.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import budget
import config
import runs
from budget import Planner
from config import BACKENDS, PRECISIONS, ROLES, TUNERS, Settings
from errors import ConfigError, RunFilesError, UserError
from pipeline import eta
from pipeline.context import RunContext
from pipeline.start import Run, resolve_run
from runtime.interrupt import CTRL_C

if TYPE_CHECKING:
    from data import Splits

# Heavy modules (Keras and its backend, Keras Tuner, matplotlib) are imported inside the steps that
# use them, so `--help` and config mistakes answer at once, and Keras loads the backend chosen.


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python search.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    clock = runs.Stopwatch()
    previous_handler = signal.signal(signal.SIGINT, CTRL_C.handle)
    sys.unraisablehook = CTRL_C.unraisable
    try:
        run = resolve_run(args, command)
        from pipeline.final_model import train_and_evaluate

        context = set_up(run, args.overwrite, clock)
        candidates, trials = find_candidates(run, context)
        if candidates is None:  # a distributed worker: the chief retrains the best and reports
            return 0
        final = train_and_evaluate(context, candidates)
        write_report(run, context, trials, final)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nInterrupted: finished trials and retrain epochs are kept; run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    finally:
        clock.close()
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = sys.__unraisablehook__
        CTRL_C.reset()
    return 0


def set_up(run: Run, overwrite: bool, clock: runs.Stopwatch) -> RunContext:
    """The data, the budget's planner and the run folder, in the order that refuses a finished or changed run, or a
    budget too small, before anything is written: a refusal leaves nothing behind, so the advice it prints works as
    printed. Returns what every later stage shares."""
    import data
    from runtime import backends

    settings, hypermodel = run.settings, run.hypermodel
    resuming = runs.will_resume(settings, overwrite)
    splits = load_data(settings)
    counts = data.image_counts(splits)
    recorded = eta.recorded_trainings(run.dir, settings.as_dict(), counts, backends.machine(), resuming)
    planner = plan_run(run, hypermodel, splits, clock, recorded, resuming)
    run_dir = runs.prepare_run_dir(settings, overwrite)
    if planner is not None:  # the chief times the run; a worker only trains trials
        # A kill loses the time since the clock's last save: under a time budget that time would be spent twice.
        clock.keep_in(run_dir, every=5.0 if settings.time_budget else 60.0)
        print_estimates(run, planner, recorded)
    clock.lap("data")
    return RunContext(settings, hypermodel, splits, run_dir, clock, planner)


def find_candidates(run: Run, context: RunContext) -> tuple[list | None, Any]:
    """The points the final stage retrains and the trials table: the baseline's point alone for --baseline, else
    the search's (None on a distributed worker, whose chief retrains and reports)."""
    from pipeline import training

    if run.kind == "baseline":
        from hypermodel import baseline_hyperparameters

        return [training.Candidate("baseline", baseline_hyperparameters(), is_baseline=True)], None
    candidates, trials = training.search(context)
    context.clock.lap("search")
    return candidates, trials


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Tune the chest X-ray pneumonia CNN with Keras Tuner, retrain the best and report on held-out test.",
        epilog="Defaults come from config.yaml; flags override them. Reports land in REPORTS_DIR/RUN_NAME/.",
    )
    parser.add_argument("--config", type=Path, help="YAML file with settings to use instead of config.yaml's")
    parser.add_argument(
        "--data-dir", help="folder holding train/ and test/ (default: data/chest_xray, downloaded if absent)"
    )
    parser.add_argument("--synthetic", action="store_true", help="run on a small generated dataset")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the whole pipeline in under a minute on generated images (configs/smoke.yaml)",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="no search: train the notebook's CNN under its own settings (80 x 80 RGB, constant rate)",
    )
    parser.add_argument("--tuner", choices=TUNERS, help="search algorithm")
    parser.add_argument("--max-trials", type=int, help="most trials to run (hyperband: caps its schedule)")
    parser.add_argument("--epochs", type=int, help="most epochs per trial")
    parser.add_argument("--final-epochs", type=int, help="epochs of the final retrain (default 45)")
    parser.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="end the whole run within this time, e.g. 30m, 1h30m, 600s: fewer trials and finalists to fit",
    )
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
    distributed = parser.add_argument_group("distributed search (docs/distributed.md)")
    distributed.add_argument("--role", choices=ROLES, help="chief serves the search, workers run its trials")
    distributed.add_argument("--oracle-address", metavar="HOST:PORT", help="where the chief listens for workers")
    distributed.add_argument("--worker-id", help="this worker's name, unique per worker (reuse it on restart)")
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        default=None,  # None: config.yaml's skip_bad_images decides
        help="leave out images that do not decode (listed in the report) instead of stopping",
    )
    return parser.parse_args(argv)


def load_data(settings: Settings) -> Splits:
    """Split the data by patient and decode it once."""
    import data

    root = Path(settings.data_dir)
    splits = data.load_splits(root, settings.validation_fraction, settings.seed)
    print(f"Data: {root}")
    print(data.summary_table(splits).to_string())
    shared = splits.test.patients & (splits.train.patients | splits.validation.patients)
    if shared:
        print(
            f"Note: {len(shared)} file-name patient ids of train/validation also occur in Kaggle's test split (docs/protocol.md)."
        )
    data.decode_splits(splits, settings.image_size, settings.color_mode, skip_bad=settings.skip_bad_images)
    skipped = data.skipped_table(splits)
    if len(skipped):
        print(
            f"Warning: left out {len(skipped)} image(s) that could not be decoded (skip_bad_images); "
            "the report lists them in skipped_images.csv",
            file=sys.stderr,
        )
    return splits


# What makes a run the default protocol's cost, which the CPU note quotes.
PROTOCOL_COST_KEYS = ("tuner", "max_trials", "epochs", "final_epochs", "finalists", "repeats", "image_size")


def print_estimates(run: Run, planner: Planner, recorded: eta.Recorded) -> None:
    """Before trial 1: how to bound a long run on a CPU, and the expected wall time at the planner's prices, each
    from runs on the same data only."""
    from runtime import backends

    settings = run.settings
    defaults = config.load()
    default_protocol = (
        run.kind == "search"
        and not runs.is_synthetic(settings.data_dir)
        and all(getattr(settings, key) == getattr(defaults, key) for key in PROTOCOL_COST_KEYS)
    )
    for line in eta.start_lines(planner, recorded, len(backends.gpus()), run.kind == "search", default_protocol):
        print(line)


def plan_run(
    run: Run, hypermodel: Any, splits: Splits, clock: runs.Stopwatch, recorded: eta.Recorded, resuming: bool
) -> Planner | None:
    """The run's planner, one price model for the ETA and the time budget: prices from what this machine recorded
    on the same data, else (with a budget) a timed epoch of the baseline's point, else none until a trial has
    finished; for a fresh run, a budget too small for the baseline refused. None on a distributed worker."""
    settings = run.settings
    if settings.distributed.role == "worker":
        return None
    from hypermodel import BASELINE
    from pipeline import training

    planner = training.make_planner(hypermodel, settings, recorded, lambda: clock.total()["total"])
    if planner.price is None and settings.time_budget:
        seconds = training.time_one_epoch(hypermodel, splits, settings)
        planner.price = budget.Price(seconds / hypermodel.work(BASELINE), "a timed epoch of the baseline's point")
    # Refused up front only: a resumed run has spent part of its budget already, and its plan shrinks to the rest.
    refusal = None if resuming or not settings.time_budget else planner.too_small(run.kind == "search")
    if refusal:
        raise ConfigError(refusal)
    return planner  # a search prints its plan before each trial (training.BudgetGate)


def run_record(run: Run, best_epoch: int, clock: runs.Stopwatch) -> dict[str, Any]:
    """metrics.json's "run": what ran, where, how long, and the command that reproduces it."""
    from hypermodel import BASELINE
    from runtime import backends, compilation

    # What XLA built in this process (a resumed run counts only its own part), on JAX.
    compiled = {"compilation": compilation.COUNTS.as_dict()} if run.settings.backend == "jax" else {}
    return {
        "kind": run.kind,
        "run_name": run.settings.run_name,
        "best_epoch": best_epoch,
        "precision": {"policy": run.settings.precision, "reason": run.precision_reason},
        "backend": run.settings.backend,
        "baseline_hyperparameters": BASELINE,
        "wall_seconds": clock.total(),
        "processes": clock.processes,  # above 1 for a resumed run; wall_seconds adds up all of them
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": run.command,
        **compiled,
        **backends.environment(),
    }


def write_report(run: Run, context: RunContext, trials: Any, final: Any) -> None:
    """Write the run's files (the model, then the tables) and its report, and refresh the
    other kind's report to compare with this one."""
    import data
    from reporting import report

    splits, planner = context.splits, context.time_budget
    final.metrics["run"] = run_record(run, final.best_epoch, context.clock)
    if planner is not None:
        final.metrics["budget"] = planner.budget.record()
    counterpart = runs.find_counterpart(run.settings, run.kind)
    result = runs.RunResult(
        run.dir, run.settings, data.summary_table(splits), trials, final.point, final.history, final.metrics,
        final.predictions, counterpart, skipped_images=data.skipped_table(splits),
    )  # fmt: skip
    try:
        runs.save_model(run.dir, final.model)
        result.save()
        report.render(run.dir, counterpart)
        if counterpart:
            report.render(run.dir.parent / counterpart[0], (run.settings.run_name, final.metrics))
    except OSError as error:
        raise RunFilesError(
            f"cannot write the report in {run.dir} ({error.strerror or error}): free space or fix permissions there "
            "and run the same command again (finished trials are kept)"
        ) from None
    shutil.rmtree(run.dir / runs.RETRAIN_BACKUP, ignore_errors=True)  # the run is finished: nothing to resume
    print(report.console_summary(run.dir, final.metrics["test"]))
    if run.settings.backend == "jax":
        from runtime import compilation

        print(compilation.summary_line())


if __name__ == "__main__":
    sys.exit(main())
