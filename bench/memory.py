"""Resident memory across a search of many short trials on the real data.

    python bench/memory.py [--data-dir ../shared/data/chest_xray] [--trials 20] [--image-size 48]

Runs search.py's own search step (random search, 1 epoch per trial) in this process and
prints the resident set size (RSS) after each trial, then what building the retrain's
datasets adds. Keras Tuner users report memory growing across trials (keras-tuner
issues 873, 1031, 395); the target is under 100 MB of growth after trial 3.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rss_mb() -> float:
    """This process's resident set size, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=48)
    args = parser.parse_args()

    import search
    import tuning

    flags = ["--data-dir", str(args.data_dir), "--tuner", "random", "--max-trials", str(args.trials)]
    flags += ["--epochs", "1", "--image-size", str(args.image_size)]
    config = search.resolve_config(search.parse_args(flags))
    hypermodel = search.make_hypermodel(config)
    splits = search.load_data(config, synthetic=False)
    print(f"RSS after decoding the data: {rss_mb():.0f} MB")

    readings: list[float] = []
    build_tuner = tuning.build_tuner

    def measured_tuner(*args, **kwargs):
        tuner = build_tuner(*args, **kwargs)
        on_trial_end = tuner.on_trial_end

        def record(trial) -> None:
            on_trial_end(trial)
            readings.append(rss_mb())
            print(f"RSS after trial {len(readings)}: {readings[-1]:.0f} MB", flush=True)

        tuner.on_trial_end = record
        return tuner

    tuning.build_tuner = measured_tuner
    with tempfile.TemporaryDirectory() as run_dir:
        search.search(hypermodel, splits, config, Path(run_dir))
    before = rss_mb()
    settings = search.fit_settings(splits, config)  # what retrain() builds
    print(f"RSS after building the retrain's datasets: {rss_mb():.0f} MB ({rss_mb() - before:+.0f} MB)")
    del settings

    print(f"\n{len(readings)} trials of 1 epoch at {args.image_size} px (random search on {args.data_dir})")
    if len(readings) > 3:
        print(f"RSS growth from trial 3 to trial {len(readings)}: {readings[-1] - readings[2]:+.0f} MB")
        print(f"RSS peak after trial 3: {max(readings[3:]) - readings[2]:+.0f} MB above trial 3")


if __name__ == "__main__":
    main()
