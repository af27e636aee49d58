"""How much of a JAX search is compilation? Counts XLA compilations and their seconds, fit by fit.

    python bench/compile.py                          # a tiny synthetic search on JAX, here (CPU or GPU)
    python bench/compile.py -- --config configs/cpu.yaml --data-dir data/chest_xray   # any search.py flags

It runs search.py in this process on the JAX backend (by default a 3-trial, 2-epoch random configs/cpu.yaml search on
the synthetic data at 48 px, with a 2-epoch retrain, in a fresh temporary reports folder) and listens to JAX's
monitoring events: each backend compilation (with the name of the function compiled and its seconds) and each
persistent-cache hit and miss. Every model.fit call (a trial, a retrain) is one row: its wall seconds, how many
programs XLA compiled in it and how long that took, the cache's hits and misses, and the functions compiled.
A last row counts what compiled outside any fit (evaluation, prediction, the report).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["KERAS_BACKEND"] = "jax"  # before Keras is imported anywhere

TINY = ["--synthetic", "--config", "configs/cpu.yaml", "--tuner", "random", "--max-trials", "3", "--epochs", "2",
        "--image-size", "48", "--final-epochs", "2"]  # fmt: skip
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
MENTIONED_SECONDS = 0.5  # the many sub-second jits of single operations are counted, not named
CACHE_EVENTS = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}


class CompileLog:
    """Compilations and cache events, attributed to the model.fit call running when they happened."""

    def __init__(self) -> None:
        self.fits: list[dict] = []
        self.outside = self._row("outside fit")
        self.current = self.outside

    @staticmethod
    def _row(label: str) -> dict:
        return {"fit": label, "seconds": 0.0, "compiles": 0, "compile s": 0.0, "hits": 0, "misses": 0,
                "functions": Counter(), "function s": Counter()}  # fmt: skip

    def on_duration(self, event: str, seconds: float, **details: object) -> None:
        if event == COMPILE_EVENT:
            self.current["compiles"] += 1
            self.current["compile s"] += seconds
            name = str(details.get("fun_name", "?"))
            self.current["functions"][name] += 1
            self.current["function s"][name] += seconds

    def on_event(self, event: str, **details: object) -> None:
        if event in CACHE_EVENTS:
            self.current[CACHE_EVENTS[event]] += 1

    def wrap_fit(self, fit):
        """keras.Model.fit, timed, with what compiles inside it counted on a row of its own."""
        log = self

        def counted_fit(model, *args, **kwargs):
            log.current = log._row(f"fit {len(log.fits) + 1}")
            log.fits.append(log.current)
            started = time.perf_counter()
            try:
                return fit(model, *args, **kwargs)
            finally:
                log.current["seconds"] = time.perf_counter() - started
                log.current = log.outside

        return counted_fit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("search_flags", nargs="*", help="after --: search.py flags instead of the tiny search's")
    args = parser.parse_args()

    import jax.monitoring
    import keras

    import search

    log = CompileLog()
    jax.monitoring.register_event_duration_secs_listener(log.on_duration)
    jax.monitoring.register_event_listener(log.on_event)
    keras.Model.fit = log.wrap_fit(keras.Model.fit)
    with tempfile.TemporaryDirectory() as reports:
        flags = args.search_flags or TINY
        os.chdir(ROOT)
        code = search.main([*flags, "--backend", "jax", "--reports-dir", reports, "--run-name", "compile-bench"])
    print_table([*log.fits, log.outside])
    return code


def print_table(rows: list[dict]) -> None:
    from tables import markdown_table

    header = ["fit", "wall s", "compilations", "compile s", "compile share", "cache hits", "cache misses", f"compiled, {MENTIONED_SECONDS} s or more"]
    lines = []
    for row in rows:
        share = f"{row['compile s'] / row['seconds']:.0%}" if row["seconds"] else "–"
        compiled = ", ".join(
            f"{name} x{count} {row['function s'][name]:.1f} s"
            for name, count in sorted(row["functions"].items())
            if row["function s"][name] >= MENTIONED_SECONDS
        )
        lines.append([row["fit"], f"{row['seconds']:.1f}", row["compiles"], f"{row['compile s']:.1f}", share,
                      row["hits"], row["misses"], compiled])  # fmt: skip
    print("\n" + markdown_table(header, lines))
    fits = [row for row in rows if row["fit"] != "outside fit"]
    if fits:
        print(
            f"\nPer fit: {sum(r['compiles'] for r in fits) / len(fits):.1f} compilations, "
            f"{sum(r['compile s'] for r in fits) / len(fits):.1f} s compiling of "
            f"{sum(r['seconds'] for r in fits) / len(fits):.1f} s"
        )


if __name__ == "__main__":
    sys.exit(main())
