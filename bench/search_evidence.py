"""Can a search beat its starting point? Validation-only evidence from the kept search runs: how far each retrained
challenger lies from the baseline's point and how its retrain compares, and whether the short trials rank them.

    python bench/search_evidence.py                        # the committed runs (DEFAULT_RUNS below)
    python bench/search_evidence.py --runs reports/run-a reports/run-b
    python bench/search_evidence.py --smoke                # a check: two committed runs

Nothing is trained and nothing of the test split is read: from predictions.csv only the rows with split ==
'validation', from metrics.json only the finalists' points, search scores and validation figures and the racing
records. Three parts:

1. Every retrained challenger (a finalist other than the baseline's point): how many values its point changes from
   the baseline's, which, its short trial's score (trials.csv `objective`) and its first 45-epoch retrain's
   validation log loss minus the baseline's point's first retrain in the same run, with the paired 95% interval
   over validation patients (evaluation.challenger_minus_incumbent, what round 1 of racing decides; a finalist with repeats
   is read from its first repeat's column, p_finalist_<id>_r1). Then the gap against the number of changed values
   (Spearman, and binned), and per hyperparameter the mean gap of challengers that changed it against those that
   did not.
2. Over every sampled trial: how many values a non-baseline point changes (min, median, max).
3. Fidelity: per run, Spearman's rank correlation between the short trial's score and the first retrain's
   validation log loss over the run's finalists (the baseline's point included); pooled as the mean of the per-run
   correlations and as one correlation on within-run ranks.

The count of changed values: the active values of both points, compared name by name. Active are the nine
whole-model values (conv_blocks, dense_layers, dropout, learning_rate, batch_norm, pooling, brightness, contrast,
label_smoothing), filters_i for i < conv_blocks and units_i for i < dense_layers. A per-layer value active in one
point and not in the other counts as changed. Against the baseline's 15 values (4 conv blocks, 2 dense layers) a
point can change 16 at most: the 15, and units_2 where it has 3 dense layers. Numbers are equal within 1e-9
(dropout 0.30000000000000004 is 0.3). The baseline's point is the one each run recorded
(metrics.json run.baseline_hyperparameters; hypermodel.BASELINE where a run lacks it).
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import config
from data import patient_id
from evaluation import image_log_loss
from runs import METRICS_FILE, PREDICTIONS_FILE, RunFolder, chose_among_finalists

ROOT = Path(__file__).resolve().parents[1]
QUALITY = ROOT / "bench" / "results" / "quality"
DEFAULT_RUNS = [
    *(QUALITY / f"finalists-search-seed{seed}" for seed in (49, 50, 51)),
    *(QUALITY / f"repeats-search-seed{seed}" for seed in (53, 54, 55)),
    *(QUALITY / f"tuned-search-seed{seed}" for seed in (45, 46, 47)),
    ROOT / "bench" / "results" / "dev-finalists-seed42",
]
SMOKE_RUNS = [QUALITY / "finalists-search-seed49", QUALITY / "repeats-search-seed53"]
COUNT_BINS = [0, 4, 7, 10, 13, 16]  # the binned table: 1-4, 5-7, 8-10, 11-13, 14-16 changed values
CONFOUNDED = 7  # where every challenger changes at least this many values, no single change stands alone
MIN_POINTS = 3  # a run's fewest finalists for a rank correlation


class Run:
    """What this script reads of one run folder: validation rows only. (A plain class, not a dataclass: the
    bench tests load scripts without registering them in sys.modules, which dataclasses need.)"""

    def __init__(
        self, name: str, objective: str, baseline: dict[str, Any], trials: pd.DataFrame | None,
        finalists: list[dict[str, Any]] | None, racing: list[dict[str, Any]], validation: pd.DataFrame | None,
    ) -> None:  # fmt: skip
        self.name, self.objective, self.baseline, self.trials = name, objective, baseline, trials
        self.goal = "min" if objective.endswith("loss") else "max"  # the rule pipeline/training.py goes by
        self.finalists, self.racing = finalists, racing
        self.validation = validation  # predictions.csv's validation rows: file, label, p_finalist_* columns
        self.notes: list[str] = []  # what was skipped and why
        self.raced = 0  # challengers whose gap was checked against the run's round-1 racing record

    def short_score(self, trial_id: str, fallback: float | None) -> float:
        """The trial's objective in trials.csv (its best epoch's validation score); the finalist's recorded search
        score where trials.csv lacks the trial; NaN where neither has one."""
        if self.trials is not None:
            match = self.trials.loc[self.trials["trial_id"] == trial_id, "objective"]
            if len(match) and not pd.isna(match.iloc[0]):
                return float(match.iloc[0])
        if fallback is None:
            self.notes.append(f"trial {trial_id}: no objective in trials.csv nor a search_score in metrics.json")
            return float("nan")
        self.notes.append(f"trial {trial_id}: no objective in trials.csv, the finalist's search_score used")
        return float(fallback)

    def first_retrain(self, trial_id: str) -> np.ndarray | None:
        """A finalist's first retrain's validation P(pneumonia): its first repeat's column where it has several."""
        if self.validation is None:
            return None
        for column in (f"p_finalist_{trial_id}_r1", f"p_finalist_{trial_id}"):
            if column in self.validation:
                return self.validation[column].to_numpy()
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", default=DEFAULT_RUNS, help="finished search run folders")
    parser.add_argument("--smoke", action="store_true", help="a check: two committed runs")
    args = parser.parse_args(argv)
    runs = [load_run(path) for path in (SMOKE_RUNS if args.smoke else args.runs)]
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        challengers = print_challengers(runs)
        print_gap_summary(challengers)
        print_trial_counts(runs)
        print_fidelity(runs)
    print_notes(runs)
    return 0


