"""Resident memory across repeated fit() calls of a tiny model: does TensorFlow/Keras itself grow?

    python bench/experiments/fit_growth.py shared    # one tf.data dataset for every fit
    python bench/experiments/fit_growth.py rebuilt   # a new dataset for every fit
    python bench/experiments/fit_growth.py shared forget  # and drop tf.custom_gradient's registrations (tuning.MemoryRelease)

Each round clears the Keras session, builds a tiny model, fits it for 5 steps, deletes it,
collects garbage and trims the heap, then prints RSS; the growth per fit after round 3 is
what remains per fit() whatever this project does between trials. It also prints how many of
TensorFlow's traced graphs (FuncGraph) stay alive: without `forget`, TensorFlow's gradient
registry keeps each fit's train and test step graphs, and with them the model's variables.
A one-off: its figures (docs/performance.md, Memory) were recorded at commit c9704af.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rss_mb() -> float:
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "mode", nargs="?", default="shared", choices=("shared", "rebuilt"), help="one dataset or one a fit"
    )
    parser.add_argument("forget", nargs="?", choices=("forget",), help="drop tf.custom_gradient's registrations")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    mode, forget = args.mode, args.forget is not None

    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework.func_graph import FuncGraph

    from runtime import compat

    x = np.random.randint(0, 255, (4700, 48, 48, 3), dtype=np.uint8)
    y = keras.utils.to_categorical(np.random.randint(0, 2, 4700), 2)

    def dataset():
        return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(4700).batch(64).prefetch(2)

    shared = dataset()
    readings, graphs = [], []
    for _ in range(10):
        keras.backend.clear_session()
        gc.collect()
        model = keras.Sequential(
            [
                keras.Input((48, 48, 3)),
                keras.layers.Conv2D(4, 3),
                keras.layers.Flatten(),
                keras.layers.Dense(2, activation="softmax"),
            ]
        )
        model.compile("rmsprop", "categorical_crossentropy")
        data = shared if mode == "shared" else dataset()
        model.fit(data.take(5), validation_data=data.take(2), epochs=1, verbose=0)
        del model, data
        keras.backend.clear_session()
        if forget:
            compat.forget_custom_gradients(set())
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        readings.append(rss_mb())
        graphs.append(sum(isinstance(o, FuncGraph) for o in gc.get_objects()))
    print(
        mode + (" forget" if forget else ""),
        " ".join(f"{r:.0f}" for r in readings),
        f"per fit after 3: {(readings[-1] - readings[2]) / 7:.1f} MB",
    )
    print("live FuncGraphs after each fit:", " ".join(map(str, graphs)))


if __name__ == "__main__":
    main()
