"""Training throughput of the baseline CNN: today's three augmentation layers, the fused layer, and fused + auto precision.

    python bench/precision.py [--data-dir ../shared/data/chest_xray] [--epochs 6]
    python bench/precision.py --whole-runs [--seed 42]   # also: search.py --baseline in float32, then auto
    python bench/precision.py --smoke                    # a check: generated images at 48 px, 1 timed epoch

The variants train in one process on the real train split at 80 x 80 RGB, batch 64, as
search.py feeds them, taking turns epoch by epoch (each round starting with the next one), so
that whatever else slows the machine slows them alike. Each variant's first epoch (tracing) is
left out, and each epoch is timed inside fit() (pipeline.training.epoch_timer), without fit()'s own start and
end; the figures are the median images/s of the epochs after it, and of the fastest (the least
disturbed), with their ratios to today's. A fourth variant, float32 without any
augmentation, shows the most that fusing the augmentation layers can gain.

--whole-runs then runs `python search.py --baseline` with `--precision float32` and with
`--precision auto` one after the other (finished runs are reused, unfinished ones resume) and
prints their wall times, kept epochs and validation and test ROC AUC.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]

IMAGE_SIZE, BATCH_SIZE, SEED = 80, 64, 42
TARGETS = {"fused float32": 1.2, "fused + auto": 2.0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "chest_xray")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs per variant, after one untimed")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--whole-runs", action="store_true", help="also time search.py --baseline, float32 then auto")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the whole runs")
    parser.add_argument("--reports-dir", type=Path, default=ROOT / "reports")
    parser.add_argument("--smoke", action="store_true", help="a few seconds' check on generated images (no whole runs)")
    args = parser.parse_args(argv)
    if args.smoke:
        import data

        with tempfile.TemporaryDirectory() as scratch:
            generated = data.make_synthetic_dataset(Path(scratch), train_patients=8, test_patients=2, seed=2)
            throughput(generated, epochs=1, image_size=48, rounds=2)
        return
    throughput(args.data_dir, args.epochs, args.image_size)
    if args.whole_runs:
        whole_runs(args.data_dir, args.seed, args.reports_dir)


def throughput(data_dir: Path, epochs: int, image_size: int = IMAGE_SIZE, rounds: int = 50) -> None:
    """The four variants taking turns epoch by epoch; `rounds` batches time the augmentation alone."""
    import keras

    import data
    from runtime import precision

    auto, reason = precision.resolve("auto")
    splits = data.load_splits(data_dir, 0.1, SEED)
    train = [splits.train]
    data.decode_splits(train, image_size, "rgb")
    weights = data.class_weights(splits.train.labels)
    dataset = data.to_dataset(splits.train, BATCH_SIZE, shuffle=True, seed=SEED, class_weights=weights)
    keras.utils.set_random_seed(SEED)
    models = {
        "today (float32, three layers)": three_layer_model(build("float32", image_size)),
        "fused float32": build("float32", image_size),
        "fused + auto": build(auto, image_size),
        # What no augmentation at all would cost: the most that fusing its layers can gain.
        "float32, no augmentation": build("float32", image_size, augment=False),
    }
    from pipeline import training

    seconds: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for epoch in range(epochs + 1):
        # Each round starts with the next variant, so that none always follows the same one.
        for name in names[epoch % len(names) :] + names[: epoch % len(names)]:
            # Timed from the epoch's first batch to its last, without fit()'s own start and end.
            timer = training.epoch_timer()
            models[name].fit(dataset, epochs=1, callbacks=[timer], verbose=0)
            if epoch:  # the first epoch traces the model
                seconds[name] += timer.seconds
    images = len(splits.train)
    rates = {name: statistics.median(images / s for s in times) for name, times in seconds.items()}
    fastest = {name: images / min(times) for name, times in seconds.items()}
    today, today_fastest = rates["today (float32, three layers)"], fastest["today (float32, three layers)"]
    print(f"\nBaseline CNN at {image_size} px RGB, batch {BATCH_SIZE}, {images} train images of {data_dir}")
    print(f"auto = {auto} ({reason}); variants take turns epoch by epoch, median of {epochs} epochs after the first\n")
    print(f"  {'variant':32}{'images/s':>10}{'x today':>9}{'fastest':>9}{'x today':>9}   epoch seconds")
    for name, rate in rates.items():
        print(
            f"  {name:32}{rate:>10.0f}{rate / today:>9.2f}{fastest[name]:>9.0f}{fastest[name] / today_fastest:>9.2f}"
            f"   {', '.join(f'{s:.1f}' for s in seconds[name])}"
        )
    augmentation_alone(models["today (float32, three layers)"], models["fused float32"], splits.train.images, rounds)
    for name, target in TARGETS.items():
        ratio = rates[name] / today
        print(f"{name} {ratio:.2f}x today's vs target {target:.1f}x: {'met' if ratio >= target else 'not met'}")


def augmentation_alone(today, fused, images, rounds: int = 50) -> None:
    """Milliseconds per training batch of the augmentation layer(s) alone, today's against the fused one."""
    import tensorflow as tf

    batch = tf.cast(images[:BATCH_SIZE], "float32")
    costs = {}
    for name, model in (("three layers", today), ("fused", fused)):
        layer = model.get_layer("augmentation")
        augment = tf.function(lambda x, layer=layer: layer(x, training=True))
        augment(batch)  # traced
        started = time.perf_counter()
        for _ in range(rounds):
            augment(batch).numpy()
        costs[name] = (time.perf_counter() - started) / rounds * 1000
    print(f"augmentation alone, ms per batch of {BATCH_SIZE}: " + ", ".join(f"{k} {v:.1f}" for k, v in costs.items()))


