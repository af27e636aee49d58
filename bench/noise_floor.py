"""The noise floor of one retrain: the same point retrained at full length on one split, with other training seeds.

    python bench/noise_floor.py --config configs/archive/finalists.yaml --seed 42 --training-seeds 42 43 44 \
        --data-dir ../shared/data/chest_xray --out bench/results/noise_floor/seed42
    python bench/noise_floor.py --out bench/results/noise_floor/seed42 --table-only
    python bench/noise_floor.py --smoke    # a check: 2 repeats of 1 epoch on generated images at 48 px
    python bench/noise_floor.py --seed 42 --training-seeds 42 43 44 --image-size 128 \
        --out bench/results/noise_floor/seed42-128px    # the same point at another input size, same split
    python bench/noise_floor.py --compare bench/results/noise_floor/seed42 bench/results/noise_floor/seed42-128px

The split (validation patients) comes from `--seed` and never changes; each repeat trains the point (the
baseline's, or `--point` as JSON) for final_epochs under the preset's retrain settings with its own training seed
(weights, augmentation, batch order), keeps its epoch of best validation objective, and writes its validation
predictions. Only validation is predicted: no test image is read. A killed run resumes repeat by repeat (and
within a repeat, epoch by epoch).

The table: each repeat's kept epoch, validation log loss, ROC AUC and thresholds (youden and plateau); the spread
of those over repeats; what an average of the first k repeats scores; and the paired interval over validation
patients of one repeat minus another, the difference any comparison of two single retrains must beat.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

import runs
from data import patient_id
from evaluation import choose_threshold, image_log_loss, paired_difference
from pipeline.context import RunContext
from runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs/archive/finalists.yaml", help="the preset")
    parser.add_argument("--seed", type=int, default=42, help="the split's seed (a development seed)")
    parser.add_argument("--training-seeds", type=int, nargs="+", default=[42, 43, 44], help="one repeat each")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/chest_xray"))
    parser.add_argument("--image-size", type=int, help="the input size (default: the preset's)")
    parser.add_argument("--point", help="JSON of the hyperparameters to retrain (default: the baseline's point)")
    parser.add_argument("--out", type=Path, help="folder of the repeats' files (required; --smoke uses a scratch one)")
    parser.add_argument("--table-only", action="store_true", help="print the table from the repeats in --out")
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds' check: 2 one-epoch repeats, generated data"
    )
    parser.add_argument(
        "--compare", type=Path, nargs="+", metavar="OUT", help="folders of repeats on one split: each against the "
        "first, paired over validation patients and over the training seeds they share",
    )  # fmt: skip
    parser.add_argument(
        "--race", type=Path, nargs="+", metavar="RUN", help="finished finalist runs: each challenger against the "
        "baseline's point after one retrain each, on validation (what round 1 of racing would decide)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.smoke:
        smoke(args)
        return
    if args.race:
        print_first_round(args.race)
        return
    if args.compare:
        print_comparison(args.compare)
        return
    if args.out is None:
        parser.error("--out is required")
    if not args.table_only:
        train_repeats(args, ["--image-size", str(args.image_size)] if args.image_size else [])
    print_table(args.out)


def print_first_round(run_dirs: list[Path]) -> None:
    """Round 1 of racing replayed on finished finalist runs: each challenger's validation log loss minus the
    baseline's point's, one retrain each, with its paired 95% interval over validation patients."""
    from evaluation import challenger_minus_incumbent

    for run_dir in run_dirs:
        folder = RunFolder(run_dir)
        finalists = folder.metrics()["finalists"]
        rows = folder.predictions().query("split == 'validation'")
        labels, patients = rows["label"].to_numpy(), [patient_id(Path(file)) for file in rows["file"]]
        baseline = next(finalist for finalist in finalists if finalist["is_baseline"])
        incumbent = rows[f"p_finalist_{baseline['trial_id']}"].to_numpy()
        for finalist in finalists:
            if finalist["is_baseline"]:
                continue
            record = challenger_minus_incumbent(
                labels, incumbent, rows[f"p_finalist_{finalist['trial_id']}"].to_numpy(), patients
            )
            low, high = record["ci95"]
            verdict = "clearly worse: out" if record["clearly_worse"] else "races on"
            print(
                f"{run_dir.name} trial {finalist['trial_id']} (weight {finalist['weight']:.2f}): "
                f"{record['difference']:+.4f} [{low:+.4f}, {high:+.4f}] {verdict}"
            )


def smoke(args: argparse.Namespace) -> None:
    """The same repeats and table on a generated dataset at 48 px, one epoch each, in a scratch folder."""
    import tempfile

    import data

    with tempfile.TemporaryDirectory() as scratch:
        generated = data.make_synthetic_dataset(Path(scratch) / "generated", train_patients=8, test_patients=2, seed=5)
        args.data_dir = str(generated)
        args.seed, args.training_seeds, args.point = 5, [1, 2], None
        args.out = Path(scratch) / "repeats"  # never a folder of kept repeats
        train_repeats(args, ["--image-size", "48", "--final-epochs", "1"])
        print_table(args.out)


def train_repeats(args: argparse.Namespace, flags: Sequence[str] = ()) -> None:
    """Each missing repeat: retrain, then save the validation predictions and what the retrain kept."""
    import search

    run = search.resolve_run(
        search.parse_args(["--config", str(args.config), "--seed", str(args.seed), "--data-dir", args.data_dir, *flags])
    )
    settings = run.settings.replace(tensorboard=False)
    from evaluation import predict_split
    from hypermodel import baseline_hyperparameters, without_augmentation
    from pipeline import training

    hypermodel = run.hypermodel
    splits = search.load_data(settings)
    point = baseline_hyperparameters()
    if args.point:
        point.values.update(json.loads(args.point))
    args.out.mkdir(parents=True, exist_ok=True)
    for training_seed in args.training_seeds:
        done = args.out / f"repeat-{training_seed}.csv"
        if done.exists():
            continue
        print(f"\nRepeat with training seed {training_seed} (split seed {args.seed})", flush=True)
        started = time.monotonic()
        context = RunContext(settings, hypermodel, splits, args.out, runs.Stopwatch())
        model, history, kept = training.retrain(
            context, point, args.out / f"backup-{training_seed}", training_seed=training_seed
        )
        seconds = time.monotonic() - started
        (p,) = predict_split([without_augmentation(model)], splits.validation, settings.batch_size)
        history.to_csv(args.out / f"history-{training_seed}.csv", index=False)
        (args.out / f"repeat-{training_seed}.json").write_text(
            json.dumps({"split_seed": args.seed, "training_seed": training_seed, "kept_epoch": kept,
                        "seconds": seconds, "point": dict(point.values), "config": str(args.config),
                        "image_size": settings.image_size}, indent=1)
        )  # fmt: skip
        frame = pd.DataFrame(
            {"file": map(str, splits.validation.files), "label": splits.validation.labels, "p_pneumonia": p}
        )
        frame.to_csv(done.with_suffix(".partial"), index=False)
        done.with_suffix(".partial").replace(done)


def print_comparison(folders: list[Path]) -> None:
    """Each folder's repeats against the first folder's (the same split, another setting such as the input size):
    validation log loss and ROC AUC of the repeats they share by training seed, one minus the other, paired over
    validation patients (the interval of the mean over those seeds), then of their averaged repeats, and the
    minutes a repeat took (a ratio only where both ran on one machine at one time)."""
    from sklearn.metrics import roc_auc_score

    labels, patients, reference, records = load_repeats(folders[0])
    order = _file_names(folders[0])
    print(f"Against {folders[0]} ({len(reference)} repeats), validation only, {len(labels)} images:")
    for folder in folders[1:]:
        _, _, other, other_records = load_repeats(folder)
        # The same images, matched by file name: a run elsewhere names the data folder otherwise.
        rows = pd.Series(range(len(order)), index=_file_names(folder))[order].to_numpy()
        other = {seed: p[rows] for seed, p in other.items()}
        seeds = [seed for seed in other if seed in reference]
        if not seeds:
            print(f"{folder}: no repeat shares a training seed with {folders[0]}")
            continue
        pairs = [((other[seed], 0.5), (reference[seed], 0.5)) for seed in seeds]
        paired = paired_difference(labels, pairs, patients)["log_loss"]
        mean_other, mean_reference = (np.mean([each[seed] for seed in seeds], axis=0) for each in (other, reference))
        averaged = paired_difference(labels, [((mean_other, 0.5), (mean_reference, 0.5))], patients)["log_loss"]
        auc = np.mean([roc_auc_score(labels, other[s]) - roc_auc_score(labels, reference[s]) for s in seeds])
        minutes = [np.mean([r[s]["seconds"] for s in seeds]) / 60 for r in (other_records, records)]
        interval = lambda gap: f"{gap['difference']:+.4f} [{gap['ci95'][0]:+.4f}, {gap['ci95'][1]:+.4f}]"  # noqa: E731
        print(
            f"{folder.name}: seeds {', '.join(map(str, seeds))}: log loss {interval(paired)} per repeat, "
            f"{interval(averaged)} averaged; ROC AUC {auc:+.4f} per repeat; {minutes[0]:.1f} against "
            f"{minutes[1]:.1f} minutes a repeat"
        )


def _file_names(out: Path) -> list[str]:
    """The validation images' file names, in the order a folder's repeats list them."""
    first = min(out.glob("repeat-*.csv"))
    return [Path(file).name for file in pd.read_csv(first)["file"]]


def load_repeats(out: Path) -> tuple[np.ndarray, list[str], dict[int, np.ndarray], dict[int, dict]]:
    """The labels, patients and each repeat's validation probabilities (by training seed) and record."""
    probabilities, records, labels, patients = {}, {}, None, None
    for path in sorted(out.glob("repeat-*.csv"), key=lambda p: int(p.stem.split("-")[1])):
        seed = int(path.stem.split("-")[1])
        frame = pd.read_csv(path)
        labels = frame["label"].to_numpy()
        patients = [patient_id(Path(file)) for file in frame["file"]]
        probabilities[seed] = frame["p_pneumonia"].to_numpy()
        records[seed] = json.loads(path.with_suffix(".json").read_text())
    return labels, patients, probabilities, records


