"""Figures of what a search tried and found, drawn from its trials table (trials.csv).

Each function returns a matplotlib Figure (no pyplot state), so the report saves it where it
likes. Trial 0 ("00") is the baseline (see tuning.BaselineFirst) and is drawn as a red square wherever
it appears; the baseline's own values, where given, as a red dotted line. A search with no completed
trial gives a figure with a note, never an error, and one with few trials says so in its title.

One concern: the search's figures. It imports matplotlib, numpy, pandas, config.py (which hyperparameters are
drawn on a log scale) and study.py (which columns are hyperparameters, the baseline trial, the objective's
direction); figures.py saves them for the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from config import hyperparameter
from reporting.study import MIN_TRIALS, is_baseline_trial, space_key
from reporting.tables import hyperparameter_columns, maximised, plural

UNUSED = -0.15  # where the parallel coordinates draw a hyperparameter a trial did not use
BASELINE_STYLE = {"marker": "s", "color": "red", "markersize": 8, "linestyle": "none", "zorder": 3}
VALUE_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5}


def _completed(trials: pd.DataFrame) -> pd.DataFrame:
    done = trials[(trials["status"] == "COMPLETED") & trials["objective"].notna()]
    return done.assign(baseline=[is_baseline_trial(trial_id) for trial_id in done["trial_id"]])


def _baseline_label(trials: pd.DataFrame) -> str:
    """The baseline's legend entry, named by its trial's id as Keras Tuner wrote it ("00", "0"), as the reports name
    every trial."""
    ids = [trial_id for trial_id in trials["trial_id"] if is_baseline_trial(trial_id)]
    return f"baseline (trial {ids[0]})" if ids else "baseline"


def _note(figure: Figure, text: str) -> Figure:
    figure.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="grey")
    return figure


def _is_categorical(name: str, values: pd.Series, search_space: dict[str, Any] | None) -> bool:
    """Choices (a list in the search space, or values that are not numbers) get evenly spaced categories."""
    if search_space is not None and space_key(name) in search_space:
        return isinstance(search_space[space_key(name)], list)
    return values.dtype == bool or not pd.api.types.is_numeric_dtype(values)


def _levels(name: str, values: pd.Series, search_space: dict[str, Any] | None) -> list[Any]:
    """A categorical hyperparameter's levels: the search space's order, else the values' sorted order."""
    if search_space is not None and isinstance(search_space.get(space_key(name)), list):
        return list(search_space[space_key(name)])
    return sorted(values.dropna().unique(), key=str)


def _level_index(values: pd.Series, levels: list[Any]) -> np.ndarray:
    """Each value's position among the levels; NaN where unused. 128.0 (read back beside blanks) is level 128."""

    def same(value: Any, level: Any) -> bool:
        if isinstance(level, bool) or isinstance(value, bool | np.bool_):
            return str(value).lower() == str(level).lower()
        try:
            return float(value) == float(level)
        except (TypeError, ValueError):
            return str(value) == str(level)

    found = [next((i for i, level in enumerate(levels) if same(value, level)), None) for value in values]
    return np.array([np.nan if i is None or pd.isna(value) else i for i, value in zip(found, values)], dtype=float)


def _ordered_hyperparameters(trials: pd.DataFrame, shown: pd.DataFrame) -> list[str]:
    """The hyperparameters the shown trials used, each family together (units_2 beside units_1, not last)."""
    names = [name for name in hyperparameter_columns(trials) if name in shown and shown[name].notna().any()]
    families = list(dict.fromkeys(space_key(name) for name in names))
    return sorted(names, key=lambda name: (families.index(space_key(name)), name))


def _few(done: pd.DataFrame) -> str:
    """What a title adds when the completed trials are too few to read a trend from."""
    if len(done) == 1:
        return " (only one completed trial: nothing to compare)"
    return f" (fewer than {MIN_TRIALS}: too few to read a trend)" if len(done) < MIN_TRIALS else ""