def load_run(path: Path) -> Run:
    """A run's settings, trials, finalists, racing records and validation predictions (never its test rows)."""
    folder = RunFolder(path)
    objective = folder.config()["objective"]
    metrics = folder.metrics() if folder.file(METRICS_FILE).exists() else {}
    baseline = metrics.get("run", {}).get("baseline_hyperparameters")
    if baseline is None:
        from hypermodel import BASELINE  # loads Keras: only for a run that recorded no baseline point

        baseline = dict(BASELINE)
    run = Run(
        name=path.name,
        objective=objective,
        baseline=baseline,
        trials=folder.trials(),
        finalists=metrics["finalists"] if metrics and chose_among_finalists(metrics) else None,
        racing=metrics.get("selection", {}).get("racing", []),
        validation=validation_rows(folder),
    )
    if not metrics:
        run.notes.append("no metrics.json: no finalists to read")
    if run.trials is None:
        run.notes.append("no trials.csv: left out of part 2")
    return run


def validation_rows(folder: RunFolder) -> pd.DataFrame | None:
    """predictions.csv's validation rows, file, label and the finalists' columns only; None without the file."""
    if not folder.file(PREDICTIONS_FILE).exists():
        return None
    rows = folder.predictions().query("split == 'validation'").reset_index(drop=True)
    return rows[["file", "label", *(column for column in rows if column.startswith("p_finalist_"))]]


def _plain(value: Any) -> Any:
    """A value as Python has it: numpy scalars unwrapped, "True"/"False" as booleans, NaN as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and value in ("True", "False"):
        return value == "True"
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def active_values(point: Mapping[str, Any]) -> dict[str, Any]:
    """A point's active hyperparameter values (a trials.csv row or a metrics.json point): per-layer values only for
    the layers it has. Other columns (trial_id, objective, Keras Tuner's tuner/ values) are left out."""
    values = {name: _plain(value) for name, value in point.items()}
    active = {}
    for name, value in values.items():
        declared = config.hyperparameter(name)
        if declared is None or value is None:
            continue
        if declared.per is not None and int(name.rsplit("_", 1)[1]) >= int(values[declared.per]):
            continue
        active[name] = value
    return active


def _same(a: Any, b: Any) -> bool:
    numeric = all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in (a, b))
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) if numeric else a == b


def _order(name: str) -> tuple[int, int]:
    """Declaration order (config.HYPERPARAMETERS), then layer."""
    declared = config.hyperparameter(name)
    layer = int(name.rsplit("_", 1)[1]) if declared.per is not None else -1
    return config.HYPERPARAMETERS.index(declared), layer


