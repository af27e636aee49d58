"""How much of a JAX search is compilation? Counts XLA compilations and their seconds, model by model.

    python bench/compile.py                          # a tiny synthetic search on JAX, here (CPU or GPU)
    python bench/compile.py -- --config configs/archive/cpu-hyperband.yaml --data-dir data/chest_xray   # any search.py flags
    python bench/compile.py --reports-dir /tmp/warm  # twice: the second run finds a warm compilation cache
    python bench/compile.py --smoke                  # a check: one 1-epoch trial and a 1-epoch retrain

It runs search.py in this process on the JAX backend (by default a 3-trial, 2-epoch random configs/archive/cpu-hyperband.yaml search on
the synthetic data at 48 px, with a 2-epoch retrain, in a fresh temporary reports folder) and listens to JAX's
monitoring events: each program XLA builds (compiled, or loaded from the persistent cache; with the name of the
function and its seconds) and each cache hit and miss. Each model (a trial's, the retrain's) is a row, from its
build to the next model's: its wall seconds, the programs built and their seconds, the cache's hits and misses,
and the functions that took 0.5 s or more. The first row is what came before the first model.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"  # before Keras is imported anywhere

from runtime.compilation import Compilations  # (imports no Keras and no JAX)

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--synthetic", "--config", "configs/archive/cpu-hyperband.yaml", "--tuner", "random", "--max-trials", "3", "--epochs", "2",
        "--image-size", "48", "--final-epochs", "2"]  # fmt: skip
SMOKE = ["--synthetic", "--config", "configs/archive/cpu-hyperband.yaml", "--tuner", "random", "--max-trials", "1",
         "--epochs", "1", "--image-size", "48", "--final-epochs", "1"]  # fmt: skip
MENTIONED_SECONDS = 0.5  # the many sub-second jits of single operations are counted, not named


class CompileLog:
    """Compilations and cache events, attributed to the model being built or trained when they happened: a row
    per model (a trial's, a retrain's) from its build to the next model's, evaluation and prediction included.
    Each row counts as compilation.Compilations counts a whole run."""

    def __init__(self) -> None:
        self.labels, self.counts, self.seconds = ["before the first model"], [Compilations()], [0.0]
        self.started = time.perf_counter()

    def on_duration(self, event: str, seconds: float, **details: object) -> None:
        self.counts[-1].on_duration(event, seconds, **details)

    def on_event(self, event: str, **details: object) -> None:
        self.counts[-1].on_event(event, **details)

    def next_row(self) -> None:
        now = time.perf_counter()
        self.seconds[-1] = now - self.started
        self.started = now
        self.labels.append(f"model {len(self.labels)}")
        self.counts.append(Compilations())
        self.seconds.append(0.0)

    def wrap_build(self, build):
        """ChestXRayHyperModel.build, starting a new row."""
        log = self

        def counted_build(hypermodel, *args, **kwargs):
            log.next_row()
            return build(hypermodel, *args, **kwargs)

        return counted_build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reports-dir",
        help="where the run (and the compilation cache beside it) goes; give the same folder twice to see a warm "
        "cache (default: a fresh temporary folder, so a cold cache)",
    )
    parser.add_argument("--smoke", action="store_true", help="a check: one 1-epoch trial and a 1-epoch retrain")
    parser.add_argument("search_flags", nargs="*", help="after --: search.py flags instead of the tiny search's")
    args = parser.parse_args(argv)

    import jax.monitoring

    import hypermodel
    import search

    log = CompileLog()
    jax.monitoring.register_event_duration_secs_listener(log.on_duration)
    jax.monitoring.register_event_listener(log.on_event)
    hypermodel.ChestXRayHyperModel.build = log.wrap_build(hypermodel.ChestXRayHyperModel.build)
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as temporary:
        reports = args.reports_dir or temporary
        flags = [*(args.search_flags or (SMOKE if args.smoke else TINY)), "--backend", "jax", "--reports-dir", reports]
        code = search.main([*flags, "--run-name", "compile-bench", "--overwrite"])
    log.next_row()
    print_table(log.labels[:-1], log.counts[:-1], log.seconds[:-1])
    return code


def print_table(labels: list[str], counts: list[Compilations], seconds: list[float]) -> None:
    from reporting.tables import markdown_table

    header = ["model", "wall s", "compilations", "compile s", "compile share", "cache hits", "cache misses",
              f"compiled, {MENTIONED_SECONDS} s or more"]  # fmt: skip
    lines = []
    for label, count, wall in zip(labels, counts, seconds):
        share = f"{count.seconds / wall:.0%}" if wall else "–"
        compiled = ", ".join(
            f"{name} x{built} {count.function_seconds[name]:.1f} s"
            for name, built in sorted(count.functions.items())
            if count.function_seconds[name] >= MENTIONED_SECONDS
        )
        lines.append([label, f"{wall:.1f}", count.programs, f"{count.seconds:.1f}", share, count.cache_hits,
                      count.cache_misses, compiled])  # fmt: skip
    print("\n" + markdown_table(header, lines))
    models, walls = counts[1:], seconds[1:]
    if models:
        print(
            f"\nPer model: {sum(c.programs for c in models) / len(models):.1f} programs, "
            f"{sum(c.seconds for c in models) / len(models):.1f} s compiling (or loading) of "
            f"{sum(walls) / len(models):.1f} s; in all {sum(c.programs for c in counts)} "
            f"programs, {sum(c.cache_hits for c in counts)} from the cache, {sum(c.seconds for c in counts):.1f} s"
        )


if __name__ == "__main__":
    sys.exit(main())
