"""How long a run will take: what this machine has recorded training on the same data, which prices it.

Every estimate a run prints comes from one price model, budget.Planner's (seconds per epoch = scale x the work of
the point trained, budget.point_work): the expected wall time before trial 1, each trial header's ETA and, under a
time budget, the plan. This module finds what prices it: the run's own finished trials when it is resumed, else the
newest finished run beside it (same reports folder) that ran on this machine, at the same image size, colour and
precision, and read the same data (its trials and its retrain epochs). It prints the line before trial 1, and, for a run of the default protocol
on a CPU without a budget, what such a run costs and how to bound it (`--time-budget`, budget.py).

One concern: how long a run will take. It imports PyYAML, the standard library, budget.py and runs.py (run
folders) only (no Keras, no pandas, no clock), so search.py's start can call it at no cost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

from runs import CONFIG_FILE, REPORT_FILE, RunFolder, is_synthetic, plural

if TYPE_CHECKING:
    from budget import Planner


# A finished run beside this one prices this one when these keys of its config.yaml match (the work model prices any
# point: budget.point_work), and it read the same data: the same kind (the chest X-rays or generated images) and the
# same image counts.
RETRAIN_KEYS = ("image_size", "color_mode", "precision")
ENDED = ("COMPLETED", "FAILED", "INVALID", "STOPPED")  # Keras Tuner's statuses of a trial that will not run again


def _comparable_runs(
    run_dir: Path, config: Mapping[str, Any], keys: Sequence[str], counts: Mapping[str, int], machine: str
) -> list[Path]:
    """Finished runs beside `run_dir` (report.md written) that ran on `machine`, whose config.yaml matches `config`
    on `keys` and that read the same data (`counts` images, real or generated alike), newest first."""
    found = []
    for config_file in run_dir.parent.glob(f"*/{CONFIG_FILE}"):
        folder = RunFolder(config_file.parent)
        if folder.path.resolve() == run_dir.resolve() or not folder.is_finished() or _machine(folder) != machine:
            continue
        try:
            recorded = yaml.safe_load(config_file.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(recorded, dict) and all(recorded.get(key) == config.get(key) for key in keys):
            generated = is_synthetic(str(recorded.get("data_dir"))) == is_synthetic(str(config.get("data_dir")))
            if generated and folder.image_counts() == dict(counts):
                found.append(folder.path)
    return sorted(found, key=lambda folder: RunFolder(folder).file(REPORT_FILE).stat().st_mtime, reverse=True)


def _machine(folder: RunFolder) -> str | None:
    """The machine a finished run recorded (a copied run, such as the committed reports/example, names another)."""
    try:
        return folder.metrics()["run"]["machine"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _ended_trial_states(tuner_dir: Path) -> list[dict[str, Any]]:
    """Keras Tuner's trial.json of every trial that ended (failed ones too), in trial order; unreadable ones left out."""
    states = []
    for path in sorted(tuner_dir.glob("*/trial_*/trial.json")):
        try:
            trial = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if trial.get("status") in ENDED:
            states.append(trial)
    return states