def changed_values(point: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """The names of the active values in which `point` differs from `baseline`; a layer one has and the other
    lacks counts as changed."""
    ours, theirs = active_values(point), active_values(baseline)
    names = sorted(set(ours) | set(theirs), key=_order)
    return [name for name in names if name not in ours or name not in theirs or not _same(ours[name], theirs[name])]


def _incumbent(run: Run) -> dict[str, Any] | None:
    """The run's baseline finalist, where it has finalists and their validation predictions; a note where not."""
    if not run.finalists:
        run.notes.append("no finalists in metrics.json (one best point retrained): left out of parts 1 and 3")
        return None
    if run.validation is None:
        run.notes.append("no predictions.csv: left out of parts 1 and 3")
        return None
    baseline = next((finalist for finalist in run.finalists if finalist.get("is_baseline")), None)
    if baseline is None or run.first_retrain(baseline["trial_id"]) is None:
        run.notes.append("no baseline finalist with validation predictions: left out of part 1")
        return None
    return baseline


def challenger_rows(run: Run) -> list[dict[str, Any]]:
    """Part 1's rows of one run: each challenger's changed values, short score and paired gap to the baseline's."""
    from evaluation import challenger_minus_incumbent

    baseline = _incumbent(run)
    if baseline is None:
        return []
    labels = run.validation["label"].to_numpy()
    patients = [patient_id(Path(file)) for file in run.validation["file"]]
    incumbent = run.first_retrain(baseline["trial_id"])
    raced = {record["trial_id"]: record for record in run.racing if record["round"] == 1}
    rows = []
    for finalist in run.finalists:
        trial_id = finalist["trial_id"]
        if finalist.get("is_baseline"):
            continue
        challenger = run.first_retrain(trial_id)
        if challenger is None:
            run.notes.append(f"trial {trial_id}: no p_finalist_{trial_id} column in predictions.csv, left out")
            continue
        _check_point(run, finalist)
        record = challenger_minus_incumbent(labels, incumbent, challenger, patients)
        changed = changed_values(finalist["point"], run.baseline)
        if trial_id in raced:
            run.raced += 1
            if not math.isclose(raced[trial_id]["difference"], record["difference"], abs_tol=1e-9):
                run.notes.append(f"trial {trial_id}: gap {record['difference']:+.4f}, its round-1 racing record "
                                 f"says {raced[trial_id]['difference']:+.4f}")  # fmt: skip
        rows.append({
            "run": run.name, "trial": trial_id, "changed": len(changed),
            "short score": run.short_score(trial_id, finalist.get("search_score")),
            "val log loss": image_log_loss(labels, challenger).mean(), "gap": record["difference"],
            "low": record["ci95"][0], "high": record["ci95"][1], "names": changed,
            "key": point_key(finalist["point"]),
        })  # fmt: skip
    return rows


def _check_point(run: Run, finalist: dict[str, Any]) -> None:
    """A note where a finalist's retrained point (metrics.json) differs from its trial's in trials.csv."""
    if run.trials is None:
        return
    match = run.trials[run.trials["trial_id"] == finalist["trial_id"]]
    if match.empty:
        run.notes.append(f"trial {finalist['trial_id']}: not in trials.csv")
    elif differ := changed_values(match.iloc[0].to_dict(), finalist["point"]):
        run.notes.append(f"trial {finalist['trial_id']}: trials.csv and metrics.json points differ in {differ}")


def _verdict(row: pd.Series) -> str:
    if row["high"] < 0:
        return "clearly better"
    return "clearly worse" if row["low"] > 0 else "unclear"


def _signed(x: float) -> str:
    return f"{x:+.4f}"


def print_challengers(runs: Sequence[Run]) -> pd.DataFrame:
    """Part 1's table, one row per retrained challenger; returns it for the summary."""
    table = pd.DataFrame([row for run in runs for row in challenger_rows(run)])
    print("1. Retrained challengers against the baseline's point, first 45-epoch retrain of each, validation only.")
    print("   gap: the challenger's validation log loss minus the baseline point's in the same run (positive: worse),")
    print(
        "   with its paired 95% interval over validation patients (2,000 resamples, evaluation.challenger_minus_incumbent);"
    )
    print("   changed: how many active values differ from the baseline's point, and which.\n")
    if table.empty:
        print("   No challenger with validation predictions.")
        return table
    shown = table.assign(
        interval=[f"[{low:+.4f}, {high:+.4f}]" for low, high in zip(table["low"], table["high"])],
        verdict=table.apply(_verdict, axis=1),
        values=[", ".join(names) for names in table["names"]],
    )
    columns = ["run", "trial", "changed", "short score", "val log loss", "gap", "interval", "verdict", "values"]
    formats = {"short score": "{:.4f}".format, "val log loss": "{:.4f}".format, "gap": _signed}
    for text_column in ("run", "verdict", "values"):  # left-aligned, as their headers
        width = shown[text_column].str.len().max()
        formats[text_column] = lambda v, width=width: v.ljust(width)
    text = shown[columns].to_string(index=False, justify="left", formatters=formats)
    print("\n".join(line.rstrip() for line in text.splitlines()))
    checked = sum(run.raced for run in runs)
    if checked:
        print(f"\n{checked} of these gaps were checked against their run's round-1 racing record (repeats runs);")
        print("any disagreement is listed at the end.")
    return table


def print_gap_summary(table: pd.DataFrame) -> None:
    """The gap against the number of changed values, binned, and per hyperparameter."""
    if len(table) < MIN_POINTS:
        return
    from scipy.stats import spearmanr

    fit = spearmanr(table["changed"], table["gap"])
    print(f"\nGap against the number of changed values over {len(table)} challengers: Spearman "
          f"{fit.statistic:+.3f} (p {fit.pvalue:.2f}; a point retrained in several runs counts once per run)")  # fmt: skip
    bins = pd.cut(table["changed"], COUNT_BINS)
    grouped = table.assign(better=table["high"] < 0, worse=table["low"] > 0).groupby(bins, observed=False)
    summary = pd.DataFrame({
        "challengers": grouped.size(), "mean gap": grouped["gap"].mean(), "median gap": grouped["gap"].median(),
        "clearly better": grouped["better"].sum(), "clearly worse": grouped["worse"].sum(),
    })  # fmt: skip
    summary.index = pd.Index([f"{bin.left + 1}-{bin.right}" for bin in summary.index], name="changed values")
    print(summary.to_string(formatters={"mean gap": _signed, "median gap": _signed}, na_rep="-"))
    print_per_hyperparameter(table)
    _print_duplicates(table)


def print_per_hyperparameter(table: pd.DataFrame) -> None:
    """Each hyperparameter: the mean gap of the challengers that changed it against those that did not."""
    rows = []
    for name in sorted({name for names in table["names"] for name in names}, key=_order):
        changed = table["names"].map(lambda these, name=name: name in these)
        rows.append({
            "hyperparameter": name, "changed by": int(changed.sum()), "mean gap if changed": table.loc[changed, "gap"].mean(),
            "kept by": int((~changed).sum()), "mean gap if kept": table.loc[~changed, "gap"].mean(),
        })  # fmt: skip
    per = pd.DataFrame(rows)
    per["changed - kept"] = per["mean gap if changed"] - per["mean gap if kept"]
    print("\nPer hyperparameter: the mean gap of the challengers that changed it and of those that kept the")
    print("baseline's value (negative 'changed - kept': the change goes with a smaller gap; most favourable first):")
    print(per.sort_values("changed - kept").to_string(index=False, float_format=_signed, na_rep="-"))
    fewest, median = int(table["changed"].min()), table["changed"].median()
    unchanged = per.loc[per["kept by"] == 0, "hyperparameter"].tolist()
    kept = f" No challenger keeps {', '.join(unchanged)}: no comparison there." if unchanged else ""
    print(f"Every challenger changes {fewest} values or more (median {median:g}).{kept}")
    if fewest >= CONFOUNDED:
        print("Each row mixes many changes at once: confounding is heavy, and a row singles a hyperparameter out")
        print("only as a hint where to look, not as the effect of changing that value alone; that needs points that")
        print("change one value at a time.")
    else:
        print("Where challengers change many values at once, a row mixes their effects.")


def point_key(point: Mapping[str, Any]) -> tuple:
    """A point's active values as a hashable key, numbers rounded to 9 places: the same point in two runs."""
    rounded = {
        name: round(value, 9) if isinstance(value, numbers.Real) and not isinstance(value, bool) else value
        for name, value in active_values(point).items()
    }
    return tuple(sorted(rounded.items()))


def _print_duplicates(table: pd.DataFrame) -> None:
    """A note where the same point was retrained as a challenger in more than one run (not independent draws)."""
    repeated = [group for _, group in table.groupby("key", sort=False) if len(group) > 1]
    if not repeated:
        return
    print(f"\nThe same point retrained as a challenger in several runs ({sum(map(len, repeated))} of the "
          f"{len(table)} rows, {table['key'].nunique()} distinct points in all):")  # fmt: skip
    for group in repeated:
        places = [f"{run} trial {trial} ({gap:+.4f})" for run, trial, gap in group[["run", "trial", "gap"]].values]
        print(f"  {', '.join(places)}")
    print("Such a point's gaps differ only in the run's split and training seed: they are not independent evidence.")


def trial_counts(runs: Sequence[Run]) -> pd.DataFrame:
    """Every sampled trial: its run, id, point key and number of changed values."""
    rows = [
        {"run": run.name, "trial": trial["trial_id"], "key": point_key(trial),
         "changed": len(changed_values(trial, run.baseline))}
        for run in runs if run.trials is not None for trial in run.trials.to_dict("records")
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "trial", "key", "changed"])


