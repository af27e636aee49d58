"""How long the rest of a search will take, from the trials it has finished so far.

The estimate is deliberately simple, and the header says what it rests on ("from 3 trials"):

    remaining trials x expected epochs per trial x seconds per epoch

- seconds per epoch: the finished trials' seconds over their epochs, so a long trial weighs more;
- expected epochs per trial: the mean epochs the finished trials ran (early stopping ends some
  early), at most the per-trial maximum;
- remaining trials: the planned trials less those already ended (failed ones included: they used
  up a place in max_trials), so the trial about to start counts as remaining.

What it does not know: Hyperband's later rounds train longer than its first ones, so early in a
Hyperband search the estimate is low; trials that run side by side on several workers finish
sooner than this serial sum; and a trial's cost depends on its point (more filters, more time),
which only averages out over several trials.

Before trial 1, `start_estimate` gives the whole run's expected wall time from what runs already
recorded (the run being resumed, or a finished run beside it with the same cost-setting keys), and
`cpu_budget_hint` tells a CPU user what a run costs and how to bound it (`--time-budget`, budget.py).

One concern: how long a run will take. It imports PyYAML, the standard library, budget.py and runs.py (run
folders) only (no Keras, no pandas, no clock), so the trial header (tuning.py) and search.py's start can call it at no cost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from budget import final_retrains, format_duration
from runs import CONFIG_FILE, REPORT_FILE, RunFolder, is_synthetic


def _pairs(seconds: Sequence[float | None], epochs: Sequence[float | None]) -> list[tuple[float, float]]:
    """The (seconds, epochs) of trials that recorded both; a trial without them says nothing of the rate."""
    known = [(s, e) for s, e in zip(seconds, epochs) if s is not None and e is not None]
    return [(float(s), float(e)) for s, e in known if math.isfinite(s) and math.isfinite(e) and e > 0]


def _seconds_per_epoch(pairs: list[tuple[float, float]]) -> float:
    """The finished trials' seconds per epoch, their total seconds over their total epochs."""
    return sum(s for s, _ in pairs) / sum(e for _, e in pairs)


def remaining_seconds(
    finished_seconds: Sequence[float | None],
    finished_epochs: Sequence[float | None],
    planned_trials: int | None,
    max_epochs: int | None = None,
    trials_ended: int | None = None,
) -> float | None:
    """Expected seconds until the search ends; None while no trial has finished or the plan is unknown.

    `finished_seconds` and `finished_epochs` are the completed trials' wall seconds and epochs run
    (pairs with a missing value are skipped); `trials_ended` counts every trial that ended, failed
    ones too (default: the completed ones); `max_epochs` caps the expected epochs per trial.
    """
    pairs = _pairs(finished_seconds, finished_epochs)
    if not pairs or planned_trials is None:
        return None
    ended = len(pairs) if trials_ended is None else trials_ended
    remaining_trials = max(planned_trials - ended, 0)
    seconds_per_epoch = _seconds_per_epoch(pairs)
    epochs_per_trial = sum(e for _, e in pairs) / len(pairs)
    if max_epochs:
        epochs_per_trial = min(epochs_per_trial, max_epochs)
    return remaining_trials * epochs_per_trial * seconds_per_epoch


# A finished run beside this one says what a trial and an epoch cost when these keys of its config.yaml match, and it
# read the same data: the same kind (the chest X-rays or generated images) and the same image counts.
SEARCH_KEYS = ("tuner", "epochs", "image_size", "color_mode", "precision")
RETRAIN_KEYS = ("image_size", "color_mode", "precision")
ENDED = ("COMPLETED", "FAILED", "INVALID", "STOPPED")  # Keras Tuner's statuses of a trial that will not run again


def start_estimate(
    run_dir: Path | str, config: Mapping[str, Any], counts: Mapping[str, int], search: bool = True
) -> str | None:
    """The whole run's expected wall time as one line, before trial 1; None when nothing recorded allows it.

    `config` holds the run's settings as config.yaml writes them (`Settings.as_dict()`, precision settled), and
    `counts` the images it reads (data.image_counts); an earlier run prices it only if it read the same data.
    The search: planned trials (max_trials, else as many as the recorded run ran) x seconds per trial, from
    the run's own finished trials in tuner/ when it is resumed, else from the newest finished run beside it
    (same reports folder) whose config.yaml has the same SEARCH_KEYS. The retrain: final_epochs x the mean
    epoch seconds of such a run's history.csv (RETRAIN_KEYS alike), once per point retrained.
    """
    run_dir = Path(run_dir)
    others = _comparable_runs(run_dir, config, SEARCH_KEYS if search else RETRAIN_KEYS, counts)
    parts, total, resumed = [], 0.0, False
    # Racing drops repeats of the challengers it finds clearly worse: with repeats the retrains are a bound.
    bound = search and int(config.get("repeats") or 1) > 1
    if search:
        found = _search_part(run_dir, config, others)
        if found is None:
            return None
        seconds, text, resumed = found
        parts.append(text)
        total += seconds
    retrain = next(((other, rate) for other in others if (rate := _epoch_seconds(other)) is not None), None)
    if retrain is None and not search:
        return None
    if retrain is None:
        parts.append(
            f"the retrain is not included: no finished run at {config['image_size']} px {config['color_mode']} "
            f"in {config['precision']} beside this one to go by"
        )
    else:
        retrains = _retrains(config) if search else 1  # a baseline run trains its one model, whatever the keys say
        total += retrains * config["final_epochs"] * retrain[1]
        times = f"{'up to ' if bound else ''}{retrains} retrains x " if retrains > 1 else ""
        parts.append(
            f"{'then ' if search else ''}{times}{config['final_epochs']} retrain epochs x "
            f"{format_duration(retrain[1])} from {retrain[0].name}'s history.csv"
        )
    about = "at most about" if bound and retrain is not None else "about"
    return f"Expected {'time left' if resumed else 'wall time'}: {about} {format_duration(total)} ({'; '.join(parts)})"


