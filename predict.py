"""Predict pneumonia on new chest X-rays with a finished run's model and its validation-chosen threshold.

    python predict.py xray.jpeg more_xrays/ --run reports/search-random-80px-seed42
    python predict.py more_xrays/ --run reports/<run> --csv predictions.csv --explain gradcam/

Files may be JPEG or PNG, grayscale or colour, any size: each is decoded and resized exactly as
in training. A file that cannot be read is listed with the reason; the others are still predicted.
The threshold applied is printed above the table and saved in the CSV; each Grad-CAM overlay is the
original image, at its own size, captioned with its label, P(pneumonia) and that threshold.

A command line of its own: it imports config.py, errors.py, runs.py (the run's files), data.py, backends.py
and explain.py, never search.py or the report modules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from config import Settings
from errors import UserError
from runs import CONFIG_FILE, METRICS_FILE, MODEL_FILE, REPORT_FILE, RunFolder

# Keras (and its backend: KERAS_BACKEND, else the run's) is imported only once the arguments are known
# to be usable, so mistakes answer at once. A model saved under any backend loads under any other.


class RunError(UserError, ValueError):
    """The --run folder cannot be used; the message says why."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run = load_run(args.run)
        files = collect_files(args.paths)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    images, readable, failures = decode(files, run["config"])
    table = predict(run, images, readable)
    if len(table):
        print(threshold_line(run))
        print(table.to_string(index=False, float_format=lambda p: f"{p:.4f}"))
    try:
        if args.csv and len(table):
            # A column of its own, so the saved labels can be checked without the run folder at hand.
            table.assign(threshold=run["threshold"]).to_csv(args.csv, index=False)
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
    return parser.parse_args(argv)


def load_run(run_dir: Path) -> dict[str, Any]:
    """The run's settings, its validation-chosen threshold and its model."""
    check_run_folder(run_dir)
    folder = RunFolder(run_dir)
    metrics = folder.metrics()
    config = folder.settings()
    from runtime import backends

    # The run's own backend unless KERAS_BACKEND names another: the model loads under any of them.
    backends.activate(backends.choose(None, config.backend)[0])
    import keras

    return {
        "config": config,
        "threshold": metrics["validation"]["threshold"],
        "model": keras.saving.load_model(folder.file(MODEL_FILE), safe_mode=True),
    }


def check_run_folder(run_dir: Path) -> None:
    """RunError naming what the folder lacks; a run whose report is there but whose model is not (the committed
    reports/example, a run copied without it) is told how to get a model."""
    if not run_dir.is_dir():
        raise RunError(f"--run {run_dir} is not a folder: pass a run's folder under reports/, as search.py prints it")
    needed = (CONFIG_FILE, METRICS_FILE, MODEL_FILE)
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing == [MODEL_FILE] and (run_dir / REPORT_FILE).is_file():
        raise RunError(
            f"--run {run_dir} holds a run's report but not its model (a run's model.keras is not committed to git, and "
            "a copied run may leave it out): train one, e.g. in about 40 s with `python search.py --smoke`, "
            "then pass the folder it prints as --run reports/<that run>"
        )
    if missing:
        raise RunError(
            f"--run {run_dir} is not a finished run (missing {', '.join(missing)}): "
            "pass a folder under reports/ that holds a report.md and a model.keras"
        )


def threshold_line(run: dict[str, Any]) -> str:
    """The header above the table: the threshold the labels use, and where it came from."""
    rule = run["config"].threshold  # a rule's name, or a fixed probability
    if isinstance(rule, str):
        source = f"chosen on validation by the run's `{rule}` rule"
    else:
        source = f"fixed at {rule} by the run's config"
    return f"Threshold {run['threshold']:.4f} ({source}): P(pneumonia) at or above it reads PNEUMONIA"


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

    probabilities = []
    if len(images):
        # Batches of one shape (the last padded, its padding rows predicted last), so JAX compiles predict once.
        batches = to_dataset(Split("predict", files, np.zeros(len(images), int), images), run["config"].batch_size)
        probabilities = run["model"].predict(batches, verbose=0)[: len(images), 1]
    return pd.DataFrame(
        {
            "file": list(map(str, files)),
            "p_pneumonia": probabilities,
            "label": [CLASS_NAMES[int(p >= run["threshold"])] for p in probabilities],
        }
    )


def explain_images(run: dict[str, Any], images, table, out_dir: Path) -> int:
    """Write each image at its own size with the Grad-CAM heatmap of its predicted class, captioned with its label,
    P(pneumonia) and the threshold; returns how many."""
    from reporting import explain

    out_dir.mkdir(parents=True, exist_ok=True)
    predicted = (table["p_pneumonia"].to_numpy() >= run["threshold"]).astype(int)
    heatmaps = explain.grad_cam(run["model"], images, predicted)  # an ensemble's: its heaviest member's
    channels = images.shape[-1]
    used: set[str] = set()
    for heatmap, file, probability, label in zip(heatmaps, table["file"], table["p_pneumonia"], table["label"]):
        name = Path(file).stem
        while name in used:  # the same file name in two folders
            name += "_"
        used.add(name)
        # The heatmap is stretched to the original pixels, not the image shrunk to the model's 48 or 80 px.
        picture = explain.overlay(original_pixels(Path(file), channels), heatmap)
        write_captioned(picture, caption(label, probability, run["threshold"]), out_dir / f"{name}_gradcam.png")
    return len(used)


def original_pixels(path: Path, channels: int):
    """The file's pixels at their own size, uint8 (height, width, channels), in the colours training reads."""
    import numpy as np
    from PIL import Image

    import data

    with Image.open(path, formats=data.DECODABLE_FORMATS) as image:
        image.load()
        # data's own conversion (16-bit grey scaled to 8 bits, transparency dropped), without its resize.
        grey = channels == 1 or image.mode in data.GREY_MODES
        pixels = np.asarray(data.as_mode(image, "L" if grey else "RGB"))
    return pixels[..., None] if pixels.ndim == 2 else pixels


def caption(label: str, probability: float, threshold: float) -> list[str]:
    """An overlay's caption: the label, and the probability and threshold that gave it."""
    side = "at or above" if probability >= threshold else "below"
    return [f"{label}: P(pneumonia) {probability:.3f}", f"{side} the threshold {threshold:.3f}"]


def write_captioned(picture, lines: list[str], path: Path) -> None:
    """Save an RGB array as PNG with `lines` in white on a dark box in its top-left corner, sized to the image."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(picture)
    size = max(10, min(image.size) // 24)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(image)
    margin = size // 3
    box = draw.multiline_textbbox((margin, margin), "\n".join(lines), font=font)
    draw.rectangle((0, 0, box[2] + margin, box[3] + margin), fill=(0, 0, 0))
    draw.multiline_text((margin, margin), "\n".join(lines), fill=(255, 255, 255), font=font)
    image.save(path, compress_level=3)  # a large X-ray saves in a fraction of the default level's time


if __name__ == "__main__":
    sys.exit(main())
