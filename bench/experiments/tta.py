"""Test-time augmentation, measured on validation: a run's model on each validation image as it is, and
averaged over a few small shifts and zooms (never a flip: the heart is on one side).

    python bench/experiments/tta.py reports/<run> [reports/<other run> ...]

For each finished run (its model.keras), the validation split of its seed is decoded as the run decoded
it; the model predicts it as it is, and under each view below; the figures are validation ROC AUC, log
loss and Brier score of the plain prediction and of the mean over all views. Only validation is read.
A one-off: its figures (docs/results.md) were recorded at commit ff2671d.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from runs import RunFolder

# (shift x, shift y) as fractions of the side, zoom per axis: small, inside the training augmentation's ranges.
VIEWS = {
    "as is": (0.0, 0.0, 1.0),
    "left 4%": (-0.04, 0.0, 1.0),
    "right 4%": (0.04, 0.0, 1.0),
    "up 4%": (0.0, -0.04, 1.0),
    "down 4%": (0.0, 0.04, 1.0),
    "zoom 0.95": (0.0, 0.0, 0.95),
    "zoom 1.05": (0.0, 0.0, 1.05),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished run folders holding model.keras")
    args = parser.parse_args(argv)
    from runtime import backends

    backends.activate(backends.choose(None, "tensorflow")[0])
    rows = [row for run_dir in args.runs for row in measure(run_dir)]
    print(pd.DataFrame(rows).to_string(index=False))


def measure(run_dir: Path) -> list[dict]:
    """Plain and view-averaged validation figures of one run's model."""
    import keras

    import data

    config = RunFolder(run_dir).settings()
    splits = data.load_splits(Path(config.data_dir), config.validation_fraction, config.seed)
    validation = splits.validation
    images = data.decode_images(validation.files, config.image_size, data.channel_count(config.color_mode))
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    each = {name: predict_view(model, images, *view) for name, view in VIEWS.items()}
    averaged = np.mean(list(each.values()), axis=0)
    return [
        {"run": run_dir.name, "prediction": "as is", **scores(validation.labels, each["as is"])},
        {"run": run_dir.name, "prediction": f"mean of {len(VIEWS)} views", **scores(validation.labels, averaged)},
    ]


def predict_view(model, images: np.ndarray, shift_x: float, shift_y: float, zoom: float) -> np.ndarray:
    """P(pneumonia) for every image moved by (shift_x, shift_y) of its side and zoomed, nearest fill."""
    from keras import ops

    from augmentation import RandomAffine

    count, height, width = images.shape[:3]
    draws = {
        "shift_x": ops.full((count,), shift_x * width),
        "shift_y": ops.full((count,), shift_y * height),
        "shear_x": ops.zeros((count,)),
        "zoom_x": ops.full((count,), zoom),
        "zoom_y": ops.full((count,), zoom),
    }
    moved = ops.image.affine_transform(
        ops.cast(images, "float32"), RandomAffine.transform(draws, height, width), fill_mode="nearest"
    )
    return model.predict(ops.convert_to_numpy(moved), verbose=0)[:, 1].astype(np.float64)


def scores(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    return {
        "val_auc": round(roc_auc_score(labels, probabilities), 5),
        "val_log_loss": round(log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7)), 4),
        "val_brier": round(brier_score_loss(labels, probabilities), 4),
    }


if __name__ == "__main__":
    main()