def print_table(out: Path) -> None:
    labels, patients, probabilities, records = load_repeats(out)
    if not probabilities:
        print(f"No finished repeat in {out}.")
        return
    from sklearn.metrics import roc_auc_score

    rows = [
        {
            "training seed": seed,
            "kept epoch": records[seed]["kept_epoch"],
            "minutes": round(records[seed]["seconds"] / 60, 1),
            "val log loss": image_log_loss(labels, p).mean(),
            "val ROC AUC": roc_auc_score(labels, p),
            "youden threshold": choose_threshold(labels, p, "youden"),
            "plateau threshold": choose_threshold(labels, p, "plateau"),
        }
        for seed, p in probabilities.items()
    ]
    table = pd.DataFrame(rows)
    print(f"{out}: {len(table)} repeats, {len(labels)} validation images, {len(set(patients))} patients")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    spread = table.drop(columns=["training seed"]).agg(["mean", "std", "min", "max"])
    print("\nOver repeats:")
    print(spread.to_string(float_format=lambda x: f"{x:.4f}"))
    print_averages(labels, probabilities)
    print_subset_averages(labels, probabilities)
    print_pairs(labels, patients, probabilities)


def print_averages(labels: np.ndarray, probabilities: dict[int, np.ndarray]) -> None:
    """What the mean probability of the first k repeats scores on validation."""
    from sklearn.metrics import roc_auc_score

    values = list(probabilities.values())
    print("\nAverage of the first k repeats (validation):")
    for k in range(1, len(values) + 1):
        mean = np.mean(values[:k], axis=0)
        print(
            f"  k={k}: log loss {image_log_loss(labels, mean).mean():.4f}, ROC AUC {roc_auc_score(labels, mean):.4f}, "
            f"plateau threshold {choose_threshold(labels, mean, 'plateau'):.3f}"
        )