def print_trial_counts(runs: Sequence[Run]) -> None:
    """Part 2: how many values the sampled non-baseline points change, per run and pooled."""
    counts = trial_counts(runs)
    print("\n2. Changed values of every sampled trial's point (the same count; 0 is the baseline's point)")
    if counts.empty:
        print("   No trials.csv.")
        return
    others = counts[counts["changed"] > 0]
    distinct = others.drop_duplicates("key")
    spread = ["min", "median", "max"]
    table = others.groupby("run", sort=False)["changed"].agg(spread)
    table.insert(0, "trials", counts.groupby("run", sort=False).size())
    table.insert(1, "baseline's point", (counts["changed"] == 0).groupby(counts["run"], sort=False).sum())
    table.loc["pooled"] = [len(counts), len(counts) - len(others), *others["changed"].agg(spread)]
    baseline_points = counts.loc[counts["changed"] == 0, "key"].nunique()
    table.loc["pooled, distinct points"] = [
        len(distinct) + baseline_points,
        baseline_points,
        *distinct["changed"].agg(spread),
    ]
    print(table.to_string(float_format="{:g}".format))
    print("Pooled, trials by changed values: " + _histogram(others["changed"]))
    print("Pooled, distinct points by changed values: " + _histogram(distinct["changed"]))
    print(f"The {len(others)} non-baseline trials hold {len(distinct)} distinct points: these runs' searches drew")
    print("overlapping streams (Keras Tuner draws a search's n-th value with seed + n, what")
    print("pipeline.tuning.sampler_seed now spreads), so pooled trials are not independent draws.")


