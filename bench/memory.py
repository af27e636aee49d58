"""Resident memory across a search of many short trials on the real data.

    python bench/memory.py [--data-dir ../shared/data/chest_xray] [--trials 20] [--image-size 48]
                           [--precision float32] [--no-tensorboard] [--census] [--tracemalloc]
    python bench/memory.py --smoke    # a check: 2 trials on generated images

Runs search.py's own search step (random search, 1 epoch per trial) in this process and
prints the resident set size (RSS) after each trial, then what building the retrain's
datasets adds. Keras Tuner users report memory growing across trials (keras-tuner
issues 873, 1031, 395); the target is under 100 MB of growth after trial 3 (--smoke's 2 trials count from
trial 1).

Beside RSS, each line shows glibc's heap in use (mallinfo2: live malloc'd bytes, whoever
allocated them), the Python objects the garbage collector tracks and, with --tracemalloc,
the bytes Python itself allocated; what RSS gains beyond those belongs to TensorFlow's own
allocations. --no-tensorboard runs without the per-trial TensorBoard callback; --census
prints, at the end, which Python types (Keras Tuner trials, Keras models, callbacks,
TensorFlow functions, ...) grew in number from trial 3 on.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import gc
import os
import tempfile
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SETTLED = 3  # growth is counted from this trial on (the first trials fill caches that stay)


def rss_mb() -> float:
    """This process's resident set size, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def malloc_in_use_mb() -> float | None:
    """Bytes glibc's malloc has handed out and not got back (heap plus mmap'd blocks), or None off glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def type_census() -> collections.Counter:
    """How many objects the garbage collector tracks, by module-qualified type name."""
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--precision", default="float32", help="dtype policy, as search.py's --precision")
    parser.add_argument("--no-tensorboard", action="store_true", help="run the trials without TensorBoard logging")
    parser.add_argument("--census", action="store_true", help="print the Python types that grew after trial 3")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python's own allocations (slower)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds' check: 2 trials on generated images")
    args = parser.parse_args(argv)
    if args.smoke:
        import data

        with tempfile.TemporaryDirectory() as scratch:
            generated = Path(scratch) / "generated"
            args.data_dir = data.make_synthetic_dataset(generated, train_patients=8, test_patients=2, seed=4)
            args.trials = 2
            measure(args)
        return
    measure(args)


def measure(args: argparse.Namespace) -> None:
    """RSS after each trial of the search, then what the retrain's datasets add."""
    import search
    from pipeline import start, training, tuning
    from pipeline.context import RunContext
    from runs import Stopwatch

    flags = ["--data-dir", str(args.data_dir), "--tuner", "random", "--max-trials", str(args.trials)]
    flags += ["--epochs", "1", "--image-size", str(args.image_size), "--precision", args.precision]
    config = search.resolve_run(search.parse_args(flags)).settings
    if args.no_tensorboard:
        config = config.replace(tensorboard=False)
    hypermodel = start.make_hypermodel(config)
    splits = search.load_data(config)
    logging = "on" if config.tensorboard else "off"
    print(f"RSS after decoding the data: {rss_mb():.0f} MB (TensorBoard {logging}, {config.precision})")
    if args.tracemalloc:
        tracemalloc.start()

    readings: list[float] = []
    censuses: dict[int, collections.Counter] = {}
    settled = max(1, min(SETTLED, args.trials - 1))  # trial 3, or the first in a shorter check
    build_tuner = tuning.build_tuner

    def measured_tuner(*args_, **kwargs):
        tuner = build_tuner(*args_, **kwargs)
        on_trial_end = tuner.on_trial_end

        def record(trial) -> None:
            on_trial_end(trial)
            readings.append(rss_mb())
            heap = malloc_in_use_mb()
            line = f"RSS after trial {len(readings)}: {readings[-1]:.0f} MB"
            line += f" | malloc in use {heap:.0f} MB" if heap is not None else ""
            line += f" | gc objects {len(gc.get_objects())}"
            if args.tracemalloc:
                line += f" | Python-traced {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MB"
            print(line, flush=True)
            if args.census and len(readings) in (settled, args.trials):
                censuses[len(readings)] = type_census()

        tuner.on_trial_end = record
        return tuner

    tuning.build_tuner = measured_tuner
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            training.search(RunContext(config, hypermodel, splits, Path(run_dir), Stopwatch()))
    finally:
        tuning.build_tuner = build_tuner
    before = rss_mb()
    settings = training.fit_settings(splits, config)  # what retrain() builds
    print(f"RSS after building the retrain's datasets: {rss_mb():.0f} MB ({rss_mb() - before:+.0f} MB)")
    del settings

    print(f"\n{len(readings)} trials of 1 epoch at {args.image_size} px (random search on {args.data_dir})")
    if len(readings) > settled:
        growth, peak = readings[-1] - readings[settled - 1], max(readings[settled:]) - readings[settled - 1]
        print(f"RSS growth from trial {settled} to trial {len(readings)}: {growth:+.0f} MB")
        print(f"RSS peak after trial {settled}: {peak:+.0f} MB above trial {settled}")
    if len(censuses) == 2:
        grown = censuses[args.trials] - censuses[settled]
        print(f"Python types that grew from trial {settled} to trial {args.trials} (objects gained):")
        for name, gained in grown.most_common(15):
            print(f"  {gained:+7d}  {name}")


if __name__ == "__main__":
    main()
