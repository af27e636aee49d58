"""Training throughput of the baseline CNN fed three ways, on the 224-px copy and the full-size originals.

    python bench/input_pipeline.py [--data-dir ../shared/data/chest_xray] [--fullres-dir ../shared/data/chest_xray_fullres_test]
                             [--epochs 3] [--repeats 1] [--datasets fullres 224px] [--variants a b c]
    python bench/input_pipeline.py --smoke     # a check: generated images at 48 px, 2 epochs, every variant here
    python bench/input_pipeline.py --from-raw bench/results/pipeline-fullres.json   # a committed table again

(a) the original notebook's pipeline: ImageDataGenerator.flow_from_directory at 80 x 80, batch 64,
    its augmentation, decoding every file every epoch;
(b) ours, as search.py uses it: data.load_splits / decode_splits (Pillow) / to_dataset (a
    keras.utils.PyDataset) and the ChestXRayHyperModel baseline point with its in-model
    augmentation; the one-off decode is counted in the first epoch;
(c) the same model as (b) on batches already in memory (a cached tf.data.Dataset on TensorFlow,
    to_dataset unshuffled elsewhere): the compute limit of this machine;
(t) only with --variants t, TensorFlow only: (b) with the shuffled, prefetched tf.data.Dataset
    that to_dataset returned before the PyDataset (commit c8f8419), over the same decoded images.

Each variant runs in its own process after a warm-up (a few steps on its own pipeline).
The full-size folder has no train/test split; here it serves as a train set, for this benchmark only.
--smoke runs every variant in this process on a generated dataset (as 224px): it checks the code, not the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGE_SIZE, BATCH_SIZE, SEED = 80, 64, 42
# The original notebook's ImageDataGenerator settings.
GENERATOR = {
    "rescale": 1 / 255,
    "shear_range": 0.2,
    "zoom_range": 0.2,
    "width_shift_range": 0.2,
    "height_shift_range": 0.2,
}
AUGMENTATION = {"width_shift": 0.2, "height_shift": 0.2, "shear_degrees": 0.2, "zoom": 0.2}
NO_AUGMENTATION = dict.fromkeys(AUGMENTATION, 0.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray")
    parser.add_argument("--fullres-dir", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray_fullres_test")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run, at least 2 (epoch 1 decodes)")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant; figures are medians")
    parser.add_argument("--datasets", nargs="+", default=["fullres", "224px"], choices=["fullres", "224px"])
    parser.add_argument("--variants", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c", "t"])
    parser.add_argument("--variant", choices=["a", "b", "c", "t"], help=argparse.SUPPRESS)  # one run, in a child
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--from-raw", type=Path, help="re-print a table from a saved 'raw:' JSON line (name=path)")
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds' check on generated images, in this process"
    )
    args = parser.parse_args(argv)
    if args.from_raw:
        runs = json.loads(args.from_raw.read_text())
        report(args.from_raw.stem, args.from_raw, runs)
        return
    if args.variant:
        print(json.dumps(measure(args.variant, args.root, args.epochs, args.image_size)))
        return

    with tempfile.TemporaryDirectory() as scratch:
        if args.smoke:
            import data

            generated = Path(scratch) / "generated"
            args.data_dir = data.make_synthetic_dataset(generated, train_patients=8, test_patients=2, seed=1)
            args.datasets, args.image_size, args.epochs, args.repeats = ["224px"], 48, 2, 1
            run = measure  # every variant here: a check of the code, not of the speed
        else:
            run = child
        roots = {"224px": args.data_dir}
        if "fullres" in args.datasets:
            roots["fullres"] = fullres_layout(args.fullres_dir, Path(scratch))
        print(
            f"Training throughput, baseline CNN at {args.image_size} px, batch {BATCH_SIZE}, {args.epochs} epochs; "
            "images/s"
        )
        for name in args.datasets:
            runs: dict[str, list[dict]] = {variant: [] for variant in args.variants}
            for _ in range(args.repeats):  # variants take turns, so a slow spell of the machine hits all alike
                for variant in args.variants:
                    runs[variant].append(run(variant, roots[name], args.epochs, args.image_size))
            report(name, roots[name], runs)


def fullres_layout(folder: Path, scratch: Path) -> Path:
    """The full-size test images as a Kaggle layout's train/ (and test/, which is never decoded here)."""
    for split in ("train", "test"):
        (scratch / split).mkdir()
        for class_name in ("NORMAL", "PNEUMONIA"):
            (scratch / split / class_name).symlink_to((folder / class_name).resolve())
    return scratch


