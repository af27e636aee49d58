"""What TensorBoard logging costs an epoch: the baseline model trained with and without it.

    python bench/experiments/tensorboard_overhead.py [--data-dir ../shared/data/chest_xray] [--epochs 3]

Both ways train the same model on the same in-memory data as search.py does; each way gets a
fresh model, the first epoch (tracing) is left out, and the two ways alternate so that drift in
the machine's speed hits both. Target: logging adds at most 5% to an epoch.
A one-off: its figures (docs/performance.md) were recorded at commit 42990a4.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/chest_xray")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit; the first is left out")
    parser.add_argument("--rounds", type=int, default=2, help="fits of each way, alternating")
    args = parser.parse_args(argv)

    import keras

    import data
    from config import load
    from hypermodel import ChestXRayHyperModel, baseline_hyperparameters
    from pipeline import training

    config = load(None, {"--data-dir": ("data_dir", args.data_dir)})
    splits = data.load_splits(data.resolve_data_dir(config.data_dir), config.validation_fraction, config.seed)
    data.decode_splits(splits, config.image_size, config.color_mode)
    hypermodel = ChestXRayHyperModel(config.image_size, 3, config.search_space.as_dict(), config.augmentation.as_dict())
    settings = {**training.fit_settings(splits, config), "verbose": 0}

    epoch_seconds: dict[str, list[float]] = {"without TensorBoard": [], "with TensorBoard": []}
    with tempfile.TemporaryDirectory() as logs:
        for round_ in range(args.rounds):
            for way in epoch_seconds:
                keras.utils.clear_session()
                model = hypermodel.build(baseline_hyperparameters())
                timer = training.epoch_timer()
                logging = training.tensorboard_logging(way.startswith("with "), Path(logs) / str(round_))
                model.fit(epochs=args.epochs, callbacks=[timer, *logging], **settings)
                epoch_seconds[way] += timer.seconds[1:]
                print(f"round {round_ + 1}, {way}: epochs 2+ " + ", ".join(f"{s:.1f}s" for s in timer.seconds[1:]))

    medians = {way: statistics.median(seconds) for way, seconds in epoch_seconds.items()}
    images = len(splits.train) + len(splits.validation)
    print(
        f"\n{len(splits.train)} train + {len(splits.validation)} validation images at {config.image_size} px, batch {config.batch_size}"
    )
    for way, median in medians.items():
        print(
            f"{way:>20}: median epoch {median:.2f} s ({images / median:.0f} train+validation images/s) over {len(epoch_seconds[way])} epochs"
        )
    overhead = medians["with TensorBoard"] / medians["without TensorBoard"] - 1
    print(f"TensorBoard overhead per epoch: {overhead:+.1%} (target <= +5%)")


if __name__ == "__main__":
    main()
