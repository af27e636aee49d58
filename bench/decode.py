"""Decode speed of data.decode_images against a full-size decode, on the full-resolution originals.

    python bench/decode.py [--folder ../shared/data/chest_xray_fullres_test] [--image-size 80] [--repeats 3]

`full_decode` is what data.decode_images did before it used libjpeg's DCT-domain downscaling:
decode every pixel, then resize with antialiasing. Prints images/s of both (median of the
repeats, after a warm-up) and how far their pixels differ.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def full_decode(files: list[Path], image_size: int, channels: int) -> np.ndarray:
    import tensorflow as tf

    def load(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        image = tf.image.resize(image, (image_size, image_size), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    dataset = tf.data.Dataset.from_tensor_slices([str(path) for path in files])
    return np.concatenate(list(dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(256).as_numpy_iterator()))


def main() -> None:
    import data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray_fullres_test")
    parser.add_argument("--image-size", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    files = sorted(path for path in args.folder.rglob("*") if path.suffix.lower() in data.IMAGE_SUFFIXES)
    results = {}
    for name, decode in (("full decode, then resize", full_decode), ("data.decode_images", data.decode_images)):
        decode(files[:16], args.image_size, 3)  # warm-up
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            results[name] = decode(files, args.image_size, 3)
            seconds.append(time.perf_counter() - started)
        print(
            f"{name:26} {len(files) / statistics.median(seconds):6.0f} images/s ({len(files)} files, {args.image_size} px)"
        )
    ours, full = (results[name].astype(int) for name in ("data.decode_images", "full decode, then resize"))
    difference = np.abs(ours - full)
    print(
        f"pixel difference (0-255): mean {difference.mean():.2f}, 99th percentile {np.percentile(difference, 99):.0f}"
    )


if __name__ == "__main__":
    main()