def child(variant: str, root: Path, epochs: int, image_size: int) -> dict:
    """measure() in a process of its own."""
    command = [sys.executable, __file__, "--variant", variant, "--root", str(root), "--epochs", str(epochs)]
    command += ["--image-size", str(image_size)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"variant {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(variant: str, root: Path, epochs: int, image_size: int = IMAGE_SIZE) -> dict:
    """Seconds per epoch (and of the one-off decode) of one way of feeding the model."""
    import keras

    import config
    import data
    from hypermodel import ChestXRayHyperModel, baseline_hyperparameters

    keras.utils.set_random_seed(SEED)
    augmentation = NO_AUGMENTATION if variant == "a" else AUGMENTATION
    model = ChestXRayHyperModel(image_size, 3, config.load().search_space.as_dict(), augmentation).build(
        baseline_hyperparameters()
    )
    splits = data.load_splits(root, 0.1, SEED)
    weights = data.class_weights(splits.train.labels)
    decode_seconds = 0.0
    if variant == "a":
        from tensorflow import keras as tf_keras  # the legacy generator lives on under tf.keras

        generator = tf_keras.preprocessing.image.ImageDataGenerator(**GENERATOR)
        flow = generator.flow_from_directory(
            root / "train",
            target_size=(image_size, image_size),
            batch_size=BATCH_SIZE,
            class_mode="categorical",
            seed=SEED,
        )
        train, images = flow, flow.samples
        model.fit(flow, epochs=1, steps_per_epoch=min(3, len(flow)), class_weight=weights, verbose=0)  # warm-up
        flow.reset()
    else:
        pool = [splits.train, splits.validation]  # what training needs; test is decoded later
        data.decode_images(splits.train.files[:BATCH_SIZE], image_size, 3)  # warm-up of the decoder
        warm = data.Split("warm", splits.train.files[:BATCH_SIZE], splits.train.labels[:BATCH_SIZE])
        warm.images = data.decode_images(warm.files, image_size, 3)
        warm_batches = (
            tf_data_batches(warm, shuffle=False)
            if variant == "t"
            else data.to_dataset(warm, BATCH_SIZE, class_weights=weights)
        )
        model.fit(
            warm_batches, epochs=1, class_weight=keras_class_weight(warm_batches, weights), shuffle=False, verbose=0
        )
        started = time.perf_counter()
        data.decode_splits(pool, image_size, "rgb")
        decode_seconds = time.perf_counter() - started
        train, images = in_memory_batches(variant, splits.train, weights), len(splits.train)
    from pipeline import training

    timer = training.epoch_timer()
    # shuffle=False as search.fit_settings passes: (b) and (t) shuffle themselves every epoch.
    weighting = keras_class_weight(train, weights)
    model.fit(train, epochs=epochs, class_weight=weighting, callbacks=[timer], shuffle=False, verbose=0)
    return {"images": images, "decode_seconds": decode_seconds, "epoch_seconds": timer.seconds}


def keras_class_weight(batches, weights: dict[int, float]) -> dict[int, float] | None:
    """Keras' class_weight for batches of (images, labels); None for data.to_dataset's, which carry the weights."""
    import keras

    return None if isinstance(batches, keras.utils.PyDataset) else weights


def in_memory_batches(variant: str, split, weights: dict[int, float]):
    """The training batches of variant b, c or t over a decoded split."""
    import keras

    import data

    if variant == "b":
        return data.to_dataset(split, BATCH_SIZE, shuffle=True, seed=SEED, class_weights=weights)
    if variant == "t":
        return tf_data_batches(split, shuffle=True)
    if keras.backend.backend() != "tensorflow":
        return data.to_dataset(split, BATCH_SIZE, class_weights=weights)  # unshuffled: the least work per batch
    import tensorflow as tf

    labels = keras.utils.to_categorical(split.labels, 2)

    train = tf.data.Dataset.from_tensor_slices((split.images, labels)).batch(BATCH_SIZE).cache()
    for _ in train:  # batches built and cached before the clock starts
        pass
    return train


def tf_data_batches(split, *, shuffle: bool):
    """data.to_dataset as it was before the PyDataset (commit c8f8419)."""
    import numpy as np
    import tensorflow as tf

    one_hot = np.eye(2, dtype=np.float32)[split.labels]
    dataset = tf.data.Dataset.from_tensor_slices((split.images, one_hot))
    if shuffle:
        dataset = dataset.shuffle(len(split), seed=SEED, reshuffle_each_iteration=True)
    return dataset.batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)


def rates(run: dict) -> dict[str, float]:
    """images/s over all epochs (decode included) and over epochs 2 on."""
    seconds = run["epoch_seconds"]
    n = run["images"]
    return {
        "all_epochs": n * len(seconds) / (run["decode_seconds"] + sum(seconds)),
        "from_epoch_2": n * (len(seconds) - 1) / sum(seconds[1:]),
        "first_epoch": n / (run["decode_seconds"] + seconds[0]),
        "fastest_from_2": n / min(seconds[1:]),  # least disturbed by other work on the machine
    }


def report(name: str, root: Path, runs: dict[str, list[dict]]) -> None:
    table = {variant: {key: statistics.median(rates(run)[key] for run in results) for key in rates(results[0])}
             for variant, results in runs.items()}  # fmt: skip
    counts = ", ".join(f"{variant} {results[0]['images']}" for variant, results in runs.items())
    print(f"\n{name} ({root}; train images: {counts}; medians of {len(next(iter(runs.values())))} run(s)):")
    print(f"  {'':34}{'epoch 1':>10}{'all epochs':>12}{'epochs 2+':>11}{'fastest 2+':>12}")
    labels = {
        "a": "(a) ImageDataGenerator",
        "b": "(b) ours (decode in epoch 1)",
        "c": "(c) in-memory batches",
        "t": "(t) b with c8f8419's tf.data",
    }
    for variant in runs:
        row = table[variant]
        print(
            f"  {labels[variant]:34}{row['first_epoch']:>10.0f}{row['all_epochs']:>12.0f}"
            f"{row['from_epoch_2']:>11.0f}{row['fastest_from_2']:>12.0f}"
        )
    for variant in [variant for variant in ("b", "t") if variant in runs]:
        decode = statistics.median(run["decode_seconds"] for run in runs[variant])
        print(f"  ({variant}) one-off decode of train + validation: {decode:.1f} s")
    for top, bottom, key in [("b", "a", "all_epochs"), ("b", "c", "from_epoch_2"), ("b", "c", "fastest_from_2"),
                             ("b", "t", "all_epochs"), ("b", "t", "from_epoch_2")]:  # fmt: skip
        if top in table and bottom in table:
            print(f"  {top}/{bottom}, {key.replace('_', ' ')}: {table[top][key] / table[bottom][key]:.2f}")
    print("  raw:", json.dumps(runs))


if __name__ == "__main__":
    main()
