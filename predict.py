"""Predict pneumonia on new chest X-rays with a finished run's model and its validation-chosen threshold.

    python predict.py xray.jpeg more_xrays/ --run reports/search-random-80px-seed42
    python predict.py more_xrays/ --run reports/<run> --csv predictions.csv --explain gradcam/
    python predict.py more_xrays/ --run reports/<run> --ensemble   # a run with ensemble_size above 1

Files may be JPEG or PNG, grayscale or colour, any size: each is decoded and resized exactly as
in training. A file that cannot be read is listed with the reason; the others are still predicted.

A command line of its own: it imports config.py, errors.py, runs.py (the run's files), data.py, backends.py
and explain.py, never search.py or the report modules.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from config import Settings, load_recorded
from errors import UserError

# Keras (and its backend: KERAS_BACKEND, else the run's) is imported only once the arguments are known
# to be usable, so mistakes answer at once. A model saved under any backend loads under any other.


class RunError(UserError, ValueError):
    """The --run folder cannot be used; the message says why."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run = load_run(args.run, args.ensemble)
        files = collect_files(args.paths)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    images, readable, failures = decode(files, run["config"])
    table = predict(run, images, readable)
    if len(table):
        print(table.to_string(index=False, float_format=lambda p: f"{p:.4f}"))
    try:
        if args.csv and len(table):
            table.to_csv(args.csv, index=False)
            print(f"Saved {len(table)} rows to {args.csv}")
        if args.explain and len(table):
            written = explain_images(run, images, table, args.explain)
            print(f"Grad-CAM overlays: {written} file(s) in {args.explain}")
    except OSError as error:
        print(
            f"error: cannot write {error.filename} ({error.strerror}): choose a writable --csv or --explain path",
            file=sys.stderr,
        )
        return 2
    if failures:
        print(f"\n{len(failures)} file(s) could not be read:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders (searched recursively)")
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder, e.g. reports/<run>")
    parser.add_argument("--csv", type=Path, help="also save the table to this CSV file")
    parser.add_argument("--explain", type=Path, metavar="OUT_DIR", help="write a Grad-CAM overlay per image here")
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="average the run's ensemble (ensemble_size above 1) at the ensemble's own threshold; "
        "Grad-CAM still shows the best model",
    )
    return parser.parse_args(argv)


def load_run(run_dir: Path, ensemble: bool = False) -> dict[str, Any]:
    """The run's settings, its validation-chosen threshold and its model (with `ensemble`, every member and the
    ensemble's threshold)."""
    needed = [run_dir / name for name in ("config.yaml", "metrics.json", "model.keras")]
    missing = [path.name for path in needed if not path.is_file()]
    if missing:
        raise RunError(
            f"--run {run_dir} is not a finished run (missing {', '.join(missing)}): "
            "pass a folder under reports/ that holds a report.md"
        )
    from runs import CONFIG_FILE, ENSEMBLE_DIR

    metrics = json.loads((run_dir / "metrics.json").read_text())
    members = sorted((run_dir / ENSEMBLE_DIR).glob("member*.keras"), key=lambda path: int(path.stem[6:]))
    if ensemble and ("ensemble" not in metrics or len(members) != metrics["ensemble"]["size"] - 1):
        raise RunError(
            f"--ensemble: {run_dir} holds no saved ensemble (it needs ensemble_size above 1 and a run that saved its "
            f"members in {ENSEMBLE_DIR}/): leave out --ensemble to use its best model"
        )
    import backends

    config = load_recorded(run_dir / CONFIG_FILE)
    # The run's own backend unless KERAS_BACKEND names another: the model loads under any of them.
    backends.activate(backends.choose(None, config.backend)[0])
    import keras

    scored = metrics["ensemble"] if ensemble else metrics
    return {
        "config": config,
        "threshold": scored["validation"]["threshold"],
        "model": keras.saving.load_model(run_dir / "model.keras", safe_mode=True),
        "members": [keras.saving.load_model(path, safe_mode=True) for path in members] if ensemble else [],
    }


def collect_files(paths: list[Path]) -> list[Path]:
    """Named files as given; folders searched for JPEG and PNG files, hidden ones skipped."""
    from data import IMAGE_SUFFIXES

    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                file
                for file in path.rglob("*")
                if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith(".")
            )
        else:
            files.append(path)
    if not files:
        raise RunError(
            f"no JPEG or PNG files in {', '.join(map(str, paths))}: name image files or folders holding them"
        )
    return files


def decode(files: list[Path], config: Settings):
    """Decoded images of the readable files, those files, and (file, reason) for the rest."""
    import numpy as np

    from data import DataError, channel_count, decode_file

    channels = channel_count(config.color_mode)
    images, readable, failures = [], [], []
    for path in files:
        if not path.is_file():
            failures.append((path, "no such file"))
            continue
        try:
            images.append(decode_file(path, config.image_size, channels))
            readable.append(path)
        except DataError as error:
            failures.append((path, str(error).removeprefix(f"{path}: ")))
    shape = (0, config.image_size, config.image_size, channels)
    return (np.stack(images) if images else np.zeros(shape, np.uint8)), readable, failures


def predict(run: dict[str, Any], images, files: list[Path]):
    """One row per image: file, P(pneumonia), and the label at the run's threshold."""
    import numpy as np
    import pandas as pd

    from data import CLASS_NAMES, Split, to_dataset

    models = [run["model"], *run["members"]]  # the ensemble's probability is the mean of its members'
    probabilities = []
    if len(images):
        # Batches of one shape (the last padded, its padding rows predicted last), so JAX compiles predict once.
        batches = to_dataset(Split("predict", files, np.zeros(len(images), int), images), run["config"].batch_size)
        probabilities = np.mean([model.predict(batches, verbose=0)[: len(images), 1] for model in models], axis=0)
    return pd.DataFrame(
        {
            "file": list(map(str, files)),
            "p_pneumonia": probabilities,
            "label": [CLASS_NAMES[int(p >= run["threshold"])] for p in probabilities],
        }
    )


def explain_images(run: dict[str, Any], images, table, out_dir: Path) -> int:
    """Write each image with the Grad-CAM heatmap of its predicted class; returns how many."""
    import matplotlib.image

    import explain

    out_dir.mkdir(parents=True, exist_ok=True)
    predicted = (table["p_pneumonia"].to_numpy() >= run["threshold"]).astype(int)
    heatmaps = explain.grad_cam(run["model"], images, predicted)
    used: set[str] = set()
    for image, heatmap, file in zip(images, heatmaps, table["file"]):
        name = Path(file).stem
        while name in used:  # the same file name in two folders
            name += "_"
        used.add(name)
        matplotlib.image.imsave(out_dir / f"{name}_gradcam.png", explain.overlay(image, heatmap))
    return len(used)


if __name__ == "__main__":
    sys.exit(main())
