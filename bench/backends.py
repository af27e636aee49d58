"""Epoch time of the baseline on each Keras backend of this machine, as search.py trains it.

    python bench/backends.py [--data-dir ../shared/data/chest_xray] [--epochs 3] [--backends tensorflow jax]

Each (backend, precision) pair runs `python search.py --baseline --final-epochs N` in a process of
its own (a backend is chosen per process), real data at 80 x 80 RGB, batch 64; the pairs take turns
so that whatever else slows the machine slows them alike. The figure is the median wall time of the
epochs after the first (which compiles), training and validation included, from each run's
history.csv; the first epoch is shown apart.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is reported apart")
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--precisions", nargs="+", default=["float32", "auto"])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as reports:
        for precision in args.precisions:
            for backend in args.backends:
                rows.append(time_run(backend, precision, args.data_dir, args.epochs, Path(reports)))
    table = pd.DataFrame(rows)
    fastest = table["median later epoch s"].min()
    table["x fastest"] = (table["median later epoch s"] / fastest).round(2)
    print(table.to_string(index=False))


def time_run(backend: str, precision: str, data_dir: Path, epochs: int, reports: Path) -> dict:
    name = f"bench-{backend}-{precision}"
    command = [
        sys.executable, str(ROOT / "search.py"), "--baseline", "--backend", backend, "--precision", precision,
        "--final-epochs", str(epochs), "--data-dir", str(data_dir), "--reports-dir", str(reports),
        "--run-name", name, "--overwrite",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stderr[-2000:]}")
    chosen = next(line for line in done.stdout.splitlines() if line.startswith("Precision: "))
    seconds = pd.read_csv(reports / name / "history.csv")["seconds"].tolist()
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