def _histogram(values: pd.Series) -> str:
    return ", ".join(f"{count}: {n}" for count, n in values.value_counts().sort_index().items())


def fidelity_rows(run: Run) -> list[dict[str, Any]]:
    """Part 3's points of one run: each finalist's short score (its sign flipped for an objective maximised, so
    lower is better, as for a log loss) and its first retrain's validation log loss."""
    if not run.finalists or run.validation is None:
        return []
    labels, rows = run.validation["label"].to_numpy(), []
    sign = 1.0 if run.goal == "min" else -1.0
    for finalist in run.finalists:
        probabilities = run.first_retrain(finalist["trial_id"])
        if probabilities is None:
            continue  # noted by part 1 (a challenger) or _incumbent (the baseline's)
        retrained = image_log_loss(labels, probabilities).mean()
        first = (finalist.get("repeats") or [finalist])[0].get("validation", {}).get("log_loss")
        if first is not None and not math.isclose(first, retrained, rel_tol=1e-9):
            run.notes.append(f"trial {finalist['trial_id']}: validation log loss {retrained:.6f} from predictions.csv, "
                             f"{first:.6f} in metrics.json")  # fmt: skip
        score = run.short_score(finalist["trial_id"], finalist.get("search_score"))
        rows.append({"run": run.name, "trial": finalist["trial_id"], "short": sign * score, "retrained": retrained})
    return rows