def _mark_baseline(ax: Any, name: str, levels: list[Any] | None, baseline: dict[str, Any] | None) -> None:
    """The baseline's value of `name` as a red dotted vertical line, where it has one."""
    value = (baseline or {}).get(name)
    if value is None:
        return
    x = _level_index(pd.Series([value], dtype=object), levels)[0] if levels is not None else float(value)
    if not math.isnan(x):
        ax.axvline(x, color="red", linestyle=":", linewidth=1.2, label="baseline's value")


def objective_by_hyperparameter_figure(
    trials: pd.DataFrame,
    objective: str,
    search_space: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
) -> Figure:
    """One small panel per hyperparameter: each completed trial's objective against its value, the learning
    rate on a log axis; `baseline` (the baseline's hyperparameters) marks its value in each panel."""
    done = _completed(trials)
    names = _ordered_hyperparameters(trials, done)
    columns = 4
    rows = max(1, math.ceil(len(names) / columns))
    figure = Figure(figsize=(3.3 * columns, 2.6 * rows), layout="constrained")
    if done.empty:
        return _note(figure, "No completed trial yet: nothing to plot")
    axes = np.atleast_1d(figure.subplots(rows, columns, sharey=True)).ravel()
    for ax, name in zip(axes, names):
        values, levels = done[name], None
        if _is_categorical(name, values, search_space):
            levels = _levels(name, values, search_space)
            x = _level_index(values, levels)
            ax.set_xticks(range(len(levels)), [str(level) for level in levels])
            ax.set_xlim(-0.5, len(levels) - 0.5)
        else:
            x = values.to_numpy(dtype=float)
            if _log_sampled(name):  # shown over the whole range searched, on the scale it was drawn on
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels overlap
                bounds = (search_space or {}).get(name)
                if isinstance(bounds, dict) and bounds["min"] > 0:
                    ax.set_xlim(bounds["min"] / 1.3, bounds["max"] * 1.3)
            elif np.all(np.isnan(x) | (x == np.round(x))):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # conv blocks, not 2.5 of them
        others = ~done["baseline"].to_numpy()
        ax.plot(x[others], done["objective"][others], "o", alpha=0.7, label="trial")
        ax.plot(x[~others], done["objective"][~others], label=_baseline_label(done), **BASELINE_STYLE)
        _mark_baseline(ax, name, levels, baseline)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    for ax in axes[::columns]:
        ax.set_ylabel(objective)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    figure.suptitle(
        f"Validation {objective} against each hyperparameter, {plural(len(done), 'completed trial')}{_few(done)}"
    )
    return figure


def _axis(
    name: str, values: pd.Series, search_space: dict[str, Any] | None
) -> tuple[np.ndarray, list[float], list[str]]:
    """A hyperparameter's values mapped to [0, 1], with tick positions and their real-value labels."""
    if _is_categorical(name, values, search_space):
        levels = _levels(name, values, search_space)
        spread = max(len(levels) - 1, 1)  # levels evenly spaced; a single one sits at 0
        return _level_index(values, levels) / spread, [i / spread for i in range(len(levels))], [str(v) for v in levels]
    numbers = values.to_numpy(dtype=float)
    bounds = (search_space or {}).get(space_key(name))
    # The search space's range shows where in it the best trials lie; without one, the values' range.
    low, high = (bounds["min"], bounds["max"]) if isinstance(bounds, dict) else (np.nanmin(numbers), np.nanmax(numbers))
    log = _log_sampled(name) and low > 0
    to_axis = np.log10 if log else np.asarray
    start, end = float(to_axis(low)), float(to_axis(high))
    if end <= start:
        return np.where(np.isnan(numbers), np.nan, 0.5), [0.5], [f"{low:.3g}"]
    middle = 10 ** ((start + end) / 2) if log else (low + high) / 2
    return (to_axis(numbers) - start) / (end - start), [0.0, 0.5, 1.0], [f"{v:.3g}" for v in (low, middle, high)]


def _best_first_colours(objective: str) -> Colormap:
    """Pale blue for the worst of the shown trials to deep blue for the best, for a loss or a score alike:
    the best trials are the ones the eye goes to."""
    ramp = colormaps["Blues"](np.linspace(0.3, 1.0, 256))
    return ListedColormap(ramp if maximised(objective) else ramp[::-1])