def _cost(trial: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """A completed trial's recorded (seconds, epochs run) in its trial.json."""
    metrics = (trial.get("metrics") or {}).get("metrics") or {}
    return _last_value(metrics, "trial_seconds"), _last_value(metrics, "epochs_run")


def _last_value(metrics: Mapping[str, Any], name: str) -> float | None:
    """A Keras Tuner metric's last recorded value in trial.json, or None."""
    try:
        return _number(metrics[name]["observations"][-1]["value"][-1])
    except (KeyError, IndexError, TypeError):
        return None


def _epoch_seconds(run_dir: Path) -> float | None:
    """The mean wall seconds of a finished run's retrain epochs (history.csv's `seconds`), or None."""
    values = [_number(row.get("seconds")) for row in RunFolder(run_dir).history_rows()]
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


# What the default protocol cost a run on the 2-core CPU in mixed bfloat16 (docs/results.md, seeds 49-51: 2.35,
# 1.78 and 2.11 hours, seed 51's counted over both its processes).
CPU_RUN_HOURS = "1.8 to 2.4 hours"


def cpu_budget_hint(gpus: int, default_protocol: bool, time_budget: str | None) -> str | None:
    """On a machine without a GPU, for a run of the default protocol on the real data without a time budget, one
    line saying what such a run costs and how to bound it. Other runs' costs are not what it quotes."""
    if gpus or not default_protocol or time_budget:
        return None
    return (
        f"Note: no GPU. A run of the default protocol took {CPU_RUN_HOURS} on 2 CPU cores in mixed bfloat16 "
        "(docs/results.md). `--time-budget 1h` (or 30m, 1h30m, ...) fits the whole run into that time, with fewer "
        "trials and finalists: for example `python search.py --time-budget 1h`."
    )


class Recorded(NamedTuple):
    """What this machine has trained that prices a run: (point, epochs, seconds) of each training, where they come
    from, the recorded trials' mean epochs (None without trials) and how many of the run's own trials had ended
    (failed ones too; 0 unless it is resumed)."""

    trainings: list[tuple[dict, float, float]]
    source: str
    trial_epochs: float | None = None
    trials_ended: int = 0


def _mean_epochs(trainings: Sequence[tuple[dict, float, float]]) -> float | None:
    return sum(epochs for _, epochs, _ in trainings) / len(trainings) if trainings else None


def recorded_trainings(
    run_dir: Path, config: Mapping[str, Any], counts: Mapping[str, int], machine: str, resumed: bool = True
) -> Recorded:
    """What this machine (`machine`, as metrics.json records it) has trained at this run's image size, colour and
    precision on the same data: the run's own finished trials when it is resumed, else the newest finished run beside
    it that ran here (its trials and its retrain epochs); nothing when there is none. A run started afresh (`resumed` false; --overwrite) has no trials of its own,
    whatever its folder still holds."""
    ended = _ended_trial_states(run_dir / "tuner") if resumed else []
    own = _tuner_points(ended)
    if own:
        return Recorded(own, f"this run's {plural(len(own), 'finished trial')}", _mean_epochs(own), len(ended))
    for other in _comparable_runs(run_dir, config, RETRAIN_KEYS, counts, machine):
        trials, retrain = _recorded_points(other)
        if trials or retrain:
            return Recorded([*trials, *retrain], f"{other.name}'s trials and retrain", _mean_epochs(trials))
    return Recorded([], "")


def _value(text: Any) -> Any:
    """A trials.csv cell as the point's value: booleans and numbers back from their text."""
    if text in ("True", "False"):
        return text == "True"
    number = _number(text)
    return text if number is None else number


def _recorded_points(run_dir: Path) -> tuple[list[tuple[dict, float, float]], list[tuple[dict, float, float]]]:
    """A finished run's completed trials from trials.csv, and its retrain's mean epoch from history.csv (one
    epoch, or none), each with its point (the retrain's from best_hyperparameters.yaml)."""
    found, retrain = [], []
    for row in RunFolder(run_dir).trial_rows():
        seconds, epochs = _number(row.get("seconds")), _number(row.get("epochs_run"))
        if row.get("status") == "COMPLETED" and seconds and epochs:
            found.append(({key: _value(value) for key, value in row.items()}, epochs, seconds))
    epoch_seconds = _epoch_seconds(run_dir)
    try:
        point = RunFolder(run_dir).best_point()
    except (OSError, yaml.YAMLError):
        point = None
    if epoch_seconds and isinstance(point, dict):
        retrain.append((point, 1.0, epoch_seconds))
    return found, retrain


def _tuner_points(ended: Sequence[Mapping[str, Any]]) -> list[tuple[dict, float, float]]:
    """The run being resumed: its completed trials' (point, epochs run, seconds) from Keras Tuner's trial.json."""
    found = []
    for trial in ended:
        seconds, epochs = _cost(trial)
        if trial["status"] == "COMPLETED" and seconds and epochs:
            found.append((trial["hyperparameters"]["values"], epochs, seconds))
    return found


def start_lines(planner: Planner, recorded: Recorded, gpus: int, search: bool, default_protocol: bool) -> list[str]:
    """What a run prints before trial 1: for the default protocol on a CPU without a budget, what it costs and how
    to bound it; and, without a budget, its expected wall time at the planner's prices, or why there is none yet."""
    if planner.budget.limited:  # its plan says what will run; an estimate of the unbounded run would contradict it
        return []
    header = "; each trial's header gives an ETA once a trial has finished" if search else ""
    if planner.price is None:
        estimate = (
            "Expected wall time: not known yet: no finished run on the same data, image size, colour and precision "
            f"beside this one to price it from{header}"
        )
    else:
        estimate = planner.start_line(search, recorded.trial_epochs, recorded.trials_ended) or (
            f"Expected wall time: not known yet: Hyperband's schedule sets the number of trials{header}"
        )
    return [line for line in (cpu_budget_hint(gpus, default_protocol, None), estimate) if line]