def print_subset_averages(labels: np.ndarray, probabilities: dict[int, np.ndarray], most: int = 5) -> None:
    """What averaging k repeats gives, over every subset of k of them: the expected score of a k-repeat ensemble
    and its spread, free of the order the repeats ran in (the evidence behind configs/repeats.yaml)."""
    from sklearn.metrics import roc_auc_score

    values = list(probabilities.values())
    print("\nAverage of k repeats, every subset of k (validation): mean (sd over subsets)")
    for k in range(1, min(most, len(values)) + 1):
        means = [np.mean(subset, axis=0) for subset in itertools.combinations(values, k)]
        losses = [image_log_loss(labels, mean).mean() for mean in means]
        thresholds = [choose_threshold(labels, mean, "plateau") for mean in means]
        spread = lambda xs: np.std(xs, ddof=1) if len(xs) > 1 else 0.0  # noqa: E731
        print(
            f"  k={k}: {len(means)} subsets, log loss {np.mean(losses):.4f} ({spread(losses):.4f}), ROC AUC "
            f"{np.mean([roc_auc_score(labels, mean) for mean in means]):.4f}, plateau threshold "
            f"{np.mean(thresholds):.3f} ({spread(thresholds):.3f})"
        )


def print_pairs(labels: np.ndarray, patients: list[str], probabilities: dict[int, np.ndarray]) -> None:
    """One repeat's validation log loss minus another's, paired over resampled validation patients."""
    pairs = list(itertools.combinations(probabilities, 2))
    if not pairs:
        return
    print("\nRepeat A minus repeat B, validation log loss, paired 95% interval over validation patients:")
    differences = []
    for a, b in pairs:
        paired = paired_difference(labels, [((probabilities[a], 0.5), (probabilities[b], 0.5))], patients)["log_loss"]
        differences.append(paired["difference"])
        low, high = paired["ci95"]
        print(f"  {a} - {b}: {paired['difference']:+.4f} [{low:+.4f}, {high:+.4f}]")
    print(f"  |difference|: mean {np.mean(np.abs(differences)):.4f}, largest {np.max(np.abs(differences)):.4f}")


if __name__ == "__main__":
    main()