def parallel_coordinates_figure(
    trials: pd.DataFrame,
    objective: str,
    search_space: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
    best: int = 10,
) -> Figure:
    """The best completed trials as lines across one axis per hyperparameter, coloured by objective.

    Numeric axes run over the search space's range (log for the learning rate), categorical ones put
    their choices at even steps; a hyperparameter a trial did not use sits at "unused" below. The
    best trials are the darkest and thickest lines, drawn on top. The baseline is a red dashed line:
    trial 0's values, or `baseline` (hypermodel.BASELINE) when trial 0 did not complete.
    """
    done = _completed(trials)
    if done.empty:
        return _note(Figure(figsize=(13, 4.8), layout="constrained"), "No completed trial yet: nothing to plot")
    top = done.sort_values("objective", ascending=not maximised(objective)).head(best)
    reference = done[done["baseline"]]
    if reference.empty and baseline is not None:
        reference = pd.DataFrame([{**baseline, "objective": np.nan, "baseline": True}])
    shown = pd.concat([top[~top["baseline"]], reference], ignore_index=True)
    names = _ordered_hyperparameters(trials, shown)
    # Room for each axis's value labels and its rotated name: the figure widens with the hyperparameters.
    figure = Figure(figsize=(max(9.0, 0.8 * (len(names) + 1) + 2.5), 5.2), layout="constrained")
    ax = figure.subplots()
    lines = _parallel_axes(ax, names, shown, search_space, objective)
    norm = Normalize(float(top["objective"].min()), float(top["objective"].max()))
    cmap = _best_first_colours(objective)
    is_reference = shown["baseline"].to_numpy(dtype=bool)
    # Worst first, so that the best lines are drawn on top; the better a trial, the thicker its line.
    order = np.argsort(shown["objective"].to_numpy() * (1 if maximised(objective) else -1))
    drawn = [row for row in order if not is_reference[row]]
    for rank, row in enumerate(drawn):
        ax.plot(
            range(len(names) + 1),
            lines[row],
            color=cmap(norm(shown["objective"].iloc[row])),
            linewidth=1.0 + 1.5 * rank / max(len(drawn) - 1, 1),
            zorder=2 + rank / len(drawn),
        )
    for row in np.flatnonzero(is_reference):
        label = _baseline_label(done)
        ax.plot(range(len(names) + 1), lines[row], "--", color="red", linewidth=2, label=label, zorder=4)
    ax.set_xticks(range(len(names) + 1), [*names, objective], rotation=35, ha="right", rotation_mode="anchor")
    ax.set(xlim=(-0.2, len(names) + 0.6), ylim=(UNUSED - 0.05, 1.05), yticks=[])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    if is_reference.any():
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=8, frameon=False)
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
    if not maximised(objective):
        bar.ax.invert_yaxis()  # the best, the lowest loss, at the top as for a score
    bar.set_label(f"{objective} (best at the top)")
    # A search of one completed trial draws one line: "the best 1 of 1 completed trials" would miscount it.
    title = (
        "The completed trial's line"
        if len(done) == 1
        else f"The best {len(top)} of {len(done)} completed trials, one line each (darkest: best)"
    )
    figure.suptitle(f"{title}{_few(done)}")
    return figure


def _parallel_axes(
    ax: Any, names: list[str], shown: pd.DataFrame, search_space: dict[str, Any] | None, objective: str
) -> np.ndarray:
    """Draw the parallel coordinates' axes (one per hyperparameter, then the objective) with their value labels,
    and return each shown trial's position on every axis, in [0, 1] (UNUSED where it did not use one)."""
    lines = np.full((len(shown), len(names) + 1), np.nan)
    for column, name in enumerate([*names, "objective"]):
        space = search_space if name != "objective" else None
        lines[:, column], ticks, labels = _axis(name, shown[name], space)
        if name == "objective" and not maximised(objective):
            # The lowest loss at the top, as the best score is and as the colour bar shows it.
            lines[:, column], ticks = 1 - lines[:, column], [1 - tick for tick in ticks]
        if name != "objective" and np.isnan(lines[:, column]).any():
            # A conditional hyperparameter a trial did not use: a level of its own keeps the line whole.
            lines[:, column] = np.nan_to_num(lines[:, column], nan=UNUSED)
            ticks, labels = [*ticks, UNUSED], [*labels, "unused"]
        ax.axvline(column, color="grey", linewidth=0.8, zorder=1)
        for tick, label in zip(ticks, labels):
            # On a white box above the lines, so that lines crossing the axis there do not overprint the value.
            ax.text(column + 0.05, tick, label, fontsize=7.5, va="center", zorder=5, bbox=VALUE_LABEL_BOX)
    return lines


