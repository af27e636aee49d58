"""Which hyperparameters have mattered so far, pooled over the committed searches.

    python bench/importance.py                              # every bench/results/**/trials.csv beside a config.yaml
    python bench/importance.py reports/run-a reports/run-b  # these finished runs
    python bench/importance.py --smoke                      # a check: two committed searches, 2 resamples

Per search, study.importances reads trials.csv and config.yaml and gives each hyperparameter's
fANOVA importance (with its bootstrap range) and PED-ANOVA's; this prints the fANOVA figures side
by side, their mean and min-max across searches, and a closing sentence. Nothing is trained. The
importances rest on 10 to 25 trials a search: read them as hints where to look, not as findings.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from reporting import study
from runs import CONFIG_FILE, TRIALS_FILE

ROOT = Path(__file__).resolve().parents[1]
SMOKE_RUNS = [
    ROOT / "bench" / "results" / "quality" / name for name in ("tuned-search-seed45", "finalists-search-seed49")
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="finished search folders (default: the committed ones)")
    parser.add_argument("--resamples", type=int, default=20, help="bootstrap resamples of each search's trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a check: two committed searches, 2 resamples")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.resamples = SMOKE_RUNS, 2
    runs = args.runs or committed_searches()
    if not runs:
        raise SystemExit("no search folder with trials.csv and config.yaml found")
    tables = {}
    for run_dir in runs:
        trials, search_space, objective = study.read_run(run_dir)
        table = study.importances(trials, search_space, objective, resamples=args.resamples, seed=args.seed)
        tables[run_dir.name] = table
        print(f"\n{run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir}: {describe(table)}")
        print(f"  {study.importance_sentence(table)}")
    pooled = pool(tables)
    print("\nfANOVA importance per search (each search's figures sum to 1; – : not in that search's comparison)\n")
    print(markdown(pooled, list(tables)))
    print(f"\n{closing_sentence(pooled, tables)}")
    return 0


def committed_searches() -> list[Path]:
    """Every folder under bench/results that holds a search's trials.csv and its config.yaml."""
    found = sorted(path.parent for path in (ROOT / "bench" / "results").rglob(TRIALS_FILE))
    return [folder for folder in found if (folder / CONFIG_FILE).exists()]


def describe(table: pd.DataFrame) -> str:
    """How many trials a search's table rests on and what it left out."""
    attrs = table.attrs
    parts = [f"{attrs['n_trials']} completed trials"]
    left_out = attrs.get("left_out") or {}
    if left_out:
        parts.append("left out " + ", ".join(f"{name} ({why.split(':')[0]})" for name, why in left_out.items()))
    parts += attrs.get("notes") or []
    if attrs.get("reason"):
        parts.append(f"no importances: {attrs['reason']}")
    return "; ".join(parts)


def pool(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per hyperparameter: its fANOVA importance in each search, their mean and min-max, PED-ANOVA's mean."""
    fanova = pd.DataFrame({name: table.set_index("parameter")["fanova"] for name, table in tables.items()})
    ped_anova = pd.DataFrame({name: table.set_index("parameter")["ped_anova"] for name, table in tables.items()})
    top3 = pd.DataFrame({name: table.set_index("parameter")["rank"] <= 3 for name, table in tables.items()})
    pooled = fanova.assign(
        mean=fanova.mean(axis=1),
        low=fanova.min(axis=1),
        high=fanova.max(axis=1),
        searches=fanova.notna().sum(axis=1),
        top3=top3.reindex(fanova.index).fillna(False).astype(bool).sum(axis=1),
        ped_anova_mean=ped_anova.mean(axis=1),
    )
    return pooled.sort_values("mean", ascending=False)


def markdown(pooled: pd.DataFrame, searches: list[str]) -> str:
    header = ["hyperparameter", *searches, "mean", "min-max", "top 3 in", "PED-ANOVA mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in pooled.iterrows():
        cells = [name, *(cell(row[search]) for search in searches), cell(row["mean"])]
        cells += [f"{cell(row['low'])}-{cell(row['high'])}", f"{int(row['top3'])} of {int(row['searches'])}"]
        cells.append(cell(row["ped_anova_mean"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cell(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def closing_sentence(pooled: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> str:
    """What has mattered so far, with the caveat the trial counts call for."""
    usable = {name: table for name, table in tables.items() if not table.empty}
    if not usable:
        return "No search has enough completed trials to say which hyperparameters mattered."
    ranked = pooled[pooled["searches"] > 0]
    lead = [
        f"{name} (mean {row['mean']:.2f}, top three in {int(row['top3'])} of {int(row['searches'])} searches)"
        for name, row in ranked.head(2).iterrows()
    ]
    even = 1 / max(len(table) for table in usable.values())
    trials = sorted(table.attrs["n_trials"] for table in usable.values())
    steady = ranked[(ranked["top3"] == ranked["searches"]) & (ranked["searches"] == len(usable))]
    agreement = (
        f"only {', '.join(steady.index)} ranked in the top three of every search"
        if len(steady)
        else "no hyperparameter ranked in the top three of every search"
    )
    rest = ranked["mean"].iloc[2:].max() if len(ranked) > 2 else math.nan
    return (
        f"Across {len(usable)} searches of {trials[0]} to {trials[-1]} trials, {lead[0]}"
        + (f" and {lead[1]}" if len(lead) > 1 else "")
        + f" have mattered most so far; {agreement}. "
        + (f"Every other mean is {rest:.2f} or less, " if not math.isnan(rest) else "")
        + f"against an even share of about {even:.2f}: with this few trials a search, "
        "differences that small cannot be told from noise."
    )


if __name__ == "__main__":
    raise SystemExit(main())