def _run_spearman(group: pd.DataFrame) -> pd.Series:
    """Spearman's correlation of one run's points, with its permutation p-value (two-sided): exact up to 8 points
    (8! pairings), from 40,000 random pairings beyond."""
    from scipy.stats import permutation_test, spearmanr

    pair = (group["short"].to_numpy(), group["retrained"].to_numpy())
    test = permutation_test(
        pair, lambda x, y: spearmanr(x, y).statistic, permutation_type="pairings", n_resamples=40_320, rng=0
    )
    return pd.Series({"points": len(group), "spearman": test.statistic, "permutation p": test.pvalue})


def print_fidelity(runs: Sequence[Run]) -> None:
    """Part 3: Spearman between the short trial's score and the retrained validation log loss, per run and pooled."""
    from scipy.stats import spearmanr

    points = pd.DataFrame([row for run in runs for row in fidelity_rows(run)]).dropna()
    sizes = points.groupby("run", sort=False).size() if len(points) else pd.Series(dtype=int)
    for name in sizes.index[sizes < MIN_POINTS]:
        next(run for run in runs if run.name == name).notes.append(
            f"fewer than {MIN_POINTS} finalists scored: left out of part 3"
        )
    points = points[points["run"].isin(sizes.index[sizes >= MIN_POINTS])]
    print("\n3. Fidelity: the short trial's score (trials.csv objective) against the first retrain's validation log")
    print("   loss over each run's finalists, the baseline's point included (positive: the short trial ranks them")
    print("   as the retrain does)")
    if points.empty:
        print("   No run with finalists.")
        return
    per_run = points.groupby("run", sort=False)[["short", "retrained"]].apply(_run_spearman)
    print(
        per_run.to_string(
            formatters={"points": "{:.0f}".format, "spearman": "{:+.3f}".format, "permutation p": "{:.3f}".format}
        )
    )
    ranks = points.groupby("run", sort=False)[["short", "retrained"]].rank()
    pooled = spearmanr(ranks["short"], ranks["retrained"])
    print(f"Pooled: mean of the {len(per_run)} per-run correlations {per_run['spearman'].mean():+.3f}; one correlation "
          f"on within-run ranks, {len(points)} points: {pooled.statistic:+.3f}")  # fmt: skip
    print(f"(p {pooled.pvalue:.2f} as if the points were independent; the two figures agree by construction where")
    print("every run has the same number of points and no ties).")
    fewest, significant = int(per_run["points"].min()), int((per_run["permutation p"] < 0.05).sum())
    print(f"With {fewest} points a run, swapping two neighbours moves a run's correlation by "
          f"{12 / (fewest**3 - fewest):.2f};")  # fmt: skip
    exact = "exact over every pairing" if per_run["points"].max() <= 8 else "exact up to 8 points"
    print(f"the permutation p ({exact}) is below 0.05 in {significant} of {len(per_run)} runs: weak evidence,")
    print("each run alone and pooled.")
    flipped = [run.name for run in runs if run.goal == "max" and run.finalists]
    if flipped:
        print(f"Objective maximised in {', '.join(flipped)}: its sign flipped, so lower is better throughout.")


def print_notes(runs: Sequence[Run]) -> None:
    """What was skipped and why, run by run."""
    print("\nSkipped or odd, per run:")
    noted = False
    for run in runs:
        for note in dict.fromkeys(run.notes):  # each once, in order
            print(f"  {run.name}: {note}")
            noted = True
    if not noted:
        print("  nothing")


if __name__ == "__main__":
    raise SystemExit(main())
