"""Epoch time of the baseline on each Keras backend of this machine, as search.py trains it.

    python bench/experiments/backends.py [--data-dir ../shared/data/chest_xray] [--epochs 3] [--backends tensorflow jax]
    python bench/experiments/backends.py --smoke    # a check: TensorFlow float32 only, generated images at 48 px, 2 epochs

Each (backend, precision) pair runs `python search.py --baseline --final-epochs N` in a process of
its own (a backend is chosen per process), real data at 80 x 80 RGB, batch 64; the pairs take turns
so that whatever else slows the machine slows them alike. The figure is the median wall time of the
epochs after the first (which compiles), training and validation included, from each run's
history.csv; the first epoch is shown apart.
A one-off: its figures (docs/performance.md, docs/backends.md) were recorded at commit 9e6afe1.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from runs import RunFolder

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is reported apart")
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--precisions", nargs="+", default=["float32", "auto"])
    parser.add_argument("--image-size", type=int, help="search.py's --image-size (default: the baseline's 80)")
    parser.add_argument("--smoke", action="store_true", help="a check: one TensorFlow float32 run on generated images")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        if args.smoke:
            import data

            args.data_dir = data.make_synthetic_dataset(
                Path(scratch) / "generated", train_patients=8, test_patients=2, seed=6
            )
            args.backends, args.precisions, args.epochs, args.image_size = ["tensorflow"], ["float32"], 2, 48
        flags = ["--image-size", str(args.image_size)] if args.image_size else []
        rows = [
            time_run(backend, precision, args.data_dir, args.epochs, Path(scratch) / "reports", flags)
            for precision in args.precisions
            for backend in args.backends
        ]
    table = pd.DataFrame(rows)
    fastest = table["median later epoch s"].min()
    table["x fastest"] = (table["median later epoch s"] / fastest).round(2)
    print(table.to_string(index=False))


def time_run(backend: str, precision: str, data_dir: Path, epochs: int, reports: Path, flags: list[str]) -> dict:
    """One `search.py --baseline` run in a process of its own, and its epoch times from history.csv."""
    name = f"bench-{backend}-{precision}"
    command = [
        sys.executable, str(ROOT / "search.py"), "--baseline", "--backend", backend, "--precision", precision,
        "--final-epochs", str(epochs), "--data-dir", str(data_dir), "--reports-dir", str(reports),
        "--run-name", name, "--overwrite", *flags,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stderr[-2000:]}")
    chosen = next(line for line in done.stdout.splitlines() if line.startswith("Precision: "))
    seconds = RunFolder(reports / name).history()["seconds"].tolist()
    train_images = pd.read_csv(reports / name / "data_summary.csv", index_col=0).loc["train", "images"]
    later = statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan")
    print(f"{name}: epochs {', '.join(f'{s:.1f}' for s in seconds)} s", flush=True)
    return {
        "backend": backend,
        "precision": chosen.removeprefix("Precision: ").split(" (")[0],
        "first epoch s": round(seconds[0], 1),
        "median later epoch s": round(later, 2),
        "train images/s": round(train_images / later) if later == later else None,
    }


if __name__ == "__main__":
    main()
