"""Decode speed and pixels of data.decode_images (Pillow) against TensorFlow's decoder, which it replaced.

    python bench/decode.py [--folder ../shared/data/chest_xray_fullres_test] [--image-size 80] [--repeats 3]
                           [--channels 3] [--limit N]
    python bench/decode.py --smoke    # a check: generated images at 48 px, 1 repeat

Decoders, each on every file of the folder (searched recursively; the first `--limit` files if given):
- data.decode_images: Pillow, JPEGs at least 4 times larger than the image size shrunk 4 or 8 times
  by libjpeg while decoding (`Image.draft`), then an antialiased bilinear resize;
- Pillow, full decode: the same without the shrink, the cost it saves;
- TensorFlow, as data.py decoded before (commit c8f8419): tf.data, tf.io.decode_jpeg with the same
  DCT-domain shrink (ratio 4 or 8), tf.image.resize with antialiasing (only when TensorFlow is installed);
- TensorFlow, full decode, then resize: the reference every other decoder's pixels are compared with.

Prints images/s (median of the repeats, after a warm-up) and the mean and 99th percentile of the
absolute pixel difference (0-255) of each decoder against the TensorFlow ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pillow_full_decode(files: list[Path], image_size: int, channels: int) -> np.ndarray:
    """data.decode_images without the DCT-domain shrink."""
    import data

    ratios, data.SHRINK_RATIOS = data.SHRINK_RATIOS, ()
    try:
        return data.decode_images(files, image_size, channels)
    finally:
        data.SHRINK_RATIOS = ratios


def tensorflow_decode(files: list[Path], image_size: int, channels: int, *, shrink: bool = True) -> np.ndarray:
    """data.decode_images as it was before Pillow (commit c8f8419), for the comparison."""
    import tensorflow as tf

    def decode_jpeg(raw: tf.Tensor) -> tf.Tensor:
        if not shrink:
            return tf.io.decode_jpeg(raw, channels=channels)
        side = tf.reduce_min(tf.io.extract_jpeg_shape(raw)[:2])
        branches = [
            (side >= ratio * image_size, lambda ratio=ratio: tf.io.decode_jpeg(raw, channels=channels, ratio=ratio))
            for ratio in (8, 4)
        ]
        return tf.case(branches, default=lambda: tf.io.decode_jpeg(raw, channels=channels), exclusive=False)

    def load(index: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raw = tf.io.read_file(path)
        image = tf.cond(
            tf.io.is_jpeg(raw),
            lambda: decode_jpeg(raw),
            lambda: tf.io.decode_image(raw, channels=channels, expand_animations=False),
        )
        image = tf.image.resize(image, (image_size, image_size), antialias=True)
        return index, tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    images = np.zeros((len(files), image_size, image_size, channels), dtype=np.uint8)
    dataset = (
        tf.data.Dataset.from_tensor_slices((np.arange(len(files)), [str(path) for path in files]))
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        .batch(256)
    )
    for indices, batch in dataset.as_numpy_iterator():
        images[indices] = batch
    return images


def tensorflow_full_decode(files: list[Path], image_size: int, channels: int) -> np.ndarray:
    return tensorflow_decode(files, image_size, channels, shrink=False)


def timed(
    decode: Callable, files: list[Path], image_size: int, channels: int, repeats: int
) -> tuple[float, np.ndarray]:
    """images/s (median of the repeats, after a warm-up on a few files) and the images."""
    decode(files[:16], image_size, channels)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        images = decode(files, image_size, channels)
        seconds.append(time.perf_counter() - started)
    return len(files) / statistics.median(seconds), images


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray_fullres_test")
    parser.add_argument("--image-size", type=int, default=80)
    parser.add_argument("--channels", type=int, default=3, choices=[1, 3])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, help="decode only the first N files")
    parser.add_argument("--smoke", action="store_true", help="a few seconds' check on generated images")
    args = parser.parse_args(argv)
    if args.smoke:
        import data

        with tempfile.TemporaryDirectory() as scratch:
            args.folder, args.image_size, args.repeats = data.make_synthetic_dataset(Path(scratch), seed=3), 48, 1
            compare(args)
        return
    compare(args)


def compare(args: argparse.Namespace) -> None:
    """Every decoder's speed on the folder, then its pixels against TensorFlow's."""
    import data

    files = sorted(path for path in args.folder.rglob("*") if path.suffix.lower() in data.IMAGE_SUFFIXES)
    files = files[: args.limit]
    decoders = {"data.decode_images (Pillow)": data.decode_images, "Pillow, full decode": pillow_full_decode}
    if importlib.util.find_spec("tensorflow"):
        decoders["TensorFlow, before (c8f8419)"] = tensorflow_decode
        decoders["TensorFlow, full decode"] = tensorflow_full_decode
    print(f"{len(files)} files from {args.folder}, decoded to {args.image_size} px, {args.channels} channel(s)")
    results = {}
    for name, decode in decoders.items():
        rate, results[name] = timed(decode, files, args.image_size, args.channels, args.repeats)
        print(f"  {name:30} {rate:6.0f} images/s")
    for reference in ("TensorFlow, before (c8f8419)", "TensorFlow, full decode"):
        if reference not in results:
            continue
        for name in decoders:
            if name.startswith("TensorFlow"):
                continue
            difference = np.abs(results[name].astype(int) - results[reference].astype(int))
            print(
                f"  {name} against {reference}: pixel difference (0-255) mean {difference.mean():.2f}, "
                f"99th percentile {np.percentile(difference, 99):.0f}, max {difference.max()}"
            )


if __name__ == "__main__":
    main()
