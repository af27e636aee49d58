"""Per-trial overhead of a search, and how fast `python search.py --help` answers.

    python bench/experiments/overhead.py [--data-dir ../shared/data/chest_xray] [--epochs 5] [--trials 2] [--inter-op N]

Runs trials the way Keras Tuner does (clear the session, build, compile, fit with validation)
on the real data at 80 x 80 and splits each trial's wall time into:
  build     hypermodel.build(): layers, weights, compile;
  first     the first training step beyond an ordinary step (graph tracing);
  epochs    the epochs themselves, validation included, minus the above;
  end       from the last epoch's end until fit() returns (the stall seen at the end of some fits).
Overhead = build + first + end, as a share of the trial.
A one-off: its figures (docs/performance.md) were recorded at commit f475382.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=80)
    parser.add_argument("--inter-op", type=int, help="tf.config.threading inter-op threads (default: TF's)")
    parser.add_argument("--help-runs", type=int, default=5)
    args = parser.parse_args(argv)

    help_seconds = time_help(args.help_runs)
    print(f"python search.py --help: median {statistics.median(help_seconds):.2f} s over {len(help_seconds)} runs "
          f"({', '.join(f'{s:.2f}' for s in help_seconds)})")  # fmt: skip
    trial_overhead(args)


def time_help(runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "search.py"), "--help"], check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def trial_overhead(args: argparse.Namespace) -> None:
    import gc

    import keras
    import tensorflow as tf

    if args.inter_op is not None:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    import data
    from config import load
    from hypermodel import ChestXRayHyperModel, baseline_hyperparameters

    config = load(overrides={"--image-size": ("image_size", args.image_size)})
    splits = data.load_splits(args.data_dir, config.validation_fraction, config.seed)
    data.decode_splits(splits, config.image_size, config.color_mode)
    weights = data.class_weights(splits.train.labels)
    train = data.to_dataset(splits.train, config.batch_size, shuffle=True, seed=config.seed, class_weights=weights)
    validation = data.to_dataset(splits.validation, config.batch_size)
    hypermodel = ChestXRayHyperModel(config.image_size, 3, config.search_space.as_dict(), config.augmentation.as_dict())
    threads = (
        tf.config.threading.get_inter_op_parallelism_threads(),
        tf.config.threading.get_intra_op_parallelism_threads(),
    )
    print(f"\nTrials of {args.epochs} epochs at {args.image_size} px on {len(splits.train)} train / "
          f"{len(splits.validation)} validation images; inter-op/intra-op threads {threads} (0 = TF's choice)")  # fmt: skip
    print(f"{'trial':>5}{'total s':>9}{'build':>7}{'first':>7}{'end':>7}{'epochs':>8}{'overhead':>10}")
    shares = []
    for trial in range(args.trials):
        started = time.perf_counter()
        keras.backend.clear_session()  # as Keras Tuner does before each trial
        gc.collect()
        model = hypermodel.build(baseline_hyperparameters())
        built = time.perf_counter()
        clock = StepClock()
        model.fit(train, validation_data=validation, epochs=args.epochs, callbacks=[clock], verbose=0)
        ended = time.perf_counter()
        steps = clock.step_seconds
        ordinary = statistics.median(steps[1:])
        first = steps[0] - ordinary
        end = ended - clock.last_epoch_end
        total = ended - started
        overhead = (built - started) + first + end
        shares.append(overhead / total)
        print(
            f"{trial:>5}{total:>9.1f}{built - started:>7.2f}{first:>7.2f}{end:>7.2f}{total - overhead:>8.1f}{overhead / total:>9.1%}"
        )
    print(f"Overhead share, median over trials: {statistics.median(shares):.1%}")


class StepClock:
    """A Keras callback timing training steps and noting when the last epoch ended (keras imported lazily)."""

    def __new__(cls):
        import keras

        class Clock(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.step_seconds: list[float] = []

            def on_train_batch_begin(self, batch, logs=None) -> None:
                self.step_started = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None) -> None:
                self.step_seconds.append(time.perf_counter() - self.step_started)

            def on_epoch_end(self, epoch, logs=None) -> None:
                self.last_epoch_end = time.perf_counter()

        return Clock()


if __name__ == "__main__":
    main()
