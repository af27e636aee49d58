"""Disk use of a finished 30-trial run, by part.

    python bench/experiments/disk.py [--trials 30] [--tuner random] [--data-dir DIR]

Runs `search.py` in a scratch folder (on its generated synthetic data unless --data-dir is
given: what a run keeps on disk does not depend on how many images it trained on, except
predictions.csv, one line per validation and test image) and prints what the run folder holds.
Keras Tuner on its own keeps every trial's weights (keras-tuner issue 288); a finished run here
keeps only the final model besides its reports and the tuner's trial.json files.
A one-off: its figures (docs/performance.md) were recorded at commit 86f8c4e.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--tuner", default="random", choices=("random", "bayesian", "hyperband"))
    parser.add_argument("--data-dir", help="real data instead of the synthetic set")
    parser.add_argument("--image-size", type=int, default=80)
    args = parser.parse_args(argv)

    from runs import disk_usage

    source = ["--data-dir", args.data_dir] if args.data_dir else ["--synthetic"]
    flags = [*source, "--tuner", args.tuner, "--max-trials", str(args.trials), "--epochs", "1"]
    flags += ["--final-epochs", "1", "--image-size", str(args.image_size), "--run-name", "disk"]
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(
            [sys.executable, str(ROOT / "search.py"), *flags], cwd=scratch, capture_output=True, text=True
        )
        if done.returncode:
            sys.exit(f"search.py failed:\n{done.stderr[-3000:]}")
        run_dir = Path(scratch) / "reports" / "disk"
        total, model, tuner = (
            disk_usage(run_dir),
            (run_dir / "model.keras").stat().st_size,
            disk_usage(run_dir / "tuner"),
        )
        trial_files = sorted({path.name for path in (run_dir / "tuner").rglob("trial_*/*")})
        print(f"python search.py {' '.join(flags)}")
        print(f"run folder:        {total / 1e6:8.2f} MB")
        print(f"  model.keras:     {model / 1e6:8.2f} MB")
        print(f"  tuner/:          {tuner / 1e6:8.2f} MB ({args.trials} trials; per trial: {', '.join(trial_files)})")
        print(f"  everything else: {(total - model - tuner) / 1e6:8.2f} MB (reports, plots, tables)")
        print(f"besides the model: {(total - model) / 1e6:8.2f} MB")
        print("search.py said: " + next(line for line in done.stdout.splitlines() if line.startswith("Disk:")))


if __name__ == "__main__":
    main()