def build(policy: str, image_size: int = IMAGE_SIZE, augment: bool = True):
    """The baseline's point with the fused augmentation layer (or none) under a dtype policy."""
    import config
    from hypermodel import ChestXRayHyperModel, baseline_hyperparameters

    settings = config.load()
    augmentation = settings.augmentation.as_dict() if augment else dict.fromkeys(settings.augmentation.as_dict(), 0.0)
    hypermodel = ChestXRayHyperModel(image_size, 3, settings.search_space.as_dict(), augmentation, policy)
    return hypermodel.build(baseline_hyperparameters())


def three_layer_model(fused):
    """The model as it was before the fused layer: RandomTranslation, RandomShear, RandomZoom in a row."""
    import keras
    from keras import layers

    import config

    settings = config.load().augmentation.as_dict()
    zoom = (-settings["zoom"], settings["zoom"])
    augmentation = keras.Sequential(
        [
            layers.RandomTranslation(settings["height_shift"], settings["width_shift"], fill_mode="nearest"),
            layers.RandomShear(x_factor=math.tan(math.radians(settings["shear_degrees"])), fill_mode="nearest"),
            layers.RandomZoom(zoom, zoom, fill_mode="nearest"),
        ],
        name="augmentation",
    )
    inputs = keras.Input(fused.input_shape[1:], name="pixels")
    x = augmentation(inputs)
    for layer in fused.layers[2:]:  # after the input and the fused augmentation
        x = layer(x)
    model = keras.Model(inputs, x, name=fused.name)
    auc = keras.metrics.AUC(name="auc", multi_label=True, num_labels=2)  # as hypermodel.py compiles it
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss=fused.loss, metrics=["accuracy", auc])
    return model


def whole_runs(data_dir: Path, seed: int, reports_dir: Path) -> None:
    """search.py --baseline in float32, then auto, one after the other; then their figures side by side."""
    rows = []
    for policy in ("float32", "auto"):
        name = f"baseline-80px-seed{seed}-{policy}"
        if not RunFolder(reports_dir / name).is_finished():
            command = [sys.executable, str(ROOT / "search.py"), "--baseline", "--seed", str(seed)]
            command += ["--precision", policy, "--data-dir", str(data_dir)]
            command += ["--reports-dir", str(reports_dir), "--run-name", name]
            print("\n$", " ".join(command), flush=True)
            subprocess.run(command, check=True, cwd=ROOT)
        metrics = RunFolder(reports_dir / name).metrics()
        run = metrics["run"]
        rows.append(
            f"| {policy} | {run['precision']['policy']} | {run['wall_seconds']['total']:.0f} "
            f"| {run['wall_seconds']['final_training']:.0f} | {run['best_epoch']} "
            f"| {metrics['validation']['roc_auc']:.4f} | {metrics['test']['roc_auc']:.4f} "
            f"| {metrics['test']['accuracy']:.3f} | {metrics['test']['threshold']:.3f} |"
        )
    print(f"\nsearch.py --baseline --seed {seed}, one after the other ({reports_dir}):\n")
    print(
        "| --precision | policy | total s | training s | kept epoch | validation AUC | test AUC | test accuracy | threshold |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