def _retrains(config: Mapping[str, Any]) -> int:
    """How many full-length retrains a recorded search's final stage runs at most (budget.final_retrains)."""
    return final_retrains(int(config.get("finalists") or 0), int(config.get("repeats") or 1))


def _search_part(run_dir: Path, config: Mapping[str, Any], others: list[Path]) -> tuple[float, str, bool] | None:
    """The search's expected seconds, how they were reckoned, and whether they rest on the run being resumed."""
    seconds, epochs, ended = _tuner_trials(run_dir / "tuner")
    source, resumed = "this run's finished trials", bool(_pairs(seconds, epochs))
    recorded = [(other, found) for other in others if _pairs(*(found := _recorded_trials(other))[:2])]
    if not resumed:
        if not recorded:
            return None
        (other, (seconds, epochs, _)), ended = recorded[0], 0
        source = f"{other.name}'s trials.csv"
    planned = config.get("max_trials") or (recorded[0][1][2] if recorded else None)
    remaining = remaining_seconds(seconds, epochs, planned, config.get("epochs"), trials_ended=ended)
    if remaining is None:
        return None
    left = max(planned - ended, 0)
    per_trial = remaining / left if left else 0.0
    trials = f"{left} of {planned} trials left" if resumed else f"{planned} trials"
    return remaining, f"{trials} x {format_duration(per_trial)} from {source}", resumed


def _comparable_runs(
    run_dir: Path, config: Mapping[str, Any], keys: Sequence[str], counts: Mapping[str, int]
) -> list[Path]:
    """Finished runs beside `run_dir` (report.md written) whose config.yaml matches `config` on `keys` and that read
    the same data (`counts` images, real or generated alike), newest first."""
    found = []
    for config_file in run_dir.parent.glob(f"*/{CONFIG_FILE}"):
        folder = RunFolder(config_file.parent)
        if folder.path.resolve() == run_dir.resolve() or not folder.is_finished():
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


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _recorded_trials(run_dir: Path) -> tuple[list[float | None], list[float | None], int]:
    """A finished search's completed trials (seconds, epochs run) from trials.csv, and how many trials it ran."""
    rows = RunFolder(run_dir).trial_rows()
    done = [row for row in rows if row.get("status") == "COMPLETED"]
    return [_number(row.get("seconds")) for row in done], [_number(row.get("epochs_run")) for row in done], len(rows)


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


def _tuner_trials(tuner_dir: Path) -> tuple[list[float | None], list[float | None], int]:
    """The run being resumed: its completed trials' (seconds, epochs run) from Keras Tuner's trial.json files, and
    how many trials ended (failed ones too)."""
    ended = _ended_trial_states(tuner_dir)
    costs = [_cost(trial) for trial in ended if trial["status"] == "COMPLETED"]
    return [seconds for seconds, _ in costs], [epochs for _, epochs in costs], len(ended)


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


def recorded_trainings(
    run_dir: Path, config: Mapping[str, Any], counts: Mapping[str, int], resumed: bool = True
) -> tuple[list[tuple[dict, float, float]], str]:
    """What this machine has trained at this run's image size, colour and precision on the same data: (point,
    epochs, seconds) of the run's own finished trials when it is resumed, else of the newest finished run beside it
    (its trials and its retrain epochs), and where they come from; ([], "") when there is none. A run started afresh
    (`resumed` false; --overwrite) has no trials of its own, whatever its folder still holds."""
    own = _tuner_points(run_dir / "tuner") if resumed else []
    if own:
        return own, f"this run's {len(own)} finished trials"
    for other in _comparable_runs(run_dir, config, RETRAIN_KEYS, counts):
        found = _recorded_points(other)
        if found:
            return found, f"{other.name}'s trials and retrain"
    return [], ""


def _value(text: Any) -> Any:
    """A trials.csv cell as the point's value: booleans and numbers back from their text."""
    if text in ("True", "False"):
        return text == "True"
    number = _number(text)
    return text if number is None else number


def _recorded_points(run_dir: Path) -> list[tuple[dict, float, float]]:
    """A finished run's completed trials from trials.csv and its retrain's epochs from history.csv, each with
    its point (the retrain's from best_hyperparameters.yaml)."""
    found = []
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
        found.append((point, 1.0, epoch_seconds))
    return found


def _tuner_points(tuner_dir: Path) -> list[tuple[dict, float, float]]:
    """The run being resumed: its completed trials' (point, epochs run, seconds) from Keras Tuner's trial.json."""
    found = []
    for trial in _ended_trial_states(tuner_dir):
        seconds, epochs = _cost(trial)
        if trial["status"] == "COMPLETED" and seconds and epochs:
            found.append((trial["hyperparameters"]["values"], epochs, seconds))
    return found


def start_lines(
    run_dir: Path, settings: dict[str, Any], counts: Mapping[str, int], gpus: int, search: bool, default_protocol: bool
) -> list[str]:
    """What a run prints before trial 1: for the default protocol on a CPU without a budget, what it costs and how
    to bound it; and, without a budget, its expected wall time, or why there is none yet."""
    budget = settings.get("time_budget")
    if budget:  # its plan says what will run; an estimate of the unbounded run would contradict it
        return []
    estimate = start_estimate(run_dir, settings, counts, search=search) or (
        "Expected wall time: not known yet: no finished run on the same data and settings beside this one to price "
        "it from" + ("; each trial's header gives an ETA once a trial has finished" if search else "")
    )
    return [line for line in (cpu_budget_hint(gpus, default_protocol, budget), estimate) if line]
