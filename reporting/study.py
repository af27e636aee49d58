"""A finished search as an Optuna study: a file optuna-dashboard opens, and what mattered.

Keras Tuner ran the search; Optuna only reads it back. `to_study` turns trials.csv into one
Optuna trial per row, each with the time it started and ended (`trial_times`), `write_study`
keeps it as `study.db` beside the report, and `importances` asks two of Optuna's evaluators
(fANOVA and PED-ANOVA) which hyperparameters moved the validation objective, with a bootstrap
of fANOVA to show how much that answer moves:

    optuna-dashboard sqlite:///reports/<run>/study.db

One concern: the search read back as an Optuna study. It imports numpy, pandas, PyYAML, config.py (how each
hyperparameter is drawn), runs.py (reading trials.csv) and tables.py (which columns are hyperparameters) and,
inside its functions only, Optuna, so importing it (and search.py) stays instant.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import config
import runs
from config import TUNER_PREFIX
from reporting.tables import hyperparameter_columns, maximised, plural

if TYPE_CHECKING:
    import optuna

# Fewer completed trials than these and an importance says nothing (PED-ANOVA compares the best
# five trials with the rest, so it needs twice as many).
MIN_TRIALS = 8
MIN_TRIALS_PED_ANOVA = 10
TOP_TRIALS_PED_ANOVA = 5
IMPORTANCE_COLUMNS = ["parameter", "fanova", "fanova_low", "fanova_high", "ped_anova", "rank"]


def read_run(run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any], str]:
    """A finished run's trials.csv (trial ids kept as written), its search space and its objective."""
    folder = runs.RunFolder(run_dir)
    config = folder.config()
    return folder.trials(), config["search_space"], config["objective"]


def space_key(parameter: str) -> str:
    """The search_space key a hyperparameter draws from: filters_2 from `filters`, units_1 from `dense_units`."""
    declared = config.hyperparameter(parameter)
    return parameter if declared is None else declared.key


def is_baseline_trial(trial_id: Any) -> bool:
    """Trial 0 ("00", "0000") evaluates the baseline: BaselineFirst puts it first."""
    try:
        return int(str(trial_id)) == 0
    except ValueError:
        return False


def distributions(search_space: dict[str, Any]) -> dict[str, optuna.distributions.BaseDistribution]:
    """The Optuna distribution of every hyperparameter config.HYPERPARAMETERS draws from the search space (as in
    config.yaml; an older run's lacks some keys), one per possible layer for the per-layer ones, as hypermodel.py
    declares them to Keras Tuner."""
    result: dict[str, Any] = {}
    for parameter in config.HYPERPARAMETERS:
        if parameter.key in search_space and (parameter.per is None or parameter.per in search_space):
            drawn = _distribution(parameter.kind, search_space[parameter.key])
            result.update(dict.fromkeys(parameter.names(search_space), drawn))
    return result


def _distribution(kind: str, bounds: Any) -> optuna.distributions.BaseDistribution:
    """Optuna's distribution for a hyperparameter of `kind` (config.KINDS) over its search_space entry."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if kind in config.RANGE_KINDS:
        low, high = bounds["min"], bounds["max"]
        if kind == "int":
            return IntDistribution(low, high)
        return FloatDistribution(low, high, log=kind == "log", step=bounds["step"] if kind == "stepped" else None)
    return CategoricalDistribution(bounds)


def _cast(value: Any, distribution: Any) -> Any:
    """A trials.csv cell as the distribution's own type: 128.0 -> 128, "False" -> False, 0.30000000000000004 -> 0.3."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        for choice in distribution.choices:
            if isinstance(choice, bool) or isinstance(value, bool | np.bool_):
                if str(value).strip().lower() == str(choice).lower():
                    return choice
            elif isinstance(choice, int | float):
                with contextlib.suppress(TypeError, ValueError):
                    if float(value) == choice:
                        return choice
            elif str(value) == str(choice):
                return choice
        raise ValueError(f"{value!r} is not one of {list(distribution.choices)}")
    if isinstance(distribution, IntDistribution):
        return int(round(float(value)))
    value = float(value)
    if distribution.step:  # onto the grid: Keras Tuner adds steps in floating point (off it: Optuna refuses it)
        on_grid = distribution.low + round((value - distribution.low) / distribution.step) * distribution.step
        value = round(on_grid, 12) if math.isclose(value, on_grid, abs_tol=1e-9) else value
    return value


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""


