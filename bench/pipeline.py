"""Training throughput of the baseline CNN fed three ways, on the 224-px copy and the full-size originals.

    python bench/pipeline.py [--data-dir ../shared/data/chest_xray] [--fullres-dir ../shared/data/chest_xray_fullres_test]

(a) the original notebook's pipeline: ImageDataGenerator.flow_from_directory at 80 x 80, batch 64,
    its augmentation, decoding every file every epoch;
(b) ours, as search.py uses it: data.load_splits / decode_splits / to_dataset and the
    ChestXRayHyperModel baseline point with its in-model augmentation; the one-off decode
    is counted in the first epoch;
(c) the same model as (b) on batches already in memory: the compute limit of this machine.

Each variant runs in its own process after a warm-up (a few steps on its own pipeline).
The full-size folder has no train/test split; here it serves as a train set, for this benchmark only.
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
sys.path.insert(0, str(ROOT))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray")
    parser.add_argument("--fullres-dir", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray_fullres_test")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant; figures are medians")
    parser.add_argument("--datasets", nargs="+", default=["fullres", "224px"], choices=["fullres", "224px"])
    parser.add_argument("--variant", choices=["a", "b", "c"], help=argparse.SUPPRESS)  # one measurement, in a child
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--from-raw", type=Path, help="re-print a table from a saved 'raw:' JSON line (name=path)")
    args = parser.parse_args()
    if args.from_raw:
        runs = json.loads(args.from_raw.read_text())
        report(args.from_raw.stem, args.from_raw, runs)
        return
    if args.variant:
        print(json.dumps(measure(args.variant, args.root, args.epochs)))
        return

    with tempfile.TemporaryDirectory() as scratch:
        roots = {"224px": args.data_dir, "fullres": fullres_layout(args.fullres_dir, Path(scratch))}
        print(
            f"Training throughput, baseline CNN at {IMAGE_SIZE} px, batch {BATCH_SIZE}, {args.epochs} epochs; images/s"
        )
        for name in args.datasets:
            runs = {
                variant: [child(variant, roots[name], args.epochs) for _ in range(args.repeats)] for variant in "abc"
            }
            report(name, roots[name], runs)


def fullres_layout(folder: Path, scratch: Path) -> Path:
    """The full-size test images as a Kaggle layout's train/ (and test/, which is never decoded here)."""
    for split in ("train", "test"):
        (scratch / split).mkdir()
        for class_name in ("NORMAL", "PNEUMONIA"):
            (scratch / split / class_name).symlink_to((folder / class_name).resolve())
    return scratch


def child(variant: str, root: Path, epochs: int) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--root", str(root), "--epochs", str(epochs)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"variant {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(variant: str, root: Path, epochs: int) -> dict:
    """Seconds per epoch (and of the one-off decode) of one way of feeding the model."""
    import keras

    import data
    from config import load_config
    from hypermodel import ChestXRayHyperModel, baseline_hyperparameters

    keras.utils.set_random_seed(SEED)
    augmentation = NO_AUGMENTATION if variant == "a" else AUGMENTATION
    model = ChestXRayHyperModel(IMAGE_SIZE, 3, load_config()["search_space"], augmentation).build(
        baseline_hyperparameters()
    )
    splits = data.load_splits(root, 0.1, SEED)
    weights = data.class_weights(splits["train"].labels)
    decode_seconds = 0.0
    if variant == "a":
        from tensorflow import keras as tf_keras  # the legacy generator lives on under tf.keras

        generator = tf_keras.preprocessing.image.ImageDataGenerator(**GENERATOR)
        flow = generator.flow_from_directory(
            root / "train",
            target_size=(IMAGE_SIZE, IMAGE_SIZE),
            batch_size=BATCH_SIZE,
            class_mode="categorical",
            seed=SEED,
        )
        train, images = flow, flow.samples
        model.fit(flow, epochs=1, steps_per_epoch=3, class_weight=weights, verbose=0)  # warm-up
        flow.reset()
    else:
        pool = {name: splits[name] for name in ("train", "validation")}  # what training needs; test is decoded later
        data.decode_images(splits["train"].files[:BATCH_SIZE], IMAGE_SIZE, 3)  # warm-up of the decoder
        warm = data.Split("warm", splits["train"].files[:BATCH_SIZE], splits["train"].labels[:BATCH_SIZE])
        warm.images = data.decode_images(warm.files, IMAGE_SIZE, 3)
        model.fit(data.to_dataset(warm, BATCH_SIZE), epochs=1, class_weight=weights, verbose=0)  # warm-up
        started = time.perf_counter()
        data.decode_splits(pool, IMAGE_SIZE, "rgb")
        decode_seconds = time.perf_counter() - started
        images = len(splits["train"])
        if variant == "b":
            train = data.to_dataset(splits["train"], BATCH_SIZE, shuffle=True, seed=SEED)
        else:
            import tensorflow as tf

            labels = keras.utils.to_categorical(splits["train"].labels, 2)
            train = tf.data.Dataset.from_tensor_slices((splits["train"].images, labels)).batch(BATCH_SIZE).cache()
            for _ in train:  # batches built and cached before the clock starts
                pass
    timer = EpochTimer()
    model.fit(train, epochs=epochs, class_weight=weights, callbacks=[timer], verbose=0)
    return {"images": images, "decode_seconds": decode_seconds, "epoch_seconds": timer.seconds}


class EpochTimer:
    """A Keras callback collecting each epoch's wall time (imports keras lazily)."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []

            def on_epoch_begin(self, epoch, logs=None) -> None:
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None) -> None:
                self.seconds.append(time.perf_counter() - self.started)

        return Timer()


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
    print(f"\n{name} ({root}; train images: a {runs['a'][0]['images']}, b/c {runs['b'][0]['images']}):")
    print(f"  {'':34}{'epoch 1':>10}{'all epochs':>12}{'epochs 2+':>11}{'fastest 2+':>12}")
    labels = {"a": "(a) ImageDataGenerator", "b": "(b) ours (decode in epoch 1)", "c": "(c) in-memory batches"}
    for variant, label in labels.items():
        row = table[variant]
        print(
            f"  {label:34}{row['first_epoch']:>10.0f}{row['all_epochs']:>12.0f}"
            f"{row['from_epoch_2']:>11.0f}{row['fastest_from_2']:>12.0f}"
        )
    decode = statistics.median(run["decode_seconds"] for run in runs["b"])
    print(f"  (b) one-off decode of train + validation: {decode:.1f} s")
    print(f"  b/a, all epochs: {table['b']['all_epochs'] / table['a']['all_epochs']:.2f}")
    print(f"  b/c, epochs 2+:  {table['b']['from_epoch_2'] / table['c']['from_epoch_2']:.2f}")
    print(f"  b/c, fastest epoch 2+: {table['b']['fastest_from_2'] / table['c']['fastest_from_2']:.2f}")
    print("  raw:", json.dumps(runs))


if __name__ == "__main__":
    main()
