"""Hyperband against random search on the same space, seed and budget of epochs, on the real data.

    python bench/experiments/search_efficiency.py [--data-dir ../shared/data/chest_xray] [--image-size 48] [--epochs 3] [--factor 3]

Both run search.py's own search step (baseline first, early stopping, class weights) on the
full real train/validation split at a small image size. Hyperband runs its schedule first;
random search then gets as many trials of `--epochs` epochs as fit in the epochs Hyperband
spent. Prints each one's best validation objective against the epochs spent so far, and how
many epochs Hyperband needed to come within 0.005 of random search's best.
A one-off: its figures (docs/performance.md) were recorded at commit f475382.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TOLERANCE = 0.005


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=3, help="most epochs per trial (Hyperband's max_epochs)")
    parser.add_argument("--factor", type=int, default=3, help="Hyperband's reduction factor")
    args = parser.parse_args(argv)

    import search
    from pipeline import start, training
    from pipeline.context import RunContext
    from runs import Stopwatch

    common = ["--data-dir", str(args.data_dir), "--epochs", str(args.epochs), "--image-size", str(args.image_size)]
    config = search.resolve_run(search.parse_args([*common, "--tuner", "hyperband"])).settings
    config = config.replace(hyperband_factor=args.factor)
    hypermodel = start.make_hypermodel(config)
    splits = search.load_data(config)
    with tempfile.TemporaryDirectory() as scratch:
        _, hyperband = training.search(RunContext(config, hypermodel, splits, Path(scratch) / "hyperband", Stopwatch()))
        budget = int(hyperband["epochs_run"].sum())
        trials = math.ceil(budget / args.epochs)
        config = config.replace(tuner="random", max_trials=trials)
        _, random = training.search(RunContext(config, hypermodel, splits, Path(scratch) / "random", Stopwatch()))

    objective = config.objective
    print(f"\nBest {objective} so far against epochs spent ({args.image_size} px, all {len(splits.train)} train / "
          f"{len(splits.validation)} validation images, max {args.epochs} epochs per trial, seed {config.seed})")  # fmt: skip
    maximise = not objective.endswith("loss")
    curves = {}
    for name, table in (("hyperband", hyperband), ("random", random)):
        done = table[table["status"] == "COMPLETED"]
        epochs = done["epochs_run"].cumsum().astype(int).tolist()
        best = (done["objective"].cummax() if maximise else done["objective"].cummin()).tolist()
        curves[name] = list(zip(epochs, best))
        print(
            f"  {name} ({len(done)} trials, {epochs[-1]} epochs): " + ", ".join(f"{e}:{b:.4f}" for e, b in curves[name])
        )
    random_best, random_epochs = curves["random"][-1][1], curves["random"][-1][0]
    close = (
        (lambda best: best >= random_best - TOLERANCE) if maximise else (lambda best: best <= random_best + TOLERANCE)
    )
    reached = next((epochs for epochs, best in curves["hyperband"] if close(best)), None)
    print(
        f"Random search's best: {random_best:.4f} after {random_epochs} epochs; Hyperband's best: {curves['hyperband'][-1][1]:.4f}"
    )
    if reached is None:
        print(f"Hyperband never came within {TOLERANCE} of it.")
    else:
        print(
            f"Hyperband came within {TOLERANCE} of it after {reached} epochs: {reached / random_epochs:.0%} of random's epochs"
        )


if __name__ == "__main__":
    main()