def _user_attrs(row: pd.Series) -> dict[str, Any]:
    """What the report knows of a trial beyond its point: cost, Keras Tuner's id and status, the baseline."""

    def number(name: str, kind: type) -> Any:
        value = row.get(name)
        return kind(float(value)) if _present(value) else None  # None, not NaN: the file is read as JSON

    attrs = {
        "trial_id": str(row["trial_id"]),
        "status": str(row["status"]),
        "seconds": number("seconds", float),
        "epochs_run": number("epochs_run", int),
        "last_objective": number("last_objective", float),  # the last epoch's score (runs since it was recorded)
        "baseline": is_baseline_trial(row["trial_id"]),
    }
    if _present(row.get("error")):
        attrs["error"] = str(row["error"])
    attrs.update({name: number(name, int) for name in row.index if name.startswith(TUNER_PREFIX)})
    return attrs


def _instant(value: Any) -> datetime | None:
    """A recorded moment (ISO 8601, or Unix seconds) as naive local time, as Optuna stamps the trials it runs."""
    if not _present(value):
        return None
    try:
        moment = datetime.fromtimestamp(float(value))  # Unix seconds, to local time
    except ValueError:
        moment = datetime.fromisoformat(str(value))
    return moment.astimezone().replace(tzinfo=None)  # to local time; a naive moment is taken as local already


def search_ended(run: dict[str, Any]) -> datetime | None:
    """When the search ended, from metrics.json's "run": the run's `finished` less the phases timed after the search
    (the retrains); None where it has no search or no time. It is no earlier than the real end: a pause before a
    resume is not timed."""
    phases = list(run.get("wall_seconds", {}))
    try:
        finished = datetime.strptime(str(run["finished"]), "%Y-%m-%d %H:%M:%S")  # search.py's local time
    except (KeyError, ValueError):
        return None
    if "search" not in phases:
        return None
    after = [phase for phase in phases[phases.index("search") + 1 :] if phase != "total"]
    return finished - timedelta(seconds=sum(run["wall_seconds"][phase] for phase in after))


def trial_times(
    trials: pd.DataFrame, search_ended: datetime | None = None
) -> tuple[list[tuple[datetime, datetime]], str]:
    """Each trial's start and end, in trials.csv's (trial) order, and a sentence on where they come from.

    Runs since tuning.py records them have each trial's wall-clock `started` and `ended`. Older runs kept only a
    trial's `seconds`: their trials are laid end to end, backwards from the next trial's start (the last one's from
    `search_ended`, else now), each starting its seconds before it ended. So their durations are real and their
    moments approximate: Keras Tuner's minutes between trials are left out, and a distributed search's trials,
    which ran side by side, are put one after the other. A trial that recorded nothing (a failed one) lasts 0 s.
    """
    times: list[tuple[datetime, datetime]] = []
    recorded = 0
    next_start = search_ended or datetime.now()
    for _, row in trials.iloc[::-1].iterrows():
        start, end = _instant(row.get("started")), _instant(row.get("ended"))
        if start is None or end is None:
            seconds = float(row["seconds"]) if _present(row.get("seconds")) else 0.0
            end = next_start
            start = end - timedelta(seconds=seconds)  # derived: only the duration was recorded
        else:
            recorded += 1
        times.append((start, end))
        next_start = min(next_start, start)
    if recorded == len(trials):
        source = "each trial's start and end as recorded by the search"
    else:
        source = (
            f"{len(trials) - recorded} of {len(trials)} trials recorded only their seconds: they are laid end to end "
            "in trial order, ending where the next trial started or the search ended, so their durations are real "
            "and their start times approximate"
        )
    return times[::-1], source