def best_so_far_figure(trials: pd.DataFrame, objective: str) -> Figure:
    """The best objective so far against the search's cumulative trial time, each trial a dot at its end.

    Trials are summed in trial order, so this is wall time for a search that ran one trial at a
    time; a trial without recorded seconds (a failed one) adds nothing.
    """
    figure = Figure(figsize=(7, 3.8), layout="constrained")
    ordered = trials.sort_values("trial_id", key=lambda ids: ids.map(lambda i: int(str(i)) if str(i).isdigit() else -1))
    ended_at = ordered["seconds"].fillna(0).cumsum() / 60
    ordered = ordered.assign(ended_at=ended_at)
    done = _completed(ordered)
    if done.empty:
        return _note(figure, "No completed trial yet: nothing to plot")
    ax = figure.subplots()
    best = done["objective"].cummax() if maximised(objective) else done["objective"].cummin()
    ax.step(done["ended_at"], best, where="post", label="best so far")
    ax.plot(done["ended_at"], done["objective"], "o", alpha=0.6, label="trial")
    baseline = done[done["baseline"]]
    ax.plot(baseline["ended_at"], baseline["objective"], label=_baseline_label(done), **BASELINE_STYLE)
    ax.set(xlabel="cumulative trial time (minutes)", ylabel=objective, title="Best so far against search time")
    if len(done) == 1:
        ax.text(0.5, 0.1, "only one completed trial", transform=ax.transAxes, ha="center", color="grey")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def finalists_figure(
    search_scores: Sequence[float],
    retrained_scores: Sequence[float],
    labels: Sequence[str],
    objective: str = "objective",
) -> Figure:
    """Each finalist's score in the search (x) against its retrained validation score (y).

    Points below the diagonal scored better in the search than when retrained: the search's
    score of its winners is biased upwards (it picked them for it), and this shows by how much.
    """
    figure = Figure(figsize=(5, 4.6), layout="constrained")
    # A finalist whose search trial failed (its worker died, say) has no search score to place it by.
    scored = [
        (float(x), float(y), label)
        for x, y, label in zip(search_scores, retrained_scores, labels)
        if x is not None and y is not None and np.isfinite(float(x)) and np.isfinite(float(y))
    ]
    if not scored:
        return _note(figure, "No finalist with both scores to compare")
    search_scores, retrained_scores, labels = zip(*scored)
    ax = figure.subplots()
    ax.plot(search_scores, retrained_scores, "o")
    for x, y, label in zip(search_scores, retrained_scores, labels):
        ax.annotate(str(label), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    both = np.concatenate([np.asarray(search_scores, float), np.asarray(retrained_scores, float)])
    low, high = float(np.nanmin(both)), float(np.nanmax(both))
    pad = (high - low) * 0.1 or 0.01
    ax.plot([low - pad, high + pad], [low - pad, high + pad], "--", color="grey", label="same score")
    ax.set(
        xlim=(low - pad, high + pad),
        ylim=(low - pad, high + pad),
        xlabel=f"search {objective} (trial budget)",
        ylabel=f"retrained validation {objective}",
        title="Finalists: search score against retrained score",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def _log_sampled(name: str) -> bool:
    """Whether the search space declares `name` drawn on a log scale (config.HYPERPARAMETERS)."""
    declared = hyperparameter(name)
    return declared is not None and declared.kind == "log"