def _frozen_trial(
    row: pd.Series, columns: list[str], space: dict[str, Any], ran: tuple[datetime, datetime]
) -> optuna.trial.FrozenTrial:
    import optuna

    params, used = {}, {}
    for name in columns:
        if name in space and _present(row[name]):  # empty: a conditional hyperparameter this trial did not use
            try:
                params[name] = _cast(row[name], space[name])
            except ValueError as error:
                raise ValueError(f"trial {row['trial_id']}, {name}: {error}") from None
            used[name] = space[name]
    value = float(row["objective"]) if _present(row["objective"]) else math.nan
    complete = row["status"] == "COMPLETED" and math.isfinite(value)
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.FAIL,
        value=value if complete else None,
        params=params,
        distributions=used,
        user_attrs=_user_attrs(row),
    )
    # create_trial stamps both ends with the moment it runs: the dashboard would show every trial as 0 s long.
    trial.datetime_start, trial.datetime_complete = ran
    return trial


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[list[warnings.WarningMessage]]:
    """Optuna's INFO logs and warnings kept out of the report's output; the warnings are handed back."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        optuna.logging.set_verbosity(verbosity)


def to_study(
    trials: pd.DataFrame,
    search_space: dict[str, Any],
    objective: str,
    storage: Any = None,
    study_name: str = "search",
    search_ended: datetime | None = None,
) -> optuna.Study:
    """One Optuna trial per trials.csv row, in order: its point, its score (COMPLETED) or FAIL, its cost and when
    it ran (`trial_times`; `search_ended` places the trials of runs that recorded only their seconds)."""
    import optuna

    space, columns = distributions(search_space), hyperparameter_columns(trials)
    times, times_source = trial_times(trials, search_ended)
    frozen = [_frozen_trial(row, columns, space, ran) for (_, row), ran in zip(trials.iterrows(), times)]
    with _quiet_optuna():
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction="maximize" if maximised(objective) else "minimize",
        )
        study.set_metric_names([objective])  # the dashboard labels its axes with it
        study.set_user_attr("objective", objective)
        study.set_user_attr("search_space", search_space)
        study.set_user_attr("trial_times", times_source)
        unmapped = [name for name in columns if name not in space]
        if unmapped:
            study.set_user_attr("not_in_search_space", unmapped)
        study.add_trials(frozen)
    return study


def write_study(
    run_dir: Path,
    trials: pd.DataFrame,
    search_space: dict[str, Any],
    objective: str,
    study_name: str | None = None,
    search_ended: datetime | None = None,
) -> Path:
    """The run's study as run_dir/study.db (SQLite), written whole: a crash leaves the old file or none. The study
    is named `study_name` (the run's name; by default its folder's); `search_ended` as in `to_study`."""
    import optuna

    path = run_dir / runs.STUDY_FILE
    temporary = run_dir / f".{runs.STUDY_FILE}.{os.getpid()}.tmp"
    temporary.unlink(missing_ok=True)
    try:
        with _quiet_optuna():
            storage = optuna.storages.RDBStorage(f"sqlite:///{temporary}")
        try:
            to_study(
                trials,
                search_space,
                objective,
                storage=storage,
                study_name=study_name or run_dir.name or "search",
                search_ended=search_ended,
            )
        finally:
            storage.remove_session()
            storage.engine.dispose()  # SQLite's file closed before it moves
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def importances(
    trials: pd.DataFrame,
    search_space: dict[str, Any],
    objective: str,
    resamples: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Each hyperparameter's importance to the objective over the completed trials, most important first.

    Columns: parameter, fanova (fANOVA, summing to 1), fanova_low and fanova_high (5th and 95th
    percentiles over `resamples` bootstrap resamples of the trials), ped_anova (PED-ANOVA: what sets
    the best trials apart, summing to 1), rank (by fANOVA). Only hyperparameters every completed trial
    used take part (Optuna's intersection); `attrs` says which were left out and why, how many trials
    the table rests on (n_trials), and, when it is empty, the reason.
    """
    try:
        study = to_study(trials, search_space, objective)
    except ValueError as error:
        return _no_importances(0, {}, f"the trials do not fit the search space ({error})")
    import optuna

    completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    parameters, left_out = _shared_parameters(completed)
    left_out |= {name: "not in the search space" for name in study.user_attrs.get("not_in_search_space", [])}
    n = len(completed)
    if n < MIN_TRIALS:
        return _no_importances(n, left_out, f"{plural(n, 'completed trial')}; importances need at least {MIN_TRIALS}")
    if not parameters:
        return _no_importances(n, left_out, "no hyperparameter varied across all completed trials")
    if len({trial.value for trial in completed}) == 1:
        return _no_importances(n, left_out, "every completed trial scored the same")
    with _quiet_optuna() as caught:
        fanova = _fanova(study, parameters, seed)
        ped_anova, ped_note = _ped_anova(study, parameters, n)
        low, high = _resampled_fanova(completed, study.direction, parameters, resamples, seed)
    table = pd.DataFrame(
        {
            "parameter": parameters,
            "fanova": [fanova[name] for name in parameters],
            "fanova_low": low,
            "fanova_high": high,
            "ped_anova": [ped_anova.get(name, math.nan) for name in parameters],
        }
    )
    table = table.sort_values("fanova", ascending=False, ignore_index=True)
    table["rank"] = np.arange(1, len(table) + 1)
    notes = [ped_note] if ped_note else []
    notes += sorted({str(warning.message) for warning in caught})
    notes += _budget_note(trials)
    table.attrs.update(n_trials=n, left_out=left_out, reason=None, resamples=resamples, notes=notes)
    return table


def _no_importances(n_trials: int, left_out: dict[str, str], reason: str) -> pd.DataFrame:
    table = pd.DataFrame({name: pd.Series(dtype=float) for name in IMPORTANCE_COLUMNS}).astype({"parameter": str})
    table.attrs.update(n_trials=n_trials, left_out=left_out, reason=reason, resamples=0, notes=[])
    return table


def _shared_parameters(completed: list[optuna.trial.FrozenTrial]) -> tuple[list[str], dict[str, str]]:
    """The hyperparameters every completed trial used and that could vary; the others, each with why not."""
    seen = {name: trial.distributions[name] for trial in completed for name in trial.params}
    shared, left_out = [], {}
    for name, distribution in seen.items():
        if not all(name in trial.params for trial in completed):
            left_out[name] = "conditional: unused by some trials"
        elif distribution.single():
            left_out[name] = "fixed: one value in the search space"
        else:
            shared.append(name)
    return shared, left_out


def _fanova(study: optuna.Study, parameters: list[str], seed: int) -> dict[str, float]:
    import optuna

    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    return optuna.importance.get_param_importances(study, evaluator=evaluator, params=parameters)


def _ped_anova(study: optuna.Study, parameters: list[str], n: int) -> tuple[dict[str, float], str | None]:
    """PED-ANOVA's importances, comparing the best five trials (a tenth, when there are more) with all.

    Optuna asks for at least five trials in the top quantile; its default of a tenth would pick two or
    three of a 25-trial search.
    """
    import optuna

    if n < MIN_TRIALS_PED_ANOVA:
        return {}, f"PED-ANOVA needs at least {MIN_TRIALS_PED_ANOVA} completed trials ({n} here)"
    quantile = max(0.1, TOP_TRIALS_PED_ANOVA / n)
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    try:
        return optuna.importance.get_param_importances(study, evaluator=evaluator, params=parameters), None
    except (ValueError, RuntimeError, AssertionError, ZeroDivisionError) as error:
        return {}, f"PED-ANOVA failed: {error}"


def _resampled_fanova(
    completed: list[optuna.trial.FrozenTrial],
    direction: optuna.study.StudyDirection,
    parameters: list[str],
    resamples: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """fANOVA's 5th and 95th percentile per parameter over bootstrap resamples of the completed trials."""
    import optuna

    rng = np.random.default_rng(seed)
    found = []
    for resample in range(resamples):
        picked = [completed[i] for i in rng.integers(len(completed), size=len(completed))]
        if len({trial.value for trial in picked}) == 1:
            continue  # nothing to explain in this resample
        study = optuna.create_study(direction=direction)
        study.add_trials(picked)
        try:
            importance = _fanova(study, parameters, seed + resample)
        except (ValueError, ZeroDivisionError):
            continue
        found.append([importance[name] for name in parameters])
    if not found:
        return np.full(len(parameters), math.nan), np.full(len(parameters), math.nan)
    found_array = np.asarray(found, dtype=float)
    return np.nanpercentile(found_array, 5, axis=0), np.nanpercentile(found_array, 95, axis=0)


def _budget_note(trials: pd.DataFrame) -> list[str]:
    """Hyperband scores trials after different numbers of epochs: part of what varies is the budget."""
    budgets = trials.get(f"{TUNER_PREFIX}epochs")
    if budgets is None or budgets.dropna().nunique() < 2:
        return []
    return [
        f"Hyperband trials ran {budgets.min():g} to {budgets.max():g} epochs, so the budget, "
        "not only the hyperparameters, moved their scores"
    ]


def importance_sentence(table: pd.DataFrame) -> str:
    """What the importance table says, in words: the top two, how sure that is, and where noise starts."""
    n = table.attrs.get("n_trials", 0)
    if table.empty or table["fanova"].isna().all():
        return f"Which hyperparameters mattered cannot be said yet: {table.attrs.get('reason') or 'no importances'}."
    first = table.iloc[0]
    if len(table) == 1:
        return f"Only {first.parameter} varied in every one of the {n} completed trials, so nothing compares with it."
    second = table.iloc[1]
    words = [
        f"Over {n} completed trials, fANOVA finds {first.parameter} ({first.fanova:.2f}) and "
        f"{second.parameter} ({second.fanova:.2f}) mattered most"
    ]
    if table["ped_anova"].isna().all():
        words.append("PED-ANOVA could not check this")
    else:
        ped_top = list(table.sort_values("ped_anova", ascending=False)["parameter"][:2])
        if set(ped_top) == {first.parameter, second.parameter}:
            words.append("PED-ANOVA, which asks what sets the best trials apart, agrees on the same two")
        else:
            words.append(f"PED-ANOVA puts {ped_top[0]} and {ped_top[1]} first instead, so the two evaluators disagree")
    if len(table) > 2 and not math.isnan(first.fanova_low):
        third = table.iloc[2]
        ranges = (
            f"{first.parameter}'s resampled range ({first.fanova_low:.2f}-{first.fanova_high:.2f}) "
            f"{{}} that of the third, {third.parameter} ({third.fanova_low:.2f}-{third.fanova_high:.2f})"
        )
        if first.fanova_low > third.fanova_high:
            words.append(ranges.format("stays clear of") + ", so its lead holds up when the trials are resampled")
        else:
            words.append(ranges.format("overlaps") + ", so even its lead could be chance")
    share = 1 / len(table)
    words.append(
        f"with {n} points, an importance near an even share (1/{len(table)} = {share:.2f}) cannot be told from noise"
    )
    return "; ".join(words) + "."
